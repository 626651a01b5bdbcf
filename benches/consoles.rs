//! Console enforcement at scale: 200 console stations whose sessions expire in the same
//! instant. How long until each console's router entry exists, and until each plug is
//! switched off?
//!
//!     cargo bench --bench consoles
//!
//! One process, loopback only: the real engine (redb under `target/bench-consoles`, real
//! fsyncs) on a manual clock, the real reconciler (`venued::enforce`) with its real
//! drivers, one Shelly Gen2 fake per station (HTTP with a password, so every call goes
//! through Digest auth) and one MikroTik fake (HTTPS REST, pinned certificate) shared by
//! all. The ladder blocks and cuts at once (no standby device, `allow_cut`, every delay
//! 0, session grace 0), and every console draws 150 W, so the end of paid time asks for
//! a block and a cut on every station together.
//!
//! Each run: set up, let the reconciler block the idle consoles, start every session,
//! wait until every plug is on, every console unblocked, those actions recorded and a
//! power sample shows every plug drawing (what the ladder needs to cut), then advance the
//! clock past the end of paid time and `sync` the engine. From that instant a separate
//! thread samples the fakes every millisecond: when each address appears in the router's
//! list and when each relay goes off. The records (`device_acted`) are counted from the
//! event log.
//!
//! Environment: `VENUED_BENCH_STATIONS` (default 200), `VENUED_BENCH_RUNS` (default 3),
//! `VENUED_BENCH_POLL_MS` (comma-separated poll intervals to run, default `10000,100`:
//! the shipped default and the one the tests use).
// A benchmark harness: a failed setup step should stop it loudly. The sampling thread
// is a plain thread, not an async worker, so it may sleep.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::disallowed_methods)]

#[path = "support/mod.rs"]
#[allow(dead_code)]
mod support;

use jiff::SignedDuration;
use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use venued::clock::ManualClock;
use venued::config::ConsolesConfig;
use venued::domain::device::{DeviceKind, DeviceName, Enforcement, Ladder, NetworkBlock};
use venued::domain::enforcement::{ActionOutcome, DeviceAction};
use venued::domain::timekeeping::TrustSource;
use venued::domain::{Actor, Command, EventKind, SessionPolicy, StationId, StationKind};
use venued::enforce::{self, Settings};
use venued::engine::{Engine, EngineConfig, Request};
use venued::fakes::mikrotik::{Mikrotik as Router, MikrotikConfig};
use venued::fakes::shelly::{Gen2Config, ShellyGen2};
use venued::store::{StoreLocation, StoreOptions};

/// The router device's default list (`DeviceKind::Mikrotik.list`).
const LIST: &str = "venue-blocked";
const PLUG_PASSWORD: &str = "bench plug pass";
const LOAD_W: f64 = 150.0;
const STANDBY_BELOW_W: u32 = 15;
const PAID: SignedDuration = SignedDuration::from_mins(30);
/// Longest any phase may take before the benchmark gives up.
const SETUP_LIMIT: Duration = Duration::from_secs(120);
const MEASURE_LIMIT: Duration = Duration::from_secs(60);

fn env_num(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?}: not a number")),
        Err(_) => default,
    }
}

fn main() {
    let stations = usize::try_from(env_num("VENUED_BENCH_STATIONS", 200)).unwrap();
    let runs = env_num("VENUED_BENCH_RUNS", 3);
    let polls: Vec<u64> = std::env::var("VENUED_BENCH_POLL_MS")
        .unwrap_or_else(|_| "10000,100".into())
        .split(',')
        .map(|p| p.trim().parse().expect("VENUED_BENCH_POLL_MS: numbers"))
        .collect();
    assert!(stations > 0 && stations <= 60_000, "1 to 60000 stations");
    raise_fd_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    println!("{stations} console stations, Shelly Gen2 fakes with Digest auth, one MikroTik fake");
    println!();
    println!(
        "| poll | run | engine expiry | blocked p50 | p90 | max (all) | plug off p50 | p90 | max (all) | cuts recorded | all recorded | router requests | list reads / adds / conn reads / other | failed actions | busy cores (sampler) | peak RSS |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|");
    for poll in polls {
        for run in 1..=runs {
            let r = runtime.block_on(one_run(stations, Duration::from_millis(poll)));
            println!(
                "| {} | {run} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} / {} / {} / {} | {} | {:.2} ({:.2}) | {:.1} MiB |",
                if poll >= 1000 {
                    format!("{} s", poll / 1000)
                } else {
                    format!("{poll} ms")
                },
                fmt(r.sync),
                fmt(pct(&r.blocked, 0.5)),
                fmt(pct(&r.blocked, 0.9)),
                fmt(pct(&r.blocked, 1.0)),
                fmt(pct(&r.off, 0.5)),
                fmt(pct(&r.off, 0.9)),
                fmt(pct(&r.off, 1.0)),
                fmt(r.cuts_recorded),
                fmt(r.recorded),
                r.router_requests.total(),
                r.router_requests.list_reads,
                r.router_requests.adds,
                r.router_requests.connection_reads,
                r.router_requests.other,
                r.failed,
                r.busy,
                r.sampler_share,
                r.peak_rss_kib as f64 / 1024.0,
            );
        }
    }
}

/// CPU time used so far by this process (`RUSAGE_SELF`) or the calling thread
/// (`RUSAGE_THREAD`), user plus system.
fn cpu(who: libc::c_int) -> Duration {
    // SAFETY: getrusage fills the zeroed struct we own.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(who, &mut ru);
        ru
    };
    let tv = |t: libc::timeval| {
        Duration::from_secs(u64::try_from(t.tv_sec).unwrap_or(0))
            + Duration::from_micros(u64::try_from(t.tv_usec).unwrap_or(0))
    };
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Some CI machines start processes with 1,024 descriptors; 200 plugs, their open
/// connections and the router's need more.
fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit on our own process with a valid, initialised struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// The router's requests by kind.
#[derive(Default)]
struct Requests {
    /// Reads of the address list: a block's look before it adds, and entry checks.
    list_reads: usize,
    /// Entries added.
    adds: usize,
    /// Reads of the connection table (a block clears the console's connections).
    connection_reads: usize,
    other: usize,
}

impl Requests {
    fn of(lines: &[String]) -> Self {
        let mut r = Self::default();
        for l in lines {
            if l.starts_with("GET /rest/ip/firewall/address-list") {
                r.list_reads += 1;
            } else if l.starts_with("PUT /rest/ip/firewall/address-list") {
                r.adds += 1;
            } else if l.starts_with("GET /rest/ip/firewall/connection") {
                r.connection_reads += 1;
            } else {
                r.other += 1;
            }
        }
        r
    }

    fn total(&self) -> usize {
        self.list_reads + self.adds + self.connection_reads + self.other
    }
}

struct RunResult {
    /// How long the engine took to expire and close every session (`sync`).
    sync: Duration,
    /// Per station, from the clock advance to its entry in the router's list.
    blocked: Vec<Duration>,
    /// Per station, from the clock advance to its relay off.
    off: Vec<Duration>,
    /// REST requests the router got from the clock advance until every block was recorded.
    router_requests: Requests,
    /// `device_acted` records with outcome `failed` after the advance (retried actions).
    failed: usize,
    /// From the clock advance until every block and cut was in the event log.
    recorded: Duration,
    /// ... until every cut was (its records queue behind the blocks' or among them).
    cuts_recorded: Duration,
    /// Cores busy (process CPU time / wall time) from the advance until the last block or
    /// cut was seen, and the sampling thread's share of that.
    busy: f64,
    sampler_share: f64,
    peak_rss_kib: u64,
}

fn name(s: &str) -> DeviceName {
    DeviceName::parse(s).unwrap()
}

fn address(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(
        10,
        20,
        u8::try_from(i / 250).unwrap(),
        u8::try_from(i % 250 + 1).unwrap(),
    ))
}

async fn exec(engine: &Engine, command: Command, secret: Option<&str>) {
    let mut request = Request::new(command, Actor::Local { uid: None });
    request.secret = secret.map(str::to_owned);
    let what = request.command.name();
    engine
        .execute(request)
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"));
}

/// Run `f` on every station at once (group commit makes setup fast) and wait for all.
async fn each<F, Fut>(n: usize, f: F)
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let tasks: Vec<_> = (0..n).map(|i| tokio::spawn(f(i))).collect();
    for t in tasks {
        t.await.expect("setup task");
    }
}

/// Wait for `cond`, at most `limit`, checking every 10 ms.
async fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "timed out after {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Reads the event log forward from where it last stopped.
struct LogTail {
    store: venued::store::Store,
    after: u64,
}

impl LogTail {
    fn new(engine: &Engine) -> Self {
        Self {
            store: engine.store().expect("store"),
            after: 0,
        }
    }

    fn next(&mut self) -> Vec<EventKind> {
        let mut out = Vec::new();
        loop {
            let page = self.store.events(self.after, 4096).expect("events");
            let Some(last) = page.last() else {
                return out;
            };
            self.after = last.seq;
            out.extend(page.into_iter().map(|e| e.body.kind));
        }
    }
}

/// `device_acted` done records of `action` among `events`, and failed ones of any action.
fn count(events: &[EventKind], action: DeviceAction) -> (usize, usize) {
    let mut done = 0;
    let mut failed = 0;
    for e in events {
        if let EventKind::DeviceActed {
            action: a, outcome, ..
        } = e
        {
            match outcome {
                ActionOutcome::Done if *a == action => done += 1,
                ActionOutcome::Failed { .. } => failed += 1,
                _ => {}
            }
        }
    }
    (done, failed)
}

fn router_kind(router: &Router) -> DeviceKind {
    use base64::Engine as _;
    let body: String = router
        .cert_pem()
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(body)
        .expect("certificate PEM");
    DeviceKind::Mikrotik {
        url: format!("https://{}", router.https_addr()),
        user: "admin".into(),
        list: LIST.into(),
        tls_fingerprint: Some(venued::devices::mikrotik::fingerprint(&der)),
    }
}

async fn one_run(n: usize, poll: Duration) -> RunResult {
    // Peak RSS of this run only: "5" resets VmHWM to the current RSS (Linux 4.0+).
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-consoles");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("bench dir");

    let clock = ManualClock::new(
        "2026-11-23T18:00:00Z".parse().unwrap(),
        Some(TrustSource::SystemSync),
    );
    let engine = Engine::start(
        StoreLocation::Dir(dir.clone()),
        StoreOptions::default(),
        EngineConfig {
            // Grace 0: the ladder's hard steps start at the end of paid time.
            policy: SessionPolicy::new(Vec::new(), SignedDuration::ZERO, PAID * 2),
            ..EngineConfig::default()
        },
        Arc::new(clock.clone()),
    )
    .expect("engine");

    let router = Arc::new(Router::start(MikrotikConfig::default()).await.unwrap());
    let mut plugs = Vec::with_capacity(n);
    for i in 0..n {
        let plug = ShellyGen2::start(Gen2Config {
            password: Some(PLUG_PASSWORD.into()),
            load_w: LOAD_W,
            ..Gen2Config::new(&format!("AABB{i:08X}"))
        })
        .await
        .unwrap();
        plugs.push(plug);
    }
    let plugs = Arc::new(plugs);
    let ids: Arc<Vec<StationId>> = Arc::new(
        (0..n)
            .map(|i| StationId::parse(&format!("ps5-{i:03}")).unwrap())
            .collect(),
    );
    let addresses: Arc<Vec<String>> = Arc::new((0..n).map(|i| address(i).to_string()).collect());

    exec(
        &engine,
        Command::AddDevice {
            name: name("router"),
            kind: router_kind(&router),
        },
        Some(&MikrotikConfig::default().password),
    )
    .await;
    each(n, |i| {
        let (engine, ids, host) = (
            engine.clone(),
            ids.clone(),
            plugs[i].http_addr().to_string(),
        );
        async move {
            let id = ids[i].clone();
            exec(
                &engine,
                Command::AddStation {
                    id: id.clone(),
                    name: format!("PS5 {i}"),
                    kind: StationKind::Console,
                    zone: None,
                },
                None,
            )
            .await;
            let plug = name(&format!("plug-{i:03}"));
            exec(
                &engine,
                Command::AddDevice {
                    name: plug.clone(),
                    kind: DeviceKind::ShellyGen2 {
                        host,
                        mqtt_prefix: None,
                    },
                },
                Some(PLUG_PASSWORD),
            )
            .await;
            let enforcement = Enforcement {
                plug: Some(plug),
                network: Some(NetworkBlock {
                    router: name("router"),
                    address: address(i),
                }),
                standby: None,
                standby_command: None,
                ladder: Ladder {
                    block_after_ms: 0,
                    standby_after_ms: 0,
                    standby_confirm_ms: 0,
                    standby_below_w: STANDBY_BELOW_W,
                    cut_after_ms: 0,
                    allow_cut: true,
                },
            };
            exec(
                &engine,
                Command::SetEnforcement {
                    station: id,
                    enforcement: Some(enforcement),
                },
                None,
            )
            .await;
        }
    })
    .await;

    // The reconciler starts on the finished table (a running one would rebuild its
    // drivers once per added device). Shipped timings apart from the poll interval; a
    // power sample every second shows when it has seen every plug drawing.
    let consoles = ConsolesConfig {
        poll_interval: SignedDuration::try_from(poll).unwrap(),
        power_sample_interval: SignedDuration::from_secs(1),
        ..ConsolesConfig::default()
    };
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let reconciler = enforce::spawn(engine.clone(), Settings::from(&consoles), None, stop_rx);
    let mut log = LogTail::new(&engine);

    let listed = |router: &Router| -> HashSet<String> {
        router
            .address_list(LIST)
            .into_iter()
            .filter(|e| !e.disabled)
            .map(|e| e.address)
            .collect()
    };
    // Idle consoles are blocked first.
    wait_for("every idle console blocked", SETUP_LIMIT, || {
        listed(&router).len() >= n
    })
    .await;

    each(n, |i| {
        let (engine, ids) = (engine.clone(), ids.clone());
        async move {
            exec(
                &engine,
                Command::StartSession {
                    station: ids[i].clone(),
                    duration: Some(PAID),
                },
                None,
            )
            .await;
        }
    })
    .await;
    wait_for("every plug on", SETUP_LIMIT, || {
        plugs.iter().all(ShellyGen2::relay_on)
    })
    .await;
    wait_for("every console unblocked", SETUP_LIMIT, || {
        listed(&router).is_empty()
    })
    .await;
    // The power-on and unblock records are in (the recorder is idle again) and a power
    // sample saw every plug drawing.
    let (mut on, mut unblocked, mut sampled) = (0, 0, false);
    wait_for(
        "power-on and unblock recorded, every plug seen drawing",
        SETUP_LIMIT,
        || {
            let events = log.next();
            on += count(&events, DeviceAction::PowerOn).0;
            unblocked += count(&events, DeviceAction::Unblock).0;
            sampled |= events.iter().any(|e| {
                matches!(e, EventKind::PowerSampled { samples }
                    if samples.len() == n
                        && samples.iter().all(|s| s.watts >= STANDBY_BELOW_W))
            });
            on >= n && unblocked >= n && sampled
        },
    )
    .await;

    // Paid time ends for everyone at once.
    let requests_before = router.requests().len();
    let cpu0 = cpu(libc::RUSAGE_SELF);
    let t0 = Instant::now();
    let sampler = {
        let (plugs, router, addresses) = (plugs.clone(), router.clone(), addresses.clone());
        tokio::task::spawn_blocking(move || sample(&plugs, &router, &addresses, t0))
    };
    clock.advance(PAID.unsigned_abs());
    engine.sync().await.expect("sync");
    let sync = t0.elapsed();

    let (mut blocks, mut offs, mut failed, mut cuts_recorded) = (0, 0, 0, None);
    wait_for("every block and cut recorded", MEASURE_LIMIT, || {
        let events = log.next();
        let (b, f) = count(&events, DeviceAction::Block);
        let (o, _) = count(&events, DeviceAction::PowerOff);
        blocks += b;
        offs += o;
        failed += f;
        if offs >= n && cuts_recorded.is_none() {
            cuts_recorded = Some(t0.elapsed());
        }
        blocks >= n && offs >= n
    })
    .await;
    let recorded = t0.elapsed();
    let sampled = sampler.await.expect("sampler");
    let (blocked, off) = (sampled.blocked, sampled.off);
    // CPU of the whole process while the devices were being driven (sampler included),
    // as cores kept busy.
    let window = sampled.done_at.as_secs_f64().max(1e-3);
    let busy = (sampled.process_cpu - cpu0).as_secs_f64() / window;
    let sampler_share = sampled.own_cpu.as_secs_f64() / window;
    // Every block has finished (it is recorded after its last request): those requests,
    // plus the entry checks of blocked consoles the poll interval brought into the window.
    let router_requests = Requests::of(&router.requests()[requests_before..]);
    let peak_rss_kib = support::proc_status(std::process::id(), "VmHWM:");

    stop.send_replace(true);
    let _ = tokio::time::timeout(Duration::from_secs(10), reconciler).await;
    engine.shutdown().await;
    drop(plugs);
    drop(router);
    let _ = std::fs::remove_dir_all(&dir);
    RunResult {
        sync,
        blocked,
        off,
        router_requests,
        failed,
        recorded,
        cuts_recorded: cuts_recorded.unwrap_or(recorded),
        busy,
        sampler_share,
        peak_rss_kib,
    }
}

/// From `t0`, every millisecond: which addresses are in the router's list and which
/// relays are off.
fn sample(plugs: &[ShellyGen2], router: &Router, addresses: &[String], t0: Instant) -> Sampled {
    let cpu0 = cpu(libc::RUSAGE_THREAD);
    let n = plugs.len();
    let mut blocked: Vec<Option<Duration>> = vec![None; n];
    let mut off: Vec<Option<Duration>> = vec![None; n];
    let (done_at, process_cpu) = loop {
        let listed: HashSet<String> = router
            .address_list(LIST)
            .into_iter()
            .filter(|e| !e.disabled)
            .map(|e| e.address)
            .collect();
        let at = t0.elapsed();
        for (i, a) in addresses.iter().enumerate() {
            if blocked[i].is_none() && listed.contains(a) {
                blocked[i] = Some(at);
            }
        }
        for (i, p) in plugs.iter().enumerate() {
            if off[i].is_none() && !p.relay_on() {
                off[i] = Some(t0.elapsed());
            }
        }
        let done = |v: &[Option<Duration>]| v.iter().filter(|t| t.is_some()).count();
        if done(&blocked) == n && done(&off) == n {
            break (t0.elapsed(), cpu(libc::RUSAGE_SELF));
        }
        assert!(
            t0.elapsed() < MEASURE_LIMIT,
            "after {MEASURE_LIMIT:?}: {} of {n} consoles blocked, {} of {n} plugs off",
            done(&blocked),
            done(&off)
        );
        std::thread::sleep(Duration::from_millis(1));
    };
    let mut blocked: Vec<Duration> = blocked.into_iter().flatten().collect();
    let mut off: Vec<Duration> = off.into_iter().flatten().collect();
    blocked.sort();
    off.sort();
    Sampled {
        blocked,
        off,
        done_at,
        process_cpu,
        own_cpu: cpu(libc::RUSAGE_THREAD) - cpu0,
    }
}

/// What the sampling thread saw.
struct Sampled {
    /// Per station, when its entry was first in the router's list (sorted).
    blocked: Vec<Duration>,
    /// Per station, when its relay was first off (sorted).
    off: Vec<Duration>,
    /// When the last of them was seen.
    done_at: Duration,
    /// The process's CPU time then.
    process_cpu: Duration,
    /// The sampling thread's own CPU time.
    own_cpu: Duration,
}

/// The `p`-quantile of sorted samples (1.0: the largest).
fn pct(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len());
    sorted[i - 1]
}

fn fmt(d: Duration) -> String {
    if d >= Duration::from_secs(1) {
        format!("{:.2} s", d.as_secs_f64())
    } else if d < Duration::from_millis(10) {
        format!("{:.1} ms", d.as_secs_f64() * 1000.0)
    } else {
        format!("{:.0} ms", d.as_secs_f64() * 1000.0)
    }
}
