//! Commands: every state change the engine accepts, whoever asks for it.

use super::account::Role;
use super::ids::{SessionId, StationId};
use super::mqtt::MqttScope;
use super::station::StationKind;
use super::time::serde_dur;
use crate::protocol::CommandAction;
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Command {
    AddStation {
        id: StationId,
        name: String,
        kind: StationKind,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        zone: Option<String>,
    },
    RemoveStation {
        id: StationId,
    },
    StartSession {
        station: StationId,
        /// `None` starts an open-ended (postpaid) session.
        #[serde(with = "serde_dur::opt", default)]
        duration: Option<SignedDuration>,
    },
    ExtendSession {
        session: SessionId,
        #[serde(with = "serde_dur::req")]
        by: SignedDuration,
    },
    PauseSession {
        session: SessionId,
    },
    ResumeSession {
        session: SessionId,
    },
    TransferSession {
        session: SessionId,
        to: StationId,
    },
    StopSession {
        session: SessionId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// The password hash travels beside the command (see the engine), never in events.
    AddUser {
        name: String,
        role: Role,
    },
    /// Staff state the true time; the venue clock is corrected to it.
    ConfirmClock {
        now: Timestamp,
    },
    /// The router's clock, read by the reconciler while the venue clock is untrusted.
    RouterClock {
        now: Timestamp,
    },
    /// An API token for `user`; its secret's hash travels beside the command.
    CreateToken {
        id: String,
        name: String,
        user: String,
        role: Role,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expires_at: Option<Timestamp>,
    },
    RevokeToken {
        id: String,
    },
    /// A device or integration MQTT account; its secret's hash travels beside the command.
    /// (Agent accounts are made with their station.)
    CreateMqttAccount {
        name: String,
        scope: MqttScope,
    },
    /// Issue a new secret for an MQTT account (hash beside the command); the old one stops
    /// working at once and its connections are closed.
    RotateMqttSecret {
        name: String,
    },
    RevokeMqttAccount {
        name: String,
    },
    /// Send a command to a PC station's agent (delivered over MQTT, retried until
    /// acknowledged). `id` is chosen by the caller and unique.
    SendToStation {
        station: StationId,
        id: String,
        action: CommandAction,
    },
    /// The agent's answer to a command, as the broker received it.
    RecordCommandAck {
        station: StationId,
        id: String,
        ok: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// A command went unanswered through every retry: the agent is unhealthy.
    RecordCommandFailure {
        station: StationId,
        id: String,
        attempts: u32,
    },
    /// A single-use code with which a PC's agent fetches its credentials; the code's
    /// hash travels beside the command.
    CreateEnrollment {
        station: StationId,
        id: String,
        expires_at: Timestamp,
    },
    /// Spend an enrollment code: the agent gets a new secret (hash beside the command).
    Enroll {
        id: String,
    },
    /// A device (plug, router, MQTT action); its password travels beside the command.
    AddDevice {
        name: super::device::DeviceName,
        kind: super::device::DeviceKind,
    },
    RemoveDevice {
        name: super::device::DeviceName,
    },
    /// How a station is enforced with devices; `None` clears it.
    SetEnforcement {
        station: StationId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        enforcement: Option<super::device::Enforcement>,
    },
    /// The reconciler asked a station's device to do something, and how that went.
    RecordDeviceAction {
        station: StationId,
        device: super::device::DeviceName,
        action: super::enforcement::DeviceAction,
        outcome: super::enforcement::ActionOutcome,
    },
    /// The reconciler caught a disagreement between a station and its devices.
    RaiseAlert {
        station: StationId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        device: Option<super::device::DeviceName>,
        alert: super::enforcement::AlertKind,
        detail: String,
        response: super::enforcement::AutoResponse,
    },
    /// Power readings held in memory, written down periodically.
    RecordPowerSamples {
        samples: Vec<super::enforcement::PowerSample>,
    },
    /// A login attempt, successful or not, for the audit trail.
    RecordLogin {
        name: String,
        from: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        failure: Option<String>,
    },
}

impl Command {
    /// A short name for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Self::AddStation { .. } => "add_station",
            Self::RemoveStation { .. } => "remove_station",
            Self::StartSession { .. } => "start_session",
            Self::ExtendSession { .. } => "extend_session",
            Self::PauseSession { .. } => "pause_session",
            Self::ResumeSession { .. } => "resume_session",
            Self::TransferSession { .. } => "transfer_session",
            Self::StopSession { .. } => "stop_session",
            Self::AddUser { .. } => "add_user",
            Self::ConfirmClock { .. } => "confirm_clock",
            Self::RouterClock { .. } => "router_clock",
            Self::CreateToken { .. } => "create_token",
            Self::RevokeToken { .. } => "revoke_token",
            Self::RecordLogin { .. } => "record_login",
            Self::CreateMqttAccount { .. } => "create_mqtt_account",
            Self::SendToStation { .. } => "send_to_station",
            Self::CreateEnrollment { .. } => "create_enrollment",
            Self::Enroll { .. } => "enroll",
            Self::RecordCommandAck { .. } => "record_command_ack",
            Self::RecordCommandFailure { .. } => "record_command_failure",
            Self::RotateMqttSecret { .. } => "rotate_mqtt_secret",
            Self::RevokeMqttAccount { .. } => "revoke_mqtt_account",
            Self::AddDevice { .. } => "add_device",
            Self::RemoveDevice { .. } => "remove_device",
            Self::SetEnforcement { .. } => "set_enforcement",
            Self::RecordDeviceAction { .. } => "record_device_action",
            Self::RaiseAlert { .. } => "raise_alert",
            Self::RecordPowerSamples { .. } => "record_power_samples",
        }
    }
}
