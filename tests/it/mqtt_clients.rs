//! The broker as clients we did not write see it: mosquitto_sub/mosquitto_pub and a PC
//! agent written with Eclipse Paho from docs/protocol.md alone. Also the command channel:
//! delivery, acknowledgement, retries and the unhealthy mark.
//!
//! The tools come from scripts/test-tools.sh (run by scripts/ci.sh). Without them these
//! tests print a notice and pass, except under CI, where a missing tool is a failure.

use crate::mqtt::{MqttDaemon, Via, connect, options};
use crate::support::*;
use rumqttc::QoS;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub(crate) fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !matches!(v.as_str(), "" | "0" | "false"))
}

/// A tool's path, or None (with a notice) when it is missing outside CI.
pub(crate) fn tool(path: PathBuf, what: &str) -> Option<PathBuf> {
    if path.exists() {
        return Some(path);
    }
    assert!(
        !ci(),
        "{what} is missing at {}: scripts/test-tools.sh installs it",
        path.display()
    );
    eprintln!(
        "SKIPPED: {what} not found at {} (run scripts/test-tools.sh)",
        path.display()
    );
    None
}

fn mosquitto(bin: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(bin))
            .find(|p| p.exists())
    });
    tool(
        found.unwrap_or_else(|| PathBuf::from("/usr/bin").join(bin)),
        bin,
    )
}

/// Loopback host and port, give up after 3 s, stop after one message.
fn base(port: &str) -> Vec<&str> {
    vec!["-h", "127.0.0.1", "-p", port, "-W", "3", "-C", "1"]
}

fn sub(bin: &PathBuf, args: &[&str]) -> std::process::Output {
    Command::new(bin)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

// A plain test thread, not an async worker: sleeping while mosquitto_sub connects is fine.
#[allow(clippy::disallowed_methods)]
#[test]
fn mosquitto_clients_see_proper_refusals_acls_and_tls() {
    let (Some(msub), Some(mpub)) = (mosquitto("mosquitto_sub"), mosquitto("mosquitto_pub")) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = MqttDaemon::start(dir.path());
    let (a1, p1) = d.add_pc("pc-01");
    let (a2, p2) = d.add_pc("pc-02");
    let (dev, _) = d.add_device("device:plug-1", "shellies/plug-1");
    let ca = d.dir.join("tls/ca.pem");
    let ca = ca.to_str().unwrap();
    let (plain, tls) = (d.plain.to_string(), d.tls.to_string());

    let mut wrong = base(&plain);
    wrong.extend(["-u", &dev, "-P", "wrong", "-t", "shellies/plug-1/#"]);
    let out = sub(&msub, &wrong);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("bad user name or password"),
        "{}",
        stderr(&out)
    );
    let mut nobody = base(&plain);
    nobody.extend(["-t", "shellies/plug-1/#"]);
    let out = sub(&msub, &nobody);
    assert!(stderr(&out).contains("not authorised"), "{}", stderr(&out));

    // An agent over TLS with the box CA gets its retained state; `-v` prints the topic.
    let mut agent = base(&tls);
    agent.extend([
        "--cafile",
        ca,
        "-u",
        &a1,
        "-P",
        &p1,
        "-t",
        "venued/v1/stations/pc-01/#",
        "-v",
    ]);
    let out = sub(&msub, &agent);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).starts_with("venued/v1/stations/pc-01/state {"),
        "{}",
        stdout(&out)
    );
    // Without the CA (system roots only) the TLS handshake fails.
    let mut no_ca = base(&tls);
    no_ca.extend([
        "--capath",
        "/etc/ssl/certs",
        "-u",
        &a1,
        "-P",
        &p1,
        "-t",
        "venued/v1/stations/pc-01/state",
    ]);
    let out = sub(&msub, &no_ca);
    assert!(!out.status.success(), "TLS without the box CA must fail");

    // pc-01 publishes into pc-02's ack at QoS 1: mosquitto_pub is acknowledged (exit 0)
    // but pc-02, listening, gets nothing.
    let mut watch = base(&tls);
    watch.extend([
        "--cafile",
        ca,
        "-u",
        &a2,
        "-P",
        &p2,
        "-t",
        "venued/v1/stations/pc-02/ack",
    ]);
    let watcher = Command::new(&msub)
        .args(&watch)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let spoof = sub(
        &mpub,
        &[
            "-h",
            "127.0.0.1",
            "-p",
            &tls,
            "--cafile",
            ca,
            "-u",
            &a1,
            "-P",
            &p1,
            "-q",
            "1",
            "-t",
            "venued/v1/stations/pc-02/ack",
            "-m",
            r#"{"id":"x","ok":true}"#,
        ],
    );
    assert!(spoof.status.success(), "{}", stderr(&spoof));
    let watched = watcher.wait_with_output().unwrap();
    assert!(
        watched.stdout.is_empty(),
        "spoofed message delivered: {}",
        stdout(&watched)
    );
}

fn paho_python() -> Option<PathBuf> {
    tool(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-venv/bin/python"),
        "paho-mqtt (target/test-venv)",
    )
}

/// Wait for a line starting with `prefix` from the agent; all lines seen so far on failure.
fn line(lines: &mut impl Iterator<Item = String>, prefix: &str, seen: &mut Vec<String>) -> String {
    for l in lines.by_ref() {
        seen.push(l.clone());
        if l.starts_with(prefix) {
            return l;
        }
    }
    panic!("the Paho agent ended without {prefix:?}: {seen:#?}");
}

#[test]
fn a_paho_agent_built_from_the_docs_gets_state_and_acknowledges_a_command() {
    let Some(python) = paho_python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = MqttDaemon::start(dir.path());
    let (user, pass) = d.add_pc("pc-01");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients/paho_agent.py");
    let mut agent = Command::new(python)
        .arg(script)
        .args(["127.0.0.1", &d.tls.to_string()])
        .arg(d.dir.join("tls/ca.pem"))
        .args([&user, &pass, "pc-01"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(agent.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok);
    let mut seen = Vec::new();
    assert_eq!(line(&mut lines, "STATE", &mut seen), "STATE free -");
    d.cli(&["session", "start", "pc-01", "20m"]);
    let state = line(&mut lines, "STATE in_session", &mut seen);
    let left: u64 = state.rsplit(' ').next().unwrap().parse().unwrap();
    assert!((1190..=1200).contains(&left), "{state}");
    let sent = d.cli(&[
        "station", "send", "pc-01", "message", "--text", "hello", "--json",
    ]);
    let id = sent["id"].as_str().unwrap().to_owned();
    assert_eq!(
        line(&mut lines, "CMD", &mut seen),
        format!("CMD {id} message")
    );
    assert!(agent.wait().unwrap().success(), "{seen:#?}");
    wait_for_event(&d, "station_command_acked", &id);
}

fn wait_for_event(d: &MqttDaemon, kind: &str, id: &str) -> Value {
    wait_for_event_in(&d.dir, kind, id)
}

#[tokio::test]
async fn commands_are_resent_until_acknowledged_then_an_unanswered_agent_is_unhealthy() {
    let dir = tempfile::tempdir().unwrap();
    let d = MqttDaemon::start_config(
        dir.path(),
        "[mqtt]\ncommand-retry = \"100ms\"\ncommand-attempts = 3\n",
    );
    let (user, pass) = d.add_pc("pc-01");
    let mut agent = d.agent("pc-01", &user, &pass).await;
    agent.subscribe("venued/v1/stations/pc-01/cmd").await;
    let sent = d.cli(&["station", "send", "pc-01", "lock", "--json"]);
    let id = sent["id"].as_str().unwrap().to_owned();
    // The first delivery goes unanswered; the same command (same id) comes again.
    let mut ids = Vec::new();
    while ids.len() < 2 {
        let cmd = agent
            .publish_on("venued/v1/stations/pc-01/cmd", Duration::from_secs(5))
            .await
            .expect("command delivery");
        let cmd: Value = serde_json::from_slice(&cmd.0).unwrap();
        assert_eq!(cmd["type"], "lock");
        ids.push(cmd["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(ids, [id.clone(), id.clone()]);
    agent
        .client
        .publish(
            "venued/v1/stations/pc-01/ack",
            QoS::AtLeastOnce,
            false,
            format!(r#"{{"id":"{id}","ok":true}}"#),
        )
        .await
        .unwrap();
    let acked = tokio::task::spawn_blocking({
        let (dir, id) = (d.dir.clone(), id.clone());
        move || wait_for_event_in(&dir, "station_command_acked", &id)
    })
    .await
    .unwrap();
    assert_eq!(acked["actor"]["account"], "agent:pc-01");
    assert_eq!(acked["ok"], true);

    // Nobody answers this one: three sends, then the agent is marked unhealthy.
    drop(agent);
    let sent = d.cli(&[
        "station", "send", "pc-01", "message", "--text", "hi", "--json",
    ]);
    let id = sent["id"].as_str().unwrap().to_owned();
    let failed = tokio::task::spawn_blocking({
        let dir = d.dir.clone();
        move || wait_for_event_in(&dir, "station_command_failed", &id)
    })
    .await
    .unwrap();
    assert_eq!(failed["attempts"], 3);
    let metrics = crate::mqtt::metrics_of(&d);
    assert!(
        metrics.contains("venued_mqtt_agents_unhealthy 1"),
        "{metrics}"
    );
    // Bad input to the command surface changes nothing.
    let bad = venued(&d.dir, &["station", "send", "pc-01", "unlock"]);
    assert!(!bad.status.success());
    assert!(
        stderr(&bad).contains("unlock needs a session"),
        "{}",
        stderr(&bad)
    );
}

/// Poll the event log until an event of `kind` with this `id` appears (blocking: call it
/// from a plain thread or `spawn_blocking`).
#[allow(clippy::disallowed_methods)]
fn wait_for_event_in(dir: &std::path::Path, kind: &str, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = venued(dir, &["audit", "log", "--json"]);
        let page: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        let found = page["events"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|e| e["type"] == kind && e["id"] == id)
            .cloned();
        if let Some(e) = found {
            return e;
        }
        assert!(Instant::now() < deadline, "no {kind} for {id}: {page}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test]
async fn an_agent_enrolls_with_a_single_use_code_that_pins_the_box_ca() {
    let dir = tempfile::tempdir().unwrap();
    let https = free_port();
    let d = MqttDaemon::start_with(
        dir.path(),
        &[("VENUED_HTTPS_LISTEN", &format!("127.0.0.1:{https}"))],
    );
    let (user, first_secret) = d.add_pc("pc-01");
    let issued = d.cli(&["station", "enroll", "pc-01", "--json"]);
    let code = issued["code"].as_str().unwrap().to_owned();
    assert_eq!(issued["station"], "pc-01");
    let agent_dir = dir.path().join("agent");
    let controller = format!("https://127.0.0.1:{https}");
    let enroll = |code: &str| {
        let out = Command::new(BIN)
            .args([
                "agent",
                "enroll",
                "--controller",
                &controller,
                "--code",
                code,
                "--dir",
            ])
            .arg(&agent_dir)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        (out.status.success(), stdout(&out), stderr(&out))
    };
    // A code with another CA's fingerprint is refused in the handshake, before the
    // secret part is ever sent.
    let foreign = format!("{}-0000-0000-0000-0000", &code[..11]);
    let (ok, _, err) = enroll(&foreign);
    assert!(!ok);
    assert!(err.contains("TLS with the controller failed"), "{err}");
    let (ok, _, err) = enroll("not-a-code");
    assert!(!ok);
    assert!(err.contains("not an enrollment code"), "{err}");

    let (ok, out, err) = enroll(&code);
    assert!(ok, "{err}");
    assert!(out.contains("enrolled as agent:pc-01"), "{out}");
    let creds: Value =
        serde_json::from_slice(&std::fs::read(agent_dir.join("agent.json")).unwrap()).unwrap();
    assert_eq!(creds["username"], user.as_str());
    assert_eq!(creds["mqtt_tls_ports"][0], d.tls);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(agent_dir.join("agent.json"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // Single use.
    let (ok, _, err) = enroll(&code);
    assert!(!ok);
    assert!(err.contains("already used"), "{err}");

    // The enrolled secret and the CA it saved work; the secret from station creation not.
    let ca = std::fs::read(agent_dir.join("ca.pem")).unwrap();
    let password = creds["password"].as_str().unwrap();
    connect(options(
        &Via::Tls(d.tls, &ca),
        "pc-01",
        Some((&user, password)),
    ))
    .await
    .expect("enrolled credentials");
    assert!(
        connect(options(
            &Via::Tls(d.tls, &ca),
            "pc-01",
            Some((&user, &first_secret))
        ))
        .await
        .is_err()
    );
}
