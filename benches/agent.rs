//! The PC agent's footprint: resident memory and CPU of `venued agent run` and of its
//! overlay helper, idle (locked, no session) and during a session with a warning and
//! the lock at the end, against a real controller over MQTT/TLS on loopback.
//!
//!     cargo bench --bench agent
//!
//! The overlay part needs Xvfb (scripts/test-tools.sh installs it); without it only the
//! agent is measured. Budgets (issue 6): agent < 15 MB, overlay < 50 MB.
// A benchmark harness: a failed setup step should stop it loudly.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::disallowed_methods)]

#[path = "support/mod.rs"]
mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_venued");
/// How long each phase is sampled.
const PHASE: Duration = Duration::from_secs(20);

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn venued(data: &Path, args: &[&str]) -> serde_json::Value {
    let out = Command::new(BIN)
        .args(args)
        .env("VENUED_DATA_DIR", data)
        .env_remove("VENUED_CONFIG")
        .stdin(Stdio::null())
        .output()
        .expect("run venued");
    assert!(
        out.status.success(),
        "venued {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
}

fn wait_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// CPU time (user + system) of a process so far, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("proc stat");
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')').expect("stat") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime")
}

fn ticks_per_second() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as u64 } else { 100 }
}

/// Sample a process over `PHASE`: (max VmRSS KiB, CPU %).
fn sample(pids: &[u32]) -> Vec<(u64, f64)> {
    let start: Vec<u64> = pids.iter().map(|p| cpu_ticks(*p)).collect();
    let began = Instant::now();
    let mut rss = vec![0u64; pids.len()];
    while began.elapsed() < PHASE {
        for (i, p) in pids.iter().enumerate() {
            rss[i] = rss[i].max(support::proc_status(*p, "VmRSS:"));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let secs = began.elapsed().as_secs_f64();
    pids.iter()
        .enumerate()
        .map(|(i, p)| {
            let used = (cpu_ticks(*p) - start[i]) as f64 / ticks_per_second() as f64;
            (rss[i], 100.0 * used / secs)
        })
        .collect()
}

fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let (plain, tls) = (support::free_port(), support::free_port());
    let config = dir.path().join("venued.toml");
    std::fs::write(
        &config,
        "[sessions]\nwarnings = [\"10s\"]\ngrace = \"2s\"\n",
    )
    .expect("config");
    let _controller = Kill(
        Command::new(BIN)
            .arg("--config")
            .arg(&config)
            .arg("serve")
            .env("VENUED_DATA_DIR", &data)
            .env("VENUED_HTTP_LISTEN", "")
            .env("VENUED_HTTPS_LISTEN", "")
            .env("VENUED_MQTT_LISTEN", format!("127.0.0.1:{plain}"))
            .env("VENUED_MQTTS_LISTEN", format!("127.0.0.1:{tls}"))
            .env("VENUED_LOG", "warn")
            .env_remove("VENUED_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn controller"),
    );
    wait_port(tls);
    while !data.join("venued.sock").exists() {
        std::thread::sleep(Duration::from_millis(20));
    }
    let added = venued(
        &data,
        &[
            "station", "add", "pc-01", "--name", "PC 01", "--kind", "pc", "--json",
        ],
    );

    // The files `venued agent enroll` would write.
    let adir = dir.path().join("agent");
    std::fs::create_dir_all(&adir).expect("agent dir");
    let ca = std::fs::read(data.join("tls/ca.pem")).expect("ca.pem");
    let der: rustls_pki_types::CertificateDer<'static> =
        rustls_pki_types::pem::PemObject::from_pem_slice(&ca).expect("CA pem");
    let creds = serde_json::json!({
        "station": "pc-01",
        "controller_host": "127.0.0.1",
        "mqtt_tls_ports": [tls],
        "username": added["agent"]["username"],
        "password": added["agent"]["password"],
        "ca_fingerprint": venued::tls::fingerprint_sha256(&der),
    });
    std::fs::write(adir.join("agent.json"), creds.to_string()).expect("agent.json");
    std::fs::write(adir.join("ca.pem"), ca).expect("ca.pem");

    // A virtual display for the overlay, when Xvfb is here.
    let display = format!(":{}", 900 + std::process::id() % 90);
    let xvfb = Command::new("Xvfb")
        .arg(&display)
        .args(["-screen", "0", "1920x1080x24", "-nolisten", "tcp"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()
        .map(Kill);
    if xvfb.is_none() {
        println!("Xvfb not found: measuring the agent without the overlay");
    }
    std::thread::sleep(Duration::from_millis(500));
    let mut cmd = Command::new(BIN);
    cmd.args(["agent", "run", "--adapter", "log", "--log-file"])
        .arg(dir.path().join("actions.log"))
        .arg("--dir")
        .arg(&adir)
        .env("VENUED_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    if xvfb.is_some() {
        cmd.arg("--overlay").env("DISPLAY", &display);
    }
    let agent = Kill(cmd.spawn().expect("spawn agent"));
    let pid = agent.0.id();
    std::thread::sleep(Duration::from_secs(2));
    let mut pids = vec![pid];
    if xvfb.is_some() {
        let children =
            std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        match children
            .split_whitespace()
            .next()
            .and_then(|c| c.parse().ok())
        {
            Some(helper) => pids.push(helper),
            None => println!("the overlay helper did not start"),
        }
    }

    println!(
        "\nvenued agent, 1920x1080 display, {} s per phase",
        PHASE.as_secs()
    );
    println!("{:<36} {:>12} {:>8}", "phase / process", "max VmRSS", "CPU");
    let names = ["agent", "overlay helper"];
    let idle = sample(&pids);
    for (i, (rss, cpu)) in idle.iter().enumerate() {
        println!(
            "{:<36} {:>8.1} MiB {:>7.2}%",
            format!("locked, idle: {}", names[i]),
            *rss as f64 / 1024.0,
            cpu
        );
    }
    // A session that ends inside the phase: countdown redraws, a warning, then the lock.
    venued(&data, &["session", "start", "pc-01", "15s"]);
    let busy = sample(&pids);
    for (i, (rss, cpu)) in busy.iter().enumerate() {
        println!(
            "{:<36} {:>8.1} MiB {:>7.2}%",
            format!("15 s session + lock: {}", names[i]),
            *rss as f64 / 1024.0,
            cpu
        );
    }
    let actions = std::fs::read_to_string(dir.path().join("actions.log")).unwrap_or_default();
    assert!(
        actions.contains("unlock") && actions.contains(" lock"),
        "the session did not run: {actions}"
    );
}
