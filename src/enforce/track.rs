//! One console station as the reconciler tracks it, without I/O: where its session is,
//! what its devices last reported, which actions are due, and which reports are alerts.
//!
//! The loop in `super` feeds it the engine's state, device reports and action results,
//! and runs the [`Op`]s it returns. Keeping the decisions here makes them testable with
//! plain values and instants.

use crate::domain::device::Enforcement;
use crate::domain::enforcement::{AlertKind, AutoResponse, DeviceAction};
use crate::domain::ladder::{self, Progress, Reading, Situation, Want};
use crate::domain::session::{Phase, Session};
use jiff::Timestamp;
use std::collections::HashSet;
use std::time::Duration;
use tokio::time::Instant;

/// Where a station is for enforcement: the ladder's view, or idle (no session and no
/// ending remembered, as after a restart).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    Idle,
    Ladder(Situation),
}

impl Stage {
    /// Whether a session occupies the station (paid time runs or is paused).
    pub fn in_session(self) -> bool {
        matches!(self, Stage::Ladder(Situation::Playing | Situation::Paused))
    }
}

/// A device report folded into the track: any field may be missing.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Report {
    pub online: Option<bool>,
    pub relay: Option<bool>,
    pub watts: Option<f64>,
    /// Who switched last, in the firmware's words.
    pub source: Option<String>,
}

/// What the loop must do for a station now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Relay { on: bool },
    Heartbeat,
    Network { blocked: bool },
    Standby,
}

impl Op {
    pub fn action(self) -> DeviceAction {
        match self {
            Op::Relay { on: true } => DeviceAction::PowerOn,
            Op::Relay { on: false } => DeviceAction::PowerOff,
            Op::Heartbeat => DeviceAction::Heartbeat,
            Op::Network { blocked: true } => DeviceAction::Block,
            Op::Network { blocked: false } => DeviceAction::Unblock,
            Op::Standby => DeviceAction::Standby,
        }
    }

    fn lane(self) -> Lane {
        match self {
            Op::Relay { .. } | Op::Heartbeat => Lane::Relay,
            Op::Network { .. } => Lane::Network,
            Op::Standby => Lane::Standby,
        }
    }
}

/// Actions on one device run one at a time, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Lane {
    Relay,
    Network,
    Standby,
}

/// An alert to record, with what is done about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Alert {
    pub kind: AlertKind,
    pub detail: String,
    pub response: AutoResponse,
}

/// Retry and failure bookkeeping of one lane.
#[derive(Clone, Debug, Default)]
struct LaneState {
    in_flight: Option<Op>,
    failures: u32,
    retry_at: Option<Instant>,
}

/// How the reconciler's timings are set (from `[consoles]`).
#[derive(Clone, Debug)]
pub struct Timing {
    pub retry_min: Duration,
    pub retry_max: Duration,
    pub failsafe: Duration,
}

impl Timing {
    /// Heartbeats come three times per fail-safe period: two may be lost.
    pub fn heartbeat_every(&self) -> Duration {
        self.failsafe / 3
    }

    fn backoff(&self, failures: u32) -> Duration {
        let factor = 1u32 << failures.saturating_sub(1).min(16);
        self.retry_min.saturating_mul(factor).min(self.retry_max)
    }
}

/// Failures in a row after which a device counts as failing (an alert).
const FAILING_AFTER: u32 = 3;
/// Status polls in a row that reach no plug before it counts as offline.
pub const UNREACHABLE_POLLS: u32 = 3;

/// One station under enforcement.
#[derive(Debug)]
pub struct Track {
    pub enforcement: Enforcement,
    pub stage: Stage,
    /// When the current ending began (paid time ran out, or staff stopped).
    ending: Option<Timestamp>,
    pub progress: Progress,
    pub reading: Option<Reading>,
    /// The relay as the plug last reported or confirmed it.
    pub relay: Option<bool>,
    /// Whether the console's router entry is known present (`None`: unknown).
    pub blocked: Option<bool>,
    pub online: Option<bool>,
    last_heartbeat: Option<Instant>,
    lanes: [LaneState; 3],
    /// Alerts raised and not yet over (one record per episode, not per report).
    open: HashSet<AlertKind>,
    /// What an auto-response holds the relay or the network at, until the stage changes.
    hold_relay: Option<bool>,
    hold_block: bool,
    standby_alerted: bool,
    /// Count relay and network actions started and finished: a poll that overlapped
    /// one may show the device from before it, which is no tamper.
    relay_epoch: u64,
    network_epoch: u64,
    failed_polls: u32,
}

impl Track {
    pub fn new(enforcement: Enforcement) -> Self {
        Self {
            enforcement,
            stage: Stage::Idle,
            ending: None,
            progress: Progress::default(),
            reading: None,
            relay: None,
            blocked: None,
            online: None,
            last_heartbeat: None,
            lanes: Default::default(),
            open: HashSet::new(),
            hold_relay: None,
            hold_block: false,
            standby_alerted: false,
            relay_epoch: 0,
            network_epoch: 0,
            failed_polls: 0,
        }
    }

    fn lane(&mut self, lane: Lane) -> &mut LaneState {
        &mut self.lanes[lane as usize]
    }

    /// Follow the engine: the station's session (if any) at `now`. A new session resets
    /// the ladder; the end of one starts it.
    pub fn follow(&mut self, session: Option<&Session>, now: Timestamp) {
        let stage = match session.map(|s| &s.phase) {
            Some(Phase::Running { .. }) => Stage::Ladder(Situation::Playing),
            Some(Phase::Paused { .. }) => Stage::Ladder(Situation::Paused),
            Some(Phase::Grace { expired_at, .. }) => {
                self.ending = Some(*expired_at);
                Stage::Ladder(Situation::Ended {
                    at: *expired_at,
                    grace_over: false,
                })
            }
            Some(Phase::Ended { at, .. }) => {
                let at = *self.ending.get_or_insert(*at);
                Stage::Ladder(Situation::Ended {
                    at,
                    grace_over: true,
                })
            }
            None => match (self.stage, self.ending) {
                (_, Some(at)) => Stage::Ladder(Situation::Ended {
                    at,
                    grace_over: true,
                }),
                // Staff stopped a running or paused session: the ladder starts now.
                (Stage::Ladder(Situation::Playing | Situation::Paused), None) => {
                    self.ending = Some(now);
                    Stage::Ladder(Situation::Ended {
                        at: now,
                        grace_over: true,
                    })
                }
                _ => Stage::Idle,
            },
        };
        if stage.in_session() {
            if !self.stage.in_session() {
                // A new session (or a resumed one after a restart): the ladder is over.
                self.progress = Progress::default();
                self.standby_alerted = false;
                self.open.remove(&AlertKind::PowerWithoutSession);
            }
            self.ending = None;
        }
        if stage != self.stage {
            self.hold_relay = None;
            self.hold_block = false;
        }
        self.stage = stage;
    }

    /// What the ladder wants at `now`.
    pub fn want(&self, now: Timestamp) -> Want {
        let has_standby =
            self.enforcement.standby.is_some() || self.enforcement.standby_command.is_some();
        let mut want = match self.stage {
            Stage::Idle => Want {
                relay: None,
                blocked: true,
                standby: false,
            },
            Stage::Ladder(s) => ladder::want(
                &self.enforcement.ladder,
                s,
                &self.progress,
                self.reading.as_ref(),
                has_standby,
                now,
            ),
        };
        if let Some(on) = self.hold_relay {
            want.relay = Some(on);
        }
        want.blocked |= self.hold_block;
        want
    }

    /// When the ladder next changes by itself.
    pub fn next_step(&self, now: Timestamp) -> Option<Timestamp> {
        match self.stage {
            Stage::Idle => None,
            Stage::Ladder(s) => ladder::next_step(&self.enforcement.ladder, s, &self.progress, now),
        }
    }

    /// The actions due now (each lane runs one at a time; failed ones wait their back-off).
    pub fn due(&mut self, now: Timestamp, mono: Instant, timing: &Timing) -> Vec<Op> {
        let want = self.want(now);
        let mut ops = Vec::new();
        if self.enforcement.plug.is_some() {
            match want.relay {
                Some(on) if self.relay != Some(on) => ops.push(Op::Relay { on }),
                // Powered and meant to stay so: keep the plug's own timer from running
                // out while venued is alive. An idle station gets none: whatever
                // powered it, its timer (if armed) may run out.
                _ if self.relay == Some(true)
                    && self.stage != Stage::Idle
                    && self.hold_relay.is_none()
                    && want.relay != Some(false)
                    && self
                        .last_heartbeat
                        .is_none_or(|t| mono >= t + timing.heartbeat_every()) =>
                {
                    ops.push(Op::Heartbeat);
                }
                _ => {}
            }
        }
        if self.enforcement.network.is_some() && self.blocked != Some(want.blocked) {
            ops.push(Op::Network {
                blocked: want.blocked,
            });
        }
        if want.standby {
            ops.push(Op::Standby);
        }
        ops.retain(|op| {
            let lane = &self.lanes[op.lane() as usize];
            lane.in_flight.is_none() && lane.retry_at.is_none_or(|t| mono >= t)
        });
        for op in &ops {
            self.lane(op.lane()).in_flight = Some(*op);
            self.bump(op.lane());
        }
        ops
    }

    /// The earliest instant a lane waiting on back-off, or the heartbeat, is due.
    pub fn next_retry(&self, timing: &Timing) -> Option<Instant> {
        let retries = self.lanes.iter().filter_map(|l| l.retry_at);
        let heartbeat = (self.relay == Some(true))
            .then(|| self.last_heartbeat.map(|t| t + timing.heartbeat_every()))
            .flatten();
        retries.chain(heartbeat).min()
    }

    /// An action finished. Returns the back-off before a retry (on failure) and an
    /// alert when the device has now failed too often in a row.
    pub fn finished(
        &mut self,
        op: Op,
        result: Result<Option<Report>, String>,
        now: Timestamp,
        mono: Instant,
        timing: &Timing,
    ) -> (Option<Duration>, Option<Alert>) {
        self.bump(op.lane());
        let lane = self.lane(op.lane());
        lane.in_flight = None;
        match result {
            Ok(report) => {
                lane.failures = 0;
                lane.retry_at = None;
                self.open.remove(&AlertKind::DeviceFailing);
                match op {
                    Op::Relay { on } => {
                        self.relay = Some(on);
                        self.last_heartbeat = Some(mono);
                    }
                    Op::Heartbeat => self.last_heartbeat = Some(mono),
                    Op::Network { blocked } => self.blocked = Some(blocked),
                    Op::Standby => self.progress.standby_sent_at = Some(now),
                }
                if let Some(r) = report {
                    // Our own switch: not a hand switch.
                    let r = Report { source: None, ..r };
                    self.note_reading(&r, now);
                }
                (None, None)
            }
            Err(error) => {
                lane.failures += 1;
                let failures = lane.failures;
                let wait = timing.backoff(failures);
                lane.retry_at = Some(mono + wait);
                if op == Op::Heartbeat {
                    // Retry soon, but a failed heartbeat says nothing about the relay.
                    self.last_heartbeat = Some(mono);
                }
                let alert = (failures >= FAILING_AFTER
                    && self.open.insert(AlertKind::DeviceFailing))
                .then(|| Alert {
                    kind: AlertKind::DeviceFailing,
                    detail: format!("{} failed {failures} times in a row: {error}", op.action()),
                    response: AutoResponse::Alert,
                });
                (Some(wait), alert)
            }
        }
    }

    fn note_reading(&mut self, r: &Report, now: Timestamp) {
        if let Some(w) = r.watts {
            self.reading = Some(Reading { watts: w, at: now });
        }
        if let Some(on) = r.online {
            self.online = Some(on);
        }
    }

    fn bump(&mut self, lane: Lane) {
        match lane {
            Lane::Relay => self.relay_epoch += 1,
            Lane::Network => self.network_epoch += 1,
            Lane::Standby => {}
        }
    }

    /// Where relay actions are: give it back with a poll's report to [`Track::polled`].
    pub fn relay_epoch(&self) -> u64 {
        self.relay_epoch
    }

    /// Where network actions are: give it back with an entry check's answer to
    /// [`Track::entry_missing`].
    pub fn network_epoch(&self) -> u64 {
        self.network_epoch
    }

    /// A polled report, taken when the relay lane was at `epoch`: a relay action since
    /// makes its relay reading stale, so that part is dropped.
    pub fn polled(
        &mut self,
        mut r: Report,
        epoch: u64,
        now: Timestamp,
        responses: &crate::config::ResponsesConfig,
    ) -> Vec<Alert> {
        self.failed_polls = 0;
        if epoch != self.relay_epoch {
            r.relay = None;
        }
        self.report(&r, now, responses)
    }

    /// A report from the plug (pushed or polled). Returns the alerts it raises; auto
    /// responses are applied to the track (the next `due` acts on them).
    pub fn report(
        &mut self,
        r: &Report,
        now: Timestamp,
        responses: &crate::config::ResponsesConfig,
    ) -> Vec<Alert> {
        let mut alerts = Vec::new();
        let relay_busy = self.lanes[Lane::Relay as usize].in_flight.is_some();
        self.note_reading(r, now);
        let threshold = f64::from(self.enforcement.ladder.standby_below_w);

        // Standby confirmed: the ladder stops before the relay.
        if let (Some(sent), Some(reading)) = (self.progress.standby_sent_at, self.reading)
            && !self.progress.standby_confirmed
            && ladder::confirms_standby(&self.enforcement.ladder, sent, &reading)
        {
            self.progress.standby_confirmed = true;
        }

        match r.online {
            Some(false) if self.stage.in_session() && self.open.insert(AlertKind::PlugOffline) => {
                let response = responses.plug_offline;
                if response == AutoResponse::Block {
                    self.hold_block = true;
                }
                alerts.push(Alert {
                    kind: AlertKind::PlugOffline,
                    detail: "the plug went offline during a session".into(),
                    response,
                });
            }
            Some(true) => {
                self.open.remove(&AlertKind::PlugOffline);
            }
            _ => {}
        }

        if let Some(on) = r.relay {
            let before = self.relay.replace(on);
            if before.is_some_and(|b| b != on) && !relay_busy {
                let response = responses.relay_switched_by_hand;
                let by = r.source.as_deref().unwrap_or("unknown");
                let state = if on { "on" } else { "off" };
                let detail = match self.stage {
                    Stage::Idle | Stage::Ladder(Situation::Ended { .. }) => {
                        format!("relay switched {state} ({by}) with no session")
                    }
                    _ => format!("relay switched {state} ({by}) during a session"),
                };
                self.hold_relay = if response == AutoResponse::Restore {
                    // The ladder's own want wins where it has one; otherwise back to
                    // what the relay was before.
                    let held = self.hold_relay.take();
                    let ladder = self.want(now).relay;
                    self.hold_relay = held;
                    if ladder.is_some() { None } else { before }
                } else {
                    // Left as found until the station's state changes.
                    Some(on)
                };
                alerts.push(Alert {
                    kind: AlertKind::RelaySwitchedByHand,
                    detail,
                    response,
                });
            }
        }

        // Power with no session: once per episode (it must drop below the threshold
        // before it is raised again). After a confirmed standby the console woke up.
        let after_session = match self.stage {
            Stage::Idle => true,
            Stage::Ladder(Situation::Ended { .. }) => self.progress.standby_confirmed,
            _ => false,
        };
        if let Some(reading) = self.reading.filter(|_| r.watts.is_some()) {
            if reading.watts < threshold {
                self.open.remove(&AlertKind::PowerWithoutSession);
            } else if after_session && self.open.insert(AlertKind::PowerWithoutSession) {
                let response = responses.power_without_session;
                if response == AutoResponse::PowerOff {
                    self.hold_relay = Some(false);
                }
                alerts.push(Alert {
                    kind: AlertKind::PowerWithoutSession,
                    detail: format!(
                        "{:.0} W drawn with no session (standby threshold {threshold:.0} W)",
                        reading.watts
                    ),
                    response,
                });
            }
        }
        alerts
    }

    /// A check begun at network `epoch` found the router entry missing while it should
    /// be there (a block or unblock since makes the answer stale: ignored).
    pub fn entry_missing(
        &mut self,
        epoch: u64,
        responses: &crate::config::ResponsesConfig,
    ) -> Option<Alert> {
        if self.blocked != Some(true) || epoch != self.network_epoch {
            return None;
        }
        let response = responses.router_entry_removed;
        if response == AutoResponse::Restore {
            // Unknown again: the next `due` re-adds it.
            self.blocked = None;
        } else {
            self.blocked = Some(false);
        }
        Some(Alert {
            kind: AlertKind::RouterEntryRemoved,
            detail: "the console's entry vanished from the router's blocked list".into(),
            response,
        })
    }

    /// A status poll failed to reach the plug; [`UNREACHABLE_POLLS`] in a row count as
    /// the plug being offline (one lost answer on a busy Wi-Fi is not).
    pub fn unreachable(
        &mut self,
        responses: &crate::config::ResponsesConfig,
        now: Timestamp,
    ) -> Vec<Alert> {
        self.failed_polls += 1;
        if self.failed_polls < UNREACHABLE_POLLS {
            return Vec::new();
        }
        self.report(
            &Report {
                online: Some(false),
                ..Report::default()
            },
            now,
            responses,
        )
    }

    /// Standby went unconfirmed past its window: an alert, once per ending.
    pub fn standby_overdue(&mut self, now: Timestamp) -> Option<Alert> {
        let sent = self.progress.standby_sent_at?;
        let window = crate::domain::time::add(
            sent,
            jiff::SignedDuration::from_millis(
                i64::try_from(self.enforcement.ladder.standby_confirm_ms).unwrap_or(i64::MAX),
            ),
        );
        if self.progress.standby_confirmed || self.standby_alerted || now < window {
            return None;
        }
        self.standby_alerted = true;
        let seen = match self.reading {
            Some(r) => format!("last reading {:.0} W", r.watts),
            None => "no power reading".into(),
        };
        Some(Alert {
            kind: AlertKind::StandbyNotConfirmed,
            detail: format!("standby sent, console still drawing power ({seen})"),
            response: if self.enforcement.ladder.allow_cut {
                AutoResponse::PowerOff
            } else {
                AutoResponse::Alert
            },
        })
    }

    /// When `standby_overdue` can next fire.
    pub fn standby_window_end(&self) -> Option<Timestamp> {
        let sent = self.progress.standby_sent_at?;
        (!self.progress.standby_confirmed && !self.standby_alerted).then(|| {
            crate::domain::time::add(
                sent,
                jiff::SignedDuration::from_millis(
                    i64::try_from(self.enforcement.ladder.standby_confirm_ms).unwrap_or(i64::MAX),
                ),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::config::ResponsesConfig;
    use crate::domain::device::{DeviceName, Ladder};

    fn enforced() -> Enforcement {
        Enforcement {
            plug: Some(DeviceName::parse("plug").unwrap()),
            network: None,
            standby: None,
            standby_command: None,
            ladder: Ladder::default(),
        }
    }

    fn ts() -> Timestamp {
        "2026-11-23T18:00:00Z".parse().unwrap()
    }

    fn relay(on: bool, source: &str) -> Report {
        Report {
            online: Some(true),
            relay: Some(on),
            watts: Some(0.0),
            source: Some(source.into()),
        }
    }

    #[test]
    fn a_hand_switch_on_an_idle_station_is_one_alert_and_restore_switches_back() {
        let mut t = Track::new(enforced());
        let r = ResponsesConfig::default();
        t.follow(None, ts());
        assert!(t.polled(relay(false, "init"), 0, ts(), &r).is_empty());
        let alerts = t.polled(relay(true, "button"), 0, ts(), &r);
        assert_eq!(alerts.len(), 1, "{alerts:?}");
        assert_eq!(alerts[0].kind, AlertKind::RelaySwitchedByHand);
        assert_eq!(alerts[0].response, AutoResponse::Restore);
        let timing = Timing {
            retry_min: Duration::from_millis(10),
            retry_max: Duration::from_millis(100),
            failsafe: Duration::from_secs(30),
        };
        t.follow(None, ts());
        assert_eq!(
            t.due(ts(), Instant::now(), &timing),
            [Op::Relay { on: false }]
        );
        // The same reading again is no new alert.
        assert!(
            t.polled(relay(true, "button"), t.relay_epoch(), ts(), &r)
                .is_empty()
        );
    }

    #[test]
    fn an_entry_check_overlapping_our_own_unblock_is_no_tamper() {
        let mut e = enforced();
        e.network = Some(crate::domain::device::NetworkBlock {
            router: DeviceName::parse("router").unwrap(),
            address: "192.168.88.7".parse().unwrap(),
        });
        let mut t = Track::new(e);
        let r = ResponsesConfig::default();
        let timing = Timing {
            retry_min: Duration::from_millis(10),
            retry_max: Duration::from_millis(100),
            failsafe: Duration::from_secs(30),
        };
        let now = Instant::now();
        t.follow(None, ts());
        let ops = t.due(ts(), now, &timing);
        assert!(ops.contains(&Op::Network { blocked: true }), "{ops:?}");
        t.finished(Op::Network { blocked: true }, Ok(None), ts(), now, &timing);
        // A check begins; meanwhile staff start a session and venued unblocks.
        let check = t.network_epoch();
        let session = crate::domain::session::Session {
            id: crate::domain::SessionId(1),
            station: crate::domain::StationId::parse("ps5").unwrap(),
            started_at: ts(),
            purchased: Some(jiff::SignedDuration::from_mins(30)),
            used_before: jiff::SignedDuration::ZERO,
            warned: None,
            phase: Phase::Running { since: ts() },
        };
        t.follow(Some(&session), ts());
        assert!(
            t.due(ts(), now, &timing)
                .contains(&Op::Network { blocked: false })
        );
        // The check answers "missing" while the unblock is in flight: stale.
        assert_eq!(t.entry_missing(check, &r), None);
        // A fresh check that finds it missing while it should be there is tamper.
        t.finished(Op::Network { blocked: false }, Ok(None), ts(), now, &timing);
        t.follow(None, ts());
        let _ = t.due(ts(), now, &timing);
        t.finished(Op::Network { blocked: true }, Ok(None), ts(), now, &timing);
        let alert = t.entry_missing(t.network_epoch(), &r).unwrap();
        assert_eq!(alert.kind, AlertKind::RouterEntryRemoved);
        assert_eq!(t.blocked, None, "restore: re-added by the next pass");
    }

    #[test]
    fn power_with_no_session_is_one_alert_per_episode_and_power_off_holds_the_relay_off() {
        let mut t = Track::new(enforced());
        let r = ResponsesConfig {
            power_without_session: AutoResponse::PowerOff,
            ..ResponsesConfig::default()
        };
        t.follow(None, ts());
        let drawing = |w: f64| Report {
            online: Some(true),
            relay: Some(true),
            watts: Some(w),
            source: None,
        };
        let alerts = t.polled(drawing(120.0), 0, ts(), &r);
        assert_eq!(alerts.len(), 1, "{alerts:?}");
        assert_eq!(alerts[0].kind, AlertKind::PowerWithoutSession);
        assert_eq!(alerts[0].response, AutoResponse::PowerOff);
        assert!(
            t.polled(drawing(118.0), 0, ts(), &r).is_empty(),
            "same episode"
        );
        let timing = Timing {
            retry_min: Duration::from_millis(10),
            retry_max: Duration::from_millis(100),
            failsafe: Duration::from_secs(30),
        };
        assert_eq!(
            t.due(ts(), Instant::now(), &timing),
            [Op::Relay { on: false }]
        );
        // Below the threshold ends the episode; drawing again is a new one.
        t.finished(
            Op::Relay { on: false },
            Ok(None),
            ts(),
            Instant::now(),
            &timing,
        );
        let off = Report {
            relay: Some(false),
            watts: Some(0.0),
            ..drawing(0.0)
        };
        assert!(t.polled(off, t.relay_epoch(), ts(), &r).is_empty());
        let again = t.polled(drawing(90.0), t.relay_epoch(), ts(), &r);
        let kinds: Vec<AlertKind> = again.iter().map(|a| a.kind).collect();
        assert_eq!(
            kinds,
            [
                AlertKind::RelaySwitchedByHand,
                AlertKind::PowerWithoutSession
            ]
        );
        // A session running: drawing power is what it is for.
        let mut playing = Track::new(enforced());
        let session = crate::domain::session::Session {
            id: crate::domain::SessionId(1),
            station: crate::domain::StationId::parse("ps5").unwrap(),
            started_at: ts(),
            purchased: Some(jiff::SignedDuration::from_mins(30)),
            used_before: jiff::SignedDuration::ZERO,
            warned: None,
            phase: Phase::Running { since: ts() },
        };
        playing.follow(Some(&session), ts());
        assert!(playing.polled(drawing(150.0), 0, ts(), &r).is_empty());
    }
}
