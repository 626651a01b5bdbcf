//! Clock trust: wall-clock jumps never expire a session early, the outage before a boot
//! follows the venue policy, and every decision is an audited event.

use crate::support::*;
use jiff::{SignedDuration, Timestamp};
use std::time::Duration;
use venued::clock::ManualClock;
use venued::domain::timekeeping::{OutagePolicy, TrustSource};
use venued::domain::{Command, EventKind, SessionId};
use venued::engine::{Engine, EngineConfig};

fn config(outage: OutagePolicy) -> EngineConfig {
    EngineConfig {
        outage,
        ..EngineConfig::default()
    }
}

fn remaining(engine: &Engine, id: SessionId) -> Option<SignedDuration> {
    let snap = engine.snapshot();
    snap.state.sessions.get(&id)?.remaining(engine.now())
}

fn clock_events(engine: &Engine) -> Vec<EventKind> {
    engine
        .store()
        .unwrap()
        .events(0, 10_000)
        .unwrap()
        .into_iter()
        .map(|e| e.body.kind)
        .filter(|k| {
            matches!(
                k,
                EventKind::ClockBooted { .. }
                    | EventKind::ClockCorrected { .. }
                    | EventKind::ClockJumpIgnored { .. }
            )
        })
        .collect()
}

async fn tick(engine: &Engine, clock: &ManualClock, secs: u64) {
    clock.advance(Duration::from_secs(secs));
    engine.sync().await.unwrap();
}

#[tokio::test]
async fn untrusted_wall_clock_jumping_an_hour_ahead_never_expires_early() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(t0(), None);
    let engine = start_engine(dir.path(), &clock, EngineConfig::default());
    add_stations(&engine, &["pc-1"]).await;
    let id = start_session(&engine, "pc-1", 1800).await;
    clock.jump_wall(SignedDuration::from_hours(1));
    engine.sync().await.unwrap();
    assert_eq!(changes(&engine, id), ["started"]);
    assert!(matches!(
        clock_events(&engine).last(),
        Some(EventKind::ClockJumpIgnored { offset, .. }) if *offset == SignedDuration::from_hours(1)
    ));
    tick(&engine, &clock, 1799).await;
    assert!(!changes(&engine, id).contains(&"expired".to_owned()));
    tick(&engine, &clock, 1).await;
    assert_eq!(changes(&engine, id).last().unwrap(), "expired");
    // The same jump is reported once, not every second.
    let ignored = clock_events(&engine)
        .iter()
        .filter(|k| matches!(k, EventKind::ClockJumpIgnored { .. }))
        .count();
    assert_eq!(ignored, 1);
    engine.shutdown().await;
}

#[tokio::test]
async fn trusted_clock_steps_of_an_hour_either_way_keep_every_remaining_second() {
    for step in [
        SignedDuration::from_hours(1),
        SignedDuration::from_hours(-1),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let clock = trusted_clock();
        let engine = start_engine(dir.path(), &clock, EngineConfig::default());
        add_stations(&engine, &["pc-1"]).await;
        let id = start_session(&engine, "pc-1", 1800).await;
        tick(&engine, &clock, 600).await;
        let before = engine.snapshot().state.sessions[&id].ends_at().unwrap();
        clock.jump_wall(step); // NTP steps the clock while synchronised
        engine.sync().await.unwrap();
        assert_eq!(
            remaining(&engine, id),
            Some(SignedDuration::from_mins(20)),
            "step {step:?}"
        );
        let after = engine.snapshot().state.sessions[&id].ends_at().unwrap();
        assert_eq!(
            after.duration_since(before),
            step,
            "ends_at moved by the step, audited"
        );
        assert_eq!(changes(&engine, id), ["started", "shifted"]);
        assert!(matches!(
            clock_events(&engine).last(),
            Some(EventKind::ClockCorrected {
                source: TrustSource::SystemSync,
                ..
            })
        ));
        // Expiry comes after the 20 minutes really left, not before.
        tick(&engine, &clock, 1199).await;
        assert_eq!(changes(&engine, id).last().unwrap(), "warned");
        tick(&engine, &clock, 1).await;
        assert_eq!(changes(&engine, id).last().unwrap(), "expired");
        engine.shutdown().await;
    }
}

/// Runs a 30-minute session for 5 minutes, stops the engine, and returns the dir.
async fn session_then_outage(policy: OutagePolicy) -> (tempfile::TempDir, SessionId) {
    let dir = tempfile::tempdir().unwrap();
    let clock = trusted_clock();
    let engine = start_engine(dir.path(), &clock, config(policy));
    add_stations(&engine, &["pc-1"]).await;
    let id = start_session(&engine, "pc-1", 1800).await;
    tick(&engine, &clock, 300).await;
    engine.shutdown().await;
    (dir, id)
}

#[tokio::test]
async fn boot_with_the_clock_in_the_past_continues_from_the_checkpoint() {
    let (dir, id) = session_then_outage(OutagePolicy::Consume).await;
    // No RTC: the box wakes up in 1970 with nothing to vouch for the time.
    let clock = ManualClock::new(Timestamp::from_second(10).unwrap(), None);
    let engine = start_engine(dir.path(), &clock, config(OutagePolicy::Consume));
    assert_eq!(engine.now(), t0() + SignedDuration::from_mins(5));
    assert_eq!(remaining(&engine, id), Some(SignedDuration::from_mins(25)));
    assert!(engine.snapshot().clock.trusted.is_none());
    assert!(engine.snapshot().clock.outage_pending);
    tick(&engine, &clock, 25 * 60 - 1).await;
    assert!(!changes(&engine, id).contains(&"expired".to_owned()));
    tick(&engine, &clock, 1).await;
    assert_eq!(changes(&engine, id).last().unwrap(), "expired");
    engine.shutdown().await;
}

#[tokio::test]
async fn untrusted_boot_then_ntp_sync_pause_policy_keeps_the_time_customers_had() {
    let (dir, id) = session_then_outage(OutagePolicy::Pause).await;
    let clock = ManualClock::new(Timestamp::from_second(10).unwrap(), None);
    let engine = start_engine(dir.path(), &clock, config(OutagePolicy::Pause));
    tick(&engine, &clock, 60).await; // one minute played before NTP answers
    // NTP syncs: the real time is two hours after the cut.
    let real = t0() + SignedDuration::from_mins(5) + SignedDuration::from_hours(2);
    clock.jump_wall(real.duration_since(clock_wall(&clock)));
    clock.set_trust(Some(TrustSource::SystemSync));
    engine.sync().await.unwrap();
    assert_eq!(remaining(&engine, id), Some(SignedDuration::from_mins(24)));
    assert!(engine.snapshot().clock.trusted.is_some());
    assert!(!engine.snapshot().clock.outage_pending);
    assert!(matches!(
        clock_events(&engine).last(),
        Some(EventKind::ClockCorrected { correction, .. }) if correction.consumed.is_zero()
    ));
    engine.shutdown().await;
}

#[tokio::test]
async fn untrusted_boot_then_ntp_sync_consume_policy_counts_the_outage() {
    let (dir, id) = session_then_outage(OutagePolicy::Consume).await;
    let clock = ManualClock::new(Timestamp::from_second(10).unwrap(), None);
    let engine = start_engine(dir.path(), &clock, config(OutagePolicy::Consume));
    // Ten minutes of outage: the customer had 25 minutes, 15 are left.
    let real = t0() + SignedDuration::from_mins(15);
    clock.jump_wall(real.duration_since(clock_wall(&clock)));
    clock.set_trust(Some(TrustSource::SystemSync));
    engine.sync().await.unwrap();
    assert_eq!(remaining(&engine, id), Some(SignedDuration::from_mins(15)));
    engine.shutdown().await;
}

#[tokio::test]
async fn trusted_boot_after_an_outage_follows_the_policy() {
    for (policy, left) in [(OutagePolicy::Pause, 25), (OutagePolicy::Consume, 5)] {
        let (dir, id) = session_then_outage(policy).await;
        // Twenty minutes later, with a synchronised clock.
        let clock = ManualClock::new(
            t0() + SignedDuration::from_mins(25),
            Some(TrustSource::SystemSync),
        );
        let engine = start_engine(dir.path(), &clock, config(policy));
        assert_eq!(
            remaining(&engine, id),
            Some(SignedDuration::from_mins(left)),
            "{policy:?}"
        );
        let booted = clock_events(&engine)
            .into_iter()
            .rev()
            .find(|k| matches!(k, EventKind::ClockBooted { .. }))
            .unwrap();
        let EventKind::ClockBooted { downtime, .. } = booted else {
            unreachable!()
        };
        assert_eq!(downtime, Some(SignedDuration::from_mins(20)));
        engine.shutdown().await;
    }
}

#[tokio::test]
async fn a_long_outage_under_consume_expires_and_closes_at_boot_never_early() {
    let (dir, id) = session_then_outage(OutagePolicy::Consume).await;
    let clock = ManualClock::new(
        t0() + SignedDuration::from_hours(3),
        Some(TrustSource::SystemSync),
    );
    let engine = start_engine(dir.path(), &clock, config(OutagePolicy::Consume));
    // No stale warning once the time is already up.
    assert_eq!(changes(&engine, id), ["started", "expired", "closed"]);
    assert!(engine.snapshot().state.sessions.is_empty());
    engine.shutdown().await;
}

#[tokio::test]
async fn staff_confirmation_makes_an_untrusted_clock_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(t0(), None);
    let engine = start_engine(dir.path(), &clock, EngineConfig::default());
    add_stations(&engine, &["pc-1"]).await;
    let id = start_session(&engine, "pc-1", 1800).await;
    let real = t0() + SignedDuration::from_mins(7);
    exec(&engine, Command::ConfirmClock { now: real })
        .await
        .unwrap();
    let snap = engine.snapshot();
    assert_eq!(snap.clock.trusted, Some(TrustSource::Staff));
    assert_eq!(remaining(&engine, id), Some(SignedDuration::from_mins(30)));
    assert!(matches!(
        clock_events(&engine).last(),
        Some(EventKind::ClockCorrected {
            source: TrustSource::Staff,
            ..
        })
    ));
    engine.shutdown().await;
}

fn clock_wall(clock: &ManualClock) -> Timestamp {
    use venued::clock::Clock;
    clock.wall()
}
