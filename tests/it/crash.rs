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
    /// Sent over the network API (bearer token) rather than the control socket.
    http: bool,
}

/// How a worker reaches the daemon: the control socket, or HTTP with a bearer token.
#[derive(Clone)]
struct Via {
    /// Made while the daemon was up, so it always targets the socket and never falls
    /// back to opening the store behind a dead daemon's back.
    socket: std::sync::Arc<Client>,
    port: u16,
    bearer: String,
}

impl Via {
    async fn call(&self, call: &Call, key: Option<&str>) -> Result<Value, ClientError> {
        if !call.http {
            return self
                .socket
                .call(call.method.clone(), &call.path, call.body.as_ref(), key)
                .await;
        }
        let transport = |e: &dyn std::fmt::Display| ClientError::Transport(e.to_string());
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .map_err(|e| transport(&e))?;
        let (mut tx, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| transport(&e))?;
        tokio::spawn(conn);
        let mut req = hyper::Request::builder()
            .method(call.method.clone())
            .uri(&call.path)
            .header("host", "venued")
            .header("authorization", format!("Bearer {}", self.bearer));
        if let Some(k) = key {
            req = req.header("idempotency-key", k);
        }
        let body = match &call.body {
            Some(b) => {
                req = req.header("content-type", "application/json");
                b.to_string()
            }
            None => String::new(),
        };
        let resp = tx
            .send_request(
                req.body(http_body_util::Full::new(hyper::body::Bytes::from(body)))
                    .map_err(|e| transport(&e))?,
            )
            .await
            .map_err(|e| transport(&e))?;
        let status = resp.status();
        let bytes = http_body_util::BodyExt::collect(resp.into_body())
            .await
            .map_err(|e| transport(&e))?
            .to_bytes();
        let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if status.is_success() {
            Ok(v)
        } else {
            Err(ClientError::Api {
                status,
                code: v["code"].as_str().unwrap_or("http_error").to_owned(),
                detail: v["detail"].as_str().unwrap_or("").to_owned(),
            })
        }
    }
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

async fn send(via: &Via, call: &Call, key: &str) -> (Outcome, Option<Value>) {
    match via.call(call, Some(key)).await {
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
    via: Via,
    http: bool,
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
                http,
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
                    http,
                }
            }
        };
        let (outcome, reply) = send(&via, &call, &key).await;
        let stop = matches!(outcome, Outcome::Unknown);
        match (&outcome, reply) {
            (Outcome::Acked(_), Some(v)) => {
                let ended = v["phase"] == "ended";
                session = if ended { None } else { v["id"].as_u64() };
            }
            (Outcome::Refused, _) => {
                // Out of step (a paused session asked to pause): look, then carry on.
                let look = Call {
                    method: Method::GET,
                    path: format!("/api/v1/stations/{station}"),
                    body: None,
                    http,
                };
                session = match via.call(&look, None).await {
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

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let daemon = Daemon::start_with_http(dir.path(), &listen);
    let client = Client::connect(&config).await.unwrap();
    assert!(!client.is_direct());
    // Half the workers go through the network API as a manager with a bearer token.
    let _: Value = client
        .call(
            Method::POST,
            "/api/v1/users",
            Some(&json!({ "name": "crash", "role": "manager", "password": "crash test pw" })),
            None,
        )
        .await
        .unwrap();
    let token: Value = client
        .call(
            Method::POST,
            "/api/v1/tokens",
            Some(&json!({ "name": "crash", "user": "crash" })),
            None,
        )
        .await
        .unwrap();
    let bearer = token["token"].as_str().unwrap().to_owned();
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
        let daemon = Daemon::start_with_http(dir.path(), &listen);
        let client = Client::connect(&config).await.unwrap();
        assert!(
            !client.is_direct(),
            "must talk to the daemon, not the store"
        );
        let via = Via {
            socket: std::sync::Arc::new(client),
            port,
            bearer: bearer.clone(),
        };
        // Settle what the last kill cut off: same key, same request, same transport.
        for (key, call) in std::mem::take(&mut ledger.in_flight) {
            match send(&via, &call, &key).await.0 {
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
                let via = via.clone();
                let s = s.clone();
                let seed = rng.next() ^ i as u64;
                tokio::spawn(async move { worker(via, i % 2 == 0, s, iteration, seed).await })
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
    // Even-numbered stations' workers went over HTTP with a bearer token.
    let over_http = ledger
        .settled
        .iter()
        .filter(|(k, n)| **n > 0 && (k.contains("-pc-0-") || k.contains("-pc-2-")))
        .count();
    let over_socket = ledger.settled.values().filter(|n| **n > 0).count() - over_http;
    assert!(
        over_http > 0 && over_socket > 0,
        "both transports must carry acknowledged commands"
    );
    eprintln!(
        "crash test: {over_http} acknowledged over HTTP, {over_socket} over the control socket"
    );
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
