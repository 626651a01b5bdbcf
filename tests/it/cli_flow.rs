//! The admin CLI as a new user runs it: against a running instance over the control
//! socket, and against the store directly when none runs.

use crate::support::*;
use serde_json::Value;

fn json(o: &std::process::Output) -> Value {
    assert!(o.status.success(), "command failed: {}", stderr(o));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn readme_tour_runs_a_session_through_its_whole_life() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let daemon = Daemon::start(d);
    for (id, name) in [("pc-01", "PC 01"), ("pc-02", "PC 02")] {
        let out = venued(d, &["station", "add", id, "--name", name, "--kind", "pc"]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(stdout(&out).contains(&format!("station {id} added")));
        // A PC's agent credentials come with it, once.
        assert!(
            stdout(&out).contains(&format!("username: agent:{id}")),
            "{}",
            stdout(&out)
        );
    }
    let started = venued(d, &["session", "start", "pc-01", "30m"]);
    assert!(
        stdout(&started).starts_with("S-1 on pc-01: running"),
        "{}",
        stdout(&started)
    );

    let v = json(&venued(d, &["session", "extend", "pc-01", "15m", "--json"]));
    assert_eq!(v["purchased"], "45m");
    let left: jiff::SignedDuration = v["remaining"].as_str().unwrap().parse().unwrap();
    assert!(
        left > jiff::SignedDuration::from_mins(44) && left <= jiff::SignedDuration::from_mins(45)
    );

    let v = json(&venued(d, &["session", "pause", "pc-01", "--json"]));
    assert_eq!(v["phase"], "paused");
    assert!(v["ends_at"].is_null(), "a paused session has no deadline");
    let v = json(&venued(d, &["session", "resume", "S-1", "--json"]));
    assert_eq!(v["phase"], "running");
    let moved = venued(d, &["session", "transfer", "pc-01", "pc-02"]);
    assert!(
        stdout(&moved).starts_with("S-1 on pc-02: running"),
        "{}",
        stdout(&moved)
    );

    let list = stdout(&venued(d, &["station", "list"]));
    assert!(
        list.lines()
            .any(|l| l.starts_with("pc-01") && l.ends_with("free")),
        "{list}"
    );
    assert!(
        list.lines()
            .any(|l| l.starts_with("pc-02") && l.contains("S-1")),
        "{list}"
    );

    let v = json(&venued(
        d,
        &[
            "session",
            "stop",
            "pc-02",
            "--reason",
            "customer left",
            "--json",
        ],
    ));
    assert_eq!(v["phase"], "ended");
    assert_eq!(v["reason"], "stopped");
    assert_eq!(
        v["remaining"], "0s",
        "an ended session has no time left to play"
    );

    let log = stdout(&venued(d, &["audit", "log"]));
    for change in [
        "started",
        "extended",
        "paused",
        "resumed",
        "transferred",
        "stopped",
    ] {
        assert!(
            log.contains(&format!("session.{change} S-1")),
            "no {change} in\n{log}"
        );
    }
    let verify = venued(d, &["audit", "verify"]);
    assert!(verify.status.success());
    assert!(
        // Boot, 2 × (station + its agent account), 6 session changes.
        stdout(&verify).starts_with("chain OK: 11 events"),
        "{}",
        stdout(&verify)
    );

    let status = daemon.terminate();
    assert!(status.success(), "SIGTERM must exit 0, got {status:?}");
    assert!(!d.join("venued.sock").exists(), "socket left behind");
}

#[test]
fn cli_opens_the_store_directly_when_no_instance_runs() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = venued(
        d,
        &[
            "station", "add", "ps5-1", "--name", "PS5 #1", "--kind", "console",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let out = venued(d, &["session", "start", "ps5-1", "1h"]);
    assert!(out.status.success(), "{}", stderr(&out));
    // The running instance picks up what was written while it was down.
    let _daemon = Daemon::start(d);
    let v = json(&venued(d, &["session", "show", "ps5-1", "--json"]));
    assert_eq!(v["station"], "ps5-1");
    assert_eq!(v["purchased"], "1h");
}

#[test]
fn a_second_instance_on_the_same_data_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let _daemon = Daemon::start(d);
    let second = std::process::Command::new(BIN)
        .arg("serve")
        .env("VENUED_DATA_DIR", d)
        .env("VENUED_HTTP_LISTEN", "127.0.0.1:0")
        .env("VENUED_MQTT_LISTEN", "127.0.0.1:0")
        .env("VENUED_MQTTS_LISTEN", "127.0.0.1:0")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(!second.status.success());
    assert!(
        stderr(&second).contains("in use by another venued process"),
        "{}",
        stderr(&second)
    );
    // The first one still answers.
    assert!(venued(d, &["station", "list"]).status.success());
}

#[test]
fn a_running_instance_whose_socket_is_gone_gets_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let _daemon = Daemon::start(d);
    std::fs::remove_file(d.join("venued.sock")).unwrap();
    let out = venued(d, &["station", "list"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("venued is running") && err.contains("does not answer"),
        "{err}"
    );
}

#[test]
fn the_control_socket_is_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let _daemon = Daemon::start(dir.path());
    let mode = std::fs::metadata(dir.path().join("venued.sock"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let mode = std::fs::metadata(dir.path()).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700);
}

#[test]
fn users_get_argon2id_hashes_that_never_reach_the_event_log() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = venued(d, &["user", "add", "owner", "--role", "owner"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let password = stdout(&out)
        .lines()
        .find_map(|l| l.strip_prefix("password: ").map(str::to_owned))
        .expect("generated password printed once");
    assert_eq!(password.len(), 20);
    let again = venued(d, &["user", "add", "owner", "--role", "staff"]);
    assert!(stderr(&again).contains("user_exists"), "{}", stderr(&again));
    let bad_role = venued(d, &["user", "add", "x", "--role", "admin"]);
    assert!(!bad_role.status.success());

    let log = stdout(&venued(d, &["audit", "log", "--json"]));
    assert!(log.contains("user_added"));
    assert!(
        !log.contains("argon2") && !log.contains(&password),
        "secret in the event log"
    );
    let store = venued::store::Store::open(
        &venued::store::StoreLocation::Dir(d.to_path_buf()),
        &venued::store::StoreOptions::default(),
    )
    .unwrap();
    let user = store.user("owner").unwrap().unwrap();
    assert!(user.password_hash.starts_with("$argon2id$"));
    assert!(venued::auth::verify_password(
        &password,
        &user.password_hash
    ));
    assert!(!venued::auth::verify_password(
        "wrong password",
        &user.password_hash
    ));
}

#[test]
fn a_weak_password_from_stdin_is_refused() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(BIN)
        .args(["user", "add", "kim", "--role", "staff", "--password-stdin"])
        .env("VENUED_DATA_DIR", dir.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"short\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("weak_password"), "{}", stderr(&out));
}

#[test]
fn the_same_idempotency_key_never_starts_two_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let _daemon = Daemon::start(d);
    venued(
        d,
        &["station", "add", "pc-1", "--name", "PC", "--kind", "pc"],
    );
    let args = [
        "session",
        "start",
        "pc-1",
        "30m",
        "--idempotency-key",
        "till-7-sale-42",
    ];
    let first = venued(d, &args);
    assert!(first.status.success(), "{}", stderr(&first));
    let second = venued(d, &args);
    assert!(second.status.success(), "{}", stderr(&second));
    assert!(
        stdout(&second).contains("already done"),
        "{}",
        stdout(&second)
    );
    let reused = venued(
        d,
        &[
            "session",
            "start",
            "pc-1",
            "1h",
            "--idempotency-key",
            "till-7-sale-42",
        ],
    );
    assert!(
        stderr(&reused).contains("idempotency_key_reused"),
        "{}",
        stderr(&reused)
    );
    let sessions = json(&venued(d, &["session", "list", "--json"]));
    assert_eq!(sessions.as_array().unwrap().len(), 1);
}

#[test]
fn tokens_are_created_listed_and_revoked_from_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    assert!(
        venued(d, &["user", "add", "kim", "--role", "staff"])
            .status
            .success()
    );
    let too_much = venued(
        d,
        &["token", "create", "x", "--user", "kim", "--role", "owner"],
    );
    assert!(
        stderr(&too_much).contains("token_exceeds_user"),
        "{}",
        stderr(&too_much)
    );
    let out = venued(
        d,
        &[
            "token",
            "create",
            "till",
            "--user",
            "kim",
            "--expires-in",
            "720h",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let id = text.split_whitespace().nth(1).unwrap().to_owned();
    let secret = text
        .lines()
        .find_map(|l| l.strip_prefix("secret: "))
        .unwrap()
        .to_owned();
    assert!(secret.starts_with(&format!("vdt_{id}_")));
    let list = stdout(&venued(d, &["token", "list"]));
    assert!(
        list.contains(&id) && list.contains("active") && !list.contains(&secret),
        "{list}"
    );
    assert!(venued(d, &["token", "revoke", &id]).status.success());
    assert!(stdout(&venued(d, &["token", "list"])).contains("revoked"));
    let again = venued(d, &["token", "revoke", &id]);
    assert!(
        stderr(&again).contains("token_revoked"),
        "{}",
        stderr(&again)
    );
    let log = stdout(&venued(d, &["audit", "log"]));
    assert!(
        log.contains("token_created") && log.contains("token_revoked"),
        "{log}"
    );
    assert!(!log.contains(&secret));
}
