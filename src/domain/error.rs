//! Why the domain refused a command. Each variant has a stable code, used by the HTTP API
//! (problem+json `code`) and the CLI.

use super::ids::{SessionId, StationId};
use super::time::human;
use jiff::SignedDuration;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    #[error("station {0} does not exist")]
    UnknownStation(StationId),
    #[error("station {0} already exists")]
    StationExists(StationId),
    #[error("station {station} is busy with session {session}")]
    StationBusy {
        station: StationId,
        session: SessionId,
    },
    #[error("session {0} does not exist")]
    UnknownSession(SessionId),
    #[error("session {0} has already ended")]
    SessionEnded(SessionId),
    #[error("session {session} is {actual}, not {wanted}")]
    WrongPhase {
        session: SessionId,
        wanted: &'static str,
        actual: &'static str,
    },
    #[error("session {0} is open-ended; there is no end to extend")]
    OpenEnded(SessionId),
    #[error("session is already on station {0}")]
    SameStation(StationId),
    #[error("invalid {what}: {reason}")]
    InvalidDuration { what: &'static str, reason: String },
    #[error("a session may hold at most {} of time (sessions.max-duration)", human(*.max))]
    TooLong { max: SignedDuration },
    #[error("invalid {field}: {reason}")]
    InvalidField {
        field: &'static str,
        reason: &'static str,
    },
    #[error("user {0:?} already exists")]
    UserExists(String),
    #[error("user {0:?} does not exist")]
    UnknownUser(String),
    #[error("token {0:?} does not exist")]
    UnknownToken(String),
    #[error("token {0:?} is already revoked")]
    TokenRevoked(String),
    #[error("a token for {user} cannot have role {role}: it would exceed the user's own rights")]
    TokenExceedsUser { user: String, role: super::Role },
    #[error("MQTT account {0:?} does not exist")]
    UnknownMqttAccount(String),
    #[error("MQTT account {0:?} already exists")]
    MqttAccountExists(String),
    #[error("MQTT account {0:?} is revoked")]
    MqttAccountRevoked(String),
    #[error("device {0} does not exist")]
    UnknownDevice(String),
    #[error("device {0} already exists")]
    DeviceExists(String),
    #[error("device {device} is used by station {station}; change its enforcement first")]
    DeviceInUse { device: String, station: StationId },
    #[error("device {device} is a {actual}, but {role} needs {wanted}")]
    WrongDeviceKind {
        device: String,
        role: &'static str,
        actual: &'static str,
        wanted: &'static str,
    },
    #[error("this enrollment code does not exist")]
    UnknownEnrollment,
    #[error("this enrollment code was already used; ask staff for a new one")]
    EnrollmentUsed,
    #[error("this enrollment code has expired; ask staff for a new one")]
    EnrollmentExpired,
}

impl DomainError {
    /// A stable, machine-readable code; clients match on this, never on the message.
    pub fn code(&self) -> &'static str {
        match self {
            Self::UnknownStation(_) => "station_not_found",
            Self::StationExists(_) => "station_exists",
            Self::StationBusy { .. } => "station_busy",
            Self::UnknownSession(_) => "session_not_found",
            Self::SessionEnded(_) => "session_ended",
            Self::WrongPhase { .. } => "session_wrong_phase",
            Self::OpenEnded(_) => "session_open_ended",
            Self::SameStation(_) => "same_station",
            Self::InvalidDuration { .. } => "invalid_duration",
            Self::TooLong { .. } => "duration_too_long",
            Self::InvalidField { .. } => "invalid_field",
            Self::UserExists(_) => "user_exists",
            Self::UnknownUser(_) => "user_not_found",
            Self::UnknownToken(_) => "token_not_found",
            Self::TokenRevoked(_) => "token_revoked",
            Self::TokenExceedsUser { .. } => "token_exceeds_user",
            Self::UnknownMqttAccount(_) => "mqtt_account_not_found",
            Self::MqttAccountExists(_) => "mqtt_account_exists",
            Self::MqttAccountRevoked(_) => "mqtt_account_revoked",
            Self::UnknownEnrollment => "enrollment_not_found",
            Self::UnknownDevice(_) => "device_not_found",
            Self::DeviceExists(_) => "device_exists",
            Self::DeviceInUse { .. } => "device_in_use",
            Self::WrongDeviceKind { .. } => "wrong_device_kind",
            Self::EnrollmentUsed => "enrollment_used",
            Self::EnrollmentExpired => "enrollment_expired",
        }
    }

    /// Whether the thing named does not exist (404) rather than being in the wrong state
    /// (409) or malformed (422).
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::UnknownStation(_)
            | Self::UnknownSession(_)
            | Self::UnknownUser(_)
            | Self::UnknownToken(_)
            | Self::UnknownMqttAccount(_)
            | Self::UnknownEnrollment
            | Self::UnknownDevice(_) => ErrorKind::NotFound,
            Self::StationExists(_)
            | Self::StationBusy { .. }
            | Self::SessionEnded(_)
            | Self::WrongPhase { .. }
            | Self::OpenEnded(_)
            | Self::SameStation(_)
            | Self::UserExists(_)
            | Self::TokenRevoked(_)
            | Self::MqttAccountExists(_)
            | Self::MqttAccountRevoked(_)
            | Self::EnrollmentUsed
            | Self::EnrollmentExpired
            | Self::DeviceExists(_)
            | Self::DeviceInUse { .. } => ErrorKind::Conflict,
            Self::InvalidDuration { .. }
            | Self::TooLong { .. }
            | Self::InvalidField { .. }
            | Self::TokenExceedsUser { .. }
            | Self::WrongDeviceKind { .. } => ErrorKind::Invalid,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    NotFound,
    Conflict,
    Invalid,
}
