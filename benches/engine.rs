//! Durable session commands per second with group commit, and the latency distribution
//! of an acknowledged (fsynced) command, at several levels of concurrency.
//!
//!     cargo bench --bench engine
//!
//! The store lives under `target/` (a real disk, not tmpfs) so every commit pays a real
//! fsync. Results go to docs/benchmarks.md by hand, with the machine they came from.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use venued::clock::{SystemClock, TrustMode};
use venued::domain::{Actor, Command, EventKind, SessionId, StationId, StationKind};
use venued::engine::{Engine, EngineConfig, Request};
use venued::store::{StoreLocation, StoreOptions};

const COMMANDS_PER_LEVEL: usize = 4000;

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run());
}

async fn run() {
    let base = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-engine");
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(&base).expect("bench dir");
    let engine = Engine::start(
        StoreLocation::Dir(base.clone()),
        StoreOptions::default(),
        EngineConfig::default(),
        Arc::new(SystemClock::new(TrustMode::Always)),
    )
    .expect("engine");
    let local = || Actor::Local { uid: None };
    let max_clients = 256;
    let mut sessions = Vec::new();
    for i in 0..max_clients {
        let id = StationId::parse(&format!("pc-{i}")).expect("id");
        let add = Command::AddStation {
            id: id.clone(),
            name: format!("PC {i}"),
            kind: StationKind::Pc,
            zone: None,
        };
        engine
            .execute(Request::new(add, local()))
            .await
            .expect("add");
        let start = Command::StartSession {
            station: id,
            duration: Some(jiff::SignedDuration::from_hours(1)),
        };
        let reply = engine
            .execute(Request::new(start, local()))
            .await
            .expect("start");
        let EventKind::Session { session, .. } = &reply.events[0].body.kind else {
            unreachable!()
        };
        sessions.push(session.id);
    }

    println!(
        "| concurrent clients | commands/s | commits/s | commands per commit | p50 | p90 | p99 | max |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    for clients in [1usize, 4, 16, 64, 256] {
        let per_client = COMMANDS_PER_LEVEL / clients;
        let commits_before = engine.stats().commits.load(Ordering::Relaxed);
        let started = Instant::now();
        let tasks: Vec<_> = sessions[..clients]
            .iter()
            .enumerate()
            .map(|(i, id)| {
                let engine = engine.clone();
                let id: SessionId = *id;
                tokio::spawn(async move {
                    let mut lat = Vec::with_capacity(per_client);
                    for n in 0..per_client {
                        // Alternate pause/resume: real state changes, unbounded repeats.
                        let cmd = if n % 2 == 0 {
                            Command::PauseSession { session: id }
                        } else {
                            Command::ResumeSession { session: id }
                        };
                        let key = format!("bench-{clients}-{i}-{n}");
                        let t = Instant::now();
                        engine
                            .execute(
                                Request::new(cmd, Actor::Local { uid: None }).with_key(Some(key)),
                            )
                            .await
                            .expect("command");
                        lat.push(t.elapsed());
                    }
                    lat
                })
            })
            .collect();
        let mut lat: Vec<Duration> = Vec::new();
        for t in tasks {
            lat.extend(t.await.expect("task"));
        }
        let elapsed = started.elapsed();
        let commits = engine.stats().commits.load(Ordering::Relaxed) - commits_before;
        lat.sort();
        let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
        let n = lat.len() as f64;
        println!(
            "| {clients} | {:.0} | {:.0} | {:.1} | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms |",
            n / elapsed.as_secs_f64(),
            commits as f64 / elapsed.as_secs_f64(),
            n / commits.max(1) as f64,
            ms(pct(0.50)),
            ms(pct(0.90)),
            ms(pct(0.99)),
            ms(*lat.last().expect("samples")),
        );
    }
    engine.shutdown().await;
    let _ = std::fs::remove_dir_all(&base);
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
