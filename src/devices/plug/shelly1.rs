//! Shelly Gen1 (Plug, Plug S) over HTTP: `GET /status` (relay and meter in one answer),
//! `GET /relay/0?turn=on|off[&timer=N]`, `GET /shelly`; HTTP Basic auth (`admin`) when
//! the plug has a login.
//!
//! The flip-back is the relay's one-shot `timer` (whole seconds: rounded up, so a paid
//! session is never cut short). Gen1 firmware does not rate-limit as far as known; a 429
//! would still go through the plug's back-off.

use super::{
    DeviceError, Plug, PlugInfo, PlugStatus, TimerState, USER, excerpt, seconds, unix_time,
};
use hyper::StatusCode;
use hyper::header::{AUTHORIZATION, HeaderName};
use serde_json::Value;
use std::time::Duration;
use tokio::time::Instant;

pub(super) async fn status(plug: &Plug, deadline: Instant) -> Result<PlugStatus, DeviceError> {
    let body = call(plug, deadline, "/status").await?;
    parse_status(&body).map_err(|e| malformed(plug, e))
}

pub(super) async fn switch(
    plug: &Plug,
    on: bool,
    flip_back: Option<Duration>,
    deadline: Instant,
) -> Result<PlugStatus, DeviceError> {
    let body = call(plug, deadline, &relay_path(on, flip_back)).await?;
    let relay = parse_relay(&body).map_err(|e| malformed(plug, e))?;
    if relay.on != on {
        // Overpower protection, for one, keeps the relay off.
        return Err(DeviceError::Refused {
            device: plug.authority(),
            status: 200,
            detail: format!(
                "asked to switch {}, the relay stayed {}",
                word(on),
                word(relay.on)
            ),
        });
    }
    Ok(relay)
}

pub(super) async fn info(plug: &Plug, deadline: Instant) -> Result<PlugInfo, DeviceError> {
    let body = call(plug, deadline, "/shelly").await?;
    parse_shelly(&body).map_err(|e| match e {
        Problem::Malformed(m) => malformed(plug, m),
        Problem::Config(m) => DeviceError::Config(format!("{}: {m}", plug.authority())),
    })
}

fn word(on: bool) -> &'static str {
    if on { "on" } else { "off" }
}

fn malformed(plug: &Plug, what: String) -> DeviceError {
    DeviceError::Malformed(plug.authority(), what)
}

/// GET `path`, with Basic auth if a password is set; the JSON of a 200, else the error.
pub(super) async fn call(plug: &Plug, deadline: Instant, path: &str) -> Result<Value, DeviceError> {
    let headers: Vec<(HeaderName, String)> = plug
        .password()
        .map(|p| (AUTHORIZATION, basic_auth(USER, p)))
        .into_iter()
        .collect();
    let answer = plug.get(deadline, path, &headers).await?;
    let who = plug.authority();
    match answer.status {
        StatusCode::OK => serde_json::from_slice(&answer.body)
            .map_err(|e| DeviceError::Malformed(who, format!("not JSON: {e}"))),
        StatusCode::UNAUTHORIZED => Err(DeviceError::Auth(who)),
        s => Err(DeviceError::Refused {
            device: who,
            status: s.as_u16(),
            detail: excerpt(&answer.body),
        }),
    }
}

/// `/relay/0?turn=on|off`, with `&timer=N` whole seconds (at least 1) for a flip-back.
pub(super) fn relay_path(on: bool, flip_back: Option<Duration>) -> String {
    let mut p = format!("/relay/0?turn={}", word(on));
    if let Some(d) = flip_back {
        p.push_str(&format!("&timer={}", whole_seconds_up(d)));
    }
    p
}

/// Whole seconds, rounded up, at least 1.
fn whole_seconds_up(d: Duration) -> u64 {
    let s = d.as_secs().saturating_add(u64::from(d.subsec_nanos() > 0));
    s.max(1)
}

/// `Authorization: Basic base64(user:password)`.
pub(super) fn basic_auth(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        crate::devices::http::base64(format!("{user}:{password}").as_bytes())
    )
}

/// A relay object (`/relay/0`, `status.relays[0]`): `ison`, `source`, and the timer
/// (`has_timer`, `timer_started` unix s, `timer_duration`, `timer_remaining`).
fn parse_relay(v: &Value) -> Result<PlugStatus, String> {
    let on = v
        .get("ison")
        .and_then(Value::as_bool)
        .ok_or("the relay has no boolean \"ison\"")?;
    let source = v.get("source").and_then(Value::as_str).map(str::to_owned);
    let timer = v
        .get("has_timer")
        .and_then(Value::as_bool)
        .unwrap_or(false)
        .then(|| {
            let num = |k| v.get(k).and_then(Value::as_f64);
            TimerState {
                started_at: num("timer_started").and_then(unix_time),
                duration: num("timer_duration").and_then(seconds),
                remaining: num("timer_remaining").and_then(seconds),
            }
        });
    Ok(PlugStatus {
        on,
        power_w: None,
        source,
        timer,
    })
}

/// `/status`: `relays[0]` and `meters[0].power` (a Plug without S has no meter).
pub(crate) fn parse_status(v: &Value) -> Result<PlugStatus, String> {
    let relay = v
        .get("relays")
        .and_then(|r| r.get(0))
        .ok_or("the status has no relays[0]")?;
    let mut status = parse_relay(relay)?;
    status.power_w = v
        .get("meters")
        .and_then(|m| m.get(0))
        .filter(|m| m.get("is_valid").and_then(Value::as_bool) != Some(false))
        .and_then(|m| m.get("power"))
        .and_then(Value::as_f64);
    Ok(status)
}

enum Problem {
    Malformed(String),
    /// It is not a Gen1 device.
    Config(String),
}

/// `/shelly`: Gen1 has `type`, `fw`, `mac`, `auth` and no `gen`.
fn parse_shelly(v: &Value) -> Result<PlugInfo, Problem> {
    if !v.is_object() {
        return Err(Problem::Malformed("/shelly is not a JSON object".into()));
    }
    if let Some(g) = v.get("gen") {
        return Err(Problem::Config(format!(
            "this is a Shelly Gen{g} device (its /shelly has \"gen\"): configure it as shelly_gen2"
        )));
    }
    let text = |k| v.get(k).and_then(Value::as_str).map(str::to_owned);
    let model = text("type");
    if model.is_none() {
        return Err(Problem::Malformed(
            "/shelly has neither \"gen\" nor \"type\": not a Shelly?".into(),
        ));
    }
    let mac = text("mac");
    Ok(PlugInfo {
        kind: "shelly_gen1",
        model,
        firmware: text("fw"),
        id: mac.clone(),
        mac,
        generation: Some(1),
        auth_enabled: v.get("auth").and_then(Value::as_bool),
        name: text("name"),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    const FIXTURE: &str =
        include_str!("../../fakes/fixtures/shelly/gen1_plug_s_SHPLG-S_fw1.14.0.json");

    fn fixture() -> Value {
        serde_json::from_str(FIXTURE).unwrap()
    }

    #[test]
    fn paths() {
        assert_eq!(relay_path(true, None), "/relay/0?turn=on");
        assert_eq!(relay_path(false, None), "/relay/0?turn=off");
        assert_eq!(
            relay_path(true, Some(Duration::from_secs(30))),
            "/relay/0?turn=on&timer=30"
        );
        assert_eq!(
            relay_path(true, Some(Duration::from_millis(1200))),
            "/relay/0?turn=on&timer=2"
        );
        assert_eq!(
            relay_path(false, Some(Duration::from_millis(1))),
            "/relay/0?turn=off&timer=1"
        );
        assert_eq!(
            relay_path(true, Some(Duration::MAX)),
            format!("/relay/0?turn=on&timer={}", u64::MAX)
        );
    }

    #[test]
    fn basic_auth_header() {
        assert_eq!(basic_auth("admin", "secret"), "Basic YWRtaW46c2VjcmV0");
        // RFC 4648 §10 test vectors.
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(crate::devices::http::base64(i.as_bytes()), o);
        }
        assert_eq!(crate::devices::http::base64(&[0xff, 0xfe]), "//4=");
    }

    #[test]
    fn real_status_and_shelly() {
        let f = fixture();
        let s = parse_status(&f["status"]).unwrap();
        assert!(!s.on);
        assert_eq!(s.power_w, Some(0.0));
        assert_eq!(s.source.as_deref(), Some("http"));
        assert_eq!(s.timer, None);
        let i = parse_shelly(&f["shelly"]).ok().unwrap();
        assert_eq!(i.model.as_deref(), Some("SHPLG-S"));
        assert_eq!(
            i.firmware.as_deref(),
            Some("20230913-113421/v1.14.0-gcb84623")
        );
        assert_eq!(i.id.as_deref(), Some("AABBCCDDEEFF"));
        assert_eq!(i.generation, Some(1));
        assert_eq!(i.auth_enabled, Some(false));
    }

    #[test]
    fn relay_with_timer() {
        let r = parse_relay(&json!({
            "ison": true, "has_timer": true, "timer_started": 1_700_000_000,
            "timer_duration": 30, "timer_remaining": 12, "overpower": false, "source": "http",
        }))
        .unwrap();
        assert!(r.on);
        let t = r.timer.unwrap();
        assert_eq!(t.started_at.unwrap().as_second(), 1_700_000_000);
        assert_eq!(t.duration, Some(Duration::from_secs(30)));
        assert_eq!(t.remaining, Some(Duration::from_secs(12)));
        // No clock on the plug: timer_started 0 is "unknown", not 1970.
        let r = parse_relay(&json!({"ison": true, "has_timer": true, "timer_started": 0,
            "timer_duration": 5, "timer_remaining": 5}))
        .unwrap();
        assert_eq!(r.timer.unwrap().started_at, None);
    }

    #[test]
    fn odd_answers() {
        assert!(parse_relay(&json!({"ison": "yes"})).is_err());
        assert!(parse_status(&json!({"relays": []})).is_err());
        assert!(parse_status(&json!([])).is_err());
        // No meter (Plug without S), or an invalid reading: no power.
        let s = parse_status(&json!({"relays": [{"ison": true}]})).unwrap();
        assert_eq!(s.power_w, None);
        let s = parse_status(&json!({"relays": [{"ison": true}],
            "meters": [{"power": 5.0, "is_valid": false}]}))
        .unwrap();
        assert_eq!(s.power_w, None);
        assert!(matches!(
            parse_shelly(&json!({"gen": 2, "model": "SNPL-00112EU"})),
            Err(Problem::Config(m)) if m.contains("shelly_gen2")
        ));
        assert!(matches!(
            parse_shelly(&json!({"hello": 1})),
            Err(Problem::Malformed(_))
        ));
        assert!(matches!(
            parse_shelly(&json!(3)),
            Err(Problem::Malformed(_))
        ));
    }
}
