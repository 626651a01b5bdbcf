//! `venued device provision` through a real daemon, with the CLI and over HTTP, against
//! the plug fakes: what ends up on the plug (its power-on state, the meaning of the
//! Tasmota dead-man rule, the Shelly switch config and script), that a second run and a
//! dry run change nothing, and that bad input and unusable devices are answered clearly
//! and change nothing.

use crate::support::*;
use serde_json::{Value, json};
use std::io::Write;
use std::process::{Command, Output, Stdio};
use venued::devices::provision::{DEADMAN_JS, GRACE_KEY, PUTCODE_CHUNK, SCRIPT_NAME};
use venued::fakes::shelly::{
    DefaultState, Gen1Config, Gen2Config, InitialState, ShellyGen1, ShellyGen2,
};
use venued::fakes::tasmota::{Tasmota, TasmotaConfig, Trigger, parse_rules};

fn ok(out: &Output) -> String {
    assert!(out.status.success(), "{}{}", stdout(out), stderr(out));
    stdout(out)
}

fn json_of(out: &Output) -> Value {
    serde_json::from_str(&ok(out)).unwrap()
}

fn refused(out: &Output, code: &str) -> String {
    assert!(!out.status.success(), "accepted: {}", stdout(out));
    let err = stderr(out);
    assert!(err.contains(code), "wanted {code}, got: {err}");
    err
}

/// `venued device add NAME ARGS... [--password-stdin]`.
fn add(dir: &std::path::Path, name: &str, args: &[&str], password: Option<&str>) {
    let mut cmd = Command::new(BIN);
    cmd.args(["device", "add", name])
        .args(args)
        .arg("--json")
        .env("VENUED_DATA_DIR", dir)
        .env_remove("VENUED_CONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if password.is_some() {
        cmd.arg("--password-stdin");
    }
    let mut child = cmd.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    if let Some(p) = password {
        writeln!(stdin, "{p}").unwrap();
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    ok(&out);
}

/// A daemon with plain HTTP on a fixed port, and bearer tokens of an owner and of staff.
struct Api {
    _daemon: Daemon,
    port: u16,
    owner: String,
    staff: String,
}

impl Api {
    fn start(dir: &std::path::Path) -> Self {
        let port = free_port();
        let daemon = Daemon::start_with_http(dir, &format!("127.0.0.1:{port}"));
        let token = |user: &str, role: &str| {
            ok(&venued(dir, &["user", "add", user, "--role", role]));
            let out = ok(&venued(dir, &["token", "create", user, "--user", user]));
            let secret = out
                .lines()
                .find_map(|l| l.strip_prefix("secret: "))
                .unwrap()
                .to_owned();
            format!("Bearer {secret}")
        };
        Self {
            _daemon: daemon,
            port,
            owner: token("boss", "owner"),
            staff: token("kim", "staff"),
        }
    }

    /// One request with `auth` and a raw body (sent as JSON); the status and JSON answer.
    async fn call(&self, auth: &str, path: &str, body: Option<&str>) -> (u16, Value) {
        use http_body_util::BodyExt;
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .unwrap();
        let (mut tx, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(conn);
        let mut req = hyper::Request::builder()
            .method("POST")
            .uri(path)
            .header("host", "venued")
            .header("authorization", auth);
        if body.is_some() {
            req = req.header("content-type", "application/json");
        }
        let body = http_body_util::Full::new(hyper::body::Bytes::from(
            body.unwrap_or_default().to_owned(),
        ));
        let resp = tx.send_request(req.body(body).unwrap()).await.unwrap();
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }
}

/// `(item, outcome)` of each item of a report.
fn outcomes(report: &Value) -> Vec<(String, String)> {
    report["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["item"].as_str().unwrap().to_owned(),
                i["outcome"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn all(report: &Value, outcome: &str) -> bool {
    let items = outcomes(report);
    !items.is_empty() && items.iter().all(|(_, o)| o == outcome)
}

#[test]
fn tasmota_gets_its_dead_man_rule_and_a_second_run_changes_nothing() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let fake = rt
        .block_on(Tasmota::start(TasmotaConfig {
            web_password: Some("tas pw".into()),
            power: true,
            ..TasmotaConfig::default()
        }))
        .unwrap();
    let before = fake.settings();
    assert_eq!(before.power_on_state, 3, "firmware default: last state");
    let dir = tempfile::tempdir().unwrap();
    let api = Api::start(dir.path());
    let data = dir.path();
    let host = fake.http_addr().to_string();
    add(
        data,
        "tas",
        &["--type", "tasmota", "--host", &host],
        Some("tas pw"),
    );

    // A dry run reports every item as pending and changes nothing.
    let dry = json_of(&venued(
        data,
        &["device", "provision", "tas", "--dry-run", "--json"],
    ));
    assert_eq!(
        (dry["reached"].as_bool(), dry["dry_run"].as_bool()),
        (Some(true), Some(true))
    );
    assert!(all(&dry, "would_change"), "{dry}");
    assert_eq!(fake.settings(), before);
    assert!(
        fake.rules()
            .iter()
            .all(|(_, text, on)| text.is_empty() && !on)
    );

    // Provisioned: every item changed, as the plug now says.
    let done = json_of(&venued(data, &["device", "provision", "tas", "--json"]));
    assert!(all(&done, "changed"), "{done}");
    assert_eq!(done["complete"], true);
    let power_on = done["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["item"] == "PowerOnState")
        .unwrap();
    assert_eq!(
        (power_on["old"].as_str(), power_on["new"].as_str()),
        (Some("3"), Some("0"))
    );
    let s = fake.settings();
    assert_eq!(
        (s.power_on_state, s.tele_period, s.power_delta),
        (0, 10, 105)
    );
    let (n, text, enabled) = fake.rules().into_iter().next().unwrap();
    assert_eq!((n, enabled), (1, true));
    // What the rule means, read with the parser the fake runs: boot and every broker
    // connection arm RuleTimer1 with the 120 s grace; when it runs out, the relay goes off.
    let rules = parse_rules(&text).unwrap();
    let triggers: Vec<&Trigger> = rules.iter().map(|r| &r.trigger).collect();
    assert_eq!(
        triggers,
        [
            &Trigger::SystemBoot,
            &Trigger::MqttConnected,
            &Trigger::RulesTimer(1)
        ]
    );
    for arm in &rules[..2] {
        assert_eq!(arm.actions.len(), 1);
        assert!(arm.actions[0].is("RuleTimer"));
        assert_eq!(
            (arm.actions[0].index, arm.actions[0].param.as_str()),
            (Some(1), "120")
        );
    }
    assert_eq!(rules[2].actions.len(), 1);
    assert!(rules[2].actions[0].is("Power"));
    assert!(rules[2].actions[0].param.eq_ignore_ascii_case("off"));

    // Again, over HTTP: nothing to do.
    let (status, again) = rt.block_on(api.call(&api.owner, "/api/v1/devices/tas/provision", None));
    assert_eq!(status, 200, "{again}");
    assert!(all(&again, "unchanged"), "{again}");
    assert_eq!(again["complete"], true);
    assert_eq!(fake.rules()[0].1, text);
    // The table for people, and the report never carries the password.
    let table = ok(&venued(data, &["device", "provision", "tas"]));
    assert!(
        table.contains("PowerOnState") && table.contains("unchanged (0)"),
        "{table}"
    );
    assert!(table.contains("already in place"), "{table}");
    assert!(!again.to_string().contains("tas pw") && !table.contains("tas pw"));

    // A mains blip: the plug comes back off, whatever it was.
    fake.restart();
    assert!(!fake.power_on());
    rt.block_on(fake.stop());
}

#[test]
fn shelly_gen2_gets_switch_config_and_a_running_dead_man_script() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let fake = rt
        .block_on(ShellyGen2::start(Gen2Config {
            password: Some("plug pw".into()),
            relay_on: true,
            initial_state: InitialState::On,
            ..Gen2Config::default()
        }))
        .unwrap();
    let config = || fake.call("Switch.GetConfig", json!({"id": 0})).unwrap();
    let before = config();
    let dir = tempfile::tempdir().unwrap();
    let api = Api::start(dir.path());
    let data = dir.path();
    let host = fake.http_addr().to_string();
    add(
        data,
        "plug",
        &["--type", "shelly_gen2", "--host", &host],
        Some("plug pw"),
    );

    // Dry run over HTTP: what would change, and the plug untouched.
    let (status, dry) = rt.block_on(api.call(
        &api.owner,
        "/api/v1/devices/plug/provision",
        Some(r#"{"dry_run": true}"#),
    ));
    assert_eq!(status, 200, "{dry}");
    assert!(all(&dry, "would_change"), "{dry}");
    assert_eq!(config(), before);
    assert!(fake.scripts().is_empty());
    assert!(fake.call("KVS.Get", json!({"key": GRACE_KEY})).is_err());

    // Provisioned with the CLI.
    let out = venued(data, &["device", "provision", "plug", "--json"]);
    let done = json_of(&out);
    assert!(all(&done, "changed"), "{done}");
    let c = config();
    assert_eq!(
        (
            c["initial_state"].as_str(),
            c["auto_off"].as_bool(),
            c["auto_off_delay"].as_f64()
        ),
        (Some("off"), Some(true), Some(43_200.0))
    );
    let scripts = fake.scripts();
    assert_eq!(scripts.len(), 1, "{scripts:?}");
    let s = &scripts[0];
    assert_eq!(s.name, SCRIPT_NAME);
    assert_eq!(s.code, DEADMAN_JS);
    assert!(s.enable && s.running, "{s:?}");
    assert_eq!(
        fake.call("KVS.Get", json!({"key": GRACE_KEY})).unwrap()["value"],
        120
    );
    // Uploaded in chunks the firmware accepts.
    let put_code = |f: &ShellyGen2| {
        f.requests()
            .iter()
            .filter(|r| r.contains("Script.PutCode"))
            .count()
    };
    assert_eq!(put_code(&fake), DEADMAN_JS.len().div_ceil(PUTCODE_CHUNK));
    assert!(
        DEADMAN_JS.len() > PUTCODE_CHUNK,
        "the test must need several chunks"
    );

    // Again: nothing to do, nothing uploaded.
    let uploads = put_code(&fake);
    let again = json_of(&venued(data, &["device", "provision", "plug", "--json"]));
    assert!(all(&again, "unchanged"), "{again}");
    assert_eq!(put_code(&fake), uploads);

    // Someone changed the script and stopped it: provisioning puts it back and starts it.
    fake.call("Script.Stop", json!({"id": s.id})).unwrap();
    fake.call("Script.PutCode", json!({"id": s.id, "code": "// gone"}))
        .unwrap();
    let repaired = json_of(&venued(data, &["device", "provision", "plug", "--json"]));
    let changed: Vec<String> = outcomes(&repaired)
        .into_iter()
        .filter(|(_, o)| o == "changed")
        .map(|(i, _)| i)
        .collect();
    assert_eq!(
        changed,
        [
            format!("script {SCRIPT_NAME} code"),
            format!("script {SCRIPT_NAME} running")
        ],
        "{repaired}"
    );
    let s = &fake.scripts()[0];
    assert!(s.code == DEADMAN_JS && s.running && s.enable);

    // A mains blip: the plug comes back off.
    fake.power_cycle();
    assert!(!fake.relay_on());
    rt.block_on(fake.stop());
}

#[test]
fn shelly_gen1_gets_default_off_and_auto_off() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let fake = rt
        .block_on(ShellyGen1::start(Gen1Config {
            password: Some("g1 pw".into()),
            relay_on: true,
            default_state: DefaultState::On,
            ..Gen1Config::new("AABBCC001122")
        }))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let _api = Api::start(dir.path());
    let data = dir.path();
    let host = fake.http_addr().to_string();
    add(
        data,
        "g1",
        &["--type", "shelly_gen1", "--host", &host],
        Some("g1 pw"),
    );
    let dry = json_of(&venued(
        data,
        &["device", "provision", "g1", "--dry-run", "--json"],
    ));
    assert!(all(&dry, "would_change"), "{dry}");
    fake.power_cycle();
    assert!(fake.relay_on(), "a dry run left default_state on");
    let done = json_of(&venued(data, &["device", "provision", "g1", "--json"]));
    assert!(all(&done, "changed"), "{done}");
    let again = json_of(&venued(data, &["device", "provision", "g1", "--json"]));
    assert!(all(&again, "unchanged"), "{again}");
    fake.power_cycle();
    assert!(!fake.relay_on(), "default_state is off now");
    rt.block_on(fake.stop());
}

/// Wrong input and devices that cannot be provisioned: clear codes, nothing changed.
#[test]
fn bad_input_and_unusable_devices_are_refused_clearly_and_change_nothing() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let fake = rt
        .block_on(Tasmota::start(TasmotaConfig {
            web_password: Some("right".into()),
            ..TasmotaConfig::default()
        }))
        .unwrap();
    let before = fake.settings();
    let dir = tempfile::tempdir().unwrap();
    let api = Api::start(dir.path());
    let data = dir.path();
    let host = fake.http_addr().to_string();
    add(
        data,
        "tas",
        &["--type", "tasmota", "--host", &host],
        Some("right"),
    );
    add(
        data,
        "wrong-pw",
        &["--type", "tasmota", "--host", &host],
        Some("wrong"),
    );
    let nobody = format!("127.0.0.1:{}", free_port());
    add(
        data,
        "gone",
        &["--type", "shelly_gen2", "--host", &nobody],
        None,
    );
    add(
        data,
        "act",
        &[
            "--type",
            "mqtt_action",
            "--topic",
            "ps5/x",
            "--payload",
            "standby",
        ],
        None,
    );
    add(
        data,
        "router",
        &[
            "--type",
            "mikrotik",
            "--url",
            "https://127.0.0.1:1",
            "--user",
            "venued",
        ],
        None,
    );

    let post = |auth: &str, path: &str, body: Option<&str>| rt.block_on(api.call(auth, path, body));
    let code = |v: &Value| v["code"].as_str().unwrap_or_default().to_owned();
    let p = "/api/v1/devices/tas/provision";
    for (body, status, want) in [
        (r#"{"dry_run": false, "force": true}"#, 422, "invalid_body"),
        (r#"{"dry_run": "yes"}"#, 422, "invalid_body"),
        (r#"[]"#, 422, "invalid_body"),
        (r#"{"dry_run": "#, 400, "invalid_json"),
    ] {
        let (s, v) = post(&api.owner, p, Some(body));
        assert_eq!((s, code(&v)), (status, want.to_owned()), "{body}: {v}");
    }
    let (s, v) = post(&api.owner, "/api/v1/devices/Bad!/provision", None);
    assert_eq!((s, code(&v)), (422, "invalid_device_name".into()), "{v}");
    let (s, v) = post(&api.owner, "/api/v1/devices/nosuch/provision", None);
    assert_eq!((s, code(&v)), (404, "device_not_found".into()), "{v}");
    for name in ["act", "router"] {
        let (s, v) = post(
            &api.owner,
            &format!("/api/v1/devices/{name}/provision"),
            None,
        );
        assert_eq!(
            (s, code(&v)),
            (422, "device_not_provisionable".into()),
            "{v}"
        );
    }
    // Staff may not change a plug's settings.
    let (s, v) = post(&api.staff, p, None);
    assert_eq!((s, code(&v)), (403, "forbidden".into()), "{v}");
    // None of that reached the plug.
    assert!(fake.requests().is_empty(), "{:?}", fake.requests());

    // A wrong stored password: the plug refuses, venued says so (200: venued is fine).
    let (s, v) = post(&api.owner, "/api/v1/devices/wrong-pw/provision", None);
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        (v["reached"].as_bool(), code(&v["error"])),
        (Some(false), "device_error".into())
    );
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("credentials"),
        "{v}"
    );
    assert!(!v.to_string().contains("wrong\""), "{v}");
    let err = refused(
        &venued(data, &["device", "provision", "wrong-pw"]),
        "device_error",
    );
    assert!(err.contains("credentials"), "{err}");
    // Nothing listening: unreachable, promptly.
    let started = std::time::Instant::now();
    let (s, v) = post(&api.owner, "/api/v1/devices/gone/provision", None);
    assert_eq!(
        (s, code(&v["error"])),
        (200, "device_unreachable".into()),
        "{v}"
    );
    assert!(v["items"].as_array().unwrap().is_empty());
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    refused(
        &venued(data, &["device", "provision", "gone", "--dry-run"]),
        "device_unreachable",
    );
    refused(
        &venued(data, &["device", "provision", "act"]),
        "device_not_provisionable",
    );
    refused(
        &venued(data, &["device", "provision", "nosuch"]),
        "device_not_found",
    );

    assert_eq!(fake.settings(), before);
    assert!(
        fake.rules()
            .iter()
            .all(|(_, text, on)| text.is_empty() && !on)
    );
    rt.block_on(fake.stop());
}
