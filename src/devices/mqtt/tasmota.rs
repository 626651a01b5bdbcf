//! Tasmota over MQTT with the default FullTopic `%prefix%/%topic%/`:
//! - reads `tele/<t>/LWT` (`Online`; the last will `Offline`), `stat/<t>/POWER` (`ON`/
//!   `OFF`, after every switch, whoever switched), `stat/<t>/RESULT` (command answers:
//!   `POWER`, `PulseTime1`), `stat/<t>/STATUS10`/`STATUS8` (`StatusSNS.ENERGY.Power`),
//!   `stat/<t>/STATUS11` (`StatusSTS.POWER`), `tele/<t>/STATE` (`POWER`) and
//!   `tele/<t>/SENSOR` (`ENERGY.Power`); one relay (`POWER` or `POWER1`);
//! - writes `cmnd/<t>/PulseTime1` and `cmnd/<t>/POWER` to switch, `cmnd/<t>/STATUS` `10`
//!   and an empty `cmnd/<t>/POWER` to make it report.
//!
//! Tasmota never says who switched. A `{"Command":"Error"}` answer tells nothing here: a
//! switch that did not happen shows as no `POWER` report (the caller times out).

use super::{Command, MqttParseError, Report, json, text};
use crate::devices::DeviceError;
use crate::devices::plug::TimerState;
use crate::devices::plug::tasmota::{pulse_duration, pulse_time_raw};
use serde_json::Value;
use std::time::Duration;

pub(super) fn subscriptions(topic: &str) -> Vec<String> {
    // The topic is one level, so these match this plug's topics and no other's.
    vec![format!("stat/{topic}/+"), format!("tele/{topic}/+")]
}

fn cmnd(topic: &str, command: &str, payload: &str) -> Command {
    Command::new(format!("cmnd/{topic}/{command}"), payload)
}

/// `PulseTime1` is a setting, not part of the command: on without a flip-back clears it,
/// so a pulse set earlier never switches a running station off (as over HTTP).
pub(super) fn switch(
    topic: &str,
    on: bool,
    flip_back: Option<Duration>,
) -> Result<Vec<Command>, DeviceError> {
    if !on {
        if flip_back.is_some() {
            return Err(DeviceError::Config(
                "Tasmota flips back only from on (PulseTime): no flip-back after switching off"
                    .into(),
            ));
        }
        return Ok(vec![cmnd(topic, "POWER", "OFF")]);
    }
    let raw = match flip_back {
        Some(d) => pulse_time_raw(d).map_err(DeviceError::Config)?,
        None => 0,
    };
    Ok(vec![
        cmnd(topic, "PulseTime1", &raw.to_string()),
        cmnd(topic, "POWER", "ON"),
    ])
}

pub(super) fn query(topic: &str) -> Vec<Command> {
    vec![cmnd(topic, "STATUS", "10"), cmnd(topic, "POWER", "")]
}

pub(super) fn parse(
    t: &str,
    topic: &str,
    payload: &[u8],
) -> Result<Option<Report>, MqttParseError> {
    let bad = |reason: &str| MqttParseError::new(topic, payload, reason);
    let (stat, rest) = if let Some(r) = topic.strip_prefix("stat/") {
        (true, r)
    } else if let Some(r) = topic.strip_prefix("tele/") {
        (false, r)
    } else {
        return Ok(None);
    };
    let Some(name) = rest.strip_prefix(t).and_then(|r| r.strip_prefix('/')) else {
        return Ok(None);
    };
    let mut report = Report::default();
    match (stat, name) {
        (false, "LWT") => {
            report.online = Some(match text(topic, payload)? {
                s if s.eq_ignore_ascii_case("online") => true,
                s if s.eq_ignore_ascii_case("offline") => false,
                _ => return Err(bad("expected Online or Offline")),
            });
        }
        (true, "POWER" | "POWER1") => {
            report.relay =
                Some(on_off(text(topic, payload)?).ok_or_else(|| bad("expected ON or OFF"))?);
        }
        (true, "RESULT") => {
            let v = json(topic, payload)?;
            report.relay = power(&v).map_err(|e| bad(&e))?;
            report.timer = pulse(&v).map_err(|e| bad(&e))?;
        }
        (true, "STATUS8" | "STATUS10") => {
            let v = json(topic, payload)?;
            let sns = v.get("StatusSNS").ok_or_else(|| bad("no StatusSNS"))?;
            report.power_w = energy(sns).map_err(|e| bad(&e))?;
        }
        (true, "STATUS11") => {
            let v = json(topic, payload)?;
            let sts = v.get("StatusSTS").ok_or_else(|| bad("no StatusSTS"))?;
            report.relay = power(sts).map_err(|e| bad(&e))?;
        }
        (false, "STATE") => {
            let v = json(topic, payload)?;
            report.relay = power(&v).map_err(|e| bad(&e))?;
        }
        (false, "SENSOR") => {
            let v = json(topic, payload)?;
            report.power_w = energy(&v).map_err(|e| bad(&e))?;
        }
        // INFO1-3, UPGRADE, other STATUSn, answers of SetOption4 per-command topics.
        _ => return Ok(None),
    }
    Ok(Some(report))
}

fn on_off(s: &str) -> Option<bool> {
    if s.eq_ignore_ascii_case("ON") {
        Some(true)
    } else if s.eq_ignore_ascii_case("OFF") {
        Some(false)
    } else {
        None
    }
}

/// `POWER` (or `POWER1` with SetOption26) if present.
fn power(v: &Value) -> Result<Option<bool>, String> {
    let Some(p) = v.get("POWER").or_else(|| v.get("POWER1")) else {
        return Ok(None);
    };
    p.as_str()
        .and_then(on_off)
        .map(Some)
        .ok_or_else(|| format!("POWER is {p}"))
}

/// `ENERGY.Power` in an object holding `ENERGY`; None without an energy monitor.
/// Multi-channel meters give an array; a one-relay plug's first channel is its relay.
fn energy(v: &Value) -> Result<Option<f64>, String> {
    let Some(energy) = v.get("ENERGY") else {
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

/// `{"PulseTime1":{"Set":113,"Remaining":13}}`: a running pulse, or none (`Remaining`
/// 0). Old firmware's bare `{"PulseTime1":113}` says nothing about a running one.
fn pulse(v: &Value) -> Result<Option<Option<TimerState>>, String> {
    let Some(p) = v.get("PulseTime1") else {
        return Ok(None);
    };
    if p.is_u64() {
        return Ok(None);
    }
    let num = |k: &str| {
        p.get(k)
            .and_then(Value::as_u64)
            .and_then(|n| u32::try_from(n).ok())
    };
    let set = num("Set").ok_or_else(|| format!("PulseTime1 is {p}"))?;
    let Some(left) = num("Remaining") else {
        return Ok(None);
    };
    Ok(Some(pulse_duration(left).map(|remaining| TimerState {
        started_at: None,
        duration: pulse_duration(set),
        remaining: Some(remaining),
    })))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::devices::mqtt::Wire;

    const T: &str = "tasmota_AABBCC";

    fn p(topic: &str, payload: &str) -> Result<Option<Report>, MqttParseError> {
        Wire::Tasmota { topic: T.into() }
            .decoder()
            .decode(topic, payload.as_bytes())
    }

    #[test]
    fn commands() {
        let pairs = |c: Vec<Command>| {
            c.into_iter()
                .map(|c| (c.topic, String::from_utf8(c.payload).unwrap()))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            pairs(switch(T, true, None).unwrap()),
            [
                ("cmnd/tasmota_AABBCC/PulseTime1".into(), "0".into()),
                ("cmnd/tasmota_AABBCC/POWER".into(), "ON".into())
            ]
        );
        assert_eq!(
            pairs(switch(T, true, Some(Duration::from_secs(120))).unwrap()),
            [
                ("cmnd/tasmota_AABBCC/PulseTime1".into(), "220".into()),
                ("cmnd/tasmota_AABBCC/POWER".into(), "ON".into())
            ]
        );
        assert_eq!(
            pairs(switch(T, false, None).unwrap()),
            [("cmnd/tasmota_AABBCC/POWER".to_owned(), "OFF".to_owned())]
        );
        assert!(matches!(
            switch(T, false, Some(Duration::from_secs(1))),
            Err(DeviceError::Config(_))
        ));
        assert!(matches!(
            switch(T, true, Some(Duration::from_secs(100_000))),
            Err(DeviceError::Config(_))
        ));
        assert_eq!(
            pairs(query(T)),
            [
                ("cmnd/tasmota_AABBCC/STATUS".to_owned(), "10".to_owned()),
                ("cmnd/tasmota_AABBCC/POWER".to_owned(), String::new())
            ]
        );
    }

    #[test]
    fn reports_in_the_documented_shapes() {
        // Payloads as in Tasmota's MQTT and Sonoff-Pow-R2 docs (docs/devices.md).
        let online = p("tele/tasmota_AABBCC/LWT", "Online").unwrap().unwrap();
        assert_eq!(online.online, Some(true));
        let off = p("tele/tasmota_AABBCC/LWT", "Offline").unwrap().unwrap();
        assert_eq!(off.online, Some(false));
        assert_eq!(
            p("stat/tasmota_AABBCC/POWER", "ON").unwrap().unwrap().relay,
            Some(true)
        );
        assert_eq!(
            p("stat/tasmota_AABBCC/POWER1", "off")
                .unwrap()
                .unwrap()
                .relay,
            Some(false)
        );
        assert_eq!(
            p("stat/tasmota_AABBCC/RESULT", r#"{"POWER":"OFF"}"#)
                .unwrap()
                .unwrap()
                .relay,
            Some(false)
        );
        let state = r#"{"Time":"2026-06-01T18:00:00","Uptime":"0T00:01:00","UptimeSec":60,"Heap":25,"MqttCount":1,"POWER":"ON","Wifi":{"AP":1,"RSSI":86,"Signal":-57}}"#;
        assert_eq!(
            p("tele/tasmota_AABBCC/STATE", state)
                .unwrap()
                .unwrap()
                .relay,
            Some(true)
        );
        let sensor = r#"{"Time":"2026-06-01T18:00:00","ENERGY":{"TotalStartTime":"2026-05-01T00:00:00","Total":6.294,"Yesterday":5.340,"Today":0.954,"Period":2,"Power":141,"ApparentPower":145,"ReactivePower":34,"Factor":0.97,"Voltage":231,"Current":0.627}}"#;
        assert_eq!(
            p("tele/tasmota_AABBCC/SENSOR", sensor)
                .unwrap()
                .unwrap()
                .power_w,
            Some(141.0)
        );
        let status10 = format!(r#"{{"StatusSNS":{}}}"#, sensor);
        assert_eq!(
            p("stat/tasmota_AABBCC/STATUS10", &status10)
                .unwrap()
                .unwrap()
                .power_w,
            Some(141.0)
        );
        let multi = r#"{"StatusSNS":{"ENERGY":{"Power":[12,30]}}}"#;
        assert_eq!(
            p("stat/tasmota_AABBCC/STATUS8", multi)
                .unwrap()
                .unwrap()
                .power_w,
            Some(12.0)
        );
        // A plug without a meter: nothing to tell.
        assert_eq!(
            p(
                "stat/tasmota_AABBCC/STATUS10",
                r#"{"StatusSNS":{"Time":"x"}}"#
            )
            .unwrap(),
            None
        );
        assert_eq!(
            p(
                "stat/tasmota_AABBCC/STATUS11",
                r#"{"StatusSTS":{"POWER":"ON"}}"#
            )
            .unwrap()
            .unwrap()
            .relay,
            Some(true)
        );
        let pulse = p(
            "stat/tasmota_AABBCC/RESULT",
            r#"{"PulseTime1":{"Set":220,"Remaining":219}}"#,
        )
        .unwrap()
        .unwrap();
        let t = pulse.timer.unwrap().unwrap();
        assert_eq!(t.duration, Some(Duration::from_secs(120)));
        assert_eq!(t.remaining, Some(Duration::from_secs(119)));
        let none = p(
            "stat/tasmota_AABBCC/RESULT",
            r#"{"PulseTime1":{"Set":0,"Remaining":0}}"#,
        )
        .unwrap()
        .unwrap();
        assert_eq!(none.timer, Some(None));
        // Answers that tell nothing venued uses.
        assert_eq!(
            p("stat/tasmota_AABBCC/RESULT", r#"{"Command":"Error"}"#).unwrap(),
            None
        );
        assert_eq!(
            p("stat/tasmota_AABBCC/RESULT", r#"{"PulseTime1":113}"#).unwrap(),
            None
        );
        assert_eq!(
            p("tele/tasmota_AABBCC/INFO1", r#"{"Info1":{}}"#).unwrap(),
            None
        );
        assert_eq!(p("cmnd/tasmota_AABBCC/POWER", "ON").unwrap(), None);
        assert_eq!(p("stat/tasmota_AABBCCDD/POWER", "ON").unwrap(), None);
    }

    #[test]
    fn malformed_payloads_are_errors_naming_the_topic() {
        for (topic, payload) in [
            ("tele/tasmota_AABBCC/LWT", "Maybe"),
            ("stat/tasmota_AABBCC/POWER", "1"),
            ("stat/tasmota_AABBCC/RESULT", "<html>"),
            ("stat/tasmota_AABBCC/RESULT", r#"{"POWER":true}"#),
            (
                "stat/tasmota_AABBCC/RESULT",
                r#"{"PulseTime1":{"Remaining":3}}"#,
            ),
            ("stat/tasmota_AABBCC/STATUS10", r#"{"Status":{}}"#),
            (
                "stat/tasmota_AABBCC/STATUS10",
                r#"{"StatusSNS":{"ENERGY":{"Power":"x"}}}"#,
            ),
            ("stat/tasmota_AABBCC/STATUS11", r#"{}"#),
            ("tele/tasmota_AABBCC/SENSOR", r#"{"ENERGY":{}}"#),
            ("tele/tasmota_AABBCC/STATE", "ON"),
        ] {
            let e = p(topic, payload).unwrap_err();
            assert_eq!(e.topic, topic, "{payload}");
        }
    }
}
