//! Devices and console enforcement through the real CLI and API (control socket): what is
//! accepted, what is refused with which error, what survives a restart, and that a
//! device's password is stored but never shown.

use crate::support::*;
use serde_json::Value;
use std::io::Write;
use std::process::{Command, Stdio};

fn json(out: &std::process::Output) -> Value {
    assert!(out.status.success(), "{}", stderr(out));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn refused(out: &std::process::Output, code: &str) {
    assert!(!out.status.success(), "accepted: {}", stdout(out));
    assert!(
        stderr(out).contains(code),
        "wanted {code}, got: {}",
        stderr(out)
    );
}

/// `venued device add ... --password-stdin` with `password` on stdin.
fn add_with_password(dir: &std::path::Path, args: &[&str], password: &str) -> std::process::Output {
    let mut child = Command::new(BIN)
        .args(["device", "add"])
        .args(args)
        .args(["--password-stdin", "--json"])
        .env("VENUED_DATA_DIR", dir)
        .env_remove("VENUED_CONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn devices_and_enforcement_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    let data = dir.path();
    json(&venued(
        data,
        &[
            "station", "add", "ps5-07", "--name", "PS5 7", "--kind", "console", "--json",
        ],
    ));

    // One of each kind; the plug and the router have passwords.
    let plug = add_with_password(
        data,
        &[
            "plug-07",
            "--type",
            "shelly_gen2",
            "--host",
            "192.168.1.57",
            "--mqtt-prefix",
            "shellyplusplugs-aabbcc",
        ],
        "plug secret 1",
    );
    let plug = json(&plug);
    assert_eq!(plug["has_password"], true);
    assert!(!plug.to_string().contains("plug secret 1"), "{plug}");
    let router = add_with_password(
        data,
        &[
            "router",
            "--type",
            "mikrotik",
            "--url",
            "https://192.168.88.1",
            "--user",
            "venued",
        ],
        "router secret 2",
    );
    assert_eq!(json(&router)["list"], "venue-blocked");
    json(&venued(
        data,
        &[
            "device",
            "add",
            "ps5-07-standby",
            "--type",
            "mqtt_action",
            "--topic",
            "ps5mqtt/ps5-07/set/power",
            "--payload",
            "standby",
            "--json",
        ],
    ));
    json(&venued(
        data,
        &[
            "device",
            "add",
            "tasmota-3",
            "--type",
            "tasmota",
            "--host",
            "10.0.0.3",
            "--topic",
            "tasmota_aabbcc",
            "--json",
        ],
    ));

    // Bad input: each refused with its code, nothing added.
    refused(
        &venued(
            data,
            &[
                "device", "add", "plug-07", "--type", "tasmota", "--host", "x",
            ],
        ),
        "device_exists",
    );
    refused(
        &venued(
            data,
            &[
                "device", "add", "Bad Name", "--type", "tasmota", "--host", "x",
            ],
        ),
        "invalid",
    );
    refused(
        &venued(
            data,
            &[
                "device",
                "add",
                "p2",
                "--type",
                "shelly_gen1",
                "--host",
                "http://x/",
            ],
        ),
        "invalid_field",
    );
    refused(
        &venued(
            data,
            &[
                "device", "add", "r2", "--type", "mikrotik", "--url", "http://r", "--user", "u",
            ],
        ),
        "invalid_field",
    );
    refused(
        &venued(
            data,
            &[
                "device",
                "add",
                "a2",
                "--type",
                "mqtt_action",
                "--topic",
                "venued/v1/stations/pc-01/cmd",
                "--payload",
                "x",
            ],
        ),
        "invalid_field",
    );
    refused(
        &venued(
            data,
            &[
                "device",
                "add",
                "a3",
                "--type",
                "mqtt_action",
                "--topic",
                "x",
            ],
        ),
        "invalid_body",
    );
    let listed = json(&venued(data, &["device", "list", "--json"]));
    assert_eq!(listed.as_array().unwrap().len(), 4, "{listed}");
    assert!(
        !listed.to_string().contains("secret"),
        "a password leaked: {listed}"
    );

    // Enforcement: devices must exist and fit their roles.
    refused(
        &venued(data, &["station", "enforce", "ps5-07", "--plug", "router"]),
        "wrong_device_kind",
    );
    refused(
        &venued(data, &["station", "enforce", "ps5-07", "--plug", "nope"]),
        "device_not_found",
    );
    refused(
        &venued(
            data,
            &["station", "enforce", "ps5-07", "--standby", "plug-07"],
        ),
        "wrong_device_kind",
    );
    refused(
        &venued(data, &["station", "enforce", "nope", "--plug", "plug-07"]),
        "station_not_found",
    );
    refused(
        &venued(
            data,
            &[
                "station",
                "enforce",
                "ps5-07",
                "--plug",
                "plug-07",
                "--allow-cut",
                "--cut-after-ms",
                "1000",
            ],
        ),
        "invalid_field",
    );
    refused(
        &venued(data, &["station", "enforce", "ps5-07", "--show"]),
        "enforcement_not_set",
    );
    let set = json(&venued(
        data,
        &[
            "station",
            "enforce",
            "ps5-07",
            "--plug",
            "plug-07",
            "--router",
            "router",
            "--address",
            "192.168.50.27",
            "--standby",
            "ps5-07-standby",
            "--standby-after-ms",
            "30000",
            "--json",
        ],
    ));
    assert_eq!(set["ladder"]["standby_after_ms"], 30000);
    assert_eq!(
        set["ladder"]["allow_cut"], false,
        "the relay is never cut by default"
    );
    assert_eq!(set["network"]["address"], "192.168.50.27");
    refused(
        &venued(data, &["device", "remove", "plug-07"]),
        "device_in_use",
    );

    // The audit log records the devices, never their passwords.
    let log = stdout(&venued(data, &["audit", "log", "--json"]));
    assert!(log.contains("device_added"), "{log}");
    assert!(
        !log.contains("secret 1") && !log.contains("secret 2"),
        "a password in the event log"
    );

    // Everything survives a restart, passwords included (read from the store directly).
    d.terminate();
    let d = Daemon::start(dir.path());
    let shown = json(&venued(
        data,
        &["station", "enforce", "ps5-07", "--show", "--json"],
    ));
    assert_eq!(shown, set);
    let text = stdout(&venued(data, &["station", "enforce", "ps5-07", "--show"]));
    assert!(text.contains("relay cut never (not allowed)"), "{text}");
    d.terminate();
    {
        let store = venued::store::Store::open(
            &venued::store::StoreLocation::Dir(data.to_path_buf()),
            &venued::store::StoreOptions::default(),
        )
        .unwrap();
        let rec = store.device("router").unwrap().unwrap();
        assert_eq!(rec.password.as_deref(), Some("router secret 2"));
        assert_eq!(store.device("tasmota-3").unwrap().unwrap().password, None);
    }
    let _d = Daemon::start(dir.path());

    // Clearing the enforcement frees the devices; removing a station clears its own.
    assert!(
        venued(data, &["station", "enforce", "ps5-07", "--clear"])
            .status
            .success()
    );
    assert!(
        venued(data, &["device", "remove", "ps5-07-standby"])
            .status
            .success()
    );
    json(&venued(
        data,
        &[
            "station", "enforce", "ps5-07", "--plug", "plug-07", "--json",
        ],
    ));
    assert!(
        venued(data, &["station", "remove", "ps5-07"])
            .status
            .success()
    );
    assert!(
        venued(data, &["device", "remove", "plug-07"])
            .status
            .success()
    );
    let listed = json(&venued(data, &["device", "list", "--json"]));
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");
}

/// `venued device test`: the daemon reaches a plug with the stored address and password
/// (a Shelly Gen2 fake with digest auth) and a router (the RouterOS fake, pinned), and
/// reports what they said; a plug that refuses the password or a host where nothing
/// listens is the device's problem: `200` with `reached: false` over the API, a
/// non-zero exit naming it in the CLI. Nothing changes on the devices.
#[test]
fn device_test_reaches_plugs_and_routers_with_their_stored_passwords() {
    use venued::fakes::mikrotik::{Mikrotik, MikrotikConfig};
    use venued::fakes::shelly::{Gen2Config, ShellyGen2};
    let rt = tokio::runtime::Runtime::new().unwrap();
    let fake = rt
        .block_on(ShellyGen2::start(Gen2Config {
            password: Some("plug pw".into()),
            relay_on: true,
            load_w: 42.5,
            ..Gen2Config::default()
        }))
        .unwrap();
    let router = rt
        .block_on(Mikrotik::start(MikrotikConfig::default()))
        .unwrap();
    let fingerprint = {
        use rustls_pki_types::pem::PemObject;
        let der =
            rustls_pki_types::CertificateDer::from_pem_slice(router.cert_pem().as_bytes()).unwrap();
        venued::devices::mikrotik::fingerprint(der.as_ref())
    };
    let host = fake.http_addr().to_string();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _d = Daemon::start_with_http(dir.path(), &format!("127.0.0.1:{port}"));
    let data = dir.path();
    json(&add_with_password(
        data,
        &["plug", "--type", "shelly_gen2", "--host", &host],
        "plug pw",
    ));
    let t = json(&venued(data, &["device", "test", "plug", "--json"]));
    assert_eq!(
        (
            t["type"].as_str(),
            t["reached"].as_bool(),
            t["relay_on"].as_bool(),
            t["auth_enabled"].as_bool()
        ),
        (Some("shelly_gen2"), Some(true), Some(true), Some(true)),
        "{t}"
    );
    assert_eq!(t["power_w"], 42.5);
    assert!(t["model"].is_string() && t["firmware"].is_string(), "{t}");
    let line = stdout(&venued(data, &["device", "test", "plug"]));
    assert!(line.contains("relay on, 42.5 W"), "{line}");

    // The router: its board, version, clock and list.
    json(&add_with_password(
        data,
        &[
            "router",
            "--type",
            "mikrotik",
            "--url",
            &format!("https://{}", router.https_addr()),
            "--user",
            "admin",
            "--tls-fingerprint",
            &fingerprint,
        ],
        &MikrotikConfig::default().password,
    ));
    let r = json(&venued(data, &["device", "test", "router", "--json"]));
    assert_eq!(
        (
            r["reached"].as_bool(),
            r["list"].as_str(),
            r["list_entries"].as_u64()
        ),
        (Some(true), Some("venue-blocked"), Some(0)),
        "{r}"
    );
    assert!(
        r["router_time"].is_string() && r["firmware"].is_string(),
        "{r}"
    );

    // A wrong stored password: the plug refuses, and venued says so.
    json(&add_with_password(
        data,
        &["plug-b", "--type", "shelly_gen2", "--host", &host],
        "wrong",
    ));
    let out = venued(data, &["device", "test", "plug-b"]);
    refused(&out, "device_error");
    assert!(stderr(&out).contains("credentials"), "{}", stderr(&out));
    // Nothing listening there: unreachable.
    let nobody = format!("127.0.0.1:{}", free_port());
    json(&venued(
        data,
        &[
            "device", "add", "gone", "--type", "tasmota", "--host", &nobody, "--json",
        ],
    ));
    refused(
        &venued(data, &["device", "test", "gone"]),
        "device_unreachable",
    );
    // Over HTTP: a device's problem is a 200 that says so, never a 5xx.
    assert!(
        venued(data, &["user", "add", "boss", "--role", "owner"])
            .status
            .success()
    );
    let created = stdout(&venued(data, &["token", "create", "t", "--user", "boss"]));
    let secret = created
        .lines()
        .find_map(|l| l.strip_prefix("secret: "))
        .unwrap()
        .to_owned();
    let post = |path: &str| -> (u16, Value) {
        rt.block_on(async {
            use http_body_util::BodyExt;
            let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .unwrap();
            let (mut tx, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                    .await
                    .unwrap();
            tokio::spawn(conn);
            let req = hyper::Request::builder()
                .method("POST")
                .uri(path)
                .header("host", "venued")
                .header("authorization", format!("Bearer {secret}"))
                .body(http_body_util::Empty::<hyper::body::Bytes>::new())
                .unwrap();
            let resp = tx.send_request(req).await.unwrap();
            let status = resp.status().as_u16();
            let bytes = resp.into_body().collect().await.unwrap().to_bytes();
            (status, serde_json::from_slice(&bytes).unwrap())
        })
    };
    for (name, code) in [("gone", "device_unreachable"), ("plug-b", "device_error")] {
        let (status, v) = post(&format!("/api/v1/devices/{name}/test"));
        assert_eq!(status, 200, "{v}");
        assert_eq!(
            (v["reached"].as_bool(), v["error"]["code"].as_str()),
            (Some(false), Some(code)),
            "{v}"
        );
    }
    // mikrotik-setup follows the same rule.
    json(&add_with_password(
        data,
        &[
            "router-gone",
            "--type",
            "mikrotik",
            "--url",
            &format!("https://{nobody}"),
            "--user",
            "admin",
            "--tls-fingerprint",
            &fingerprint,
        ],
        "x",
    ));
    let (status, v) = post("/api/v1/devices/router-gone/mikrotik-setup");
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        (
            v["reached"].as_bool(),
            v["error"]["code"].as_str(),
            v["complete"].as_bool()
        ),
        (Some(false), Some("device_unreachable"), Some(false)),
        "{v}"
    );
    let (status, v) = post("/api/v1/devices/nope/test");
    assert_eq!(
        (status, v["code"].as_str()),
        (404, Some("device_not_found"))
    );
    // An MQTT action is run, not tested; an unknown device is not found.
    json(&venued(
        data,
        &[
            "device",
            "add",
            "act",
            "--type",
            "mqtt_action",
            "--topic",
            "ps5/x",
            "--payload",
            "standby",
            "--json",
        ],
    ));
    refused(
        &venued(data, &["device", "test", "act"]),
        "device_not_testable",
    );
    refused(
        &venued(data, &["device", "test", "nope"]),
        "device_not_found",
    );
    // The tests changed nothing on the plug or the router.
    assert!(fake.relay_on());
    assert!(router.address_list("venue-blocked").is_empty());
    rt.block_on(fake.stop());
    rt.block_on(router.stop());
}
