//! Console stations enforced by the reconciler, end to end: a real daemon drives a Shelly
//! Gen2 plug fake (HTTP, digest auth) and the MikroTik fake (HTTPS REST), configured with
//! the CLI. A session powers the plug and unblocks the console; its end runs the ladder
//! in order with the configured delays; standby confirmed by a power reading stops the
//! ladder before the relay; a relay switched by hand is an alert.

use crate::mqtt::MqttDaemon;
use crate::support::*;
use serde_json::Value;
use std::io::Write;
use std::net::IpAddr;
use std::process::{Command, Stdio};
use std::time::Duration;
use tokio::time::Instant;
use venued::fakes::mikrotik::{Mikrotik as Router, MikrotikConfig};
use venued::fakes::shelly::{Gen2Config, ShellyGen2};

const LIST: &str = "venue-blocked";
const CONSOLE: &str = "192.168.88.57";
const PLUG_PASSWORD: &str = "plug pass 7";
/// Generous: the daemon polls every 100 ms, CI machines are slow.
const WAIT: Duration = Duration::from_secs(15);

fn config(marker: &std::path::Path) -> String {
    format!(
        r#"
[consoles]
poll-interval = "100ms"
retry-min = "50ms"
retry-max = "500ms"
failsafe = "30s"
power-sample-interval = "1s"

[consoles.commands.rest-mode]
program = "/bin/sh"
args = ["-c", "echo \"$VENUED_STATION\" >> '{}'"]
timeout = "5s"
"#,
        marker.display()
    )
}

/// `venued ...` with `input` on stdin (a password), JSON out.
fn cli_stdin(d: &MqttDaemon, args: &[&str], input: &str) -> Value {
    let mut child = Command::new(BIN)
        .args(args)
        .env("VENUED_DATA_DIR", &d.dir)
        .env_remove("VENUED_CONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{input}").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "venued {args:?}: {}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

/// The audit log's events of the reconciler (device actions and alerts), in order.
fn enforcement_events(d: &MqttDaemon) -> Vec<Value> {
    let page = d.cli(&["audit", "log", "--limit", "1000", "--json"]);
    page["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| {
            matches!(
                k["type"].as_str(),
                Some("device_acted" | "enforcement_alert" | "power_sampled")
            )
        })
        .cloned()
        .collect()
}

fn actions(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .filter(|k| k["type"] == "device_acted")
        .map(|k| {
            format!(
                "{} {}",
                k["action"].as_str().unwrap(),
                k["outcome"].as_str().unwrap()
            )
        })
        .collect()
}

async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < WAIT, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    start.elapsed()
}

fn listed(router: &Router) -> usize {
    let ip: IpAddr = CONSOLE.parse().unwrap();
    router
        .address_list(LIST)
        .iter()
        .filter(|e| e.address == ip.to_string())
        .count()
}

struct Venue {
    d: MqttDaemon,
    plug: ShellyGen2,
    router: Router,
    marker: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

/// A daemon with one console station `ps5-07` on a Gen2 plug and the router, with the
/// standby program and the ladder given.
async fn venue(ladder: &[&str]) -> Venue {
    venue_rearm(
        "failsafe = \"30s\"",
        ladder,
        venued::fakes::shelly::ReArm::Restarts,
    )
    .await
}

fn setup_station(d: &MqttDaemon, plug: &ShellyGen2, router: &Router, ladder: &[&str]) {
    d.cli(&[
        "station", "add", "ps5-07", "--name", "PS5 7", "--kind", "console", "--json",
    ]);
    let host = plug.http_addr().to_string();
    cli_stdin(
        d,
        &[
            "device",
            "add",
            "plug-07",
            "--type",
            "shelly_gen2",
            "--host",
            &host,
            "--password-stdin",
            "--json",
        ],
        PLUG_PASSWORD,
    );
    add_router(d, router);
    let mut args = vec![
        "station",
        "enforce",
        "ps5-07",
        "--plug",
        "plug-07",
        "--router",
        "router",
        "--address",
        CONSOLE,
        "--standby-command",
        "rest-mode",
        "--json",
    ];
    args.extend_from_slice(ladder);
    d.cli(&args);
}

/// The router fake's certificate fingerprint, as `--tls-fingerprint` takes it.
fn router_fingerprint(router: &Router) -> String {
    use rustls_pki_types::pem::PemObject;
    let der =
        rustls_pki_types::CertificateDer::from_pem_slice(router.cert_pem().as_bytes()).unwrap();
    venued::devices::mikrotik::fingerprint(der.as_ref())
}

/// `venued device add router --type mikrotik ...` for the fake, pinned.
fn add_router(d: &MqttDaemon, router: &Router) {
    let url = format!("https://{}", router.https_addr());
    let fingerprint = router_fingerprint(router);
    cli_stdin(
        d,
        &[
            "device",
            "add",
            "router",
            "--type",
            "mikrotik",
            "--url",
            &url,
            "--user",
            "admin",
            "--tls-fingerprint",
            &fingerprint,
            "--password-stdin",
            "--json",
        ],
        &MikrotikConfig::default().password,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_powers_and_unblocks_and_its_end_climbs_the_ladder_until_standby_is_confirmed() {
    let v = venue(&[
        "--block-after-ms",
        "0",
        "--standby-after-ms",
        "600",
        "--standby-confirm-ms",
        "3000",
        "--standby-below-w",
        "15",
        "--cut-after-ms",
        "3600",
        "--allow-cut",
    ])
    .await;

    // Idle at start: the console is blocked, the relay left alone (off).
    wait_for("the idle console blocked", || listed(&v.router) == 1).await;
    assert!(!v.plug.relay_on());

    // A session: power on (with the plug's own fail-safe timer armed) and unblock.
    v.d.cli(&["session", "start", "ps5-07", "30m", "--json"]);
    wait_for("the plug powered", || v.plug.relay_on()).await;
    wait_for("the console unblocked", || listed(&v.router) == 0).await;
    let (_, armed) = v.plug.timer().expect("a flip-back timer while powered");
    assert!((29.0..=30.0).contains(&armed), "timer {armed}");
    v.plug.set_load_w(180.0);

    // Staff stop it: block at once, standby after 600 ms, and the console going to rest
    // (power below 15 W) confirms standby, so the relay is never cut.
    let stopped = Instant::now();
    v.d.cli(&["session", "stop", "ps5-07", "--json"]);
    let blocked_in = wait_for("the console blocked", || listed(&v.router) == 1).await;
    let standby_in = wait_for("the standby program ran", || {
        std::fs::read_to_string(&v.marker).is_ok_and(|s| s.contains("ps5-07"))
    })
    .await
        + blocked_in;
    assert!(
        blocked_in < Duration::from_millis(600),
        "blocked after {blocked_in:?}"
    );
    assert!(
        standby_in >= Duration::from_millis(550),
        "standby too early: {standby_in:?}"
    );
    v.plug.set_load_w(1.5);
    // Past the cut time with room to spare: the relay stays on.
    while stopped.elapsed() < Duration::from_millis(5000) {
        assert!(
            v.plug.relay_on(),
            "relay cut although standby was confirmed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let events = enforcement_events(&v.d);
    let acts = actions(&events);
    // Power and network are separate lanes: the two session-start actions may finish
    // in either order.
    assert_eq!(acts.len(), 6, "{events:#?}");
    assert_eq!(acts[0], "block done");
    let mut start = acts[1..3].to_vec();
    start.sort();
    assert_eq!(start, ["power_on done", "unblock done"]);
    assert_eq!(
        acts[3..],
        ["block done", "standby done", "standby confirmed"],
        "{events:#?}"
    );
    assert_eq!(v.router.added(LIST, CONSOLE), 2);
    assert_eq!(v.router.removed(LIST, CONSOLE), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_standby_the_ladder_cuts_the_relay_after_grace_and_a_hand_switch_is_an_alert() {
    let v = venue(&[
        "--block-after-ms",
        "0",
        "--standby-after-ms",
        "300",
        "--standby-confirm-ms",
        "700",
        "--standby-below-w",
        "15",
        "--cut-after-ms",
        "1500",
        "--allow-cut",
    ])
    .await;
    v.d.cli(&["session", "start", "ps5-07", "30m", "--json"]);
    wait_for("the plug powered", || v.plug.relay_on()).await;
    v.plug.set_load_w(180.0);
    // Let a poll see the load before the session ends.
    tokio::time::sleep(Duration::from_millis(300)).await;
    v.d.cli(&["session", "stop", "ps5-07", "--json"]);
    // The console ignores standby (keeps drawing): the relay is cut at 1.5 s, not before.
    let cut_in = wait_for("the relay cut", || !v.plug.relay_on()).await;
    assert!(
        cut_in >= Duration::from_millis(1400),
        "cut too early: {cut_in:?}"
    );
    // (Once venued has recorded its cut: a press while its switch is still in flight
    // is a race no test should depend on.)
    wait_for("the cut recorded", || {
        actions(&enforcement_events(&v.d)).contains(&"power_off done".to_owned())
    })
    .await;
    // Someone switches the console back on at the plug: an alert, and (the default
    // response is restore) the relay goes back off.
    v.plug.set_load_w(0.0);
    v.plug.press_button();
    assert!(v.plug.relay_on());
    wait_for("the relay switched back off", || !v.plug.relay_on()).await;
    let events = enforcement_events(&v.d);
    let alerts: Vec<&Value> = events
        .iter()
        .filter(|k| k["type"] == "enforcement_alert")
        .collect();
    let kinds: Vec<&str> = alerts
        .iter()
        .map(|k| k["alert"].as_str().unwrap())
        .collect();
    assert!(kinds.contains(&"standby_not_confirmed"), "{events:#?}");
    let hand = alerts
        .iter()
        .find(|k| k["alert"] == "relay_switched_by_hand")
        .unwrap_or_else(|| panic!("no hand-switch alert: {events:#?}"));
    assert_eq!(hand["response"], "restore");
    assert_eq!(hand["device"], "plug-07");
    assert!(
        hand["detail"].as_str().unwrap().contains("button"),
        "{hand}"
    );
    let acts = actions(&events);
    let pos = |a: &str| acts.iter().position(|x| x == a).unwrap_or(usize::MAX);
    assert!(pos("standby done") < pos("power_off done"), "{acts:?}");
}

/// A venue whose plug's fail-safe timer is short, for the tests that kill the daemon.
async fn venue_with(consoles: &str, ladder: &[&str]) -> Venue {
    venue_rearm(consoles, ladder, venued::fakes::shelly::ReArm::Restarts).await
}

async fn venue_rearm(
    consoles: &str,
    ladder: &[&str],
    rearm: venued::fakes::shelly::ReArm,
) -> Venue {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("standby.log");
    let file = dir.path().join("venued.toml");
    std::fs::write(
        &file,
        config(&marker).replacen("failsafe = \"30s\"", consoles, 1),
    )
    .unwrap();
    let d = MqttDaemon::start_with(
        dir.path(),
        &[
            ("VENUED_CONFIG_FILE", file.to_str().unwrap()),
            ("VENUED_LOG", "venued::enforce=debug,info"),
        ],
    );
    let plug = ShellyGen2::start(Gen2Config {
        password: Some(PLUG_PASSWORD.into()),
        rearm,
        ..Gen2Config::new("AABBCC000008")
    })
    .await
    .unwrap();
    let router = Router::start(MikrotikConfig::default()).await.unwrap();
    setup_station(&d, &plug, &router, ladder);
    Venue {
        d,
        plug,
        router,
        marker,
        _dir: dir,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_keep_a_session_powered_and_a_killed_controller_leaves_the_plug_to_switch_off() {
    let v = venue_with("failsafe = \"2s\"", &[]).await;
    v.d.cli(&["session", "start", "ps5-07", "30m", "--json"]);
    wait_for("the plug powered", || v.plug.relay_on()).await;
    // Three fail-safe periods: heartbeats re-arm the plug's timer, it never runs out.
    let alive = Instant::now();
    while alive.elapsed() < Duration::from_secs(6) {
        assert!(
            v.plug.relay_on(),
            "switched off mid-session after {:?}",
            alive.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // SIGKILL: no goodbye. The plug's own timer switches the console off.
    let Venue { d, plug, .. } = v;
    drop(d);
    let off_in = wait_for("the plug's fail-safe switching off", || !plug.relay_on()).await;
    assert!(
        off_in <= Duration::from_millis(2_500),
        "off after {off_in:?}"
    );
    assert_eq!(plug.source(), "timer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tamper_is_caught_hand_switch_removed_router_entry_and_a_plug_gone_offline() {
    let v = venue(&[]).await;
    wait_for("the idle console blocked", || listed(&v.router) == 1).await;
    // Switched on at the plug with no session: an alert; the default response switches
    // it back off.
    // (Once venued has seen it off: a relay already on when first seen is no switch.
    // The first poll may take two requests, a digest challenge and the answer.)
    wait_for("two status polls", || {
        v.plug
            .requests()
            .iter()
            .filter(|r| r.contains("GetStatus"))
            .count()
            >= 3
    })
    .await;
    // A console that then draws 140 W: power with no session too.
    v.plug.set_load_w(140.0);
    v.plug.press_button();
    wait_for("the relay switched back off", || !v.plug.relay_on()).await;

    // The console's router entry deleted behind venued's back: an alert, and re-added.
    let ip: IpAddr = CONSOLE.parse().unwrap();
    let fingerprint = router_fingerprint(&v.router);
    let kind = venued::domain::device::DeviceKind::Mikrotik {
        url: format!("https://{}", v.router.https_addr()),
        user: "admin".into(),
        list: LIST.into(),
        tls_fingerprint: Some(fingerprint),
    };
    let intruder =
        venued::devices::mikrotik::Mikrotik::new(&kind, Some(&MikrotikConfig::default().password))
            .unwrap();
    intruder.unblock(ip).await.unwrap();
    assert_eq!(listed(&v.router), 0);
    wait_for("the entry re-added", || listed(&v.router) == 1).await;

    // A session whose plug drops off the network: after three failed polls, an alert.
    v.d.cli(&["session", "start", "ps5-07", "30m", "--json"]);
    wait_for("the plug powered", || v.plug.relay_on()).await;
    v.plug.set_fault(venued::fakes::shelly::Fault::Offline);
    wait_for("the offline alert", || {
        enforcement_events(&v.d)
            .iter()
            .any(|k| k["alert"] == "plug_offline")
    })
    .await;
    v.plug.set_fault(venued::fakes::shelly::Fault::None);

    let events = enforcement_events(&v.d);
    let alert = |kind: &str| {
        events
            .iter()
            .find(|k| k["type"] == "enforcement_alert" && k["alert"] == kind)
            .unwrap_or_else(|| panic!("no {kind} alert: {events:#?}"))
            .clone()
    };
    let hand = alert("relay_switched_by_hand");
    assert!(
        hand["detail"].as_str().unwrap().contains("with no session"),
        "{hand}"
    );
    let power = alert("power_without_session");
    assert!(
        power["detail"].as_str().unwrap().starts_with("140 W"),
        "{power}"
    );
    assert_eq!(power["response"], "alert");
    assert_eq!(alert("router_entry_removed")["device"], "router");
    assert_eq!(alert("router_entry_removed")["response"], "restore");
    assert_eq!(alert("plug_offline")["response"], "alert");
    // Each caught once, not once per poll.
    let count = |kind: &str| {
        events
            .iter()
            .filter(|k| k["type"] == "enforcement_alert" && k["alert"] == kind)
            .count()
    };
    assert_eq!(count("relay_switched_by_hand"), 1, "{events:#?}");
    assert_eq!(count("power_without_session"), 1, "{events:#?}");
    assert_eq!(count("router_entry_removed"), 1, "{events:#?}");
    assert_eq!(count("plug_offline"), 1, "{events:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plug_whose_firmware_ignores_a_re_arm_is_caught_and_gets_no_timer_after_that() {
    let v = venue_rearm(
        "failsafe = \"3s\"",
        &[],
        venued::fakes::shelly::ReArm::Ignored,
    )
    .await;
    v.d.cli(&["session", "start", "ps5-07", "30m", "--json"]);
    wait_for("the plug powered", || v.plug.relay_on()).await;
    // The first heartbeat (after 1 s) finds the timer not restarted.
    wait_for("the re-arm failure recorded", || {
        enforcement_events(&v.d).iter().any(|k| {
            k["action"] == "heartbeat"
                && k["error"]
                    .as_str()
                    .is_some_and(|e| e.contains("did not restart its flip-back timer"))
        })
    })
    .await;
    // That timer still ends once (the firmware keeps it); venued sees the relay off in
    // a session, says so, and powers the console again, now without a timer. (The dark
    // moment may be shorter than this test's polling: the alert is what shows it.)
    wait_for("the old timer's switch-off seen", || {
        enforcement_events(&v.d).iter().any(|k| {
            k["alert"] == "relay_switched_by_hand"
                && k["detail"].as_str().is_some_and(|d| d.contains("timer"))
        })
    })
    .await;
    wait_for("the console powered again", || v.plug.relay_on()).await;
    assert_eq!(v.plug.timer(), None, "a timer armed again");
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(v.plug.relay_on(), "switched off again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plug_on_mqtt_reports_by_push_a_hand_switch_and_going_offline_within_a_second() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("standby.log");
    // Polls every 30 s: whatever is seen sooner came over MQTT.
    let text = config(&marker).replacen("poll-interval = \"100ms\"", "poll-interval = \"30s\"", 1);
    let d = MqttDaemon::start_config(dir.path(), &text);
    let mut cfg = Gen2Config {
        password: Some(PLUG_PASSWORD.into()),
        ..Gen2Config::new("AABBCC000009")
    };
    let prefix = format!("shellyplusplugs-{}", "aabbcc000009");
    let (user, pass) = d.add_device("device:plug-07", &prefix);
    cfg.mqtt = Some(venued::fakes::shelly::MqttConfig::new(
        std::net::SocketAddr::from(([127, 0, 0, 1], d.plain)),
        &user,
        &pass,
    ));
    let plug = ShellyGen2::start(cfg).await.unwrap();
    assert!(plug.wait_mqtt(true, WAIT).await);
    d.cli(&[
        "station", "add", "ps5-07", "--name", "PS5 7", "--kind", "console", "--json",
    ]);
    let host = plug.http_addr().to_string();
    cli_stdin(
        &d,
        &[
            "device",
            "add",
            "plug-07",
            "--type",
            "shelly_gen2",
            "--host",
            &host,
            "--mqtt-prefix",
            &prefix,
            "--password-stdin",
            "--json",
        ],
        PLUG_PASSWORD,
    );
    d.cli(&[
        "station", "enforce", "ps5-07", "--plug", "plug-07", "--json",
    ]);
    // venued asks a plug it starts following to report, over MQTT; once a power sample
    // of the station is in the log, the report (relay off, 0 W) has reached the
    // reconciler, so the press below is a change it sees.
    wait_for("the plug's first report taken in", || {
        enforcement_events(&d).iter().any(|k| {
            k["type"] == "power_sampled"
                && k["samples"]
                    .as_array()
                    .is_some_and(|s| s.iter().any(|x| x["station"] == "ps5-07"))
        })
    })
    .await;
    assert!(
        plug.requests()
            .iter()
            .any(|r| r.starts_with("MQTT") && r.contains("GetStatus")),
        "{:?}",
        plug.requests()
    );

    // A press at the plug: pushed, caught, switched back (over HTTP) within a second.
    plug.press_button();
    let back = wait_for("the relay switched back off", || !plug.relay_on()).await;
    assert!(back < Duration::from_secs(2), "took {back:?}");

    // A session, then the plug drops off the network: its will says so at once.
    d.cli(&["session", "start", "ps5-07", "30m", "--json"]);
    wait_for("the plug powered", || plug.relay_on()).await;
    // Commands went over MQTT first (the switch back off, and on for the session).
    let over_mqtt = plug
        .requests()
        .iter()
        .filter(|r| r.starts_with("MQTT") && r.contains("Switch.Set"))
        .count();
    assert!(over_mqtt >= 2, "{:?}", plug.requests());
    plug.set_fault(venued::fakes::shelly::Fault::Offline);
    let offline = wait_for("the offline alert", || {
        enforcement_events(&d)
            .iter()
            .any(|k| k["alert"] == "plug_offline")
    })
    .await;
    assert!(offline < Duration::from_secs(5), "took {offline:?}");
    plug.set_fault(venued::fakes::shelly::Fault::None);
    let events = enforcement_events(&d);
    assert!(
        events
            .iter()
            .any(|k| k["alert"] == "relay_switched_by_hand"),
        "{events:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_plug_and_a_wrong_password_are_retried_recorded_and_alerted_once() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("standby.log");
    let d = MqttDaemon::start_config(dir.path(), &config(&marker));
    // A plug that answers, but not to this password; and one nobody listens for.
    let plug = ShellyGen2::start(Gen2Config {
        password: Some(PLUG_PASSWORD.into()),
        ..Gen2Config::new("AABBCC00000A")
    })
    .await
    .unwrap();
    let closed = format!("127.0.0.1:{}", free_port());
    for (station, device, host, password) in [
        (
            "ps5-01",
            "plug-01",
            plug.http_addr().to_string(),
            "not the password",
        ),
        ("ps5-02", "plug-02", closed, PLUG_PASSWORD),
    ] {
        d.cli(&[
            "station", "add", station, "--name", station, "--kind", "console", "--json",
        ]);
        cli_stdin(
            &d,
            &[
                "device",
                "add",
                device,
                "--type",
                "shelly_gen2",
                "--host",
                &host,
                "--password-stdin",
                "--json",
            ],
            password,
        );
        d.cli(&["station", "enforce", station, "--plug", device, "--json"]);
        d.cli(&["session", "start", station, "30m", "--json"]);
    }
    let failing = |events: &[Value], station: &str| {
        events
            .iter()
            .filter(|k| k["alert"] == "device_failing" && k["station"] == station)
            .count()
    };
    wait_for("both plugs alerted as failing", || {
        let events = enforcement_events(&d);
        failing(&events, "ps5-01") == 1 && failing(&events, "ps5-02") == 1
    })
    .await;
    // Retries go on with back-off, each recorded with its error; the alert stays one.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let events = enforcement_events(&d);
    let errors = |station: &str| -> Vec<String> {
        events
            .iter()
            .filter(|k| k["station"] == station && k["outcome"] == "failed")
            .map(|k| k["error"].as_str().unwrap().to_owned())
            .collect()
    };
    let wrong = errors("ps5-01");
    assert!(wrong.len() >= 3, "{events:#?}");
    assert!(wrong.iter().all(|e| e.contains("credentials")), "{wrong:?}");
    let gone = errors("ps5-02");
    assert!(gone.len() >= 3, "{events:#?}");
    assert!(gone.iter().all(|e| e.contains("cannot reach")), "{gone:?}");
    assert_eq!(failing(&events, "ps5-01"), 1);
    assert_eq!(failing(&events, "ps5-02"), 1);
    assert!(!plug.relay_on());
    // The daemon goes on answering.
    d.cli(&["station", "list", "--json"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provision_writes_the_configured_fail_safe_timings_into_the_plug() {
    let v = venue_with(
        "failsafe = \"30s\"\ndeadman-grace = \"90s\"\nauto-off = \"3h\"",
        &[],
    )
    .await;
    let report = v.d.cli(&["device", "provision", "plug-07", "--json"]);
    assert_eq!(report["reached"], true, "{report}");
    let c = v
        .plug
        .call("Switch.GetConfig", serde_json::json!({"id": 0}))
        .unwrap();
    assert_eq!(c["auto_off_delay"].as_f64(), Some(10_800.0), "{c}");
    let grace = v
        .plug
        .call("KVS.Get", serde_json::json!({"key": "venued.deadman_s"}))
        .unwrap();
    assert_eq!(grace["value"].as_u64(), Some(90), "{grace}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_venue_clock_is_set_from_the_router_clock() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("standby.log");
    // The system clock is never trusted: only staff, or the router, can vouch.
    let text = format!("{}\n[clock]\ntrust = \"never\"\n", config(&marker));
    let d = MqttDaemon::start_config(dir.path(), &text);
    let router = Router::start(MikrotikConfig::default()).await.unwrap();
    add_router(&d, &router);
    // Read as soon as the router is configured.
    let start = Instant::now();
    let corrected = loop {
        let page = d.cli(&["audit", "log", "--limit", "1000", "--json"]);
        let found = page["events"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["type"] == "clock_corrected")
            .cloned();
        if let Some(e) = found {
            break e;
        }
        assert!(
            start.elapsed() < WAIT,
            "no clock correction from the router"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(corrected["source"], "router", "{corrected}");
    assert_eq!(corrected["actor"]["kind"], "system", "{corrected}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tasmota_plug_on_mqtt_gets_its_dead_man_re_armed_and_goes_dark_when_venued_dies() {
    use venued::fakes::tasmota::{Tasmota, TasmotaConfig, TasmotaMqtt};
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("standby.log");
    let text = config(&marker).replacen("failsafe = \"30s\"", "failsafe = \"3s\"", 1);
    let d = MqttDaemon::start_config(dir.path(), &text);
    let topic = "ps5plug07";
    let v = d.cli(&[
        "mqtt",
        "add",
        "device:plug-07",
        "--topic",
        &format!("cmnd/{topic}"),
        "--topic",
        &format!("stat/{topic}"),
        "--topic",
        &format!("tele/{topic}"),
        "--json",
    ]);
    let user = v["credentials"]["username"].as_str().unwrap().to_owned();
    let pass = v["credentials"]["password"].as_str().unwrap().to_owned();
    let mut mqtt = TasmotaMqtt::new("127.0.0.1", d.plain, &user, &pass);
    mqtt.retry = Duration::from_millis(500);
    mqtt.boot_time = Duration::from_millis(300);
    let plug = Tasmota::start(TasmotaConfig {
        topic: Some(topic.into()),
        mqtt: Some(mqtt),
        load_w: 120.0,
        ..TasmotaConfig::default()
    })
    .await
    .unwrap();
    wait_for("the plug on MQTT", || plug.mqtt_connected()).await;
    d.cli(&[
        "station", "add", "ps5-07", "--name", "PS5 7", "--kind", "console", "--json",
    ]);
    let host = plug.http_addr().to_string();
    d.cli(&[
        "device", "add", "plug-07", "--type", "tasmota", "--host", &host, "--topic", topic,
        "--json",
    ]);
    d.cli(&[
        "station", "enforce", "ps5-07", "--plug", "plug-07", "--json",
    ]);
    let report = d.cli(&["device", "provision", "plug-07", "--json"]);
    assert_eq!(report["reached"], true, "{report}");
    assert!(
        plug.rules().iter().any(|(_, _, on)| *on),
        "{:?}",
        plug.rules()
    );

    d.cli(&["session", "start", "ps5-07", "30m", "--json"]);
    wait_for("the plug powered", || plug.power_on()).await;
    // The heartbeat over MQTT arms RuleTimer1 with the fail-safe (3 s, raised to the
    // rule's 10 s minimum) and keeps re-arming it: the console stays powered for three
    // periods. (Provision's own grace is 2 min: a timer of 10 s or less was armed by the
    // heartbeat.)
    wait_for("RuleTimer1 armed by the heartbeat", || {
        plug.rule_timers()[0].is_some_and(|left| left <= Duration::from_secs(10))
    })
    .await;
    let alive = Instant::now();
    while alive.elapsed() < Duration::from_secs(9) {
        assert!(plug.power_on(), "switched off mid-session");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(d);
    let off_in = wait_for("the plug's fail-safe switching off", || !plug.power_on()).await;
    assert!(
        off_in <= Duration::from_millis(3_500),
        "off after {off_in:?}"
    );
}
