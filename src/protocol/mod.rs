//! MQTT protocol v1: topics and payloads shared by the controller and the agent.
//!
//! This module is the wire contract written in docs/protocol.md. It is built into the agent
//! as well as the controller, so it holds only types, topic names and JSON (de)serialisation:
//! no I/O, no async runtime, no store. The golden files in `tests/fixtures/protocol/` pin the
//! exact JSON of every payload; agents in the field run older versions, so within v1 fields
//! are only ever added.

pub mod enrollment;
pub mod message;
pub mod topic;

pub use message::{
    AgentCommand, AgentStatus, Announcement, CommandAck, CommandAction, ControllerStatus,
    DecodeError, MAX_PAYLOAD, PROTOCOL_VERSION, ProtocolError, RequestKind, RequestResponse,
    SessionState, StationRequest, StationState, StationStatus, Warning, decode, encode,
};
pub use topic::{
    ANNOUNCE, CONTROLLER_STATUS, ROOT, Topic, agent_status, parse, station_ack, station_cmd,
    station_request, station_response, station_state,
};

#[cfg(test)]
mod tests;
