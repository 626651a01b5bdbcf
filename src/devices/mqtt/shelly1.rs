//! Shelly Gen1 (Plug, Plug S) over MQTT, topics under `shellies/<id>/`:
//! - reads `online` (`true`; the last will `false`), `relay/0` (`on`/`off`/`overpower`),
//!   `relay/0/power` (W as text) and `info` (JSON like `/status`, every `update_period`,
//!   the only message that says who switched and whether a timer runs);
//! - writes `relay/0/command` (`on`/`off`) and `command` (`update`: report now).
//!
//! No timer over MQTT on Gen1: a flip-back goes over HTTP (`relay/0?turn=on&timer=N`).

use super::{Command, MqttParseError, Report, json, text, watts};
use crate::devices::DeviceError;
use std::time::Duration;

pub(super) fn subscriptions(id: &str) -> Vec<String> {
    ["online", "relay/0", "relay/0/power", "info"]
        .iter()
        .map(|rest| format!("shellies/{id}/{rest}"))
        .collect()
}

pub(super) fn switch(
    id: &str,
    on: bool,
    flip_back: Option<Duration>,
) -> Result<Vec<Command>, DeviceError> {
    if flip_back.is_some() {
        return Err(DeviceError::Config(
            "Shelly Gen1 has no timer over MQTT: switch with a flip-back over HTTP".into(),
        ));
    }
    let word = if on { "on" } else { "off" };
    Ok(vec![
        Command::new(format!("shellies/{id}/relay/0/command"), word),
        update(id),
    ])
}

pub(super) fn update(id: &str) -> Command {
    Command::new(format!("shellies/{id}/command"), "update")
}

pub(super) fn parse(
    id: &str,
    topic: &str,
    payload: &[u8],
) -> Result<Option<Report>, MqttParseError> {
    let Some(rest) = topic
        .strip_prefix("shellies/")
        .and_then(|t| t.strip_prefix(id))
        .and_then(|t| t.strip_prefix('/'))
    else {
        return Ok(None);
    };
    let bad = |reason: &str| MqttParseError::new(topic, payload, reason);
    let report = match rest {
        "online" => Report {
            online: Some(match text(topic, payload)? {
                "true" => true,
                "false" => false,
                _ => return Err(bad("expected true or false")),
            }),
            ..Report::default()
        },
        "relay/0" => match text(topic, payload)? {
            "on" => Report {
                relay: Some(true),
                ..Report::default()
            },
            "off" => Report {
                relay: Some(false),
                ..Report::default()
            },
            // The plug switched itself off: too much load.
            "overpower" => Report {
                relay: Some(false),
                source: Some("overpower".into()),
                ..Report::default()
            },
            _ => return Err(bad("expected on, off or overpower")),
        },
        "relay/0/power" => Report {
            power_w: Some(watts(topic, payload)?),
            ..Report::default()
        },
        "info" => {
            let v = json(topic, payload)?;
            let s = crate::devices::plug::shelly1::parse_status(&v).map_err(|e| bad(&e))?;
            Report {
                relay: Some(s.on),
                power_w: s.power_w,
                source: s.source,
                timer: Some(s.timer),
                ..Report::default()
            }
        }
        _ => return Ok(None),
    };
    Ok(Some(report))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::Value;

    const ID: &str = "shellyplug-s-DDEEFF";

    fn p(rest: &str, payload: &str) -> Result<Option<Report>, MqttParseError> {
        parse(ID, &format!("shellies/{ID}/{rest}"), payload.as_bytes())
    }

    #[test]
    fn topics_and_commands() {
        assert_eq!(
            subscriptions(ID),
            [
                "shellies/shellyplug-s-DDEEFF/online",
                "shellies/shellyplug-s-DDEEFF/relay/0",
                "shellies/shellyplug-s-DDEEFF/relay/0/power",
                "shellies/shellyplug-s-DDEEFF/info"
            ]
        );
        let c = switch(ID, true, None).unwrap();
        assert_eq!(c[0].topic, "shellies/shellyplug-s-DDEEFF/relay/0/command");
        assert_eq!(c[0].payload, b"on");
        assert_eq!(c[1].topic, "shellies/shellyplug-s-DDEEFF/command");
        assert_eq!(c[1].payload, b"update");
        assert_eq!(switch(ID, false, None).unwrap()[0].payload, b"off");
        let e = switch(ID, true, Some(Duration::from_secs(30))).unwrap_err();
        assert!(e.to_string().contains("HTTP"), "{e}");
    }

    #[test]
    fn plain_reports() {
        assert_eq!(p("online", "true").unwrap().unwrap().online, Some(true));
        assert_eq!(p("online", "false").unwrap().unwrap().online, Some(false));
        assert_eq!(p("relay/0", "on").unwrap().unwrap().relay, Some(true));
        assert_eq!(p("relay/0", "off\n").unwrap().unwrap().relay, Some(false));
        let o = p("relay/0", "overpower").unwrap().unwrap();
        assert_eq!(
            (o.relay, o.source.as_deref()),
            (Some(false), Some("overpower"))
        );
        assert_eq!(
            p("relay/0/power", "41.27").unwrap().unwrap().power_w,
            Some(41.27)
        );
        // Ours or not for us.
        assert_eq!(p("relay/0/command", "on").unwrap(), None);
        assert_eq!(p("relay/0/energy", "1234").unwrap(), None);
        assert_eq!(
            parse(ID, "shellies/shellyplug-s-000000/relay/0", b"on").unwrap(),
            None
        );
    }

    #[test]
    fn info_is_the_status_of_the_real_plug() {
        // The Plug S fixture's GET /status: `info` carries the same object.
        let fixture: Value = serde_json::from_str(include_str!(
            "../../fakes/fixtures/shelly/gen1_plug_s_SHPLG-S_fw1.14.0.json"
        ))
        .unwrap();
        let info = fixture["status"].to_string();
        let r = p("info", &info).unwrap().unwrap();
        assert_eq!(r.relay, Some(false));
        assert_eq!(r.power_w, Some(0.0));
        assert_eq!(r.source.as_deref(), Some("http"));
        assert_eq!(r.timer, Some(None));
    }

    #[test]
    fn malformed_payloads_are_errors_naming_the_topic() {
        for (rest, payload) in [
            ("online", "yes"),
            ("relay/0", "ON!"),
            ("relay/0/power", "lots"),
            ("relay/0/power", "NaN"),
            ("info", "{\"relays\":"),
            ("info", "[1]"),
            ("info", "{\"relays\":[{\"ison\":\"maybe\"}]}"),
        ] {
            let e = p(rest, payload).unwrap_err();
            assert_eq!(e.topic, format!("shellies/{ID}/{rest}"));
        }
        let e = parse(ID, &format!("shellies/{ID}/online"), &[0xff, 0xfe]).unwrap_err();
        assert!(e.reason.contains("UTF-8"));
    }
}
