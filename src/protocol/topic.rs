//! Topic names of protocol v1, and a parser for the ones the controller and agents route on.
//!
//! Every protocol topic lives under [`ROOT`]. The major version is part of the root, so a
//! breaking change is a new root (`venued/v2`) served beside this one, never a change here.
//! Station ids are restricted to `[a-z0-9_-]` (see [`StationId`]), so a built topic can
//! never contain `/`, `+` or `#` from an id.

use crate::domain::ids::StationId;
use std::fmt;

/// The root of every protocol v1 topic.
pub const ROOT: &str = "venued/v1";

/// Venue-wide announcements: controller → everyone, QoS 1, not retained.
pub const ANNOUNCE: &str = "venued/v1/announce";

/// The controller's own status: controller → everyone, QoS 1, retained.
pub const CONTROLLER_STATUS: &str = "venued/v1/controller/status";

/// `venued/v1/stations/{sid}/state`: the station's state, controller → agent, retained.
pub fn station_state(station: &StationId) -> String {
    format!("{ROOT}/stations/{station}/state")
}

/// `venued/v1/stations/{sid}/cmd`: a command for the station's agent, not retained.
pub fn station_cmd(station: &StationId) -> String {
    format!("{ROOT}/stations/{station}/cmd")
}

/// `venued/v1/stations/{sid}/ack`: the agent's answer to a command, not retained.
pub fn station_ack(station: &StationId) -> String {
    format!("{ROOT}/stations/{station}/ack")
}

/// `venued/v1/stations/{sid}/request`: a customer action at the station, agent → controller.
pub fn station_request(station: &StationId) -> String {
    format!("{ROOT}/stations/{station}/request")
}

/// `venued/v1/stations/{sid}/response`: the controller's answer to a request.
pub fn station_response(station: &StationId) -> String {
    format!("{ROOT}/stations/{station}/response")
}

/// `venued/v1/agents/{sid}/status`: the agent's status and last will, retained.
pub fn agent_status(station: &StationId) -> String {
    format!("{ROOT}/agents/{station}/status")
}

/// A protocol v1 topic, as [`parse`] recognises it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Topic {
    StationState(StationId),
    StationCmd(StationId),
    StationAck(StationId),
    StationRequest(StationId),
    StationResponse(StationId),
    AgentStatus(StationId),
    Announce,
    ControllerStatus,
}

impl Topic {
    /// The topic name this value stands for; `parse(&t.name()) == Some(t)`.
    pub fn name(&self) -> String {
        match self {
            Topic::StationState(s) => station_state(s),
            Topic::StationCmd(s) => station_cmd(s),
            Topic::StationAck(s) => station_ack(s),
            Topic::StationRequest(s) => station_request(s),
            Topic::StationResponse(s) => station_response(s),
            Topic::AgentStatus(s) => agent_status(s),
            Topic::Announce => ANNOUNCE.to_owned(),
            Topic::ControllerStatus => CONTROLLER_STATUS.to_owned(),
        }
    }

    /// The station the topic belongs to, if it is a per-station topic.
    pub fn station(&self) -> Option<&StationId> {
        match self {
            Topic::StationState(s)
            | Topic::StationCmd(s)
            | Topic::StationAck(s)
            | Topic::StationRequest(s)
            | Topic::StationResponse(s)
            | Topic::AgentStatus(s) => Some(s),
            Topic::Announce | Topic::ControllerStatus => None,
        }
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// Recognises a protocol v1 topic name (not a filter: `+` and `#` are just invalid ids).
///
/// Returns `None` for anything else: another root or version, a missing or extra level,
/// an unknown leaf, or a station id [`StationId::parse`] refuses (e.g. `PC 01`).
pub fn parse(topic: &str) -> Option<Topic> {
    let rest = topic.strip_prefix(ROOT)?.strip_prefix('/')?;
    let levels: Vec<&str> = rest.split('/').collect();
    match levels.as_slice() {
        ["announce"] => Some(Topic::Announce),
        ["controller", "status"] => Some(Topic::ControllerStatus),
        ["agents", sid, "status"] => StationId::parse(sid).ok().map(Topic::AgentStatus),
        ["stations", sid, leaf] => {
            let station = StationId::parse(sid).ok()?;
            match *leaf {
                "state" => Some(Topic::StationState(station)),
                "cmd" => Some(Topic::StationCmd(station)),
                "ack" => Some(Topic::StationAck(station)),
                "request" => Some(Topic::StationRequest(station)),
                "response" => Some(Topic::StationResponse(station)),
                _ => None,
            }
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn sid(s: &str) -> StationId {
        StationId::parse(s).unwrap()
    }

    #[test]
    fn every_built_topic_parses_back_to_its_variant() {
        let s = sid("pc-01");
        let cases = [
            (
                station_state(&s),
                "venued/v1/stations/pc-01/state",
                Topic::StationState(s.clone()),
            ),
            (
                station_cmd(&s),
                "venued/v1/stations/pc-01/cmd",
                Topic::StationCmd(s.clone()),
            ),
            (
                station_ack(&s),
                "venued/v1/stations/pc-01/ack",
                Topic::StationAck(s.clone()),
            ),
            (
                station_request(&s),
                "venued/v1/stations/pc-01/request",
                Topic::StationRequest(s.clone()),
            ),
            (
                station_response(&s),
                "venued/v1/stations/pc-01/response",
                Topic::StationResponse(s.clone()),
            ),
            (
                agent_status(&s),
                "venued/v1/agents/pc-01/status",
                Topic::AgentStatus(s.clone()),
            ),
            (ANNOUNCE.to_owned(), "venued/v1/announce", Topic::Announce),
            (
                CONTROLLER_STATUS.to_owned(),
                "venued/v1/controller/status",
                Topic::ControllerStatus,
            ),
        ];
        for (built, literal, variant) in cases {
            assert_eq!(built, literal);
            assert_eq!(parse(&built), Some(variant.clone()), "{built}");
            assert_eq!(variant.name(), built);
            assert_eq!(variant.to_string(), built);
        }
    }

    #[test]
    fn station_of_a_topic() {
        assert_eq!(
            parse("venued/v1/agents/ps5_a/status").unwrap().station(),
            Some(&sid("ps5_a"))
        );
        assert_eq!(parse(ANNOUNCE).unwrap().station(), None);
    }

    #[test]
    fn foreign_malformed_and_badly_named_topics_are_not_recognised() {
        for bad in [
            "venued/v1/stations/PC 01/state",
            "venued/v1/stations/PC-01/state",
            "venued/v1/stations/+/state",
            "venued/v1/stations/#",
            "venued/v1/stations//state",
            "venued/v1/stations/pc-01",
            "venued/v1/stations/pc-01/state/extra",
            "venued/v1/stations/pc-01/status",
            "venued/v1/agents/pc-01/state",
            "venued/v1/agents/pc-01/status/extra",
            "venued/v1/announce/extra",
            "venued/v1/controller",
            "venued/v1/controller/status/",
            "venued/v2/stations/pc-01/state",
            "venued/v2/announce",
            "venued/v1",
            "venued/v1/",
            "venued/v10/announce",
            "/venued/v1/announce",
            "venued/v1announce",
            "shellies/pc-01/relay/0",
            "$SYS/broker/uptime",
            "",
        ] {
            assert_eq!(parse(bad), None, "{bad:?} was recognised");
        }
    }
}
