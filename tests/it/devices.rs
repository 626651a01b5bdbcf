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
