//! A fake MikroTik router speaking the RouterOS v7 REST API: HTTPS on loopback with a
//! self-signed certificate (its PEM is exposed so the client under test can trust it),
//! optionally plain HTTP too (`www`, RouterOS 7.9+), HTTP Basic auth.
//!
//! The router model ([`router`]) keeps the firewall address lists, filter and raw rules
//! (the default configuration's forward chain, with the dynamic FastTrack counter rule and
//! `fasttrack-connection`), and a connection table the test seeds; [`rest`] maps REST
//! requests onto it. [`Mikrotik::forward_verdict`] and [`Mikrotik::connection_verdict`]
//! say what the firewall would do with a packet, FastTrack included, so tests can check
//! that a blocking design blocks.
//!
//! Faults ([`Fault`]): unreachable, slow, and — the important one — failing requests that
//! did or did not apply their change, so a client can be tested for idempotence ("re-read
//! after errors").
//!
//! Not verified against a real router (RouterOS was not at hand): the status of a
//! successful `PUT` (200 here) and `DELETE` (204, empty); the texts `JSON parse error`,
//! `missing value(s) of argument(s) …`, `invalid value for argument …`, `input does not
//! match any value of …`; that `place-before` a builtin rule fails with `cannot move
//! builtin`; `no such item` from `POST …/remove` for a vanished connection; the
//! `WWW-Authenticate` header on 401; the `.id` of the dynamic counter rule. Matchers the
//! packet model does not know (interfaces, IPsec, NAT state, ports) make a rule not match.

pub mod rest;
pub mod router;

pub use router::{
    AddressEntry, ConnState, Connection, FilterRule, Verdict, format_ros_duration,
    parse_ros_duration,
};

use crate::clock::{Clock, SystemClock, TrustMode};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming as Body;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use jiff::SignedDuration;
use rest::Reply;
use router::{Menu, Now, RosError, Router};
use rustls::ServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

/// How the router misbehaves.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Fault {
    #[default]
    None,
    /// Unreachable: connections are refused (listeners closed, open connections cut).
    Offline,
    /// Every request waits this long before it is handled. It is handled even if the
    /// client gave up meanwhile.
    Slow(Duration),
    /// The next `count` requests that change something (PUT, PATCH, DELETE, POST other
    /// than `print`) fail: with `status` (400 carries `"detail":"Session closed"`) or,
    /// when `status` is None, with the connection closed and no answer. `applied`: the
    /// change was made anyway (RouterOS does that, e.g. a 400 on a PATCH that took
    /// effect). Reads are not affected. The fault clears itself after `count` failures.
    FailNext {
        count: u32,
        status: Option<u16>,
        applied: bool,
    },
}

/// A router to start.
#[derive(Clone)]
pub struct MikrotikConfig {
    pub username: String,
    pub password: String,
    /// HTTPS (`www-ssl`); default 127.0.0.1, any port.
    pub https_listen: SocketAddr,
    /// Plain HTTP (`www`) too, if set.
    pub http_listen: Option<SocketAddr>,
    /// Start with the default configuration's firewall rules (else an empty table).
    pub defconf: bool,
    /// `/system/clock time-zone-name`.
    pub time_zone: String,
    /// The wall clock the router's clock follows (plus [`Mikrotik::set_clock_offset`]).
    pub clock: Arc<dyn Clock>,
}

impl Default for MikrotikConfig {
    fn default() -> Self {
        Self {
            username: "admin".into(),
            password: "venued-test".into(),
            https_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            http_listen: None,
            defconf: true,
            time_zone: "Europe/Berlin".into(),
            clock: Arc::new(SystemClock::new(TrustMode::Always)),
        }
    }
}

/// A running fake router. Dropping it stops it.
pub struct Mikrotik {
    shared: Arc<Shared>,
    https_addr: SocketAddr,
    http_addr: Option<SocketAddr>,
    cert_pem: String,
    tasks: Vec<JoinHandle<()>>,
}

struct Shared {
    router: Mutex<Router>,
    origin: tokio::time::Instant,
    clock: Arc<dyn Clock>,
    fault: watch::Sender<Fault>,
    requests: Mutex<Vec<String>>,
    /// `Basic <base64(user:password)>`.
    authorization: String,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned lock only means a panicking test thread; the state is still usable.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    fn now(&self) -> Now {
        Now {
            mono: self.origin.elapsed(),
            wall: self.clock.wall(),
        }
    }

    fn fault(&self) -> Fault {
        *self.fault.borrow()
    }

    /// Use up one injected failure, if one is pending: (status, applied).
    fn take_failure(&self) -> Option<(Option<u16>, bool)> {
        let mut taken = None;
        self.fault.send_if_modified(|f| match f {
            Fault::FailNext {
                count,
                status,
                applied,
            } if *count > 0 => {
                taken = Some((*status, *applied));
                *count -= 1;
                if *count == 0 {
                    *f = Fault::None;
                }
                true
            }
            _ => false,
        });
        taken
    }
}

/// Standard base64 with padding (for the Basic auth header).
fn base64(data: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(data)
}

impl Mikrotik {
    /// Start the router: HTTPS with a fresh self-signed certificate for `localhost` and
    /// the listen address, plain HTTP if configured.
    pub async fn start(cfg: MikrotikConfig) -> io::Result<Self> {
        let names = vec!["localhost".to_owned(), cfg.https_listen.ip().to_string()];
        let key = rcgen::generate_simple_self_signed(names).map_err(io::Error::other)?;
        let cert_pem = key.cert.pem();
        let cert_der: CertificateDer<'static> = key.cert.der().clone();
        let key_der =
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.signing_key.serialize_der()));
        let mut tls =
            ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(io::Error::other)?
                .with_no_client_auth()
                .with_single_cert(vec![cert_der], key_der)
                .map_err(io::Error::other)?;
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = TlsAcceptor::from(Arc::new(tls));

        let origin = tokio::time::Instant::now();
        let first = Now {
            mono: Duration::ZERO,
            wall: cfg.clock.wall(),
        };
        let shared = Arc::new(Shared {
            router: Mutex::new(Router::new(cfg.defconf, &cfg.time_zone, first)),
            origin,
            clock: cfg.clock.clone(),
            fault: watch::channel(Fault::None).0,
            requests: Mutex::new(Vec::new()),
            authorization: format!(
                "Basic {}",
                base64(format!("{}:{}", cfg.username, cfg.password).as_bytes())
            ),
        });
        let https = bind(cfg.https_listen)?;
        let https_addr = https.local_addr()?;
        let mut tasks = vec![tokio::spawn(server(
            shared.clone(),
            https_addr,
            https,
            Some(acceptor),
        ))];
        let mut http_addr = None;
        if let Some(addr) = cfg.http_listen {
            let http = bind(addr)?;
            let addr = http.local_addr()?;
            http_addr = Some(addr);
            tasks.push(tokio::spawn(server(shared.clone(), addr, http, None)));
        }
        Ok(Self {
            shared,
            https_addr,
            http_addr,
            cert_pem,
            tasks,
        })
    }

    pub fn https_addr(&self) -> SocketAddr {
        self.https_addr
    }

    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    /// The server certificate (self-signed) in PEM: the client's trust anchor.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn set_fault(&self, fault: Fault) {
        self.shared.fault.send_replace(fault);
    }

    /// The fault in force (FailNext counts down as it is used).
    pub fn fault(&self) -> Fault {
        self.shared.fault()
    }

    /// The entries of one IPv4 address list, in order.
    pub fn address_list(&self, list: &str) -> Vec<AddressEntry> {
        let now = self.shared.now();
        lock(&self.shared.router).address_list(list, now)
    }

    /// `/ip/firewall/filter`, in order (evaluation order).
    pub fn filter_rules(&self) -> Vec<FilterRule> {
        let now = self.shared.now();
        lock(&self.shared.router).rules(Menu::Filter, now)
    }

    /// `/ip/firewall/raw`, in order.
    pub fn raw_rules(&self) -> Vec<FilterRule> {
        let now = self.shared.now();
        lock(&self.shared.router).rules(Menu::Raw, now)
    }

    pub fn connections(&self) -> Vec<Connection> {
        lock(&self.shared.router).connections()
    }

    /// Seed a tracked connection (`"192.168.50.21:3074"`, `"203.0.113.7:3074"`, `"udp"`);
    /// its `.id`.
    pub fn add_connection(&self, src: &str, dst: &str, protocol: &str) -> String {
        let now = self.shared.now();
        lock(&self.shared.router).add_connection(src, dst, protocol, now)
    }

    /// Seed an address-list entry as if it came with the configuration (duplicates
    /// allowed, not counted as an add); its `.id`.
    pub fn seed_address(&self, list: &str, address: &str, comment: &str) -> String {
        let now = self.shared.now();
        lock(&self.shared.router).seed_address(list, address, comment, now)
    }

    /// How many times `address` was added to `list` over REST.
    pub fn added(&self, list: &str, address: &str) -> u32 {
        lock(&self.shared.router).counts(list, address).0
    }

    /// How many times an entry for `address` was removed from `list` over REST.
    pub fn removed(&self, list: &str, address: &str) -> u32 {
        lock(&self.shared.router).counts(list, address).1
    }

    /// What the forward path does with a packet (raw prerouting, then filter forward).
    pub fn forward_verdict(
        &self,
        src: IpAddr,
        dst: IpAddr,
        protocol: &str,
        state: ConnState,
    ) -> Verdict {
        lock(&self.shared.router).forward_verdict(src, dst, protocol, state)
    }

    /// The next packet of a seeded connection: FastTracked ones skip the firewall, and
    /// one accepted past `fasttrack-connection` becomes FastTracked. None if the
    /// connection is gone.
    pub fn connection_verdict(&self, id: &str) -> Option<Verdict> {
        lock(&self.shared.router).connection_verdict(id)
    }

    /// Move the router's clock away from the host's (clock-trust tests).
    pub fn set_clock_offset(&self, offset: SignedDuration) {
        lock(&self.shared.router).set_clock_offset(offset);
    }

    /// Reboot: timed (dynamic) address-list entries and connections are lost.
    pub fn reboot(&self) {
        let now = self.shared.now();
        lock(&self.shared.router).reboot(now);
    }

    /// Every request received, in order: `PUT /rest/ip/firewall/address-list {"list":…}`
    /// (method, path with query, body).
    pub fn requests(&self) -> Vec<String> {
        lock(&self.shared.requests).clone()
    }

    pub async fn stop(mut self) {
        for t in &self.tasks {
            t.abort();
        }
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
    }
}

impl Drop for Mikrotik {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Listen with SO_REUSEADDR, so the Offline fault can close the port and reopen it. The
/// backlog is tokio's default: a venue's consoles blocked together open hundreds of
/// connections at once, and a short backlog drops their SYNs (a 1 s retransmit each).
fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

async fn server(
    shared: Arc<Shared>,
    addr: SocketAddr,
    first: TcpListener,
    tls: Option<TlsAcceptor>,
) {
    let mut fault = shared.fault.subscribe();
    let mut listener = Some(first);
    loop {
        let l = match listener.take() {
            Some(l) => l,
            None => {
                if *fault.borrow_and_update() == Fault::Offline {
                    if fault.changed().await.is_err() {
                        return;
                    }
                    continue;
                }
                match bind(addr) {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::warn!(%addr, error = %e, "mikrotik fake: cannot listen again");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                }
            }
        };
        // Dropping the set (on Offline) cuts the open connections too.
        let mut conns = JoinSet::new();
        loop {
            tokio::select! {
                accepted = l.accept() => if let Ok((tcp, _)) = accepted {
                    conns.spawn(connection(shared.clone(), tcp, tls.clone()));
                },
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
                changed = fault.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    if *fault.borrow_and_update() == Fault::Offline {
                        break;
                    }
                }
            }
        }
    }
}

async fn connection(shared: Arc<Shared>, tcp: TcpStream, tls: Option<TlsAcceptor>) {
    match tls {
        Some(acceptor) => {
            match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => serve(shared, stream).await,
                Ok(Err(e)) => tracing::debug!(error = %e, "mikrotik fake: TLS handshake failed"),
                Err(_) => tracing::debug!("mikrotik fake: TLS handshake timed out"),
            }
        }
        None => serve(shared, tcp).await,
    }
}

async fn serve<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(shared: Arc<Shared>, io: S) {
    let service = service_fn(move |req| request(shared.clone(), req));
    let _ = http1::Builder::new()
        .serve_connection(TokioIo::new(io), service)
        .await;
}

enum Outcome {
    Reply(Reply),
    /// Close the connection without answering.
    Drop,
}

async fn request(
    shared: Arc<Shared>,
    req: Request<Body>,
) -> Result<Response<Full<Bytes>>, io::Error> {
    let method = req.method().as_str().to_owned();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    let authorized = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            let v = v.trim();
            v.get(..6).is_some_and(|s| s.eq_ignore_ascii_case("basic "))
                && v[6..].trim() == &shared.authorization[6..]
        });
    let body = match Limited::new(req.into_body(), 1 << 20).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let line = match (query.is_empty(), body.is_empty()) {
        (true, true) => format!("{method} {path}"),
        (true, false) => format!("{method} {path} {}", String::from_utf8_lossy(&body)),
        (false, true) => format!("{method} {path}?{query}"),
        (false, false) => format!("{method} {path}?{query} {}", String::from_utf8_lossy(&body)),
    };
    lock(&shared.requests).push(line);
    // Handled in its own task: a client that gives up does not stop a change half-way.
    let task = tokio::spawn(async move {
        if let Fault::Slow(d) = shared.fault() {
            tokio::time::sleep(d).await;
        }
        if !authorized {
            return Outcome::Reply(Reply::error(&RosError {
                status: 401,
                detail: None,
            }));
        }
        let failure = if rest::mutates(&method, &path) {
            shared.take_failure()
        } else {
            None
        };
        let now = shared.now();
        let mut router = lock(&shared.router);
        match failure {
            None => Outcome::Reply(rest::handle(
                &mut router,
                &method,
                &path,
                &query,
                &body,
                now,
            )),
            Some((status, applied)) => {
                if applied {
                    let _ = rest::handle(&mut router, &method, &path, &query, &body, now);
                }
                match status {
                    Some(status) => Outcome::Reply(Reply::error(&RosError {
                        status,
                        detail: (status == 400).then(|| "Session closed".to_owned()),
                    })),
                    None => Outcome::Drop,
                }
            }
        }
    });
    match task.await {
        Ok(Outcome::Reply(reply)) => Ok(response(reply)),
        Ok(Outcome::Drop) => Err(io::Error::other("injected failure: connection dropped")),
        Err(e) => Err(io::Error::other(e)),
    }
}

fn response(reply: Reply) -> Response<Full<Bytes>> {
    let body = reply
        .body
        .as_ref()
        .map(|b| b.to_string())
        .unwrap_or_default();
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::BAD_REQUEST);
    let headers = r.headers_mut();
    if reply.body.is_some() {
        headers.insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("application/json"),
        );
    }
    if reply.status == 401 {
        headers.insert(
            hyper::header::WWW_AUTHENTICATE,
            hyper::header::HeaderValue::from_static("Basic realm=\"RouterOS\""),
        );
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foob"), "Zm9vYg==");
        assert_eq!(base64(b"admin:venued-test"), "YWRtaW46dmVudWVkLXRlc3Q=");
    }
}
