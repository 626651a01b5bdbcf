//! The real agent process (`venued agent run`, log adapter) against the real controller
//! over MQTT: unlock on session start, warnings, lock at expiry, and enforcement that goes
//! on when the controller dies.
// Plain test threads (no async runtime here): sleeping and reading the wall clock to
// measure lateness are what these tests do.
#![allow(clippy::disallowed_methods)]

use crate::mqtt::MqttDaemon;
use crate::support::*;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Sessions short enough to test: warn 3 s before the end, 1 s of grace.
pub(crate) const CONFIG: &str = "[sessions]\nwarnings = [\"3s\"]\ngrace = \"1s\"\n";

/// Write the files enrollment would, for `pc-01`'s agent.
pub(crate) fn agent_dir(d: &MqttDaemon, dir: &Path, user: &str, pass: &str) {
    std::fs::create_dir_all(dir).unwrap();
    let ca = std::fs::read(d.dir.join("tls/ca.pem")).unwrap();
    let fingerprint = venued::tls::fingerprint_sha256(
        &rustls_pki_types::pem::PemObject::from_pem_slice(&ca)
            .map(|c: rustls_pki_types::CertificateDer<'static>| c.to_vec())
            .unwrap(),
    );
    let creds = serde_json::json!({
        "station": "pc-01",
        "controller_host": "127.0.0.1",
        "mqtt_tls_ports": [d.tls],
        "username": user,
        "password": pass,
        "ca_fingerprint": fingerprint,
    });
    std::fs::write(dir.join("agent.json"), creds.to_string()).unwrap();
    std::fs::write(dir.join("ca.pem"), ca).unwrap();
}

/// A controller with station pc-01 and, in `<dir>/agent`, the files its agent needs.
fn controller_and_agent() -> (tempfile::TempDir, MqttDaemon, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let d = MqttDaemon::start_config(dir.path(), CONFIG);
    let (user, pass) = d.add_pc("pc-01");
    let adir = dir.path().join("agent");
    agent_dir(&d, &adir, &user, &pass);
    (dir, d, adir)
}

/// A running agent and its action lines, with when each arrived.
pub(crate) struct Agent {
    pub(crate) child: Child,
    lines: mpsc::Receiver<(Instant, String)>,
}

impl Agent {
    fn start(dir: &Path, extra: &[&str]) -> Self {
        Self::start_with(dir, &["--adapter", "log"], extra, None)
    }

    pub(crate) fn start_with(
        dir: &Path,
        adapter: &[&str],
        extra: &[&str],
        path: Option<&Path>,
    ) -> Self {
        let mut cmd = Command::new(BIN);
        if let Some(bin) = path {
            let old = std::env::var_os("PATH").unwrap_or_default();
            let mut paths = vec![bin.to_path_buf()];
            paths.extend(std::env::split_paths(&old));
            cmd.env("PATH", std::env::join_paths(paths).unwrap());
        }
        cmd.args(["agent", "run"])
            .args(adapter)
            .arg("--dir")
            .arg(dir)
            .args(extra);
        Self::spawn(cmd)
    }

    /// Run `cmd` (a `venued agent run ...`), reading its action lines from stdout.
    pub(crate) fn spawn(mut cmd: Command) -> Self {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            // The agent's log: shown by the test runner when a test fails.
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let (tx, lines) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                // "<wall clock> <action...>": keep the action.
                let action = line
                    .split_once(' ')
                    .map(|(_, a)| a.to_owned())
                    .unwrap_or(line);
                if tx.send((Instant::now(), action)).is_err() {
                    return;
                }
            }
        });
        Self { child, lines }
    }

    /// The next action line starting with `prefix` within `within`, and when it came.
    pub(crate) fn expect(&self, prefix: &str, within: Duration) -> Instant {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok((at, line)) if line.starts_with(prefix) => return at,
                Ok(_) => {}
                Err(_) => panic!("the agent did not {prefix:?} within {within:?}"),
            }
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Seconds between the session's `ends_at` (from the API) and an instant we saw.
fn lateness(ends_at: jiff::Timestamp, seen: Instant) -> f64 {
    // Map the wall deadline onto our monotonic clock through "now".
    let now_wall = wall_now();
    let until_end = ends_at.duration_since(now_wall).as_secs_f64();
    let now = Instant::now();
    let seen_from_now = if seen >= now {
        seen.duration_since(now).as_secs_f64()
    } else {
        -(now.duration_since(seen).as_secs_f64())
    };
    seen_from_now - until_end
}

fn wall_now() -> jiff::Timestamp {
    jiff::Timestamp::now()
}

fn start_session(d: &MqttDaemon, secs: u32) -> jiff::Timestamp {
    let v = d.cli(&["session", "start", "pc-01", &format!("{secs}s"), "--json"]);
    v["ends_at"].as_str().unwrap().parse().unwrap()
}

#[test]
fn the_agent_unlocks_warns_and_locks_on_time_with_a_skewed_clock() {
    let (_dir, d, adir) = controller_and_agent();
    // This PC's clock is 10 minutes fast: it must change nothing.
    let agent = Agent::start(&adir, &["--wall-offset-secs", "600"]);
    // Give it time to connect and take the retained (free) state.
    std::thread::sleep(Duration::from_millis(800));
    let ends_at = start_session(&d, 6);
    agent.expect("unlock", Duration::from_secs(5));
    let warned = agent.expect("warn 3", Duration::from_secs(8));
    let late = lateness(ends_at - jiff::SignedDuration::from_secs(3), warned);
    assert!(late.abs() < 1.0, "warning {late:.3} s off");
    let locked = agent.expect("lock", Duration::from_secs(10));
    // Locked when the grace period (1 s) is over, within the venue's ±5 s.
    let late = lateness(ends_at + jiff::SignedDuration::from_secs(1), locked);
    eprintln!("lock lateness after grace: {late:.3} s");
    assert!(late.abs() < 5.0 && late > -0.5, "locked {late:.3} s off");
}

#[test]
fn the_agent_still_locks_when_the_controller_is_gone() {
    let (_dir, d, adir) = controller_and_agent();
    let agent = Agent::start(&adir, &[]);
    std::thread::sleep(Duration::from_millis(800));
    let ends_at = start_session(&d, 5);
    agent.expect("unlock", Duration::from_secs(5));
    let status = agent_status(&adir);
    assert_eq!(status.status.code(), Some(0), "{}", stdout(&status));
    let text = stdout(&status);
    assert!(text.contains("agent:       running"), "{text}");
    assert!(text.contains("(connected)"), "{text}");
    assert!(
        text.contains("unlocked,") && text.contains(" left"),
        "{text}"
    );
    // The controller dies mid-session (SIGKILL: no goodbye).
    drop(d);
    let locked = agent.expect("lock", Duration::from_secs(12));
    let late = lateness(ends_at, locked);
    eprintln!("offline lock lateness: {late:.3} s");
    assert!(late > -0.5 && late < 5.0, "locked {late:.3} s off ends_at");
    // The PC's own view says so.
    std::thread::sleep(Duration::from_millis(200));
    let text = stdout(&agent_status(&adir));
    assert!(
        text.contains("unreachable") && text.contains("screen:      locked"),
        "{text}"
    );
    let json: serde_json::Value = serde_json::from_slice(
        &Command::new(BIN)
            .args(["agent", "status", "--json", "--dir"])
            .arg(&adir)
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert_eq!(
        (json["locked"].as_bool(), json["connected"].as_bool()),
        (Some(true), Some(false))
    );
}

/// Wait until the stand-ins have recorded as many calls as `want`, then compare.
fn expect_calls(calls: &Path, want: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let got = std::fs::read_to_string(calls).unwrap_or_default();
        let lines: Vec<&str> = got.lines().collect();
        if lines.len() >= want.len() {
            assert_eq!(lines, want);
            return;
        }
        assert!(Instant::now() < deadline, "calls so far: {lines:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn agent_status(dir: &Path) -> std::process::Output {
    Command::new(BIN)
        .args(["agent", "status", "--dir"])
        .arg(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn agent_status_and_the_service_unit_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let adir = dir.path().join("agent");
    std::fs::create_dir_all(&adir).unwrap();
    // No agent has run here: a clear message, exit status 3.
    let out = agent_status(&adir);
    assert_eq!(out.status.code(), Some(3));
    assert!(stderr(&out).contains("status.json"), "{}", stderr(&out));
    let units = dir.path().join("units");
    let install = |extra: &[&str]| {
        Command::new(BIN)
            .args(["agent", "install-service", "--no-systemctl", "--unit-dir"])
            .arg(&units)
            .arg("--dir")
            .arg(&adir)
            .args(extra)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    // Not enrolled yet: refused.
    let out = install(&[]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("venued agent enroll"),
        "{}",
        stderr(&out)
    );
    std::fs::write(adir.join("agent.json"), "{}").unwrap();
    let out = install(&[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let unit = std::fs::read_to_string(units.join("venued-agent.service")).unwrap();
    assert!(
        unit.contains(&format!(
            "agent run --dir {} --adapter loginctl",
            adir.display()
        )),
        "{unit}"
    );
    assert!(unit.contains("Restart=always") && unit.contains("WantedBy=multi-user.target"));
    let uninstall = || {
        Command::new(BIN)
            .args(["agent", "uninstall-service", "--no-systemctl", "--unit-dir"])
            .arg(&units)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    assert!(uninstall().status.success());
    assert!(!units.join("venued-agent.service").exists());
    let again = uninstall();
    assert!(!again.status.success());
    assert!(
        stderr(&again).contains("no venued-agent.service installed"),
        "{}",
        stderr(&again)
    );
}

/// A loopback TCP proxy that can cut every connection and refuse new ones, then heal.
struct Proxy {
    port: u16,
    open: std::sync::Arc<std::sync::atomic::AtomicBool>,
    generation: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Proxy {
    fn start(rt: &tokio::runtime::Runtime, upstream: u16) -> Self {
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let open = std::sync::Arc::new(AtomicBool::new(true));
        let generation = std::sync::Arc::new(AtomicU64::new(0));
        let (o, g) = (open.clone(), generation.clone());
        rt.spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                if !o.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let born = g.load(Ordering::SeqCst);
                let g = g.clone();
                tokio::spawn(async move {
                    let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await
                    else {
                        return;
                    };
                    let (mut cr, mut cw) = client.into_split();
                    let (mut sr, mut sw) = server.into_split();
                    let cut = async {
                        while g.load(Ordering::SeqCst) == born {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    };
                    tokio::select! {
                        _ = tokio::io::copy(&mut cr, &mut sw) => {}
                        _ = tokio::io::copy(&mut sr, &mut cw) => {}
                        () = cut => {}
                    }
                });
            }
        });
        Self {
            port,
            open,
            generation,
        }
    }

    /// Drop every connection and refuse new ones.
    fn cut(&self) {
        use std::sync::atomic::Ordering;
        self.open.store(false, Ordering::SeqCst);
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    fn heal(&self) {
        self.open.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

#[test]
fn a_cut_connection_resynchronises_to_the_new_deadline_without_flicker() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (_dir, d, adir) = controller_and_agent();
    let proxy = Proxy::start(&rt, d.tls);
    let agent = Agent::start(&adir, &["--mqtt-port", &proxy.port.to_string()]);
    std::thread::sleep(Duration::from_millis(800));
    // Long enough that the agent is back (its reconnect backoff reaches 2 s) well before
    // the old deadline.
    let ends_at = start_session(&d, 10);
    agent.expect("unlock", Duration::from_secs(5));
    // The network goes; meanwhile staff extend the session by 10 s.
    proxy.cut();
    let v = d.cli(&["session", "extend", "pc-01", "10s", "--json"]);
    let extended: jiff::Timestamp = v["ends_at"].as_str().unwrap().parse().unwrap();
    assert_eq!(extended, ends_at + jiff::SignedDuration::from_secs(10));
    std::thread::sleep(Duration::from_millis(1500));
    proxy.heal();
    // Back online before the old deadline: the agent takes the new one and stays
    // unlocked (no lock/unlock flicker), then locks after the new deadline and grace.
    let locked = agent.expect("lock", Duration::from_secs(40));
    let late = lateness(extended + jiff::SignedDuration::from_secs(1), locked);
    eprintln!("lock after reconnect: {late:.3} s from the extended end");
    assert!(
        late.abs() < 5.0,
        "locked {late:.3} s off the extended deadline"
    );
    drop(rt);
}

/// The Linux session adapter drives `loginctl` (here a stand-in on PATH that records its
/// arguments): unlock the session when it starts, lock it when it ends.
#[test]
fn the_loginctl_adapter_unlocks_and_locks_the_desktop_session() {
    use std::os::unix::fs::PermissionsExt;
    let (dir, d, adir) = controller_and_agent();
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let calls = dir.path().join("calls");
    let inhibitor_pid = dir.path().join("inhibitor.pid");
    for tool in ["loginctl", "notify-send", "systemd-inhibit"] {
        let script = bin.join(tool);
        // The inhibitor stand-in stays alive like the real one, as long as the lock is held.
        let hold = if tool == "systemd-inhibit" {
            format!("echo $$ > {}\nexec sleep 600\n", inhibitor_pid.display())
        } else {
            String::new()
        };
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\necho \"{tool} $*\" >> {}\n{hold}",
                calls.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let _agent = Agent::start_with(
        &adir,
        &["--adapter", "loginctl", "--session", "c7"],
        &[],
        Some(&bin),
    );
    std::thread::sleep(Duration::from_millis(800));
    start_session(&d, 4);
    let want = [
        "loginctl unlock-session c7",
        "systemd-inhibit --what=sleep:idle --who=venued --why=a paid session is running --mode=block sleep infinity",
        "notify-send --urgency=critical venued 3s left in your session",
        "loginctl lock-session c7",
    ];
    expect_calls(&calls, &want);
    // Locked: the sleep lock is released (the inhibitor process is gone).
    let pid = std::fs::read_to_string(&inhibitor_pid).unwrap();
    let proc = std::path::PathBuf::from(format!("/proc/{}", pid.trim()));
    let deadline = Instant::now() + Duration::from_secs(5);
    while proc.exists() {
        assert!(Instant::now() < deadline, "the sleep inhibitor still runs");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A stand-in controller for bad-input tests: the box's own TLS identity (so the agent's
/// pinned CA accepts it) and just enough MQTT to hand the agent whatever payloads a test
/// wants, which the real controller would never publish.
struct FakeController {
    port: u16,
    /// Packets to send to the connected agent.
    to_agent: tokio::sync::mpsc::UnboundedSender<rumqttc::Packet>,
    /// PUBLISHes the agent sent (topic, payload).
    from_agent: mpsc::Receiver<(String, Vec<u8>)>,
}

impl FakeController {
    fn start(rt: &tokio::runtime::Runtime, tls_dir: &Path) -> Self {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::{CertificateDer, PrivateKeyDer};
        // The chain the real controller presents: its certificate, then the box CA.
        let certs: Vec<CertificateDer<'static>> = ["server.pem", "ca.pem"]
            .iter()
            .flat_map(|f| CertificateDer::pem_file_iter(tls_dir.join(f)).unwrap())
            .map(Result::unwrap)
            .collect();
        let key = PrivateKeyDer::from_pem_file(tls_dir.join("server.key")).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let (to_agent, mut outbox) = tokio::sync::mpsc::unbounded_channel::<rumqttc::Packet>();
        let (seen, from_agent) = mpsc::channel();
        rt.spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            // One connection at a time, as the agent makes them (it reconnects after
            // dropping a connection, e.g. over an oversize packet).
            'connections: loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut tls = match acceptor.accept(tcp).await {
                Ok(tls) => tls,
                Err(e) => {
                    eprintln!("fake controller: handshake failed: {e}");
                    continue;
                }
            };
            let mut buf = bytes::BytesMut::new();
            loop {
                let mut out = bytes::BytesMut::new();
                tokio::select! {
                    read = tls.read_buf(&mut buf) => {
                        if read.unwrap_or(0) == 0 {
                            continue 'connections;
                        }
                        loop {
                            let packet = match rumqttc::Packet::read(&mut buf, 1 << 20) {
                                Ok(p) => p,
                                Err(rumqttc::Error::InsufficientBytes(_)) => break,
                                Err(e) => panic!("fake controller: unreadable packet: {e:?}"),
                            };
                            let reply = match packet {
                                rumqttc::Packet::Connect(..) => Some(rumqttc::Packet::ConnAck(
                                    rumqttc::ConnAck::new(rumqttc::ConnectReturnCode::Success, false),
                                )),
                                rumqttc::Packet::Subscribe(s) => Some(rumqttc::Packet::SubAck(
                                    rumqttc::SubAck::new(
                                        s.pkid,
                                        vec![rumqttc::SubscribeReasonCode::Success(rumqttc::QoS::AtLeastOnce)],
                                    ),
                                )),
                                rumqttc::Packet::Publish(p) => {
                                    let _ = seen.send((p.topic.clone(), p.payload.to_vec()));
                                    (p.pkid != 0).then(|| rumqttc::Packet::PubAck(rumqttc::PubAck::new(p.pkid)))
                                }
                                rumqttc::Packet::PingReq => Some(rumqttc::Packet::PingResp),
                                _ => None,
                            };
                            if let Some(r) = reply {
                                r.write(&mut out, 1 << 20).unwrap();
                            }
                        }
                    }
                    Some(p) = outbox.recv() => {
                        p.write(&mut out, 1 << 20).unwrap();
                    }
                }
                if !out.is_empty() && tls.write_all(&out).await.is_err() {
                    continue 'connections;
                }
            }
            }
        });
        Self {
            port,
            to_agent,
            from_agent,
        }
    }

    fn send(&self, topic: &str, payload: &[u8]) {
        let p = rumqttc::Publish::new(topic, rumqttc::QoS::AtMostOnce, payload.to_vec());
        self.to_agent.send(rumqttc::Packet::Publish(p)).unwrap();
    }

    /// The next PUBLISH from the agent on `topic`, within `within`.
    fn expect(&self, topic: &str, within: Duration) -> serde_json::Value {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.from_agent.recv_timeout(left) {
                Ok((t, payload)) if t == topic => return serde_json::from_slice(&payload).unwrap(),
                Ok(_) => {}
                Err(_) => panic!("the agent published nothing on {topic} within {within:?}"),
            }
        }
    }
}

#[test]
fn bad_states_and_commands_are_ignored_and_never_unlock() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    // The real controller only makes the box identity and the agent's files here.
    let (_dir, d, adir) = controller_and_agent();
    let fake = FakeController::start(&rt, &d.dir.join("tls"));
    let port = fake.port.to_string();
    let agent = Agent::start(&adir, &["--mqtt-port", &port]);
    let online = fake.expect("venued/v1/agents/pc-01/status", Duration::from_secs(10));
    assert_eq!(online["online"], true);
    assert_eq!(online["locked"], true);

    let now = jiff::Timestamp::now();
    let state = |station: &str, v: u32, session: bool| {
        let mut s = serde_json::json!({
            "v": v, "station": station, "name": "PC 01", "kind": "pc", "seq": 10,
            "server_time": now.to_string(), "status": "in_session", "lock": false,
        });
        if session {
            s["session"] = serde_json::json!({
                "id": 7, "started_at": now.to_string(),
                "ends_at": (now + jiff::SignedDuration::from_mins(30)).to_string(),
                "warnings": [],
            });
        }
        s.to_string()
    };
    let topic = "venued/v1/stations/pc-01/state";
    // Malformed, another protocol version, another station, in session without a session,
    // a wrong type, an oversize payload: each ignored.
    fake.send(topic, b"{\"v\":1,\"station\":");
    fake.send(topic, state("pc-01", 2, true).as_bytes());
    fake.send(topic, state("pc-02", 1, true).as_bytes());
    fake.send(topic, state("pc-01", 1, false).as_bytes());
    fake.send(
        topic,
        state("pc-01", 1, true)
            .replace("\"seq\":10", "\"seq\":\"ten\"")
            .as_bytes(),
    );
    // A command of a kind this agent does not know: acknowledged as not done.
    let cmd = "venued/v1/stations/pc-01/cmd";
    fake.send(
        cmd,
        format!(r#"{{"id":"c-9","issued_at":"{now}","type":"format_disk"}}"#).as_bytes(),
    );
    let ack = fake.expect("venued/v1/stations/pc-01/ack", Duration::from_secs(5));
    assert_eq!(ack["id"], "c-9");
    assert_eq!(ack["ok"], false);
    assert!(
        ack["error"].as_str().unwrap().starts_with("not_supported"),
        "{ack}"
    );
    // Garbage without an id: nothing to acknowledge, nothing done.
    fake.send(cmd, b"\xff\xfe not json");
    // An unlock command with no session: refused, stays locked.
    fake.send(
        cmd,
        format!(r#"{{"id":"c-10","issued_at":"{now}","type":"unlock"}}"#).as_bytes(),
    );
    let ack = fake.expect("venued/v1/stations/pc-01/ack", Duration::from_secs(5));
    assert_eq!(
        (ack["id"].as_str(), ack["ok"].as_bool()),
        (Some("c-10"), Some(false))
    );

    // None of that unlocked the PC...
    let unlocked = agent
        .lines
        .recv_timeout(Duration::from_millis(500))
        .map(|(_, l)| l);
    assert!(
        unlocked.is_err(),
        "the agent acted on bad input: {unlocked:?}"
    );
    // An oversize payload: the agent's client drops the connection and reconnects, still
    // locked (it says so in its fresh status).
    fake.send(topic, &vec![b' '; 64 * 1024]);
    let again = fake.expect("venued/v1/agents/pc-01/status", Duration::from_secs(10));
    assert_eq!(again["locked"], true);
    // ...and the link still works: a good state unlocks at once.
    fake.send(topic, state("pc-01", 1, true).as_bytes());
    agent.expect("unlock", Duration::from_secs(5));
}

#[test]
fn a_configured_command_carries_out_the_actions() {
    use std::os::unix::fs::PermissionsExt;
    let (dir, d, adir) = controller_and_agent();
    let calls = dir.path().join("calls");
    let hook = dir.path().join("kiosk-hook");
    std::fs::write(
        &hook,
        format!("#!/bin/sh\necho \"$#:$*\" >> {}\n", calls.display()),
    )
    .unwrap();
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
    let hook_arg = hook.display().to_string();
    let _agent = Agent::start_with(
        &adir,
        &["--adapter", "command", "--command", &hook_arg],
        &[],
        None,
    );
    std::thread::sleep(Duration::from_millis(800));
    start_session(&d, 4);
    d.cli(&[
        "station",
        "send",
        "pc-01",
        "message",
        "--text",
        "pizza is ready",
    ]);
    // "<argument count>:<arguments>": the message text arrives as one argument.
    let want = [
        "1:unlock",
        "2:prevent-sleep true",
        "2:message pizza is ready",
        "2:warn 3",
        "1:lock",
        "2:prevent-sleep false",
    ];
    expect_calls(&calls, &want);
}
