//! The venue's live state and the one function that decides what a command does to it.
//!
//! `decide` is pure: (state, command, now, policy) -> events. `apply` folds an event into
//! the state. The engine runs both inside one store transaction.

use super::account::{Permission, Role, valid_user_name};
use super::command::Command;
use super::device::{Device, DeviceKind, DeviceName, Enforcement};
use super::enforcement::{ActionOutcome, AlertKind, AutoResponse, DeviceAction, PowerSample};
use super::error::DomainError;
use super::ids::{SessionId, StationId};
use super::mqtt::{self, MqttAccount, MqttScope};
use super::session::{Session, SessionChange, SessionPolicy};
use super::station::{MAX_NAME_LEN, Station};
use super::time::serde_dur;
use super::timekeeping::{Correction, OutagePolicy, TrustSource};
use crate::protocol::CommandAction;
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What happened. Session events carry the session as it is afterwards, so each event is
/// readable on its own in the audit log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventKind {
    StationAdded {
        station: Station,
    },
    StationRemoved {
        station: StationId,
    },
    Session {
        change: SessionChange,
        session: Session,
    },
    UserAdded {
        name: String,
        role: Role,
    },
    /// How the venue clock started after a boot.
    ClockBooted {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        last_checkpoint: Option<Timestamp>,
        wall: Timestamp,
        venue_now: Timestamp,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        trusted: Option<TrustSource>,
        policy: OutagePolicy,
        #[serde(
            with = "serde_dur::opt",
            default,
            skip_serializing_if = "Option::is_none"
        )]
        #[schemars(with = "Option<SignedDuration>")]
        downtime: Option<SignedDuration>,
        #[serde(with = "serde_dur::req")]
        #[schemars(with = "SignedDuration")]
        shift: SignedDuration,
    },
    /// A trusted source corrected the venue clock.
    ClockCorrected {
        source: TrustSource,
        from: Timestamp,
        to: Timestamp,
        #[serde(flatten)]
        correction: Correction,
    },
    TokenCreated {
        id: String,
        name: String,
        user: String,
        role: Role,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expires_at: Option<Timestamp>,
    },
    TokenRevoked {
        id: String,
        user: String,
    },
    LoggedIn {
        name: String,
        from: String,
    },
    LoginFailed {
        name: String,
        from: String,
        reason: String,
    },
    /// An MQTT account was made (for a station's agent, with the station).
    MqttAccountCreated {
        name: String,
        scope: MqttScope,
        /// Whether a secret was issued with it.
        with_secret: bool,
    },
    /// A new secret replaced the old one.
    MqttSecretIssued {
        name: String,
    },
    MqttAccountRevoked {
        name: String,
    },
    /// An enrollment code was issued for a PC's agent (the code itself is never logged).
    EnrollmentCreated {
        station: StationId,
        id: String,
        expires_at: Timestamp,
    },
    /// An agent fetched its credentials with an enrollment code.
    AgentEnrolled {
        station: StationId,
        id: String,
    },
    /// A device was configured (its password, if any, is only in the store).
    DeviceAdded {
        name: DeviceName,
        kind: DeviceKind,
        with_password: bool,
    },
    DeviceRemoved {
        name: DeviceName,
    },
    /// A station's enforcement devices and ladder were set (`None`: cleared).
    EnforcementSet {
        station: StationId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        enforcement: Option<Enforcement>,
    },
    /// A command for a station's agent was queued for delivery.
    StationCommandSent {
        station: StationId,
        id: String,
        action: CommandAction,
    },
    StationCommandAcked {
        station: StationId,
        id: String,
        ok: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// No answer after every retry: the agent is considered unhealthy.
    StationCommandFailed {
        station: StationId,
        id: String,
        attempts: u32,
    },
    /// The reconciler asked a station's device to do something.
    DeviceActed {
        station: StationId,
        device: DeviceName,
        action: DeviceAction,
        #[serde(flatten)]
        outcome: ActionOutcome,
    },
    /// A station and its devices disagree: tamper, bypass or a failing device.
    EnforcementAlert {
        station: StationId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        device: Option<DeviceName>,
        alert: AlertKind,
        detail: String,
        /// What venued does about it besides this record.
        response: AutoResponse,
    },
    /// What the stations' plugs drew (readings live in memory; this is the periodic
    /// sample written down).
    PowerSampled {
        samples: Vec<PowerSample>,
    },
    /// The untrusted wall clock disagreed with the venue clock and was not followed.
    ClockJumpIgnored {
        wall: Timestamp,
        venue_now: Timestamp,
        #[serde(with = "serde_dur::req")]
        #[schemars(with = "SignedDuration")]
        offset: SignedDuration,
    },
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VenueState {
    pub stations: BTreeMap<StationId, Station>,
    /// Active sessions only; ended ones live in the store's history.
    pub sessions: BTreeMap<SessionId, Session>,
    /// Which active session occupies a station.
    pub occupant: BTreeMap<StationId, SessionId>,
    pub users: BTreeMap<String, Role>,
    /// API tokens by public id (secrets are only in the store, hashed).
    pub tokens: BTreeMap<String, TokenInfo>,
    /// MQTT accounts by user name (secrets only in the store, hashed).
    pub mqtt: BTreeMap<String, MqttAccount>,
    /// Enrollment codes not yet used, by public id (codes only in the store, hashed).
    pub enrollments: BTreeMap<String, Enrollment>,
    /// Devices by name (passwords only in the store).
    pub devices: BTreeMap<DeviceName, Device>,
    /// How stations are enforced with devices.
    pub enforcement: BTreeMap<StationId, Enforcement>,
    pub next_session: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenInfo {
    pub name: String,
    pub user: String,
    pub role: Role,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Timestamp>,
    pub revoked: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enrollment {
    pub station: StationId,
    pub expires_at: Timestamp,
}

/// Upper bound on free-text reasons staff attach to commands.
pub const MAX_REASON_LEN: usize = 500;

impl VenueState {
    pub fn session_on(&self, station: &StationId) -> Option<&Session> {
        self.occupant
            .get(station)
            .and_then(|id| self.sessions.get(id))
    }

    pub fn decide(
        &self,
        cmd: &Command,
        now: Timestamp,
        policy: &SessionPolicy,
    ) -> Result<Vec<EventKind>, DomainError> {
        self.decide_with(cmd, now, policy, false)
    }

    /// `decide`, knowing whether a secret's hash rides beside the command (it never
    /// appears in events, but whether one was issued does).
    pub fn decide_with(
        &self,
        cmd: &Command,
        now: Timestamp,
        policy: &SessionPolicy,
        secret_given: bool,
    ) -> Result<Vec<EventKind>, DomainError> {
        let one = |change, session| Ok(vec![EventKind::Session { change, session }]);
        match cmd {
            Command::AddStation {
                id,
                name,
                kind,
                zone,
            } => {
                if self.stations.contains_key(id) {
                    return Err(DomainError::StationExists(id.clone()));
                }
                check_name("name", name)?;
                if let Some(zone) = zone {
                    check_name("zone", zone)?;
                }
                let mut events = vec![EventKind::StationAdded {
                    station: Station {
                        id: id.clone(),
                        name: name.trim().to_owned(),
                        kind: *kind,
                        zone: zone.as_ref().map(|z| z.trim().to_owned()),
                    },
                }];
                // Every PC gets its agent's account with the station, so enrolling it
                // needs nothing more; consoles have no agent.
                if *kind == super::station::StationKind::Pc {
                    events.push(EventKind::MqttAccountCreated {
                        name: mqtt::agent_account(id),
                        scope: MqttScope::Agent {
                            station: id.clone(),
                        },
                        with_secret: secret_given,
                    });
                }
                Ok(events)
            }
            Command::RemoveStation { id } => {
                self.station(id)?;
                if let Some(session) = self.occupant.get(id) {
                    return Err(DomainError::StationBusy {
                        station: id.clone(),
                        session: *session,
                    });
                }
                let mut events = vec![EventKind::StationRemoved {
                    station: id.clone(),
                }];
                let agent = mqtt::agent_account(id);
                if self.mqtt.get(&agent).is_some_and(|a| !a.revoked) {
                    events.push(EventKind::MqttAccountRevoked { name: agent });
                }
                Ok(events)
            }
            Command::StartSession { station, duration } => {
                self.require_free(station)?;
                let id = SessionId(self.next_session.max(1));
                let session = Session::start(id, station.clone(), *duration, now, policy)?;
                one(SessionChange::Started, session)
            }
            Command::ExtendSession { session, by } => one(
                SessionChange::Extended { by: *by },
                self.session(*session)?.extend(*by, now, policy)?,
            ),
            Command::PauseSession { session } => {
                one(SessionChange::Paused, self.session(*session)?.pause(now)?)
            }
            Command::ResumeSession { session } => one(
                SessionChange::Resumed,
                self.session(*session)?.resume(now, policy)?,
            ),
            Command::TransferSession { session, to } => {
                let current = self.session(*session)?;
                if current.station == *to {
                    return Err(DomainError::SameStation(to.clone()));
                }
                self.require_free(to)?;
                let from = current.station.clone();
                one(
                    SessionChange::Transferred { from },
                    current.transfer(to.clone())?,
                )
            }
            Command::StopSession { session, reason } => {
                if let Some(reason) = reason
                    && reason.chars().count() > MAX_REASON_LEN
                {
                    return Err(DomainError::InvalidField {
                        field: "reason",
                        reason: "is longer than 500 characters",
                    });
                }
                let reason = reason.clone().filter(|r| !r.trim().is_empty());
                one(
                    SessionChange::Stopped { reason },
                    self.session(*session)?.stop(now)?,
                )
            }
            Command::AddUser { name, role } => {
                if !valid_user_name(name) {
                    return Err(DomainError::InvalidField {
                        field: "name",
                        reason: "must be 1-64 letters, digits or . _ - @",
                    });
                }
                if self.users.contains_key(name) {
                    return Err(DomainError::UserExists(name.clone()));
                }
                Ok(vec![EventKind::UserAdded {
                    name: name.clone(),
                    role: *role,
                }])
            }
            // Clock commands are decided by the engine, which owns the venue clock.
            Command::ConfirmClock { .. } | Command::RouterClock { .. } => Ok(Vec::new()),
            Command::CreateToken {
                id,
                name,
                user,
                role,
                expires_at,
            } => {
                check_name("name", name)?;
                let owner_role = *self
                    .users
                    .get(user)
                    .ok_or_else(|| DomainError::UnknownUser(user.clone()))?;
                // Never more rights than the owner: every permission of the token's role
                // must be one the owner has.
                if Permission::ALL
                    .iter()
                    .any(|p| role.allows(*p) && !owner_role.allows(*p))
                {
                    return Err(DomainError::TokenExceedsUser {
                        user: user.clone(),
                        role: *role,
                    });
                }
                if expires_at.is_some_and(|t| t <= now) {
                    return Err(DomainError::InvalidField {
                        field: "expires_at",
                        reason: "is in the past",
                    });
                }
                if self.tokens.contains_key(id) {
                    return Err(DomainError::InvalidField {
                        field: "id",
                        reason: "is already used",
                    });
                }
                Ok(vec![EventKind::TokenCreated {
                    id: id.clone(),
                    name: name.trim().to_owned(),
                    user: user.clone(),
                    role: *role,
                    expires_at: *expires_at,
                }])
            }
            Command::RevokeToken { id } => {
                let token = self
                    .tokens
                    .get(id)
                    .ok_or_else(|| DomainError::UnknownToken(id.clone()))?;
                if token.revoked {
                    return Err(DomainError::TokenRevoked(id.clone()));
                }
                Ok(vec![EventKind::TokenRevoked {
                    id: id.clone(),
                    user: token.user.clone(),
                }])
            }
            Command::CreateMqttAccount { name, scope } => {
                if matches!(scope, MqttScope::Agent { .. }) {
                    return Err(DomainError::InvalidField {
                        field: "scope",
                        reason: "agent accounts are made with their station; rotate to issue a secret",
                    });
                }
                mqtt::validate(name, scope)?;
                if self.mqtt.get(name).is_some_and(|a| !a.revoked) {
                    return Err(DomainError::MqttAccountExists(name.clone()));
                }
                Ok(vec![EventKind::MqttAccountCreated {
                    name: name.clone(),
                    scope: scope.clone(),
                    with_secret: secret_given,
                }])
            }
            Command::RotateMqttSecret { name } => {
                self.live_mqtt(name)?;
                Ok(vec![EventKind::MqttSecretIssued { name: name.clone() }])
            }
            Command::RevokeMqttAccount { name } => {
                self.live_mqtt(name)?;
                Ok(vec![EventKind::MqttAccountRevoked { name: name.clone() }])
            }
            Command::AddDevice { name, kind } => {
                kind.validate()?;
                if self.devices.contains_key(name) {
                    return Err(DomainError::DeviceExists(name.to_string()));
                }
                Ok(vec![EventKind::DeviceAdded {
                    name: name.clone(),
                    kind: kind.clone(),
                    with_password: secret_given,
                }])
            }
            Command::RemoveDevice { name } => {
                self.device(name)?;
                if let Some((station, _)) = self.enforcement.iter().find(|(_, e)| e.uses(name)) {
                    return Err(DomainError::DeviceInUse {
                        device: name.to_string(),
                        station: station.clone(),
                    });
                }
                Ok(vec![EventKind::DeviceRemoved { name: name.clone() }])
            }
            Command::SetEnforcement {
                station,
                enforcement,
            } => {
                self.station(station)?;
                if let Some(e) = enforcement {
                    self.check_enforcement(e)?;
                }
                Ok(vec![EventKind::EnforcementSet {
                    station: station.clone(),
                    enforcement: enforcement.clone(),
                }])
            }
            Command::RecordDeviceAction {
                station,
                device,
                action,
                outcome,
            } => {
                self.station(station)?;
                let outcome = match outcome {
                    ActionOutcome::Failed { error, retry_in_ms } => ActionOutcome::Failed {
                        error: super::enforcement::detail(error),
                        retry_in_ms: *retry_in_ms,
                    },
                    other => other.clone(),
                };
                Ok(vec![EventKind::DeviceActed {
                    station: station.clone(),
                    device: device.clone(),
                    action: *action,
                    outcome,
                }])
            }
            Command::RaiseAlert {
                station,
                device,
                alert,
                detail,
                response,
            } => {
                self.station(station)?;
                Ok(vec![EventKind::EnforcementAlert {
                    station: station.clone(),
                    device: device.clone(),
                    alert: *alert,
                    detail: super::enforcement::detail(detail),
                    response: *response,
                }])
            }
            Command::RecordPowerSamples { samples } => {
                // A station removed since the reading is simply left out.
                let samples: Vec<PowerSample> = samples
                    .iter()
                    .filter(|s| self.stations.contains_key(&s.station))
                    .cloned()
                    .collect();
                if samples.is_empty() {
                    return Ok(Vec::new());
                }
                Ok(vec![EventKind::PowerSampled { samples }])
            }
            Command::CreateEnrollment {
                station,
                id,
                expires_at,
            } => {
                let agent = mqtt::agent_account(station);
                if self.station(station)?.kind != super::station::StationKind::Pc {
                    return Err(DomainError::InvalidField {
                        field: "station",
                        reason: "is not a PC: only PCs run an agent",
                    });
                }
                self.live_mqtt(&agent)?;
                if *expires_at <= now || self.enrollments.contains_key(id) || !secret_given {
                    return Err(DomainError::InvalidField {
                        field: "id",
                        reason: "must be new, with a code and a future expiry",
                    });
                }
                Ok(vec![EventKind::EnrollmentCreated {
                    station: station.clone(),
                    id: id.clone(),
                    expires_at: *expires_at,
                }])
            }
            Command::Enroll { id } => {
                let e = self
                    .enrollments
                    .get(id)
                    .ok_or(DomainError::EnrollmentUsed)?;
                if e.expires_at <= now {
                    return Err(DomainError::EnrollmentExpired);
                }
                let agent = mqtt::agent_account(&e.station);
                self.live_mqtt(&agent)?;
                Ok(vec![
                    EventKind::AgentEnrolled {
                        station: e.station.clone(),
                        id: id.clone(),
                    },
                    EventKind::MqttSecretIssued { name: agent },
                ])
            }
            Command::SendToStation {
                station,
                id,
                action,
            } => {
                let s = self.station(station)?;
                if s.kind != super::station::StationKind::Pc {
                    return Err(DomainError::InvalidField {
                        field: "station",
                        reason: "is not a PC: only PCs run an agent",
                    });
                }
                if id.is_empty() || id.len() > 64 || id.chars().any(char::is_control) {
                    return Err(DomainError::InvalidField {
                        field: "id",
                        reason: "must be 1-64 characters",
                    });
                }
                match action {
                    CommandAction::Message { text }
                        if text.trim().is_empty() || text.chars().count() > MAX_REASON_LEN =>
                    {
                        return Err(DomainError::InvalidField {
                            field: "text",
                            reason: "must be 1-500 characters",
                        });
                    }
                    // Nobody plays for free: unlocking needs a session to unlock for.
                    CommandAction::Unlock if self.session_on(station).is_none() => {
                        return Err(DomainError::InvalidField {
                            field: "type",
                            reason: "unlock needs a session on the station",
                        });
                    }
                    _ => {}
                }
                Ok(vec![EventKind::StationCommandSent {
                    station: station.clone(),
                    id: id.clone(),
                    action: action.clone(),
                }])
            }
            Command::RecordCommandAck {
                station,
                id,
                ok,
                error,
            } => Ok(vec![EventKind::StationCommandAcked {
                station: station.clone(),
                id: id.chars().take(64).collect(),
                ok: *ok,
                error: error
                    .as_ref()
                    .map(|e| e.chars().take(MAX_REASON_LEN).collect()),
            }]),
            Command::RecordCommandFailure {
                station,
                id,
                attempts,
            } => Ok(vec![EventKind::StationCommandFailed {
                station: station.clone(),
                id: id.clone(),
                attempts: *attempts,
            }]),
            Command::RecordLogin {
                name,
                from,
                failure,
            } => Ok(vec![match failure {
                None => EventKind::LoggedIn {
                    name: name.clone(),
                    from: from.clone(),
                },
                Some(reason) => EventKind::LoginFailed {
                    // An unknown name is recorded as typed, bounded.
                    name: name.chars().take(64).collect(),
                    from: from.clone(),
                    reason: reason.clone(),
                },
            }]),
        }
    }

    /// Timer transitions due for one session at `now`, in order.
    pub fn due(&self, id: SessionId, now: Timestamp, policy: &SessionPolicy) -> Vec<EventKind> {
        let mut events = Vec::new();
        let Some(mut session) = self.sessions.get(&id).cloned() else {
            return events;
        };
        while let Some((change, next)) = session.due(now, policy) {
            events.push(EventKind::Session {
                change,
                session: next.clone(),
            });
            session = next;
        }
        events
    }

    /// Move every active session by `offset` (a clock correction), as audited events.
    pub fn shift_all(&self, offset: SignedDuration) -> Vec<EventKind> {
        if offset.is_zero() {
            return Vec::new();
        }
        self.sessions
            .values()
            .map(|s| EventKind::Session {
                change: SessionChange::Shifted { offset },
                session: s.shift(offset),
            })
            .collect()
    }

    pub fn apply(&mut self, event: &EventKind) {
        match event {
            EventKind::StationAdded { station } => {
                self.stations.insert(station.id.clone(), station.clone());
            }
            EventKind::StationRemoved { station } => {
                self.stations.remove(station);
                self.enforcement.remove(station);
            }
            EventKind::Session { session, .. } => self.put_session(session.clone()),
            EventKind::UserAdded { name, role } => {
                self.users.insert(name.clone(), *role);
            }
            EventKind::TokenCreated {
                id,
                name,
                user,
                role,
                expires_at,
            } => {
                self.tokens.insert(
                    id.clone(),
                    TokenInfo {
                        name: name.clone(),
                        user: user.clone(),
                        role: *role,
                        expires_at: *expires_at,
                        revoked: false,
                    },
                );
            }
            EventKind::TokenRevoked { id, .. } => {
                if let Some(t) = self.tokens.get_mut(id) {
                    t.revoked = true;
                }
            }
            EventKind::MqttAccountCreated {
                name,
                scope,
                with_secret,
            } => {
                self.mqtt.insert(
                    name.clone(),
                    MqttAccount {
                        name: name.clone(),
                        scope: scope.clone(),
                        revoked: false,
                        has_secret: *with_secret,
                    },
                );
            }
            EventKind::MqttSecretIssued { name } => {
                if let Some(a) = self.mqtt.get_mut(name) {
                    a.has_secret = true;
                }
            }
            EventKind::MqttAccountRevoked { name } => {
                if let Some(a) = self.mqtt.get_mut(name) {
                    a.revoked = true;
                }
            }
            EventKind::EnrollmentCreated {
                station,
                id,
                expires_at,
            } => {
                self.enrollments.insert(
                    id.clone(),
                    Enrollment {
                        station: station.clone(),
                        expires_at: *expires_at,
                    },
                );
            }
            EventKind::AgentEnrolled { id, .. } => {
                self.enrollments.remove(id);
            }
            EventKind::DeviceAdded {
                name,
                kind,
                with_password,
            } => {
                self.devices.insert(
                    name.clone(),
                    Device {
                        name: name.clone(),
                        kind: kind.clone(),
                        has_password: *with_password,
                    },
                );
            }
            EventKind::DeviceRemoved { name } => {
                self.devices.remove(name);
            }
            EventKind::EnforcementSet {
                station,
                enforcement,
            } => match enforcement {
                Some(e) => {
                    self.enforcement.insert(station.clone(), e.clone());
                }
                None => {
                    self.enforcement.remove(station);
                }
            },
            EventKind::StationCommandSent { .. }
            | EventKind::DeviceActed { .. }
            | EventKind::EnforcementAlert { .. }
            | EventKind::PowerSampled { .. }
            | EventKind::StationCommandAcked { .. }
            | EventKind::StationCommandFailed { .. }
            | EventKind::LoggedIn { .. }
            | EventKind::LoginFailed { .. }
            | EventKind::ClockBooted { .. }
            | EventKind::ClockCorrected { .. }
            | EventKind::ClockJumpIgnored { .. } => {}
        }
    }

    /// Insert or replace a session, keeping the station index and id counter in step.
    pub fn put_session(&mut self, session: Session) {
        self.next_session = self.next_session.max(session.id.0 + 1);
        if let Some(old) = self.sessions.remove(&session.id)
            && self.occupant.get(&old.station) == Some(&old.id)
        {
            self.occupant.remove(&old.station);
        }
        if session.is_active() {
            self.occupant.insert(session.station.clone(), session.id);
            self.sessions.insert(session.id, session);
        }
    }

    fn station(&self, id: &StationId) -> Result<&Station, DomainError> {
        self.stations
            .get(id)
            .ok_or_else(|| DomainError::UnknownStation(id.clone()))
    }

    fn session(&self, id: SessionId) -> Result<&Session, DomainError> {
        // Ended sessions are not in memory; the engine tells "ended" from "unknown".
        self.sessions
            .get(&id)
            .ok_or(DomainError::UnknownSession(id))
    }

    fn device(&self, name: &DeviceName) -> Result<&Device, DomainError> {
        self.devices
            .get(name)
            .ok_or_else(|| DomainError::UnknownDevice(name.to_string()))
    }

    /// Every device an enforcement names exists and fits its role.
    fn check_enforcement(&self, e: &Enforcement) -> Result<(), DomainError> {
        e.ladder.validate()?;
        let fits = |name: &DeviceName, role, wanted, ok: fn(&DeviceKind) -> bool| {
            let d = self.device(name)?;
            if ok(&d.kind) {
                Ok(())
            } else {
                Err(DomainError::WrongDeviceKind {
                    device: name.to_string(),
                    role,
                    actual: d.kind.type_name(),
                    wanted,
                })
            }
        };
        if let Some(plug) = &e.plug {
            fits(
                plug,
                "plug",
                "a Shelly or Tasmota plug",
                DeviceKind::is_plug,
            )?;
        }
        if let Some(net) = &e.network {
            fits(&net.router, "network.router", "a MikroTik router", |k| {
                matches!(k, DeviceKind::Mikrotik { .. })
            })?;
        }
        if let Some(standby) = &e.standby {
            fits(standby, "standby", "an MQTT action", |k| {
                matches!(k, DeviceKind::MqttAction { .. })
            })?;
        }
        Ok(())
    }

    fn live_mqtt(&self, name: &str) -> Result<&MqttAccount, DomainError> {
        let account = self
            .mqtt
            .get(name)
            .ok_or_else(|| DomainError::UnknownMqttAccount(name.to_owned()))?;
        if account.revoked {
            return Err(DomainError::MqttAccountRevoked(name.to_owned()));
        }
        Ok(account)
    }

    fn require_free(&self, station: &StationId) -> Result<(), DomainError> {
        self.station(station)?;
        match self.occupant.get(station) {
            Some(session) => Err(DomainError::StationBusy {
                station: station.clone(),
                session: *session,
            }),
            None => Ok(()),
        }
    }
}

fn check_name(field: &'static str, value: &str) -> Result<(), DomainError> {
    let trimmed = value.trim();
    if trimmed.is_empty() {
        return Err(DomainError::InvalidField {
            field,
            reason: "must not be empty",
        });
    }
    if trimmed.chars().count() > MAX_NAME_LEN {
        return Err(DomainError::InvalidField {
            field,
            reason: "is longer than 64 characters",
        });
    }
    if trimmed.chars().any(char::is_control) {
        return Err(DomainError::InvalidField {
            field,
            reason: "contains control characters",
        });
    }
    Ok(())
}
