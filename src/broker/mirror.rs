//! The controller's own side of MQTT: retained station states mirrored from the engine,
//! the controller's status, and answers to what customers ask at their stations.
//!
//! rumqttd forgets retained messages on restart, so the store is the source of truth:
//! every station's state is republished from it at boot, before any client can connect,
//! and again after every event that changes it.

use super::Registry;
use super::codec;
use super::feeder::Feeder;
use crate::domain::session::{Phase, Session, SessionPolicy};
use crate::domain::{Actor, Command, EventKind, StationId, VenueState};
use crate::engine::{Engine, Request};
use crate::protocol::{
    self, AgentCommand, CommandAck, CommandAction, ControllerStatus, PROTOCOL_VERSION,
    ProtocolError, RequestKind, RequestResponse, SessionState, StationRequest, StationState,
    StationStatus, Topic, Warning,
};
use crate::store::Event;
use jiff::Timestamp;
use rumqttd::Notification;
use rumqttd::local::LinkRx;
use rumqttd::protocol::Packet;
use rumqttd::protocol::QoS;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, watch};

/// The state an agent needs, computed from the venue state at `now`.
pub fn station_state(
    state: &VenueState,
    station: &StationId,
    seq: u64,
    now: Timestamp,
    policy: &SessionPolicy,
) -> Option<StationState> {
    let s = state.stations.get(station)?;
    let session = state.session_on(station);
    let status = match session.map(|x| &x.phase) {
        None | Some(Phase::Ended { .. }) => StationStatus::Free,
        Some(Phase::Running { .. }) => StationStatus::InSession,
        Some(Phase::Paused { .. }) => StationStatus::Paused,
        Some(Phase::Grace { .. }) => StationStatus::Grace,
    };
    Some(StationState {
        v: PROTOCOL_VERSION,
        station: s.id.clone(),
        name: s.name.clone(),
        kind: s.kind,
        seq,
        server_time: now,
        status,
        lock: status.locks(),
        session: session
            .filter(|_| status != StationStatus::Free)
            .map(|x| session_state(x, now, policy)),
        message: None,
    })
}

fn session_state(s: &Session, now: Timestamp, policy: &SessionPolicy) -> SessionState {
    let ends_at = s.ends_at();
    let warnings = match ends_at {
        Some(end) => policy
            .warnings()
            .iter()
            .rev()
            // Leads already given are gone; the shortest one given is `warned`.
            .filter(|lead| s.warned.is_none_or(|given| **lead < given))
            .map(|lead| Warning {
                at: crate::domain::time::add(end, -*lead),
                lead_s: u32::try_from(lead.as_secs()).unwrap_or(u32::MAX),
            })
            .collect::<Vec<_>>(),
        None => Vec::new(),
    };
    let mut warnings = warnings;
    warnings.sort_by_key(|w| w.at);
    SessionState {
        id: s.id,
        started_at: s.started_at,
        ends_at,
        remaining_ms: match s.phase {
            Phase::Paused { .. } => s
                .remaining(now)
                .map(|r| i64::try_from(r.as_millis()).unwrap_or(i64::MAX)),
            _ => None,
        },
        grace_until: match s.phase {
            Phase::Grace { until, .. } => Some(until),
            _ => None,
        },
        warnings,
    }
}

/// Which stations an event changes.
fn touched(kind: &EventKind) -> Vec<StationId> {
    match kind {
        EventKind::StationAdded { station } => vec![station.id.clone()],
        EventKind::StationRemoved { station } => vec![station.clone()],
        EventKind::Session { change, session } => {
            let mut v = vec![session.station.clone()];
            if let crate::domain::SessionChange::Transferred { from } = change {
                v.push(from.clone());
            }
            v
        }
        _ => Vec::new(),
    }
}

/// How agent commands are retried: `attempts` sends, `base`, 2×`base`, 4×`base`… apart,
/// then one more interval to answer before the agent counts as unhealthy.
#[derive(Clone, Copy, Debug)]
pub struct Retry {
    pub base: Duration,
    pub attempts: u32,
}

/// A command sent to an agent and not yet acknowledged.
struct Pending {
    station: StationId,
    payload: Vec<u8>,
    sent: u32,
    next: Instant,
}

/// The controller's own link, as the feeder knows it.
pub const CONTROLLER_KEY: super::feeder::Key = 0;

/// The controller's link to the router.
pub struct Controller {
    feeder: Feeder,
    /// Publishes queued for the next `flush`.
    outbox: Vec<Packet>,
    pub rx: LinkRx,
    pkid: u16,
    pub engine: Engine,
    pub policy: SessionPolicy,
    pub started_at: Timestamp,
    retry: Retry,
    pending: HashMap<String, Pending>,
    unhealthy: Arc<Mutex<BTreeSet<StationId>>>,
}

/// Topics the controller reads.
pub const SUBSCRIPTIONS: [&str; 3] = [
    "venued/v1/stations/+/request",
    "venued/v1/stations/+/ack",
    "venued/v1/agents/+/status",
];

impl Controller {
    pub fn new(
        feeder: Feeder,
        rx: LinkRx,
        engine: Engine,
        policy: SessionPolicy,
        retry: Retry,
        unhealthy: Arc<Mutex<BTreeSet<StationId>>>,
    ) -> Self {
        let started_at = engine.now();
        Self {
            feeder,
            outbox: Vec::new(),
            rx,
            pkid: 0,
            engine,
            policy,
            started_at,
            retry,
            pending: HashMap::new(),
            unhealthy,
        }
    }

    fn set_health(&self, station: &StationId, healthy: bool) {
        let mut set = self
            .unhealthy
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if healthy {
            set.remove(station);
        } else {
            set.insert(station.clone());
        }
    }

    /// The engine records what agents did; never from the mirror's own loop, which must
    /// keep serving the router.
    fn record(&self, command: Command, actor: Actor) {
        let engine = self.engine.clone();
        tokio::spawn(async move {
            if let Err(e) = engine.execute(Request::new(command, actor)).await {
                tracing::warn!(error = %e, "cannot record an agent command outcome");
            }
        });
    }

    /// A command just committed: send it now and schedule its retries.
    async fn dispatch(
        &mut self,
        station: &StationId,
        id: &str,
        action: &CommandAction,
        at: Timestamp,
    ) {
        let cmd = AgentCommand {
            id: id.to_owned(),
            issued_at: at,
            action: action.clone(),
        };
        let payload = protocol::encode(&cmd);
        self.queue(&protocol::station_cmd(station), &payload, false);
        self.flush().await;
        self.pending.insert(
            id.to_owned(),
            Pending {
                station: station.clone(),
                payload,
                sent: 1,
                next: Instant::now() + self.retry.base,
            },
        );
    }

    /// When the next retry or give-up is due.
    fn next_due(&self) -> Option<Instant> {
        self.pending.values().map(|p| p.next).min()
    }

    /// Resend what is due; give up on what has had every attempt.
    async fn retry_due(&mut self) {
        let now = Instant::now();
        let due: Vec<String> = self
            .pending
            .iter()
            .filter(|(_, p)| p.next <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in due {
            let Some(mut p) = self.pending.remove(&id) else {
                continue;
            };
            if p.sent >= self.retry.attempts {
                tracing::warn!(station = %p.station, id, attempts = p.sent, "agent did not acknowledge a command: marking it unhealthy");
                self.set_health(&p.station, false);
                self.record(
                    Command::RecordCommandFailure {
                        station: p.station,
                        id,
                        attempts: p.sent,
                    },
                    Actor::System,
                );
                continue;
            }
            tracing::debug!(station = %p.station, id, attempt = p.sent + 1, "resending an unacknowledged command");
            self.queue(&protocol::station_cmd(&p.station), &p.payload, false);
            p.next = now + self.retry.base * 2u32.saturating_pow(p.sent);
            p.sent += 1;
            self.pending.insert(id, p);
        }
        self.flush().await;
    }

    fn on_ack(&mut self, station: &StationId, ack: CommandAck) {
        let known = self
            .pending
            .get(&ack.id)
            .is_some_and(|p| p.station == *station);
        if !known {
            // A repeat, a late answer after we gave up, or noise: nothing to record.
            tracing::debug!(%station, id = ack.id, "acknowledgement for no pending command");
            return;
        }
        self.pending.remove(&ack.id);
        self.set_health(station, true);
        self.record(
            Command::RecordCommandAck {
                station: station.clone(),
                id: ack.id,
                ok: ack.ok,
                error: ack.error,
            },
            Actor::Mqtt {
                account: crate::domain::mqtt::agent_account(station),
            },
        );
    }

    fn next_pkid(&mut self) -> u16 {
        self.pkid = self.pkid.checked_add(1).unwrap_or(1);
        self.pkid
    }

    /// Queue a QoS 1 publish on the link; `flush` hands the batch to the router.
    fn queue(&mut self, topic: &str, payload: &[u8], retain: bool) {
        let pkid = self.next_pkid();
        match codec::publish(topic, payload, QoS::AtLeastOnce, retain, pkid) {
            Some(p) => self.outbox.push(p),
            None => tracing::error!(topic, "cannot encode a controller publish"),
        }
    }

    /// Hand queued publishes to the router (through the feeder thread).
    async fn flush(&mut self) {
        let batch = std::mem::take(&mut self.outbox);
        if self.feeder.packets(CONTROLLER_KEY, batch).await.is_err() {
            tracing::error!("the MQTT router stopped taking the controller's messages");
        }
    }

    pub async fn publish_status(&mut self, online: bool) {
        let status = ControllerStatus {
            online,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            protocol: PROTOCOL_VERSION,
            started_at: Some(self.started_at),
        };
        self.queue(
            protocol::CONTROLLER_STATUS,
            &protocol::encode(&status),
            true,
        );
        self.flush().await;
    }

    /// Republish every station's retained state (boot, or after missing events).
    pub async fn publish_all(&mut self) {
        let snap = self.engine.snapshot();
        let now = self.engine.now();
        for id in snap.state.stations.keys() {
            if let Some(state) = station_state(&snap.state, id, snap.seq, now, &self.policy) {
                self.queue(
                    &protocol::station_state(id),
                    &protocol::encode(&state),
                    true,
                );
            }
        }
        self.flush().await;
    }

    async fn on_event(&mut self, event: &Event) {
        if let EventKind::StationCommandSent {
            station,
            id,
            action,
        } = &event.body.kind
        {
            self.dispatch(station, id, action, event.body.at).await;
            return;
        }
        let stations = touched(&event.body.kind);
        if stations.is_empty() {
            return;
        }
        // The latest snapshot is at least as new as this event.
        let snap = self.engine.snapshot();
        let now = self.engine.now();
        for id in stations {
            match station_state(&snap.state, &id, snap.seq.max(event.seq), now, &self.policy) {
                Some(state) => self.queue(
                    &protocol::station_state(&id),
                    &protocol::encode(&state),
                    true,
                ),
                // An empty retained message deletes the retained state.
                None => self.queue(&protocol::station_state(&id), b"", true),
            }
        }
        self.flush().await;
    }

    async fn on_publish(&mut self, topic: &str, payload: &[u8]) {
        match protocol::parse(topic) {
            Some(Topic::StationRequest(station)) => self.on_request(&station, payload).await,
            Some(Topic::StationAck(station)) => match protocol::decode::<CommandAck>(payload) {
                Ok(ack) => self.on_ack(&station, ack),
                Err(e) => tracing::info!(%station, error = %e, "malformed command ack ignored"),
            },
            Some(Topic::AgentStatus(station)) => {
                match protocol::decode::<protocol::AgentStatus>(payload) {
                    Ok(s) => {
                        tracing::info!(%station, online = s.online, version = ?s.version, "agent status");
                        // The retained state it just received may be hours old; a fresh
                        // copy (same seq, new server_time) lets it count time correctly.
                        if s.online {
                            self.set_health(&station, true);
                            self.republish(&station).await;
                        }
                    }
                    Err(e) => {
                        tracing::info!(%station, error = %e, "malformed agent status ignored")
                    }
                }
            }
            _ => {}
        }
    }

    async fn republish(&mut self, station: &StationId) {
        let snap = self.engine.snapshot();
        let now = self.engine.now();
        if let Some(state) = station_state(&snap.state, station, snap.seq, now, &self.policy) {
            self.queue(
                &protocol::station_state(station),
                &protocol::encode(&state),
                true,
            );
            self.flush().await;
        }
    }

    async fn on_request(&mut self, station: &StationId, payload: &[u8]) {
        let response = match protocol::decode::<StationRequest>(payload) {
            Ok(req) => {
                let (ok, error) = match &req.kind {
                    RequestKind::CallStaff { note } => {
                        tracing::warn!(%station, note = note.as_deref().unwrap_or(""), "a customer is calling staff");
                        (true, None)
                    }
                    RequestKind::MemberLogin { .. } | RequestKind::ExtendFromWallet { .. } => (
                        false,
                        Some(ProtocolError::new(
                            ProtocolError::NOT_SUPPORTED,
                            "Member accounts are not available at this venue yet; please ask staff.",
                        )),
                    ),
                };
                RequestResponse {
                    id: req.id,
                    ok,
                    error,
                }
            }
            Err(e) => {
                // Answer with the id if the payload has one, so the agent stops waiting.
                let id = serde_json::from_slice::<serde_json::Value>(payload)
                    .ok()
                    .and_then(|v| v.get("id")?.as_str().map(str::to_owned));
                tracing::info!(%station, error = %e, "malformed station request");
                let Some(id) = id else { return };
                RequestResponse {
                    id,
                    ok: false,
                    error: Some(ProtocolError::new(ProtocolError::INVALID, e.to_string())),
                }
            }
        };
        self.queue(
            &protocol::station_response(station),
            &protocol::encode(&response),
            false,
        );
        self.flush().await;
    }
}

/// Mirror engine events into retained states and answer station requests until stopped.
///
/// `seen` is the last event already reflected (taken before `events` subscribed). Events
/// the broadcast did not deliver (a lag, or the instant before subscribing) are read back
/// from the store, so no command to an agent and no revocation is lost.
pub async fn run(
    mut ctl: Controller,
    mut events: broadcast::Receiver<Arc<Event>>,
    registry: Arc<Registry>,
    mut stop: watch::Receiver<bool>,
    mut seen: u64,
) {
    loop {
        let due = ctl.next_due();
        tokio::select! {
            ev = events.recv() => match ev {
                Ok(event) => {
                    if event.seq > seen + 1 {
                        for e in missed(&ctl.engine, seen).await {
                            if e.seq < event.seq {
                                handle(&mut ctl, &registry, &e, &mut seen).await;
                            }
                        }
                    }
                    handle(&mut ctl, &registry, &event, &mut seen).await;
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "MQTT mirror fell behind the engine; catching up from the store");
                    for e in missed(&ctl.engine, seen).await {
                        handle(&mut ctl, &registry, &e, &mut seen).await;
                    }
                }
                Err(broadcast::error::RecvError::Closed) => break,
            },
            n = ctl.rx.next() => match n {
                Ok(Some(Notification::Forward(f))) => {
                    let topic = String::from_utf8_lossy(&f.publish.topic).into_owned();
                    ctl.on_publish(&topic, &f.publish.payload).await;
                }
                Ok(Some(Notification::Unschedule)) => {
                    let _ = ctl.rx.wake().await;
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::error!(error = %e, "the controller's MQTT link closed");
                    break;
                }
            },
            () = crate::runtime::sleep_until(due.map(Into::into)) => ctl.retry_due().await,
            _ = stop.changed() => break,
        }
    }
    ctl.publish_status(false).await;
}

/// One event, once: `seen` is the last one handled.
async fn handle(ctl: &mut Controller, registry: &Registry, event: &Event, seen: &mut u64) {
    if event.seq > *seen {
        *seen = event.seq;
        revoke_if_needed(registry, &event.body.kind);
        ctl.on_event(event).await;
    }
}

/// Committed events after `seq`, read from the store (the broadcast dropped them).
async fn missed(engine: &Engine, seq: u64) -> Vec<Event> {
    let Ok(store) = engine.store() else {
        return Vec::new();
    };
    tokio::task::spawn_blocking(move || store.events(seq, usize::MAX))
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default()
}

/// A revoked account, a rotated secret or a removed station ends open connections now.
fn revoke_if_needed(registry: &Registry, kind: &EventKind) {
    match kind {
        EventKind::MqttAccountRevoked { name } | EventKind::MqttSecretIssued { name } => {
            registry.revoke(name);
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::domain::session::Session;
    use crate::domain::{SessionId, Station, StationKind};
    use jiff::SignedDuration;

    #[test]
    fn running_session_lists_the_warnings_still_to_come() {
        let policy = SessionPolicy::default();
        let now: Timestamp = "2026-11-23T15:00:00Z".parse().unwrap();
        let mut state = VenueState::default();
        let sid = StationId::parse("pc-01").unwrap();
        state.stations.insert(
            sid.clone(),
            Station {
                id: sid.clone(),
                name: "PC 01".into(),
                kind: StationKind::Pc,
                zone: None,
            },
        );
        let free = station_state(&state, &sid, 3, now, &policy).unwrap();
        assert_eq!(free.status, StationStatus::Free);
        assert!(free.lock && free.session.is_none());
        let session = Session::start(
            SessionId(1),
            sid.clone(),
            Some(SignedDuration::from_mins(30)),
            now,
            &policy,
        )
        .unwrap();
        state.put_session(session);
        let s = station_state(&state, &sid, 4, now, &policy).unwrap();
        assert_eq!(s.status, StationStatus::InSession);
        assert!(!s.lock);
        let session = s.session.unwrap();
        let end: Timestamp = "2026-11-23T15:30:00Z".parse().unwrap();
        assert_eq!(session.ends_at, Some(end));
        assert_eq!(
            session
                .warnings
                .iter()
                .map(|w| (w.at.to_string(), w.lead_s))
                .collect::<Vec<_>>(),
            [
                ("2026-11-23T15:25:00Z".to_owned(), 300),
                ("2026-11-23T15:29:00Z".to_owned(), 60)
            ]
        );
    }
}
