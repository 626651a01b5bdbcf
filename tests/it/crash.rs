//! Crash test: the real binary, concurrent commands over the control socket, SIGKILL at
//! random points. Every acknowledged command must be in the log exactly once; commands
//! cut off mid-flight are retried with their idempotency key and land at most once.

use crate::support::*;
use hyper::Method;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::time::Duration;
use venued::cli::{Client, ClientError};
use venued::config::Config;

const ITERATIONS: usize = 50;
const WORKERS: usize = 4;

/// splitmix64: small, seedable, good enough to pick kill points.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[derive(Clone, Debug)]
struct Call {
    method: Method,
    path: String,
    body: Option<Value>,
}

#[derive(Debug, Default)]
struct Ledger {
    /// key -> number of events its acknowledged reply carried (0: refused, never applied).
    settled: HashMap<String, usize>,
    /// Cut off by a kill: the outcome is unknown until retried.
    in_flight: HashMap<String, Call>,
    acknowledged: usize,
}

enum Outcome {
    Acked(usize),
    Refused,
    Unknown,
}

async fn send(client: &Client, call: &Call, key: &str) -> (Outcome, Option<Value>) {
    match client
        .call::<Value>(
            call.method.clone(),
            &call.path,
            call.body.as_ref(),
            Some(key),
        )
        .await
    {
        Ok(v) => {
            let n = v["events"].as_array().map_or(0, Vec::len);
            (Outcome::Acked(n), Some(v))
        }
        // A 4xx is a refusal: nothing was applied. 503 busy is refused before queueing.
        Err(ClientError::Api { status, code, .. })
            if status.is_client_error() || code == "busy" =>
        {
            (Outcome::Refused, None)
        }
        // Transport failures and storage errors: the command may or may not have landed.
        Err(_) => (Outcome::Unknown, None),
    }
}

/// One station's customer-and-staff loop until the daemon dies under it.
async fn worker(
    client: Client,
    station: String,
    iteration: usize,
    seed: u64,
) -> Vec<(String, Call, Outcome)> {
    let mut rng = Rng(seed);
    let mut log = Vec::new();
    let mut session: Option<u64> = None;
    for n in 0.. {
        let key = format!("it{iteration}-{station}-{n}");
        let call = match session {
            None => Call {
                method: Method::POST,
                path: "/api/v1/sessions".into(),
                body: Some(json!({ "station": station, "duration": "30m" })),
            },
            Some(id) => {
                let (verb, body) = match rng.below(10) {
                    0..=5 => ("extend", Some(json!({ "by": "1m" }))),
                    6 => ("pause", None),
                    7 => ("resume", None),
                    _ => ("stop", Some(json!({ "reason": "crash test" }))),
                };
                Call {
                    method: Method::POST,
                    path: format!("/api/v1/sessions/{id}/{verb}"),
                    body,
                }
            }
        };
        let (outcome, reply) = send(&client, &call, &key).await;
        let stop = matches!(outcome, Outcome::Unknown);
        match (&outcome, reply) {
            (Outcome::Acked(_), Some(v)) => {
                let ended = v["phase"] == "ended";
                session = if ended { None } else { v["id"].as_u64() };
            }
            (Outcome::Refused, _) => {
                // Out of step (a paused session asked to pause): look, then carry on.
                session = match client
                    .call::<Value>(
                        Method::GET,
                        &format!("/api/v1/stations/{station}"),
                        None,
                        None,
                    )
                    .await
                {
                    Ok(v) => v["session"]["id"].as_u64(),
                    Err(_) => {
                        log.push((key, call, outcome));
                        break;
                    }
                };
            }
            _ => {}
        }
        log.push((key, call, outcome));
        if stop {
            break;
        }
    }
    log
}

fn client_config(dir: &std::path::Path) -> Config {
    let mut c = Config::default();
    c.data.dir = dir.to_path_buf();
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_points_never_loses_or_duplicates_an_acknowledged_command() {
    let seed = std::env::var("VENUED_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| u64::from(std::process::id()) * 7919);
    eprintln!("crash test seed {seed} (set VENUED_CRASH_SEED to replay)");
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().unwrap();
    let config = client_config(dir.path());
    let stations: Vec<String> = (0..WORKERS).map(|i| format!("pc-{i}")).collect();

    let daemon = Daemon::start(dir.path());
    let client = Client::connect(&config).await.unwrap();
    assert!(!client.is_direct());
    for s in &stations {
        let _: Value = client
            .call(
                Method::POST,
                "/api/v1/stations",
                Some(&json!({ "id": s, "name": s, "kind": "pc" })),
                None,
            )
            .await
            .unwrap();
    }
    drop(daemon);

    let mut ledger = Ledger::default();
    let mut kills = 0;
    for iteration in 0..=ITERATIONS {
        let daemon = Daemon::start(dir.path());
        let client = Client::connect(&config).await.unwrap();
        assert!(
            !client.is_direct(),
            "must talk to the daemon, not the store"
        );
        // Settle what the last kill cut off: same key, same request.
        for (key, call) in std::mem::take(&mut ledger.in_flight) {
            match send(&client, &call, &key).await.0 {
                Outcome::Acked(n) => {
                    ledger.acknowledged += 1;
                    ledger.settled.insert(key, n);
                }
                Outcome::Refused => {
                    ledger.settled.insert(key, 0);
                }
                Outcome::Unknown => panic!("a healthy daemon did not answer retry {key}"),
            }
        }
        if iteration == ITERATIONS {
            // Last round: a clean stop must exit 0.
            let status = daemon.terminate();
            assert!(status.success(), "SIGTERM exit status {status:?}");
            break;
        }
        let handles: Vec<_> = stations
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let config = config.clone();
                let s = s.clone();
                let seed = rng.next() ^ i as u64;
                tokio::spawn(async move {
                    let client = Client::connect(&config).await.unwrap();
                    worker(client, s, iteration, seed).await
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(5 + rng.below(120))).await;
        daemon.kill();
        kills += 1;
        for h in handles {
            for (key, call, outcome) in h.await.unwrap() {
                match outcome {
                    Outcome::Acked(n) => {
                        ledger.acknowledged += 1;
                        ledger.settled.insert(key, n);
                    }
                    Outcome::Refused => {
                        ledger.settled.insert(key, 0);
                    }
                    Outcome::Unknown => {
                        ledger.in_flight.insert(key, call);
                    }
                }
            }
        }
    }

    // The log, read straight from the store with the daemon stopped.
    let store = venued::store::Store::open(
        &venued::store::StoreLocation::Dir(dir.path().to_path_buf()),
        &venued::store::StoreOptions::default(),
    )
    .unwrap();
    let mut per_key: HashMap<String, usize> = HashMap::new();
    for e in store.events(0, usize::MAX).unwrap() {
        if let Some(k) = e.body.request {
            *per_key.entry(k).or_default() += 1;
        }
    }
    for (key, expected) in &ledger.settled {
        let found = per_key.get(key).copied().unwrap_or(0);
        assert_eq!(
            found, *expected,
            "command {key}: {found} events in the log, {expected} acknowledged"
        );
    }
    for key in per_key.keys() {
        assert!(
            ledger.settled.contains_key(key),
            "event for a key never sent: {key}"
        );
    }
    let report = store.verify().unwrap();
    assert!(report.broken.is_none(), "chain broken: {:?}", report.broken);
    drop(store);
    let out = venued(dir.path(), &["audit", "verify"]);
    assert!(out.status.success(), "audit verify: {}", stderr(&out));
    eprintln!(
        "crash test: {kills} SIGKILLs, {} commands acknowledged and found exactly once, {} commands checked in all, {} events",
        ledger.acknowledged,
        ledger.settled.len(),
        report.events
    );
    assert!(
        ledger.acknowledged > ITERATIONS,
        "too little work got through to mean anything"
    );
}
