//! What a PC must do, decided without I/O: `(state, input, now) -> actions`.
//!
//! Time is the agent's own monotonic clock ([`Mono`]), never its wall clock: a deadline
//! from the controller (`ends_at`) is turned into "this many milliseconds after the state
//! arrived" using the controller's `server_time` in the same message, so a PC whose clock
//! is hours off still locks on time. With the controller or the network gone, the last
//! known deadline keeps being enforced; with no session known, the PC stays locked.

use super::overlay::screen::{LockReason, Screen};
use crate::domain::{SessionId, StationId};
use crate::protocol::{
    AgentCommand, CommandAction, PROTOCOL_VERSION, SessionState, StationState, StationStatus,
};
use jiff::Timestamp;
use std::collections::{BTreeSet, VecDeque};

/// Milliseconds on the agent's monotonic clock (since it started).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mono(pub u64);

impl Mono {
    fn after(self, ms: i64) -> Mono {
        Mono(self.0.saturating_add_signed(ms))
    }
}

/// How long after `ends_at` a running session stays unlocked waiting for the controller's
/// grace state. Online that state arrives within milliseconds; offline the PC locks this
/// long after the deadline, well inside the venue's ±5 s promise.
pub const GRACE_WAIT_MS: i64 = 2_000;

/// How long a warning stays on the countdown panel.
pub const WARNING_SHOWN_MS: u64 = 30_000;

/// Command ids remembered, so a resent command is acknowledged again but not redone.
const REMEMBERED_COMMANDS: usize = 64;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Lock,
    Unlock,
    /// "`lead_s` seconds left" (a warning from the session's schedule).
    Warn {
        lead_s: u32,
    },
    ShowMessage(String),
    LogOff,
    Shutdown,
    Restart,
    /// Keep the PC awake (during a session) or let it sleep.
    PreventSleep(bool),
    /// Answer a command on the protocol's `ack` topic.
    Ack {
        id: String,
        ok: bool,
        error: Option<String>,
    },
}

/// Why a state was not taken.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Ignored {
    #[error("state is for station {0}, this PC is another")]
    OtherStation(StationId),
    #[error("state speaks protocol v{0}, this agent v1")]
    OtherVersion(u32),
    #[error("state seq {got} is older than {have}")]
    Stale { got: u64, have: u64 },
    #[error("state says {status:?} without the session it needs")]
    Inconsistent { status: StationStatus },
}

/// The last state taken, with its instants on our monotonic clock.
#[derive(Clone, Debug)]
struct Known {
    seq: u64,
    /// The station's display name.
    name: String,
    status: StationStatus,
    session: Option<SessionId>,
    /// When paid time runs out (None: open-ended, or not running).
    deadline: Option<Mono>,
    grace_until: Option<Mono>,
    /// Time kept while paused, in ms.
    paused_left_ms: Option<i64>,
    /// Warnings still to give, in time order.
    warnings: Vec<(Mono, u32)>,
    /// Offset of our wall clock from the controller's at receipt, in ms (for status).
    clock_offset_ms: i64,
}

#[derive(Debug)]
pub struct Enforcer {
    station: StationId,
    known: Option<Known>,
    /// What we last told the OS: the PC starts locked.
    locked: bool,
    /// Staff locked this session by command; cleared by `unlock` or a new session.
    staff_lock: Option<SessionId>,
    /// (session, lead) of every warning given.
    warned: BTreeSet<(SessionId, u32)>,
    done: VecDeque<String>,
    /// The last staff message (from a state or a command), for the screen.
    message: Option<String>,
    /// The last warning given (lead, when): shown on the countdown for a while.
    warning: Option<(u32, Mono)>,
}

impl Enforcer {
    /// A PC at boot: locked, knowing nothing.
    pub fn new(station: StationId) -> Self {
        Self {
            station,
            known: None,
            locked: true,
            staff_lock: None,
            warned: BTreeSet::new(),
            done: VecDeque::new(),
            message: None,
            warning: None,
        }
    }

    /// Whether the PC is locked now.
    pub fn locked(&self) -> bool {
        self.locked
    }

    /// The agent's wall clock minus the controller's, from the last state (ms).
    pub fn clock_offset_ms(&self) -> Option<i64> {
        self.known.as_ref().map(|k| k.clock_offset_ms)
    }

    /// What the station's screen should show at `now`: the lock page while locked, else
    /// the countdown.
    pub fn screen(&self, now: Mono) -> Screen {
        let message = self.message.clone();
        let Some(k) = &self.known else {
            return Screen::Locked {
                station: self.station.to_string(),
                why: LockReason::Connecting,
                message,
            };
        };
        let station = k.name.clone();
        let left = |until: Option<Mono>| until.map(|u| u.0 as i64 - now.0 as i64);
        if self.locked {
            let why = if self.staff_lock.is_some() && self.staff_lock == k.session {
                LockReason::Staff
            } else if k.status == StationStatus::Paused {
                LockReason::Paused {
                    left_ms: k.paused_left_ms,
                }
            } else {
                LockReason::Free
            };
            return Screen::Locked {
                station,
                why,
                message,
            };
        }
        let grace = k.status == StationStatus::Grace;
        // A warning shows on the countdown for a while (a staff message wins).
        let notice = self.warning.and_then(|(lead, at)| {
            (now.0.saturating_sub(at.0) < WARNING_SHOWN_MS).then(|| {
                format!(
                    "{} left \u{2014} ask staff to extend",
                    crate::domain::time::human(jiff::SignedDuration::from_secs(i64::from(lead)))
                )
            })
        });
        Screen::Countdown {
            station,
            left_ms: left(if grace { k.grace_until } else { k.deadline }).map(|ms| ms.max(0)),
            grace,
            message: message.or(notice),
        }
    }

    /// When `tick` next has something to do (a warning, a deadline).
    pub fn next_wakeup(&self) -> Option<Mono> {
        let k = self.known.as_ref()?;
        let session = k.session?;
        let warning = k
            .warnings
            .iter()
            .find(|(_, lead)| !self.warned.contains(&(session, *lead)))
            .map(|(at, _)| *at);
        let lock_at = match k.status {
            StationStatus::InSession => k.deadline.map(|d| d.after(GRACE_WAIT_MS)),
            StationStatus::Grace => k.grace_until,
            _ => None,
        };
        [warning, lock_at].into_iter().flatten().min()
    }

    /// A retained state from the controller, received at `now`; `wall` is our wall clock
    /// then (only to report the offset).
    pub fn on_state(
        &mut self,
        state: &StationState,
        now: Mono,
        wall: Timestamp,
    ) -> Result<Vec<Action>, Ignored> {
        if state.station != self.station {
            return Err(Ignored::OtherStation(state.station.clone()));
        }
        if state.v != PROTOCOL_VERSION {
            return Err(Ignored::OtherVersion(state.v));
        }
        if let Some(k) = &self.known
            && state.seq < k.seq
        {
            return Err(Ignored::Stale {
                got: state.seq,
                have: k.seq,
            });
        }
        let needs_session = matches!(
            state.status,
            StationStatus::InSession | StationStatus::Grace | StationStatus::Paused
        );
        if needs_session && state.session.is_none() {
            return Err(Ignored::Inconsistent {
                status: state.status,
            });
        }
        // An instant from the controller, as "so long after this state arrived".
        let local =
            |t: Timestamp| now.after(t.duration_since(state.server_time).as_millis() as i64);
        let session = state.session.as_ref();
        let known = Known {
            seq: state.seq,
            name: state.name.clone(),
            status: state.status,
            session: session.map(|s: &SessionState| s.id),
            deadline: session.and_then(|s| s.ends_at).map(local),
            grace_until: session.and_then(|s| s.grace_until).map(local),
            paused_left_ms: session.and_then(|s| s.remaining_ms),
            warnings: session
                .map(|s| s.warnings.iter().map(|w| (local(w.at), w.lead_s)).collect())
                .unwrap_or_default(),
            clock_offset_ms: wall.duration_since(state.server_time).as_millis() as i64,
        };
        if self.staff_lock.is_some() && self.staff_lock != known.session {
            self.staff_lock = None;
        }
        self.known = Some(known);
        let mut actions = Vec::new();
        if let Some(text) = &state.message
            && self.message.as_ref() != Some(text)
        {
            self.message = Some(text.clone());
            actions.push(Action::ShowMessage(text.clone()));
        }
        self.enforce(now, &mut actions);
        Ok(actions)
    }

    /// Time passes: warnings come due, deadlines pass.
    pub fn tick(&mut self, now: Mono) -> Vec<Action> {
        let mut actions = Vec::new();
        self.enforce(now, &mut actions);
        actions
    }

    /// A command from staff. A repeat of one already done is acknowledged again, not
    /// redone.
    pub fn on_command(&mut self, cmd: &AgentCommand, now: Mono) -> Vec<Action> {
        let ack = |ok: bool, error: Option<&str>| Action::Ack {
            id: cmd.id.clone(),
            ok,
            error: error.map(str::to_owned),
        };
        if self.done.contains(&cmd.id) {
            return vec![ack(true, None)];
        }
        let mut actions = Vec::new();
        let session = self.known.as_ref().and_then(|k| k.session);
        let result = match &cmd.action {
            CommandAction::Lock => {
                // With no session the PC is locked anyway.
                self.staff_lock = session;
                Ok(())
            }
            CommandAction::Unlock => {
                if self.session_valid(now) {
                    self.staff_lock = None;
                    Ok(())
                } else {
                    Err("no session to unlock for")
                }
            }
            CommandAction::Message { text } => {
                self.message = Some(text.clone());
                actions.push(Action::ShowMessage(text.clone()));
                Ok(())
            }
            CommandAction::Logout => {
                actions.push(Action::LogOff);
                Ok(())
            }
            CommandAction::Shutdown => {
                actions.push(Action::Shutdown);
                Ok(())
            }
            CommandAction::Restart => {
                actions.push(Action::Restart);
                Ok(())
            }
        };
        self.enforce(now, &mut actions);
        match result {
            Ok(()) => {
                self.remember(&cmd.id);
                actions.push(ack(true, None));
            }
            Err(why) => actions.push(ack(false, Some(why))),
        }
        actions
    }

    fn remember(&mut self, id: &str) {
        if self.done.len() >= REMEMBERED_COMMANDS {
            self.done.pop_front();
        }
        self.done.push_back(id.to_owned());
    }

    /// Does the last known state entitle this PC to be used at `now`?
    fn session_valid(&self, now: Mono) -> bool {
        let Some(k) = &self.known else { return false };
        match k.status {
            StationStatus::InSession => k.deadline.is_none_or(|d| now < d.after(GRACE_WAIT_MS)),
            StationStatus::Grace => k.grace_until.is_some_and(|g| now < g),
            StationStatus::Free | StationStatus::Paused => false,
        }
    }

    fn enforce(&mut self, now: Mono, actions: &mut Vec<Action>) {
        let session = self.known.as_ref().and_then(|k| k.session);
        let usable = self.session_valid(now);
        // Warnings of a running session, each once, and only while it is running.
        if let (true, Some(k), Some(id)) = (usable, &self.known, session) {
            for (at, lead) in &k.warnings {
                if *at <= now && self.warned.insert((id, *lead)) {
                    self.warning = Some((*lead, now));
                    actions.push(Action::Warn { lead_s: *lead });
                }
            }
        }
        let lock = !usable || (self.staff_lock.is_some() && self.staff_lock == session);
        if lock != self.locked {
            self.locked = lock;
            actions.push(if lock { Action::Lock } else { Action::Unlock });
            actions.push(Action::PreventSleep(!lock));
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::protocol::Warning;
    use proptest::prelude::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn sid() -> StationId {
        StationId::parse("pc-01").unwrap()
    }

    /// A state as the controller would send it, with its clock at `server`.
    fn state(seq: u64, status: StationStatus, server: &str, ends: Option<&str>) -> StationState {
        let session = (status != StationStatus::Free).then(|| SessionState {
            id: SessionId(1),
            started_at: ts("2026-11-23T15:00:00Z"),
            ends_at: ends.map(ts),
            remaining_ms: None,
            grace_until: (status == StationStatus::Grace).then(|| ts("2026-11-23T16:01:00Z")),
            warnings: ends
                .map(|e| {
                    vec![
                        Warning {
                            at: ts(e) - jiff::SignedDuration::from_mins(5),
                            lead_s: 300,
                        },
                        Warning {
                            at: ts(e) - jiff::SignedDuration::from_mins(1),
                            lead_s: 60,
                        },
                    ]
                })
                .unwrap_or_default(),
        });
        StationState {
            v: PROTOCOL_VERSION,
            station: sid(),
            name: "PC 01".into(),
            kind: crate::domain::StationKind::Pc,
            seq,
            server_time: ts(server),
            status,
            lock: status.locks(),
            session,
            message: None,
        }
    }

    #[test]
    fn a_skewed_clock_still_locks_on_time() {
        // The PC's wall clock is 10 minutes fast; only server_time matters.
        let wall = ts("2026-11-23T15:10:00Z");
        let mut e = Enforcer::new(sid());
        assert!(e.locked());
        let s = state(
            5,
            StationStatus::InSession,
            "2026-11-23T15:00:00Z",
            Some("2026-11-23T16:00:00Z"),
        );
        let actions = e.on_state(&s, Mono(1_000), wall).unwrap();
        assert_eq!(actions, [Action::Unlock, Action::PreventSleep(true)]);
        assert_eq!(e.clock_offset_ms(), Some(600_000));
        // 55 minutes later on our monotonic clock: the 5-minute warning.
        assert_eq!(
            e.tick(Mono(1_000 + 55 * 60_000)),
            [Action::Warn { lead_s: 300 }]
        );
        assert_eq!(e.tick(Mono(1_000 + 55 * 60_000 + 10)), []);
        assert_eq!(
            e.tick(Mono(1_000 + 59 * 60_000)),
            [Action::Warn { lead_s: 60 }]
        );
        // The controller is gone: at ends_at (+ the grace wait) the PC locks on its own.
        assert_eq!(e.tick(Mono(1_000 + 60 * 60_000)), []);
        assert_eq!(
            e.tick(Mono(1_000 + 60 * 60_000 + GRACE_WAIT_MS as u64)),
            [Action::Lock, Action::PreventSleep(false)]
        );
    }

    #[test]
    fn a_warning_shows_on_the_countdown_for_a_while() {
        let mut e = Enforcer::new(sid());
        let s = state(
            1,
            StationStatus::InSession,
            "2026-11-23T15:00:00Z",
            Some("2026-11-23T16:00:00Z"),
        );
        e.on_state(&s, Mono(0), ts("2026-11-23T15:00:00Z")).unwrap();
        let message = |e: &Enforcer, at: u64| match e.screen(Mono(at)) {
            Screen::Countdown { message, .. } => message,
            other => panic!("not a countdown: {other:?}"),
        };
        assert_eq!(message(&e, 1_000), None);
        let five_left = 55 * 60_000;
        assert_eq!(e.tick(Mono(five_left)), [Action::Warn { lead_s: 300 }]);
        assert_eq!(
            message(&e, five_left + 1_000).as_deref(),
            Some("5m left \u{2014} ask staff to extend")
        );
        assert_eq!(message(&e, five_left + WARNING_SHOWN_MS), None);
    }

    #[test]
    fn bad_states_are_ignored_and_never_unlock() {
        let mut e = Enforcer::new(sid());
        let now = Mono(0);
        let wall = ts("2026-11-23T15:00:00Z");
        let mut other = state(
            1,
            StationStatus::InSession,
            "2026-11-23T15:00:00Z",
            Some("2026-11-23T16:00:00Z"),
        );
        other.station = StationId::parse("pc-02").unwrap();
        assert!(matches!(
            e.on_state(&other, now, wall),
            Err(Ignored::OtherStation(_))
        ));
        let mut v2 = state(
            1,
            StationStatus::InSession,
            "2026-11-23T15:00:00Z",
            Some("2026-11-23T16:00:00Z"),
        );
        v2.v = 2;
        assert!(matches!(
            e.on_state(&v2, now, wall),
            Err(Ignored::OtherVersion(2))
        ));
        let mut hollow = state(1, StationStatus::InSession, "2026-11-23T15:00:00Z", None);
        hollow.session = None;
        assert!(e.on_state(&hollow, now, wall).is_err());
        assert!(e.locked());
        let ok = state(
            9,
            StationStatus::InSession,
            "2026-11-23T15:00:00Z",
            Some("2026-11-23T16:00:00Z"),
        );
        e.on_state(&ok, now, wall).unwrap();
        let stale = state(3, StationStatus::Free, "2026-11-23T15:00:00Z", None);
        assert!(matches!(
            e.on_state(&stale, now, wall),
            Err(Ignored::Stale { .. })
        ));
        assert!(!e.locked());
    }

    #[test]
    fn commands_are_acknowledged_once_done_and_unlock_needs_a_session() {
        let mut e = Enforcer::new(sid());
        let cmd = |id: &str, action| AgentCommand {
            id: id.into(),
            issued_at: ts("2026-11-23T15:00:00Z"),
            action,
        };
        let unlock = e.on_command(&cmd("c-1", CommandAction::Unlock), Mono(0));
        assert_eq!(
            unlock,
            [Action::Ack {
                id: "c-1".into(),
                ok: false,
                error: Some("no session to unlock for".into())
            }]
        );
        assert!(e.locked());
        let s = state(
            1,
            StationStatus::InSession,
            "2026-11-23T15:00:00Z",
            Some("2026-11-23T16:00:00Z"),
        );
        e.on_state(&s, Mono(0), ts("2026-11-23T15:00:00Z")).unwrap();
        let lock = e.on_command(&cmd("c-2", CommandAction::Lock), Mono(10));
        assert_eq!(lock[0], Action::Lock);
        // Resent (the ack was lost): acknowledged again, nothing redone.
        let again = e.on_command(&cmd("c-2", CommandAction::Lock), Mono(20));
        assert_eq!(again.len(), 1);
        let unlocked = e.on_command(&cmd("c-3", CommandAction::Unlock), Mono(30));
        assert_eq!(unlocked[0], Action::Unlock);
    }

    /// Random inputs: states (any status, any seq, deadlines around now), commands and
    /// ticks, in any order.
    #[derive(Clone, Debug)]
    enum Input {
        State {
            seq: u64,
            status: u8,
            ends_in_s: i64,
            grace_in_s: i64,
            server_skew_s: i64,
        },
        Lock,
        Unlock,
        Tick(u64),
    }

    fn any_input() -> impl Strategy<Value = Input> {
        prop_oneof![
            (0u64..6, 0u8..4, -120i64..600, 0i64..120, -900i64..900).prop_map(
                |(seq, status, ends_in_s, grace_in_s, server_skew_s)| Input::State {
                    seq,
                    status,
                    ends_in_s,
                    grace_in_s,
                    server_skew_s
                }
            ),
            Just(Input::Lock),
            Just(Input::Unlock),
            (0u64..400_000).prop_map(Input::Tick),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        /// Never unlocked without a valid session; never locked early while one is
        /// valid and staff did not lock it; every warning at most once.
        #[test]
        fn enforcement_invariants(inputs in prop::collection::vec(any_input(), 1..40)) {
            let mut e = Enforcer::new(sid());
            let mut now = Mono(0);
            let base = ts("2026-11-23T15:00:00Z");
            // Ground truth in our own monotonic terms.
            let mut truth: Option<(StationStatus, Option<Mono>, Option<Mono>)> = None;
            let mut staff_locked = false;
            let mut warnings = Vec::new();
            for (n, input) in inputs.into_iter().enumerate() {
                let actions = match input {
                    Input::State { seq, status, ends_in_s, grace_in_s, server_skew_s } => {
                        let status = [StationStatus::Free, StationStatus::InSession, StationStatus::Paused, StationStatus::Grace][status as usize];
                        // The controller's clock: anything; only differences matter.
                        let server = base + jiff::SignedDuration::from_secs(server_skew_s);
                        let mut s = state(seq, status, "2026-11-23T15:00:00Z", None);
                        s.server_time = server;
                        if let Some(sess) = &mut s.session {
                            let ends = server + jiff::SignedDuration::from_secs(ends_in_s);
                            sess.ends_at = (status == StationStatus::InSession).then_some(ends);
                            sess.grace_until = (status == StationStatus::Grace).then(|| server + jiff::SignedDuration::from_secs(grace_in_s));
                            sess.warnings = if status == StationStatus::InSession {
                                vec![Warning { at: ends - jiff::SignedDuration::from_secs(60), lead_s: 60 }]
                            } else {
                                Vec::new()
                            };
                        }
                        match e.on_state(&s, now, base) {
                            Ok(a) => {
                                let ms = |secs: i64| now.after(secs * 1000);
                                truth = Some((
                                    status,
                                    (status == StationStatus::InSession).then(|| ms(ends_in_s)),
                                    (status == StationStatus::Grace).then(|| ms(grace_in_s)),
                                ));
                                a
                            }
                            Err(_) => Vec::new(),
                        }
                    }
                    Input::Lock => {
                        // Staff lock a session; with none known there is nothing to hold.
                        staff_locked = truth.is_some_and(|(s, _, _)| s != StationStatus::Free);
                        e.on_command(&AgentCommand { id: format!("l{n}"), issued_at: base, action: CommandAction::Lock }, now)
                    }
                    Input::Unlock => {
                        let a = e.on_command(&AgentCommand { id: format!("u{n}"), issued_at: base, action: CommandAction::Unlock }, now);
                        if a.iter().any(|x| matches!(x, Action::Ack { ok: true, .. })) {
                            staff_locked = false;
                        }
                        a
                    }
                    Input::Tick(dt) => {
                        now = Mono(now.0 + dt);
                        e.tick(now)
                    }
                };
                for a in &actions {
                    if let Action::Warn { lead_s } = a {
                        warnings.push(*lead_s);
                    }
                }
                let valid = match truth {
                    Some((StationStatus::InSession, deadline, _)) => {
                        deadline.is_none_or(|d| now < d.after(GRACE_WAIT_MS))
                    }
                    Some((StationStatus::Grace, _, until)) => until.is_some_and(|g| now < g),
                    _ => false,
                };
                if !valid {
                    prop_assert!(e.locked(), "unlocked without a valid session at {now:?}: {truth:?}");
                }
                if valid && !staff_locked {
                    prop_assert!(!e.locked(), "locked early at {now:?}: {truth:?}");
                }
            }
            // One session id throughout: each lead at most once.
            prop_assert!(warnings.iter().filter(|l| **l == 60).count() <= 1);
        }
    }
}
