//! The deadline scheduler: warnings, expiry and grace, exact on a manual clock, and
//! within the seeds' ±5 s on the real clock.

use crate::support::*;
use jiff::SignedDuration;
use std::sync::Arc;
use std::time::Duration;
use venued::clock::{SystemClock, TrustMode};
use venued::domain::{Command, EventKind, Phase, SessionChange};
use venued::engine::{Engine, EngineConfig};
use venued::store::{StoreLocation, StoreOptions};

fn mins(m: u64) -> Duration {
    Duration::from_secs(m * 60)
}

/// Advance the clock and let the writer run one iteration.
async fn advance(engine: &Engine, clock: &venued::clock::ManualClock, d: Duration) {
    clock.advance(d);
    engine.sync().await.unwrap();
}

#[tokio::test]
async fn warnings_expiry_and_grace_fire_exactly_at_their_deadlines() {
    let dir = tempfile::tempdir().unwrap();
    let clock = trusted_clock();
    let engine = start_engine(dir.path(), &clock, EngineConfig::default());
    add_stations(&engine, &["pc-1"]).await;
    let id = start_session(&engine, "pc-1", 600).await;

    advance(&engine, &clock, Duration::from_secs(4 * 60 + 59)).await;
    assert_eq!(changes(&engine, id), ["started"]);
    advance(&engine, &clock, Duration::from_secs(1)).await;
    assert_eq!(changes(&engine, id), ["started", "warned"]);
    advance(&engine, &clock, mins(4)).await;
    assert_eq!(changes(&engine, id), ["started", "warned", "warned"]);
    advance(&engine, &clock, Duration::from_secs(59)).await;
    assert_eq!(changes(&engine, id).len(), 3, "expired a second early");
    advance(&engine, &clock, Duration::from_secs(1)).await;
    assert_eq!(changes(&engine, id).last().unwrap(), "expired");
    assert!(matches!(
        engine.snapshot().state.sessions[&id].phase,
        Phase::Grace { .. }
    ));
    // Default grace is 60 s: hard enforcement exactly then, not before.
    advance(&engine, &clock, Duration::from_secs(59)).await;
    assert_eq!(changes(&engine, id).last().unwrap(), "expired");
    advance(&engine, &clock, Duration::from_secs(1)).await;
    assert_eq!(changes(&engine, id).last().unwrap(), "closed");
    assert!(engine.snapshot().state.sessions.is_empty());

    // Every timer event is stamped with the instant it was due.
    let events = engine.store().unwrap().events(0, 1000).unwrap();
    let at = |kind: &str, lead: Option<i64>| {
        events
            .iter()
            .find(|e| match &e.body.kind {
                EventKind::Session { change, .. } => {
                    let v = serde_json::to_value(change).unwrap();
                    v["kind"] == kind
                        && lead.is_none_or(|l| {
                            matches!(change, SessionChange::Warned { lead: d } if d.as_secs() == l)
                        })
                }
                _ => false,
            })
            .unwrap()
            .body
            .at
    };
    let start = t0();
    assert_eq!(
        at("warned", Some(300)),
        start + SignedDuration::from_mins(5)
    );
    assert_eq!(at("warned", Some(60)), start + SignedDuration::from_mins(9));
    assert_eq!(at("expired", None), start + SignedDuration::from_mins(10));
    assert_eq!(at("closed", None), start + SignedDuration::from_mins(11));
    engine.shutdown().await;
}

#[tokio::test]
async fn pause_stops_the_clock_and_extension_rearms_warnings() {
    let dir = tempfile::tempdir().unwrap();
    let clock = trusted_clock();
    let engine = start_engine(dir.path(), &clock, EngineConfig::default());
    add_stations(&engine, &["pc-1"]).await;
    let id = start_session(&engine, "pc-1", 600).await;
    advance(&engine, &clock, mins(6)).await; // 4 min left, 5-min warning given
    exec(&engine, Command::PauseSession { session: id })
        .await
        .unwrap();
    advance(&engine, &clock, mins(60)).await;
    assert_eq!(changes(&engine, id), ["started", "warned", "paused"]);
    let resumed = exec(&engine, Command::ResumeSession { session: id })
        .await
        .unwrap();
    let EventKind::Session { session, .. } = &resumed.events[0].body.kind else {
        panic!()
    };
    assert_eq!(
        session.ends_at(),
        Some(engine.now() + SignedDuration::from_mins(4))
    );
    // Extending to 14 min left re-arms the 5-minute warning.
    exec(
        &engine,
        Command::ExtendSession {
            session: id,
            by: SignedDuration::from_mins(10),
        },
    )
    .await
    .unwrap();
    advance(&engine, &clock, mins(9)).await;
    assert_eq!(
        changes(&engine, id),
        [
            "started", "warned", "paused", "resumed", "extended", "warned"
        ]
    );
    engine.shutdown().await;
}

#[tokio::test]
async fn deadlines_are_rebuilt_from_the_store_at_boot() {
    let dir = tempfile::tempdir().unwrap();
    let clock = trusted_clock();
    let engine = start_engine(dir.path(), &clock, EngineConfig::default());
    add_stations(&engine, &["pc-1", "pc-2"]).await;
    let a = start_session(&engine, "pc-1", 120).await;
    let b = start_session(&engine, "pc-2", 3600).await;
    engine.shutdown().await;
    drop(engine);

    let engine = start_engine(dir.path(), &clock, EngineConfig::default());
    advance(&engine, &clock, mins(2)).await;
    // A 2-minute session never hears "5 minutes left"; the whole 2 minutes passed in
    // one step, so the 1-minute warning is skipped for expiry.
    assert_eq!(changes(&engine, a), ["started", "expired"]);
    assert_eq!(changes(&engine, b), ["started"]);
    engine.shutdown().await;
}

/// The seeds promise expiry within ±5 s. 200 sessions end in the same second on the
/// real clock; every expiry must be on time or late by less than 5 s, never early.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_sessions_expiring_together_fire_within_five_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::start(
        StoreLocation::Dir(dir.path().to_path_buf()),
        StoreOptions::default(),
        EngineConfig::default(),
        Arc::new(SystemClock::new(TrustMode::Always)),
    )
    .unwrap();
    let ids: Vec<String> = (0..200).map(|i| format!("pc-{i}")).collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    add_stations(&engine, &refs).await;
    let mut events = engine.subscribe();
    // Start all 200 concurrently so their deadlines fall close together.
    let starts = ids.iter().map(|s| {
        let engine = engine.clone();
        let s = s.clone();
        async move { start_session(&engine, &s, 3).await }
    });
    let sessions = futures_join_all(starts).await;
    let mut lateness = Vec::new();
    let mut fired_at = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while lateness.len() < sessions.len() {
        let ev = tokio::time::timeout_at(deadline, events.recv())
            .await
            .expect("not every session expired within 20 s")
            .unwrap();
        if let EventKind::Session {
            change: SessionChange::Expired,
            session,
        } = &ev.body.kind
        {
            let Phase::Grace { expired_at, .. } = session.phase else {
                panic!("expired session not in grace")
            };
            let late = ev.body.at.duration_since(expired_at);
            assert!(!late.is_negative(), "{} expired {late:?} early", session.id);
            lateness.push(late);
            fired_at.push(ev.body.at);
        }
    }
    lateness.sort();
    fired_at.sort();
    let max = *lateness.last().unwrap();
    let p50 = lateness[lateness.len() / 2];
    let spread = fired_at.last().unwrap().duration_since(fired_at[0]);
    eprintln!("200 expiries: lateness p50 {p50:?}, max {max:?}; first-to-last spread {spread:?}");
    assert!(
        max < SignedDuration::from_secs(5),
        "an expiry was {max:?} late"
    );
    engine.shutdown().await;
}

/// `join_all` without pulling in the futures crate.
async fn futures_join_all<
    F: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
>(
    futs: impl IntoIterator<Item = F>,
) -> Vec<T> {
    let handles: Vec<_> = futs.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

#[tokio::test]
async fn a_session_shorter_than_a_warning_lead_skips_that_warning() {
    let dir = tempfile::tempdir().unwrap();
    let clock = trusted_clock();
    let engine = start_engine(dir.path(), &clock, EngineConfig::default());
    add_stations(&engine, &["pc-1"]).await;
    // Three minutes bought: no "5 minutes left" at the start, the 1-minute one on time.
    let id = start_session(&engine, "pc-1", 180).await;
    engine.sync().await.unwrap();
    assert_eq!(changes(&engine, id), ["started"]);
    advance(&engine, &clock, Duration::from_secs(119)).await;
    assert_eq!(changes(&engine, id), ["started"]);
    advance(&engine, &clock, Duration::from_secs(1)).await;
    assert_eq!(changes(&engine, id), ["started", "warned"]);
    engine.shutdown().await;
}
