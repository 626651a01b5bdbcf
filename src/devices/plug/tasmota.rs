//! Tasmota over HTTP: `GET /cm?cmnd=<command>` (with `user=admin&password=<pw>` when the
//! plug has a web password), one command per request, answered with the command's JSON.
//!
//! - status: `Power` (relay), `Status 10` (`StatusSNS.ENERGY.Power`; `Status 8` on
//!   firmware that refuses 10; no `ENERGY` = not metered), `PulseTime1` (a running pulse).
//! - switch: `Power ON|OFF`; a flip-back is `PulseTime1 <encoded>` then `Power ON`.
//! - info: `Status 0`.
//!
//! Errors: a `WARNING` asking for `user=`/`password=` (200 before firmware 8.2.3, 401
//! after) is [`DeviceError::Auth`]; other warnings and `{"Command":"Unknown"|"Error"}`
//! are [`DeviceError::Refused`]; an answer that is not JSON (a captive portal, another
//! device) is [`DeviceError::Malformed`].
//!
//! The flip-back and its limits. Tasmota has no one-shot timer on a switch command; its
//! `PulseTime1` keeps the relay on for a set time after every `Power ON` and then
//! switches it off, and a new `Power ON` restarts it — which makes a heartbeat re-arm
//! work. But:
//! - it is a persistent setting, not part of the command: it applies to every later
//!   `Power ON`, the button included. So a switch on *without* flip-back sends
//!   `PulseTime1 0` first: venued owns `PulseTime1` on its plugs (a pulse an installer
//!   configured by hand is cleared by it). A switch off leaves it set, so a button press
//!   on a station that venued switched off still only gives power for the pulse.
//! - it only flips back from on: an off-then-on flip-back is a [`DeviceError::Config`].
//! - resolution: 0.1 s up to 11.1 s, then whole seconds (rounded up, never cutting a
//!   session short), at most 64800 s (18 h).
//! - setting it stops a running pulse; the `Power ON` right after starts the new one.
//!   Writing the same value again is no settings change, so a heartbeat does not wear
//!   the flash.
//! - two requests, not one `Backlog PulseTime1 …; Power ON`: over HTTP a Backlog is
//!   answered before its commands run (they are queued, 200 ms apart), so its answer
//!   confirms nothing; one command per request confirms each step. If the `Power ON`
//!   never arrives, the relay stays as it was with the new pulse time set: the safe side.

use super::{DeviceError, Plug, PlugInfo, PlugStatus, TimerState, USER, excerpt};
use hyper::StatusCode;
use serde_json::Value;
use std::time::Duration;
use tokio::time::Instant;

/// The longest PulseTime: 64900 − 100 seconds.
const MAX_PULSE: Duration = Duration::from_secs(64_800);

pub(super) async fn status(plug: &Plug, deadline: Instant) -> Result<PlugStatus, DeviceError> {
    let on = command(plug, deadline, "Power")
        .await
        .and_then(|v| parse_power(&v).map_err(|e| malformed(plug, e)))?;
    let power_w = match command(plug, deadline, "Status 10").await {
        Ok(v) => match parse_energy(&v) {
            Ok(p) => p,
            Err(_) => {
                // Older firmware knows its sensors only as Status 8.
                let v = command(plug, deadline, "Status 8").await?;
                parse_energy(&v).map_err(|e| malformed(plug, e))?
            }
        },
        Err(DeviceError::Refused { .. }) => {
            let v = command(plug, deadline, "Status 8").await?;
            parse_energy(&v).map_err(|e| malformed(plug, e))?
        }
        Err(e) => return Err(e),
    };
    let pulse = command(plug, deadline, "PulseTime1").await?;
    Ok(PlugStatus {
        on,
        power_w,
        source: None,
        // A pulse only runs while on; an answer without `Remaining` (old firmware) says
        // nothing about it.
        timer: parse_pulse(&pulse)
            .ok()
            .and_then(|p| p.timer())
            .filter(|_| on),
    })
}

pub(super) async fn switch(
    plug: &Plug,
    on: bool,
    flip_back: Option<Duration>,
    deadline: Instant,
) -> Result<PlugStatus, DeviceError> {
    let mut timer = None;
    if on {
        let raw = match flip_back {
            Some(d) => pulse_time_raw(d).map_err(DeviceError::Config)?,
            None => 0,
        };
        let v = command(plug, deadline, &format!("PulseTime1 {raw}")).await?;
        let pulse = parse_pulse(&v).map_err(|e| malformed(plug, e))?;
        if pulse.set != raw {
            return Err(DeviceError::Refused {
                device: plug.authority(),
                status: 200,
                detail: format!("asked for PulseTime1 {raw}, it kept {}", pulse.set),
            });
        }
        timer = pulse_duration(raw).map(|d| TimerState {
            started_at: None,
            duration: Some(d),
            remaining: Some(d),
        });
    } else if flip_back.is_some() {
        return Err(DeviceError::Config(
            "Tasmota flips back only from on (PulseTime): no flip-back after switching off".into(),
        ));
    }
    let line = if on { "Power ON" } else { "Power OFF" };
    let v = command(plug, deadline, line).await?;
    let now_on = parse_power(&v).map_err(|e| malformed(plug, e))?;
    if now_on != on {
        // PowerLock, or PowerOnState 4 (on and locked).
        return Err(DeviceError::Refused {
            device: plug.authority(),
            status: 200,
            detail: format!("asked for {line}, the relay stayed {}", word(now_on)),
        });
    }
    Ok(PlugStatus {
        on,
        power_w: None,
        source: None,
        timer,
    })
}

pub(super) async fn info(plug: &Plug, deadline: Instant) -> Result<PlugInfo, DeviceError> {
    let v = command(plug, deadline, "Status 0").await?;
    parse_info(&v).map_err(|e| malformed(plug, e))
}

fn word(on: bool) -> &'static str {
    if on { "ON" } else { "OFF" }
}

fn malformed(plug: &Plug, what: String) -> DeviceError {
    DeviceError::Malformed(plug.authority(), what)
}

/// Run one command; its JSON answer, or the error it amounts to.
pub(super) async fn command(
    plug: &Plug,
    deadline: Instant,
    line: &str,
) -> Result<Value, DeviceError> {
    // The path carries the password: it goes on the wire and nowhere else.
    let answer = plug
        .get(deadline, &cm_path(line, plug.password()), &[])
        .await?;
    classify(answer.status, &answer.body).map_err(|p| match p {
        Problem::Auth => DeviceError::Auth(plug.authority()),
        Problem::Refused(status, detail) => DeviceError::Refused {
            device: plug.authority(),
            status,
            detail: format!("{line}: {detail}"),
        },
        Problem::Malformed(m) => malformed(plug, format!("{line}: {m}")),
    })
}

/// `/cm?[user=admin&password=<pw>&]cmnd=<command>`, every value percent-encoded.
pub(super) fn cm_path(line: &str, password: Option<&str>) -> String {
    match password {
        Some(pw) => format!(
            "/cm?user={USER}&password={}&cmnd={}",
            encode(pw),
            encode(line)
        ),
        None => format!("/cm?cmnd={}", encode(line)),
    }
}

/// Percent-encode everything but RFC 3986's unreserved characters, so spaces, `;`, `&`,
/// `=`, `+`, `%` and non-ASCII in a command or password arrive as they are.
pub(super) fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[derive(Debug, PartialEq)]
enum Problem {
    Auth,
    Refused(u16, String),
    Malformed(String),
}

/// What an answer to `/cm` means, whatever its HTTP status (firmware before 8.2.3
/// reported a missing password with 200).
fn classify(status: StatusCode, body: &[u8]) -> Result<Value, Problem> {
    let v: Value = match serde_json::from_slice(body) {
        Ok(v @ Value::Object(_)) => v,
        Ok(_) => {
            return Err(Problem::Malformed(format!(
                "not a JSON object: {}",
                excerpt(body)
            )));
        }
        Err(_) if status != StatusCode::OK => {
            return Err(Problem::Refused(status.as_u16(), excerpt(body)));
        }
        Err(e) => {
            return Err(Problem::Malformed(format!(
                "not JSON ({e}): {}",
                excerpt(body)
            )));
        }
    };
    if let Some(w) = v.get("WARNING") {
        let text = w.as_str().unwrap_or("");
        // The text is localised in some builds, but keeps the URL words.
        if status == StatusCode::UNAUTHORIZED
            || text.contains("user=")
            || text.contains("password=")
        {
            return Err(Problem::Auth);
        }
        return Err(Problem::Refused(status.as_u16(), format!("WARNING {text}")));
    }
    if let Some(c) = v.get("Command").and_then(Value::as_str) {
        // `{"Command":"Unknown"}`, `{"Command":"Error"}`.
        return Err(Problem::Refused(status.as_u16(), format!("Command {c}")));
    }
    if status != StatusCode::OK {
        return Err(Problem::Refused(status.as_u16(), excerpt(body)));
    }
    Ok(v)
}

/// `{"POWER":"ON"}`, or `{"POWER1":"ON"}` with SetOption26. Default state texts only
/// (`StateText1/2` renamed would not parse).
fn parse_power(v: &Value) -> Result<bool, String> {
    let p = v
        .get("POWER")
        .or_else(|| v.get("POWER1"))
        .and_then(Value::as_str)
        .ok_or("no POWER in the answer")?;
    if p.eq_ignore_ascii_case("ON") {
        Ok(true)
    } else if p.eq_ignore_ascii_case("OFF") {
        Ok(false)
    } else {
        Err(format!("POWER is {p:?}"))
    }
}

/// `{"StatusSNS":{…,"ENERGY":{"Power":W,…}}}`: the watts, None without an energy
/// monitor; an error when it is no `StatusSNS` at all. Multi-channel meters give an
/// array; a one-relay plug's first channel is its relay.
fn parse_energy(v: &Value) -> Result<Option<f64>, String> {
    let sns = v.get("StatusSNS").ok_or("no StatusSNS in the answer")?;
    let Some(energy) = sns.get("ENERGY") else {
        return Ok(None);
    };
    let power = energy.get("Power").ok_or("ENERGY without Power")?;
    let w = match power {
        Value::Array(a) => a.first().and_then(Value::as_f64),
        p => p.as_f64(),
    };
    w.map(Some)
        .ok_or_else(|| format!("ENERGY.Power is {power}"))
}

/// `PulseTime1` as reported: the raw setting and the raw time left.
#[derive(Debug, PartialEq)]
struct Pulse {
    set: u32,
    remaining: Option<u32>,
}

impl Pulse {
    /// A running pulse, if `Remaining` says one runs.
    fn timer(&self) -> Option<TimerState> {
        let left = pulse_duration(self.remaining?)?;
        Some(TimerState {
            started_at: None,
            duration: pulse_duration(self.set),
            remaining: Some(left),
        })
    }
}

/// `{"PulseTime1":{"Set":113,"Remaining":0}}`; older firmware: `{"PulseTime1":113}`.
fn parse_pulse(v: &Value) -> Result<Pulse, String> {
    let p = v.get("PulseTime1").ok_or("no PulseTime1 in the answer")?;
    let num = |x: &Value| x.as_u64().and_then(|n| u32::try_from(n).ok());
    if let Some(set) = num(p) {
        return Ok(Pulse {
            set,
            remaining: None,
        });
    }
    let set = p
        .get("Set")
        .and_then(num)
        .ok_or_else(|| format!("PulseTime1 is {p}"))?;
    Ok(Pulse {
        set,
        remaining: p.get("Remaining").and_then(num),
    })
}

/// The PulseTime value for `d`: 1..=111 tenths of a second, 112.. seconds + 100 (rounded
/// up either way, never below 0.1 s).
pub(crate) fn pulse_time_raw(d: Duration) -> Result<u32, String> {
    if d > MAX_PULSE {
        return Err(format!(
            "a Tasmota flip-back is at most {} h (PulseTime)",
            MAX_PULSE.as_secs() / 3600
        ));
    }
    let tenths = d.as_nanos().div_ceil(100_000_000).max(1);
    if tenths <= 111 {
        // ≤ 111 by the branch.
        return Ok(tenths as u32);
    }
    let secs = d.as_nanos().div_ceil(1_000_000_000);
    // ≤ 64800 by the first check.
    Ok(secs as u32 + 100)
}

/// What a raw PulseTime value (or `Remaining`) means; None for 0 (off).
pub(crate) fn pulse_duration(raw: u32) -> Option<Duration> {
    match raw {
        0 => None,
        1..=111 => Some(Duration::from_millis(u64::from(raw) * 100)),
        _ => Some(Duration::from_secs(u64::from(raw) - 100)),
    }
}

/// `Status 0`: `Status` (Topic, DeviceName/FriendlyName), `StatusFWR` (Version,
/// Hardware), `StatusNET` (Mac).
fn parse_info(v: &Value) -> Result<PlugInfo, String> {
    let status = v.get("Status").ok_or("no Status in the Status 0 answer")?;
    let fwr = v.get("StatusFWR");
    let text = |o: Option<&Value>, k: &str| o?.get(k)?.as_str().map(str::to_owned);
    let name = text(Some(status), "DeviceName").or_else(|| {
        status
            .get("FriendlyName")
            .and_then(|f| f.get(0))
            .and_then(Value::as_str)
            .map(str::to_owned)
    });
    Ok(PlugInfo {
        kind: "tasmota",
        model: text(fwr, "Hardware"),
        firmware: text(fwr, "Version"),
        id: text(Some(status), "Topic"),
        mac: text(v.get("StatusNET"), "Mac"),
        generation: None,
        auth_enabled: None,
        name,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn paths_and_encoding() {
        assert_eq!(cm_path("Power ON", None), "/cm?cmnd=Power%20ON");
        assert_eq!(
            cm_path("Backlog Power1 ON;RuleTimer1 120", None),
            "/cm?cmnd=Backlog%20Power1%20ON%3BRuleTimer1%20120"
        );
        assert_eq!(
            cm_path("Status 10", Some("p&w=d +%é")),
            "/cm?user=admin&password=p%26w%3Dd%20%2B%25%C3%A9&cmnd=Status%2010"
        );
        assert_eq!(encode("a-b.c_d~e"), "a-b.c_d~e");
    }

    #[test]
    fn pulse_time_encoding() {
        let raw = |ms| pulse_time_raw(Duration::from_millis(ms)).unwrap();
        assert_eq!(raw(1), 1);
        assert_eq!(raw(100), 1);
        assert_eq!(raw(101), 2);
        assert_eq!(raw(1000), 10);
        assert_eq!(raw(11_100), 111);
        // Past 11.1 s: whole seconds + 100, rounded up.
        assert_eq!(raw(11_150), 112);
        assert_eq!(raw(12_000), 112);
        assert_eq!(raw(13_000), 113);
        assert_eq!(raw(360_000), 460);
        assert_eq!(raw(64_800_000), 64_900);
        assert!(pulse_time_raw(MAX_PULSE + Duration::from_millis(1)).is_err());
        assert_eq!(pulse_duration(0), None);
        assert_eq!(pulse_duration(10), Some(S));
        assert_eq!(pulse_duration(111), Some(Duration::from_millis(11_100)));
        assert_eq!(pulse_duration(113), Some(13 * S));
        // What the encoding gives back is never shorter than asked for.
        for ms in [1, 99, 150, 5_555, 11_100, 11_101, 59_999, 3_600_000] {
            let d = Duration::from_millis(ms);
            let back = pulse_duration(pulse_time_raw(d).unwrap()).unwrap();
            assert!(back >= d, "{ms} ms → {back:?}");
        }
    }

    #[test]
    fn answers() {
        let ok = StatusCode::OK;
        assert_eq!(
            classify(ok, br#"{"POWER":"ON"}"#),
            Ok(json!({"POWER": "ON"}))
        );
        let need = br#"{"WARNING":"Need user=<username>&password=<password>"}"#;
        assert_eq!(classify(StatusCode::UNAUTHORIZED, need), Err(Problem::Auth));
        // Before 8.2.3 the same came with a 200.
        assert_eq!(classify(ok, need), Err(Problem::Auth));
        assert!(matches!(
            classify(ok, br#"{"WARNING":"Enter command cmnd="}"#),
            Err(Problem::Refused(200, _))
        ));
        assert!(matches!(
            classify(ok, br#"{"Command":"Unknown"}"#),
            Err(Problem::Refused(200, d)) if d.contains("Unknown")
        ));
        assert!(matches!(
            classify(ok, b"<!DOCTYPE html><html>login</html>"),
            Err(Problem::Malformed(_))
        ));
        assert!(matches!(classify(ok, b"[1]"), Err(Problem::Malformed(_))));
        assert!(matches!(
            classify(StatusCode::NOT_FOUND, b"File Not Found"),
            Err(Problem::Refused(404, _))
        ));
    }

    #[test]
    fn payloads() {
        assert_eq!(parse_power(&json!({"POWER": "ON"})), Ok(true));
        assert_eq!(parse_power(&json!({"POWER1": "off"})), Ok(false));
        assert!(parse_power(&json!({"POWER": "1"})).is_err());
        assert!(parse_power(&json!({})).is_err());

        let sns = json!({"StatusSNS": {"Time": "2024-01-01T00:00:00", "ENERGY": {
            "Total": 6.294, "Power": 2635, "Voltage": 227, "Current": 11.661}}});
        assert_eq!(parse_energy(&sns), Ok(Some(2635.0)));
        let multi = json!({"StatusSNS": {"ENERGY": {"Power": [12.5, 3]}}});
        assert_eq!(parse_energy(&multi), Ok(Some(12.5)));
        let unmetered = json!({"StatusSNS": {"Time": "2024-01-01T00:00:00"}});
        assert_eq!(parse_energy(&unmetered), Ok(None));
        assert!(parse_energy(&json!({"StatusSTS": {}})).is_err());

        // Remaining uses the same encoding: 115 is 15 s, 105 would be 10.5 s.
        let p = parse_pulse(&json!({"PulseTime1": {"Set": 130, "Remaining": 115}})).unwrap();
        assert_eq!(
            p.timer(),
            Some(TimerState {
                started_at: None,
                duration: Some(30 * S),
                remaining: Some(15 * S),
            })
        );
        let idle = parse_pulse(&json!({"PulseTime1": {"Set": 113, "Remaining": 0}})).unwrap();
        assert_eq!(idle.timer(), None);
        let old = parse_pulse(&json!({"PulseTime1": 10})).unwrap();
        assert_eq!(
            old,
            Pulse {
                set: 10,
                remaining: None
            }
        );
        assert_eq!(old.timer(), None);
        assert!(parse_pulse(&json!({"PulseTime1": "x"})).is_err());
    }

    #[test]
    fn status_0() {
        let v = json!({
            "Status": {"Module": 0, "DeviceName": "Station 7", "FriendlyName": ["Tasmota"],
                       "Topic": "tasmota_AABBCC", "Power": "0"},
            "StatusFWR": {"Version": "14.3.0(tasmota)", "Hardware": "ESP8266EX"},
            "StatusNET": {"Hostname": "tasmota-AABBCC-0204", "Mac": "02:00:00:AA:BB:CC"},
        });
        let i = parse_info(&v).unwrap();
        assert_eq!(i.model.as_deref(), Some("ESP8266EX"));
        assert_eq!(i.firmware.as_deref(), Some("14.3.0(tasmota)"));
        assert_eq!(i.id.as_deref(), Some("tasmota_AABBCC"));
        assert_eq!(i.mac.as_deref(), Some("02:00:00:AA:BB:CC"));
        assert_eq!(i.name.as_deref(), Some("Station 7"));
        assert!(parse_info(&json!({"StatusFWR": {}})).is_err());
    }
}
