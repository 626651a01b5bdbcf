//! Latency of the network API on the real binary with 1,000 stations: session start
//! (`POST /api/v1/sessions`) and the station list (`GET /api/v1/stations`), over HTTP and
//! over HTTPS with the box's own CA, on keep-alive loopback connections, with one client
//! and with 16 concurrent clients. Also the cost of a new connection, and the
//! controller's memory after the load.
//!
//!     cargo bench --bench api
//!
//! It runs `venued serve` (the release binary cargo builds for benches) on a temporary
//! data dir on the real disk, so every acknowledged start pays a real fsync. Every call
//! carries a bearer token made on the control socket for an owner account, exactly as a
//! script on the LAN would. Only 127.0.0.1 is used. Results go to docs/benchmarks.md by
//! hand, with the machine they came from.
#![allow(clippy::expect_used, clippy::unwrap_used)]

#[path = "support/mod.rs"]
mod support;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST, HeaderValue};
use hyper::{Method, StatusCode};
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

const BIN: &str = env!("CARGO_BIN_EXE_venued");
const STATIONS: usize = 1000;
const CLIENTS: usize = 16;
/// Station-list reads per level (a multiple of `CLIENTS`).
const LIST_READS: usize = 320;
const LIST_READS_TLS: usize = 160;
const NEW_CONNECTIONS: usize = 100;
/// The whole run, daemon start to stop, must fit in this.
const BUDGET: Duration = Duration::from_secs(110);

fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (http, https) = (support::free_port(), support::free_port());
    let mut daemon = Daemon(Some(
        Command::new(BIN)
            .arg("serve")
            .env("VENUED_DATA_DIR", dir.path())
            .env("VENUED_HTTP_LISTEN", format!("127.0.0.1:{http}"))
            .env("VENUED_HTTPS_LISTEN", format!("127.0.0.1:{https}"))
            .env("VENUED_MQTT_LISTEN", "127.0.0.1:0")
            .env("VENUED_MQTTS_LISTEN", "127.0.0.1:0")
            .env("VENUED_LOG", "warn")
            .env_remove("VENUED_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn venued"),
    ));
    let pid = daemon.pid();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        tokio::time::timeout(BUDGET, run(dir.path(), pid, http, https))
            .await
            .expect("the benchmark must finish within its time budget")
    });
    let status = daemon.terminate();
    assert_eq!(status.code(), Some(0), "venued must exit 0 on SIGTERM");
    println!("\nvenued stopped on SIGTERM with {status}.");
}

async fn run(dir: &Path, pid: u32, http: u16, https: u16) {
    let http = SocketAddr::from(([127, 0, 0, 1], http));
    let https = SocketAddr::from(([127, 0, 0, 1], https));
    wait_until_up(dir, &[http, https]).await;
    let rss_started = rss(pid);

    // An owner and a bearer token, made on the control socket as an operator would.
    let mut config = venued::config::Config::default();
    config.data.dir = dir.to_path_buf();
    let socket = venued::cli::Client::connect(&config)
        .await
        .expect("control socket");
    assert!(!socket.is_direct(), "the daemon must answer on its socket");
    let _: Value = socket
        .call(
            Method::POST,
            "/api/v1/users",
            Some(&json!({"name": "owner", "role": "owner", "password": "bench password 1234"})),
            None,
        )
        .await
        .expect("add owner");
    let created: Value = socket
        .call(
            Method::POST,
            "/api/v1/tokens",
            Some(&json!({"name": "bench", "user": "owner"})),
            None,
        )
        .await
        .expect("create token");
    let token = created["token"].as_str().expect("token").to_owned();
    socket.close().await;
    // Hashing the owner's password (argon2id) is the one big allocation of the setup:
    // note the peak so far, then restart the peak so the final one is the load's own.
    let setup_peak = rss(pid).1;
    let peak_reset = std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok();

    let ca_pem = std::fs::read(dir.join("tls/ca.pem")).expect("tls/ca.pem");
    let ca = CertificateDer::from_pem_slice(&ca_pem).expect("CA certificate");
    let plain = Api::new(Transport::Http, http, &token);
    let tls = Api::new(Transport::Https(tls_client(ca)), https, &token);

    // 1,000 stations, added 16 at a time (not measured).
    let stations: Vec<String> = (1..=STATIONS).map(|i| format!("pc-{i:04}")).collect();
    let added = Instant::now();
    let adds = stations
        .iter()
        .map(|id| {
            let body = json!({"id": id, "name": id.to_uppercase(), "kind": "pc", "zone": "arena"});
            (Method::POST, "/api/v1/stations".to_owned(), Some(body))
        })
        .collect();
    send_all(&plain, adds, StatusCode::CREATED).await;
    println!(
        "Added {STATIONS} stations in {:.1} s. venued RSS: {} at start, {} with the stations; \
         peak {} while the owner's password was hashed.\n",
        added.elapsed().as_secs_f64(),
        kib(rss_started.0),
        kib(rss(pid).0),
        kib(setup_peak),
    );

    println!("### Session start: POST /api/v1/sessions (1h), one per station\n");
    println!(
        "| transport | clients | starts | starts/s | p50 | p90 | p99 | max | server mean | starts per commit | mean commit | engine CPU per start |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut list_rows = Vec::new();
    for (n, api) in [&plain, &tls].into_iter().enumerate() {
        for clients in [1, CLIENTS] {
            let before = api.metrics().await;
            let cpu_before = engine_cpu(pid);
            let (run, sessions) = starts(api, clients, &stations).await;
            let cpu = engine_cpu(pid) - cpu_before;
            let after = api.metrics().await;
            let commits = after.commits - before.commits;
            println!(
                "| {} | {clients} | {} | {:.0} | {} | {} | {:.1} | {} | {} |",
                api.name(),
                run.lat.len(),
                run.rate(),
                run.percentiles(),
                after.route_mean_ms("/api/v1/sessions", &before),
                run.lat.len() as f64 / commits.max(1.0),
                format_ms((after.commit_sum - before.commit_sum) / commits.max(1.0) * 1000.0),
                format_ms(cpu.as_secs_f64() * 1000.0 / run.lat.len() as f64),
            );
            if clients == CLIENTS {
                // Every station now has a running session: read the list at this size.
                list_rows.push(lists(api).await);
            }
            let last = n == 1 && clients == CLIENTS;
            if !last {
                stop_all(&plain, &sessions).await;
            }
        }
    }

    let size = list_rows[0].0;
    println!(
        "\n### Station list: GET /api/v1/stations ({STATIONS} stations, each with a running session; {size} bytes of JSON)\n"
    );
    println!("| transport | clients | reads | reads/s | p50 | p90 | p99 | max | server mean |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (_, rows) in &list_rows {
        for row in rows {
            println!("{row}");
        }
    }

    println!(
        "\n### New connection: connect (+ TLS handshake) and one GET /healthz, {NEW_CONNECTIONS} times\n"
    );
    println!("| transport | connections | p50 | p90 | p99 | max |");
    println!("|---|---:|---:|---:|---:|---:|");
    for api in [&plain, &tls] {
        let mut lat = Vec::with_capacity(NEW_CONNECTIONS);
        for _ in 0..NEW_CONNECTIONS {
            let t = Instant::now();
            let mut conn = api.connect().await;
            let (status, _) = conn.send(Method::GET, "/healthz", None, None).await;
            lat.push(t.elapsed());
            assert_eq!(status, StatusCode::OK);
        }
        let run = Run {
            lat,
            elapsed: Duration::ZERO,
        };
        println!(
            "| {} | {NEW_CONNECTIONS} | {} |",
            api.name(),
            run.percentiles()
        );
    }

    let (rss_now, hwm) = rss(pid);
    println!(
        "\nvenued memory after the load: VmRSS {}, peak (VmHWM) {} {}.",
        kib(rss_now),
        kib(hwm),
        if peak_reset {
            "since the setup"
        } else {
            "including the setup (the peak could not be reset)"
        }
    );
}

/// Start a 1h session on every station, `clients` at a time; the session ids.
async fn starts(api: &Api, clients: usize, stations: &[String]) -> (Run, Vec<u64>) {
    let tag = format!("{}-{clients}", api.name());
    let mut conns = Vec::with_capacity(clients);
    for _ in 0..clients {
        conns.push(api.connect().await);
    }
    let started = Instant::now();
    let tasks: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(c, mut conn)| {
            let mine: Vec<String> = stations.iter().skip(c).step_by(clients).cloned().collect();
            let tag = tag.clone();
            tokio::spawn(async move {
                let mut lat = Vec::with_capacity(mine.len());
                let mut ids = Vec::with_capacity(mine.len());
                for id in mine {
                    let body = json!({"station": id, "duration": "1h"});
                    let key = format!("bench-{tag}-{id}");
                    let t = Instant::now();
                    let (status, answer) = conn
                        .send(Method::POST, "/api/v1/sessions", Some(&body), Some(&key))
                        .await;
                    lat.push(t.elapsed());
                    assert_eq!(
                        status,
                        StatusCode::CREATED,
                        "start on {id}: {}",
                        String::from_utf8_lossy(&answer)
                    );
                    let v: Value = serde_json::from_slice(&answer).expect("session JSON");
                    ids.push(v["id"].as_u64().expect("session id"));
                }
                (lat, ids)
            })
        })
        .collect();
    let mut lat = Vec::new();
    let mut ids = Vec::new();
    for t in tasks {
        let (l, i) = t.await.expect("client task");
        lat.extend(l);
        ids.extend(i);
    }
    let run = Run {
        lat,
        elapsed: started.elapsed(),
    };
    (run, ids)
}

/// The station list, with one client and with `CLIENTS`: (body size, table rows).
async fn lists(api: &Api) -> (usize, Vec<String>) {
    // Check once, outside the timing, that the list is the whole floor.
    let (status, body) = api
        .connect()
        .await
        .send(Method::GET, "/api/v1/stations", None, None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let list: Vec<Value> = serde_json::from_slice(&body).expect("station list JSON");
    assert_eq!(list.len(), STATIONS);
    assert!(list.iter().all(|s| s["session"].is_object()));
    let size = body.len();

    let total = match api.transport {
        Transport::Http => LIST_READS,
        Transport::Https(_) => LIST_READS_TLS,
    };
    let mut rows = Vec::new();
    for clients in [1, CLIENTS] {
        let mut conns = Vec::with_capacity(clients);
        for _ in 0..clients {
            conns.push(api.connect().await);
        }
        let before = api.metrics().await;
        let started = Instant::now();
        let tasks: Vec<_> = conns
            .into_iter()
            .map(|mut conn| {
                tokio::spawn(async move {
                    let mut lat = Vec::with_capacity(total / clients);
                    for _ in 0..total / clients {
                        let t = Instant::now();
                        let (status, body) =
                            conn.send(Method::GET, "/api/v1/stations", None, None).await;
                        lat.push(t.elapsed());
                        assert_eq!(status, StatusCode::OK);
                        // Only the countdowns change ("59m 58s" or "59m 5s"), so the size
                        // moves by a few bytes at most.
                        assert!(body.len().abs_diff(size) < size / 100, "the list changed");
                    }
                    lat
                })
            })
            .collect();
        let mut lat = Vec::new();
        for t in tasks {
            lat.extend(t.await.expect("client task"));
        }
        let run = Run {
            lat,
            elapsed: started.elapsed(),
        };
        let after = api.metrics().await;
        rows.push(format!(
            "| {} | {clients} | {} | {:.0} | {} | {} |",
            api.name(),
            run.lat.len(),
            run.rate(),
            run.percentiles(),
            after.route_mean_ms("/api/v1/stations", &before),
        ));
    }
    (size, rows)
}

/// Stop the given sessions (not measured), so the stations are free again.
async fn stop_all(api: &Api, sessions: &[u64]) {
    let stops = sessions
        .iter()
        .map(|id| (Method::POST, format!("/api/v1/sessions/{id}/stop"), None))
        .collect();
    send_all(api, stops, StatusCode::OK).await;
}

/// Send every request, spread over `CLIENTS` keep-alive connections; each must answer
/// `expect`.
async fn send_all(api: &Api, requests: Vec<(Method, String, Option<Value>)>, expect: StatusCode) {
    let mut shares: Vec<Vec<_>> = (0..CLIENTS).map(|_| Vec::new()).collect();
    for (i, r) in requests.into_iter().enumerate() {
        shares[i % CLIENTS].push(r);
    }
    let mut tasks = Vec::new();
    for share in shares {
        let mut conn = api.connect().await;
        tasks.push(tokio::spawn(async move {
            for (method, path, body) in share {
                let (status, answer) = conn.send(method, &path, body.as_ref(), None).await;
                assert_eq!(
                    status,
                    expect,
                    "{path}: {}",
                    String::from_utf8_lossy(&answer)
                );
            }
        }));
    }
    for t in tasks {
        t.await.expect("client task");
    }
}

// ---- clients ----

#[derive(Clone)]
enum Transport {
    Http,
    Https(Arc<rustls::ClientConfig>),
}

struct Api {
    transport: Transport,
    addr: SocketAddr,
    auth: HeaderValue,
}

impl Api {
    fn new(transport: Transport, addr: SocketAddr, token: &str) -> Self {
        Self {
            transport,
            addr,
            auth: HeaderValue::from_str(&format!("Bearer {token}")).expect("header"),
        }
    }

    fn name(&self) -> &'static str {
        match self.transport {
            Transport::Http => "HTTP",
            Transport::Https(_) => "HTTPS",
        }
    }

    /// A new keep-alive HTTP/1.1 connection (TLS handshake included for HTTPS).
    async fn connect(&self) -> Conn {
        let tcp = TcpStream::connect(self.addr).await.expect("connect");
        tcp.set_nodelay(true).expect("nodelay");
        let tx = match &self.transport {
            Transport::Http => {
                let (tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
                    .await
                    .expect("http handshake");
                tokio::spawn(conn);
                tx
            }
            Transport::Https(config) => {
                let stream = tokio_rustls::TlsConnector::from(config.clone())
                    .connect(ServerName::try_from("localhost").expect("name"), tcp)
                    .await
                    .expect("TLS handshake with the box's CA");
                let (tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                    .await
                    .expect("http handshake");
                tokio::spawn(conn);
                tx
            }
        };
        Conn {
            tx,
            auth: self.auth.clone(),
        }
    }

    async fn metrics(&self) -> Metrics {
        let (status, body) = self
            .connect()
            .await
            .send(Method::GET, "/metrics", None, None)
            .await;
        assert_eq!(status, StatusCode::OK);
        Metrics::parse(String::from_utf8(body.to_vec()).expect("metrics text"))
    }
}

struct Conn {
    tx: SendRequest<Full<Bytes>>,
    auth: HeaderValue,
}

impl Conn {
    /// One request on this connection; the status and the whole body.
    async fn send(
        &mut self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        idempotency_key: Option<&str>,
    ) -> (StatusCode, Bytes) {
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, "localhost")
            .header(AUTHORIZATION, self.auth.clone());
        if body.is_some() {
            req = req.header(CONTENT_TYPE, "application/json");
        }
        if let Some(key) = idempotency_key {
            req = req.header("idempotency-key", key);
        }
        let bytes = body.map_or_else(Bytes::new, |b| Bytes::from(b.to_string()));
        let req = req.body(Full::new(bytes)).expect("request");
        self.tx.ready().await.expect("connection ready");
        let resp = self.tx.send_request(req).await.expect("response");
        let status = resp.status();
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        (status, body)
    }
}

fn tls_client(ca: CertificateDer<'static>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca).expect("trust the box's CA");
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

// ---- figures ----

struct Run {
    lat: Vec<Duration>,
    elapsed: Duration,
}

impl Run {
    fn rate(&self) -> f64 {
        self.lat.len() as f64 / self.elapsed.as_secs_f64()
    }

    /// "p50 | p90 | p99 | max" as table cells.
    fn percentiles(&self) -> String {
        let mut lat = self.lat.clone();
        lat.sort();
        let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
        [
            pct(0.50),
            pct(0.90),
            pct(0.99),
            *lat.last().expect("samples"),
        ]
        .iter()
        .map(|d| format_ms(d.as_secs_f64() * 1000.0))
        .collect::<Vec<_>>()
        .join(" | ")
    }
}

fn format_ms(ms: f64) -> String {
    format!("{ms:.2} ms")
}

/// The figures this benchmark reads from `/metrics` (counters since the daemon started).
struct Metrics {
    text: String,
    commits: f64,
    commit_sum: f64,
}

impl Metrics {
    fn parse(text: String) -> Self {
        let commits = sample(&text, "venued_commits_total ").expect("commits_total");
        let commit_sum =
            sample(&text, "venued_commit_duration_seconds_sum ").expect("commit duration");
        Self {
            text,
            commits,
            commit_sum,
        }
    }

    /// Mean server-side time (until the response head) of `route` since `before`.
    fn route_mean_ms(&self, route: &str, before: &Metrics) -> String {
        let sum = format!("venued_http_request_duration_seconds_sum{{route=\"{route}\"}} ");
        let count = format!("venued_http_request_duration_seconds_count{{route=\"{route}\"}} ");
        let delta = |key: &str| {
            sample(&self.text, key).unwrap_or(0.0) - sample(&before.text, key).unwrap_or(0.0)
        };
        format_ms(delta(&sum) / delta(&count).max(1.0) * 1000.0)
    }
}

fn sample(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .and_then(|v| v.trim().parse().ok())
}

/// (VmRSS, VmHWM) of a process, in KiB.
fn rss(pid: u32) -> (u64, u64) {
    (
        support::proc_status(pid, "VmRSS:"),
        support::proc_status(pid, "VmHWM:"),
    )
}

/// CPU time (user + system) of the engine's writer thread, `venued-engine`, so far.
fn engine_cpu(pid: u32) -> Duration {
    // SAFETY: sysconf(3) only reads a system constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).expect("tasks") {
        let path = task.expect("task").path();
        let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        if comm.trim() != "venued-engine" {
            continue;
        }
        let stat = std::fs::read_to_string(path.join("stat")).expect("task stat");
        // Fields after the `(comm)`: state is field 3, utime 14, stime 15.
        let rest = &stat[stat.rfind(')').expect("stat format") + 1..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks_used: f64 =
            fields[11].parse::<f64>().expect("utime") + fields[12].parse::<f64>().expect("stime");
        return Duration::from_secs_f64(ticks_used / ticks);
    }
    panic!("no venued-engine thread in venued {pid}");
}

fn kib(k: u64) -> String {
    format!("{:.1} MiB", k as f64 / 1024.0)
}

// ---- the daemon ----

/// The `venued serve` child: SIGTERM at the end, killed if the benchmark panics.
struct Daemon(Option<Child>);

impl Daemon {
    fn pid(&self) -> u32 {
        self.0.as_ref().expect("child").id()
    }

    /// SIGTERM, then wait at most 15 s for the exit status.
    #[allow(clippy::disallowed_methods)] // no async runtime here: a plain poll is fine
    fn terminate(&mut self) -> std::process::ExitStatus {
        let child = self.0.as_mut().expect("child");
        // SAFETY: kill(2) on our own child's pid; it has not been reaped yet.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = child.try_wait().expect("wait for venued") {
                self.0 = None;
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "venued did not stop within 15 s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The control socket opens before the TCP listeners: wait for all of them.
async fn wait_until_up(dir: &Path, addrs: &[SocketAddr]) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let socket = dir.join(venued::config::SOCKET_FILE);
    while tokio::net::UnixStream::connect(&socket).await.is_err() {
        assert!(Instant::now() < deadline, "venued did not open its socket");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for addr in addrs {
        while TcpStream::connect(addr).await.is_err() {
            assert!(Instant::now() < deadline, "venued did not listen on {addr}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
