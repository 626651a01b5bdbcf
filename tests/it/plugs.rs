//! The plug drivers (`venued::devices::plug::Plug`) against the network fakes of a Shelly
//! Gen1, a Shelly Gen2 and a Tasmota plug, over real HTTP on 127.0.0.1: status, switching,
//! the plugs' own flip-back timers, power readings, passwords, rate limiting and the
//! faults a plug on a venue's Wi-Fi shows (slow, garbled, gone).

use std::time::Duration;
use tokio::time::Instant;
use venued::devices::DeviceError;
use venued::devices::plug::Plug;
use venued::domain::device::DeviceKind;
use venued::fakes::shelly::{Fault, Gen1Config, Gen2Config, ShellyGen1, ShellyGen2};
use venued::fakes::tasmota::{self, Tasmota, TasmotaConfig};

/// Generous: the fakes answer in milliseconds, CI machines are slow.
const TIMEOUT: Duration = Duration::from_secs(5);
/// How long a test waits for something the plug does by itself.
const WAIT: Duration = Duration::from_secs(10);

fn gen1_kind(fake: &ShellyGen1) -> DeviceKind {
    DeviceKind::ShellyGen1 {
        host: fake.http_addr().to_string(),
        mqtt_id: None,
    }
}

fn gen2_kind(fake: &ShellyGen2) -> DeviceKind {
    DeviceKind::ShellyGen2 {
        host: fake.http_addr().to_string(),
        mqtt_prefix: None,
    }
}

fn tasmota_kind(fake: &Tasmota) -> DeviceKind {
    DeviceKind::Tasmota {
        host: fake.http_addr().to_string(),
        topic: None,
    }
}

fn plug(kind: &DeviceKind, password: Option<&str>) -> Plug {
    Plug::new(kind, password, TIMEOUT).unwrap()
}

/// Poll `cond` until it holds; panics after `within`. Returns how long it took.
async fn wait_for(what: &str, within: Duration, mut cond: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < within, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    start.elapsed()
}

/// A plug that answers again (after an Offline fault the fake listens anew).
async fn wait_reachable(p: &Plug) {
    let start = Instant::now();
    loop {
        match p.status().await {
            Ok(_) => return,
            Err(e) => assert!(start.elapsed() < WAIT, "still unreachable: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn assert_timer_left(s: &venued::devices::plug::PlugStatus, at_most: Duration) {
    let t = s.timer.as_ref().expect("a running timer");
    let left = t
        .remaining
        .or(t.duration)
        .expect("a remaining time or a duration");
    assert!(left <= at_most, "{left:?} > {at_most:?}");
}

// ---- Shelly Gen1 -------------------------------------------------------------------------

#[tokio::test]
async fn gen1_status_switch_power_and_timer_flip_back() {
    let fake = ShellyGen1::start(Gen1Config::default()).await.unwrap();
    let p = plug(&gen1_kind(&fake), None);

    let s = p.status().await.unwrap();
    assert!(!s.on);
    assert_eq!(s.power_w, Some(0.0));
    assert_eq!(s.timer, None);

    fake.set_load_w(150.0);
    let s = p.switch(true, None).await.unwrap();
    assert!(s.on);
    assert!(fake.relay_on());
    assert_eq!(s.source.as_deref(), Some("http"));
    assert_eq!(s.power_w, Some(150.0));
    fake.set_load_w(80.5);
    assert_eq!(p.status().await.unwrap().power_w, Some(80.5));

    let s = p.switch(false, None).await.unwrap();
    assert!(!s.on);
    assert!(!fake.relay_on());
    assert_eq!(s.power_w, Some(0.0));

    // The plug's own timer switches it off again.
    let sent = Instant::now();
    let s = p.switch(true, Some(Duration::from_secs(1))).await.unwrap();
    assert!(s.on);
    assert!(fake.relay_on());
    assert_timer_left(&s, Duration::from_secs(1));
    assert!(
        fake.requests()
            .contains(&"GET /relay/0?turn=on&timer=1".to_owned())
    );
    wait_for("the Gen1 timer to flip back", WAIT, || !fake.relay_on()).await;
    assert!(sent.elapsed() >= Duration::from_millis(900));
    let s = p.status().await.unwrap();
    assert!(!s.on);
    assert_eq!(s.source.as_deref(), Some("timer"));
    assert_eq!(s.timer, None);
}

#[tokio::test]
async fn gen1_basic_auth() {
    let fake = ShellyGen1::start(Gen1Config {
        password: Some("s3cret".into()),
        ..Gen1Config::default()
    })
    .await
    .unwrap();
    let kind = gen1_kind(&fake);

    let right = plug(&kind, Some("s3cret"));
    assert!(right.switch(true, None).await.unwrap().on);
    assert!(fake.relay_on());

    let wrong = plug(&kind, Some("guess"));
    assert!(matches!(wrong.status().await, Err(DeviceError::Auth(_))));
    assert!(matches!(
        wrong.switch(false, None).await,
        Err(DeviceError::Auth(_))
    ));
    assert!(fake.relay_on(), "a refused switch changes nothing");
    let none = plug(&kind, None);
    assert!(matches!(none.status().await, Err(DeviceError::Auth(_))));

    // /shelly needs no password, and says a login is on.
    let info = none.info().await.unwrap();
    assert_eq!(info.model.as_deref(), Some("SHPLG-S"));
    assert_eq!(info.generation, Some(1));
    assert_eq!(info.auth_enabled, Some(true));
    assert_eq!(info.id.as_deref(), Some("AABBCCDDEEFF"));
}

#[tokio::test]
async fn gen1_faults() {
    let fake = ShellyGen1::start(Gen1Config::default()).await.unwrap();
    let kind = gen1_kind(&fake);
    let quick = Plug::new(&kind, None, Duration::from_millis(300)).unwrap();

    fake.set_fault(Fault::Slow(Duration::from_secs(3)));
    let start = Instant::now();
    assert!(matches!(
        quick.status().await,
        Err(DeviceError::Timeout(_, t)) if t == Duration::from_millis(300)
    ));
    assert!(start.elapsed() < Duration::from_secs(2));

    fake.set_fault(Fault::WrongAnswers);
    let p = plug(&kind, None);
    assert!(matches!(p.status().await, Err(DeviceError::Malformed(..))));
    assert!(matches!(p.info().await, Err(DeviceError::Malformed(..))));

    fake.set_fault(Fault::Offline);
    assert!(matches!(p.status().await, Err(DeviceError::Unreachable(_))));

    fake.set_fault(Fault::None);
    wait_reachable(&p).await;
}

// ---- Shelly Gen2 -------------------------------------------------------------------------

#[tokio::test]
async fn gen2_status_switch_power_and_toggle_after() {
    let fake = ShellyGen2::start(Gen2Config::default()).await.unwrap();
    let p = plug(&gen2_kind(&fake), None);

    let s = p.status().await.unwrap();
    assert!(!s.on);
    assert_eq!(s.power_w, Some(0.0));
    assert_eq!(s.timer, None);

    fake.set_load_w(95.0);
    let s = p.switch(true, None).await.unwrap();
    assert!(s.on);
    assert!(fake.relay_on());
    assert_eq!(s.source.as_deref(), Some("HTTP_in"));
    assert_eq!(s.power_w, Some(95.0));
    fake.set_load_w(120.0);
    assert_eq!(p.status().await.unwrap().power_w, Some(120.0));

    let s = p.switch(false, None).await.unwrap();
    assert!(!s.on);
    assert!(!fake.relay_on());

    let sent = Instant::now();
    let s = p
        .switch(true, Some(Duration::from_millis(1500)))
        .await
        .unwrap();
    assert!(s.on);
    assert!(fake.relay_on());
    let t = s.timer.clone().expect("toggle_after shows as a timer");
    assert_eq!(t.duration, Some(Duration::from_millis(1500)));
    assert!(t.started_at.is_some());
    assert!(
        fake.requests()
            .contains(&"GET /rpc/Switch.Set?id=0&on=true&toggle_after=1.5".to_owned())
    );
    wait_for("toggle_after to flip back", WAIT, || !fake.relay_on()).await;
    assert!(sent.elapsed() >= Duration::from_millis(1400));
    let s = p.status().await.unwrap();
    assert!(!s.on);
    assert_eq!(s.source.as_deref(), Some("timer"));

    let info = p.info().await.unwrap();
    assert_eq!(info.model.as_deref(), Some("SNPL-00112EU"));
    assert_eq!(info.generation, Some(2));
    assert_eq!(info.id.as_deref(), Some(fake.id()));
}

#[tokio::test]
async fn gen2_digest_auth() {
    let fake = ShellyGen2::start(Gen2Config {
        password: Some("s3cret".into()),
        ..Gen2Config::default()
    })
    .await
    .unwrap();
    let kind = gen2_kind(&fake);

    let right = plug(&kind, Some("s3cret"));
    let before = fake.requests().len();
    assert!(!right.status().await.unwrap().on);
    // The first call meets the challenge: 401, then the same request with credentials.
    assert_eq!(fake.requests().len(), before + 2);
    // Later calls reuse the nonce with the next nc: one request each.
    let before = fake.requests().len();
    assert!(right.switch(true, None).await.unwrap().on);
    assert!(fake.relay_on());
    assert_eq!(fake.requests().len(), before + 2, "Switch.Set + GetStatus");

    let wrong = plug(&kind, Some("guess"));
    assert!(matches!(wrong.status().await, Err(DeviceError::Auth(_))));
    assert!(matches!(
        wrong.switch(false, None).await,
        Err(DeviceError::Auth(_))
    ));
    assert!(fake.relay_on(), "a refused switch changes nothing");
    let none = plug(&kind, None);
    assert!(matches!(none.status().await, Err(DeviceError::Auth(_))));

    // /shelly is never protected.
    let info = none.info().await.unwrap();
    assert_eq!(info.auth_enabled, Some(true));
    // The right password still works after the wrong ones.
    assert!(right.status().await.unwrap().on);
}

#[tokio::test]
async fn gen2_rate_limit_backs_off() {
    let fake = ShellyGen2::start(Gen2Config::default()).await.unwrap();
    let p = plug(&gen2_kind(&fake), None);
    assert!(p.status().await.is_ok());

    // The back-off starts when the 429 arrives: between `before` and `after` a call.
    // Waits are measured from `after` to be surely past it, from `before` to be surely
    // inside it.
    fake.set_fault(Fault::TooManyRequests);
    assert!(matches!(
        p.status().await,
        Err(DeviceError::TooManyRequests(_))
    ));
    let first_after = Instant::now();
    let seen = fake.requests().len();
    // Inside the back-off (1 s): refused at once, nothing reaches the plug.
    assert!(matches!(
        p.switch(true, None).await,
        Err(DeviceError::TooManyRequests(_))
    ));
    assert!(matches!(
        p.info().await,
        Err(DeviceError::TooManyRequests(_))
    ));
    assert_eq!(fake.requests().len(), seen);
    assert!(!fake.relay_on());

    // After it, the next call goes out; still limited: the back-off doubles to 2 s.
    tokio::time::sleep_until(first_after + Duration::from_millis(1200)).await;
    let second_before = Instant::now();
    assert!(matches!(
        p.status().await,
        Err(DeviceError::TooManyRequests(_))
    ));
    let second_after = Instant::now();
    assert_eq!(fake.requests().len(), seen + 1);
    fake.set_fault(Fault::None);
    tokio::time::sleep_until(second_before + Duration::from_millis(1100)).await;
    assert!(matches!(
        p.status().await,
        Err(DeviceError::TooManyRequests(_))
    ));
    assert_eq!(
        fake.requests().len(),
        seen + 1,
        "still inside the 2 s back-off"
    );

    // Past it, and the plug no longer limits: success, and the back-off is reset.
    tokio::time::sleep_until(second_after + Duration::from_millis(2300)).await;
    assert!(p.switch(true, None).await.unwrap().on);
    assert!(fake.relay_on());
    fake.set_fault(Fault::TooManyRequests);
    assert!(matches!(
        p.status().await,
        Err(DeviceError::TooManyRequests(_))
    ));
    let third_after = Instant::now();
    fake.set_fault(Fault::None);
    tokio::time::sleep_until(third_after + Duration::from_millis(1200)).await;
    assert!(p.status().await.unwrap().on, "back to a 1 s back-off");
}

#[tokio::test]
async fn gen2_faults() {
    let fake = ShellyGen2::start(Gen2Config {
        password: Some("s3cret".into()),
        ..Gen2Config::default()
    })
    .await
    .unwrap();
    let kind = gen2_kind(&fake);
    let quick = Plug::new(&kind, Some("s3cret"), Duration::from_millis(300)).unwrap();

    fake.set_fault(Fault::Slow(Duration::from_secs(3)));
    let start = Instant::now();
    assert!(matches!(
        quick.status().await,
        Err(DeviceError::Timeout(..))
    ));
    assert!(start.elapsed() < Duration::from_secs(2));

    // Garbled answers, the 401 challenge included, never panic.
    fake.set_fault(Fault::WrongAnswers);
    let p = plug(&kind, Some("s3cret"));
    assert!(matches!(p.status().await, Err(DeviceError::Malformed(..))));
    assert!(matches!(
        p.switch(true, None).await,
        Err(DeviceError::Malformed(..))
    ));
    assert!(matches!(p.info().await, Err(DeviceError::Malformed(..))));

    fake.set_fault(Fault::Offline);
    assert!(matches!(p.status().await, Err(DeviceError::Unreachable(_))));
    fake.set_fault(Fault::None);
    wait_reachable(&p).await;
}

#[tokio::test]
async fn generations_told_apart() {
    let g1 = ShellyGen1::start(Gen1Config::default()).await.unwrap();
    let g2 = ShellyGen2::start(Gen2Config::default()).await.unwrap();
    // Each driver pointed at the other generation says so.
    let as_gen2 = DeviceKind::ShellyGen2 {
        host: g1.http_addr().to_string(),
        mqtt_prefix: None,
    };
    match plug(&as_gen2, None).info().await {
        Err(DeviceError::Config(m)) => assert!(m.contains("shelly_gen1"), "{m}"),
        other => panic!("{other:?}"),
    }
    let as_gen1 = DeviceKind::ShellyGen1 {
        host: g2.http_addr().to_string(),
        mqtt_id: None,
    };
    match plug(&as_gen1, None).info().await {
        Err(DeviceError::Config(m)) => assert!(m.contains("shelly_gen2"), "{m}"),
        other => panic!("{other:?}"),
    }
}

// ---- Tasmota -----------------------------------------------------------------------------

fn tasmota_config() -> TasmotaConfig {
    TasmotaConfig {
        mac: Some([0x02, 0, 0, 0xAA, 0xBB, 0xCC]),
        load_w: 60.0,
        ..TasmotaConfig::default()
    }
}

#[tokio::test]
async fn tasmota_status_switch_power_and_pulse_time() {
    let fake = Tasmota::start(tasmota_config()).await.unwrap();
    let p = plug(&tasmota_kind(&fake), None);

    let s = p.status().await.unwrap();
    assert!(!s.on);
    assert_eq!(s.power_w, Some(0.0));
    assert_eq!(s.timer, None);

    let s = p.switch(true, None).await.unwrap();
    assert!(s.on);
    assert!(fake.power_on());
    assert_eq!(s.power_w, Some(60.0));
    fake.set_load_w(140.0);
    assert_eq!(p.status().await.unwrap().power_w, Some(140.0));

    let s = p.switch(false, None).await.unwrap();
    assert!(!s.on);
    assert!(!fake.power_on());
    assert_eq!(s.power_w, Some(0.0));

    // PulseTime1 10 (1 s), then Power ON: the plug switches itself off.
    let sent = Instant::now();
    let s = p.switch(true, Some(Duration::from_secs(1))).await.unwrap();
    assert!(s.on);
    assert!(fake.power_on());
    assert_timer_left(&s, Duration::from_secs(1));
    assert_eq!(fake.settings().pulse_time, 10);
    let took = wait_for("PulseTime to flip back", WAIT, || !fake.power_on()).await;
    assert!(sent.elapsed() >= Duration::from_millis(900), "{took:?}");
    let s = p.status().await.unwrap();
    assert!(!s.on);
    assert_eq!(s.timer, None);

    // On without a flip-back clears PulseTime: it stays on.
    let s = p.switch(true, None).await.unwrap();
    assert!(s.on);
    assert_eq!(fake.settings().pulse_time, 0);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(fake.power_on());

    // Flip-back only from on.
    assert!(matches!(
        p.switch(false, Some(Duration::from_secs(5))).await,
        Err(DeviceError::Config(_))
    ));
    assert!(fake.power_on());

    let commands: Vec<String> = fake.requests();
    for c in [
        "http Power",
        "http Status 10",
        "http PulseTime1 10",
        "http Power ON",
    ] {
        assert!(commands.contains(&c.to_owned()), "{c} not in {commands:?}");
    }

    let info = p.info().await.unwrap();
    assert_eq!(info.kind, "tasmota");
    assert_eq!(info.id.as_deref(), Some("tasmota_AABBCC"));
    assert!(info.firmware.unwrap().contains("tasmota"));
    assert_eq!(info.mac.as_deref(), Some("02:00:00:AA:BB:CC"));
}

#[tokio::test]
async fn tasmota_web_password() {
    let fake = Tasmota::start(TasmotaConfig {
        web_password: Some("p&ss w=rd".into()),
        ..tasmota_config()
    })
    .await
    .unwrap();
    let kind = tasmota_kind(&fake);

    let right = plug(&kind, Some("p&ss w=rd"));
    assert!(right.switch(true, None).await.unwrap().on);
    assert!(fake.power_on());

    let wrong = plug(&kind, Some("guess"));
    assert!(matches!(wrong.status().await, Err(DeviceError::Auth(_))));
    assert!(matches!(
        wrong.switch(false, None).await,
        Err(DeviceError::Auth(_))
    ));
    assert!(fake.power_on(), "a refused switch changes nothing");
    let none = plug(&kind, None);
    assert!(matches!(none.info().await, Err(DeviceError::Auth(_))));
}

#[tokio::test]
async fn tasmota_faults() {
    let fake = Tasmota::start(tasmota_config()).await.unwrap();
    let kind = tasmota_kind(&fake);
    let p = plug(&kind, None);

    fake.set_fault(tasmota::Fault::WrongAnswers);
    assert!(matches!(p.status().await, Err(DeviceError::Malformed(..))));
    assert!(matches!(
        p.switch(true, None).await,
        Err(DeviceError::Malformed(..))
    ));

    fake.set_fault(tasmota::Fault::Offline);
    assert!(matches!(p.status().await, Err(DeviceError::Unreachable(_))));
    fake.set_fault(tasmota::Fault::None);
    wait_reachable(&p).await;

    // Last: the fake works through its slow commands one by one after the test.
    fake.set_fault(tasmota::Fault::Slow(Duration::from_secs(3)));
    let quick = Plug::new(&kind, None, Duration::from_millis(300)).unwrap();
    let start = Instant::now();
    assert!(matches!(
        quick.status().await,
        Err(DeviceError::Timeout(..))
    ));
    assert!(start.elapsed() < Duration::from_secs(2));
}
