//! The MQTT side of the plug drivers (`venued::devices::mqtt::MqttPlugs`) against the
//! Shelly Gen1, Shelly Gen2 and Tasmota fakes, connected over loopback to a real broker
//! started in-process (the hub needs the broker's in-process device link, which only
//! exists inside the daemon's process). The fakes log in with real `device:` accounts;
//! a test client with the same account plays a broken or hostile publisher.

use crate::mqtt::{Client, Via, connect, options};
use crate::support::{start_engine, trusted_clock};
use rumqttc::QoS;
use serde_json::json;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use venued::broker::Broker;
use venued::clock::{SystemClock, TrustMode};
use venued::config::MqttConfig;
use venued::devices::DeviceError;
use venued::devices::mqtt::{MqttPlugs, Report, Wire};
use venued::domain::device::{Device, DeviceKind, DeviceName};
use venued::domain::mqtt::MqttScope;
use venued::domain::session::SessionPolicy;
use venued::domain::{Actor, Command};
use venued::engine::{Engine, EngineConfig, Request};
use venued::fakes::shelly::{Fault, Gen1Config, Gen2Config, MqttConfig as FakeMqtt};
use venued::fakes::shelly::{ShellyGen1, ShellyGen2};
use venued::fakes::tasmota::{Fault as TasmotaFault, Tasmota, TasmotaConfig, TasmotaMqtt};

const WAIT: Duration = Duration::from_secs(10);
/// The hub's bound on one command.
const HUB_TIMEOUT: Duration = Duration::from_secs(3);

/// An engine, its broker on a loopback port, and the hub on the broker's device link.
struct Venue {
    _dir: tempfile::TempDir,
    engine: Engine,
    broker: SocketAddr,
    stop: watch::Sender<bool>,
    hub: MqttPlugs,
}

impl Venue {
    async fn start(devices: &[(&str, DeviceKind)]) -> Venue {
        let dir = tempfile::tempdir().unwrap();
        let engine = start_engine(dir.path(), &trusted_clock(), EngineConfig::default());
        let config = MqttConfig {
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 0))],
            tls_listen: Vec::new(),
            ..MqttConfig::default()
        };
        let (stop, stop_rx) = watch::channel(false);
        let mut broker = Broker::start(
            &config,
            engine.clone(),
            SessionPolicy::default(),
            None,
            stop_rx,
        )
        .await
        .unwrap();
        let link = broker.take_devices().unwrap();
        assert!(broker.take_devices().is_none(), "one device link");
        let hub = MqttPlugs::start(
            link,
            Arc::new(SystemClock::new(TrustMode::Always)),
            &table(devices),
            HUB_TIMEOUT,
        )
        .await
        .unwrap();
        // The broker's tasks run on; dropping the handle does not stop them.
        let addr = broker.plain[0];
        drop(broker);
        Venue {
            _dir: dir,
            engine,
            broker: addr,
            stop,
            hub,
        }
    }

    /// A `device:` account owning `topics`; its (user, password).
    async fn account(&self, name: &str, topics: &[&str]) -> (String, String) {
        let password = format!("pw-{}", rand::random::<u64>());
        let mut req = Request::new(
            Command::CreateMqttAccount {
                name: name.into(),
                scope: MqttScope::Device {
                    topics: topics.iter().map(|t| (*t).to_owned()).collect(),
                },
            },
            Actor::Local { uid: None },
        );
        req.secret = Some(venued::auth::sha256_hex(&password));
        self.engine.execute(req).await.unwrap();
        (name.to_owned(), password)
    }

    async fn client(&self, id: &str, creds: &(String, String)) -> Client {
        connect(options(
            &Via::Plain(self.broker.port()),
            id,
            Some((&creds.0, &creds.1)),
        ))
        .await
        .unwrap()
    }
}

impl Drop for Venue {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

fn name(s: &str) -> DeviceName {
    DeviceName::parse(s).unwrap()
}

fn table(devices: &[(&str, DeviceKind)]) -> BTreeMap<DeviceName, Device> {
    devices
        .iter()
        .map(|(n, kind)| {
            (
                name(n),
                Device {
                    name: name(n),
                    kind: kind.clone(),
                    has_password: false,
                },
            )
        })
        .collect()
}

/// Wait until `f` holds (checked every 20 ms); panics with `what` after `WAIT`.
async fn until(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < WAIT, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The next report of `device` satisfying `want`.
async fn report(
    rx: &mut tokio::sync::broadcast::Receiver<(DeviceName, Report)>,
    device: &str,
    want: impl Fn(&Report) -> bool,
) -> Report {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Ok((n, r))) if n.as_str() == device && want(&r) => return r,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("reports: {e}"),
            Err(_) => panic!("no matching report from {device} within {WAIT:?}"),
        }
    }
}

async fn publish(c: &Client, topic: &str, payload: &[u8]) {
    c.client
        .publish(topic, QoS::AtLeastOnce, false, payload.to_vec())
        .await
        .unwrap();
}

#[tokio::test]
async fn shelly_gen1_over_mqtt() {
    let mut cfg = Gen1Config::new("AABBCC000101");
    cfg.load_w = 120.0;
    let id = cfg.id();
    let kind = DeviceKind::ShellyGen1 {
        host: "127.0.0.1:9".into(),
        mqtt_id: Some(id.clone()),
    };
    let v = Venue::start(&[("g1", kind)]).await;
    let g1 = name("g1");
    let root = format!("shellies/{id}");
    let creds = v.account("device:g1", &[&root]).await;
    cfg.mqtt = Some(FakeMqtt::new(v.broker, &creds.0, &creds.1));
    let plug = ShellyGen1::start(cfg).await.unwrap();
    assert!(plug.wait_mqtt(true, WAIT).await, "the fake never connected");
    until("online", || {
        v.hub.last(&g1).and_then(|o| o.online) == Some(true)
    })
    .await;

    // Switch on and off through the hub: the fake's relay follows.
    v.hub.switch(&g1, true, None).await.unwrap();
    assert!(plug.relay_on());
    until("the power reading", || {
        v.hub.last(&g1).and_then(|o| o.power_w) == Some(120.0)
    })
    .await;
    plug.set_load_w(75.5);
    until("the new power reading", || {
        v.hub.last(&g1).and_then(|o| o.power_w) == Some(75.5)
    })
    .await;
    v.hub.switch(&g1, false, None).await.unwrap();
    assert!(!plug.relay_on());
    // Switching to the state it is in is confirmed too (the hub asks for an update).
    v.hub.switch(&g1, false, None).await.unwrap();

    // Gen1 has no timer over MQTT: the caller is told to use HTTP, nothing is sent.
    let before = plug.requests().len();
    let e = v
        .hub
        .switch(&g1, true, Some(Duration::from_secs(30)))
        .await
        .unwrap_err();
    assert!(
        matches!(e, DeviceError::Config(ref m) if m.contains("HTTP")),
        "{e}"
    );
    assert_eq!(plug.requests().len(), before);
    assert!(!plug.relay_on());

    // A hand on the button arrives as a report (Gen1's MQTT says no source).
    let mut rx = v.hub.reports();
    plug.press_button();
    // (The `update` after the last switch may still be answering "off".)
    report(&mut rx, "g1", |r| r.relay == Some(true)).await;
    assert!(plug.relay_on());
    assert_eq!(v.hub.last(&g1).unwrap().relay, Some(true));

    // Malformed payloads on its topics: counted, state unchanged, the hub keeps going.
    let rogue = v.client("rogue-g1", &creds).await;
    publish(&rogue, &format!("{root}/relay/0"), b"sideways").await;
    publish(&rogue, &format!("{root}/relay/0/power"), b"\xff\xfe").await;
    publish(&rogue, &format!("{root}/info"), b"{\"relays\":").await;
    until("3 parse errors", || v.hub.parse_errors(&g1) == 3).await;
    let o = v.hub.last(&g1).unwrap();
    assert_eq!((o.relay, o.power_w), (Some(true), Some(75.5)));
    assert_eq!(v.hub.query(&g1).await.unwrap().relay, Some(true));

    // Off the network: the broker publishes its will, online=false.
    plug.set_fault(Fault::Offline);
    until("online=false", || {
        v.hub.last(&g1).and_then(|o| o.online) == Some(false)
    })
    .await;
    let e = v.hub.switch(&g1, false, None).await.unwrap_err();
    assert!(
        matches!(e, DeviceError::Timeout(ref n, _) if n == "g1"),
        "{e}"
    );
    plug.set_fault(Fault::None);
    until("online again", || {
        v.hub.last(&g1).and_then(|o| o.online) == Some(true)
    })
    .await;
    plug.stop().await;
}

#[tokio::test]
async fn shelly_gen2_over_mqtt() {
    let mut cfg = Gen2Config::new("AABBCC000102");
    cfg.load_w = 150.0;
    let prefix = cfg.prefix();
    let kind = DeviceKind::ShellyGen2 {
        host: "127.0.0.1:9".into(),
        mqtt_prefix: Some(prefix.clone()),
    };
    let v = Venue::start(&[("g2", kind)]).await;
    let g2 = name("g2");
    let creds = v.account("device:g2", &[&prefix]).await;
    cfg.mqtt = Some(FakeMqtt::new(v.broker, &creds.0, &creds.1));
    let plug = ShellyGen2::start(cfg).await.unwrap();
    assert!(plug.wait_mqtt(true, WAIT).await, "the fake never connected");
    until("online", || {
        v.hub.last(&g2).and_then(|o| o.online) == Some(true)
    })
    .await;
    let Some(Wire::ShellyGen2 { src, .. }) = v.hub.wire(&g2) else {
        panic!("no Gen2 wire")
    };
    assert!(src.starts_with(&format!("{prefix}/venued-")), "{src}");

    // The boot query fills the state; a switch is confirmed by its RPC reply.
    let q = v.hub.query(&g2).await.unwrap();
    assert_eq!((q.online, q.relay), (Some(true), Some(false)));
    v.hub.switch(&g2, true, None).await.unwrap();
    assert!(plug.relay_on());
    until("relay on and 150 W", || {
        v.hub
            .last(&g2)
            .is_some_and(|o| o.relay == Some(true) && o.power_w == Some(150.0))
    })
    .await;
    assert_eq!(v.hub.last(&g2).unwrap().source.as_deref(), Some("MQTT"));
    plug.set_load_w(90.0);
    until("the new power reading", || {
        v.hub.last(&g2).and_then(|o| o.power_w) == Some(90.0)
    })
    .await;

    // A hand on the button: relay and source, merged from a partial NotifyStatus.
    let mut rx = v.hub.reports();
    plug.press_button();
    let r = report(&mut rx, "g2", |r| r.source.as_deref() == Some("button")).await;
    assert_eq!(r.relay, Some(false));
    assert!(!plug.relay_on());

    // A flip-back: the plug switches itself off again, reported with source "timer".
    v.hub
        .switch(&g2, true, Some(Duration::from_millis(800)))
        .await
        .unwrap();
    assert!(plug.relay_on());
    let r = report(&mut rx, "g2", |r| r.source.as_deref() == Some("timer")).await;
    assert_eq!(r.relay, Some(false));
    assert_eq!(r.timer, Some(None));

    // A reply with an id nobody waits for is ignored: the pending switch still waits
    // for its own (the plug is slow to answer).
    let rogue = v.client("rogue-g2", &creds).await;
    plug.set_fault(Fault::Slow(Duration::from_millis(1500)));
    let hub = v.hub.clone();
    let switching = tokio::spawn(async move { hub.switch(&name("g2"), true, None).await });
    let wrong = json!({"id": 987_654_321u64, "src": plug.id(), "dst": src,
                       "result": {"was_on": true}});
    publish(&rogue, &format!("{src}/rpc"), wrong.to_string().as_bytes()).await;
    report(&mut rx, "g2", |r| {
        r.rpc.as_ref().is_some_and(|x| x.id == 987_654_321)
    })
    .await;
    assert!(!switching.is_finished(), "a wrong id completed the switch");
    switching.await.unwrap().unwrap();
    assert!(plug.relay_on());
    plug.set_fault(Fault::None);

    // An RPC error reply is the plug refusing.
    plug.set_fault(Fault::TooManyRequests);
    let e = v.hub.switch(&g2, false, None).await.unwrap_err();
    assert!(
        matches!(e, DeviceError::TooManyRequests(ref n) if n == "g2"),
        "{e}"
    );
    assert!(plug.relay_on());
    plug.set_fault(Fault::None);

    // Malformed frames: counted, state unchanged.
    let before = v.hub.last(&g2).unwrap();
    publish(&rogue, &format!("{prefix}/events/rpc"), b"{\"method\":").await;
    publish(
        &rogue,
        &format!("{prefix}/events/rpc"),
        br#"{"method":"NotifyStatus","params":{"switch:0":{"id":0,"output":"yes"}}}"#,
    )
    .await;
    publish(&rogue, &format!("{src}/rpc"), b"{\"id\":\"x\"}").await;
    until("3 parse errors", || v.hub.parse_errors(&g2) == 3).await;
    let after = v.hub.last(&g2).unwrap();
    assert_eq!(
        (after.relay, after.power_w, after.source),
        (before.relay, before.power_w, before.source)
    );

    // Power cut: the connection drops without DISCONNECT, the will says online=false.
    plug.power_cycle();
    until("online=false", || {
        v.hub.last(&g2).and_then(|o| o.online) == Some(false)
    })
    .await;
    until("back online", || {
        v.hub.last(&g2).and_then(|o| o.online) == Some(true)
    })
    .await;
    // Off the network, a switch times out.
    plug.set_fault(Fault::Offline);
    until("offline", || {
        v.hub.last(&g2).and_then(|o| o.online) == Some(false)
    })
    .await;
    let started = Instant::now();
    let e = v.hub.switch(&g2, true, None).await.unwrap_err();
    assert!(matches!(e, DeviceError::Timeout(..)), "{e}");
    assert!(started.elapsed() < HUB_TIMEOUT + Duration::from_secs(2));
    plug.stop().await;
}

#[tokio::test]
async fn tasmota_over_mqtt() {
    const TOPIC: &str = "tasmota_0A0103";
    let kind = DeviceKind::Tasmota {
        host: "127.0.0.1:9".into(),
        topic: Some(TOPIC.into()),
    };
    let v = Venue::start(&[("t1", kind)]).await;
    let t1 = name("t1");
    let creds = v
        .account(
            "device:t1",
            &[
                &format!("cmnd/{TOPIC}"),
                &format!("stat/{TOPIC}"),
                &format!("tele/{TOPIC}"),
            ],
        )
        .await;
    let mut mqtt = TasmotaMqtt::new("127.0.0.1", v.broker.port(), &creds.0, &creds.1);
    mqtt.retry = Duration::from_millis(300);
    mqtt.boot_time = Duration::from_millis(200);
    let mut cfg = TasmotaConfig {
        topic: Some(TOPIC.into()),
        mqtt: Some(mqtt),
        load_w: 140.0,
        ..TasmotaConfig::default()
    };
    // Report the load when it moves by more than 1 W.
    cfg.settings.power_delta = 101;
    let plug = Tasmota::start(cfg).await.unwrap();
    until("online", || {
        v.hub.last(&t1).and_then(|o| o.online) == Some(true)
    })
    .await;

    v.hub.switch(&t1, true, None).await.unwrap();
    assert!(plug.power_on());
    let o = v.hub.query(&t1).await.unwrap();
    assert_eq!((o.relay, o.power_w), (Some(true), Some(140.0)));
    plug.set_load_w(60.0);
    until("the new power reading", || {
        v.hub.last(&t1).and_then(|o| o.power_w) == Some(60.0)
    })
    .await;
    v.hub.switch(&t1, false, None).await.unwrap();
    assert!(!plug.power_on());

    // A flip-back is PulseTime: on now, off by the plug itself. (Listening from here:
    // every switch is reported twice, RESULT and POWER, so an "off" of the switch above
    // may still be on its way.)
    v.hub
        .switch(&t1, true, Some(Duration::from_millis(700)))
        .await
        .unwrap();
    let mut rx = v.hub.reports();
    assert_eq!(plug.settings().pulse_time, 7);
    report(&mut rx, "t1", |r| r.relay == Some(false)).await;
    assert!(!plug.power_on());
    // A switch on without flip-back clears the pulse.
    v.hub.switch(&t1, true, None).await.unwrap();
    assert_eq!(plug.settings().pulse_time, 0);
    let e = v
        .hub
        .switch(&t1, false, Some(Duration::from_secs(5)))
        .await
        .unwrap_err();
    assert!(matches!(e, DeviceError::Config(_)), "{e}");
    assert!(plug.power_on());

    // The button.
    let mut rx = v.hub.reports();
    plug.press_button();
    report(&mut rx, "t1", |r| r.relay == Some(false)).await;
    assert_eq!(v.hub.last(&t1).unwrap().relay, Some(false));

    // Malformed payloads: counted, state unchanged.
    let rogue = v.client("rogue-t1", &creds).await;
    publish(&rogue, &format!("stat/{TOPIC}/POWER"), b"maybe").await;
    publish(&rogue, &format!("tele/{TOPIC}/SENSOR"), b"<html>").await;
    until("2 parse errors", || v.hub.parse_errors(&t1) == 2).await;
    assert_eq!(v.hub.last(&t1).unwrap().relay, Some(false));
    // Another plug's topics are not this one's.
    publish(&rogue, &format!("stat/{TOPIC}x/POWER"), b"ON").await;
    v.hub.switch(&t1, false, None).await.unwrap();
    assert_eq!(v.hub.last(&t1).unwrap().relay, Some(false));
    assert_eq!(v.hub.parse_errors(&t1), 2);

    // Off the network: the will `Offline`.
    plug.set_fault(TasmotaFault::Offline);
    until("online=false", || {
        v.hub.last(&t1).and_then(|o| o.online) == Some(false)
    })
    .await;
    plug.set_fault(TasmotaFault::None);
    until("online again", || {
        v.hub.last(&t1).and_then(|o| o.online) == Some(true)
    })
    .await;
    plug.stop().await;
}

#[tokio::test]
async fn the_table_follows_adds_and_removes_and_actions_publish() {
    let mut g1 = Gen1Config::new("AABBCC000104");
    let id = g1.id();
    let gen1 = DeviceKind::ShellyGen1 {
        host: "127.0.0.1:9".into(),
        mqtt_id: Some(id.clone()),
    };
    let http_only = DeviceKind::Tasmota {
        host: "127.0.0.1:9".into(),
        topic: None,
    };
    let action = DeviceKind::MqttAction {
        topic: "bridge/ps5-01/set".into(),
        payload: "standby".into(),
        retain: false,
    };
    // Start with nothing subscribed.
    let v = Venue::start(&[("http-only", http_only.clone()), ("ps5", action.clone())]).await;
    let root = format!("shellies/{id}");
    let creds = v.account("device:g1", &[&root]).await;
    g1.mqtt = Some(FakeMqtt::new(v.broker, &creds.0, &creds.1));
    let plug = ShellyGen1::start(g1).await.unwrap();
    assert!(plug.wait_mqtt(true, WAIT).await);
    let e = v.hub.switch(&name("g1"), true, None).await.unwrap_err();
    assert!(matches!(e, DeviceError::Config(_)), "{e}");
    let e = v
        .hub
        .switch(&name("http-only"), true, None)
        .await
        .unwrap_err();
    assert!(
        matches!(e, DeviceError::Config(ref m) if m.contains("HTTP")),
        "{e}"
    );

    // Added: subscribed, asked to report (its retained `online` arrives too).
    let all = [
        ("g1", gen1),
        ("http-only", http_only.clone()),
        ("ps5", action.clone()),
    ];
    v.hub.set_devices(&table(&all)).await.unwrap();
    until("the added plug's state", || {
        v.hub
            .last(&name("g1"))
            .is_some_and(|o| o.online == Some(true) && o.relay == Some(false))
    })
    .await;
    v.hub.switch(&name("g1"), true, None).await.unwrap();
    assert!(plug.relay_on());

    // The action device publishes its payload where a bridge listens.
    let bridge = v.account("device:bridge", &["bridge/ps5-01"]).await;
    let mut listener = v.client("bridge-ps5", &bridge).await;
    listener.subscribe("bridge/ps5-01/set").await;
    v.hub.run_action(&name("ps5")).await.unwrap();
    let (payload, _) = listener
        .publish_on("bridge/ps5-01/set", WAIT)
        .await
        .expect("the action's publish");
    assert_eq!(payload, b"standby");
    let e = v.hub.run_action(&name("g1")).await.unwrap_err();
    assert!(matches!(e, DeviceError::Config(_)), "{e}");
    let e = v
        .hub
        .publish_action("bridge/+/set", b"x", false)
        .await
        .unwrap_err();
    assert!(matches!(e, DeviceError::Config(_)), "{e}");

    // Removed: no more state, no more reports, commands refused.
    v.hub.set_devices(&table(&[("ps5", action)])).await.unwrap();
    assert!(v.hub.last(&name("g1")).is_none());
    let mut rx = v.hub.reports();
    plug.press_button();
    assert!(!plug.relay_on());
    let quiet = tokio::time::timeout(Duration::from_millis(500), rx.recv()).await;
    assert!(quiet.is_err(), "a removed plug still reports: {quiet:?}");
    let e = v.hub.switch(&name("g1"), true, None).await.unwrap_err();
    assert!(matches!(e, DeviceError::Config(_)), "{e}");
    plug.stop().await;
}
