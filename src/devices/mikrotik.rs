//! The MikroTik RouterOS v7 driver: blocks a console's network by putting its IP in a
//! firewall address list venued owns, over the REST API (HTTPS, Basic auth).
//!
//! Why an address list and four fixed rules rather than a rule per console: adding an
//! address is one small idempotent write that takes effect on the next packet, provided
//! the rules that read the list sit above the `fasttrack-connection` rule (a FastTracked
//! connection skips the firewall). [`Mikrotik::setup`] checks and installs those rules
//! (docs/devices.md, "The router"); [`Mikrotik::clear_connections`] cuts connections that were
//! FastTracked before the rules existed.
//!
//! RouterOS can answer a change with an error and still make it (a 400, a closed
//! connection, a timeout while the router carries on), so every change is preceded by a
//! read and, after any failure, judged by a fresh read: an entry is never added twice,
//! and a change that took effect counts as done whatever the answer said. A failure
//! that did not take effect is returned: the caller retries, and the retry reads first.
//!
//! The router's certificate is self-signed, so trust is a SHA-256 pin (`tls_fingerprint`).
//! Without one, nothing is sent: the driver shakes hands once to learn the certificate
//! the router presents, refuses it, and names its fingerprint in the error so the
//! operator can check it and pin it.
//!
//! The parts that do no I/O (RouterOS JSON, address matching, the setup plan, the clock)
//! are plain functions, tested below; the I/O is tested against the network fake in
//! `src/fakes/mikrotik` (`tests/it/mikrotik.rs`).

use super::DeviceError;
use super::http::{self, Origin};
use crate::domain::device::DeviceKind;
use crate::store::DeviceRecord;
use hyper::Method;
use hyper::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderName};
use rustls::pki_types::ServerName;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// How long one REST call may take, connection and TLS included.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// The address list holding every console (permanently): the accept rules read it.
pub const CONSOLES_LIST: &str = "venue-consoles";

/// One RouterOS record as REST prints it: every value a string.
pub type Row = BTreeMap<String, String>;

/// A RouterOS router, driven over `/rest`.
pub struct Mikrotik {
    /// The device's name in venued, for messages, when known.
    name: Option<String>,
    origin: Origin,
    /// None without a fingerprint: every call then fails, naming the presented one.
    tls: Option<Arc<rustls::ClientConfig>>,
    pin: Option<String>,
    /// `Basic <base64(user:password)>`.
    authorization: String,
    list: String,
    timeout: Duration,
}

impl fmt::Debug for Mikrotik {
    // By hand: the derived one would print the credentials.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mikrotik")
            .field("name", &self.name)
            .field("origin", &self.origin)
            .field("pin", &self.pin)
            .field("list", &self.list)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// What [`Mikrotik::block`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockOutcome {
    /// The entry was added (possibly by a request whose answer was lost).
    Added,
    /// A disabled entry for the address was enabled.
    Enabled,
    /// The address was already in the list.
    AlreadyBlocked,
}

/// What [`Mikrotik::unblock`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnblockOutcome {
    /// This many entries for the address were in the list; none is left.
    Removed(usize),
    /// The address was not in the list.
    NotBlocked,
}

/// A RouterOS error answer: `{"error":400,"message":"Bad Request","detail":"…"}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RosError {
    pub status: u16,
    pub message: String,
    pub detail: Option<String>,
}

impl RosError {
    /// Read an error answer; anything else (an HTML page, nothing) keeps the status and
    /// the start of the text.
    pub fn parse(status: u16, body: &[u8]) -> Self {
        let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let text = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
        let message = text("message").unwrap_or_else(|| {
            let raw = String::from_utf8_lossy(body);
            let raw = raw.trim();
            if raw.is_empty() {
                format!("HTTP {status}")
            } else {
                raw.chars().take(200).collect()
            }
        });
        Self {
            status,
            message,
            detail: text("detail"),
        }
    }

    fn text(&self) -> String {
        match &self.detail {
            Some(d) => format!("{}: {d}", self.message),
            None => self.message.clone(),
        }
    }

    /// `failure: already have such entry`: a duplicate add.
    pub fn is_duplicate(&self) -> bool {
        self.detail
            .as_deref()
            .is_some_and(|d| d.contains("already have such entry"))
    }

    /// The item is gone: 404 for `DELETE /<id>`, `no such item` from a command.
    pub fn is_gone(&self) -> bool {
        self.status == 404
            || self
                .detail
                .as_deref()
                .is_some_and(|d| d.contains("no such item"))
    }
}

/// Why a REST call failed: RouterOS said no, or no usable answer came.
#[derive(Debug)]
enum Failure {
    Ros(RosError),
    Device(DeviceError),
}

impl Failure {
    /// Whether a fresh read could show the change took effect anyway. Refused
    /// credentials and a bad configuration are decided before anything is done.
    fn may_have_applied(&self) -> bool {
        !matches!(
            self,
            Self::Device(DeviceError::Auth(_) | DeviceError::Config(_))
        )
    }
}

impl Mikrotik {
    /// A driver for a `mikrotik` device with its password (RouterOS allows an empty one,
    /// so None is sent as empty). Nothing is sent yet.
    pub fn new(kind: &DeviceKind, password: Option<&str>) -> Result<Self, DeviceError> {
        let DeviceKind::Mikrotik {
            url,
            user,
            list,
            tls_fingerprint,
        } = kind
        else {
            return Err(DeviceError::Config(format!(
                "a {} is not a MikroTik router",
                kind.type_name()
            )));
        };
        let origin = Origin::parse(url)?;
        if !origin.tls {
            return Err(DeviceError::Config(format!(
                "{url}: RouterOS REST is driven over HTTPS only"
            )));
        }
        let tls = tls_fingerprint
            .as_deref()
            .map(http::tls_pinned)
            .transpose()?;
        let credentials = format!("{user}:{}", password.unwrap_or_default());
        Ok(Self {
            name: None,
            origin,
            tls,
            pin: tls_fingerprint.as_deref().map(normalize_fingerprint),
            authorization: format!("Basic {}", base64(credentials.as_bytes())),
            list: list.clone(),
            timeout: DEFAULT_TIMEOUT,
        })
    }

    /// A driver for a stored device, with its stored password.
    pub fn from_record(record: &DeviceRecord) -> Result<Self, DeviceError> {
        let mut m = Self::new(&record.device.kind, record.password.as_deref())?;
        m.name = Some(record.device.name.to_string());
        Ok(m)
    }

    /// The deadline of each REST call (default [`DEFAULT_TIMEOUT`]).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The address list venued owns on this router.
    pub fn list(&self) -> &str {
        &self.list
    }

    fn who(&self) -> String {
        self.origin.authority()
    }

    // ---- the address list ----------------------------------------------------------

    /// Put `address` in the list (with `comment`). Reads first: an address already there
    /// is left alone, a disabled entry for it is enabled; after a failed add, a fresh
    /// read decides; RouterOS's own duplicate refusal counts as done.
    pub async fn block(&self, address: IpAddr, comment: &str) -> Result<BlockOutcome, DeviceError> {
        let found = self.entries(address).await?;
        if found.iter().any(|e| !e.disabled) {
            return Ok(BlockOutcome::AlreadyBlocked);
        }
        let menu = address_list_menu(address);
        if let Some(entry) = found.first() {
            let enable = json!({"disabled": "false"});
            let path = format!("{menu}/{}", entry.id);
            return match self.call(Method::PATCH, &path, Some(&enable)).await {
                Ok(_) => Ok(BlockOutcome::Enabled),
                Err(f) => self
                    .confirm(f, "enabling an address-list entry", || {
                        self.is_blocked(address)
                    })
                    .await
                    .map(|()| BlockOutcome::Enabled),
            };
        }
        let entry = json!({
            "list": self.list,
            "address": address.to_string(),
            "comment": comment,
        });
        match self.call(Method::PUT, menu, Some(&entry)).await {
            Ok(_) => Ok(BlockOutcome::Added),
            Err(Failure::Ros(e)) if e.is_duplicate() => Ok(BlockOutcome::AlreadyBlocked),
            Err(f) => self
                .confirm(f, "adding an address-list entry", || {
                    self.is_blocked(address)
                })
                .await
                .map(|()| BlockOutcome::Added),
        }
    }

    /// Take `address` out of the list: every entry for it goes. An entry already gone
    /// (404) is fine; after other failures a fresh read decides: done when none is left.
    pub async fn unblock(&self, address: IpAddr) -> Result<UnblockOutcome, DeviceError> {
        let found = self.entries(address).await?;
        if found.is_empty() {
            return Ok(UnblockOutcome::NotBlocked);
        }
        let menu = address_list_menu(address);
        let mut failure = None;
        for entry in &found {
            let path = format!("{menu}/{}", entry.id);
            match self.call(Method::DELETE, &path, None).await {
                Ok(_) => {}
                Err(Failure::Ros(e)) if e.is_gone() => {}
                Err(f) => {
                    failure.get_or_insert(f);
                }
            }
        }
        if let Some(f) = failure {
            self.confirm(f, "removing an address-list entry", || async {
                Ok(self.entries(address).await?.is_empty())
            })
            .await?;
        }
        Ok(UnblockOutcome::Removed(found.len()))
    }

    /// Whether `address` is in the list (an enabled entry).
    pub async fn is_blocked(&self, address: IpAddr) -> Result<bool, DeviceError> {
        Ok(self.entries(address).await?.iter().any(|e| !e.disabled))
    }

    /// The list's entries for `address`. IPv4 is filtered by the router; IPv6 by list
    /// only and matched here, as RouterOS keeps IPv6 entries as `addr/128` and the query
    /// compares text.
    async fn entries(&self, address: IpAddr) -> Result<Vec<Entry>, DeviceError> {
        let mut query = vec![("list", self.list.clone())];
        if address.is_ipv4() {
            query.push(("address", address.to_string()));
        }
        let path = format!("{}?{}", address_list_menu(address), query_string(&query));
        let rows = self.get_rows(&path).await?;
        Ok(rows
            .iter()
            .filter_map(Entry::from_row)
            .filter(|e| e.list == self.list && same_address(&e.address, address))
            .collect())
    }

    // ---- connection tracking ---------------------------------------------------------

    /// Remove every tracked connection from or to `address` (a FastTracked one would
    /// otherwise carry on past a new block). Matched here on `src-address`/`dst-address`
    /// (`ip:port`, IPv6 as `[ip]:port`). The number removed; one that vanished on its own
    /// meanwhile (`no such item`) is not counted.
    pub async fn clear_connections(&self, address: IpAddr) -> Result<usize, DeviceError> {
        let menu = connection_menu(address);
        let ids = self.connection_ids(address).await?;
        let mut removed = 0;
        let mut vanished = 0;
        let mut failure = None;
        for id in &ids {
            let remove = json!({".id": id});
            match self
                .call(Method::POST, &format!("{menu}/remove"), Some(&remove))
                .await
            {
                Ok(_) => removed += 1,
                Err(Failure::Ros(e)) if e.is_gone() => vanished += 1,
                Err(f) => {
                    failure.get_or_insert(f);
                }
            }
        }
        if let Some(f) = failure {
            self.confirm(f, "removing a tracked connection", || async {
                let now = self.connection_ids(address).await?;
                Ok(!ids.iter().any(|id| now.contains(id)))
            })
            .await?;
            return Ok(ids.len() - vanished);
        }
        Ok(removed)
    }

    async fn connection_ids(&self, address: IpAddr) -> Result<Vec<String>, DeviceError> {
        let path = format!(
            "{}?.proplist=.id,src-address,dst-address",
            connection_menu(address)
        );
        Ok(self
            .get_rows(&path)
            .await?
            .iter()
            .filter(|r| connection_involves(r, address))
            .filter_map(|r| r.get(".id").cloned())
            .collect())
    }

    // ---- the blocking rules ----------------------------------------------------------

    /// Check the four forward-chain rules of the blocking design (found by comment) and,
    /// with `apply`, insert the missing ones above the first rule that is not dynamic,
    /// then read them back. Rules that exist but are misplaced or different are reported,
    /// never changed: they are the operator's to fix. A second apply creates nothing.
    pub async fn setup(&self, apply: bool) -> Result<SetupReport, DeviceError> {
        let rows = self.forward_rules().await?;
        let before = plan(&rows, &self.list);
        let mut created = Vec::new();
        if apply {
            for insert in &before.inserts {
                let spec = &RULES[insert.rule];
                let mut body = spec.body(&self.list);
                if let Some(anchor) = &insert.place_before {
                    body.insert("place-before".into(), anchor.clone().into());
                }
                let body = Value::Object(body);
                match self.call(Method::PUT, FILTER, Some(&body)).await {
                    Ok(_) => {}
                    Err(f) => {
                        self.confirm(f, "adding a firewall rule", || async {
                            let rows = self.forward_rules().await?;
                            Ok(rows.iter().any(|r| comment_of(r) == Some(spec.comment)))
                        })
                        .await?
                    }
                }
                created.push(spec.comment.to_owned());
            }
        }
        let after = if created.is_empty() {
            before.clone()
        } else {
            plan(&self.forward_rules().await?, &self.list)
        };
        Ok(SetupReport {
            list: self.list.clone(),
            applied: apply,
            complete: after.complete(),
            fasttrack: after.fasttrack.clone(),
            before: before.rules,
            after: after.rules,
            created,
        })
    }

    async fn forward_rules(&self) -> Result<Vec<Row>, DeviceError> {
        self.get_rows(&format!("{FILTER}?chain=forward")).await
    }

    // ---- the clock -------------------------------------------------------------------

    /// The router's clock as a UTC instant, from `/system/clock` (see [`parse_clock`]).
    pub async fn clock(&self) -> Result<jiff::Timestamp, DeviceError> {
        let v = self
            .call(Method::GET, "/rest/system/clock", None)
            .await
            .map_err(|f| self.device_error(f))?;
        let row = row(&v).map_err(|e| DeviceError::Malformed(self.who(), e))?;
        parse_clock(&row).map_err(|e| DeviceError::Malformed(self.who(), e))
    }

    /// What the router says about itself, read-only, for `venued device test`: its
    /// clock, board and RouterOS version (`/system/resource`), and how many entries the
    /// device's list holds (RouterOS has no empty lists: 0 means the list does not exist
    /// yet; the first block creates it).
    pub async fn probe(&self) -> Result<RouterProbe, DeviceError> {
        let clock = self.clock().await?;
        let v = self
            .call(Method::GET, "/rest/system/resource", None)
            .await
            .map_err(|f| self.device_error(f))?;
        let resource = row(&v).map_err(|e| DeviceError::Malformed(self.who(), e))?;
        let path = format!(
            "/rest/ip/firewall/address-list?{}",
            query_string(&[
                ("list", self.list.clone()),
                (".proplist", ".id,list".into())
            ])
        );
        let entries = self
            .get_rows(&path)
            .await?
            .iter()
            .filter(|r| r.get("list") == Some(&self.list))
            .count();
        Ok(RouterProbe {
            clock,
            board: resource.get("board-name").cloned(),
            version: resource.get("version").cloned(),
            list_entries: entries,
        })
    }

    // ---- TLS ---------------------------------------------------------------------------

    /// The SHA-256 fingerprint of the certificate the router presents, as
    /// `AB:CD:…`: one handshake that records the certificate and then refuses it, so
    /// nothing (no credentials) is sent to an unverified peer.
    pub async fn presented_fingerprint(&self) -> Result<String, DeviceError> {
        let who = self.who();
        let seen = Arc::new(Mutex::new(None));
        let config = http::tls_recording(seen.clone())?;
        let name = ServerName::try_from(self.origin.host.clone())
            .map_err(|e| DeviceError::Config(format!("{who}: {e}")))?;
        let handshake = async {
            let tcp = tokio::net::TcpStream::connect((self.origin.host.as_str(), self.origin.port))
                .await
                .map_err(|e| DeviceError::Unreachable(format!("{who}: {e}")))?;
            // Refused by the recorder, as intended: what matters is what it saw.
            let outcome = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await;
            Ok::<_, DeviceError>(outcome.err())
        };
        let refusal = tokio::time::timeout(self.timeout, handshake)
            .await
            .map_err(|_| DeviceError::Timeout(who.clone(), self.timeout))??;
        let fingerprint = seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
            .map(|hex| colon_hex(&hex));
        fingerprint.ok_or_else(|| {
            let why = refusal.map_or_else(|| "no certificate".to_owned(), |e| e.to_string());
            DeviceError::Unreachable(format!("{who}: TLS handshake failed: {why}"))
        })
    }

    /// The error for a router without a pinned fingerprint: it names the presented one.
    async fn unpinned(&self) -> DeviceError {
        let who = self.who();
        match self.presented_fingerprint().await {
            Ok(fp) => DeviceError::Config(format!(
                "no TLS fingerprint is set for the router at {who}, so venued does not trust \
                 it; it presented a certificate with SHA-256 fingerprint {fp}. Check that \
                 this is the router's certificate (RouterOS: /certificate print detail), \
                 then pin it on device {}: tls_fingerprint {fp} (venued device add ... \
                 --tls-fingerprint {fp}; remove the device first to re-add it)",
                self.name.as_deref().unwrap_or("NAME"),
            )),
            Err(e) => e,
        }
    }

    /// A certificate refused by the pin: say what was presented and what is pinned.
    async fn mismatch(&self, original: DeviceError) -> DeviceError {
        let Some(want) = &self.pin else {
            return original;
        };
        match self.presented_fingerprint().await {
            Ok(got) if normalize_fingerprint(&got) != *want => DeviceError::Config(format!(
                "TLS: certificate fingerprint mismatch at {}: the router presented SHA-256 \
                 {got}, but the device pins {}. If the router's certificate was replaced \
                 on purpose, pin the new one (venued device add ... --tls-fingerprint); \
                 otherwise something else answers at this address",
                self.who(),
                colon_hex(want),
            )),
            _ => original,
        }
    }

    // ---- REST ---------------------------------------------------------------------------

    /// One REST call: the JSON answer (Null for an empty one) or why it failed.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, Failure> {
        let Some(tls) = &self.tls else {
            return Err(Failure::Device(self.unpinned().await));
        };
        let mut headers: Vec<(HeaderName, String)> = vec![
            (AUTHORIZATION, self.authorization.clone()),
            (ACCEPT, "application/json".into()),
        ];
        let body = body.map(|b| {
            headers.push((CONTENT_TYPE, "application/json".into()));
            b.to_string().into_bytes()
        });
        let answer = match http::send(
            &self.origin,
            Some(tls),
            method,
            path,
            &headers,
            body,
            self.timeout,
        )
        .await
        {
            Ok(a) => a,
            // `http::tls_pinned` refuses a certificate with this rustls error; learn what
            // was presented so the message can name the mismatch.
            Err(DeviceError::Unreachable(m)) if m.contains("invalid peer certificate") => {
                return Err(Failure::Device(
                    self.mismatch(DeviceError::Unreachable(m)).await,
                ));
            }
            Err(e) => return Err(Failure::Device(e)),
        };
        let status = answer.status.as_u16();
        match status {
            401 => Err(Failure::Device(DeviceError::Auth(self.who()))),
            429 => Err(Failure::Device(DeviceError::TooManyRequests(self.who()))),
            200..=299 => {
                if answer.body.iter().all(u8::is_ascii_whitespace) {
                    return Ok(Value::Null);
                }
                serde_json::from_slice(&answer.body).map_err(|e| {
                    Failure::Device(DeviceError::Malformed(self.who(), format!("not JSON: {e}")))
                })
            }
            _ => Err(Failure::Ros(RosError::parse(status, &answer.body))),
        }
    }

    async fn get_rows(&self, path: &str) -> Result<Vec<Row>, DeviceError> {
        let v = self
            .call(Method::GET, path, None)
            .await
            .map_err(|f| self.device_error(f))?;
        rows(&v).map_err(|e| DeviceError::Malformed(self.who(), e))
    }

    fn device_error(&self, f: Failure) -> DeviceError {
        match f {
            Failure::Device(e) => e,
            Failure::Ros(e) => DeviceError::Refused {
                device: self.who(),
                status: e.status,
                detail: e.text(),
            },
        }
    }

    /// After a failed change: done if a fresh read (`took_effect`) says the change is
    /// there (the failure is then only logged), else the failure. Not re-read when the
    /// failure rules the change out, and a failed re-read proves nothing.
    async fn confirm<F, Fut>(
        &self,
        f: Failure,
        what: &str,
        took_effect: F,
    ) -> Result<(), DeviceError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<bool, DeviceError>>,
    {
        if f.may_have_applied() && matches!(took_effect().await, Ok(true)) {
            tracing::warn!(router = %self.who(), error = ?f,
                "{what} failed, but a re-read shows it took effect: done");
            return Ok(());
        }
        Err(self.device_error(f))
    }
}

// ---- pure parts ----------------------------------------------------------------------

const FILTER: &str = "/rest/ip/firewall/filter";

fn address_list_menu(address: IpAddr) -> &'static str {
    if address.is_ipv4() {
        "/rest/ip/firewall/address-list"
    } else {
        "/rest/ipv6/firewall/address-list"
    }
}

fn connection_menu(address: IpAddr) -> &'static str {
    if address.is_ipv4() {
        "/rest/ip/firewall/connection"
    } else {
        "/rest/ipv6/firewall/connection"
    }
}

/// The SHA-256 of a DER certificate as `AB:CD:…` (how RouterOS and OpenSSL print it;
/// `tls_fingerprint` accepts it as is).
pub fn fingerprint(der: &[u8]) -> String {
    colon_hex(&http::sha256_hex(der))
}

/// Lowercase hex without colons.
fn normalize_fingerprint(f: &str) -> String {
    f.chars()
        .filter(|c| *c != ':')
        .collect::<String>()
        .to_ascii_lowercase()
}

fn colon_hex(hex: &str) -> String {
    hex.as_bytes()
        .chunks(2)
        .map(|pair| String::from_utf8_lossy(pair).to_ascii_uppercase())
        .collect::<Vec<_>>()
        .join(":")
}

/// Standard base64 with padding, for the Basic auth header.
pub fn base64(data: &[u8]) -> String {
    super::http::base64(data)
}

/// `k=v&k=v`, values percent-encoded (everything but RFC 3986 unreserved characters).
fn query_string(pairs: &[(&str, String)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", percent(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn percent(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// One record: a JSON object whose values RouterOS sends as strings. Numbers and booleans
/// (which RouterOS does not send, but a proxy might) are kept as their text.
pub fn row(v: &Value) -> Result<Row, String> {
    let Value::Object(m) = v else {
        return Err(format!("expected an object, got {}", kind_of(v)));
    };
    m.iter()
        .map(|(k, v)| match v {
            Value::String(s) => Ok((k.clone(), s.clone())),
            Value::Number(n) => Ok((k.clone(), n.to_string())),
            Value::Bool(b) => Ok((k.clone(), b.to_string())),
            Value::Null => Ok((k.clone(), String::new())),
            other => Err(format!("{k} is {}, not a string", kind_of(other))),
        })
        .collect()
}

/// A print: a JSON array of records.
pub fn rows(v: &Value) -> Result<Vec<Row>, String> {
    match v {
        Value::Array(items) => items.iter().map(row).collect(),
        other => Err(format!("expected a list, got {}", kind_of(other))),
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// An address-list entry.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    id: String,
    list: String,
    address: String,
    disabled: bool,
}

impl Entry {
    fn from_row(r: &Row) -> Option<Self> {
        Some(Self {
            id: r.get(".id")?.clone(),
            list: r.get("list")?.clone(),
            address: r.get("address")?.clone(),
            disabled: r.get("disabled").is_some_and(|d| d == "true"),
        })
    }
}

/// Whether an address-list `address` is exactly `ip`: `ip`, `ip/32` or `ip/128`, any
/// IPv6 spelling. A wider prefix, a range or a DNS name is not venued's entry.
pub fn same_address(entry: &str, ip: IpAddr) -> bool {
    let full = if ip.is_ipv4() { "32" } else { "128" };
    let host = match entry.split_once('/') {
        Some((host, len)) if len == full => host,
        Some(_) => return false,
        None => entry,
    };
    host.parse::<IpAddr>() == Ok(ip)
}

/// The host of a connection endpoint as RouterOS prints it: `ip:port`, `[ip6]:port`, or a
/// bare address (protocols without ports).
pub fn endpoint_host(endpoint: &str) -> Option<IpAddr> {
    if let Some(rest) = endpoint.strip_prefix('[') {
        return rest.split_once(']')?.0.parse().ok();
    }
    if let Ok(ip) = endpoint.parse() {
        return Some(ip);
    }
    endpoint.rsplit_once(':')?.0.parse().ok()
}

/// Whether a connection's source or destination is `ip`.
pub fn connection_involves(r: &Row, ip: IpAddr) -> bool {
    ["src-address", "dst-address"]
        .iter()
        .any(|k| r.get(*k).and_then(|e| endpoint_host(e)) == Some(ip))
}

fn comment_of(r: &Row) -> Option<&str> {
    r.get("comment").map(String::as_str)
}

/// One rule of the blocking design.
#[derive(Debug)]
pub struct RuleSpec {
    pub comment: &'static str,
    pub action: &'static str,
    /// `src-address-list` or `dst-address-list`.
    pub matcher: &'static str,
    /// The list it reads: venued's own (None) or [`CONSOLES_LIST`].
    pub consoles: bool,
    pub connection_state: Option<&'static str>,
}

/// The four forward-chain rules, in the order they must appear, above FastTrack: drop
/// what the blocked list sends or receives, then accept console traffic so it never
/// reaches `fasttrack-connection` (inbound only when established or related, so the
/// rule never opens a console to unsolicited connections).
pub const RULES: [RuleSpec; 4] = [
    RuleSpec {
        comment: "venued:block-out",
        action: "drop",
        matcher: "src-address-list",
        consoles: false,
        connection_state: None,
    },
    RuleSpec {
        comment: "venued:block-in",
        action: "drop",
        matcher: "dst-address-list",
        consoles: false,
        connection_state: None,
    },
    RuleSpec {
        comment: "venued:consoles-out",
        action: "accept",
        matcher: "src-address-list",
        consoles: true,
        connection_state: None,
    },
    RuleSpec {
        comment: "venued:consoles-in",
        action: "accept",
        matcher: "dst-address-list",
        consoles: true,
        connection_state: Some("established,related"),
    },
];

impl RuleSpec {
    fn list<'a>(&self, blocked: &'a str) -> &'a str {
        if self.consoles {
            CONSOLES_LIST
        } else {
            blocked
        }
    }

    /// The `PUT /ip/firewall/filter` body (without `place-before`).
    pub fn body(&self, blocked: &str) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("chain".into(), "forward".into());
        m.insert("action".into(), self.action.into());
        m.insert(self.matcher.into(), self.list(blocked).into());
        if let Some(state) = self.connection_state {
            m.insert("connection-state".into(), state.into());
        }
        m.insert("comment".into(), self.comment.into());
        m
    }

    /// RouterOS-style, for people: `drop src-address-list=venue-blocked`.
    pub fn describe(&self, blocked: &str) -> String {
        let mut s = format!("{} {}={}", self.action, self.matcher, self.list(blocked));
        if let Some(state) = self.connection_state {
            s.push_str(&format!(" connection-state={state}"));
        }
        s
    }

    /// What is wrong with a rule that carries this comment, if anything.
    fn difference(&self, r: &Row, blocked: &str) -> Option<String> {
        let get = |k: &str| r.get(k).map(String::as_str).unwrap_or_default();
        let mut wrong = Vec::new();
        if get("disabled") == "true" {
            wrong.push("it is disabled".to_owned());
        }
        if get("action") != self.action {
            wrong.push(format!(
                "action is {:?}, not {}",
                get("action"),
                self.action
            ));
        }
        if get(self.matcher) != self.list(blocked) {
            wrong.push(format!(
                "{} is {:?}, not {}",
                self.matcher,
                get(self.matcher),
                self.list(blocked)
            ));
        }
        let states = |s: &str| {
            let mut v: Vec<String> = s
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect();
            v.sort();
            v
        };
        let want = self.connection_state.unwrap_or_default();
        if states(get("connection-state")) != states(want) {
            wrong.push(format!(
                "connection-state is {:?}, not {:?}",
                get("connection-state"),
                want
            ));
        }
        (!wrong.is_empty()).then(|| wrong.join("; "))
    }
}

/// Where one rule of the design stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RuleState {
    /// There, as designed, above FastTrack and in order.
    Present,
    /// No forward rule carries its comment.
    Missing,
    /// There, but below `fasttrack-connection` or out of order: console traffic can be
    /// FastTracked past it, or accepted before it is dropped.
    Misplaced,
    /// A rule carries its comment but does something else (or is disabled).
    Different,
}

/// One rule of the design on the router.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RuleCheck {
    /// The comment it is found by, e.g. `venued:block-out`.
    pub comment: String,
    /// What it does, RouterOS-style, e.g. `drop src-address-list=venue-blocked`.
    pub rule: String,
    pub state: RuleState,
    /// Its `.id` on the router, when it exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Why it is misplaced or different.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// What [`Mikrotik::probe`] read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouterProbe {
    pub clock: jiff::Timestamp,
    pub board: Option<String>,
    pub version: Option<String>,
    /// Entries (IPv4) on the device's address list.
    pub list_entries: usize,
}

/// The answer of [`Mikrotik::setup`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SetupReport {
    /// The address list the drop rules read (the device's `list`).
    pub list: String,
    /// Whether missing rules were to be created.
    pub applied: bool,
    /// The four rules as found, in their required order.
    pub before: Vec<RuleCheck>,
    /// The four rules after the change, read back from the router (as `before` when
    /// nothing was created).
    pub after: Vec<RuleCheck>,
    /// Comments of the rules this call created, in order.
    pub created: Vec<String>,
    /// The `.id` of the `fasttrack-connection` rule they must sit above, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fasttrack: Option<String>,
    /// All four present and in place (after the change).
    pub complete: bool,
}

/// A rule to insert: which (index in [`RULES`]) and before which `.id` (None: append).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Insert {
    pub rule: usize,
    pub place_before: Option<String>,
}

/// The state of the forward chain against the design, and how to complete it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub rules: Vec<RuleCheck>,
    pub fasttrack: Option<String>,
    pub inserts: Vec<Insert>,
}

impl Plan {
    pub fn complete(&self) -> bool {
        self.rules.iter().all(|r| r.state == RuleState::Present)
    }
}

/// Judge the forward chain (`rows`, in table order) against [`RULES`] for `blocked` (the
/// device's list), and plan the inserts of the missing rules:
///
/// - a rule is found by its comment (the first carrying it);
/// - it is misplaced below the first `fasttrack-connection` rule, or above a rule that
///   must precede it;
/// - a missing rule goes before the nearest found rule that must follow it; failing
///   that, right after the last found rule that must precede it (before the next rule
///   that is not dynamic); with none found, before the first rule that is not dynamic
///   (dynamic rules, such as the FastTrack counter dummy, cannot be targeted). Anchors
///   come from this one read, and inserts run in order, so they land in order.
pub fn plan(rows: &[Row], blocked: &str) -> Plan {
    let forward: Vec<&Row> = rows
        .iter()
        .filter(|r| r.get("chain").is_none_or(|c| c == "forward"))
        .collect();
    let id = |at: usize| forward.get(at).and_then(|r| r.get(".id")).cloned();
    let dynamic = |r: &Row| r.get("dynamic").is_some_and(|d| d == "true");
    let fasttrack_at = forward
        .iter()
        .position(|r| r.get("action").is_some_and(|a| a == "fasttrack-connection"));
    let found: Vec<Option<usize>> = RULES
        .iter()
        .map(|spec| {
            forward
                .iter()
                .position(|r| comment_of(r) == Some(spec.comment))
        })
        .collect();
    let first_static_from = |from: usize| {
        (from..forward.len())
            .find(|&at| !dynamic(forward[at]))
            .and_then(id)
    };

    let mut checks = Vec::new();
    let mut inserts = Vec::new();
    for (i, spec) in RULES.iter().enumerate() {
        let mut check = RuleCheck {
            comment: spec.comment.to_owned(),
            rule: spec.describe(blocked),
            state: RuleState::Present,
            id: None,
            problem: None,
        };
        match found[i] {
            None => {
                check.state = RuleState::Missing;
                let later = found[i + 1..].iter().flatten().min().copied();
                let earlier = found[..i].iter().flatten().max().copied();
                let place_before = match (later, earlier) {
                    (Some(at), _) => id(at),
                    (None, Some(at)) => first_static_from(at + 1),
                    (None, None) => first_static_from(0),
                };
                inserts.push(Insert {
                    rule: i,
                    place_before,
                });
            }
            Some(at) => {
                let r = forward[at];
                check.id = r.get(".id").cloned();
                let out_of_order = RULES[..i]
                    .iter()
                    .zip(&found[..i])
                    .find(|(_, f)| f.is_some_and(|f| f > at));
                if let Some(problem) = spec.difference(r, blocked) {
                    check.state = RuleState::Different;
                    check.problem = Some(problem);
                } else if fasttrack_at.is_some_and(|ft| at > ft) {
                    check.state = RuleState::Misplaced;
                    check.problem = Some(format!(
                        "it is below the fasttrack-connection rule ({}): move it above",
                        fasttrack_at.and_then(id).unwrap_or_default()
                    ));
                } else if let Some((before, _)) = out_of_order {
                    check.state = RuleState::Misplaced;
                    check.problem = Some(format!(
                        "it is above {}, which must come first",
                        before.comment
                    ));
                }
            }
        }
        checks.push(check);
    }
    Plan {
        rules: checks,
        fasttrack: fasttrack_at.and_then(id),
        inserts,
    }
}

/// The router's clock as a UTC instant, from `GET /rest/system/clock`. Fields relied on:
/// `date` (`2026-11-23`, or `nov/23/2026` as RouterOS before 7.10 printed it) and `time`
/// (`18:00:00`), the router's local wall time; then `gmt-offset` (`+01:00`, the offset in
/// force, DST included) when present, else `time-zone-name` (an IANA name such as
/// `Europe/Berlin`, resolved with venued's bundled time-zone database; a time in a DST
/// fold is read as the earlier one).
pub fn parse_clock(r: &Row) -> Result<jiff::Timestamp, String> {
    let field = |k: &str| {
        r.get(k)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
            .ok_or_else(|| format!("/system/clock has no {k}"))
    };
    let date = parse_ros_date(field("date")?)?;
    let time = jiff::civil::Time::strptime("%H:%M:%S", field("time")?)
        .map_err(|e| format!("time {:?}: {e}", r.get("time")))?;
    let local = date.to_datetime(time);
    if let Ok(offset) = field("gmt-offset") {
        let offset = parse_gmt_offset(offset)?;
        return offset
            .to_timestamp(local)
            .map_err(|e| format!("{local} at {offset}: {e}"));
    }
    let name = field("time-zone-name")
        .map_err(|_| "/system/clock has neither gmt-offset nor time-zone-name".to_owned())?;
    let tz = jiff::tz::TimeZone::get(name).map_err(|e| format!("time zone {name:?}: {e}"))?;
    tz.to_ambiguous_timestamp(local)
        .compatible()
        .map_err(|e| format!("{local} in {name}: {e}"))
}

fn parse_ros_date(s: &str) -> Result<jiff::civil::Date, String> {
    if let Ok(d) = jiff::civil::Date::strptime("%Y-%m-%d", s) {
        return Ok(d);
    }
    // `nov/23/2026`: month abbreviations in lowercase.
    let bad = || format!("date {s:?} is neither YYYY-MM-DD nor mon/DD/YYYY");
    let mut parts = s.split('/');
    let (Some(mon), Some(day), Some(year), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    const MONTHS: [&str; 12] = [
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ];
    let month = MONTHS
        .iter()
        .position(|m| m.eq_ignore_ascii_case(mon))
        .ok_or_else(bad)?;
    let day: i8 = day.parse().map_err(|_| bad())?;
    let year: i16 = year.parse().map_err(|_| bad())?;
    let month = i8::try_from(month + 1).map_err(|_| bad())?;
    jiff::civil::Date::new(year, month, day).map_err(|e| format!("date {s:?}: {e}"))
}

/// `+01:00`, `-05:30`, `+0100`, or seconds east of UTC (`3600`, `-18000`).
fn parse_gmt_offset(s: &str) -> Result<jiff::tz::Offset, String> {
    let bad = || format!("gmt-offset {s:?} is not ±HH:MM");
    let seconds: i32 = if let Ok(n) = s.parse::<i32>() {
        n
    } else {
        let (sign, rest) = match s.as_bytes().first() {
            Some(b'+') => (1, &s[1..]),
            Some(b'-') => (-1, &s[1..]),
            _ => (1, s),
        };
        let (h, m) = match rest.split_once(':') {
            Some(hm) => hm,
            None if rest.len() == 4 && rest.is_ascii() => rest.split_at(2),
            None => return Err(bad()),
        };
        let h: i32 = h.parse().map_err(|_| bad())?;
        let m: i32 = m.parse().map_err(|_| bad())?;
        if !(0..60).contains(&m) {
            return Err(bad());
        }
        sign * (h * 3600 + m * 60)
    };
    jiff::tz::Offset::from_seconds(seconds).map_err(|e| format!("gmt-offset {s:?}: {e}"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn r(pairs: &[(&str, &str)]) -> Row {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    /// The default configuration's forward chain, as the fake (and a reset hAP) has it.
    fn defconf() -> Vec<Row> {
        vec![
            r(&[
                (".id", "*FFFFFFFE"),
                ("chain", "forward"),
                ("action", "passthrough"),
                ("dynamic", "true"),
                ("comment", "special dummy rule to show fasttrack counters"),
            ]),
            r(&[
                (".id", "*6"),
                ("chain", "forward"),
                ("action", "accept"),
                ("dynamic", "false"),
                ("comment", "defconf: accept in ipsec policy"),
            ]),
            r(&[
                (".id", "*7"),
                ("chain", "forward"),
                ("action", "accept"),
                ("dynamic", "false"),
                ("comment", "defconf: accept out ipsec policy"),
            ]),
            r(&[
                (".id", "*8"),
                ("chain", "forward"),
                ("action", "fasttrack-connection"),
                ("dynamic", "false"),
                ("connection-state", "established,related"),
                ("comment", "defconf: fasttrack"),
            ]),
            r(&[
                (".id", "*9"),
                ("chain", "forward"),
                ("action", "accept"),
                ("dynamic", "false"),
                ("comment", "defconf: accept established,related, untracked"),
            ]),
        ]
    }

    fn ours(i: usize, id: &str) -> Row {
        let mut row: Row = RULES[i]
            .body("venue-blocked")
            .into_iter()
            .map(|(k, v)| (k, v.as_str().unwrap().to_owned()))
            .collect();
        row.insert(".id".into(), id.into());
        row.insert("dynamic".into(), "false".into());
        row.insert("disabled".into(), "false".into());
        row
    }

    fn states(p: &Plan) -> Vec<RuleState> {
        p.rules.iter().map(|r| r.state).collect()
    }

    #[test]
    fn a_default_router_misses_all_four_and_they_go_before_the_first_static_rule() {
        let p = plan(&defconf(), "venue-blocked");
        assert_eq!(states(&p), [RuleState::Missing; 4]);
        assert_eq!(p.fasttrack.as_deref(), Some("*8"));
        assert!(!p.complete());
        let anchors: Vec<_> = p
            .inserts
            .iter()
            .map(|i| i.place_before.as_deref())
            .collect();
        assert_eq!(
            anchors,
            [Some("*6"); 4],
            "one anchor, captured once: 1-4 land in order"
        );
        assert_eq!(
            p.rules[3].rule,
            "accept dst-address-list=venue-consoles connection-state=established,related"
        );
        assert_eq!(p.rules[0].rule, "drop src-address-list=venue-blocked");
    }

    #[test]
    fn rules_in_place_are_present_and_nothing_is_planned() {
        let mut rows = defconf();
        for (i, id) in ["*A", "*B", "*C", "*D"].iter().enumerate() {
            rows.insert(1 + i, ours(i, id));
        }
        let p = plan(&rows, "venue-blocked");
        assert_eq!(states(&p), [RuleState::Present; 4]);
        assert!(p.inserts.is_empty() && p.complete());
        assert_eq!(p.rules[2].id.as_deref(), Some("*C"));
        // Another list name: the drop rules read the wrong list.
        let p = plan(&rows, "other-list");
        assert_eq!(p.rules[0].state, RuleState::Different);
        assert!(
            p.rules[0]
                .problem
                .as_deref()
                .unwrap()
                .contains("other-list")
        );
        assert_eq!(p.rules[2].state, RuleState::Present);
    }

    #[test]
    fn partial_setups_are_completed_in_order() {
        // 1 and 2 there: 3 and 4 go right after 2 (before the rule that followed it).
        let mut rows = defconf();
        rows.insert(1, ours(0, "*A"));
        rows.insert(2, ours(1, "*B"));
        let p = plan(&rows, "venue-blocked");
        assert_eq!(
            states(&p),
            [
                RuleState::Present,
                RuleState::Present,
                RuleState::Missing,
                RuleState::Missing
            ]
        );
        let want = |rule, at: &str| Insert {
            rule,
            place_before: Some(at.into()),
        };
        assert_eq!(p.inserts, [want(2, "*6"), want(3, "*6")]);

        // 1 and 3 missing: 1 before 2, 3 before 4.
        let mut rows = defconf();
        rows.insert(1, ours(1, "*B"));
        rows.insert(2, ours(3, "*D"));
        let p = plan(&rows, "venue-blocked");
        assert_eq!(p.inserts, [want(0, "*B"), want(2, "*D")]);

        // An operator rule between ours and FastTrack: 3 still goes right after 2.
        let mut rows = defconf();
        rows.insert(3, ours(0, "*A"));
        rows.insert(4, ours(1, "*B"));
        let p = plan(&rows, "venue-blocked");
        assert_eq!(p.inserts[0], want(2, "*8"));
    }

    #[test]
    fn misplaced_and_different_rules_are_reported() {
        // Below FastTrack.
        let mut rows = defconf();
        rows.push(ours(0, "*A"));
        let p = plan(&rows, "venue-blocked");
        assert_eq!(p.rules[0].state, RuleState::Misplaced);
        assert!(p.rules[0].problem.as_deref().unwrap().contains("*8"));
        assert_eq!(p.rules[1].state, RuleState::Missing);

        // Accept before drop: the accept is misplaced.
        let mut rows = defconf();
        rows.insert(1, ours(2, "*C"));
        rows.insert(2, ours(0, "*A"));
        let p = plan(&rows, "venue-blocked");
        assert_eq!(p.rules[0].state, RuleState::Present);
        assert_eq!(p.rules[2].state, RuleState::Misplaced);
        assert!(
            p.rules[2]
                .problem
                .as_deref()
                .unwrap()
                .contains("venued:block-out")
        );

        // Disabled, or a different connection-state (order of states does not matter).
        let mut rows = defconf();
        let mut disabled = ours(0, "*A");
        disabled.insert("disabled".into(), "true".into());
        rows.insert(1, disabled);
        let mut states_swapped = ours(3, "*D");
        states_swapped.insert("connection-state".into(), "related,established".into());
        rows.insert(2, states_swapped);
        let p = plan(&rows, "venue-blocked");
        assert_eq!(p.rules[0].state, RuleState::Different);
        assert!(p.rules[0].problem.as_deref().unwrap().contains("disabled"));
        assert_eq!(p.rules[3].state, RuleState::Present);

        // No rules at all (no defconf): append.
        let p = plan(&[], "venue-blocked");
        assert!(p.inserts.iter().all(|i| i.place_before.is_none()));
        assert!(p.fasttrack.is_none());
    }

    #[test]
    fn routeros_json_is_all_strings() {
        let v: Value = serde_json::from_str(
            r#"[{".id":"*1","address":"192.168.50.21","disabled":"false"},{".id":"*2","n":3,"b":true,"z":null}]"#,
        )
        .unwrap();
        let rs = rows(&v).unwrap();
        assert_eq!(rs[0]["address"], "192.168.50.21");
        assert_eq!(rs[1]["n"], "3");
        assert_eq!(rs[1]["b"], "true");
        assert_eq!(rs[1]["z"], "");
        assert!(rows(&serde_json::json!({"a": "b"})).is_err());
        assert!(rows(&serde_json::json!([{"a": {"b": 1}}])).is_err());
        assert!(row(&serde_json::json!([])).is_err());

        let e = RosError::parse(
            400,
            br#"{"detail":"failure: already have such entry","error":400,"message":"Bad Request"}"#,
        );
        assert!(e.is_duplicate() && !e.is_gone());
        assert_eq!(e.text(), "Bad Request: failure: already have such entry");
        assert!(RosError::parse(404, br#"{"error":404,"message":"Not Found"}"#).is_gone());
        assert!(
            RosError::parse(
                400,
                br#"{"error":400,"message":"Bad Request","detail":"no such item"}"#
            )
            .is_gone()
        );
        let html = RosError::parse(502, b"<html>bad gateway</html>");
        assert_eq!(html.message, "<html>bad gateway</html>");
        assert_eq!(RosError::parse(500, b"").message, "HTTP 500");
    }

    #[test]
    fn addresses_and_connection_endpoints_match_exactly() {
        let v4: IpAddr = "192.168.50.21".parse().unwrap();
        let v6: IpAddr = "2001:db8::21".parse().unwrap();
        assert!(same_address("192.168.50.21", v4));
        assert!(same_address("192.168.50.21/32", v4));
        assert!(!same_address("192.168.50.0/24", v4));
        assert!(!same_address("192.168.50.2", v4));
        assert!(!same_address("192.168.50.21-192.168.50.30", v4));
        assert!(same_address("2001:db8::21/128", v6));
        assert!(same_address("2001:0db8:0:0::21", v6));
        assert!(!same_address("2001:db8::/64", v6));

        assert_eq!(endpoint_host("192.168.50.21:3074"), Some(v4));
        assert_eq!(endpoint_host("192.168.50.21"), Some(v4));
        assert_eq!(endpoint_host("[2001:db8::21]:443"), Some(v6));
        assert_eq!(endpoint_host("2001:db8::21"), Some(v6));
        assert_eq!(endpoint_host("nonsense"), None);
        let conn = r(&[
            (".id", "*2A0000"),
            ("src-address", "192.168.50.210:5000"),
            ("dst-address", "203.0.113.7:3074"),
        ]);
        assert!(
            !connection_involves(&conn, v4),
            "a prefix of another address is not a match"
        );
        let conn = r(&[
            (".id", "*2A0001"),
            ("src-address", "203.0.113.7:3074"),
            ("dst-address", "192.168.50.21:3074"),
        ]);
        assert!(connection_involves(&conn, v4));
    }

    #[test]
    fn the_router_clock_reads_with_an_offset_or_a_zone_name() {
        let want: jiff::Timestamp = "2026-11-23T17:00:00Z".parse().unwrap();
        let with_offset = r(&[
            ("date", "2026-11-23"),
            ("time", "18:00:00"),
            ("gmt-offset", "+01:00"),
            ("time-zone-name", "Europe/Berlin"),
        ]);
        assert_eq!(parse_clock(&with_offset).unwrap(), want);
        let zone_only = r(&[
            ("date", "2026-11-23"),
            ("time", "18:00:00"),
            ("time-zone-name", "Europe/Berlin"),
        ]);
        assert_eq!(parse_clock(&zone_only).unwrap(), want);
        let old_date = r(&[
            ("date", "nov/23/2026"),
            ("time", "12:00:00"),
            ("gmt-offset", "-05:00"),
        ]);
        assert_eq!(parse_clock(&old_date).unwrap(), want);
        // The offset wins over the name (a "manual" zone has no name to look up).
        let manual = r(&[
            ("date", "2026-11-23"),
            ("time", "17:00:00"),
            ("gmt-offset", "+0000"),
            ("time-zone-name", "manual"),
        ]);
        assert_eq!(parse_clock(&manual).unwrap(), want);
        let seconds = r(&[
            ("date", "2026-11-23"),
            ("time", "18:00:00"),
            ("gmt-offset", "3600"),
        ]);
        assert_eq!(parse_clock(&seconds).unwrap(), want);
        // Summer time through the zone name.
        let summer = r(&[
            ("date", "2026-06-01"),
            ("time", "20:00:00"),
            ("time-zone-name", "Europe/Berlin"),
        ]);
        assert_eq!(
            parse_clock(&summer).unwrap(),
            "2026-06-01T18:00:00Z".parse::<jiff::Timestamp>().unwrap()
        );
        for bad in [
            r(&[("date", "2026-11-23"), ("time", "18:00:00")]),
            r(&[
                ("date", "2026-11-23"),
                ("time", "18:00:00"),
                ("time-zone-name", "manual"),
            ]),
            r(&[
                ("date", "23.11.2026"),
                ("time", "18:00:00"),
                ("gmt-offset", "+01:00"),
            ]),
            r(&[
                ("date", "2026-11-23"),
                ("time", "25:00:00"),
                ("gmt-offset", "+01:00"),
            ]),
            r(&[
                ("date", "2026-11-23"),
                ("time", "18:00:00"),
                ("gmt-offset", "+01:75"),
            ]),
            r(&[("time", "18:00:00"), ("gmt-offset", "+01:00")]),
        ] {
            assert!(parse_clock(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn encodings() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foob"), "Zm9vYg==");
        assert_eq!(base64(b"admin:venued-test"), "YWRtaW46dmVudWVkLXRlc3Q=");
        assert_eq!(
            query_string(&[
                ("list", "venue-blocked".into()),
                ("comment", "venued st07:x".into())
            ]),
            "list=venue-blocked&comment=venued%20st07%3Ax"
        );
        let fp = fingerprint(b"certificate");
        assert_eq!(fp.len(), 64 + 31);
        assert!(
            fp.chars()
                .all(|c| c == ':' || c.is_ascii_digit() || c.is_ascii_uppercase())
        );
        assert_eq!(normalize_fingerprint(&fp).len(), 64);
        assert_eq!(colon_hex(&normalize_fingerprint(&fp)), fp);
    }

    #[test]
    fn drivers_are_built_only_for_https_routers() {
        let kind = |url: &str, fp: Option<&str>| DeviceKind::Mikrotik {
            url: url.into(),
            user: "venued".into(),
            list: "venue-blocked".into(),
            tls_fingerprint: fp.map(str::to_owned),
        };
        let fp = "ab".repeat(32);
        let m = Mikrotik::new(&kind("https://10.0.0.1:8443", Some(&fp)), Some("pw")).unwrap();
        assert_eq!(m.list(), "venue-blocked");
        assert!(
            !format!("{m:?}").contains(&base64(b"venued:pw")),
            "no credentials in Debug"
        );
        assert!(Mikrotik::new(&kind("http://10.0.0.1", Some(&fp)), None).is_err());
        assert!(Mikrotik::new(&kind("https://10.0.0.1", Some("abc")), None).is_err());
        assert!(Mikrotik::new(&kind("https://10.0.0.1", None), None).is_ok());
        let plug = DeviceKind::Tasmota {
            host: "10.0.0.3".into(),
            topic: None,
        };
        assert!(
            matches!(Mikrotik::new(&plug, None), Err(DeviceError::Config(m)) if m.contains("tasmota"))
        );
    }
}
