//! Shelly Gen2+ (Plus Plug S, Gen3, Gen4) over HTTP RPC: `GET /rpc/Switch.GetStatus?id=0`,
//! `GET /rpc/Switch.Set?id=0&on=true[&toggle_after=N]`, `GET /shelly`; SHA-256 Digest
//! auth (RFC 7616, user `admin`, realm = device id) when the plug has a password.
//!
//! Answers on `/rpc/<Method>` are bare: the result on 200, `{"code":…, "message":…}`
//! with a 4xx/5xx status on error (→ [`DeviceError::Refused`]); 401 carries the digest
//! challenge; 429 is rate limiting (the plug's back-off, see the parent module).
//!
//! Digest: the first protected call is answered 401 with a challenge and repeated with
//! credentials. The challenge is then kept and reused with `nc` 2, 3, … so later calls
//! go through at once; when the plug no longer accepts the nonce (a 401 again), the call
//! is repeated once with the fresh challenge from that 401, and a second 401 is
//! [`DeviceError::Auth`]. If a firmware refused every reuse, each call would just cost
//! the 401 round trip it would cost without the cache.

use super::digest::{self, Challenge, ChallengeError};
use super::{
    DeviceError, Plug, PlugInfo, PlugStatus, TimerState, USER, excerpt, seconds, unix_time,
};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HeaderName, WWW_AUTHENTICATE};
use hyper::{Method, StatusCode};
use serde_json::Value;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;
use tokio::time::Instant;

/// A challenge in use and how often its nonce was used.
#[derive(Debug)]
pub(super) struct DigestSession {
    challenge: Challenge,
    nc: u32,
}

type Session = Mutex<Option<DigestSession>>;

const GET_STATUS: &str = "/rpc/Switch.GetStatus?id=0";

pub(super) async fn status(
    plug: &Plug,
    session: &Session,
    deadline: Instant,
) -> Result<PlugStatus, DeviceError> {
    let body = rpc(plug, session, deadline, GET_STATUS).await?;
    parse_switch_status(&body).map_err(|e| malformed(plug, e))
}

/// Switch; the answer is only `{"was_on": …}`, so the status known afterwards is what
/// was asked for.
pub(super) async fn switch(
    plug: &Plug,
    session: &Session,
    on: bool,
    flip_back: Option<Duration>,
    deadline: Instant,
) -> Result<PlugStatus, DeviceError> {
    let body = rpc(plug, session, deadline, &set_path(on, flip_back)).await?;
    if body.get("was_on").and_then(Value::as_bool).is_none() {
        return Err(malformed(
            plug,
            format!(
                "Switch.Set answered {}",
                excerpt(body.to_string().as_bytes())
            ),
        ));
    }
    Ok(PlugStatus {
        on,
        power_w: None,
        source: None,
        timer: flip_back.map(|d| TimerState {
            started_at: None,
            duration: Some(d),
            remaining: Some(d),
        }),
    })
}

/// `/shelly`, never protected; Gen2+ says its `gen`.
pub(super) async fn info(plug: &Plug, deadline: Instant) -> Result<PlugInfo, DeviceError> {
    let answer = plug.get(deadline, "/shelly", &[]).await?;
    let body = json_ok(plug, &answer)?;
    parse_shelly(&body).map_err(|e| match e {
        Problem::Config(m) => DeviceError::Config(format!("{}: {m}", plug.authority())),
        Problem::Malformed(m) => malformed(plug, m),
        // parse_shelly says only the two above.
        other => malformed(plug, format!("{other:?}")),
    })
}

fn malformed(plug: &Plug, what: String) -> DeviceError {
    DeviceError::Malformed(plug.authority(), what)
}

fn lock(session: &Session) -> std::sync::MutexGuard<'_, Option<DigestSession>> {
    session.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The `Authorization` for the next use of the kept challenge, if any.
fn next_authorization(
    session: &Session,
    password: &str,
    method: &Method,
    uri: &str,
) -> Option<(HeaderName, String)> {
    let mut s = lock(session);
    let s = s.as_mut()?;
    s.nc = s.nc.checked_add(1)?;
    Some((
        AUTHORIZATION,
        digest::authorization(
            &s.challenge,
            USER,
            password,
            method.as_str(),
            uri,
            s.nc,
            &digest::new_cnonce(),
        ),
    ))
}

/// GET an RPC path, answering a digest challenge if one comes; the JSON result.
async fn rpc(
    plug: &Plug,
    session: &Session,
    deadline: Instant,
    uri: &str,
) -> Result<Value, DeviceError> {
    exchange(plug, session, deadline, Method::GET, uri, None).await
}

/// `POST /rpc/<method>` with JSON `params`: the way to send what does not fit a URL
/// (a script's code), digest-authenticated like the GETs.
pub(super) async fn call(
    plug: &Plug,
    session: &Session,
    deadline: Instant,
    method: &str,
    params: &Value,
) -> Result<Value, DeviceError> {
    if method.is_empty()
        || !method
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.')
    {
        return Err(DeviceError::Config(format!(
            "{method:?} is not an RPC method name"
        )));
    }
    let uri = format!("/rpc/{method}");
    let body = params.to_string().into_bytes();
    exchange(plug, session, deadline, Method::POST, &uri, Some(body)).await
}

/// One RPC request, answering a digest challenge if one comes; the JSON result.
async fn exchange(
    plug: &Plug,
    session: &Session,
    deadline: Instant,
    method: Method,
    uri: &str,
    body: Option<Vec<u8>>,
) -> Result<Value, DeviceError> {
    let who = plug.authority();
    let mut first: Vec<_> = plug
        .password()
        .and_then(|p| next_authorization(session, p, &method, uri))
        .into_iter()
        .collect();
    if body.is_some() {
        first.push((CONTENT_TYPE, "application/json".into()));
    }
    let mut answer = plug
        .request(deadline, method.clone(), uri, &first, body.clone())
        .await?;
    if answer.status == StatusCode::UNAUTHORIZED {
        let Some(password) = plug.password() else {
            return Err(DeviceError::Auth(who));
        };
        let values = answer
            .headers
            .get_all(WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok());
        let challenge = match digest::pick_challenge(values) {
            Ok(c) => c,
            Err(ChallengeError::NotDigest) => {
                return Err(DeviceError::Malformed(
                    who,
                    "401 without a Digest challenge".into(),
                ));
            }
            Err(ChallengeError::Unsupported(why)) => {
                return Err(DeviceError::Malformed(
                    who,
                    format!("cannot answer its Digest challenge: {why}"),
                ));
            }
        };
        *lock(session) = Some(DigestSession { challenge, nc: 0 });
        let mut again: Vec<_> = next_authorization(session, password, &method, uri)
            .into_iter()
            .collect();
        if body.is_some() {
            again.push((CONTENT_TYPE, "application/json".into()));
        }
        answer = plug.request(deadline, method, uri, &again, body).await?;
        if answer.status == StatusCode::UNAUTHORIZED {
            // A fresh nonce refused: the password is wrong. Start over next time.
            *lock(session) = None;
            return Err(DeviceError::Auth(who));
        }
    }
    json_ok(plug, &answer)
}

/// The JSON of a 200; an RPC error object (or anything else) otherwise.
fn json_ok(plug: &Plug, answer: &super::Answer) -> Result<Value, DeviceError> {
    let who = plug.authority();
    match classify(answer.status, &answer.body) {
        Ok(v) => Ok(v),
        Err(Problem::Config(m) | Problem::Malformed(m)) => Err(DeviceError::Malformed(who, m)),
        Err(Problem::Auth) => Err(DeviceError::Auth(who)),
        Err(Problem::Refused(status, detail)) => Err(DeviceError::Refused {
            device: who,
            status,
            detail,
        }),
    }
}

/// What a bare `/rpc/<Method>` (or `/shelly`) answer means: the result on 200, the
/// `{"code", "message"}` error object on other statuses.
fn classify(status: StatusCode, body: &[u8]) -> Result<Value, Problem> {
    if status == StatusCode::OK {
        return serde_json::from_slice(body)
            .map_err(|e| Problem::Malformed(format!("not JSON ({e}): {}", excerpt(body))));
    }
    if status == StatusCode::UNAUTHORIZED {
        return Err(Problem::Auth);
    }
    let detail = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| rpc_error(&v))
        .map_or_else(
            || excerpt(body),
            |(code, message)| format!("RPC error {code}: {message}"),
        );
    Err(Problem::Refused(status.as_u16(), detail))
}

/// `Switch.Set` with `on` and, for a flip-back, `toggle_after` in seconds (to the
/// millisecond; the firmware takes a number).
pub(super) fn set_path(on: bool, flip_back: Option<Duration>) -> String {
    let mut p = format!("/rpc/Switch.Set?id=0&on={on}");
    if let Some(d) = flip_back {
        p.push_str(&format!("&toggle_after={}", secs_text(d)));
    }
    p
}

/// Seconds with at most three decimals, no trailing zeros (`1`, `1.5`, `0.001`); at
/// least a millisecond so a tiny duration never reads as "no timer".
fn secs_text(d: Duration) -> String {
    let ms = d.as_millis().max(1);
    let (whole, frac) = (ms / 1000, ms % 1000);
    if frac == 0 {
        whole.to_string()
    } else {
        format!("{whole}.{frac:03}")
            .trim_end_matches('0')
            .to_owned()
    }
}

/// `{"code": -103, "message": "…"}`.
fn rpc_error(v: &Value) -> Option<(i64, String)> {
    let code = v.get("code")?.as_i64()?;
    let message = v.get("message").and_then(Value::as_str).unwrap_or("");
    Some((code, message.to_owned()))
}

/// `Switch.GetStatus`: `output`, `apower` (W, metered models), `source`, and while a
/// timer runs `timer_started_at` (unix s) and `timer_duration` (s).
pub(crate) fn parse_switch_status(v: &Value) -> Result<PlugStatus, String> {
    let on = v
        .get("output")
        .and_then(Value::as_bool)
        .ok_or("Switch.GetStatus has no boolean \"output\"")?;
    let num = |k| v.get(k).and_then(Value::as_f64);
    let timer = match (num("timer_started_at"), num("timer_duration")) {
        (None, None) => None,
        (started, duration) => Some(TimerState {
            started_at: started.and_then(unix_time),
            duration: duration.and_then(seconds),
            remaining: None,
        }),
    };
    Ok(PlugStatus {
        on,
        power_w: num("apower"),
        source: v.get("source").and_then(Value::as_str).map(str::to_owned),
        timer,
    })
}

#[derive(Debug, PartialEq)]
enum Problem {
    Malformed(String),
    /// It is not a Gen2+ device.
    Config(String),
    Auth,
    Refused(u16, String),
}

/// `/shelly` (= `Shelly.GetDeviceInfo`): `gen`, `model`, `ver`/`fw_id`, `id`, `mac`.
fn parse_shelly(v: &Value) -> Result<PlugInfo, Problem> {
    if !v.is_object() {
        return Err(Problem::Malformed("/shelly is not a JSON object".into()));
    }
    let text = |k| v.get(k).and_then(Value::as_str).map(str::to_owned);
    let Some(generation) = v.get("gen").and_then(Value::as_u64) else {
        return Err(if v.get("type").is_some() {
            Problem::Config(
                "this is a Shelly Gen1 device (its /shelly has no \"gen\"): configure it as shelly_gen1"
                    .into(),
            )
        } else {
            Problem::Malformed("/shelly has no \"gen\": not a Shelly Gen2+?".into())
        });
    };
    Ok(PlugInfo {
        kind: "shelly_gen2",
        model: text("model"),
        firmware: text("ver").or_else(|| text("fw_id")),
        id: text("id"),
        mac: text("mac"),
        generation: Some(generation),
        auth_enabled: v.get("auth_en").and_then(Value::as_bool),
        name: text("name"),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    const FIXTURE: &str =
        include_str!("../../fakes/fixtures/shelly/gen2_plus_plug_s_SNPL-00112EU_fw1.1.0.json");
    const GEN4_INFO: &str = include_str!(
        "../../fakes/fixtures/shelly/gen4_mini1_S4SW-001X8EU/Shelly.GetDeviceInfo.json"
    );

    #[test]
    fn paths() {
        assert_eq!(set_path(true, None), "/rpc/Switch.Set?id=0&on=true");
        assert_eq!(set_path(false, None), "/rpc/Switch.Set?id=0&on=false");
        assert_eq!(
            set_path(true, Some(Duration::from_secs(30))),
            "/rpc/Switch.Set?id=0&on=true&toggle_after=30"
        );
        assert_eq!(
            set_path(true, Some(Duration::from_millis(1500))),
            "/rpc/Switch.Set?id=0&on=true&toggle_after=1.5"
        );
        assert_eq!(secs_text(Duration::from_millis(1250)), "1.25");
        assert_eq!(secs_text(Duration::from_millis(7)), "0.007");
        assert_eq!(secs_text(Duration::from_nanos(1)), "0.001");
        assert_eq!(secs_text(Duration::from_secs(7200)), "7200");
        assert!(secs_text(Duration::MAX).starts_with("18446744073709551615."));
    }

    #[test]
    fn real_status_and_info() {
        let f: Value = serde_json::from_str(FIXTURE).unwrap();
        let s = parse_switch_status(&f["status"]["switch:0"]).unwrap();
        assert!(s.on);
        assert_eq!(s.power_w, Some(2.7));
        assert_eq!(s.source.as_deref(), Some("init"));
        assert_eq!(s.timer, None);
        let i = parse_shelly(&f["shelly"]).ok().unwrap();
        assert_eq!(i.model.as_deref(), Some("SNPL-00112EU"));
        assert_eq!(i.firmware.as_deref(), Some("1.1.0"));
        assert_eq!(i.id.as_deref(), Some("shellyplusplugs-aabbccddeeff"));
        assert_eq!(i.generation, Some(2));
        assert_eq!(i.auth_enabled, Some(false));
        let g4: Value = serde_json::from_str(GEN4_INFO).unwrap();
        assert_eq!(parse_shelly(&g4).ok().unwrap().generation, Some(4));
    }

    #[test]
    fn timer_and_odd_answers() {
        let s = parse_switch_status(&json!({"id": 0, "output": true, "source": "HTTP_in",
            "timer_started_at": 1_700_000_000.25, "timer_duration": 60.0}))
        .unwrap();
        let t = s.timer.unwrap();
        assert_eq!(t.started_at.unwrap().as_millisecond(), 1_700_000_000_250);
        assert_eq!(t.duration, Some(Duration::from_secs(60)));
        assert_eq!(t.remaining, None);
        // A switch without a meter.
        assert_eq!(
            parse_switch_status(&json!({"output": false}))
                .unwrap()
                .power_w,
            None
        );
        assert!(parse_switch_status(&json!({"output": 1})).is_err());
        assert!(parse_switch_status(&json!(null)).is_err());
        assert_eq!(
            rpc_error(&json!({"code": -103, "message": "Missing required argument 'id'!"})),
            Some((-103, "Missing required argument 'id'!".into()))
        );
        assert_eq!(rpc_error(&json!({"was_on": true})), None);
        assert!(matches!(
            parse_shelly(&json!({"type": "SHPLG-S", "fw": "x"})),
            Err(Problem::Config(m)) if m.contains("shelly_gen1")
        ));
        assert!(matches!(
            parse_shelly(&json!({"foo": 1})),
            Err(Problem::Malformed(_))
        ));
    }

    #[test]
    fn rpc_errors_are_refusals() {
        let err = br#"{"code":-103,"message":"Missing required argument 'id'!"}"#;
        assert_eq!(
            classify(StatusCode::BAD_REQUEST, err),
            Err(Problem::Refused(
                400,
                "RPC error -103: Missing required argument 'id'!".into()
            ))
        );
        assert_eq!(
            classify(
                StatusCode::NOT_FOUND,
                br#"{"code":404,"message":"No handler for Switch.Nope"}"#
            ),
            Err(Problem::Refused(
                404,
                "RPC error 404: No handler for Switch.Nope".into()
            ))
        );
        assert_eq!(
            classify(StatusCode::INTERNAL_SERVER_ERROR, b"oops"),
            Err(Problem::Refused(500, "oops".into()))
        );
        assert_eq!(
            classify(StatusCode::UNAUTHORIZED, b"{}"),
            Err(Problem::Auth)
        );
        assert!(matches!(
            classify(StatusCode::OK, b"{\"was_on\":tr\x00#garbage{{"),
            Err(Problem::Malformed(_))
        ));
        assert_eq!(
            classify(StatusCode::OK, br#"{"was_on":true}"#),
            Ok(json!({"was_on": true}))
        );
    }

    #[test]
    fn kept_challenge_counts_up() {
        let session: Session = Mutex::new(None);
        assert!(next_authorization(&session, "pw", &Method::GET, "/rpc/x").is_none());
        *lock(&session) = Some(DigestSession {
            challenge: digest::parse_challenge(
                "Digest qop=\"auth\", realm=\"r\", nonce=\"n\", algorithm=SHA-256",
            )
            .unwrap(),
            nc: 0,
        });
        let (_, a) = next_authorization(&session, "pw", &Method::GET, "/rpc/x").unwrap();
        assert!(a.contains("nc=00000001"), "{a}");
        let (_, b) = next_authorization(&session, "pw", &Method::GET, "/rpc/x").unwrap();
        assert!(b.contains("nc=00000002"), "{b}");
        assert!(b.contains("uri=\"/rpc/x\""));
    }
}
