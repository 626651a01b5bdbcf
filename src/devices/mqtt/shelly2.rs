//! Shelly Gen2+ (Plus Plug S, Gen3, Gen4) over MQTT, topics under `<prefix>/`:
//! - reads `online` (`true`; the last will `false`), `events/rpc` (`NotifyStatus` frames
//!   whose `switch:0` holds only what changed, and `NotifyFullStatus`), `status/switch:0`
//!   (the whole status, when the plug's `status_ntf` is on) and `<src>/rpc`, the replies
//!   to our requests;
//! - writes request frames to `rpc`: `Switch.Set` (with `toggle_after` for a flip-back),
//!   `Switch.GetStatus`.
//!
//! Partial updates are merged onto the last known `switch:0` status (a `GetStatus` reply,
//! a full status, earlier partials), so every report tells the whole state once one full
//! status was seen. A partial that changes `output` without timer keys means the timer
//! is gone (the firmware sends the timer keys only when one starts), so they are dropped
//! from the merged status.

use super::{Command, MqttParseError, Report, RpcError, RpcReply, json, text};
use serde_json::{Map, Value, json};
use std::time::Duration;

const TIMER_KEYS: [&str; 2] = ["timer_started_at", "timer_duration"];

pub(super) fn subscriptions(prefix: &str, src: &str) -> Vec<String> {
    vec![
        format!("{prefix}/online"),
        format!("{prefix}/events/rpc"),
        format!("{prefix}/status/switch:0"),
        format!("{src}/rpc"),
    ]
}

fn request(prefix: &str, src: &str, id: u64, method: &str, params: Value) -> Command {
    let frame = json!({ "id": id, "src": src, "method": method, "params": params });
    Command::new(format!("{prefix}/rpc"), frame.to_string())
}

pub(super) fn switch(
    prefix: &str,
    src: &str,
    on: bool,
    flip_back: Option<Duration>,
    id: u64,
) -> Vec<Command> {
    let mut params = json!({ "id": 0, "on": on });
    if let Some(d) = flip_back {
        // Seconds to the millisecond, at least one so it never reads as "no timer".
        let ms = d.as_millis().max(1);
        params["toggle_after"] = json!(ms as f64 / 1000.0);
    }
    vec![request(prefix, src, id, "Switch.Set", params)]
}

pub(super) fn get_status(prefix: &str, src: &str, id: u64) -> Command {
    request(prefix, src, id, "Switch.GetStatus", json!({ "id": 0 }))
}

pub(super) fn parse(
    prefix: &str,
    src: &str,
    last: &mut Option<Map<String, Value>>,
    topic: &str,
    payload: &[u8],
) -> Result<Option<Report>, MqttParseError> {
    let bad = |reason: &str| MqttParseError::new(topic, payload, reason);
    if topic == format!("{src}/rpc") {
        return reply(src, last, topic, payload).map(Some);
    }
    let Some(rest) = topic.strip_prefix(prefix).and_then(|t| t.strip_prefix('/')) else {
        return Ok(None);
    };
    match rest {
        "online" => {
            let online = match text(topic, payload)? {
                "true" => true,
                "false" => false,
                _ => return Err(bad("expected true or false")),
            };
            Ok(Some(Report {
                online: Some(online),
                ..Report::default()
            }))
        }
        "status/switch:0" => {
            let Value::Object(full) = json(topic, payload)? else {
                return Err(bad("not a JSON object"));
            };
            commit(last, full).map_err(|e| bad(&e)).map(Some)
        }
        "events/rpc" => {
            let frame = json(topic, payload)?;
            let method = frame
                .get("method")
                .and_then(Value::as_str)
                .ok_or_else(|| bad("a notification without a method"))?;
            let full = match method {
                "NotifyStatus" => false,
                "NotifyFullStatus" => true,
                // NotifyEvent (button pushes, script events) and others: no state.
                _ => return Ok(None),
            };
            let Some(switch) = frame.get("params").and_then(|p| p.get("switch:0")) else {
                // Another component changed (sys, wifi, …).
                return Ok(None);
            };
            let Value::Object(part) = switch else {
                return Err(bad("switch:0 is not an object"));
            };
            let next = match last {
                Some(base) if !full => {
                    let mut base = base.clone();
                    merge(&mut base, part);
                    base
                }
                _ => part.clone(),
            };
            commit(last, next).map_err(|e| bad(&e)).map(Some)
        }
        // Our own requests (`rpc`), the plug's other topics.
        _ => Ok(None),
    }
}

/// A partial `switch:0` onto the last known status.
fn merge(base: &mut Map<String, Value>, part: &Map<String, Value>) {
    let timer_in_part = TIMER_KEYS.iter().any(|k| part.contains_key(*k));
    if part.contains_key("output") && !timer_in_part {
        for k in TIMER_KEYS {
            base.remove(k);
        }
    }
    for (k, v) in part {
        base.insert(k.clone(), v.clone());
    }
}

/// Keep `next` as the last known status if it parses (a bad message changes nothing);
/// what it tells.
fn commit(
    last: &mut Option<Map<String, Value>>,
    next: Map<String, Value>,
) -> Result<Report, String> {
    let report = status_report(&next)?;
    *last = Some(next);
    Ok(report)
}

/// What a status tells: all of it once it has `output`, else what it has.
fn status_report(s: &Map<String, Value>) -> Result<Report, String> {
    if s.contains_key("output") {
        let st = crate::devices::plug::shelly2::parse_switch_status(&Value::Object(s.clone()))?;
        return Ok(Report {
            relay: Some(st.on),
            power_w: st.power_w,
            source: st.source,
            timer: Some(st.timer),
            ..Report::default()
        });
    }
    Ok(Report {
        power_w: s.get("apower").and_then(Value::as_f64),
        source: s.get("source").and_then(Value::as_str).map(str::to_owned),
        ..Report::default()
    })
}

/// A reply frame on `<src>/rpc`. A `Switch.GetStatus` result is also the full status.
fn reply(
    src: &str,
    last: &mut Option<Map<String, Value>>,
    topic: &str,
    payload: &[u8],
) -> Result<Report, MqttParseError> {
    let bad = |reason: &str| MqttParseError::new(topic, payload, reason);
    let frame = json(topic, payload)?;
    let id = frame
        .get("id")
        .and_then(Value::as_u64)
        .ok_or_else(|| bad("a reply without a numeric id"))?;
    if let Some(dst) = frame.get("dst").and_then(Value::as_str)
        && dst != src
    {
        return Err(bad("a reply addressed to someone else"));
    }
    let outcome = match (frame.get("result"), frame.get("error")) {
        (_, Some(e)) => Err(RpcError {
            code: e
                .get("code")
                .and_then(Value::as_i64)
                .ok_or_else(|| bad("an error without a numeric code"))?,
            message: e
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned(),
        }),
        (Some(r), None) => Ok(r.clone()),
        (None, None) => return Err(bad("a reply with neither result nor error")),
    };
    let mut report = Report::default();
    if let Ok(Value::Object(result)) = &outcome
        && result.get("output").is_some_and(Value::is_boolean)
    {
        report = commit(last, result.clone()).map_err(|e| bad(&e))?;
    }
    report.rpc = Some(RpcReply { id, outcome });
    Ok(report)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::devices::mqtt::Wire;

    const P: &str = "shellyplusplugs-aabbccddeeff";
    const SRC: &str = "shellyplusplugs-aabbccddeeff/venued-1";
    const FIXTURE: &str =
        include_str!("../../fakes/fixtures/shelly/gen2_plus_plug_s_SNPL-00112EU_fw1.1.0.json");

    fn wire() -> Wire {
        Wire::ShellyGen2 {
            prefix: P.into(),
            src: SRC.into(),
        }
    }

    fn notify(switch: Value) -> Vec<u8> {
        // Shape of a real frame (docs/devices.md, Shelly's Notifications page).
        json!({"src": P, "dst": format!("{P}/events"), "method": "NotifyStatus",
               "params": {"ts": 1_745_708_765.6, "switch:0": switch}})
        .to_string()
        .into_bytes()
    }

    #[test]
    fn requests_carry_our_src_and_id() {
        let c = wire()
            .switch(true, Some(Duration::from_millis(1500)), 7)
            .unwrap();
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].topic, format!("{P}/rpc"));
        let v: Value = serde_json::from_slice(&c[0].payload).unwrap();
        assert_eq!(
            v,
            json!({"id": 7, "src": SRC, "method": "Switch.Set",
                   "params": {"id": 0, "on": true, "toggle_after": 1.5}})
        );
        let c = wire().switch(false, None, 8).unwrap();
        let v: Value = serde_json::from_slice(&c[0].payload).unwrap();
        assert_eq!(v["params"], json!({"id": 0, "on": false}));
        let q = wire().query(9);
        let v: Value = serde_json::from_slice(&q[0].payload).unwrap();
        assert_eq!(v["method"], "Switch.GetStatus");
        assert_eq!(v["id"], 9);
        assert_eq!(
            wire().subscriptions(),
            [
                format!("{P}/online"),
                format!("{P}/events/rpc"),
                format!("{P}/status/switch:0"),
                format!("{SRC}/rpc")
            ]
        );
    }

    #[test]
    fn partial_notifications_merge_onto_the_full_status() {
        let mut d = wire().decoder();
        // A partial before any full status tells what it has.
        let r = d
            .decode(
                &format!("{P}/events/rpc"),
                &notify(json!({"id": 0, "apower": 12.5})),
            )
            .unwrap()
            .unwrap();
        assert_eq!((r.relay, r.power_w), (None, Some(12.5)));

        // The fixture's switch:0 is what Switch.GetStatus answers.
        let f: Value = serde_json::from_str(FIXTURE).unwrap();
        let reply = json!({"id": 3, "src": P, "dst": SRC, "result": f["status"]["switch:0"]});
        let r = d
            .decode(&format!("{SRC}/rpc"), reply.to_string().as_bytes())
            .unwrap()
            .unwrap();
        assert_eq!(r.rpc.as_ref().unwrap().id, 3);
        assert_eq!((r.relay, r.power_w), (Some(true), Some(2.7)));
        assert_eq!(r.source.as_deref(), Some("init"));

        // A button press: only output and source change; the power stays merged in.
        let r = d
            .decode(
                &format!("{P}/events/rpc"),
                &notify(json!({"id": 0, "output": false, "source": "button"})),
            )
            .unwrap()
            .unwrap();
        assert_eq!(r.relay, Some(false));
        assert_eq!(r.source.as_deref(), Some("button"));
        assert_eq!(r.power_w, Some(2.7));
        assert_eq!(r.timer, Some(None));

        // Switched on with a flip-back: the timer keys arrive with the output...
        let r = d
            .decode(
                &format!("{P}/events/rpc"),
                &notify(json!({"id": 0, "output": true, "source": "MQTT",
                    "timer_started_at": 1_700_000_000.5, "timer_duration": 60.0})),
            )
            .unwrap()
            .unwrap();
        let t = r.timer.unwrap().unwrap();
        assert_eq!(t.duration, Some(Duration::from_secs(60)));
        // ... the load changes: the timer is still known ...
        let r = d
            .decode(
                &format!("{P}/events/rpc"),
                &notify(json!({"id": 0, "apower": 80.0})),
            )
            .unwrap()
            .unwrap();
        assert!(r.timer.unwrap().is_some());
        assert_eq!(r.power_w, Some(80.0));
        // ... and the timer fires: output changes without timer keys.
        let r = d
            .decode(
                &format!("{P}/events/rpc"),
                &notify(json!({"id": 0, "output": false, "source": "timer"})),
            )
            .unwrap()
            .unwrap();
        assert_eq!(r.relay, Some(false));
        assert_eq!(r.timer, Some(None));
        assert_eq!(r.source.as_deref(), Some("timer"));
    }

    #[test]
    fn other_notifications_and_topics_tell_nothing() {
        let mut d = wire().decoder();
        let event = json!({"src": P, "method": "NotifyEvent",
            "params": {"ts": 1.0, "events": [{"component": "input:0", "event": "single_push"}]}});
        assert_eq!(
            d.decode(&format!("{P}/events/rpc"), event.to_string().as_bytes())
                .unwrap(),
            None
        );
        let sys = json!({"method": "NotifyStatus", "params": {"sys": {"uptime": 5}}});
        assert_eq!(
            d.decode(&format!("{P}/events/rpc"), sys.to_string().as_bytes())
                .unwrap(),
            None
        );
        // Our own request, seen back: not a report.
        let req = wire().switch(true, None, 1).unwrap();
        assert_eq!(d.decode(&req[0].topic, &req[0].payload).unwrap(), None);
        assert_eq!(
            d.decode(&format!("{P}/online"), b"false")
                .unwrap()
                .unwrap()
                .online,
            Some(false)
        );
    }

    #[test]
    fn status_topic_is_a_full_status() {
        let mut d = wire().decoder();
        let f: Value = serde_json::from_str(FIXTURE).unwrap();
        let r = d
            .decode(
                &format!("{P}/status/switch:0"),
                f["status"]["switch:0"].to_string().as_bytes(),
            )
            .unwrap()
            .unwrap();
        assert_eq!((r.relay, r.power_w), (Some(true), Some(2.7)));
    }

    #[test]
    fn replies_and_errors() {
        let mut d = wire().decoder();
        let t = format!("{SRC}/rpc");
        let r = d
            .decode(&t, br#"{"id":5,"src":"x","dst":"shellyplusplugs-aabbccddeeff/venued-1","result":{"was_on":false}}"#)
            .unwrap()
            .unwrap();
        assert_eq!(
            r.rpc,
            Some(RpcReply {
                id: 5,
                outcome: Ok(json!({"was_on": false}))
            })
        );
        assert_eq!(r.relay, None, "Switch.Set's answer is no status");
        let r = d
            .decode(
                &t,
                br#"{"id":6,"error":{"code":-103,"message":"Missing required argument 'id'!"}}"#,
            )
            .unwrap()
            .unwrap();
        assert_eq!(
            r.rpc.unwrap().outcome,
            Err(RpcError {
                code: -103,
                message: "Missing required argument 'id'!".into()
            })
        );
        for bad in [
            &b"{\"id\":5,\"res"[..],
            br#"{"result":{}}"#,
            br#"{"id":"five","result":{}}"#,
            br#"{"id":5}"#,
            br#"{"id":5,"error":{"message":"x"}}"#,
            br#"{"id":5,"dst":"someone-else","result":{}}"#,
            br#"[5]"#,
        ] {
            let e = d.decode(&t, bad).unwrap_err();
            assert_eq!(e.topic, t);
        }
    }

    #[test]
    fn malformed_notifications_change_nothing() {
        let mut d = wire().decoder();
        let f: Value = serde_json::from_str(FIXTURE).unwrap();
        d.decode(
            &format!("{P}/status/switch:0"),
            f["status"]["switch:0"].to_string().as_bytes(),
        )
        .unwrap();
        let before = d.switch.clone();
        let ev = format!("{P}/events/rpc");
        for bad in [
            &b"not json"[..],
            br#"{"params":{}}"#,
            br#"{"method":"NotifyStatus","params":{"switch:0":[1]}}"#,
            br#"{"method":"NotifyStatus","params":{"switch:0":{"output":"yes"}}}"#,
        ] {
            assert!(
                d.decode(&ev, bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(d.decode(&format!("{P}/online"), b"maybe").is_err());
        assert!(d.decode(&format!("{P}/status/switch:0"), b"{").is_err());
        // The "output":"yes" partial was merged before it failed to parse: the decoder
        // must not keep it.
        assert_eq!(d.switch, before);
    }
}
