//! The MQTT side of the smart plugs: what to subscribe to for each plug, what its
//! messages mean, and the commands that switch it or make it report — pure functions per
//! firmware (`shelly1`, `shelly2`, `tasmota`), and [`hub::MqttPlugs`], the one task that
//! runs them over the broker's device link.
//!
//! Why MQTT beside HTTP (`super::plug`): the plugs push every change the moment it
//! happens (a hand on the button, a timer firing, the load changing, the plug dropping
//! off the network through its last will), so nothing polls them; Gen2 firmware
//! rate-limits polling anyway. HTTP stays the fallback and the way to set Gen1's timer.
//!
//! A plug speaks MQTT only when its configuration names its MQTT identity (Gen1
//! `mqtt_id`, Gen2 `mqtt_prefix`, Tasmota `topic`); see [`Wire::of`]. The topics per
//! firmware are listed in docs/devices.md ("MQTT: what venued subscribes and publishes").
//!
//! Attribution: a message belongs to a plug only when its topic is one of that plug's
//! own ([`Wire::owns`]); Gen1 ids and Tasmota topics are one topic level and Gen2
//! topics are matched whole, so a plug whose prefix extends another's never receives
//! the other's messages.

pub mod hub;
mod shelly1;
mod shelly2;
mod tasmota;

pub use hub::{MqttPlugs, Observed};

use super::DeviceError;
use super::plug::TimerState;
use crate::domain::device::DeviceKind;
use serde_json::Value;
use std::time::Duration;

/// What one message from a plug tells; a field is `None` when the message does not say.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Report {
    pub online: Option<bool>,
    /// The relay is on.
    pub relay: Option<bool>,
    /// Watts drawn now.
    pub power_w: Option<f64>,
    /// Who switched last, in the firmware's words (Gen2 `button`, `HTTP_in`, `MQTT`,
    /// `timer`…; Gen1 only in its `info` status; Tasmota never says).
    pub source: Option<String>,
    /// `Some(None)`: the plug says no timer runs; `Some(Some(t))`: `t` runs; `None`: the
    /// message says nothing about timers.
    pub timer: Option<Option<TimerState>>,
    /// A Gen2 RPC reply on our own reply topic.
    pub rpc: Option<RpcReply>,
}

impl Report {
    /// True when it says nothing at all (such messages are not reported).
    fn is_empty(&self) -> bool {
        *self == Report::default()
    }
}

/// A Gen2 RPC reply frame `{"id", "src", "dst", "result" | "error"}`.
#[derive(Clone, Debug, PartialEq)]
pub struct RpcReply {
    pub id: u64,
    pub outcome: Result<Value, RpcError>,
}

/// A Gen2 RPC error object `{"code", "message"}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RpcError {
    pub code: i64,
    pub message: String,
}

/// A message on a plug's topic that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed MQTT message on {topic}: {reason} (payload {excerpt})")]
pub struct MqttParseError {
    pub topic: String,
    pub reason: String,
    /// The start of the payload, printable.
    pub excerpt: String,
}

impl MqttParseError {
    fn new(topic: &str, payload: &[u8], reason: impl Into<String>) -> Self {
        const MAX: usize = 80;
        let text = String::from_utf8_lossy(&payload[..payload.len().min(MAX)]);
        let mut excerpt: String = text
            .chars()
            .map(|c| if c.is_control() { '.' } else { c })
            .collect();
        if payload.len() > MAX {
            excerpt.push('…');
        }
        MqttParseError {
            topic: topic.to_owned(),
            reason: reason.into(),
            excerpt: format!("{excerpt:?}"),
        }
    }
}

/// A message to publish to a plug. Commands are never retained: a retained command would
/// be replayed to the plug on every reconnect (Tasmota's "ghost switching").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Command {
    pub topic: String,
    pub payload: Vec<u8>,
}

impl Command {
    fn new(topic: String, payload: impl Into<Vec<u8>>) -> Self {
        Command {
            topic,
            payload: payload.into(),
        }
    }
}

/// A plug's MQTT identity, from its configuration.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Wire {
    /// Topics `shellies/<id>/…`.
    ShellyGen1 { id: String },
    /// Topics `<prefix>/…`; `src` is the name our RPC requests carry, so replies come back
    /// on `<src>/rpc`. It lives under the prefix because a device account may publish only
    /// under its own roots.
    ShellyGen2 { prefix: String, src: String },
    /// Default FullTopic `%prefix%/%topic%/`: `cmnd/<topic>/…`, `stat/<topic>/…`,
    /// `tele/<topic>/…`.
    Tasmota { topic: String },
}

impl Wire {
    /// The MQTT identity of a plug configured with one; `None` for an HTTP-only plug or a
    /// device that is no plug. `tag` makes our Gen2 RPC `src` unique to this controller
    /// (`<prefix>/venued-<tag>`): letters, digits and `-` only, or it is dropped.
    pub fn of(kind: &DeviceKind, tag: &str) -> Option<Wire> {
        match kind {
            DeviceKind::ShellyGen1 {
                mqtt_id: Some(id), ..
            } => Some(Wire::ShellyGen1 { id: id.clone() }),
            DeviceKind::ShellyGen2 {
                mqtt_prefix: Some(prefix),
                ..
            } => {
                let clean =
                    !tag.is_empty() && tag.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
                let src = if clean {
                    format!("{prefix}/venued-{tag}")
                } else {
                    format!("{prefix}/venued")
                };
                Some(Wire::ShellyGen2 {
                    prefix: prefix.clone(),
                    src,
                })
            }
            DeviceKind::Tasmota {
                topic: Some(topic), ..
            } => Some(Wire::Tasmota {
                topic: topic.clone(),
            }),
            _ => None,
        }
    }

    /// The `DeviceKind` type it speaks.
    pub fn kind(&self) -> &'static str {
        match self {
            Wire::ShellyGen1 { .. } => "shelly_gen1",
            Wire::ShellyGen2 { .. } => "shelly_gen2",
            Wire::Tasmota { .. } => "tasmota",
        }
    }

    /// The topic filters to subscribe to for this plug.
    pub fn subscriptions(&self) -> Vec<String> {
        match self {
            Wire::ShellyGen1 { id } => shelly1::subscriptions(id),
            Wire::ShellyGen2 { prefix, src } => shelly2::subscriptions(prefix, src),
            Wire::Tasmota { topic } => tasmota::subscriptions(topic),
        }
    }

    /// Whether `topic` is one of this plug's (matches one of its subscriptions).
    pub fn owns(&self, topic: &str) -> bool {
        self.subscriptions().iter().any(|f| matches(f, topic))
    }

    /// A fresh decoder of this plug's messages.
    pub fn decoder(&self) -> Decoder {
        Decoder {
            wire: self.clone(),
            filters: self.subscriptions(),
            switch: None,
        }
    }

    /// Switch the relay; with `flip_back`, the plug switches it back after that long by
    /// itself. `rpc_id` is the id of a Gen2 request (match the reply with it).
    ///
    /// - Gen1: `relay/0/command` `on`/`off`, then `command` `update` so the plug reports
    ///   its relay even when nothing changed. Gen1 has no timer over MQTT: a flip-back is
    ///   a [`DeviceError::Config`]; use HTTP (`super::plug::Plug::switch`) for it.
    /// - Gen2: a `Switch.Set` RPC with `toggle_after` (seconds, to the millisecond).
    /// - Tasmota: `PulseTime1` (the flip-back, or 0 to clear one) then `POWER ON`; `POWER
    ///   OFF`. PulseTime flips back only from on, as over HTTP (`super::plug` tasmota
    ///   module): a flip-back after switching off is a [`DeviceError::Config`]. Unlike HTTP
    ///   nothing confirms the `PulseTime1` before the `POWER ON`; both go out in order on
    ///   one connection and the plug runs them in order.
    pub fn switch(
        &self,
        on: bool,
        flip_back: Option<Duration>,
        rpc_id: u64,
    ) -> Result<Vec<Command>, DeviceError> {
        if flip_back.is_some_and(|d| d.is_zero()) {
            return Err(DeviceError::Config(
                "a flip-back timer must be longer than zero".into(),
            ));
        }
        match self {
            Wire::ShellyGen1 { id } => shelly1::switch(id, on, flip_back),
            Wire::ShellyGen2 { prefix, src } => {
                Ok(shelly2::switch(prefix, src, on, flip_back, rpc_id))
            }
            Wire::Tasmota { topic } => tasmota::switch(topic, on, flip_back),
        }
    }

    /// Ask the plug to report its state now (after a restart of venued, the broker's
    /// retained messages are gone): Gen1 `command` `update`, Gen2 `Switch.GetStatus`
    /// (the reply carries the status), Tasmota `STATUS 10` (power) and an empty `POWER`
    /// (relay).
    pub fn query(&self, rpc_id: u64) -> Vec<Command> {
        match self {
            Wire::ShellyGen1 { id } => vec![shelly1::update(id)],
            Wire::ShellyGen2 { prefix, src } => vec![shelly2::get_status(prefix, src, rpc_id)],
            Wire::Tasmota { topic } => tasmota::query(topic),
        }
    }
}

/// Reads one plug's messages. Keeps what Gen2 partial updates are merged onto.
#[derive(Clone, Debug)]
pub struct Decoder {
    wire: Wire,
    /// `wire.subscriptions()`, kept: every message is checked against them.
    filters: Vec<String>,
    /// Gen2: the `switch:0` status as last known, full or merged from partials.
    switch: Option<serde_json::Map<String, Value>>,
}

impl Decoder {
    pub fn wire(&self) -> &Wire {
        &self.wire
    }

    /// What a message on `topic` tells. `Ok(None)`: not this plug's topic, or a message
    /// that tells nothing venued uses (a command echo, an event, `INFO1`…). A payload
    /// that does not parse is an error naming the topic; it changes nothing.
    pub fn decode(
        &mut self,
        topic: &str,
        payload: &[u8],
    ) -> Result<Option<Report>, MqttParseError> {
        if !self.filters.iter().any(|f| matches(f, topic)) {
            return Ok(None);
        }
        let report = match &self.wire {
            Wire::ShellyGen1 { id } => shelly1::parse(id, topic, payload)?,
            Wire::ShellyGen2 { prefix, src } => {
                let (prefix, src) = (prefix.clone(), src.clone());
                shelly2::parse(&prefix, &src, &mut self.switch, topic, payload)?
            }
            Wire::Tasmota { topic: t } => tasmota::parse(t, topic, payload)?,
        };
        Ok(report.filter(|r| !r.is_empty()))
    }
}

/// MQTT filter matching (3.1.1 §4.7): `+` one level, `#` the rest (and the parent).
pub fn matches(filter: &str, topic: &str) -> bool {
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

fn json(topic: &str, payload: &[u8]) -> Result<Value, MqttParseError> {
    match serde_json::from_slice(payload) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(_) => Err(MqttParseError::new(topic, payload, "not a JSON object")),
        Err(e) => Err(MqttParseError::new(
            topic,
            payload,
            format!("not JSON ({e})"),
        )),
    }
}

fn text<'a>(topic: &str, payload: &'a [u8]) -> Result<&'a str, MqttParseError> {
    std::str::from_utf8(payload)
        .map(str::trim)
        .map_err(|_| MqttParseError::new(topic, payload, "not UTF-8 text"))
}

/// A finite number of watts as text (`12.34`).
fn watts(topic: &str, payload: &[u8]) -> Result<f64, MqttParseError> {
    text(topic, payload)?
        .parse::<f64>()
        .ok()
        .filter(|w| w.is_finite())
        .ok_or_else(|| MqttParseError::new(topic, payload, "not a number of watts"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn filters_match_like_a_broker() {
        assert!(matches("stat/t/+", "stat/t/POWER"));
        assert!(!matches("stat/t/+", "stat/t/a/b"));
        assert!(!matches("stat/t/+", "stat/t"));
        assert!(matches("a/#", "a"));
        assert!(matches("a/#", "a/b/c"));
        assert!(matches("a/b", "a/b"));
        assert!(!matches("a/b", "a/b/c"));
        assert!(!matches("a/b/c", "a/b"));
    }

    #[test]
    fn only_plugs_with_an_mqtt_identity_have_a_wire() {
        let gen1 = DeviceKind::ShellyGen1 {
            host: "10.0.0.2".into(),
            mqtt_id: None,
        };
        assert_eq!(Wire::of(&gen1, "x"), None);
        let gen2 = DeviceKind::ShellyGen2 {
            host: "10.0.0.3".into(),
            mqtt_prefix: Some("home/plug".into()),
        };
        assert_eq!(
            Wire::of(&gen2, "a1b2"),
            Some(Wire::ShellyGen2 {
                prefix: "home/plug".into(),
                src: "home/plug/venued-a1b2".into()
            })
        );
        // A tag that would change the topic's shape is not used.
        let Some(Wire::ShellyGen2 { src, .. }) = Wire::of(&gen2, "a/+") else {
            panic!()
        };
        assert_eq!(src, "home/plug/venued");
        let action = DeviceKind::MqttAction {
            topic: "ps5/cmd".into(),
            payload: "standby".into(),
            retain: false,
        };
        assert_eq!(Wire::of(&action, "x"), None);
    }

    #[test]
    fn a_longer_prefix_is_another_plug() {
        let a = Wire::ShellyGen2 {
            prefix: "home/plug".into(),
            src: "home/plug/venued-1".into(),
        };
        let b = Wire::ShellyGen2 {
            prefix: "home/plug/sub".into(),
            src: "home/plug/sub/venued-1".into(),
        };
        assert!(a.owns("home/plug/online"));
        assert!(!a.owns("home/plug/sub/online"));
        assert!(b.owns("home/plug/sub/online"));
        let mut d = a.decoder();
        assert_eq!(d.decode("home/plug/sub/online", b"false").unwrap(), None);
        let t1 = Wire::Tasmota { topic: "t1".into() };
        assert!(!t1.owns("stat/t10/POWER"));
        assert!(!t1.owns("stat/t1/x/POWER"));
        assert!(
            !t1.owns("cmnd/t1/POWER"),
            "our own commands are not reports"
        );
    }

    #[test]
    fn a_zero_flip_back_is_refused_everywhere() {
        for w in [
            Wire::ShellyGen1 { id: "s".into() },
            Wire::ShellyGen2 {
                prefix: "p".into(),
                src: "p/venued".into(),
            },
            Wire::Tasmota { topic: "t".into() },
        ] {
            assert!(matches!(
                w.switch(true, Some(Duration::ZERO), 1),
                Err(DeviceError::Config(_))
            ));
        }
    }

    proptest::proptest! {
        /// Whatever arrives on any of a plug's topics, decoding never panics, and an
        /// error always names the topic.
        #[test]
        fn arbitrary_payloads_never_panic(
            which in 0usize..3,
            rest in proptest::sample::select(vec![
                "online", "relay/0", "relay/0/power", "info", "events/rpc",
                "status/switch:0", "venued-1/rpc", "POWER", "RESULT", "STATUS10",
                "STATUS11", "STATE", "SENSOR", "LWT",
            ]),
            payload in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
            json_like in proptest::prelude::any::<bool>(),
        ) {
            let wire = [
                Wire::ShellyGen1 { id: "s1".into() },
                Wire::ShellyGen2 { prefix: "p".into(), src: "p/venued-1".into() },
                Wire::Tasmota { topic: "t".into() },
            ][which].clone();
            let mut payload = payload;
            if json_like {
                payload.insert(0, b'{');
            }
            let mut d = wire.decoder();
            for topic in [
                format!("shellies/s1/{rest}"),
                format!("p/{rest}"),
                format!("stat/t/{rest}"),
                format!("tele/t/{rest}"),
            ] {
                if let Err(e) = d.decode(&topic, &payload) {
                    proptest::prop_assert_eq!(e.topic, topic);
                }
            }
        }
    }

    #[test]
    fn parse_errors_name_the_topic_and_quote_the_payload() {
        let e = MqttParseError::new("a/b", b"\x01oops", "bad");
        assert_eq!(
            e.to_string(),
            "malformed MQTT message on a/b: bad (payload \".oops\")"
        );
        let long = vec![b'x'; 200];
        let e = MqttParseError::new("a", &long, "bad");
        assert!(e.excerpt.len() < 100, "{}", e.excerpt);
    }
}
