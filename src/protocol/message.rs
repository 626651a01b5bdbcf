//! Payloads of protocol v1: JSON objects, one type per topic (docs/protocol.md is the
//! contract written out for agent and integration authors).
//!
//! Two reading rules, on purpose:
//! - What the controller sends ([`StationState`], [`AgentCommand`], [`RequestResponse`],
//!   [`Announcement`], [`ControllerStatus`]) is read tolerantly: unknown fields are ignored,
//!   because agents in the field are older than the controller and v1 only ever adds fields.
//! - What agents send ([`CommandAck`], [`AgentStatus`], [`StationRequest`]) is read strictly:
//!   an unknown field is refused, because the controller takes nothing it does not understand
//!   from a station a customer sits at.

use crate::domain::ids::{SessionId, StationId};
use crate::domain::station::StationKind;
use jiff::Timestamp;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::fmt;

/// The protocol version carried in [`StationState::v`] and [`ControllerStatus::protocol`];
/// the same major version as the topic root `venued/v1`.
pub const PROTOCOL_VERSION: u32 = 1;

/// The largest payload [`decode`] accepts on a protocol topic, in bytes.
pub const MAX_PAYLOAD: usize = 16 * 1024;

// ---------------------------------------------------------------------------------------
// Controller → agent
// ---------------------------------------------------------------------------------------

/// `venued/v1/stations/{sid}/state`: retained, QoS 1, published by the controller after
/// every change to the station.
///
/// An agent counts time with its monotonic clock from the moment it received the state:
/// time left is `ends_at - server_time`, never `ends_at - (its wall clock)`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct StationState {
    /// Always [`PROTOCOL_VERSION`].
    pub v: u32,
    pub station: StationId,
    /// The station's display name, e.g. "PC 01".
    pub name: String,
    pub kind: StationKind,
    /// The controller's event sequence number that produced this state. A receiver ignores
    /// a state with a lower `seq` than one it already has; an equal `seq` is the same state
    /// re-sent with a fresh `server_time`.
    pub seq: u64,
    /// The controller's clock when this copy was published.
    pub server_time: Timestamp,
    pub status: StationStatus,
    /// The desired enforcement: `true` when free or paused, `false` in session and in grace
    /// (see [`StationStatus::locks`]).
    pub lock: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<SessionState>,
    /// A staff message to show on the station's screen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// What a station is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StationStatus {
    /// No session: the station is locked.
    Free,
    /// A session is running.
    InSession,
    /// A session is paused by staff: the station is locked, the time left is frozen.
    Paused,
    /// The session's time is up; the customer has until `grace_until` to save and leave.
    Grace,
}

impl StationStatus {
    /// The enforcement this status asks for, the value of [`StationState::lock`].
    pub fn locks(self) -> bool {
        match self {
            StationStatus::Free | StationStatus::Paused => true,
            StationStatus::InSession | StationStatus::Grace => false,
        }
    }
}

/// The session on a station, inside a [`StationState`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct SessionState {
    pub id: SessionId,
    pub started_at: Timestamp,
    /// When the paid time runs out; `None` for an open-ended (postpaid) session and while
    /// paused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ends_at: Option<Timestamp>,
    /// The time left, frozen, in milliseconds; set only while paused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remaining_ms: Option<i64>,
    /// The end of the grace period; set only in grace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_until: Option<Timestamp>,
    /// The warnings still to come, in time order.
    #[serde(default)]
    pub warnings: Vec<Warning>,
}

/// A warning to show at `at`: "`lead_s` seconds left" (300 = "5 minutes left").
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct Warning {
    pub at: Timestamp,
    pub lead_s: u32,
}

/// `venued/v1/stations/{sid}/cmd`: QoS 1, not retained. The controller resends it with the
/// same `id` until it is acknowledged; an agent treats a repeated `id` as already done and
/// acknowledges it again.
///
/// On the wire the action's fields sit beside `id` and `issued_at`:
/// `{"id":"c-000042","issued_at":"…","type":"message","text":"Your food is ready"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct AgentCommand {
    /// Unique per command, e.g. "c-000042".
    pub id: String,
    pub issued_at: Timestamp,
    #[serde(flatten)]
    pub action: CommandAction,
}

/// What an [`AgentCommand`] asks for, tagged by `"type"`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum CommandAction {
    Lock,
    Unlock,
    /// Show a message on the station's screen.
    Message {
        text: String,
    },
    /// Log the OS user out.
    Logout,
    Shutdown,
    Restart,
}

/// `venued/v1/stations/{sid}/response`: QoS 1, not retained; the answer to the
/// [`StationRequest`] with the same `id`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct RequestResponse {
    pub id: String,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ProtocolError>,
}

/// Why a request failed: a stable machine `code` and a message to show the customer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct ProtocolError {
    /// One of the `ProtocolError::*` codes; a receiver treats a code it does not know as a
    /// plain failure and shows the message.
    pub code: String,
    pub message: String,
}

impl ProtocolError {
    /// The request's type is unknown, or switched off in this venue.
    pub const NOT_SUPPORTED: &str = "not_supported";
    /// The request is malformed or its values are out of range.
    pub const INVALID: &str = "invalid";
    /// Wrong member or PIN, or the member may not do this.
    pub const UNAUTHORISED: &str = "unauthorised";
    /// The controller cannot do it now (e.g. another request is in progress); try later.
    pub const BUSY: &str = "busy";

    pub fn new(code: &str, message: impl Into<String>) -> Self {
        Self {
            code: code.to_owned(),
            message: message.into(),
        }
    }
}

/// `venued/v1/announce`: QoS 1, not retained; a venue-wide announcement.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct Announcement {
    pub id: String,
    pub text: String,
    pub at: Timestamp,
    /// Stop showing it after this instant; `None` = show it once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<Timestamp>,
}

/// `venued/v1/controller/status`: retained, QoS 1.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct ControllerStatus {
    pub online: bool,
    /// The controller's software version.
    pub version: String,
    /// The protocol version it speaks, [`PROTOCOL_VERSION`].
    pub protocol: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Timestamp>,
}

// ---------------------------------------------------------------------------------------
// Agent → controller (strict)
// ---------------------------------------------------------------------------------------

/// `venued/v1/stations/{sid}/ack`: QoS 1, not retained; the agent's answer to the
/// [`AgentCommand`] with the same `id`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub struct CommandAck {
    pub id: String,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `venued/v1/agents/{sid}/status`: retained, QoS 1, published by the agent; also its
/// last will, [`AgentStatus::will`] (`{"online":false}`).
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub struct AgentStatus {
    pub online: bool,
    /// The agent's software version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The OS user logged in, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Seconds since the last keyboard or mouse input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_s: Option<u64>,
    /// Whether the lock screen is up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locked: Option<bool>,
    /// The agent's wall clock minus the `server_time` of the last state it received (at
    /// receipt), in milliseconds; input to the controller's clock-trust quorum.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_offset_ms: Option<i64>,
    /// The agent's wall clock when it published this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<Timestamp>,
}

impl AgentStatus {
    /// The last will an agent registers at CONNECT: `{"online":false}`, retained, QoS 1.
    pub fn will() -> Self {
        Self::default()
    }
}

/// `venued/v1/stations/{sid}/request`: QoS 1, not retained; a customer action at the
/// station. The controller answers on `response` with the same `id`.
///
/// On the wire the kind's fields sit beside `id`:
/// `{"id":"r-000007","type":"extend_from_wallet","minutes":60}`. Unknown fields are refused;
/// serde's `deny_unknown_fields` does not work with `flatten`, so reading goes through a
/// private strict mirror of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", from = "StationRequestWire")]
pub struct StationRequest {
    /// Chosen by the agent, unique per station; a retry reuses it.
    pub id: String,
    #[serde(flatten)]
    pub kind: RequestKind,
}

/// What a [`StationRequest`] asks for, tagged by `"type"`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum RequestKind {
    /// A member logs in at the station with their member number and PIN.
    MemberLogin { member: String, pin: String },
    /// The logged-in member buys more time from their wallet.
    ExtendFromWallet { minutes: u32 },
    /// Ask staff to come to the station.
    CallStaff {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        note: Option<String>,
    },
}

/// How a [`StationRequest`] is read: one internally tagged enum with `id` in every variant,
/// so `deny_unknown_fields` applies to the whole object. Unknown fields and unknown types
/// are refused.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum StationRequestWire {
    MemberLogin {
        id: String,
        member: String,
        pin: String,
    },
    ExtendFromWallet {
        id: String,
        minutes: u32,
    },
    CallStaff {
        id: String,
        #[serde(default)]
        note: Option<String>,
    },
}

impl From<StationRequestWire> for StationRequest {
    fn from(wire: StationRequestWire) -> Self {
        let (id, kind) = match wire {
            StationRequestWire::MemberLogin { id, member, pin } => {
                (id, RequestKind::MemberLogin { member, pin })
            }
            StationRequestWire::ExtendFromWallet { id, minutes } => {
                (id, RequestKind::ExtendFromWallet { minutes })
            }
            StationRequestWire::CallStaff { id, note } => (id, RequestKind::CallStaff { note }),
        };
        StationRequest { id, kind }
    }
}

// ---------------------------------------------------------------------------------------
// Encoding and decoding
// ---------------------------------------------------------------------------------------

/// Why a payload was refused. The message names the JSON path of the fault where serde
/// could tell it, e.g. ``invalid payload at `session.ends_at`: …``.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("payload is {size} bytes, more than the {MAX_PAYLOAD} bytes allowed")]
    TooLarge { size: usize },
    #[error("{}", describe_invalid(path, json))]
    Invalid {
        /// The JSON path of the fault, "." for the top level.
        path: String,
        /// serde_json's error (kept for its category, line and column; its text is already
        /// in this error's message).
        json: serde_json::Error,
    },
}

impl DecodeError {
    /// The JSON path of the fault ("." for the top level), if the payload was parsed at all.
    pub fn path(&self) -> Option<&str> {
        match self {
            DecodeError::TooLarge { .. } => None,
            DecodeError::Invalid { path, .. } => Some(path),
        }
    }
}

fn describe_invalid(path: &str, json: &serde_json::Error) -> String {
    if path == "." {
        format!("invalid payload: {json}")
    } else {
        format!("invalid payload at `{path}`: {json}")
    }
}

/// Reads one payload: at most [`MAX_PAYLOAD`] bytes of one JSON value (nothing after it).
pub fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, DecodeError> {
    if payload.len() > MAX_PAYLOAD {
        return Err(DecodeError::TooLarge {
            size: payload.len(),
        });
    }
    let mut de = serde_json::Deserializer::from_slice(payload);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| DecodeError::Invalid {
        path: e.path().to_string(),
        json: e.into_inner(),
    })?;
    de.end().map_err(|json| DecodeError::Invalid {
        path: ".".to_owned(),
        json,
    })?;
    Ok(value)
}

/// Writes one payload as compact JSON.
///
/// serde_json fails only for a map with non-string keys or a `Serialize` impl that returns
/// an error; the protocol types have neither, so for them this never fails. Were it to fail
/// for some other type, the error is logged and the result is empty. Beware that an empty
/// payload on a retained topic clears the retained message, so only pass protocol types.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_else(|e| {
        tracing::error!(error = %e, "could not encode a protocol payload");
        Vec::new()
    })
}

impl fmt::Display for StationStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StationStatus::Free => "free",
            StationStatus::InSession => "in_session",
            StationStatus::Paused => "paused",
            StationStatus::Grace => "grace",
        })
    }
}
