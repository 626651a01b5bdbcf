//! Property tests of the session rules over random command sequences.

use super::session::SessionPolicy;
use super::{Command, SessionId, StationId, StationKind, VenueState};
use jiff::{SignedDuration, Timestamp};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Step {
    Wait(i64),
    Extend(i64),
    Pause,
    Resume,
    Transfer(usize),
    Stop,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (1i64..900).prop_map(Step::Wait),
        (-60i64..3600).prop_map(Step::Extend),
        Just(Step::Pause),
        Just(Step::Resume),
        (0usize..3).prop_map(Step::Transfer),
        Just(Step::Stop),
    ]
}

fn station(i: usize) -> StationId {
    StationId::parse(&format!("pc-{i}")).unwrap()
}

fn venue(now: Timestamp) -> VenueState {
    let mut v = VenueState::default();
    for i in 0..3 {
        let cmd = Command::AddStation {
            id: station(i),
            name: format!("PC {i}"),
            kind: StationKind::Pc,
            zone: None,
        };
        for e in v.decide(&cmd, now, &SessionPolicy::default()).unwrap() {
            v.apply(&e);
        }
    }
    v
}

fn running(v: &VenueState, id: SessionId) -> bool {
    v.sessions
        .get(&id)
        .is_some_and(|s| matches!(s.phase, super::Phase::Running { .. }))
}

/// Run a random script against one session, as the engine would: timers fire exactly at
/// their deadlines while time passes. Check the invariants after every step.
fn check(start_secs: i64, script: Vec<Step>) -> Result<(), TestCaseError> {
    let policy = SessionPolicy::default();
    let mut now = Timestamp::from_second(1_800_000_000).unwrap();
    let mut v = venue(now);
    let start = Command::StartSession {
        station: station(0),
        duration: Some(SignedDuration::from_secs(start_secs)),
    };
    for e in v.decide(&start, now, &policy).unwrap() {
        v.apply(&e);
    }
    let id = SessionId(1);
    // Play time kept by hand: only running time counts, never paused or grace time.
    let mut played = SignedDuration::ZERO;
    let mut last_ends_at = v.sessions[&id].ends_at();
    for s in script {
        let before = v.sessions.get(&id).cloned();
        let cmd = match s {
            Step::Wait(secs) => {
                let target = now.checked_add(SignedDuration::from_secs(secs)).unwrap();
                loop {
                    let next = v.sessions.get(&id).and_then(|s| s.next_deadline(&policy));
                    let until = next.filter(|t| *t <= target).unwrap_or(target);
                    if running(&v, id) {
                        played += until.duration_since(now);
                    }
                    now = until;
                    for e in v.due(id, now, &policy) {
                        v.apply(&e);
                    }
                    if until == target {
                        break;
                    }
                }
                None
            }
            Step::Extend(secs) => Some(Command::ExtendSession {
                session: id,
                by: SignedDuration::from_secs(secs),
            }),
            Step::Pause => Some(Command::PauseSession { session: id }),
            Step::Resume => Some(Command::ResumeSession { session: id }),
            Step::Transfer(i) => Some(Command::TransferSession {
                session: id,
                to: station(i),
            }),
            Step::Stop => Some(Command::StopSession {
                session: id,
                reason: None,
            }),
        };
        if let Some(c) = &cmd {
            for e in v.decide(c, now, &policy).unwrap_or_default() {
                v.apply(&e);
            }
        }
        let Some(after) = v.sessions.get(&id) else {
            // Gone from memory means ended (stopped or closed after grace).
            prop_assert!(
                matches!(cmd, Some(Command::StopSession { .. })) || cmd.is_none(),
                "session vanished on {cmd:?}"
            );
            return Ok(());
        };
        // Paused and grace time are never counted.
        prop_assert_eq!(after.used(now), played);
        // Remaining is what was bought minus what was played.
        if let (Some(rem), Some(total)) = (after.remaining(now), after.purchased) {
            prop_assert_eq!(rem, (total - played).max(SignedDuration::ZERO));
        }
        // The deadline never moves backwards without an audited correction.
        if let (Some(prev), Some(cur)) = (last_ends_at, after.ends_at()) {
            prop_assert!(
                cur >= prev,
                "ends_at moved back from {prev} to {cur} on {cmd:?}"
            );
        }
        // Transfer keeps the total.
        if let (Some(Command::TransferSession { .. }), Some(b)) = (&cmd, &before) {
            prop_assert_eq!(b.remaining(now), after.remaining(now));
            prop_assert_eq!(b.ends_at(), after.ends_at());
        }
        if after.ends_at().is_some() {
            last_ends_at = after.ends_at();
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn session_time_accounting_holds_for_any_command_sequence(
        start in 60i64..7200,
        script in proptest::collection::vec(step(), 1..40),
    ) {
        check(start, script)?;
    }

    #[test]
    fn a_clock_shift_keeps_remaining_time(start in 60i64..7200, offset in -86_400i64..86_400, wait in 0i64..3600) {
        let policy = SessionPolicy::default();
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let mut v = venue(now);
        let start = Command::StartSession { station: station(1), duration: Some(SignedDuration::from_secs(start)) };
        for e in v.decide(&start, now, &policy).unwrap() { v.apply(&e); }
        let later = now.checked_add(SignedDuration::from_secs(wait)).unwrap();
        let before = v.sessions[&SessionId(1)].remaining(later);
        let off = SignedDuration::from_secs(offset);
        for e in v.shift_all(off) { v.apply(&e); }
        let shifted_now = later.checked_add(off).unwrap();
        prop_assert_eq!(v.sessions[&SessionId(1)].remaining(shifted_now), before);
    }
}
