//! The Shelly dead-man script (`firmware/shelly/deadman.js`) run the way a plug runs it:
//! stored in the Gen2 fake with `Script.Create`/`Script.PutCode`, then executed in an
//! embedded QuickJS engine whose `Shelly.call` goes into the fake's in-process RPC
//! (so `Switch.Set` really switches the fake's relay and `KVS.*` really uses its store).
//! `Timer` runs on a virtual clock the test advances, `MQTT.subscribe` gets heartbeats
//! delivered in-process: hours of plug time take milliseconds.
//!
//! The host objects follow the firmware's documented API (firmware/README.md) and
//! enforce its limits, so a script that would be stopped on a plug fails here: at most
//! 5 timers and 5 `Shelly.call`s in flight ("Too many calls in progress"), 10 MQTT
//! subscriptions; an exception that escapes a callback is recorded as the script's
//! death. Callbacks of `Shelly.call` come later, never inside the call, as on a plug.
//!
//! QuickJS is a full ES2023 engine, far more than a plug runs: `mjs_subset` checks the
//! script's text against the mJS-safe subset the script header claims.

mod engine;
mod mjs_subset;

use engine::{CHECK_S, GRACE_S, Plug};
use serde_json::json;

#[tokio::test]
async fn deadman_keeps_a_session_on_while_heartbeats_come_and_cuts_it_after_the_grace() {
    let plug = Plug::start(None).await;
    assert_eq!(
        plug.host.borrow().subscriptions[0].filter,
        plug.heartbeat_topic(),
        "subscribed to the heartbeat under the plug's own prefix"
    );
    // Off the check grid on purpose: beats come between the script's checks.
    plug.advance(2.5);
    plug.switch_on();
    for _ in 0..40 {
        plug.heartbeat("");
        plug.advance(15.0);
        assert!(plug.on(), "a heartbeat every 15 s keeps the station on");
    }
    plug.heartbeat("");
    // The controller dies.
    plug.advance(GRACE_S - 1.0);
    assert!(plug.on(), "not cut before the grace has passed");
    assert_eq!(plug.count_calls("Switch.Set"), 0);
    plug.advance(1.0 + CHECK_S);
    assert!(!plug.on(), "cut within grace + one check");
    assert_eq!(plug.fake.source(), "loopback", "switched by the script");
    let why = plug.tripped().expect("the cut is recorded in KVS");
    assert_eq!(why["allowed_s"], json!(120));
    assert_eq!(why["trips"], json!(1));
    assert!(why["quiet_s"].as_f64().unwrap() > GRACE_S);
    // Idempotent: an hour later there was still only the one Switch.Set.
    plug.advance(3600.0);
    assert!(!plug.on());
    assert_eq!(plug.count_calls("Switch.Set"), 1);
    assert!(
        plug.prints()
            .iter()
            .any(|p| p.contains("relay switched off"))
    );
    plug.assert_healthy();
}

#[tokio::test]
async fn deadman_cuts_a_hand_switch_on_when_no_heartbeat_comes() {
    let plug = Plug::start(None).await;
    // The controller has been dead for an hour when someone presses the button.
    plug.advance(3602.5);
    assert!(!plug.on());
    plug.fake.press_button();
    assert!(plug.on());
    plug.advance(GRACE_S - 1.0);
    assert!(
        plug.on(),
        "a hand switch-on gets the grace, not an instant cut"
    );
    plug.advance(1.0 + CHECK_S);
    assert!(!plug.on(), "and is cut after it");
    // A second press is cut again, once more.
    plug.advance(30.0);
    plug.fake.press_button();
    plug.advance(GRACE_S + CHECK_S);
    assert!(!plug.on());
    assert_eq!(plug.count_calls("Switch.Set"), 2);
    assert_eq!(plug.tripped().unwrap()["trips"], json!(2));
    plug.assert_healthy();
}

#[tokio::test]
async fn deadman_honours_the_grace_configured_in_kvs() {
    for (value, grace) in [(json!("30"), 30.0), (json!(60), 60.0)] {
        let plug = Plug::start(Some(value.clone())).await;
        plug.advance(2.5);
        plug.switch_on();
        plug.heartbeat("");
        plug.advance(grace - 1.0);
        assert!(plug.on(), "{value}: on before the configured grace");
        plug.advance(1.0 + CHECK_S);
        assert!(!plug.on(), "{value}: cut after the configured grace");
        assert_eq!(plug.tripped().unwrap()["allowed_s"], json!(grace as u64));
        plug.assert_healthy();
    }
    // Bad values: the default grace, and a word in the script's log.
    for value in [
        json!("abc"),
        json!(5),
        json!("100000"),
        json!(12.5),
        json!(""),
        json!(true),
        json!({"s": 30}),
    ] {
        let plug = Plug::start(Some(value.clone())).await;
        plug.advance(2.5);
        plug.switch_on();
        plug.heartbeat("");
        plug.advance(GRACE_S - 1.0);
        assert!(plug.on(), "{value}: falls back to the default grace");
        plug.advance(1.0 + CHECK_S);
        assert!(!plug.on(), "{value}: cut after the default grace");
        assert!(
            plug.prints().iter().any(|p| p.contains("venued.deadman_s")),
            "{value}: {:?}",
            plug.prints()
        );
        plug.assert_healthy();
    }
}

#[tokio::test]
async fn deadman_heartbeat_grant_sets_the_allowance_of_that_beat() {
    let plug = Plug::start(None).await;
    plug.advance(2.5);
    plug.switch_on();
    plug.heartbeat(r#"{"grant_s": 300}"#);
    plug.advance(299.0);
    assert!(plug.on(), "a longer grant outlasts the default grace");
    plug.advance(1.0 + CHECK_S);
    assert!(!plug.on());
    assert_eq!(plug.tripped().unwrap()["allowed_s"], json!(300));

    plug.switch_on();
    plug.heartbeat(r#"{"session":"s1","grant_s":10}"#);
    plug.advance(9.0);
    assert!(plug.on());
    plug.advance(1.0 + CHECK_S);
    assert!(!plug.on(), "a shorter grant cuts sooner");
    plug.assert_healthy();
}

#[tokio::test]
async fn deadman_ignores_malformed_heartbeats_without_dying_or_switching() {
    let plug = Plug::start(None).await;
    plug.advance(2.5);
    plug.switch_on();
    plug.heartbeat("");
    let long = "x".repeat(10_000);
    let bad = [
        "{",
        "null",
        "[]",
        "30",
        "on",
        r#"{"grant_s"}"#,
        r#"{"grant_s": 0}"#,
        r#"{"grant_s": -1}"#,
        r#"{"grant_s": 12.5}"#,
        r#"{"grant_s": 1e3}"#,
        r#"{"grant_s": "30"}"#,
        r#"{"grant_s": 3601}"#,
        r#"{"grant_s": 99999999999}"#,
        r#"{"grant_s": 30"#,
        r#"{"grant": 30}"#,
        "{\"grant_s\": 30\u{0}}",
        "ы",
        long.as_str(),
    ];
    for (i, payload) in bad.iter().enumerate() {
        let before = plug.host.borrow().calls.len();
        plug.heartbeat(payload);
        assert!(plug.on(), "payload {i} left the relay alone");
        assert_eq!(
            plug.host.borrow().calls.len(),
            before,
            "payload {i}: no call"
        );
        plug.advance(1.0);
    }
    assert_eq!(plug.count_calls("Switch.Set"), 0);
    let ignored = plug
        .prints()
        .iter()
        .filter(|p| p.contains("malformed heartbeat"))
        .count();
    assert_eq!(ignored, bad.len());
    // None of them renewed the allowance: the cut comes as if they had not been sent.
    let elapsed = bad.len() as f64;
    plug.advance(GRACE_S - 1.0 - elapsed);
    assert!(plug.on());
    plug.advance(1.0 + CHECK_S);
    assert!(!plug.on());
    plug.assert_healthy();
}

#[tokio::test]
async fn deadman_without_mqtt_still_cuts_after_the_grace() {
    // MQTT disabled: MQTT.subscribe would throw on a plug, so the script must not call
    // it; without heartbeats every switch-on is cut after the grace.
    let plug = Plug::start_with(None, false).await;
    assert!(plug.host.borrow().subscriptions.is_empty());
    assert!(plug.prints().iter().any(|p| p.contains("MQTT disabled")));
    plug.advance(2.5);
    plug.switch_on();
    plug.advance(GRACE_S - 1.0);
    assert!(plug.on());
    plug.advance(1.0 + CHECK_S);
    assert!(!plug.on());
    plug.assert_healthy();
}

#[tokio::test]
async fn deadman_restarted_with_the_relay_on_cuts_it_after_the_grace() {
    // A script (re)started while the relay is already on, e.g. after a reboot with
    // initial_state "on": no heartbeat yet, so the grace runs from the start.
    let plug = Plug::start(None).await;
    plug.switch_on();
    plug.advance(GRACE_S - 1.0);
    assert!(plug.on());
    plug.advance(1.0 + CHECK_S);
    assert!(!plug.on());
    plug.assert_healthy();
}
