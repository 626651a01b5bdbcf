//! The Tasmota and MikroTik fakes (src/fakes/tasmota, src/fakes/mikrotik) through their
//! real surfaces only: HTTP(S) with a plain hyper client (TLS with tokio-rustls trusting
//! the router's self-signed PEM), MQTT through a real `venued serve` broker.
//!
//! Over MQTT the plug logs in as a `device:` account owning `cmnd/<t>`, `stat/<t>` and
//! `tele/<t>`; the test plays the controller with a second `device:` account owning the
//! same roots (device accounts have full use of their roots; the real controller uses the
//! broker's in-process link and needs no account).

use crate::mqtt::{Client, MqttDaemon, Via, connect, options};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use rumqttc::{Incoming, QoS};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use venued::fakes::mikrotik::{self, ConnState, Mikrotik, MikrotikConfig, Verdict};
use venued::fakes::tasmota::{self, Tasmota, TasmotaConfig, TasmotaMqtt, Trigger};

const WAIT: Duration = Duration::from_secs(10);
const TOPIC: &str = "tasmota_AABBCC";

// ---- HTTP(S) client ---------------------------------------------------------------------

async fn exchange<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    io: S,
    req: hyper::Request<Full<Bytes>>,
) -> Result<(u16, String), String> {
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

fn request(
    addr: SocketAddr,
    method: &str,
    target: &str,
    auth: Option<&str>,
    body: Option<&Value>,
) -> hyper::Request<Full<Bytes>> {
    let mut b = hyper::Request::builder()
        .method(method)
        .uri(target)
        .header("host", addr.to_string());
    if let Some(a) = auth {
        b = b.header("authorization", a);
    }
    let body = match body {
        Some(v) => {
            b = b.header("content-type", "application/json");
            Bytes::from(v.to_string())
        }
        None => Bytes::new(),
    };
    b.body(Full::new(body)).unwrap()
}

/// Plain HTTP GET: (status, body); Err if the connection fails.
async fn get(addr: SocketAddr, target: &str) -> Result<(u16, String), String> {
    let call = async {
        let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        exchange(tcp, request(addr, "GET", target, None, None)).await
    };
    tokio::time::timeout(WAIT, call)
        .await
        .map_err(|_| "timed out".to_owned())?
}

fn basic(user: &str, pass: &str) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let data = format!("{user}:{pass}").into_bytes();
    let mut out = String::new();
    for c in data.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            out.push(if i <= c.len() {
                char::from(A[((n >> (18 - 6 * i)) & 63) as usize])
            } else {
                '='
            });
        }
    }
    format!("Basic {out}")
}

/// A REST client for the router over HTTPS, trusting only the router's certificate.
struct Rest {
    addr: SocketAddr,
    tls: tokio_rustls::TlsConnector,
    auth: Option<String>,
}

impl Rest {
    fn new(router: &Mikrotik, user: &str, pass: &str) -> Self {
        use rustls_pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pki_types::CertificateDer::pem_slice_iter(router.cert_pem().as_bytes()) {
            roots.add(cert.unwrap()).unwrap();
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        Self {
            addr: router.https_addr(),
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
            auth: Some(basic(user, pass)),
        }
    }

    /// (status, JSON body or Null); Err when the connection fails or closes unanswered.
    async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<(u16, Value), String> {
        let call = async {
            let tcp = TcpStream::connect(self.addr)
                .await
                .map_err(|e| e.to_string())?;
            let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
            let tls = self
                .tls
                .connect(name, tcp)
                .await
                .map_err(|e| e.to_string())?;
            let req = request(self.addr, method, path, self.auth.as_deref(), body.as_ref());
            let (status, text) = exchange(tls, req).await?;
            let value = if text.is_empty() {
                Value::Null
            } else {
                serde_json::from_str(&text).map_err(|e| format!("{e}: {text}"))?
            };
            Ok((status, value))
        };
        tokio::time::timeout(WAIT, call)
            .await
            .map_err(|_| "timed out".to_owned())?
    }

    async fn ok(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (status, v) = self.call(method, path, body).await.unwrap();
        assert!(status < 300, "{method} {path}: {status} {v}");
        v
    }
}

// ---- MQTT -------------------------------------------------------------------------------

/// A device account owning the plug's three topic roots: (user, password).
fn plug_account(d: &MqttDaemon, name: &str) -> (String, String) {
    let v = d.cli(&[
        "mqtt",
        "add",
        name,
        "--topic",
        &format!("cmnd/{TOPIC}"),
        "--topic",
        &format!("stat/{TOPIC}"),
        "--topic",
        &format!("tele/{TOPIC}"),
        "--json",
    ]);
    (
        v["credentials"]["username"].as_str().unwrap().to_owned(),
        v["credentials"]["password"].as_str().unwrap().to_owned(),
    )
}

struct Venue {
    _dir: tempfile::TempDir,
    daemon: MqttDaemon,
    plug: (String, String),
    ctl_creds: (String, String),
}

impl Venue {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let daemon = MqttDaemon::start(dir.path());
        let plug = plug_account(&daemon, "device:tasmota-aabbcc");
        let ctl_creds = plug_account(&daemon, "device:controller");
        Self {
            _dir: dir,
            daemon,
            plug,
            ctl_creds,
        }
    }

    /// The controller's connection, subscribed to everything the plug says.
    async fn controller(&self, id: &str) -> Client {
        let (u, p) = &self.ctl_creds;
        let mut c = connect(options(&Via::Plain(self.daemon.plain), id, Some((u, p))))
            .await
            .unwrap();
        c.subscribe(&format!("stat/{TOPIC}/#")).await;
        c.subscribe(&format!("tele/{TOPIC}/#")).await;
        c
    }

    fn plug_config(&self) -> TasmotaConfig {
        let mut mqtt = TasmotaMqtt::new("127.0.0.1", self.daemon.plain, &self.plug.0, &self.plug.1);
        mqtt.retry = Duration::from_millis(500);
        mqtt.boot_time = Duration::from_millis(300);
        TasmotaConfig {
            topic: Some(TOPIC.into()),
            mqtt: Some(mqtt),
            load_w: 120.0,
            ..TasmotaConfig::default()
        }
    }
}

async fn send(c: &Client, command: &str, payload: &str) {
    c.client
        .publish(
            format!("cmnd/{TOPIC}/{command}"),
            QoS::AtLeastOnce,
            false,
            payload,
        )
        .await
        .unwrap();
}

/// The next message on `stat|tele/<t>/<name>` with this payload (any payload if None).
async fn expect(c: &mut Client, topic: &str, payload: Option<&str>, within: Duration) -> String {
    let full = topic.replace("<t>", TOPIC);
    c.wait_for(within, |i| match i {
        Incoming::Publish(p) if p.topic == full => {
            let text = String::from_utf8_lossy(&p.payload).into_owned();
            payload.is_none_or(|want| want == text).then_some(text)
        }
        _ => None,
    })
    .await
    .unwrap_or_else(|| panic!("no {full} {payload:?} within {within:?}"))
}

async fn online(c: &mut Client) {
    expect(c, "tele/<t>/LWT", Some("Online"), WAIT).await;
}

/// A plug's first connection after power-up: Online, then its power state.
async fn booted(c: &mut Client) -> String {
    online(c).await;
    expect(c, "stat/<t>/POWER", None, WAIT).await
}

/// The next JSON message on `topic` that has `key` at the top.
async fn expect_json(c: &mut Client, topic: &str, key: &str) -> Value {
    let full = topic.replace("<t>", TOPIC);
    c.wait_for(WAIT, |i| match i {
        Incoming::Publish(p) if p.topic == full => serde_json::from_slice::<Value>(&p.payload)
            .ok()
            .filter(|v| v.get(key).is_some()),
        _ => None,
    })
    .await
    .unwrap_or_else(|| panic!("no {full} with {key} within {WAIT:?}"))
}

// ---- Tasmota ----------------------------------------------------------------------------

#[tokio::test]
async fn tasmota_power_over_mqtt_and_pulse_time_switching_off() {
    let venue = Venue::start();
    let mut ctl = venue.controller("ctl-power").await;
    let plug = Tasmota::start(venue.plug_config()).await.unwrap();
    assert_eq!(plug.topic(), TOPIC);
    assert_eq!(booted(&mut ctl).await, "OFF");

    send(&ctl, "Power", "ON").await;
    let result = expect_json(&mut ctl, "stat/<t>/RESULT", "POWER").await;
    assert_eq!(result, json!({"POWER":"ON"}));
    expect(&mut ctl, "stat/<t>/POWER", Some("ON"), WAIT).await;
    assert!(plug.power_on());
    assert_eq!(plug.power_w(), 120.0);

    // A query answers without switching; an unknown command says so.
    send(&ctl, "Power1", "").await;
    expect(&mut ctl, "stat/<t>/RESULT", Some(r#"{"POWER":"ON"}"#), WAIT).await;
    send(&ctl, "Fnord", "1").await;
    expect(
        &mut ctl,
        "stat/<t>/RESULT",
        Some(r#"{"Command":"Unknown"}"#),
        WAIT,
    )
    .await;

    // PulseTime1 15 = 1.5 s: Power ON (re)starts it and it really switches off.
    send(&ctl, "PulseTime1", "15").await;
    let set = expect_json(&mut ctl, "stat/<t>/RESULT", "PulseTime1").await;
    assert_eq!(set, json!({"PulseTime1":{"Set":15,"Remaining":0}}));
    let started = Instant::now();
    send(&ctl, "Power1", "ON").await;
    expect(&mut ctl, "stat/<t>/POWER", Some("ON"), WAIT).await;
    expect(&mut ctl, "stat/<t>/POWER", Some("OFF"), WAIT).await;
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(1400), "off after {took:?}");
    assert!(!plug.power_on());
    assert_eq!(plug.power_w(), 0.0);
    assert_eq!(plug.settings().pulse_time, 15);

    // Status 8 answers on STATUS8 with the energy readings.
    send(&ctl, "Status", "8").await;
    let sns = expect_json(&mut ctl, "stat/<t>/STATUS8", "StatusSNS").await;
    assert_eq!(sns["StatusSNS"]["ENERGY"]["Power"], 0);
    assert!(sns["StatusSNS"]["ENERGY"]["Total"].is_number());
    assert!(plug.requests().contains(&"mqtt PulseTime1 15".to_owned()));
    plug.stop().await;
}

#[tokio::test]
async fn tasmota_dead_man_rule_switches_off_when_re_arming_stops() {
    let venue = Venue::start();
    let mut ctl = venue.controller("ctl-deadman").await;
    let plug = Tasmota::start(venue.plug_config()).await.unwrap();
    booted(&mut ctl).await;

    let rule = "ON System#Boot DO RuleTimer1 2 ENDON ON Rules#Timer=1 DO Power1 OFF ENDON";
    send(&ctl, "Rule1", rule).await;
    let stored = expect_json(&mut ctl, "stat/<t>/RESULT", "Rule1").await;
    assert_eq!(stored["Rule1"]["Rules"], rule);
    assert_eq!(stored["Rule1"]["State"], "OFF");
    send(&ctl, "Rule1", "1").await;
    let enabled = expect_json(&mut ctl, "stat/<t>/RESULT", "Rule1").await;
    assert_eq!(enabled["Rule1"]["State"], "ON");
    assert_eq!(plug.rules()[0], (1, rule.to_owned(), true));
    // The text means what the fail-safe wants.
    let parsed = tasmota::parse_rules(&plug.rules()[0].1).unwrap();
    assert_eq!(parsed[0].trigger, Trigger::SystemBoot);
    assert_eq!(parsed[1].trigger, Trigger::RulesTimer(1));

    send(&ctl, "Power1", "ON").await;
    expect(&mut ctl, "stat/<t>/POWER", Some("ON"), WAIT).await;
    // The controller re-arms every 500 ms for 3 s: the plug stays on.
    let mut last = Instant::now();
    for _ in 0..6 {
        send(&ctl, "RuleTimer1", "2").await;
        last = Instant::now();
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(plug.power_on(), "switched off while re-armed");
    }
    // Then it stops: off about 2 s after the last re-arm.
    expect(&mut ctl, "stat/<t>/POWER", Some("OFF"), WAIT).await;
    let after = last.elapsed();
    assert!(
        after >= Duration::from_millis(1500),
        "off {after:?} after the last re-arm"
    );
    assert!(!plug.power_on());

    // A restart (power cycle) keeps the relay (PowerOnState 3) and System#Boot arms the
    // timer on the first MQTT connection: off again without any re-arm.
    send(&ctl, "Power1", "ON").await;
    expect(&mut ctl, "stat/<t>/POWER", Some("ON"), WAIT).await;
    assert!(plug.rule_timers()[0].is_none());
    plug.restart();
    assert_eq!(booted(&mut ctl).await, "ON");
    expect(&mut ctl, "stat/<t>/POWER", Some("OFF"), WAIT).await;
    plug.stop().await;
}

#[tokio::test]
async fn tasmota_offline_fault_makes_the_broker_publish_the_will() {
    let venue = Venue::start();
    let mut ctl = venue.controller("ctl-lwt").await;
    let plug = Tasmota::start(venue.plug_config()).await.unwrap();
    booted(&mut ctl).await;
    assert!(get(plug.http_addr(), "/cm?cmnd=Power").await.is_ok());

    plug.set_fault(tasmota::Fault::Offline);
    expect(&mut ctl, "tele/<t>/LWT", Some("Offline"), WAIT).await;
    assert!(!plug.mqtt_connected());
    // HTTP is refused too.
    let deadline = Instant::now() + WAIT;
    while get(plug.http_addr(), "/cm?cmnd=Power").await.is_ok() {
        assert!(
            Instant::now() < deadline,
            "HTTP still answers while offline"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The will is retained: a controller connecting now learns the plug is offline.
    let (u, p) = &venue.ctl_creds;
    let mut late = connect(options(
        &Via::Plain(venue.daemon.plain),
        "ctl-late",
        Some((u, p)),
    ))
    .await
    .unwrap();
    late.subscribe(&format!("tele/{TOPIC}/LWT")).await;
    let (payload, retained) = late
        .publish_on(&format!("tele/{TOPIC}/LWT"), WAIT)
        .await
        .expect("no retained LWT");
    assert_eq!(payload, b"Offline");
    assert!(retained);

    // Back on the network: Online again, HTTP answers again.
    plug.set_fault(tasmota::Fault::None);
    online(&mut ctl).await;
    let deadline = Instant::now() + WAIT;
    loop {
        if let Ok((200, body)) = get(plug.http_addr(), "/cm?cmnd=Power").await {
            assert_eq!(body, r#"{"POWER":"OFF"}"#);
            break;
        }
        assert!(Instant::now() < deadline, "HTTP does not come back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    plug.stop().await;
}

#[tokio::test]
async fn tasmota_http_commands_and_password_warnings() {
    let plug = Tasmota::start(TasmotaConfig {
        web_password: Some("s3cret".into()),
        ..TasmotaConfig::default()
    })
    .await
    .unwrap();
    let addr = plug.http_addr();
    let need = r#"{"WARNING":"Need user=<username>&password=<password>"}"#;
    assert_eq!(
        get(addr, "/cm?cmnd=Power%20On").await.unwrap(),
        (401, need.to_owned())
    );
    assert_eq!(
        get(addr, "/cm?user=admin&password=wrong&cmnd=Power%20On")
            .await
            .unwrap(),
        (401, need.to_owned())
    );
    assert!(!plug.power_on());
    assert_eq!(
        get(addr, "/cm?user=admin&password=s3cret&cmnd=")
            .await
            .unwrap(),
        (200, r#"{"WARNING":"Enter command cmnd="}"#.to_owned())
    );
    let auth = "user=admin&password=s3cret";
    assert_eq!(
        get(addr, &format!("/cm?{auth}&cmnd=Power%20On"))
            .await
            .unwrap(),
        (200, r#"{"POWER":"ON"}"#.to_owned())
    );
    assert!(plug.power_on());
    assert_eq!(
        get(addr, &format!("/cm?{auth}&cmnd=Fnord"))
            .await
            .unwrap()
            .1,
        r#"{"Command":"Unknown"}"#
    );
    // Backlog is queued: an empty answer, then the commands run.
    assert_eq!(
        get(
            addr,
            &format!("/cm?{auth}&cmnd=Backlog%20Power%20OFF%3BPowerOnState%200")
        )
        .await
        .unwrap(),
        (200, "{}".to_owned())
    );
    let deadline = Instant::now() + WAIT;
    while plug.settings().power_on_state != 0 {
        assert!(Instant::now() < deadline, "the Backlog did not run");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!plug.power_on());
    let (_, status) = get(addr, &format!("/cm?{auth}&cmnd=Status%200"))
        .await
        .unwrap();
    let status: Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["Status"]["PowerOnState"], 0);
    assert!(status["StatusSNS"]["ENERGY"].is_object());

    // A button press is a local toggle; WrongAnswers still applies the command.
    plug.press_button();
    assert!(plug.power_on());
    plug.set_fault(tasmota::Fault::WrongAnswers);
    let (code, body) = get(addr, &format!("/cm?{auth}&cmnd=Power%20OFF"))
        .await
        .unwrap();
    assert_eq!(code, 200);
    assert!(serde_json::from_str::<Value>(&body).is_err(), "{body}");
    assert!(!plug.power_on());
    assert!(plug.requests().contains(&"http Power On".to_owned()));
    plug.stop().await;
}

// ---- MikroTik ---------------------------------------------------------------------------

const LIST: &str = "/rest/ip/firewall/address-list";

async fn router() -> (Mikrotik, Rest) {
    let router = Mikrotik::start(MikrotikConfig::default()).await.unwrap();
    let rest = Rest::new(&router, "admin", "venued-test");
    (router, rest)
}

#[tokio::test]
async fn mikrotik_address_list_add_duplicate_remove_and_auth() {
    let (router, rest) = router().await;
    let entry = json!({"list":"venue-blocked","address":"192.168.50.21","comment":"venued st07"});
    let created = rest.ok("PUT", LIST, Some(entry.clone())).await;
    let id = created[".id"].as_str().unwrap().to_owned();
    assert!(id.starts_with('*'));
    assert_eq!(created["address"], "192.168.50.21");
    assert!(created.as_object().unwrap().values().all(Value::is_string));

    let (status, dup) = rest.call("PUT", LIST, Some(entry)).await.unwrap();
    assert_eq!(status, 400);
    assert_eq!(
        dup,
        json!({"error":400,"message":"Bad Request","detail":"failure: already have such entry"})
    );
    let found = rest
        .ok(
            "GET",
            &format!("{LIST}?list=venue-blocked&address=192.168.50.21"),
            None,
        )
        .await;
    assert_eq!(found.as_array().unwrap().len(), 1);
    assert_eq!(
        router.address_list("venue-blocked")[0].comment.as_deref(),
        Some("venued st07")
    );

    let (status, body) = rest
        .call("DELETE", &format!("{LIST}/{id}"), None)
        .await
        .unwrap();
    assert!(status == 204 || status == 200, "{status} {body}");
    let (status, body) = rest
        .call("DELETE", &format!("{LIST}/{id}"), None)
        .await
        .unwrap();
    assert_eq!(
        (status, body),
        (404, json!({"error":404,"message":"Not Found"}))
    );
    assert!(router.address_list("venue-blocked").is_empty());
    assert_eq!(router.added("venue-blocked", "192.168.50.21"), 1);
    assert_eq!(router.removed("venue-blocked", "192.168.50.21"), 1);

    // Unknown path, wrong and missing credentials.
    let (status, body) = rest
        .call("GET", "/rest/ip/firewall/bogus", None)
        .await
        .unwrap();
    assert_eq!(
        (status, body),
        (
            400,
            json!({"detail":"no such command or directory (bogus)","error":400,"message":"Bad Request"})
        )
    );
    let mut wrong = Rest::new(&router, "admin", "guess");
    let unauthorized = (401, json!({"error":401,"message":"Unauthorized"}));
    assert_eq!(wrong.call("GET", LIST, None).await.unwrap(), unauthorized);
    wrong.auth = None;
    assert_eq!(
        wrong
            .call("PUT", LIST, Some(json!({"list":"x","address":"1.1.1.1"})))
            .await
            .unwrap(),
        unauthorized
    );
    assert!(router.address_list("x").is_empty());

    // The router's clock, moved away from the host's.
    router.set_clock_offset(jiff::SignedDuration::from_hours(-50));
    let clock = rest.ok("GET", "/rest/system/clock", None).await;
    assert_eq!(clock["time-zone-name"], "Europe/Berlin");
    assert!(clock["gmt-offset"].as_str().unwrap().starts_with('+'));
    let tz = jiff::tz::TimeZone::get("Europe/Berlin").unwrap();
    #[allow(clippy::disallowed_methods)] // the host's clock, to compare the router's with
    let host = jiff::Timestamp::now().to_zoned(tz);
    let shown = jiff::civil::Date::strptime("%Y-%m-%d", clock["date"].as_str().unwrap()).unwrap();
    let days = host.date().since(shown).unwrap().get_days();
    assert!(
        (2..=3).contains(&days),
        "router date {shown}, host {}",
        host.date()
    );
    assert!(rest.ok("GET", "/rest/system/resource", None).await["uptime"].is_string());
    assert!(
        router
            .requests()
            .iter()
            .any(|r| r.starts_with("PUT /rest/ip/firewall/address-list {"))
    );
    router.stop().await;
}

#[tokio::test]
async fn mikrotik_place_before_keeps_block_rules_above_fasttrack() {
    let (router, rest) = router().await;
    let rules = rest
        .ok(
            "GET",
            "/rest/ip/firewall/filter?chain=forward&dynamic=false&.proplist=.id",
            None,
        )
        .await;
    let anchor = rules[0][".id"].as_str().unwrap().to_owned();
    for (matcher, comment) in [
        ("src-address-list", "venued:block-out"),
        ("dst-address-list", "venued:block-in"),
    ] {
        let mut rule =
            json!({"chain":"forward","action":"drop","comment":comment,"place-before":anchor});
        rule[matcher] = json!("venue-blocked");
        rest.ok("PUT", "/rest/ip/firewall/filter", Some(rule)).await;
    }
    let forward: Vec<String> = router
        .filter_rules()
        .into_iter()
        .filter(|r| r.chain == "forward")
        .map(|r| r.comment.unwrap_or_default())
        .collect();
    assert_eq!(forward[0], "special dummy rule to show fasttrack counters");
    assert_eq!(&forward[1..3], ["venued:block-out", "venued:block-in"]);
    let fasttrack = forward
        .iter()
        .position(|c| c == "defconf: fasttrack")
        .unwrap();
    assert!(fasttrack > 2);

    // The dynamic counter rule cannot be a target.
    let dummy = router.filter_rules()[0].id.clone();
    let (status, body) = rest
        .call(
            "PUT",
            "/rest/ip/firewall/filter",
            Some(json!({"chain":"forward","place-before":dummy})),
        )
        .await
        .unwrap();
    assert_eq!(
        (status, body["detail"].clone()),
        (400, json!("failure: cannot move builtin"))
    );

    // A rule appended at the end, moved up before the anchor.
    let late = rest
        .ok(
            "PUT",
            "/rest/ip/firewall/filter",
            Some(json!({"chain":"forward","action":"accept","comment":"late"})),
        )
        .await[".id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(router.filter_rules().last().unwrap().id, late);
    rest.ok(
        "POST",
        "/rest/ip/firewall/filter/move",
        Some(json!({".id": late, "destination": anchor})),
    )
    .await;
    let ids: Vec<String> = router.filter_rules().into_iter().map(|r| r.id).collect();
    let at = |id: &str| ids.iter().position(|i| i == id).unwrap();
    assert_eq!(at(&late) + 1, at(&anchor));

    // With the rules above FastTrack, blocking the console drops its next packet.
    let console = "192.168.50.21".parse().unwrap();
    let server = "203.0.113.7".parse().unwrap();
    assert_eq!(
        router.forward_verdict(console, server, "udp", ConnState::New),
        Verdict::Accept
    );
    rest.ok(
        "PUT",
        LIST,
        Some(json!({"list":"venue-blocked","address":"192.168.50.21"})),
    )
    .await;
    assert_eq!(
        router.forward_verdict(console, server, "udp", ConnState::New),
        Verdict::Drop
    );
    assert_eq!(
        router.forward_verdict(server, console, "udp", ConnState::Established),
        Verdict::Drop
    );
    router.stop().await;
}

#[tokio::test]
async fn mikrotik_connection_removal_cuts_a_fasttracked_session() {
    let (router, rest) = router().await;
    let game = router.add_connection("192.168.50.21:3074", "203.0.113.7:3074", "udp");
    let other = router.add_connection("192.168.50.99:50000", "198.51.100.1:443", "tcp");
    // Established and FastTracked before any block.
    assert_eq!(router.connection_verdict(&game), Some(Verdict::Accept));
    assert_eq!(router.connection_verdict(&game), Some(Verdict::Fasttracked));
    rest.ok(
        "PUT",
        LIST,
        Some(json!({"list":"venue-blocked","address":"192.168.50.21"})),
    )
    .await;
    // An address-list entry alone does not stop a FastTracked connection.
    assert_eq!(router.connection_verdict(&game), Some(Verdict::Fasttracked));

    let conns = rest
        .ok(
            "GET",
            "/rest/ip/firewall/connection?.proplist=.id,src-address,dst-address",
            None,
        )
        .await;
    let ids: Vec<String> = conns
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| {
            c["src-address"]
                .as_str()
                .unwrap()
                .starts_with("192.168.50.21:")
        })
        .map(|c| c[".id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, std::slice::from_ref(&game));
    let done = rest
        .ok(
            "POST",
            "/rest/ip/firewall/connection/remove",
            Some(json!({".id": ids[0]})),
        )
        .await;
    assert_eq!(done, json!([]));
    assert_eq!(router.connection_verdict(&game), None);
    let left: Vec<String> = router.connections().into_iter().map(|c| c.id).collect();
    assert_eq!(left, std::slice::from_ref(&other));
    // Removing it again: it is gone.
    let (status, body) = rest
        .call(
            "POST",
            "/rest/ip/firewall/connection/remove",
            Some(json!({"numbers": game})),
        )
        .await
        .unwrap();
    assert_eq!(
        (status, body["detail"].clone()),
        (400, json!("no such item"))
    );
    router.stop().await;
}

#[tokio::test]
async fn mikrotik_failures_that_did_or_did_not_apply() {
    let (router, rest) = router().await;
    let entry = || Some(json!({"list":"venue-blocked","address":"192.168.50.21"}));

    // A 400 that still applied the change: a retry sees the duplicate, a re-read the entry.
    router.set_fault(mikrotik::Fault::FailNext {
        count: 1,
        status: Some(400),
        applied: true,
    });
    let (status, body) = rest.call("PUT", LIST, entry()).await.unwrap();
    assert_eq!(
        (status, body["detail"].clone()),
        (400, json!("Session closed"))
    );
    assert_eq!(router.fault(), mikrotik::Fault::None);
    assert_eq!(router.address_list("venue-blocked").len(), 1);
    let (status, body) = rest.call("PUT", LIST, entry()).await.unwrap();
    assert_eq!(
        (status, body["detail"].clone()),
        (400, json!("failure: already have such entry"))
    );
    let listed = rest
        .ok("GET", &format!("{LIST}?list=venue-blocked"), None)
        .await;
    let id = listed[0][".id"].as_str().unwrap().to_owned();
    rest.ok("DELETE", &format!("{LIST}/{id}"), None).await;

    // A 400 that did not apply: nothing there, the retry succeeds.
    router.set_fault(mikrotik::Fault::FailNext {
        count: 1,
        status: Some(400),
        applied: false,
    });
    assert_eq!(rest.call("PUT", LIST, entry()).await.unwrap().0, 400);
    assert!(router.address_list("venue-blocked").is_empty());
    rest.ok("PUT", LIST, entry()).await;
    assert_eq!(router.added("venue-blocked", "192.168.50.21"), 2);

    // Reads are not failed; a dropped connection that applied the change.
    let id = router.address_list("venue-blocked")[0].id.clone();
    router.set_fault(mikrotik::Fault::FailNext {
        count: 1,
        status: None,
        applied: true,
    });
    rest.ok("GET", LIST, None).await;
    assert!(
        rest.call("DELETE", &format!("{LIST}/{id}"), None)
            .await
            .is_err()
    );
    assert!(router.address_list("venue-blocked").is_empty());
    assert_eq!(router.removed("venue-blocked", "192.168.50.21"), 2);

    // Offline: refused, then back.
    router.set_fault(mikrotik::Fault::Offline);
    let deadline = Instant::now() + WAIT;
    while rest.call("GET", LIST, None).await.is_ok() {
        assert!(Instant::now() < deadline, "still answering while offline");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    router.set_fault(mikrotik::Fault::None);
    let deadline = Instant::now() + WAIT;
    while rest.call("GET", LIST, None).await.is_err() {
        assert!(Instant::now() < deadline, "not back after Offline");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    router.stop().await;
}
