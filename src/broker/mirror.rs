//! The controller's own side of MQTT: retained station states mirrored from the engine,
//! the controller's status, and answers to what customers ask at their stations.
//!
//! rumqttd forgets retained messages on restart, so the store is the source of truth:
//! every station's state is republished from it at boot, before any client can connect,
//! and again after every event that changes it.

use super::Registry;
use super::codec;
use crate::domain::session::{Phase, Session, SessionPolicy};
use crate::domain::{EventKind, StationId, VenueState};
use crate::engine::Engine;
use crate::protocol::{
    self, ControllerStatus, PROTOCOL_VERSION, ProtocolError, RequestKind, RequestResponse,
    SessionState, StationRequest, StationState, StationStatus, Topic, Warning,
};
use crate::store::Event;
use jiff::Timestamp;
use rumqttd::Notification;
use rumqttd::local::{LinkRx, LinkTx};
use rumqttd::protocol::QoS;
use std::sync::Arc;
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

/// The controller's link to the router.
pub struct Controller {
    pub tx: LinkTx,
    pub rx: LinkRx,
    pkid: u16,
    pub engine: Engine,
    pub policy: SessionPolicy,
    pub started_at: Timestamp,
}

/// Topics the controller reads.
pub const SUBSCRIPTIONS: [&str; 3] = [
    "venued/v1/stations/+/request",
    "venued/v1/stations/+/ack",
    "venued/v1/agents/+/status",
];

impl Controller {
    pub fn new(tx: LinkTx, rx: LinkRx, engine: Engine, policy: SessionPolicy) -> Self {
        let started_at = engine.now();
        Self {
            tx,
            rx,
            pkid: 0,
            engine,
            policy,
            started_at,
        }
    }

    fn next_pkid(&mut self) -> u16 {
        self.pkid = self.pkid.checked_add(1).unwrap_or(1);
        self.pkid
    }

    /// Queue a QoS 1 publish on the link; `flush` hands the batch to the router.
    fn queue(&mut self, topic: &str, payload: &[u8], retain: bool) {
        let pkid = self.next_pkid();
        match codec::publish(topic, payload, QoS::AtLeastOnce, retain, pkid) {
            Some(p) => self.tx.buffer().push_back(p),
            None => tracing::error!(topic, "cannot encode a controller publish"),
        }
    }

    /// Hand queued publishes to the router. Blocks only while its queue is full.
    fn flush(&mut self) {
        // `send` pushes one packet and wakes the router for the whole buffer.
        let last = self.tx.buffer().pop_back();
        if let Some(last) = last
            && !matches!(super::block_once(self.tx.send(last)), Some(Ok(_)))
        {
            tracing::error!("the MQTT router stopped taking the controller's messages");
        }
    }

    pub fn publish_status(&mut self, online: bool) {
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
        self.flush();
    }

    /// Republish every station's retained state (boot, or after missing events).
    pub fn publish_all(&mut self) {
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
        self.flush();
    }

    fn on_event(&mut self, event: &Event) {
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
        self.flush();
    }

    fn on_publish(&mut self, topic: &str, payload: &[u8]) {
        match protocol::parse(topic) {
            Some(Topic::StationRequest(station)) => self.on_request(&station, payload),
            Some(Topic::StationAck(station)) => {
                match protocol::decode::<protocol::CommandAck>(payload) {
                    Ok(ack) => {
                        tracing::debug!(%station, id = ack.id, ok = ack.ok, "agent acknowledged a command")
                    }
                    Err(e) => tracing::info!(%station, error = %e, "malformed command ack ignored"),
                }
            }
            Some(Topic::AgentStatus(station)) => {
                match protocol::decode::<protocol::AgentStatus>(payload) {
                    Ok(s) => {
                        tracing::info!(%station, online = s.online, version = ?s.version, "agent status");
                        // The retained state it just received may be hours old; a fresh
                        // copy (same seq, new server_time) lets it count time correctly.
                        if s.online {
                            self.republish(&station);
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

    fn republish(&mut self, station: &StationId) {
        let snap = self.engine.snapshot();
        let now = self.engine.now();
        if let Some(state) = station_state(&snap.state, station, snap.seq, now, &self.policy) {
            self.queue(
                &protocol::station_state(station),
                &protocol::encode(&state),
                true,
            );
            self.flush();
        }
    }

    fn on_request(&mut self, station: &StationId, payload: &[u8]) {
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
        self.flush();
    }
}

/// Mirror engine events into retained states and answer station requests until stopped.
pub async fn run(
    mut ctl: Controller,
    mut events: broadcast::Receiver<Arc<Event>>,
    registry: Arc<Registry>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            ev = events.recv() => match ev {
                Ok(event) => {
                    revoke_if_needed(&registry, &event.body.kind);
                    ctl.on_event(&event);
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "MQTT mirror fell behind the engine; republishing every station");
                    ctl.publish_all();
                }
                Err(broadcast::error::RecvError::Closed) => break,
            },
            n = ctl.rx.next() => match n {
                Ok(Some(Notification::Forward(f))) => {
                    let topic = String::from_utf8_lossy(&f.publish.topic).into_owned();
                    ctl.on_publish(&topic, &f.publish.payload);
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
            _ = stop.changed() => break,
        }
    }
    ctl.publish_status(false);
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
