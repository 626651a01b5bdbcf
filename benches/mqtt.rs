//! The embedded MQTT broker against Mosquitto and against rumqttd on its own, measured by
//! the same load code: QoS 1 point-to-point and fan-out latency, QoS 0 throughput, and the
//! memory of 1,000 idle connections.
//!
//!     cargo bench --bench mqtt
//!     VENUED_BENCH_MQTT_ONLY=front cargo bench --bench mqtt    # some brokers only
//!
//! Three brokers, one after the other, each on a free 127.0.0.1 port, plain TCP:
//!
//! - **Mosquitto** (`mosquitto` on PATH or in /usr/sbin; Debian package `mosquitto`),
//!   from a generated config: anonymous, no persistence, `set_tcp_nodelay true` (the
//!   front sets TCP_NODELAY too). Skipped, with a line saying so, when it is not
//!   installed; this benchmark installs nothing.
//! - **rumqttd direct**: rumqttd 0.20's own server (`Server::start(LinkType::Remote)`,
//!   which needs none of its default features) on the router sizes of `router_config` in
//!   src/broker/mod.rs, with dynamic filters. It runs in a child process (this binary,
//!   re-executed with `VENUED_BENCH_RUMQTTD_LISTEN` set) so its memory is its own.
//! - **venued's front**: the release `venued serve` on a temporary data dir, MQTT only,
//!   with one device account (`device:bench`, owning `bench/#`) used by every client. Its
//!   per-client publish limit is raised (`publish-rate = 100000`) for the load.
//!
//! The clients are rumqttc (MQTT 3.1.1, TCP_NODELAY) in this process, on the same two
//! vCPUs as the broker. QoS 1 messages are sent evenly spaced by a pacing thread and carry
//! their send instant; latency is the time to their arrival at the subscriber, on this
//! process's monotonic clock. Memory is `VmRSS` of the broker process before and after
//! 1,000 idle connections. Every load also reports where the machine's CPU went (broker,
//! its busiest thread, this process, everything else), so a run disturbed by other work on
//! the VM shows as such. The tables are printed in Markdown for docs/benchmarks.md.
#![allow(clippy::expect_used, clippy::unwrap_used)]

#[path = "support/mod.rs"]
mod support;
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, NetworkOptions, Packet, QoS};
use serde_json::Value;
use std::collections::HashMap;
use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const BIN: &str = env!("CARGO_BIN_EXE_venued");
/// Set in the child that runs rumqttd's own server: the address to listen on.
const RUMQTTD_CHILD: &str = "VENUED_BENCH_RUMQTTD_LISTEN";

/// QoS 1 point-to-point: publisher/subscriber pairs, each pair on its own topic.
const PAIRS: usize = 10;
const PAIR_RATE: u32 = 1000;
/// QoS 1 fan-out: one publisher, this many subscribers of one topic.
const FAN_SUBSCRIBERS: usize = 50;
const FAN_RATE: u32 = 100;
/// QoS 0 throughput: publishers, each with its own subscriber, as fast as they can.
const FLOODS: usize = 4;
/// How long each load runs, and how long late messages may still arrive after it.
const LOAD: Duration = Duration::from_secs(5);
const DRAIN: Duration = Duration::from_secs(1);
/// Bytes per message; the first 8 are the send instant.
const PAYLOAD: usize = 64;
/// Idle connections for the memory figure, opened this many at a time.
const IDLE: usize = 1000;
const IDLE_BATCH: usize = 25;
/// Time for the broker to settle before a memory reading.
const SETTLE: Duration = Duration::from_secs(2);
/// Each broker's whole run must fit in this (three brokers: about 3 minutes at most).
const BUDGET: Duration = Duration::from_secs(55);
/// Router sizes of `router_config` in src/broker/mod.rs, for the front's
/// `max-connections` below.
const MAX_CONNECTIONS: usize = 10_000;

fn main() {
    if let Ok(listen) = std::env::var(RUMQTTD_CHILD) {
        rumqttd_child(&listen);
        return;
    }
    let nofile = raise_nofile();
    println!("Open files limit (inherited by the brokers): {nofile}.");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    // `VENUED_BENCH_MQTT_ONLY=front` (or `mosquitto,rumqttd`): rerun some brokers only.
    let only = std::env::var("VENUED_BENCH_MQTT_ONLY").unwrap_or_default();
    let mut columns = Vec::new();
    for kind in [Kind::Mosquitto, Kind::Rumqttd, Kind::Front] {
        let skipped = !only.is_empty() && !only.split(',').any(|k| k.trim() == kind.key());
        let started = if skipped { None } else { Broker::start(kind) };
        let Some(mut broker) = started else {
            columns.push(Column {
                name: kind.label(),
                results: None,
            });
            continue;
        };
        eprintln!(
            "\n== {} (pid {}, port {})",
            broker.name, broker.pid, broker.port
        );
        let results = runtime.block_on(async {
            broker.wait_until_up().await;
            if kind == Kind::Front {
                broker.credentials = Some(front_account(&broker));
            }
            tokio::time::timeout(BUDGET, measure(&broker))
                .await
                .expect("each broker's run must finish within its time budget")
        });
        columns.push(Column {
            name: broker.name.clone(),
            results: Some(results),
        });
        broker.stop();
    }
    print_tables(&columns);
}

// ---- the brokers ----

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Mosquitto,
    Rumqttd,
    Front,
}

impl Kind {
    fn key(self) -> &'static str {
        match self {
            Kind::Mosquitto => "mosquitto",
            Kind::Rumqttd => "rumqttd",
            Kind::Front => "front",
        }
    }

    fn label(self) -> String {
        match self {
            Kind::Mosquitto => "Mosquitto".into(),
            Kind::Rumqttd => "rumqttd 0.20 direct".into(),
            Kind::Front => "venued front".into(),
        }
    }
}

struct Broker {
    name: String,
    child: Option<Child>,
    pid: u32,
    port: u16,
    /// Kept until the broker stops: its config file and data.
    dir: tempfile::TempDir,
    /// User name and password, for the front.
    credentials: Option<(String, String)>,
}

impl Broker {
    fn start(kind: Kind) -> Option<Broker> {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = support::free_port();
        let (name, mut command) = match kind {
            Kind::Mosquitto => {
                let Some(bin) = mosquitto_binary() else {
                    println!("mosquitto not found: apt-get install mosquitto (skipping it)");
                    return None;
                };
                let conf = dir.path().join("mosquitto.conf");
                std::fs::write(
                    &conf,
                    format!(
                        "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n\
                         set_tcp_nodelay true\nlog_dest stderr\nlog_type error\nlog_type warning\n"
                    ),
                )
                .expect("write mosquitto.conf");
                let mut c = Command::new(&bin);
                c.arg("-c").arg(&conf);
                (mosquitto_version(&bin), c)
            }
            Kind::Rumqttd => {
                let mut c = Command::new(std::env::current_exe().expect("this benchmark's path"));
                c.env(RUMQTTD_CHILD, format!("127.0.0.1:{port}"));
                (kind.label(), c)
            }
            Kind::Front => {
                let config = dir.path().join("venued.toml");
                std::fs::write(
                    &config,
                    format!(
                        "[mqtt]\npublish-rate = 100000\npublish-burst = 1000000\n\
                         max-connections = {MAX_CONNECTIONS}\n"
                    ),
                )
                .expect("write venued.toml");
                let mut c = Command::new(BIN);
                c.arg("serve")
                    .arg("--config")
                    .arg(&config)
                    .env("VENUED_DATA_DIR", dir.path().join("data"))
                    .env("VENUED_MQTT_LISTEN", format!("127.0.0.1:{port}"))
                    .env("VENUED_MQTTS_LISTEN", "")
                    .env("VENUED_HTTP_LISTEN", "")
                    .env("VENUED_HTTPS_LISTEN", "")
                    // rumqttd warns twice for every message a slow subscriber skips (QoS 0
                    // flood): hundreds of lines a second.
                    .env("VENUED_LOG", "warn,rumqttd=error")
                    .env_remove("VENUED_CONFIG");
                (kind.label(), c)
            }
        };
        let child = command
            // A pipe the child never writes to: the rumqttd child exits when it closes.
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        Some(Broker {
            name,
            pid: child.id(),
            child: Some(child),
            port,
            dir,
            credentials: None,
        })
    }

    async fn wait_until_up(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            assert!(
                Instant::now() < deadline,
                "{} did not listen on {addr}",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGTERM, then SIGKILL if it has not exited within 10 s.
    #[allow(clippy::disallowed_methods)] // no async runtime here: a plain poll is fine
    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SAFETY: kill(2) on our own child's pid; it has not been reaped yet.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while child.try_wait().expect("wait for broker").is_none() {
            if Instant::now() > deadline {
                eprintln!("{} did not stop on SIGTERM; killing it", self.name);
                let _ = child.kill();
                let _ = child.wait();
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn mosquitto_binary() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/usr/local/sbin".into()])
        .map(|d| d.join("mosquitto"))
        .find(|p| p.is_file())
}

/// "Mosquitto 2.0.11", from the first line of `mosquitto -h`.
fn mosquitto_version(bin: &Path) -> String {
    let out = Command::new(bin).arg("-h").output().ok();
    let text = out
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    text.lines()
        .next()
        .and_then(|l| l.strip_prefix("mosquitto version "))
        .map_or_else(|| "Mosquitto".into(), |v| format!("Mosquitto {}", v.trim()))
}

/// `venued mqtt add device:bench --topic bench --json` on the running daemon's socket.
fn front_account(broker: &Broker) -> (String, String) {
    let out = Command::new(BIN)
        .args(["mqtt", "add", "device:bench", "--topic", "bench", "--json"])
        .env("VENUED_DATA_DIR", broker.dir.path().join("data"))
        .env_remove("VENUED_CONFIG")
        .stdin(Stdio::null())
        .output()
        .expect("run venued mqtt add");
    assert!(
        out.status.success(),
        "venued mqtt add: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let created: Value = serde_json::from_slice(&out.stdout).expect("JSON from mqtt add");
    let field = |k: &str| {
        created["credentials"][k]
            .as_str()
            .expect("credentials in the answer")
            .to_owned()
    };
    (field("username"), field("password"))
}

/// The child process: rumqttd's own server, as its README runs it, with the router sized
/// like ours. Exits when the benchmark closes its stdin (or dies).
fn rumqttd_child(listen: &str) {
    std::thread::spawn(|| {
        let mut sink = [0u8; 64];
        while matches!(std::io::stdin().read(&mut sink), Ok(n) if n > 0) {}
        std::process::exit(0);
    });
    let listen: SocketAddr = listen.parse().expect("listen address");
    // The same router as venued's, for max-connections = MAX_CONNECTIONS.
    let router = venued::broker::router_config(MAX_CONNECTIONS);
    let router_tx = rumqttd::Router::new(0, router).spawn();
    let settings = rumqttd::ServerSettings {
        name: "bench".into(),
        listen,
        tls: None,
        next_connection_delay_ms: 0,
        connections: rumqttd::ConnectionSettings {
            connection_timeout_ms: 10_000,
            // The front's mqtt.max-packet-size default.
            max_payload_size: 64 * 1024,
            max_inflight_count: 100,
            auth: None,
            external_auth: None,
            dynamic_filters: true,
        },
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let result = runtime.block_on(async move {
        rumqttd::Server::new(settings, router_tx, rumqttd::protocol::v4::V4)
            .start(rumqttd::LinkType::Remote)
            .await
    });
    eprintln!("rumqttd server ended: {result:?}");
    std::process::exit(1);
}

/// Raise this process's soft RLIMIT_NOFILE to its hard limit (at most 65,536): 1,000 idle
/// clients need as many sockets here, and the brokers, started from here, inherit it.
fn raise_nofile() -> libc::rlim_t {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            let want = lim.rlim_max.min(65_536);
            if lim.rlim_cur < want {
                let raised = libc::rlimit {
                    rlim_cur: want,
                    rlim_max: lim.rlim_max,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                    lim.rlim_cur = want;
                }
            }
        }
    }
    assert!(
        lim.rlim_cur as usize > IDLE + 200,
        "RLIMIT_NOFILE is {} and cannot be raised: ulimit -n 4096",
        lim.rlim_cur
    );
    lim.rlim_cur
}

// ---- the load ----

struct Column {
    name: String,
    results: Option<Results>,
}

struct Results {
    idle: Idle,
    pairs: Latency,
    fan: Latency,
    flood: Flood,
}

async fn measure(broker: &Broker) -> Results {
    // Memory first, on a broker that has seen no load yet.
    let idle = idle(broker).await;
    eprintln!(
        "idle: {:.2} KiB per connection, {:.2} KiB with a subscription",
        idle.per_connection(),
        idle.per_subscribed()
    );
    let pairs = point_to_point(broker).await;
    eprintln!("QoS 1 pairs: {}", pairs.summary());
    let fan = fan_out(broker).await;
    eprintln!("QoS 1 fan-out: {}", fan.summary());
    let flood = flood(broker).await;
    eprintln!(
        "QoS 0: {:.0} msg/s received, {:.0} sent, {:.1}% delivered, {}",
        flood.received_rate(),
        flood.sent_rate(),
        flood.delivered_pct(),
        flood.cpu
    );
    Results {
        idle,
        pairs,
        fan,
        flood,
    }
}

/// The process-wide origin of the instants carried in payloads.
fn now_ns() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

fn stamped(seq: u64) -> Vec<u8> {
    let mut p = vec![0u8; PAYLOAD];
    p[..8].copy_from_slice(&now_ns().to_le_bytes());
    p[8..16].copy_from_slice(&seq.to_le_bytes());
    p
}

fn options(broker: &Broker, id: &str) -> MqttOptions {
    let mut o = MqttOptions::new(id, "127.0.0.1", broker.port);
    o.set_keep_alive(Duration::from_secs(60))
        .set_clean_session(true)
        .set_max_packet_size(64 * 1024, 64 * 1024)
        .set_request_channel_capacity(1000);
    if let Some((user, password)) = &broker.credentials {
        o.set_credentials(user, password);
    }
    o
}

/// A connected client: CONNECT sent and CONNACK received.
async fn connect(broker: &Broker, id: &str) -> (AsyncClient, EventLoop) {
    let (client, mut eventloop) = AsyncClient::new(options(broker, id), 1000);
    let mut net = NetworkOptions::new();
    net.set_tcp_nodelay(true);
    net.set_connection_timeout(10);
    eventloop.set_network_options(net);
    match eventloop.poll().await {
        Ok(Event::Incoming(Packet::ConnAck(ack))) => {
            assert_eq!(
                ack.code,
                rumqttc::ConnectReturnCode::Success,
                "{}: CONNACK for {id}",
                broker.name
            );
        }
        other => panic!("{}: connect {id}: {other:?}", broker.name),
    }
    (client, eventloop)
}

/// Poll until the SUBACK (the client has one subscription in flight).
async fn subscribed(broker: &Broker, eventloop: &mut EventLoop) {
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::SubAck(ack))) => {
                let code = ack.return_codes.first().copied();
                assert!(
                    matches!(code, Some(rumqttc::SubscribeReasonCode::Success(_))),
                    "{}: subscription refused: {code:?}",
                    broker.name
                );
                return;
            }
            Ok(_) => {}
            Err(e) => panic!("{}: subscribe: {e}", broker.name),
        }
    }
}

/// What a subscriber saw.
#[derive(Default)]
struct Received {
    /// Latency of each message, in nanoseconds (when `record`).
    lat: Vec<u64>,
    error: Option<String>,
}

struct Subscriber {
    stop: oneshot::Sender<()>,
    task: JoinHandle<Received>,
    count: Arc<AtomicU64>,
}

impl Subscriber {
    async fn start(broker: &Broker, id: &str, topic: &str, qos: QoS, record: bool) -> Self {
        let (client, mut eventloop) = connect(broker, id).await;
        client.subscribe(topic, qos).await.expect("subscribe");
        subscribed(broker, &mut eventloop).await;
        let count = Arc::new(AtomicU64::new(0));
        let counter = count.clone();
        let (stop, mut stopped) = oneshot::channel();
        let task = tokio::spawn(async move {
            // Dropping the client would end the event loop.
            let _client = client;
            let mut r = Received::default();
            loop {
                tokio::select! {
                    biased;
                    _ = &mut stopped => break,
                    event = eventloop.poll() => match event {
                        Ok(Event::Incoming(Packet::Publish(p))) => {
                            if record {
                                let now = now_ns();
                                let sent = u64::from_le_bytes(p.payload[..8].try_into().unwrap());
                                r.lat.push(now.saturating_sub(sent));
                            }
                            counter.fetch_add(1, Relaxed);
                        }
                        Ok(_) => {}
                        Err(e) => {
                            r.error = Some(e.to_string());
                            break;
                        }
                    }
                }
            }
            r
        });
        Subscriber { stop, task, count }
    }

    async fn finish(self) -> Received {
        let _ = self.stop.send(());
        self.task.await.expect("subscriber task")
    }
}

/// A connected publisher; its event loop runs (PUBACKs) until it is dropped.
struct Publisher {
    client: AsyncClient,
    task: JoinHandle<()>,
}

impl Publisher {
    async fn start(broker: &Broker, id: &str) -> Self {
        let (client, mut eventloop) = connect(broker, id).await;
        let name = broker.name.clone();
        let task = tokio::spawn(async move {
            loop {
                if let Err(e) = eventloop.poll().await {
                    eprintln!("{name}: publisher: {e}");
                    return;
                }
            }
        });
        Publisher { client, task }
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Publish QoS 1, round-robin over `targets`, `rate` messages a second in all, for
/// `LOAD`; the number sent. On a thread of its own: tokio's timer has a 1 ms grain, which
/// would send each millisecond's messages in one burst. Here they are evenly spaced.
#[allow(clippy::disallowed_methods)] // a blocking thread of its own, not an async worker
fn pace(targets: &[(AsyncClient, String)], rate: u32) -> u64 {
    // SAFETY: prctl(PR_SET_TIMERSLACK) only changes this thread's timer slack (1 ns
    // instead of 50 µs), so the sleeps below end on time.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0);
    }
    let period = Duration::from_secs(1) / rate;
    let n = u64::from(rate) * LOAD.as_secs();
    let start = Instant::now() + Duration::from_millis(20);
    for seq in 0..n {
        let at = start + period * seq as u32;
        let now = Instant::now();
        if at > now {
            std::thread::sleep(at - now);
        }
        let (client, topic) = &targets[seq as usize % targets.len()];
        client
            .try_publish(topic, QoS::AtLeastOnce, false, stamped(seq))
            .expect("a publisher fell 1,000 messages behind");
    }
    n
}

struct Latency {
    expected: u64,
    /// Nanoseconds, every delivery.
    lat: Vec<u64>,
    cpu: CpuShare,
    errors: Vec<String>,
}

impl Latency {
    fn pct(&self, p: f64) -> Option<f64> {
        let mut v = self.lat.clone();
        v.sort_unstable();
        let i = ((v.len() as f64 * p) as usize).min(v.len().checked_sub(1)?);
        Some(v[i] as f64 / 1e6)
    }

    fn max(&self) -> Option<f64> {
        self.lat.iter().max().map(|&n| n as f64 / 1e6)
    }

    fn summary(&self) -> String {
        let ms = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.3} ms"));
        format!(
            "{}/{} delivered, p50 {}, p99 {}, max {}, {}{}",
            self.lat.len(),
            self.expected,
            ms(self.pct(0.5)),
            ms(self.pct(0.99)),
            ms(self.max()),
            self.cpu,
            if self.errors.is_empty() {
                String::new()
            } else {
                format!(", errors: {:?}", self.errors)
            }
        )
    }
}

/// QoS 1 publishes from `publishers` (client, topic) at `rate` in all, measured at
/// `subs`; `copies` deliveries are expected per message.
async fn latency_run(
    broker: &Broker,
    subs: Vec<Subscriber>,
    publishers: &[(Publisher, String)],
    rate: u32,
    copies: u64,
) -> Latency {
    let targets: Vec<(AsyncClient, String)> = publishers
        .iter()
        .map(|(p, topic)| (p.client.clone(), topic.clone()))
        .collect();
    let cpu = Cpu::start(broker.pid);
    let sent = tokio::task::spawn_blocking(move || pace(&targets, rate))
        .await
        .expect("pacing thread");
    tokio::time::sleep(DRAIN).await;
    let mut run = Latency {
        expected: sent * copies,
        lat: Vec::new(),
        cpu: cpu.share(),
        errors: Vec::new(),
    };
    for s in subs {
        let r = s.finish().await;
        run.lat.extend(r.lat);
        run.errors.extend(r.error);
    }
    run
}

/// 10 pairs, each publisher at 1,000 msg/s QoS 1 to its own subscriber.
async fn point_to_point(broker: &Broker) -> Latency {
    let mut subs = Vec::new();
    let mut pubs = Vec::new();
    for i in 0..PAIRS {
        let topic = format!("bench/p2p/{i}");
        subs.push(
            Subscriber::start(
                broker,
                &format!("p2p-sub-{i}"),
                &topic,
                QoS::AtLeastOnce,
                true,
            )
            .await,
        );
        pubs.push((
            Publisher::start(broker, &format!("p2p-pub-{i}")).await,
            topic,
        ));
    }
    latency_run(broker, subs, &pubs, PAIR_RATE * PAIRS as u32, 1).await
}

/// One publisher at 100 msg/s QoS 1 to 50 subscribers of one topic.
async fn fan_out(broker: &Broker) -> Latency {
    let topic = "bench/fan";
    let mut subs = Vec::new();
    for i in 0..FAN_SUBSCRIBERS {
        subs.push(
            Subscriber::start(
                broker,
                &format!("fan-sub-{i}"),
                topic,
                QoS::AtLeastOnce,
                true,
            )
            .await,
        );
    }
    let publisher = Publisher::start(broker, "fan-pub").await;
    let pubs = [(publisher, topic.to_owned())];
    latency_run(broker, subs, &pubs, FAN_RATE, FAN_SUBSCRIBERS as u64).await
}

struct Flood {
    sent: u64,
    /// Received while the publishers ran, and in all (after `DRAIN`).
    received_in_window: u64,
    received: u64,
    elapsed: Duration,
    cpu: CpuShare,
    errors: Vec<String>,
}

impl Flood {
    fn received_rate(&self) -> f64 {
        self.received_in_window as f64 / self.elapsed.as_secs_f64()
    }
    fn sent_rate(&self) -> f64 {
        self.sent as f64 / self.elapsed.as_secs_f64()
    }
    fn delivered_pct(&self) -> f64 {
        self.received as f64 * 100.0 / self.sent.max(1) as f64
    }
}

/// 4 publishers, QoS 0, as fast as they can for 5 s, each to its own subscriber.
async fn flood(broker: &Broker) -> Flood {
    let mut subs = Vec::new();
    let mut pubs = Vec::new();
    for i in 0..FLOODS {
        let topic = format!("bench/flood/{i}");
        subs.push(
            Subscriber::start(
                broker,
                &format!("flood-sub-{i}"),
                &topic,
                QoS::AtMostOnce,
                false,
            )
            .await,
        );
        pubs.push(Arc::new(
            Publisher::start(broker, &format!("flood-pub-{i}")).await,
        ));
    }
    let cpu = Cpu::start(broker.pid);
    let started = Instant::now();
    let until = started + LOAD;
    let sends: Vec<_> = pubs
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let p = p.clone();
            tokio::spawn(async move {
                let topic = format!("bench/flood/{i}");
                let payload = vec![0u8; PAYLOAD];
                let mut n = 0u64;
                while !n.is_multiple_of(64) || Instant::now() < until {
                    p.client
                        .publish(&topic, QoS::AtMostOnce, false, payload.clone())
                        .await
                        .expect("publish");
                    n += 1;
                }
                n
            })
        })
        .collect();
    let mut sent = 0;
    for s in sends {
        sent += s.await.expect("publisher task");
    }
    let elapsed = started.elapsed();
    let received_in_window = subs.iter().map(|s| s.count.load(Relaxed)).sum();
    let cpu = cpu.share();
    tokio::time::sleep(DRAIN).await;
    let mut run = Flood {
        sent,
        received_in_window,
        received: 0,
        elapsed,
        cpu,
        errors: Vec::new(),
    };
    for s in subs {
        run.received += s.count.load(Relaxed);
        run.errors.extend(s.finish().await.error);
    }
    drop(pubs);
    run
}

struct Idle {
    /// VmRSS in KiB: before, with the idle connections, with one subscription each.
    before: u64,
    connected: u64,
    subscribed: u64,
    threads: (u64, u64),
}

impl Idle {
    fn per_connection(&self) -> f64 {
        (self.connected as f64 - self.before as f64) / IDLE as f64
    }
    fn per_subscribed(&self) -> f64 {
        (self.subscribed as f64 - self.before as f64) / IDLE as f64
    }
}

/// 1,000 connected clients that do nothing (keep-alive 60 s), then one subscription each.
async fn idle(broker: &Broker) -> Idle {
    tokio::time::sleep(SETTLE).await;
    let (before, threads_before) = status(broker.pid);
    let subacks = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::with_capacity(IDLE);
    let mut tasks = Vec::with_capacity(IDLE);
    for batch in 0..IDLE.div_ceil(IDLE_BATCH) {
        let ids = batch * IDLE_BATCH..((batch + 1) * IDLE_BATCH).min(IDLE);
        let mut pending = Vec::new();
        for i in ids {
            pending.push(async move { (i, connect(broker, &format!("idle-{i}")).await) });
        }
        // Connect a batch concurrently; then each client's event loop runs on its own.
        for (_, (client, mut eventloop)) in join_all(pending).await {
            let subacks = subacks.clone();
            tasks.push(tokio::spawn(async move {
                while let Ok(event) = eventloop.poll().await {
                    if matches!(event, Event::Incoming(Packet::SubAck(_))) {
                        subacks.fetch_add(1, Relaxed);
                    }
                }
            }));
            clients.push(client);
        }
    }
    tokio::time::sleep(SETTLE).await;
    let (connected, threads_after) = status(broker.pid);
    for (i, c) in clients.iter().enumerate() {
        c.subscribe(format!("bench/idle/{i}"), QoS::AtLeastOnce)
            .await
            .expect("subscribe");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while subacks.load(Relaxed) < IDLE {
        assert!(
            Instant::now() < deadline,
            "{}: only {} of {IDLE} SUBACKs",
            broker.name,
            subacks.load(Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(SETTLE).await;
    let (subscribed, _) = status(broker.pid);
    for t in &tasks {
        t.abort();
    }
    drop(clients);
    // Let the broker notice the closed sockets before the next run.
    tokio::time::sleep(Duration::from_millis(500)).await;
    Idle {
        before,
        connected,
        subscribed,
        threads: (threads_before, threads_after),
    }
}

/// Await futures concurrently on this task (no futures crate here).
async fn join_all<F: std::future::Future>(futs: Vec<F>) -> Vec<F::Output> {
    let mut futs: Vec<_> = futs.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = futs.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut done = true;
        for (f, slot) in futs.iter_mut().zip(out.iter_mut()) {
            if slot.is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *slot = Some(v),
                    std::task::Poll::Pending => done = false,
                }
            }
        }
        if done {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    out.into_iter().map(|o| o.unwrap()).collect()
}

// ---- /proc ----

/// (VmRSS in KiB, threads) of a process.
fn status(pid: u32) -> (u64, u64) {
    (
        support::proc_status(pid, "VmRSS:"),
        support::proc_status(pid, "Threads:"),
    )
}

/// CPU time (user + system) a process has used so far, all its threads.
fn cpu_time(pid: &str) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("proc stat");
    // Fields after the `(comm)`: state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')').expect("stat format") + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    ticks(fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime"))
}

/// Busy CPU time of the whole machine so far (all but idle and iowait).
fn machine_busy() -> Duration {
    let stat = std::fs::read_to_string("/proc/stat").expect("/proc/stat");
    let line = stat.lines().next().expect("cpu line");
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().expect("cpu field"))
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is inside user).
    ticks(v[0] + v[1] + v[2] + v[5] + v[6] + v[7])
}

fn ticks(n: u64) -> Duration {
    // SAFETY: sysconf(3) only reads a system constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Duration::from_secs_f64(n as f64 / hz)
}

/// Where the machine's CPU went during a run: the broker, this process (the load), the
/// rest (other work on the VM: noise).
struct Cpu {
    pid: String,
    broker: Duration,
    threads: HashMap<String, Duration>,
    client: Duration,
    machine: Duration,
    wall: Instant,
}

/// Each as a share of one core (2 vCPUs: at most 2.0 in all).
struct CpuShare {
    broker: f64,
    /// The broker's busiest thread (a single-threaded bottleneck shows here), and its name.
    busiest: f64,
    busiest_name: String,
    client: f64,
    other: f64,
}

/// CPU time so far of each thread of a process, by thread id.
fn thread_times(pid: &str) -> HashMap<String, Duration> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return HashMap::new();
    };
    tasks
        .filter_map(|t| t.ok())
        .map(|t| {
            let tid = t.file_name().to_string_lossy().into_owned();
            let time = cpu_time(&format!("{pid}/task/{tid}"));
            (tid, time)
        })
        .collect()
}

impl std::fmt::Display for CpuShare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "CPU: broker {:.0}% (busiest thread {:.0}%, {}), load {:.0}%, other {:.0}%",
            self.broker * 100.0,
            self.busiest * 100.0,
            self.busiest_name,
            self.client * 100.0,
            self.other * 100.0
        )
    }
}

impl Cpu {
    fn start(pid: u32) -> Self {
        let pid = pid.to_string();
        Cpu {
            broker: cpu_time(&pid),
            threads: thread_times(&pid),
            client: cpu_time("self"),
            machine: machine_busy(),
            pid,
            wall: Instant::now(),
        }
    }

    fn share(&self) -> CpuShare {
        let wall = self.wall.elapsed().as_secs_f64();
        let broker = cpu_time(&self.pid)
            .saturating_sub(self.broker)
            .as_secs_f64();
        let client = cpu_time("self").saturating_sub(self.client).as_secs_f64();
        let machine = machine_busy().saturating_sub(self.machine).as_secs_f64();
        let (busiest_tid, busiest) = thread_times(&self.pid)
            .into_iter()
            .map(|(tid, t)| {
                let before = self.threads.get(&tid).copied().unwrap_or_default();
                (tid, t.saturating_sub(before))
            })
            .max_by_key(|(_, t)| *t)
            .unwrap_or_default();
        let busiest_name =
            std::fs::read_to_string(format!("/proc/{}/task/{busiest_tid}/comm", self.pid))
                .unwrap_or_default()
                .trim()
                .to_owned();
        CpuShare {
            broker: broker / wall,
            busiest: busiest.as_secs_f64() / wall,
            busiest_name,
            client: client / wall,
            other: (machine - broker - client).max(0.0) / wall,
        }
    }
}

// ---- the tables ----

fn print_tables(columns: &[Column]) {
    let header = || {
        let names: Vec<&str> = columns.iter().map(|c| c.name.as_str()).collect();
        println!("| | {} | front / Mosquitto |", names.join(" | "));
        println!("|---|{}---:|", "---:|".repeat(columns.len()));
    };
    let mosquitto = columns.first().and_then(|c| c.results.as_ref());
    let front = columns.last().and_then(|c| c.results.as_ref());
    // A row of figures; `ratio`: with front / Mosquitto.
    let any_row = |label: &str,
                   cell: &dyn Fn(&Results) -> Option<f64>,
                   fmt: &dyn Fn(f64) -> String,
                   ratio: bool| {
        let cells: Vec<String> = columns
            .iter()
            .map(|c| c.results.as_ref().and_then(cell).map_or("–".into(), fmt))
            .collect();
        let ratio = match (mosquitto.and_then(cell), front.and_then(cell)) {
            (Some(m), Some(f)) if ratio && m > 0.0 => format!("{:.1}×", f / m),
            _ => String::new(),
        };
        println!("| {label} | {} | {ratio} |", cells.join(" | "));
    };
    let row = |label: &str, cell: &dyn Fn(&Results) -> Option<f64>, fmt: &dyn Fn(f64) -> String| {
        any_row(label, cell, fmt, true)
    };
    let info = |label: &str,
                cell: &dyn Fn(&Results) -> Option<f64>,
                fmt: &dyn Fn(f64) -> String| { any_row(label, cell, fmt, false) };
    let pct = |v: f64| format!("{v:.0}%");
    let cpu_rows = |share: &dyn Fn(&Results) -> &CpuShare| {
        row(
            "CPU: broker (one core = 100%)",
            &|r| Some(share(r).broker * 100.0),
            &pct,
        );
        info(
            "CPU: the broker's busiest thread",
            &|r| Some(share(r).busiest * 100.0),
            &pct,
        );
        info(
            "CPU: load clients (this benchmark)",
            &|r| Some(share(r).client * 100.0),
            &pct,
        );
        info(
            "CPU: other processes (noise)",
            &|r| Some(share(r).other * 100.0),
            &pct,
        );
    };
    let ms = |v: f64| {
        if v < 1.0 {
            format!("{v:.3} ms")
        } else {
            format!("{v:.2} ms")
        }
    };
    let count = |v: f64| format!("{v:.0}");
    let kib = |v: f64| format!("{v:.1} KiB");
    let mib = |v: f64| format!("{:.1} MiB", v / 1024.0);

    for (title, pick) in [
        (
            format!(
                "QoS 1 point-to-point: {PAIRS} pairs, each publisher {PAIR_RATE} msg/s for {} s, {PAYLOAD}-byte payload",
                LOAD.as_secs()
            ),
            (|r: &Results| &r.pairs) as fn(&Results) -> &Latency,
        ),
        (
            format!(
                "QoS 1 fan-out: 1 publisher at {FAN_RATE} msg/s for {} s to {FAN_SUBSCRIBERS} subscribers of one topic",
                LOAD.as_secs()
            ),
            |r: &Results| &r.fan,
        ),
    ] {
        println!("\n### {title}\n");
        header();
        info("delivered", &|r| Some(pick(r).lat.len() as f64), &|v| {
            let expected = columns
                .iter()
                .find_map(|c| c.results.as_ref().map(|r| pick(r).expected))
                .unwrap_or(0);
            format!("{v:.0} / {expected}")
        });
        row("p50", &|r| pick(r).pct(0.5), &ms);
        row("p99", &|r| pick(r).pct(0.99), &ms);
        row("max", &|r| pick(r).max(), &ms);
        cpu_rows(&|r| &pick(r).cpu);
    }

    println!(
        "\n### QoS 0 throughput: {FLOODS} publishers as fast as they can for {} s, each to its own subscriber, {PAYLOAD}-byte payload\n",
        LOAD.as_secs()
    );
    header();
    row(
        "received msg/s (while publishing)",
        &|r| Some(r.flood.received_rate()),
        &count,
    );
    info("sent msg/s", &|r| Some(r.flood.sent_rate()), &count);
    info("delivered", &|r| Some(r.flood.delivered_pct()), &|v| {
        format!("{v:.1}%")
    });
    cpu_rows(&|r| &r.flood.cpu);

    println!("\n### Memory: {IDLE} idle connections (keep-alive 60 s), broker VmRSS\n");
    header();
    info("broker before", &|r| Some(r.idle.before as f64), &mib);
    row(
        "broker with the connections",
        &|r| Some(r.idle.connected as f64),
        &mib,
    );
    row(
        "per 1,000 idle connections",
        &|r| Some(r.idle.per_connection() * 1000.0),
        &mib,
    );
    row(
        "per idle connection",
        &|r| Some(r.idle.per_connection()),
        &kib,
    );
    row(
        "per idle connection with 1 subscription",
        &|r| Some(r.idle.per_subscribed()),
        &kib,
    );
    info(
        "broker threads before",
        &|r| Some(r.idle.threads.0 as f64),
        &count,
    );
    info(
        "broker threads with the connections",
        &|r| Some(r.idle.threads.1 as f64),
        &count,
    );

    for c in columns {
        if let Some(r) = &c.results {
            let errors: Vec<&String> = r
                .pairs
                .errors
                .iter()
                .chain(&r.fan.errors)
                .chain(&r.flood.errors)
                .collect();
            if !errors.is_empty() {
                println!("\n{}: client errors: {errors:?}", c.name);
            }
        }
    }
}
