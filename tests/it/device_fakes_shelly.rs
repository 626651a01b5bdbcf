//! The Shelly fakes (src/fakes/shelly) through their real surfaces only: HTTP with a plain
//! hyper client, MQTT through a real `venued serve` broker with real accounts.
//!
//! Over MQTT the fake logs in as a `device:` account owning its topic root; the test plays
//! the controller with an `integration:` account whose rules grant read_write on that root
//! (the real controller uses the broker's in-process link and needs no account). Gen2
//! callers use a `src` under the device's prefix, because the device may only publish the
//! reply (`<src>/rpc`) under its own root.

use crate::mqtt::{Client, MqttDaemon, Via, connect, options};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use rumqttc::{Incoming, QoS, SubscribeFilter, SubscribeReasonCode};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use venued::fakes::shelly::{
    Fault, Gen1Config, Gen2Config, MqttConfig, ReArm, ShellyGen1, ShellyGen2,
};

const WAIT: Duration = Duration::from_secs(10);

// ---- HTTP client ------------------------------------------------------------------------

struct Reply {
    status: u16,
    headers: hyper::HeaderMap,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    }
}

async fn http(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<Reply, String> {
    let call = async {
        let stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(target)
            .header("host", addr.to_string());
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req
            .body(Full::new(Bytes::copy_from_slice(body)))
            .map_err(|e| e.to_string())?;
        let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes()
            .to_vec();
        Ok(Reply {
            status,
            headers,
            body,
        })
    };
    tokio::time::timeout(WAIT, call)
        .await
        .map_err(|_| "timed out".to_string())?
}

async fn get(addr: SocketAddr, target: &str) -> Reply {
    http(addr, "GET", target, &[], b"").await.unwrap()
}

async fn post(addr: SocketAddr, target: &str, body: &Value) -> Reply {
    http(addr, "POST", target, &[], body.to_string().as_bytes())
        .await
        .unwrap()
}

/// Poll `f` every 50 ms until it is true; how long that took, None after `within`.
async fn until<F, Fut>(within: Duration, mut f: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < within {
        if f().await {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

// ---- Digest, computed here independently of the fake --------------------------------------

fn sha256(s: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `name="value"` out of a `WWW-Authenticate` header.
fn param(header: &str, name: &str) -> String {
    let start = header
        .find(&format!("{name}=\""))
        .unwrap_or_else(|| panic!("no {name} in {header}"))
        + name.len()
        + 2;
    header[start..].split('"').next().unwrap().to_owned()
}

fn digest(method: &str, uri: &str, realm: &str, nonce: &str, password: &str) -> String {
    let ha1 = sha256(&format!("admin:{realm}:{password}"));
    let ha2 = sha256(&format!("{method}:{uri}"));
    let cnonce = "0a4f113b";
    let nc = "00000001";
    let response = sha256(&format!("{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}"));
    format!(
        "Digest username=\"admin\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{uri}\", \
         algorithm=SHA-256, qop=auth, nc={nc}, cnonce=\"{cnonce}\", response=\"{response}\""
    )
}

// ---- Gen1 over HTTP ---------------------------------------------------------------------

#[tokio::test]
async fn gen1_timer_turns_the_relay_back_off() {
    let mut cfg = Gen1Config::new("AABBCC000001");
    cfg.load_w = 180.0;
    let plug = ShellyGen1::start(cfg).await.unwrap();
    let addr = plug.http_addr();
    assert_eq!(plug.id(), "shellyplug-s-000001");

    let shelly = get(addr, "/shelly").await.json();
    assert_eq!(shelly["type"], "SHPLG-S");
    assert_eq!(shelly["mac"], "AABBCC000001");
    assert!(shelly.get("gen").is_none(), "Gen1 has no `gen`");

    let on = get(addr, "/relay/0?turn=on&timer=1").await;
    assert_eq!(on.status, 200);
    let started = Instant::now();
    let v = on.json();
    assert_eq!(v["ison"], true);
    assert_eq!(v["has_timer"], true);
    assert_eq!(v["timer_duration"], 1);
    assert_eq!(v["source"], "http");
    assert!(plug.relay_on());
    assert_eq!(plug.power_w(), 180.0);
    let status = get(addr, "/status").await.json();
    assert_eq!(status["meters"][0]["power"], 180.0);
    assert_eq!(status["relays"][0]["ison"], true);

    let off = until(WAIT, || async {
        get(addr, "/relay/0").await.json()["ison"] == false
    })
    .await;
    assert!(off.is_some(), "the timer never turned the relay off");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "flipped too early"
    );
    let v = get(addr, "/relay/0").await.json();
    assert_eq!(v["source"], "timer");
    assert_eq!(v["has_timer"], false);
    assert_eq!(plug.power_w(), 0.0);
    assert_eq!(get(addr, "/status").await.json()["meters"][0]["power"], 0.0);

    assert_eq!(get(addr, "/relay/0?turn=sideways").await.status, 400);
    assert_eq!(get(addr, "/relay/1").await.status, 404);
    let asked = plug.requests();
    assert!(
        asked.contains(&"GET /relay/0?turn=on&timer=1".to_string()),
        "{asked:?}"
    );
    plug.stop().await;
}

#[tokio::test]
async fn gen1_basic_auth_guards_everything_but_shelly() {
    let mut cfg = Gen1Config::new("AABBCC000002");
    cfg.password = Some("secret".into());
    let plug = ShellyGen1::start(cfg).await.unwrap();
    let addr = plug.http_addr();

    let shelly = get(addr, "/shelly").await;
    assert_eq!(shelly.status, 200);
    assert_eq!(shelly.json()["auth"], true);

    let none = get(addr, "/relay/0?turn=on").await;
    assert_eq!(none.status, 401);
    assert!(none.header("www-authenticate").starts_with("Basic"));
    // base64("admin:wrong")
    let wrong = http(
        addr,
        "GET",
        "/relay/0?turn=on",
        &[("authorization", "Basic YWRtaW46d3Jvbmc=")],
        b"",
    )
    .await
    .unwrap();
    assert_eq!(wrong.status, 401);
    assert!(!plug.relay_on(), "a refused request must not switch");
    // base64("admin:secret")
    let right = http(
        addr,
        "GET",
        "/relay/0?turn=on",
        &[("authorization", "Basic YWRtaW46c2VjcmV0")],
        b"",
    )
    .await
    .unwrap();
    assert_eq!(right.status, 200);
    assert_eq!(right.json()["ison"], true);
    assert!(plug.relay_on());
    assert_eq!(get(addr, "/status").await.status, 401);
    assert_eq!(get(addr, "/settings").await.status, 401);
    plug.stop().await;
}

#[tokio::test]
async fn gen1_auto_off_and_power_on_state() {
    let plug = ShellyGen1::start(Gen1Config::new("AABBCC000003"))
        .await
        .unwrap();
    let addr = plug.http_addr();
    let s = get(addr, "/settings/relay/0?auto_off=1&default_state=on").await;
    assert_eq!(s.status, 200);
    assert_eq!(s.json()["auto_off"], 1);
    assert_eq!(s.json()["default_state"], "on");
    assert_eq!(
        get(addr, "/settings").await.json()["relays"][0]["auto_off"],
        1
    );

    plug.press_button();
    let started = Instant::now();
    assert!(plug.relay_on());
    assert_eq!(plug.source(), "button");
    let v = get(addr, "/relay/0").await.json();
    assert_eq!(v["has_timer"], true, "auto-off applies to the button too");
    assert!(until(WAIT, || async { !plug.relay_on() }).await.is_some());
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert_eq!(plug.source(), "timer");

    plug.power_cycle();
    assert!(plug.relay_on(), "default_state=on");
    assert_eq!(plug.source(), "init");
    get(addr, "/settings/relay/0?auto_off=0&default_state=off").await;
    get(addr, "/relay/0?turn=on").await;
    plug.power_cycle();
    assert!(!plug.relay_on(), "default_state=off");
    plug.stop().await;
}

// ---- Gen2 over HTTP ---------------------------------------------------------------------

#[tokio::test]
async fn gen2_digest_auth_challenge_and_verification() {
    let mut cfg = Gen2Config::new("AABBCC000004");
    cfg.password = Some("s3cret".into());
    let plug = ShellyGen2::start(cfg).await.unwrap();
    let addr = plug.http_addr();
    let realm = plug.id().to_owned();
    assert_eq!(realm, "shellyplusplugs-aabbcc000004");

    // Never protected.
    let shelly = get(addr, "/shelly").await;
    assert_eq!(shelly.status, 200);
    assert_eq!(shelly.json()["gen"], 2);
    assert_eq!(shelly.json()["auth_en"], true);
    assert_eq!(get(addr, "/rpc/Shelly.GetDeviceInfo").await.status, 200);

    let uri = "/rpc/Switch.Set?id=0&on=true";
    let challenge = get(addr, uri).await;
    assert_eq!(challenge.status, 401);
    assert!(!plug.relay_on());
    let h = challenge.header("www-authenticate");
    assert!(h.starts_with("Digest "), "{h}");
    assert!(h.contains("qop=\"auth\""), "{h}");
    assert!(h.contains("algorithm=SHA-256"), "{h}");
    assert_eq!(param(&h, "realm"), realm);
    let nonce = param(&h, "nonce");
    assert!(
        !nonce.is_empty() && nonce.chars().all(|c| c.is_ascii_hexdigit()),
        "{nonce}"
    );

    let wrong = digest("GET", uri, &realm, &nonce, "not-it");
    let r = http(addr, "GET", uri, &[("authorization", &wrong)], b"")
        .await
        .unwrap();
    assert_eq!(r.status, 401, "a wrong password stays 401");
    assert!(!plug.relay_on());

    // Signed for another URI: refused.
    let other = digest(
        "GET",
        "/rpc/Switch.GetStatus?id=0",
        &realm,
        &nonce,
        "s3cret",
    );
    let r = http(addr, "GET", uri, &[("authorization", &other)], b"")
        .await
        .unwrap();
    assert_eq!(r.status, 401);

    let right = digest("GET", uri, &realm, &nonce, "s3cret");
    let r = http(addr, "GET", uri, &[("authorization", &right)], b"")
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), json!({"was_on": false}));
    assert!(plug.relay_on());
    assert_eq!(plug.source(), "HTTP_in");

    // A full frame over POST /rpc: 401 with the challenge in the error, then the frame's
    // own `auth` object (HA2 over dummy_method:dummy_uri), as WebSocket clients do.
    let frame =
        json!({"id": 5, "src": "tester", "method": "Switch.Set", "params": {"id": 0, "on": false}});
    let r = post(addr, "/rpc", &frame).await;
    assert_eq!(r.status, 401);
    let err = r.json();
    assert_eq!(err["error"]["code"], 401);
    let inner: Value = serde_json::from_str(err["error"]["message"].as_str().unwrap()).unwrap();
    assert_eq!(inner["auth_type"], "digest");
    let nonce = inner["nonce"].as_str().unwrap().to_owned();
    let ha1 = sha256(&format!("admin:{realm}:s3cret"));
    let response = sha256(&format!(
        "{ha1}:{nonce}:1:777:auth:{}",
        sha256("dummy_method:dummy_uri")
    ));
    let mut signed = frame.clone();
    signed["auth"] = json!({"realm": realm, "username": "admin", "nonce": nonce, "cnonce": 777,
                            "response": response, "algorithm": "SHA-256", "nc": 1});
    let r = post(addr, "/rpc", &signed).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json(),
        json!({"id": 5, "src": realm, "dst": "tester", "result": {"was_on": true}})
    );
    assert!(!plug.relay_on());
    plug.stop().await;
}

/// Set on with toggle_after twice, half a second apart; the second start time.
async fn rearm(mode: ReArm) -> (f64, f64) {
    let mut cfg = Gen2Config::new("AABBCC000005");
    cfg.rearm = mode;
    let plug = ShellyGen2::start(cfg).await.unwrap();
    let addr = plug.http_addr();
    let set = "/rpc/Switch.Set?id=0&on=true&toggle_after=30";
    assert_eq!(get(addr, set).await.json(), json!({"was_on": false}));
    let first = get(addr, "/rpc/Switch.GetStatus?id=0").await.json();
    assert_eq!(first["timer_duration"], 30.0);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(get(addr, set).await.json(), json!({"was_on": true}));
    let second = get(addr, "/rpc/Switch.GetStatus?id=0").await.json();
    assert_eq!(second["output"], true);
    plug.stop().await;
    (
        first["timer_started_at"].as_f64().unwrap(),
        second["timer_started_at"].as_f64().unwrap(),
    )
}

#[tokio::test]
async fn gen2_toggle_after_rearm_restarts_the_timer() {
    let (first, second) = rearm(ReArm::Restarts).await;
    assert!(
        second - first >= 0.4,
        "timer_started_at should move: {first} → {second}"
    );
}

#[tokio::test]
async fn gen2_toggle_after_rearm_ignored_keeps_the_timer() {
    let (first, second) = rearm(ReArm::Ignored).await;
    assert_eq!(first, second, "timer_started_at must not move");
}

#[tokio::test]
async fn gen2_toggle_after_flips_back() {
    let plug = ShellyGen2::start(Gen2Config::new("AABBCC000006"))
        .await
        .unwrap();
    let addr = plug.http_addr();
    // POST with bare params, bare result.
    let r = post(
        addr,
        "/rpc/Switch.Set",
        &json!({"id": 0, "on": true, "toggle_after": 1}),
    )
    .await;
    assert_eq!(r.json(), json!({"was_on": false}));
    let started = Instant::now();
    assert!(plug.timer().is_some());
    let off = until(WAIT, || async {
        get(addr, "/rpc/Switch.GetStatus?id=0").await.json()["output"] == false
    })
    .await;
    assert!(off.is_some());
    assert!(started.elapsed() >= Duration::from_millis(900));
    let s = get(addr, "/rpc/Switch.GetStatus?id=0").await.json();
    assert_eq!(s["source"], "timer");
    assert!(s.get("timer_started_at").is_none());
    plug.stop().await;
}

#[tokio::test]
async fn gen2_auto_off_after_any_turn_on() {
    let mut cfg = Gen2Config::new("AABBCC000007");
    cfg.load_w = 95.0;
    let plug = ShellyGen2::start(cfg).await.unwrap();
    let addr = plug.http_addr();
    let r = post(
        addr,
        "/rpc/Switch.SetConfig",
        &json!({"id": 0, "config": {"auto_off": true, "auto_off_delay": 1}}),
    )
    .await;
    assert_eq!(r.json(), json!({"restart_required": false}));
    let c = get(addr, "/rpc/Switch.GetConfig?id=0").await.json();
    assert_eq!(c["auto_off"], true);
    assert_eq!(c["auto_off_delay"], 1.0);

    let r = get(addr, "/rpc/Switch.Toggle?id=0").await.json();
    assert_eq!(r, json!({"was_on": false}));
    let started = Instant::now();
    let s = get(addr, "/rpc/Switch.GetStatus?id=0").await.json();
    assert_eq!(s["output"], true);
    assert_eq!(s["apower"], 95.0);
    assert_eq!(s["timer_duration"], 1.0);
    assert!(until(WAIT, || async { !plug.relay_on() }).await.is_some());
    assert!(started.elapsed() >= Duration::from_millis(900));
    let s = get(addr, "/rpc/Switch.GetStatus?id=0").await.json();
    assert_eq!(s["source"], "timer");
    assert_eq!(s["apower"], 0.0);
    plug.stop().await;
}

#[tokio::test]
async fn gen2_faults_over_http() {
    let plug = ShellyGen2::start(Gen2Config::new("AABBCC000008"))
        .await
        .unwrap();
    let addr = plug.http_addr();

    plug.set_fault(Fault::TooManyRequests);
    let r = get(addr, "/rpc/Switch.Set?id=0&on=true").await;
    assert_eq!(r.status, 429);
    assert_eq!(r.json()["code"], 429);
    let r = post(
        addr,
        "/rpc",
        &json!({"id": 1, "src": "t", "method": "Switch.Set", "params": {"id": 0, "on": true}}),
    )
    .await;
    assert_eq!(r.status, 429);
    assert_eq!(r.json()["error"]["code"], 429);
    assert!(!plug.relay_on(), "a rate-limited call is not executed");

    plug.set_fault(Fault::WrongAnswers);
    let r = get(addr, "/rpc/Switch.Set?id=0&on=true").await;
    assert_eq!(r.status, 200);
    assert!(
        serde_json::from_slice::<Value>(&r.body).is_err(),
        "garbage expected"
    );
    assert!(plug.relay_on(), "executed, only the answer is wrong");

    plug.set_fault(Fault::Slow(Duration::from_millis(400)));
    let t = Instant::now();
    assert_eq!(get(addr, "/rpc/Switch.GetStatus?id=0").await.status, 200);
    assert!(t.elapsed() >= Duration::from_millis(380));

    plug.set_fault(Fault::Offline);
    let refused = until(WAIT, || async {
        http(addr, "GET", "/shelly", &[], b"").await.is_err()
    })
    .await;
    assert!(refused.is_some(), "an offline plug must not answer");
    plug.set_fault(Fault::None);
    let back = until(WAIT, || async {
        http(addr, "GET", "/shelly", &[], b"")
            .await
            .is_ok_and(|r| r.status == 200)
    })
    .await;
    assert!(back.is_some(), "back online on the same address");
    plug.stop().await;
}

#[tokio::test]
async fn gen2_errors_scripts_and_kvs_over_http() {
    let plug = ShellyGen2::start(Gen2Config::new("AABBCC000009"))
        .await
        .unwrap();
    let addr = plug.http_addr();

    let r = get(addr, "/rpc/Switch.GetStatus").await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["code"], -103);
    let r = get(addr, "/rpc/Switch.GetStatus?id=3").await;
    assert_eq!(r.json()["code"], -105);
    let r = get(addr, "/rpc/Cover.Open?id=0").await;
    assert_eq!(r.status, 404);
    assert_eq!(
        r.json(),
        json!({"code": 404, "message": "No handler for Cover.Open"})
    );
    // Malformed bodies: error answers, and the device keeps serving.
    let r = http(addr, "POST", "/rpc", &[], b"{not json").await.unwrap();
    assert_eq!(r.status, 400);
    let r = http(addr, "POST", "/rpc/Switch.Set", &[], b"[1,2")
        .await
        .unwrap();
    assert_eq!(r.status, 400);
    let r = post(addr, "/rpc", &json!({"id": 3, "src": "t"})).await;
    assert_eq!(r.json()["error"]["code"], -103);
    assert_eq!(get(addr, "/rpc/Switch.GetStatus?id=0").await.status, 200);

    let frame = |id: u32, method: &str, params: Value| json!({"id": id, "src": "t", "method": method, "params": params});
    let r = post(
        addr,
        "/rpc",
        &frame(1, "Script.Create", json!({"name": "watchdog"})),
    )
    .await
    .json();
    let sid = r["result"]["id"].as_u64().unwrap();
    let code = "Timer.set(1000, true, function () {});";
    let r = post(
        addr,
        "/rpc",
        &frame(2, "Script.PutCode", json!({"id": sid, "code": code})),
    )
    .await
    .json();
    assert_eq!(r["result"]["len"], code.len());
    post(
        addr,
        "/rpc",
        &frame(
            3,
            "Script.SetConfig",
            json!({"id": sid, "config": {"enable": true}}),
        ),
    )
    .await;
    let r = post(addr, "/rpc", &frame(4, "Script.Start", json!({"id": sid})))
        .await
        .json();
    assert_eq!(r["result"], json!({"was_running": false}));
    let list = get(addr, "/rpc/Script.List").await.json();
    assert_eq!(
        list["scripts"],
        json!([{"id": sid, "name": "watchdog", "enable": true, "running": true}])
    );
    assert_eq!(plug.scripts()[0].code, code);
    post(addr, "/rpc", &frame(5, "Script.Stop", json!({"id": sid}))).await;
    assert!(!plug.scripts()[0].running);

    let r = get(
        addr,
        "/rpc/KVS.Set?key=session&value=%7B%22until%22%3A42%7D",
    )
    .await
    .json();
    assert_eq!(r["rev"], 1);
    let r = get(addr, "/rpc/KVS.Get?key=session").await.json();
    assert_eq!(r["value"], json!({"until": 42}));
    assert_eq!(
        get(addr, "/rpc/KVS.Get?key=nope").await.json()["code"],
        -105
    );

    let mqtt = get(addr, "/rpc/MQTT.GetConfig").await.json();
    assert_eq!(mqtt["topic_prefix"], plug.topic_prefix());
    let status = get(addr, "/rpc/Shelly.GetStatus").await.json();
    assert_eq!(status["switch:0"]["output"], false);
    assert_eq!(status[format!("script:{sid}")]["running"], false);
    let config = get(addr, "/rpc/Shelly.GetConfig").await.json();
    assert_eq!(config["switch:0"]["initial_state"], "off");
    assert!(
        plug.requests()
            .contains(&"POST /rpc Script.Create".to_string())
    );
    plug.stop().await;
}

// ---- over MQTT, through venued's broker -----------------------------------------------------

/// The test's controller: a client of the broker that keeps what it did not ask for yet.
struct Ctl {
    c: Client,
    seen: Vec<(String, Vec<u8>, bool)>,
}

impl Ctl {
    async fn connect(d: &MqttDaemon, id: &str, user: &str, pass: &str, subs: &[&str]) -> Self {
        let c = connect(options(&Via::Plain(d.plain), id, Some((user, pass))))
            .await
            .unwrap();
        let mut ctl = Self {
            c,
            seen: Vec::new(),
        };
        if !subs.is_empty() {
            ctl.subscribe(subs).await;
        }
        ctl
    }

    /// Subscribe to all `filters` in one SUBSCRIBE; publishes arriving meanwhile (retained
    /// ones) are kept, not lost while waiting for the SUBACK.
    async fn subscribe(&mut self, filters: &[&str]) {
        let filters = filters
            .iter()
            .map(|f| SubscribeFilter::new((*f).to_owned(), QoS::AtLeastOnce));
        self.c.client.subscribe_many(filters).await.unwrap();
        loop {
            let event = self
                .c
                .wait_for(WAIT, |i| match i {
                    Incoming::SubAck(s) => Some(Err(s.return_codes.clone())),
                    Incoming::Publish(p) => {
                        Some(Ok((p.topic.clone(), p.payload.to_vec(), p.retain)))
                    }
                    _ => None,
                })
                .await
                .expect("no SUBACK");
            match event {
                Ok(m) => self.seen.push(m),
                Err(codes) => {
                    assert!(
                        codes
                            .iter()
                            .all(|c| matches!(c, SubscribeReasonCode::Success(_))),
                        "{codes:?}"
                    );
                    return;
                }
            }
        }
    }

    async fn publish(&self, topic: &str, payload: impl Into<Vec<u8>>) {
        self.c
            .client
            .publish(topic, QoS::AtLeastOnce, false, payload.into())
            .await
            .unwrap();
    }

    /// The first message (received or kept) matching `want`: (topic, payload, retain).
    async fn expect(
        &mut self,
        within: Duration,
        want: impl Fn(&str, &[u8]) -> bool,
    ) -> Option<(String, Vec<u8>, bool)> {
        if let Some(i) = self.seen.iter().position(|(t, p, _)| want(t, p)) {
            return Some(self.seen.remove(i));
        }
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            let m = self
                .c
                .wait_for(left, |i| match i {
                    Incoming::Publish(p) => Some((p.topic.clone(), p.payload.to_vec(), p.retain)),
                    _ => None,
                })
                .await?;
            if want(&m.0, &m.1) {
                return Some(m);
            }
            self.seen.push(m);
        }
    }

    async fn expect_json(&mut self, topic: &str, want: impl Fn(&Value) -> bool) -> Value {
        let m = self
            .expect(WAIT, |t, p| {
                t == topic && serde_json::from_slice::<Value>(p).is_ok_and(|v| want(&v))
            })
            .await;
        let Some((_, p, _)) = m else {
            panic!("nothing matching on {topic}; kept: {:?}", self.kept());
        };
        serde_json::from_slice(&p).unwrap()
    }

    fn kept(&self) -> Vec<(String, String)> {
        self.seen
            .iter()
            .map(|(t, p, _)| (t.clone(), String::from_utf8_lossy(p).into_owned()))
            .collect()
    }
}

/// An `integration:` account allowed to read and write under `roots` (the controller's
/// stand-in; it may never publish into venued/v1/).
fn controller_account(d: &MqttDaemon, name: &str, roots: &[&str]) -> (String, String) {
    let mut args = vec![
        "mqtt".to_string(),
        "add".into(),
        format!("integration:{name}"),
    ];
    for r in roots {
        args.push("--rule".into());
        args.push(format!("{r}/#=read_write"));
    }
    args.push("--json".into());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let v = d.cli(&args);
    (
        v["credentials"]["username"].as_str().unwrap().to_owned(),
        v["credentials"]["password"].as_str().unwrap().to_owned(),
    )
}

fn broker_addr(d: &MqttDaemon) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], d.plain))
}

fn notify_switch(v: &Value) -> &Value {
    &v["params"]["switch:0"]
}

#[tokio::test]
async fn gen2_mqtt_rpc_notifications_and_bad_frames() {
    let dir = tempfile::tempdir().unwrap();
    let d = MqttDaemon::start(dir.path());
    let mut cfg = Gen2Config::new("AABBCC00000A");
    cfg.load_w = 150.0;
    let prefix = cfg.prefix();
    let (user, pass) = d.add_device("device:plug-a", &prefix);
    cfg.mqtt = Some(MqttConfig::new(broker_addr(&d), &user, &pass));
    let plug = ShellyGen2::start(cfg).await.unwrap();
    let (cu, cp) = controller_account(&d, "ctl", &[&prefix]);
    let src = format!("{prefix}/venued");
    let reply_topic = format!("{src}/rpc");
    let events = format!("{prefix}/events/rpc");
    let online = format!("{prefix}/online");
    let mut ctl = Ctl::connect(&d, "ctl-1", &cu, &cp, &[&reply_topic, &events, &online]).await;
    assert!(plug.wait_mqtt(true, WAIT).await, "the fake never connected");
    let (_, p, _) = ctl
        .expect(WAIT, |t, p| t == online && p == b"true")
        .await
        .expect("online=true");
    assert_eq!(p, b"true");

    // Switch.Set over MQTT RPC, answered on <src>/rpc with the request's id.
    let req =
        json!({"id": 41, "src": src, "method": "Switch.Set", "params": {"id": 0, "on": true}});
    ctl.publish(&format!("{prefix}/rpc"), req.to_string()).await;
    let reply = ctl.expect_json(&reply_topic, |v| v["id"] == 41).await;
    assert_eq!(
        reply,
        json!({"id": 41, "src": plug.id(), "dst": src, "result": {"was_on": false}})
    );
    let n = ctl
        .expect_json(&events, |v| notify_switch(v).get("output").is_some())
        .await;
    assert_eq!(n["method"], "NotifyStatus");
    assert_eq!(n["src"], plug.id());
    assert_eq!(n["dst"], format!("{prefix}/events"));
    assert!(n["params"]["ts"].as_f64().unwrap() > 1.6e9);
    assert_eq!(
        notify_switch(&n),
        &json!({"id": 0, "output": true, "source": "MQTT"})
    );
    let p = ctl
        .expect_json(&events, |v| notify_switch(v).get("apower").is_some())
        .await;
    assert_eq!(notify_switch(&p)["apower"], 150.0);

    // A button press is reported with only the changed keys.
    plug.press_button();
    let n = ctl
        .expect_json(&events, |v| notify_switch(v)["source"] == "button")
        .await;
    assert_eq!(
        notify_switch(&n),
        &json!({"id": 0, "output": false, "source": "button"})
    );

    // The plain command topic.
    ctl.publish(&format!("{prefix}/command/switch:0"), "on")
        .await;
    ctl.expect_json(&events, |v| notify_switch(v)["output"] == true)
        .await;
    assert!(plug.relay_on());

    // Malformed frames: errors where there is a src to answer, silence where there is
    // not, and never a dropped connection.
    ctl.publish(&format!("{prefix}/rpc"), "this is not json")
        .await;
    ctl.publish(
        &format!("{prefix}/rpc"),
        r#"{"id":50,"method":"Switch.Toggle"}"#,
    )
    .await;
    ctl.publish(
        &format!("{prefix}/rpc"),
        format!(r#"{{"id":51,"src":"{prefix}/#","method":"Switch.Toggle"}}"#),
    )
    .await;
    ctl.publish(
        &format!("{prefix}/rpc"),
        json!({"id": 52, "src": src}).to_string(),
    )
    .await;
    ctl.publish(
        &format!("{prefix}/rpc"),
        json!({"id": 53, "src": src, "method": "Switch.Set", "params": {"on": 3}}).to_string(),
    )
    .await;
    ctl.publish(
        &format!("{prefix}/rpc"),
        json!({"id": 54, "src": src, "method": "No.Such"}).to_string(),
    )
    .await;
    ctl.publish(
        &format!("{prefix}/rpc"),
        json!({"id": 55, "src": src, "method": "Switch.GetStatus", "params": "zero"}).to_string(),
    )
    .await;
    let e = ctl.expect_json(&reply_topic, |v| v["id"] == 52).await;
    assert_eq!(e["error"]["code"], -103);
    let e = ctl.expect_json(&reply_topic, |v| v["id"] == 53).await;
    assert_eq!(e["error"]["code"], -103);
    let e = ctl.expect_json(&reply_topic, |v| v["id"] == 54).await;
    assert_eq!(e["error"]["code"], 404);
    let e = ctl.expect_json(&reply_topic, |v| v["id"] == 55).await;
    assert_eq!(e["error"]["code"], -103);
    // Still connected and answering.
    let req = json!({"id": 56, "src": src, "method": "Switch.GetStatus", "params": {"id": 0}});
    ctl.publish(&format!("{prefix}/rpc"), req.to_string()).await;
    let r = ctl.expect_json(&reply_topic, |v| v["id"] == 56).await;
    assert_eq!(
        r["result"]["output"], true,
        "the frames without src did not toggle"
    );
    assert!(plug.mqtt_connected());
    let asked = plug.requests();
    assert!(
        asked.contains(&"MQTT rpc <malformed>".to_string()),
        "{asked:?}"
    );

    // Rate limited over MQTT: error 429, nothing done.
    plug.set_fault(Fault::TooManyRequests);
    let req =
        json!({"id": 57, "src": src, "method": "Switch.Set", "params": {"id": 0, "on": false}});
    ctl.publish(&format!("{prefix}/rpc"), req.to_string()).await;
    let r = ctl.expect_json(&reply_topic, |v| v["id"] == 57).await;
    assert_eq!(r["error"]["code"], 429);
    assert!(plug.relay_on());
    plug.set_fault(Fault::None);

    // A src outside the device's roots: the fake answers, the broker drops the reply.
    let req = json!({"id": 58, "src": "elsewhere", "method": "Switch.Set", "params": {"id": 0, "on": false}});
    ctl.publish(&format!("{prefix}/rpc"), req.to_string()).await;
    assert!(until(WAIT, || async { !plug.relay_on() }).await.is_some());
    // The denied reply is dropped by the broker but acknowledged: the plug stays connected.
    let req = json!({"id": 59, "src": src, "method": "Switch.GetStatus", "params": {"id": 0}});
    ctl.publish(&format!("{prefix}/rpc"), req.to_string()).await;
    let r = ctl.expect_json(&reply_topic, |v| v["id"] == 59).await;
    assert_eq!(r["result"]["output"], false);
    assert!(plug.mqtt_connected());
    plug.stop().await;
    d.terminate();
}

#[tokio::test]
async fn offline_fault_publishes_the_will() {
    let dir = tempfile::tempdir().unwrap();
    let d = MqttDaemon::start(dir.path());

    let mut c2 = Gen2Config::new("AABBCC00000B");
    let prefix = c2.prefix();
    let (u2, p2) = d.add_device("device:plug-b", &prefix);
    c2.mqtt = Some(MqttConfig::new(broker_addr(&d), &u2, &p2));
    let gen2 = ShellyGen2::start(c2).await.unwrap();

    let mut c1 = Gen1Config::new("AABBCC00000C");
    let root = format!("shellies/{}", c1.id());
    let (u1, p1) = d.add_device("device:plug-c", &root);
    c1.mqtt = Some(MqttConfig::new(broker_addr(&d), &u1, &p1));
    let gen1 = ShellyGen1::start(c1).await.unwrap();

    assert!(gen2.wait_mqtt(true, WAIT).await);
    assert!(gen1.wait_mqtt(true, WAIT).await);
    let on2 = format!("{prefix}/online");
    let on1 = format!("{root}/online");
    let (cu, cp) = controller_account(&d, "watch", &[&prefix, &root]);
    let mut ctl = Ctl::connect(&d, "watch-1", &cu, &cp, &[&on2, &on1]).await;
    // Retained: a late subscriber learns both are online.
    for t in [&on2, &on1] {
        let got = ctl.expect(WAIT, |tt, p| tt == t && p == b"true").await;
        let Some((_, p, retained)) = got else {
            panic!(
                "no online=true on {t}; kept {:?}; log {}",
                ctl.kept(),
                d.log_text()
            );
        };
        assert_eq!(p, b"true");
        assert!(retained);
    }

    gen2.set_fault(Fault::Offline);
    gen1.set_fault(Fault::Offline);
    for t in [&on2, &on1] {
        let got = ctl.expect(WAIT, |tt, p| tt == t && p == b"false").await;
        assert!(got.is_some(), "no will on {t}; kept {:?}", ctl.kept());
    }
    assert!(gen2.wait_mqtt(false, WAIT).await);
    assert!(
        http(gen2.http_addr(), "GET", "/shelly", &[], b"")
            .await
            .is_err()
    );
    assert!(
        http(gen1.http_addr(), "GET", "/shelly", &[], b"")
            .await
            .is_err()
    );
    // The will is retained: a new subscriber sees "false".
    let mut late = Ctl::connect(&d, "watch-2", &cu, &cp, &[&on2]).await;
    let (_, p, retained) = late.expect(WAIT, |t, _| t == on2).await.unwrap();
    assert_eq!(p, b"false");
    assert!(retained);

    gen2.set_fault(Fault::None);
    gen1.set_fault(Fault::None);
    for t in [&on2, &on1] {
        assert!(
            ctl.expect(WAIT, |tt, p| tt == t && p == b"true")
                .await
                .is_some()
        );
    }
    assert!(gen1.wait_mqtt(true, WAIT).await);
    assert_eq!(get(gen1.http_addr(), "/shelly").await.status, 200);

    // A power cut also drops the connection abruptly, then the plug comes back.
    gen2.power_cycle();
    assert!(
        ctl.expect(WAIT, |t, p| t == on2 && p == b"false")
            .await
            .is_some()
    );
    assert!(
        ctl.expect(WAIT, |t, p| t == on2 && p == b"true")
            .await
            .is_some()
    );

    // A clean stop sends DISCONNECT: no will.
    gen1.stop().await;
    assert!(
        ctl.expect(Duration::from_secs(1), |t, p| t == on1 && p == b"false")
            .await
            .is_none(),
        "a clean stop must not publish the will"
    );
    gen2.stop().await;
    d.terminate();
}

#[tokio::test]
async fn gen1_mqtt_commands_and_reports() {
    let dir = tempfile::tempdir().unwrap();
    let d = MqttDaemon::start(dir.path());
    let mut cfg = Gen1Config::new("AABBCC00000D");
    cfg.load_w = 1.2;
    cfg.update_period = Duration::from_millis(500);
    let root = format!("shellies/{}", cfg.id());
    let (user, pass) = d.add_device("device:plug-d", &root);
    cfg.mqtt = Some(MqttConfig::new(broker_addr(&d), &user, &pass));
    let plug = ShellyGen1::start(cfg).await.unwrap();
    let (cu, cp) = controller_account(&d, "ctl", &[&root]);
    let all = format!("{root}/#");
    let mut ctl = Ctl::connect(&d, "ctl-1", &cu, &cp, &[&all]).await;
    assert!(plug.wait_mqtt(true, WAIT).await);
    let relay = format!("{root}/relay/0");
    let power = format!("{root}/relay/0/power");

    ctl.publish(&format!("{root}/relay/0/command"), "on").await;
    assert!(
        ctl.expect(WAIT, |t, p| t == relay && p == b"on")
            .await
            .is_some()
    );
    assert_eq!(plug.source(), "mqtt");
    assert!(
        ctl.expect(WAIT, |t, p| t == power && p == b"1.20")
            .await
            .is_some()
    );
    // Console starts a game: more power, reported on change.
    plug.set_load_w(180.0);
    assert!(
        ctl.expect(WAIT, |t, p| t == power && p == b"180.00")
            .await
            .is_some()
    );
    // And periodically.
    ctl.seen.clear();
    assert!(
        ctl.expect(WAIT, |t, p| t == power && p == b"180.00")
            .await
            .is_some()
    );
    assert!(
        ctl.expect(WAIT, |t, _| t == format!("{root}/relay/0/energy"))
            .await
            .is_some()
    );

    ctl.publish(&format!("{root}/relay/0/command"), "toggle")
        .await;
    assert!(
        ctl.expect(WAIT, |t, p| t == relay && p == b"off")
            .await
            .is_some()
    );
    assert!(!plug.relay_on());

    ctl.publish(&format!("{root}/command"), "announce").await;
    let announce = format!("{root}/announce");
    ctl.seen.retain(|(t, _, _)| *t != announce);
    let (_, p, _) = ctl.expect(WAIT, |t, _| t == announce).await.unwrap();
    let a: Value = serde_json::from_slice(&p).unwrap();
    assert_eq!(a["id"], plug.id());
    assert_eq!(a["mac"], "AABBCC00000D");

    ctl.seen.clear();
    ctl.publish(&format!("{root}/command"), "update").await;
    assert!(
        ctl.expect(WAIT, |t, p| t == relay && p == b"off")
            .await
            .is_some()
    );

    // The button and the timer are reported like any change.
    plug.press_button();
    assert!(
        ctl.expect(WAIT, |t, p| t == relay && p == b"on")
            .await
            .is_some()
    );
    get(plug.http_addr(), "/relay/0?turn=off&timer=1").await;
    assert!(
        ctl.expect(WAIT, |t, p| t == relay && p == b"off")
            .await
            .is_some()
    );
    assert!(
        ctl.expect(WAIT, |t, p| t == relay && p == b"on")
            .await
            .is_some()
    );
    assert_eq!(plug.source(), "timer");
    assert!(
        plug.requests()
            .contains(&"MQTT relay/0/command on".to_string())
    );
    plug.stop().await;
    d.terminate();
}
