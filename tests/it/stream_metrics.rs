//! The live event stream (`/api/v1/stream`) and the Prometheus scrape (`/metrics`),
//! in-process through the same router the control socket serves.

use crate::support::*;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use axum::response::Response;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use tower::ServiceExt;
use venued::domain::{Actor, Command, StationKind};
use venued::engine::{Engine, EngineConfig};
use venued::http::Caller;
use venued::http::stream::MAX_STREAMS;

const WAIT: Duration = Duration::from_secs(20);

fn request(method: &str, path: &str, headers: &[(&str, &str)], body: Body) -> Request<Body> {
    let mut req = Request::builder().method(method).uri(path);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let mut req = req.body(body).unwrap();
    req.extensions_mut()
        .insert(Caller(Actor::Local { uid: None }));
    req
}

async fn send(app: &axum::Router, req: Request<Body>) -> Response {
    app.clone().oneshot(req).await.unwrap()
}

/// A complete (non-streaming) answer: status, headers, body text.
async fn call(
    app: &axum::Router,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, HeaderMap, String) {
    let (headers, body) = match body {
        Some(v) => (
            vec![("content-type", "application/json")],
            Body::from(v.to_string()),
        ),
        None => (vec![], Body::empty()),
    };
    let resp = send(app, request(method, path, &headers, body)).await;
    let (status, headers) = (resp.status(), resp.headers().clone());
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, headers, String::from_utf8(bytes.to_vec()).unwrap())
}

fn seqs_in_store(engine: &Engine, after: u64) -> Vec<u64> {
    engine
        .store()
        .unwrap()
        .events(after, 1_000_000)
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect()
}

fn head(engine: &Engine) -> u64 {
    seqs_in_store(engine, 0).last().copied().unwrap_or(0)
}

async fn add_station(engine: &Engine, id: &str) -> u64 {
    let reply = exec(
        engine,
        Command::AddStation {
            id: station(id),
            name: id.to_uppercase(),
            kind: StationKind::Pc,
            zone: None,
        },
    )
    .await
    .unwrap();
    reply.events[0].seq
}

// ---- a tiny SSE client ----

#[derive(Debug, Clone)]
struct SseEvent {
    id: Option<String>,
    event: Option<String>,
    data: String,
}

impl SseEvent {
    fn seq(&self) -> u64 {
        self.id
            .as_deref()
            .expect("every event has an id")
            .parse()
            .unwrap()
    }
}

struct SseClient {
    body: Body,
    buf: String,
}

impl SseClient {
    async fn open(app: &axum::Router, path: &str, headers: &[(&str, &str)]) -> Self {
        let resp = send(app, request("GET", path, headers, Body::empty())).await;
        assert_eq!(resp.status(), StatusCode::OK, "{path} {headers:?}");
        assert_eq!(
            resp.headers()["content-type"].to_str().unwrap(),
            "text/event-stream"
        );
        Self {
            body: resp.into_body(),
            buf: String::new(),
        }
    }

    /// The next event; comments (keep-alives) are skipped.
    async fn next(&mut self) -> SseEvent {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let mut ev = SseEvent {
                    id: None,
                    event: None,
                    data: String::new(),
                };
                let mut any = false;
                for line in block.lines() {
                    if line.is_empty() || line.starts_with(':') {
                        continue;
                    }
                    let (field, value) = line.split_once(':').unwrap_or((line, ""));
                    let value = value.strip_prefix(' ').unwrap_or(value);
                    any = true;
                    match field {
                        "id" => ev.id = Some(value.to_owned()),
                        "event" => ev.event = Some(value.to_owned()),
                        "data" => {
                            if !ev.data.is_empty() {
                                ev.data.push('\n');
                            }
                            ev.data.push_str(value);
                        }
                        other => panic!("unexpected SSE field {other:?}"),
                    }
                }
                if any {
                    return ev;
                }
                continue;
            }
            let frame = tokio::time::timeout(WAIT, self.body.frame())
                .await
                .expect("no event within the wait")
                .expect("the stream ended")
                .unwrap();
            if let Ok(data) = frame.into_data() {
                self.buf.push_str(std::str::from_utf8(&data).unwrap());
            }
        }
    }

    /// Events until (and including) seq `last`; panics on anything beyond it.
    async fn until(&mut self, last: u64) -> Vec<SseEvent> {
        let mut out = Vec::new();
        loop {
            let ev = self.next().await;
            let seq = ev.seq();
            assert!(seq <= last, "got seq {seq} past {last}");
            out.push(ev);
            if seq == last {
                return out;
            }
        }
    }
}

fn seqs(events: &[SseEvent]) -> Vec<u64> {
    events.iter().map(SseEvent::seq).collect()
}

// ---- the stream ----

#[tokio::test]
async fn the_stream_sends_each_committed_event_with_its_seq_type_and_json() {
    let dir = tempfile::tempdir().unwrap();
    let engine = start_engine(dir.path(), &trusted_clock(), EngineConfig::default());
    let app = venued::http::router(engine.clone());
    let before = head(&engine);
    assert!(before > 0, "boot writes a clock event");

    let mut stream = SseClient::open(&app, "/api/v1/stream", &[]).await;
    let added = add_station(&engine, "pc-1").await;
    start_session(&engine, "pc-1", 1800).await;
    let last = head(&engine);
    let got = stream.until(last).await;

    // Live only: nothing from before the stream opened, then every new event in order.
    assert_eq!(seqs(&got), seqs_in_store(&engine, before));
    assert_eq!(got[0].seq(), added);
    assert_eq!(got[0].event.as_deref(), Some("station_added"));
    assert_eq!(got[1].event.as_deref(), Some("mqtt_account_created"));
    assert_eq!(got[2].event.as_deref(), Some("session"));

    // `data:` is the event exactly as /api/v1/events returns it.
    let (status, _, page) =
        call(&app, "GET", &format!("/api/v1/events?after={before}"), None).await;
    assert_eq!(status, StatusCode::OK);
    let page: Value = serde_json::from_str(&page).unwrap();
    let listed = page["events"].as_array().unwrap();
    assert_eq!(listed.len(), got.len());
    for (sse, listed) in got.iter().zip(listed) {
        let data: Value = serde_json::from_str(&sse.data).unwrap();
        assert_eq!(&data, listed);
        assert_eq!(data["seq"].as_u64(), Some(sse.seq()));
        assert_eq!(data["type"].as_str(), sse.event.as_deref());
    }
    let session: Value = serde_json::from_str(&got[2].data).unwrap();
    assert_eq!(session["change"]["kind"], "started");
    engine.shutdown().await;
}

#[tokio::test]
async fn resuming_replays_exactly_the_missed_events_then_continues_live() {
    let dir = tempfile::tempdir().unwrap();
    let engine = start_engine(dir.path(), &trusted_clock(), EngineConfig::default());
    let app = venued::http::router(engine.clone());
    let first = add_station(&engine, "pc-1").await;
    add_station(&engine, "pc-2").await;
    add_station(&engine, "pc-3").await;
    start_session(&engine, "pc-1", 1800).await;
    let seen = first; // the client saw up to the first station, then dropped

    for (path, headers) in [
        (
            "/api/v1/stream".to_owned(),
            vec![("last-event-id", seen.to_string())],
        ),
        (format!("/api/v1/stream?after={seen}"), vec![]),
        // The header (what a reconnecting browser sends) wins over the URL's `after`.
        (
            "/api/v1/stream?after=0".to_owned(),
            vec![("last-event-id", seen.to_string())],
        ),
    ] {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let mut stream = SseClient::open(&app, &path, &headers).await;
        let mut got = stream.until(head(&engine)).await;
        assert_eq!(
            seqs(&got),
            seqs_in_store(&engine, seen),
            "{path} {headers:?}"
        );
        // Live events follow the replayed ones.
        let id = format!("pc-live-{}", got.len() + head(&engine) as usize);
        add_station(&engine, &id).await;
        got.extend(stream.until(head(&engine)).await);
        assert_eq!(
            seqs(&got),
            seqs_in_store(&engine, seen),
            "{path} {headers:?}"
        );
    }

    // Resuming from the newest event replays nothing and still gets what comes next.
    let now = head(&engine);
    let mut stream = SseClient::open(
        &app,
        "/api/v1/stream",
        &[("last-event-id", &now.to_string())],
    )
    .await;
    let next = add_station(&engine, "pc-9").await;
    assert_eq!(seqs(&stream.until(next).await), vec![next]);
    engine.shutdown().await;
}

#[tokio::test]
async fn resuming_while_commands_commit_has_no_gap_and_no_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let engine = start_engine(dir.path(), &trusted_clock(), EngineConfig::default());
    let app = venued::http::router(engine.clone());
    let resume = head(&engine);
    let writer = {
        let engine = engine.clone();
        tokio::spawn(async move {
            for i in 0..150 {
                add_station(&engine, &format!("s-{i}")).await;
            }
        })
    };
    // Connect in the middle of the writes: replay and live overlap.
    while engine.snapshot().state.stations.len() < 40 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let mut stream = SseClient::open(&app, &format!("/api/v1/stream?after={resume}"), &[]).await;
    writer.await.unwrap();
    let got = stream.until(head(&engine)).await;
    let expected: Vec<u64> = (resume + 1..=head(&engine)).collect();
    assert_eq!(seqs(&got), expected);
    assert_eq!(seqs_in_store(&engine, resume), expected);
    let next = add_station(&engine, "pc-after").await;
    assert_eq!(stream.next().await.seq(), next);
    engine.shutdown().await;
}

#[tokio::test]
async fn a_stream_that_falls_behind_the_broadcast_catches_up_from_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let config = EngineConfig {
        queue_capacity: 16_384,
        ..EngineConfig::default()
    };
    let engine = start_engine(dir.path(), &trusted_clock(), config);
    let app = venued::http::router(engine.clone());
    let start = head(&engine);
    // Opened but not read: the broadcast (4096 events) overflows behind it.
    let mut stream = SseClient::open(&app, "/api/v1/stream", &[]).await;
    let mut writes = tokio::task::JoinSet::new();
    for i in 0..5000 {
        let engine = engine.clone();
        writes.spawn(async move { add_station(&engine, &format!("s-{i}")).await });
    }
    writes.join_all().await;
    let last = head(&engine);
    assert!(last - start >= 5000);
    let got = stream.until(last).await;
    assert_eq!(seqs(&got), (start + 1..=last).collect::<Vec<_>>());
    // The broadcast still holds thousands of events already sent: none comes again.
    let next = add_station(&engine, "pc-after").await;
    assert_eq!(stream.next().await.seq(), next);
    engine.shutdown().await;
}

#[tokio::test]
async fn a_malformed_resume_point_is_a_400_problem() {
    let dir = tempfile::tempdir().unwrap();
    let engine = start_engine(dir.path(), &trusted_clock(), EngineConfig::default());
    let app = venued::http::router(engine.clone());
    let cases: [(&str, Option<&str>); 8] = [
        ("/api/v1/stream", Some("abc")),
        ("/api/v1/stream", Some("-1")),
        ("/api/v1/stream", Some("1.5")),
        ("/api/v1/stream", Some("")),
        ("/api/v1/stream", Some("99999999999999999999999")),
        ("/api/v1/stream?after=abc", None),
        ("/api/v1/stream?after=", None),
        // A bad header is refused even when the URL's `after` is fine.
        ("/api/v1/stream?after=3", Some("x3")),
    ];
    for (path, header) in cases {
        let headers: Vec<(&str, &str)> = header.map(|h| ("last-event-id", h)).into_iter().collect();
        let resp = send(&app, request("GET", path, &headers, Body::empty())).await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{path} {header:?}");
        assert_eq!(
            resp.headers()["content-type"],
            "application/problem+json",
            "{path} {header:?}"
        );
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let problem: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            problem["code"], "invalid_last_event_id",
            "{path} {header:?}"
        );
    }
    let (status, _, body) = call(&app, "GET", "/api/v1/stream?since=3", None).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["code"],
        "invalid_query"
    );
    engine.shutdown().await;
}

#[tokio::test]
async fn open_streams_are_capped_and_a_closed_one_frees_its_slot() {
    let dir = tempfile::tempdir().unwrap();
    let engine = start_engine(dir.path(), &trusted_clock(), EngineConfig::default());
    let app = venued::http::router(engine.clone());
    let mut open = Vec::new();
    for _ in 0..MAX_STREAMS {
        open.push(SseClient::open(&app, "/api/v1/stream", &[]).await);
    }
    let (status, headers, body) = call(&app, "GET", "/api/v1/stream", None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(headers["retry-after"], "1");
    let problem: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(problem["code"], "too_many_streams");

    // Every open stream still works.
    let seq = add_station(&engine, "pc-1").await;
    for stream in open.iter_mut().take(3) {
        assert_eq!(stream.next().await.seq(), seq);
    }
    open.pop();
    let mut again = SseClient::open(&app, "/api/v1/stream", &[]).await;
    let seq = add_station(&engine, "pc-2").await;
    assert_eq!(again.next().await.seq(), seq);
    engine.shutdown().await;
}

#[tokio::test]
async fn an_open_stream_does_not_hold_up_a_graceful_stop() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path());
    let mut socket = tokio::net::UnixStream::connect(dir.path().join("venued.sock"))
        .await
        .unwrap();
    socket
        .write_all(b"GET /api/v1/stream HTTP/1.1\r\nhost: venued\r\n\r\n")
        .await
        .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8];
        tokio::time::timeout(WAIT, socket.read_exact(&mut byte))
            .await
            .unwrap()
            .unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("text/event-stream"), "{head}");

    // SIGTERM: the stream is ended so the drain does not wait its full grace period.
    let stopping = std::time::Instant::now();
    let status = tokio::task::spawn_blocking(move || daemon.terminate())
        .await
        .unwrap();
    assert!(status.success(), "{status:?}");
    assert!(
        stopping.elapsed() < Duration::from_secs(5),
        "stop took {:?}",
        stopping.elapsed()
    );
    let mut rest = Vec::new();
    tokio::time::timeout(WAIT, socket.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap();
}

// ---- metrics ----

#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A histogram series: its family and its labels other than `le`.
type Series = (String, Vec<(String, String)>);

#[derive(Debug, Default)]
struct Scrape {
    types: BTreeMap<String, String>,
    samples: Vec<Sample>,
}

impl Scrape {
    /// A strict little parser of the text format: every line a comment or a sample.
    fn parse(text: &str) -> Self {
        let mut out = Self::default();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                assert!(
                    out.types.insert(name.into(), kind.into()).is_none(),
                    "{name} typed twice"
                );
                continue;
            }
            if line.starts_with("# HELP ") {
                continue;
            }
            assert!(
                !line.is_empty() && !line.starts_with('#'),
                "bad line {line:?}"
            );
            let name_end = line.find(['{', ' ']).unwrap();
            let name = &line[..name_end];
            let mut labels = BTreeMap::new();
            let mut rest = &line[name_end..];
            if let Some(inner) = rest.strip_prefix('{') {
                let mut chars = inner.char_indices();
                loop {
                    let (start, c) = chars.next().unwrap();
                    if c == '}' {
                        rest = &inner[start + 1..];
                        break;
                    }
                    if c == ',' {
                        continue;
                    }
                    let eq = inner[start..].find("=\"").unwrap() + start;
                    let key = inner[start..eq].to_owned();
                    while chars.next().unwrap().0 < eq + 1 {}
                    let mut value = String::new();
                    loop {
                        match chars.next().unwrap().1 {
                            '\\' => match chars.next().unwrap().1 {
                                'n' => value.push('\n'),
                                other => value.push(other),
                            },
                            '"' => break,
                            other => value.push(other),
                        }
                    }
                    labels.insert(key, value);
                }
            }
            let value = rest.strip_prefix(' ').unwrap();
            let value = match value {
                "+Inf" => f64::INFINITY,
                v => v
                    .parse()
                    .unwrap_or_else(|_| panic!("bad value in {line:?}")),
            };
            out.samples.push(Sample {
                name: name.into(),
                labels,
                value,
            });
        }
        out
    }

    /// The sample with exactly these labels, or 0 when the series does not exist yet.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let want: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect();
        let found: Vec<&Sample> = self
            .samples
            .iter()
            .filter(|s| s.name == name && s.labels == want)
            .collect();
        assert!(found.len() <= 1, "{name} {labels:?} twice");
        found.first().map_or(0.0, |s| s.value)
    }

    /// The family a sample belongs to (histogram series carry suffixes).
    fn family(name: &str) -> &str {
        ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name)
    }

    /// Every histogram series: buckets ascending in `le` and cumulative, `+Inf` equal
    /// to `_count`. Returns how many series were checked.
    fn check_histograms(&self) -> usize {
        let mut series: BTreeMap<Series, Vec<(f64, f64)>> = BTreeMap::new();
        for s in self.samples.iter().filter(|s| s.name.ends_with("_bucket")) {
            let mut labels = s.labels.clone();
            let le = labels.remove("le").expect("a bucket has le");
            let le: f64 = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().unwrap()
            };
            let family = Self::family(&s.name).to_owned();
            series
                .entry((family, labels.into_iter().collect()))
                .or_default()
                .push((le, s.value));
        }
        for ((family, labels), buckets) in &series {
            assert_eq!(self.types[family], "histogram");
            assert!(
                buckets
                    .windows(2)
                    .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1),
                "{family} {labels:?} not cumulative: {buckets:?}"
            );
            let (le, inf) = *buckets.last().unwrap();
            assert_eq!(le, f64::INFINITY, "{family} {labels:?} has no +Inf");
            let labels: Vec<(&str, &str)> = labels
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            assert_eq!(inf, self.get(&format!("{family}_count"), &labels));
        }
        series.len()
    }
}

async fn scrape(app: &axum::Router) -> (Scrape, String) {
    let (status, headers, body) = call(app, "GET", "/metrics", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4"),
        "{headers:?}"
    );
    let parsed = Scrape::parse(&body);
    for s in &parsed.samples {
        assert!(
            parsed.types.contains_key(Scrape::family(&s.name)),
            "{} has no TYPE",
            s.name
        );
    }
    parsed.check_histograms();
    (parsed, body)
}

#[tokio::test]
async fn metrics_count_commands_commits_and_requests_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let engine = start_engine(dir.path(), &trusted_clock(), EngineConfig::default());
    let app = venued::http::router(engine.clone());
    let (before, _) = scrape(&app).await;

    let station = |id: &str| json!({"id": id, "name": id, "kind": "pc"});
    let calls = [
        ("POST", "/api/v1/stations", Some(station("pc-1")), 201),
        ("POST", "/api/v1/stations", Some(station("pc-2")), 201),
        (
            "POST",
            "/api/v1/sessions",
            Some(json!({"station": "pc-1", "duration": "30m"})),
            201,
        ),
        ("POST", "/api/v1/stations", Some(station("pc-1")), 409),
        ("GET", "/api/v1/stations", None, 200),
        ("GET", "/api/v1/stations", None, 200),
        ("GET", "/api/v1/stations/pc-1", None, 200),
        ("GET", "/api/v1/stations/pc-7", None, 404),
        ("GET", "/no/such/path", None, 404),
    ];
    for (method, path, body, status) in calls {
        let (got, _, text) = call(&app, method, path, body).await;
        assert_eq!(got.as_u16(), status, "{method} {path}: {text}");
    }

    let (after, text) = scrape(&app).await;
    let delta =
        |name: &str, labels: &[(&str, &str)]| after.get(name, labels) - before.get(name, labels);
    // Three commands committed, one refused; nothing else moved.
    let outcome = |o| delta("venued_commands_total", &[("outcome", o)]);
    assert_eq!(outcome("committed"), 3.0);
    assert_eq!(outcome("refused"), 1.0);
    for o in ["replayed", "failed", "busy"] {
        assert_eq!(outcome(o), 0.0, "{o}");
    }
    // Sequential commands: one write transaction each (a refusal commits nothing but
    // still closes its transaction).
    assert_eq!(delta("venued_commits_total", &[]), 4.0);
    assert_eq!(delta("venued_commit_duration_seconds_count", &[]), 4.0);
    assert_eq!(
        after.get("venued_commit_duration_seconds_count", &[]),
        after.get("venued_commits_total", &[])
    );
    assert!(after.get("venued_commit_duration_seconds_sum", &[]) > 0.0);
    assert_eq!(after.get("venued_commit_failures_total", &[]), 0.0);
    assert_eq!(after.get("venued_command_queue_depth", &[]), 0.0);

    // Requests by route template and status; never the raw path.
    let http = |route, status| {
        delta(
            "venued_http_requests_total",
            &[("route", route), ("status", status)],
        )
    };
    assert_eq!(http("/api/v1/stations", "201"), 2.0);
    assert_eq!(http("/api/v1/stations", "409"), 1.0);
    assert_eq!(http("/api/v1/stations", "200"), 2.0);
    assert_eq!(http("/api/v1/sessions", "201"), 1.0);
    assert_eq!(http("/api/v1/stations/{id}", "200"), 1.0);
    assert_eq!(http("/api/v1/stations/{id}", "404"), 1.0);
    assert_eq!(http("unmatched", "404"), 1.0);
    assert_eq!(http("/metrics", "200"), 1.0, "the first scrape");
    assert!(
        !text.contains("pc-7") && !text.contains("/no/such"),
        "{text}"
    );
    assert_eq!(
        after.get(
            "venued_http_request_duration_seconds_count",
            &[("route", "/api/v1/stations")]
        ),
        5.0
    );

    // Gauges match the snapshot.
    let snap = engine.snapshot();
    assert_eq!(
        after.get("venued_sessions_active", &[]),
        snap.state.sessions.len() as f64
    );
    assert_eq!(after.get("venued_sessions_active", &[]), 1.0);
    assert_eq!(
        after.get("venued_stations", &[]),
        snap.state.stations.len() as f64
    );
    assert_eq!(after.get("venued_clock_trusted", &[]), 1.0);
    assert_eq!(
        after.get(
            "venued_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );

    // Every family is declared with its type, even before it has samples.
    for (name, kind) in [
        ("venued_build_info", "gauge"),
        ("venued_stations", "gauge"),
        ("venued_sessions_active", "gauge"),
        ("venued_clock_trusted", "gauge"),
        ("venued_commands_total", "counter"),
        ("venued_commits_total", "counter"),
        ("venued_commit_failures_total", "counter"),
        ("venued_commit_duration_seconds", "histogram"),
        ("venued_command_queue_depth", "gauge"),
        ("venued_http_requests_total", "counter"),
        ("venued_http_request_duration_seconds", "histogram"),
        ("venued_auth_failures_total", "counter"),
    ] {
        assert_eq!(
            after.types.get(name).map(String::as_str),
            Some(kind),
            "{name}"
        );
    }
    engine.shutdown().await;
}

#[tokio::test]
async fn metrics_expose_replays_and_auth_failures_by_fixed_labels() {
    let dir = tempfile::tempdir().unwrap();
    let engine = start_engine(dir.path(), &trusted_clock(), EngineConfig::default());
    let app = venued::http::router(engine.clone());
    let (before, _) = scrape(&app).await;

    let body = json!({"id": "pc-1", "name": "PC 1", "kind": "pc"});
    for _ in 0..2 {
        let resp = send(
            &app,
            request(
                "POST",
                "/api/v1/stations",
                &[
                    ("content-type", "application/json"),
                    ("idempotency-key", "add-pc-1"),
                ],
                Body::from(body.to_string()),
            ),
        )
        .await;
        assert_eq!(resp.status(), StatusCode::CREATED);
    }
    venued::http::metrics::record_auth_failure("bad_credentials");

    let (after, _) = scrape(&app).await;
    let delta =
        |name: &str, labels: &[(&str, &str)]| after.get(name, labels) - before.get(name, labels);
    assert_eq!(
        delta("venued_commands_total", &[("outcome", "committed")]),
        1.0
    );
    assert_eq!(
        delta("venued_commands_total", &[("outcome", "replayed")]),
        1.0
    );
    // The auth counters are process-wide: other tests may bump them too.
    assert!(
        delta(
            "venued_auth_failures_total",
            &[("reason", "bad_credentials")]
        ) >= 1.0
    );
    let reasons: BTreeSet<&str> = after
        .samples
        .iter()
        .filter(|s| s.name == "venued_auth_failures_total")
        .map(|s| s.labels["reason"].as_str())
        .collect();
    let fixed: BTreeSet<&str> = venued::http::metrics::auth_failure_reasons()
        .iter()
        .copied()
        .collect();
    assert_eq!(
        reasons, fixed,
        "every reason, zeros included, and nothing else"
    );
    engine.shutdown().await;
}
