//! The HTTP side of the smart plugs that power console stations — Shelly Gen1, Shelly
//! Gen2+ and Tasmota — behind one type, [`Plug`]: read the relay and the power drawn,
//! switch with an optional flip-back timer, identify the device.
//!
//! Why HTTP: it works with no broker configuration on the plug, it answers each command
//! synchronously (so the reconciler knows the outcome), and each firmware's own
//! fail-safe timer is reachable from it (Gen1 `timer`, Gen2 `toggle_after`, Tasmota
//! `PulseTime`). MQTT is the push channel; this is the fallback and the check.
//!
//! Every operation is bounded by the plug's timeout as a whole (a Gen2 digest round trip
//! or Tasmota's several commands share it), maps every failure to a [`DeviceError`] an
//! operator can act on, and never panics on what a device sends. Wire details live in
//! the per-firmware modules as pure functions (paths, encodings, parsing, the digest),
//! unit-tested; the `async` glue here only sends and dispatches.
//!
//! Rate limiting: Gen2 firmware answers 429 when polled hard. A 429 from any plug puts
//! it in a back-off (1 s, doubling to 30 s; a `Retry-After` within that range is
//! honoured): until it ends every call fails at once with
//! [`DeviceError::TooManyRequests`] without touching the network, and any answer that
//! is not a 429 ends it. The back-off lives in the `Plug`, so keep one `Plug` per device
//! rather than building one per call.

mod digest;
pub(crate) mod shelly1;
pub(crate) mod shelly2;
pub(crate) mod tasmota;

use super::DeviceError;
use super::http::{self, Answer, Origin};
use crate::domain::device::DeviceKind;
use hyper::Method;
use hyper::header::HeaderName;
use jiff::Timestamp;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::time::Instant;

/// The user name both Shelly generations and Tasmota's web server know.
const USER: &str = "admin";

/// A plug's relay as it reported it.
#[derive(Clone, Debug, PartialEq)]
pub struct PlugStatus {
    pub on: bool,
    /// Watts drawn now; None when the plug has no meter (or did not say).
    pub power_w: Option<f64>,
    /// Who switched last, in the firmware's words (`http`, `HTTP_in`, `button`,
    /// `timer`…); Tasmota does not say.
    pub source: Option<String>,
    /// A running flip-back (or auto-off) timer.
    pub timer: Option<TimerState>,
}

/// A timer that will flip the relay, as far as the plug tells.
#[derive(Clone, Debug, PartialEq)]
pub struct TimerState {
    /// When it started, by the plug's clock (Gen1, Gen2); Tasmota does not say.
    pub started_at: Option<Timestamp>,
    /// How long it was set for.
    pub duration: Option<Duration>,
    /// Time left as the plug reported it (Gen1, Tasmota); Gen2 reports only the start
    /// and the duration: see [`TimerState::remaining_at`].
    pub remaining: Option<Duration>,
}

impl TimerState {
    /// Time left at `now`: as reported, else from the start and the duration (which
    /// trusts the plug's clock to agree with `now`).
    pub fn remaining_at(&self, now: Timestamp) -> Option<Duration> {
        if let Some(r) = self.remaining {
            return Some(r);
        }
        let (start, duration) = (self.started_at?, self.duration?);
        let elapsed = now.duration_since(start);
        let elapsed = Duration::try_from(elapsed).unwrap_or(Duration::ZERO);
        Some(duration.saturating_sub(elapsed))
    }
}

/// What a plug says it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlugInfo {
    /// The `DeviceKind` type this driver spoke: `shelly_gen1`, `shelly_gen2`, `tasmota`.
    pub kind: &'static str,
    /// Gen1 `type` (`SHPLG-S`), Gen2 `model` (`SNPL-00112EU`); Tasmota knows no product
    /// model, so its chip (`StatusFWR.Hardware`, e.g. `ESP8266EX`).
    pub model: Option<String>,
    /// Gen1 `fw`, Gen2 `ver` (else `fw_id`), Tasmota `StatusFWR.Version`.
    pub firmware: Option<String>,
    /// Gen2 `id` (also its digest realm and MQTT prefix), Tasmota `Topic`; Gen1's
    /// `/shelly` has no id, so its MAC.
    pub id: Option<String>,
    pub mac: Option<String>,
    /// Shelly generation: 1 for Gen1 (whose `/shelly` has no `gen`), else as reported.
    pub generation: Option<u64>,
    /// Whether the device says its HTTP login is on (Shelly only).
    pub auth_enabled: Option<bool>,
    pub name: Option<String>,
}

/// Which firmware, and what its wire needs between calls.
enum Driver {
    Gen1,
    /// The last digest challenge, reused with an increasing `nc` so most calls need no
    /// 401 round trip (halving the requests to a plug that rate-limits).
    Gen2(Mutex<Option<shelly2::DigestSession>>),
    Tasmota,
}

/// One smart plug reached over HTTP. Cheap to share behind an `Arc`; calls may overlap.
pub struct Plug {
    driver: Driver,
    origin: Origin,
    /// Never logged, never in an error.
    password: Option<String>,
    timeout: Duration,
    backoff: Mutex<Backoff>,
}

impl std::fmt::Debug for Plug {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plug")
            .field("kind", &self.kind())
            .field("origin", &self.origin.authority())
            .field("password", &self.password.as_ref().map(|_| "<set>"))
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Plug {
    /// A driver for a plug `kind` (Shelly Gen1, Shelly Gen2, Tasmota; anything else is
    /// [`DeviceError::Config`]). `password` is the plug's web password (an empty one is
    /// none); every operation completes or fails within `timeout`.
    pub fn new(
        kind: &DeviceKind,
        password: Option<&str>,
        timeout: Duration,
    ) -> Result<Plug, DeviceError> {
        let (driver, host) = match kind {
            DeviceKind::ShellyGen1 { host, .. } => (Driver::Gen1, host),
            DeviceKind::ShellyGen2 { host, .. } => (Driver::Gen2(Mutex::new(None)), host),
            DeviceKind::Tasmota { host, .. } => (Driver::Tasmota, host),
            other => {
                return Err(DeviceError::Config(format!(
                    "a {} device is not a plug",
                    other.type_name()
                )));
            }
        };
        let origin = Origin::parse(host)?;
        if origin.tls {
            // The plugs' web servers speak plain HTTP only.
            return Err(DeviceError::Config(format!(
                "{host:?}: plugs are reached over plain HTTP"
            )));
        }
        Ok(Plug {
            driver,
            origin,
            password: password.filter(|p| !p.is_empty()).map(str::to_owned),
            timeout,
            backoff: Mutex::new(Backoff::default()),
        })
    }

    /// The `DeviceKind` type this driver speaks.
    pub fn kind(&self) -> &'static str {
        match self.driver {
            Driver::Gen1 => "shelly_gen1",
            Driver::Gen2(_) => "shelly_gen2",
            Driver::Tasmota => "tasmota",
        }
    }

    /// `host:port`, as errors name the plug.
    pub fn authority(&self) -> String {
        self.origin.authority()
    }

    /// Relay, power drawn (if metered), who switched last, a running timer.
    pub async fn status(&self) -> Result<PlugStatus, DeviceError> {
        let deadline = self.deadline();
        match &self.driver {
            Driver::Gen1 => shelly1::status(self, deadline).await,
            Driver::Gen2(session) => shelly2::status(self, session, deadline).await,
            Driver::Tasmota => tasmota::status(self, deadline).await,
        }
    }

    /// Switch the relay; with `flip_back`, the plug itself switches it back after that
    /// long (Gen1 `timer`, Gen2 `toggle_after`, Tasmota `PulseTime1`, on only — see the
    /// `tasmota` module), so a station goes dark even if venued dies. Re-sending renews
    /// the timer (unverified on real hardware for both Shelly generations). The answer is
    /// the status read back after the command; if that read fails, what the command's
    /// own answer said (the switch did happen).
    pub async fn switch(
        &self,
        on: bool,
        flip_back: Option<Duration>,
    ) -> Result<PlugStatus, DeviceError> {
        if flip_back.is_some_and(|d| d.is_zero()) {
            return Err(DeviceError::Config(
                "a flip-back timer must be longer than zero".into(),
            ));
        }
        let deadline = self.deadline();
        let known = match &self.driver {
            Driver::Gen1 => shelly1::switch(self, on, flip_back, deadline).await?,
            Driver::Gen2(session) => {
                shelly2::switch(self, session, on, flip_back, deadline).await?
            }
            Driver::Tasmota => tasmota::switch(self, on, flip_back, deadline).await?,
        };
        let read_back = match &self.driver {
            Driver::Gen1 => shelly1::status(self, deadline).await,
            Driver::Gen2(session) => shelly2::status(self, session, deadline).await,
            Driver::Tasmota => tasmota::status(self, deadline).await,
        };
        Ok(read_back.unwrap_or_else(|e| {
            let plug = self.authority();
            tracing::debug!(%plug, error = %e, "switched; reading the status back failed");
            known
        }))
    }

    /// Model, firmware, id. Shelly's `/shelly` needs no password; a Gen1 plug configured
    /// as Gen2 (or the other way round) is a [`DeviceError::Config`].
    pub async fn info(&self) -> Result<PlugInfo, DeviceError> {
        let deadline = self.deadline();
        match &self.driver {
            Driver::Gen1 => shelly1::info(self, deadline).await,
            Driver::Gen2(_) => shelly2::info(self, deadline).await,
            Driver::Tasmota => tasmota::info(self, deadline).await,
        }
    }

    /// Shelly Gen2: one RPC method with JSON `params` (`POST /rpc/<method>`, digest
    /// auth as for every call), its bare result. For provisioning, which needs methods
    /// beyond status and switch (`Switch.SetConfig`, `Script.*`, `KVS.*`).
    pub async fn gen2_call(
        &self,
        method: &str,
        params: &serde_json::Value,
    ) -> Result<serde_json::Value, DeviceError> {
        let Driver::Gen2(session) = &self.driver else {
            return Err(self.not_this("an RPC method", "shelly_gen2"));
        };
        shelly2::call(self, session, self.deadline(), method, params).await
    }

    /// Tasmota: one command line (`PowerOnState`, `Rule1 1`…) over `/cm`, its JSON
    /// answer.
    pub async fn tasmota_command(&self, line: &str) -> Result<serde_json::Value, DeviceError> {
        if !matches!(self.driver, Driver::Tasmota) {
            return Err(self.not_this("a command", "tasmota"));
        }
        tasmota::command(self, self.deadline(), line).await
    }

    /// Shelly Gen1: GET `path_and_query` (e.g. `/settings/relay/0?default_state=off`)
    /// with its Basic auth, the JSON answer.
    pub async fn gen1_get(&self, path_and_query: &str) -> Result<serde_json::Value, DeviceError> {
        if !matches!(self.driver, Driver::Gen1) {
            return Err(self.not_this("a settings call", "shelly_gen1"));
        }
        shelly1::call(self, self.deadline(), path_and_query).await
    }

    fn not_this(&self, what: &str, kind: &str) -> DeviceError {
        DeviceError::Config(format!(
            "{} is a {} plug: {what} is for a {kind}",
            self.authority(),
            self.kind()
        ))
    }

    fn deadline(&self) -> Instant {
        // `Duration::MAX` as "no limit" must not overflow the clock: a year will do.
        let now = Instant::now();
        now.checked_add(self.timeout)
            .unwrap_or_else(|| now + Duration::from_secs(365 * 24 * 3600))
    }

    fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    fn backoff(&self) -> MutexGuard<'_, Backoff> {
        // Poisoned only by a panic elsewhere while holding it; the state is still valid.
        self.backoff.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// One GET within what is left of `deadline`, through the rate-limit back-off.
    async fn get(
        &self,
        deadline: Instant,
        path_and_query: &str,
        headers: &[(HeaderName, String)],
    ) -> Result<Answer, DeviceError> {
        self.request(deadline, Method::GET, path_and_query, headers, None)
            .await
    }

    /// One request within what is left of `deadline`, through the rate-limit back-off.
    async fn request(
        &self,
        deadline: Instant,
        method: Method,
        path_and_query: &str,
        headers: &[(HeaderName, String)],
        body: Option<Vec<u8>>,
    ) -> Result<Answer, DeviceError> {
        let who = self.authority();
        if self.backoff().blocked(Instant::now()) {
            return Err(DeviceError::TooManyRequests(who));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(DeviceError::Timeout(who, self.timeout));
        }
        let answer = http::send(
            &self.origin,
            None,
            method,
            path_and_query,
            headers,
            body,
            left,
        )
        .await
        .map_err(|e| match e {
            // The operation's timeout, not the slice of it this request had left.
            DeviceError::Timeout(w, _) => DeviceError::Timeout(w, self.timeout),
            e => e,
        })?;
        if answer.status == hyper::StatusCode::TOO_MANY_REQUESTS {
            let retry_after = answer
                .headers
                .get(hyper::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            let wait = self.backoff().hit(Instant::now(), retry_after);
            tracing::debug!(plug = %who, ?wait, "rate-limited (429); backing off");
            return Err(DeviceError::TooManyRequests(who));
        }
        self.backoff().clear();
        Ok(answer)
    }
}

/// The rate-limit back-off of one plug.
#[derive(Debug, Default)]
struct Backoff {
    /// No request before this.
    not_before: Option<Instant>,
    /// The wait the next 429 imposes; zero means the first one.
    next: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_secs(1);
    const MAX: Duration = Duration::from_secs(30);

    fn blocked(&self, now: Instant) -> bool {
        self.not_before.is_some_and(|t| now < t)
    }

    /// A 429 arrived at `now`: wait 1 s, 2 s, 4 s… up to 30 s (longer if the plug asked
    /// for it with `Retry-After`, but never beyond 30 s). Returns the wait.
    fn hit(&mut self, now: Instant, retry_after: Option<Duration>) -> Duration {
        let step = if self.next.is_zero() {
            Self::FIRST
        } else {
            self.next
        };
        let wait = step.max(retry_after.unwrap_or_default()).min(Self::MAX);
        self.not_before = Some(now + wait);
        self.next = (step * 2).min(Self::MAX);
        wait
    }

    fn clear(&mut self) {
        *self = Self::default();
    }
}

/// A short, printable excerpt of an answer body for error messages (devices sometimes
/// answer with whole HTML pages).
fn excerpt(body: &[u8]) -> String {
    const MAX: usize = 120;
    let text = String::from_utf8_lossy(body);
    let mut out: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX)
        .collect();
    if text.chars().count() > MAX {
        out.push('…');
    }
    out.trim().to_owned()
}

/// Unix seconds (as plugs report them) to a timestamp; None for 0 ("no timer") and
/// values out of range.
fn unix_time(secs: f64) -> Option<Timestamp> {
    if !secs.is_finite() || secs <= 0.0 {
        return None;
    }
    Timestamp::from_millisecond((secs * 1000.0).round() as i64).ok()
}

/// Seconds (as plugs report them) to a duration; None for negative or absurd values.
fn seconds(secs: f64) -> Option<Duration> {
    Duration::try_from_secs_f64(secs).ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn backoff_doubles_to_30s_and_clears() {
        let t0 = Instant::now();
        let mut b = Backoff::default();
        assert!(!b.blocked(t0));
        assert_eq!(b.hit(t0, None), S);
        assert!(b.blocked(t0));
        assert!(b.blocked(t0 + S / 2));
        assert!(!b.blocked(t0 + S));
        let waits: Vec<_> = (0..6).map(|_| b.hit(t0, None).as_secs()).collect();
        assert_eq!(waits, [2, 4, 8, 16, 30, 30]);
        assert!(b.blocked(t0 + 29 * S));
        b.clear();
        assert!(!b.blocked(t0));
        assert_eq!(b.hit(t0, None), S);
        // Retry-After lengthens a step, within the cap.
        b.clear();
        assert_eq!(b.hit(t0, Some(5 * S)), 5 * S);
        assert_eq!(b.hit(t0, Some(Duration::ZERO)), 2 * S);
        assert_eq!(b.hit(t0, Some(3600 * S)), 30 * S);
    }

    #[test]
    fn only_plug_kinds() {
        let t = S;
        let gen1 = DeviceKind::ShellyGen1 {
            host: "10.0.0.5".into(),
            mqtt_id: None,
        };
        let p = Plug::new(&gen1, Some(""), t).unwrap();
        assert_eq!(p.kind(), "shelly_gen1");
        assert_eq!(p.authority(), "10.0.0.5:80");
        assert_eq!(p.password(), None);
        let gen2 = DeviceKind::ShellyGen2 {
            host: "10.0.0.6:8080".into(),
            mqtt_prefix: None,
        };
        let p = Plug::new(&gen2, Some("pw"), t).unwrap();
        assert_eq!(p.kind(), "shelly_gen2");
        assert_eq!(p.authority(), "10.0.0.6:8080");
        // The password never shows.
        assert!(!format!("{p:?}").contains("pw\""));
        assert!(format!("{p:?}").contains("<set>"));
        let tasmota = DeviceKind::Tasmota {
            host: "plug.local".into(),
            topic: None,
        };
        assert_eq!(Plug::new(&tasmota, None, t).unwrap().kind(), "tasmota");
        // No overflow for "no limit".
        let forever = Plug::new(&tasmota, None, Duration::MAX).unwrap();
        assert!(forever.deadline() > Instant::now() + 3600 * S);
        let router = DeviceKind::Mikrotik {
            url: "https://10.0.0.1".into(),
            user: "venued".into(),
            list: "venue-blocked".into(),
            tls_fingerprint: None,
        };
        assert!(matches!(
            Plug::new(&router, None, t),
            Err(DeviceError::Config(_))
        ));
        let bad = DeviceKind::Tasmota {
            host: "a/b".into(),
            topic: None,
        };
        assert!(matches!(
            Plug::new(&bad, None, t),
            Err(DeviceError::Config(_))
        ));
    }

    #[test]
    fn calls_can_run_on_spawned_tasks() {
        fn send<T: Send>(_: &T) {}
        fn shared<T: Send + Sync>() {}
        shared::<Plug>();
        for kind in [
            DeviceKind::ShellyGen1 {
                host: "h".into(),
                mqtt_id: None,
            },
            DeviceKind::ShellyGen2 {
                host: "h".into(),
                mqtt_prefix: None,
            },
            DeviceKind::Tasmota {
                host: "h".into(),
                topic: None,
            },
        ] {
            let p = Plug::new(&kind, Some("pw"), S).unwrap();
            send(&p.status());
            send(&p.switch(true, Some(S)));
            send(&p.info());
        }
    }

    #[test]
    fn timer_remaining_from_start_and_duration() {
        let start = Timestamp::from_second(1_700_000_000).unwrap();
        let t = TimerState {
            started_at: Some(start),
            duration: Some(10 * S),
            remaining: None,
        };
        let now = Timestamp::from_second(1_700_000_004).unwrap();
        assert_eq!(t.remaining_at(now), Some(6 * S));
        let later = Timestamp::from_second(1_700_000_100).unwrap();
        assert_eq!(t.remaining_at(later), Some(Duration::ZERO));
        let reported = TimerState {
            remaining: Some(3 * S),
            ..t.clone()
        };
        assert_eq!(reported.remaining_at(later), Some(3 * S));
        let unknown = TimerState {
            started_at: None,
            ..t
        };
        assert_eq!(unknown.remaining_at(now), None);
    }

    #[test]
    fn helpers() {
        assert_eq!(excerpt(b"  a\nb  "), "a b");
        assert_eq!(excerpt(&[b'x'; 300]).chars().count(), 121);
        assert_eq!(unix_time(0.0), None);
        assert_eq!(
            unix_time(1_700_000_000.5).unwrap().as_millisecond(),
            1_700_000_000_500
        );
        assert_eq!(unix_time(f64::NAN), None);
        assert_eq!(seconds(1.5), Some(Duration::from_millis(1500)));
        assert_eq!(seconds(-1.0), None);
    }
}
