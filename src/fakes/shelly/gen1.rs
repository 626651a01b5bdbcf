//! Shelly Plug S (Gen1, SHPLG-S, firmware 1.14): its HTTP API with Basic auth and its
//! `shellies/<id>/…` MQTT topics.
//!
//! Payloads start from the real device dump in `fixtures/shelly/` (aioshelly's fixtures)
//! with the live fields (relay, meter, times, MQTT state) filled in from the fake's state.

use super::auth;
use super::net::{
    HttpRequest, HttpResponse, Model, MqttConfig, MqttSession, Outgoing, Runner, garble,
    parse_query,
};
use super::relay::{Relay, Time, round, secs_json};
use super::{Fault, ReArm, wall_start};
use crate::clock::Clock;
use rumqttc::QoS;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::time::Instant;

const FIXTURE: &str = include_str!("../fixtures/shelly/gen1_plug_s_SHPLG-S_fw1.14.0.json");

/// The MQTT source Gen1 reports; lower-case like its "http" (unverified on hardware).
const SOURCE_MQTT: &str = "mqtt";
const SOURCE_HTTP: &str = "http";
const SOURCE_BUTTON: &str = "button";

fn fixture() -> &'static Value {
    static F: OnceLock<Value> = OnceLock::new();
    F.get_or_init(|| serde_json::from_str(FIXTURE).unwrap_or(Value::Null))
}

/// Relay state after power comes back (`default_state` in `/settings/relay/0`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DefaultState {
    #[default]
    Off,
    On,
    /// As before the power cut.
    Last,
    /// Follow the external switch input; a plug has none, so: off.
    Switch,
}

impl DefaultState {
    fn as_str(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::On => "on",
            Self::Last => "last",
            Self::Switch => "switch",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "off" => Self::Off,
            "on" => Self::On,
            "last" => Self::Last,
            "switch" => Self::Switch,
            _ => return None,
        })
    }
}

/// How to build a Gen1 fake. `Gen1Config::new(mac)` gives a plain plug: no password,
/// no MQTT, relay off, timers supported.
#[derive(Clone)]
pub struct Gen1Config {
    /// 12 hex digits; the id is `shellyplug-s-` and the last six, upper-case.
    pub mac: String,
    pub name: Option<String>,
    /// Enables HTTP Basic auth (user `admin`) on everything but `/shelly`.
    pub password: Option<String>,
    pub mqtt: Option<MqttConfig>,
    /// 0: any free port on 127.0.0.1.
    pub http_port: u16,
    /// Relay state when the fake starts (source "init").
    pub relay_on: bool,
    /// State after [`ShellyGen1::power_cycle`].
    pub default_state: DefaultState,
    /// `auto_off` from the start (also settable over HTTP).
    pub auto_off: Option<Duration>,
    /// False: `timer=` and auto-off/on are accepted and ignored.
    pub timers: bool,
    /// Re-sending `turn=on&timer=N` while on: restart the timer or keep it (unverified
    /// on hardware, so both exist).
    pub rearm: ReArm,
    /// What the appliance draws while powered, in W.
    pub load_w: f64,
    /// How often power and energy are republished over MQTT (`update_period`, 30 s on
    /// the real device).
    pub update_period: Duration,
    /// Wall time at start (afterwards it advances with tokio time); None: the system clock.
    pub clock: Option<Arc<dyn Clock>>,
}

impl Gen1Config {
    pub fn new(mac: &str) -> Self {
        Self {
            mac: mac.to_ascii_uppercase(),
            name: None,
            password: None,
            mqtt: None,
            http_port: 0,
            relay_on: false,
            default_state: DefaultState::Off,
            auto_off: None,
            timers: true,
            rearm: ReArm::Restarts,
            load_w: 0.0,
            update_period: Duration::from_secs(30),
            clock: None,
        }
    }

    /// The device id derived from the MAC, e.g. `shellyplug-s-DDEEFF`.
    pub fn id(&self) -> String {
        let tail = self.mac.len().saturating_sub(6);
        format!(
            "shellyplug-s-{}",
            self.mac.get(tail..).unwrap_or("").to_ascii_uppercase()
        )
    }
}

impl Default for Gen1Config {
    fn default() -> Self {
        Self::new("AABBCCDDEEFF")
    }
}

/// What `/relay/0` was asked to do.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Turn {
    On,
    Off,
    Toggle,
}

/// Parse the parameters of `/relay/0`: None for a plain read.
pub(crate) fn parse_relay_query(
    params: &[(String, String)],
) -> Result<Option<(Turn, Option<Duration>)>, &'static str> {
    let get = |k: &str| params.iter().find(|(key, _)| key == k).map(|(_, v)| v);
    let Some(turn) = get("turn") else {
        return Ok(None);
    };
    let turn = match turn.as_str() {
        "on" => Turn::On,
        "off" => Turn::Off,
        "toggle" => Turn::Toggle,
        _ => return Err("Bad turn!"),
    };
    let timer = match get("timer") {
        None => None,
        Some(t) => {
            let secs: f64 = t.parse().map_err(|_| "Bad timer!")?;
            (secs.is_finite() && secs > 0.0).then(|| Duration::from_secs_f64(secs))
        }
    };
    Ok(Some((turn, timer)))
}

/// A number of seconds from a query (`auto_off=90.5`); 0 disables.
fn parse_secs(v: &str) -> Result<Option<Duration>, &'static str> {
    let secs: f64 = v.parse().map_err(|_| "Bad value!")?;
    if !secs.is_finite() || secs < 0.0 {
        return Err("Bad value!");
    }
    Ok((secs > 0.0).then(|| Duration::from_secs_f64(secs)))
}

pub(crate) struct Gen1Model {
    id: String,
    mac: String,
    name: Option<String>,
    password: Option<String>,
    time: Time,
    booted: Instant,
    pub(crate) relay: Relay,
    default_state: DefaultState,
    mqtt: Option<(String, String)>,
    mqtt_connected: bool,
    update_period: Duration,
    next_update: Option<Instant>,
    /// (output, power) last published.
    reported: (bool, f64),
    cfg_changed: u64,
    pub(crate) requests: Vec<String>,
    outbox: Vec<Outgoing>,
}

impl Gen1Model {
    pub(crate) fn new(cfg: &Gen1Config, now: Instant, wall0: f64) -> Self {
        let mut relay = Relay::new(cfg.relay_on, now);
        relay.load_w = cfg.load_w.max(0.0);
        relay.timers_supported = cfg.timers;
        relay.rearm = cfg.rearm;
        relay.auto_off = cfg.auto_off.filter(|d| !d.is_zero());
        if cfg.relay_on {
            relay.boot(true, now);
        }
        Self {
            id: cfg.id(),
            mac: cfg.mac.clone(),
            name: cfg.name.clone(),
            password: cfg.password.clone(),
            time: Time::new(now, wall0),
            booted: now,
            reported: (relay.on, relay.power_w()),
            relay,
            default_state: cfg.default_state,
            mqtt: cfg
                .mqtt
                .as_ref()
                .map(|m| (m.broker.to_string(), m.username.clone())),
            mqtt_connected: false,
            update_period: cfg.update_period.max(Duration::from_millis(100)),
            next_update: cfg.mqtt.as_ref().map(|_| now + cfg.update_period),
            cfg_changed: 0,
            requests: Vec::new(),
            outbox: Vec::new(),
        }
    }

    fn topic(&self, rest: &str) -> String {
        format!("shellies/{}/{rest}", self.id)
    }

    fn unix(&self, now: Instant) -> i64 {
        self.time.unix(now) as i64
    }

    /// `/relay/0` and `status.relays[0]`.
    pub(crate) fn relay_json(&self, now: Instant) -> Value {
        let (started, duration, remaining) = match self.relay.timer {
            Some(t) => (
                self.time.unix(t.started) as i64,
                t.duration.as_secs_f64(),
                t.remaining(now).as_secs_f64().ceil(),
            ),
            None => (0, 0.0, 0.0),
        };
        json!({
            "ison": self.relay.on,
            "has_timer": self.relay.timer.is_some(),
            "timer_started": started,
            "timer_duration": secs_json(duration),
            "timer_remaining": secs_json(remaining),
            "overpower": false,
            "source": self.relay.source,
        })
    }

    fn relay_settings_json(&self) -> Value {
        let secs = |d: Option<Duration>| secs_json(d.map_or(0.0, |d| d.as_secs_f64()));
        json!({
            "name": self.name,
            "appliance_type": "General",
            "ison": self.relay.on,
            "has_timer": self.relay.timer.is_some(),
            "default_state": self.default_state.as_str(),
            "auto_on": secs(self.relay.auto_on),
            "auto_off": secs(self.relay.auto_off),
            "max_power": 2500,
            "schedule": false,
            "schedule_rules": [],
        })
    }

    fn meter_json(&mut self, now: Instant) -> Value {
        let power = round(self.relay.power_w(), 2);
        json!({
            "power": power,
            "overpower": 0.0,
            "is_valid": true,
            "timestamp": self.unix(now),
            // W·min in each of the last three full minutes, assuming the present draw.
            "counters": [power, power, power],
            // W·min since boot.
            "total": (self.relay.energy_wh(now) * 60.0).round() as i64,
        })
    }

    fn shelly_json(&self) -> Value {
        let mut v = fixture()["shelly"].clone();
        v["mac"] = json!(self.mac);
        v["auth"] = json!(self.password.is_some());
        v["name"] = json!(self.name);
        v
    }

    fn hhmm(&self, now: Instant) -> String {
        let secs = self.unix(now).rem_euclid(86_400);
        format!("{:02}:{:02}", secs / 3600, secs % 3600 / 60)
    }

    fn status_json(&mut self, now: Instant) -> Value {
        let mut v = fixture()["status"].clone();
        v["mac"] = json!(self.mac);
        v["relays"] = json!([self.relay_json(now)]);
        v["meters"] = json!([self.meter_json(now)]);
        v["unixtime"] = json!(self.unix(now));
        v["time"] = json!(self.hhmm(now));
        v["uptime"] = json!(now.saturating_duration_since(self.booted).as_secs());
        v["mqtt"] = json!({ "connected": self.mqtt_connected });
        v["cfg_changed_cnt"] = json!(self.cfg_changed);
        v["wifi_sta"]["ip"] = json!("127.0.0.1");
        v
    }

    fn settings_json(&self, now: Instant) -> Value {
        let mut v = fixture()["settings"].clone();
        v["device"]["hostname"] = json!(self.id);
        v["device"]["mac"] = json!(self.mac);
        v["name"] = json!(self.name);
        v["login"] = json!({
            "enabled": self.password.is_some(),
            "unprotected": false,
            "username": auth::USER,
        });
        let (server, user) = self.mqtt.clone().unwrap_or_default();
        v["mqtt"]["enable"] = json!(self.mqtt.is_some());
        v["mqtt"]["server"] = json!(server);
        v["mqtt"]["user"] = json!(user);
        v["mqtt"]["id"] = json!(self.id);
        v["mqtt"]["update_period"] = json!(self.update_period.as_secs());
        v["relays"] = json!([self.relay_settings_json()]);
        v["wifi_ap"]["ssid"] = json!(self.id);
        v["unixtime"] = json!(self.unix(now));
        v["time"] = json!(self.hhmm(now));
        v
    }

    fn announce_json(&self) -> Value {
        json!({
            "id": self.id,
            "model": "SHPLG-S",
            "mac": self.mac,
            "ip": "127.0.0.1",
            "new_fw": false,
            "fw_ver": fixture()["shelly"]["fw"],
        })
    }

    fn push(&mut self, rest: &str, payload: impl Into<Vec<u8>>, retain: bool) {
        let topic = self.topic(rest);
        // Gen1's `max_qos` is 0 by default.
        self.outbox
            .push(Outgoing::new(topic, payload, QoS::AtMostOnce, retain));
    }

    fn push_state(&mut self, now: Instant) {
        let on = if self.relay.on { "on" } else { "off" };
        self.push("relay/0", on, false);
        self.push_power(now);
        self.reported = (self.relay.on, self.relay.power_w());
    }

    fn push_power(&mut self, now: Instant) {
        let power = format!("{:.2}", self.relay.power_w());
        self.push("relay/0/power", power, false);
        let energy = ((self.relay.energy_wh(now) * 60.0).round() as i64).to_string();
        self.push("relay/0/energy", energy, false);
    }

    fn authorized(&self, req: &HttpRequest) -> bool {
        match &self.password {
            None => true,
            Some(p) => req
                .authorization
                .as_deref()
                .is_some_and(|h| auth::verify_basic(h, p)),
        }
    }

    fn unauthorized(&self) -> HttpResponse {
        let mut r = HttpResponse::text(401, "401 Unauthorized");
        r.www_authenticate = Some(format!("Basic realm=\"{}\"", self.id));
        r
    }

    /// The HTTP API, pure: what the firmware answers to `req` at `now`.
    pub(crate) fn answer(&mut self, req: &HttpRequest, now: Instant) -> HttpResponse {
        let path = req.path.trim_end_matches('/');
        if path == "/shelly" {
            return HttpResponse::json(200, &self.shelly_json());
        }
        if !self.authorized(req) {
            return self.unauthorized();
        }
        // Gen1 takes its parameters from the query, or a form body on POST.
        let mut params = parse_query(&req.query);
        if req.method == "POST" {
            params.extend(parse_query(&String::from_utf8_lossy(&req.body)));
        }
        match path {
            "/status" => HttpResponse::json(200, &self.status_json(now)),
            "/settings" => HttpResponse::json(200, &self.settings_json(now)),
            "/meter/0" => {
                let m = self.meter_json(now);
                HttpResponse::json(200, &m)
            }
            "/relay/0" => match parse_relay_query(&params) {
                Err(e) => HttpResponse::text(400, e),
                Ok(None) => HttpResponse::json(200, &self.relay_json(now)),
                Ok(Some((turn, timer))) => {
                    match turn {
                        Turn::On => self.relay.command(true, SOURCE_HTTP, timer, now),
                        Turn::Off => self.relay.command(false, SOURCE_HTTP, timer, now),
                        Turn::Toggle => {
                            let target = !self.relay.on;
                            self.relay.command(target, SOURCE_HTTP, timer, now)
                        }
                    };
                    HttpResponse::json(200, &self.relay_json(now))
                }
            },
            "/settings/relay/0" => match self.set_relay_settings(&params) {
                Ok(()) => HttpResponse::json(200, &self.relay_settings_json()),
                Err(e) => HttpResponse::text(400, e),
            },
            _ => HttpResponse::text(404, "Not Found"),
        }
    }

    fn set_relay_settings(&mut self, params: &[(String, String)]) -> Result<(), &'static str> {
        // Validate everything before changing anything.
        let mut auto_off = self.relay.auto_off;
        let mut auto_on = self.relay.auto_on;
        let mut default_state = self.default_state;
        let mut name = self.name.clone();
        for (k, v) in params {
            match k.as_str() {
                "auto_off" => auto_off = parse_secs(v)?,
                "auto_on" => auto_on = parse_secs(v)?,
                "default_state" => {
                    default_state = DefaultState::parse(v).ok_or("Bad default_state!")?;
                }
                "name" => name = (!v.is_empty()).then(|| v.clone()),
                _ => {}
            }
        }
        let changed = auto_off != self.relay.auto_off
            || auto_on != self.relay.auto_on
            || default_state != self.default_state
            || name != self.name;
        self.relay.auto_off = auto_off;
        self.relay.auto_on = auto_on;
        self.default_state = default_state;
        self.name = name;
        if changed {
            self.cfg_changed += 1;
        }
        Ok(())
    }
}

impl Model for Gen1Model {
    fn advance(&mut self, now: Instant) {
        self.relay.tick(now);
        self.report(now);
        if let Some(at) = self.next_update
            && at <= now
        {
            if self.mqtt_connected {
                self.push_power(now);
            }
            self.next_update = Some(now + self.update_period);
        }
    }

    fn report(&mut self, now: Instant) {
        let (on, power) = (self.relay.on, self.relay.power_w());
        if on != self.reported.0 {
            self.push("relay/0", if on { "on" } else { "off" }, false);
        }
        if power != self.reported.1 {
            self.push_power(now);
        }
        self.reported = (on, power);
    }

    fn next_deadline(&self) -> Option<Instant> {
        [self.relay.deadline(), self.next_update]
            .into_iter()
            .flatten()
            .min()
    }

    fn outbox(&mut self) -> &mut Vec<Outgoing> {
        &mut self.outbox
    }

    fn http(&mut self, req: &HttpRequest, fault: &Fault, now: Instant) -> HttpResponse {
        self.requests.push(format!("{} {}", req.method, req.target));
        match fault {
            Fault::TooManyRequests => HttpResponse::text(429, "Too Many Requests"),
            Fault::WrongAnswers => self.answer(req, now).garbled(),
            _ => self.answer(req, now),
        }
    }

    fn mqtt_session(&self) -> MqttSession {
        MqttSession {
            client_id: self.id.clone(),
            will: Outgoing::new(self.topic("online"), "false", QoS::AtMostOnce, true),
            subscriptions: vec![self.topic("relay/0/command"), self.topic("command")],
            qos: QoS::AtMostOnce,
        }
    }

    fn mqtt_up(&mut self, now: Instant) {
        self.mqtt_connected = true;
        self.push("online", "true", true);
        let announce = self.announce_json().to_string();
        self.push("announce", announce, false);
        self.push_state(now);
    }

    fn mqtt_down(&mut self) {
        self.mqtt_connected = false;
    }

    fn mqtt_message(&mut self, topic: &str, payload: &[u8], fault: &Fault, now: Instant) {
        let text = String::from_utf8_lossy(payload).trim().to_owned();
        let rest = topic
            .strip_prefix(&format!("shellies/{}/", self.id))
            .unwrap_or(topic);
        self.requests.push(format!("MQTT {rest} {text}"));
        match (rest, text.as_str()) {
            ("relay/0/command", "on") => {
                self.relay.command(true, SOURCE_MQTT, None, now);
            }
            ("relay/0/command", "off") => {
                self.relay.command(false, SOURCE_MQTT, None, now);
            }
            ("relay/0/command", "toggle") => {
                self.relay.toggle(SOURCE_MQTT, now);
            }
            ("command", "announce") => {
                let body = self.announce_json().to_string().into_bytes();
                let body = match fault {
                    Fault::WrongAnswers => garble(&body),
                    _ => body,
                };
                self.push("announce", body, false);
            }
            ("command", "update") => self.push_state(now),
            // Anything else is ignored, as the firmware does.
            _ => {}
        }
    }

    fn power_cycle(&mut self, now: Instant) {
        let on = match self.default_state {
            DefaultState::Off | DefaultState::Switch => false,
            DefaultState::On => true,
            DefaultState::Last => self.relay.on,
        };
        self.relay.boot(on, now);
        // `total` counts since boot on Gen1.
        self.relay.reset_energy(now);
        self.booted = now;
    }
}

/// A Shelly Plug S (Gen1) on 127.0.0.1: HTTP, and MQTT to venued's broker if configured.
///
/// MQTT topics (prefix `shellies/<id>/`): publishes `online` (`true`, retained; the will is
/// `false`, retained), `relay/0` (`on`/`off`, on every change), `relay/0/power` and
/// `relay/0/energy` (on change and every `update_period`), `announce` (JSON, on connect and
/// on request); obeys `relay/0/command` (`on`/`off`/`toggle`) and `command`
/// (`announce`, `update`).
pub struct ShellyGen1 {
    runner: Runner<Gen1Model>,
    id: String,
}

impl ShellyGen1 {
    pub async fn start(cfg: Gen1Config) -> std::io::Result<Self> {
        let now = Instant::now();
        let model = Gen1Model::new(&cfg, now, wall_start(cfg.clock.as_deref()));
        let id = cfg.id();
        let runner = Runner::start(model, cfg.http_port, cfg.mqtt.clone()).await?;
        Ok(Self { runner, id })
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.runner.addr
    }

    /// e.g. `shellyplug-s-DDEEFF`; MQTT topics live under `shellies/<id>/`.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The MQTT topic root a `device:` account must own for this plug.
    pub fn topic_root(&self) -> String {
        format!("shellies/{}", self.id)
    }

    pub fn relay_on(&self) -> bool {
        self.runner.core.with(|m, _| m.relay.on)
    }

    /// Who switched last: "init", "http", "mqtt", "timer" or "button".
    pub fn source(&self) -> String {
        self.runner.core.with(|m, _| m.relay.source.clone())
    }

    pub fn power_w(&self) -> f64 {
        self.runner.core.with(|m, _| m.relay.power_w())
    }

    /// Energy since boot, in Wh.
    pub fn energy_wh(&self) -> f64 {
        self.runner.core.with(|m, now| m.relay.energy_wh(now))
    }

    pub fn set_load_w(&self, watts: f64) {
        self.runner.core.with(|m, now| m.relay.set_load(watts, now));
    }

    /// Someone presses the plug's button: the relay toggles (source "button"), auto-off
    /// applies, MQTT reports it.
    pub fn press_button(&self) {
        self.runner.core.with(|m, now| {
            m.relay.toggle(SOURCE_BUTTON, now);
        });
    }

    /// Power cut and back: relay per `default_state`, timers gone, energy and uptime from
    /// zero, and the MQTT connection dies (the broker publishes the will) and comes back.
    pub fn power_cycle(&self) {
        self.runner.core.power_cycle();
    }

    pub fn set_fault(&self, f: Fault) {
        self.runner.core.set_fault(f);
    }

    pub fn fault(&self) -> Fault {
        self.runner.core.fault()
    }

    /// Requests seen, in order: `GET /relay/0?turn=on&timer=1`, `MQTT relay/0/command on`…
    pub fn requests(&self) -> Vec<String> {
        self.runner.core.with(|m, _| m.requests.clone())
    }

    pub fn mqtt_connected(&self) -> bool {
        self.runner.core.mqtt_connected()
    }

    /// Wait until the MQTT session is (`true`: connected and subscribed) or is not up.
    pub async fn wait_mqtt(&self, connected: bool, within: Duration) -> bool {
        self.runner.core.wait_mqtt(connected, within).await
    }

    /// Stop serving; the MQTT session ends with a clean DISCONNECT (no will).
    pub async fn stop(self) {
        self.runner.stop().await;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn model(cfg: &Gen1Config) -> (Gen1Model, Instant) {
        let t0 = Instant::now();
        (Gen1Model::new(cfg, t0, 1_700_000_000.0), t0)
    }

    fn body(r: &HttpResponse) -> Value {
        serde_json::from_slice(&r.body).unwrap()
    }

    #[test]
    fn fixture_parses() {
        assert!(fixture()["status"]["relays"].is_array());
        assert_eq!(Gen1Config::default().id(), "shellyplug-s-DDEEFF");
        assert_eq!(Gen1Config::new("aabbcc112233").id(), "shellyplug-s-112233");
    }

    #[test]
    fn relay_query_parsing() {
        let q = |s: &str| parse_relay_query(&parse_query(s));
        assert_eq!(q(""), Ok(None));
        assert_eq!(q("turn=on"), Ok(Some((Turn::On, None))));
        assert_eq!(
            q("turn=off&timer=2.5"),
            Ok(Some((Turn::Off, Some(Duration::from_millis(2500)))))
        );
        assert_eq!(q("turn=toggle&timer=0"), Ok(Some((Turn::Toggle, None))));
        assert_eq!(q("turn=maybe"), Err("Bad turn!"));
        assert_eq!(q("turn=on&timer=x"), Err("Bad timer!"));
    }

    #[test]
    fn turn_on_with_timer_then_flip_back() {
        let (mut m, t0) = model(&Gen1Config::default());
        let r = m.answer(&HttpRequest::get("/relay/0?turn=on&timer=5"), t0);
        let v = body(&r);
        assert_eq!(v["ison"], true);
        assert_eq!(v["has_timer"], true);
        assert_eq!(v["timer_duration"], 5);
        assert_eq!(v["timer_remaining"], 5);
        assert_eq!(v["timer_started"], 1_700_000_000);
        assert_eq!(v["source"], "http");
        m.advance(t0 + Duration::from_secs(5));
        let v = body(&m.answer(&HttpRequest::get("/relay/0"), t0 + Duration::from_secs(5)));
        assert_eq!(v["ison"], false);
        assert_eq!(v["source"], "timer");
        assert_eq!(v["has_timer"], false);
    }

    #[test]
    fn basic_auth_protects_all_but_shelly() {
        let cfg = Gen1Config {
            password: Some("secret".into()),
            ..Default::default()
        };
        let (mut m, t0) = model(&cfg);
        let shelly = m.answer(&HttpRequest::get("/shelly"), t0);
        assert_eq!(shelly.status, 200);
        assert_eq!(body(&shelly)["auth"], true);
        let r = m.answer(&HttpRequest::get("/relay/0?turn=on"), t0);
        assert_eq!(r.status, 401);
        assert!(r.www_authenticate.unwrap().starts_with("Basic"));
        assert!(!m.relay.on);
        let mut req = HttpRequest::get("/relay/0?turn=on");
        req.authorization = Some("Basic YWRtaW46c2VjcmV0".into());
        assert_eq!(m.answer(&req, t0).status, 200);
        assert!(m.relay.on);
    }

    #[test]
    fn settings_relay_and_power_cycle() {
        let (mut m, t0) = model(&Gen1Config::default());
        let r = m.answer(
            &HttpRequest::get("/settings/relay/0?auto_off=90&default_state=on"),
            t0,
        );
        let v = body(&r);
        assert_eq!(v["auto_off"], 90);
        assert_eq!(v["default_state"], "on");
        assert_eq!(
            m.answer(&HttpRequest::get("/settings/relay/0?default_state=x"), t0)
                .status,
            400
        );
        m.answer(&HttpRequest::get("/relay/0?turn=on"), t0);
        assert_eq!(m.relay.deadline(), Some(t0 + Duration::from_secs(90)));
        m.power_cycle(t0 + Duration::from_secs(1));
        assert!(m.relay.on);
        assert_eq!(m.relay.source, "init");
        let s = body(&m.answer(&HttpRequest::get("/settings"), t0));
        assert_eq!(s["relays"][0]["auto_off"], 90);
        assert_eq!(s["device"]["hostname"], "shellyplug-s-DDEEFF");
    }

    #[test]
    fn status_meters_follow_the_load() {
        let cfg = Gen1Config {
            load_w: 180.0,
            ..Default::default()
        };
        let (mut m, t0) = model(&cfg);
        m.answer(&HttpRequest::get("/relay/0?turn=on"), t0);
        let t1 = t0 + Duration::from_secs(60);
        m.advance(t1);
        let s = body(&m.answer(&HttpRequest::get("/status"), t1));
        assert_eq!(s["meters"][0]["power"], 180.0);
        assert_eq!(s["meters"][0]["total"], 180);
        assert_eq!(s["relays"][0]["ison"], true);
        assert_eq!(s["uptime"], 60);
    }

    #[test]
    fn mqtt_commands_and_reports() {
        let cfg = Gen1Config {
            load_w: 50.0,
            ..Default::default()
        };
        let (mut m, t0) = model(&cfg);
        m.mqtt_up(t0);
        let topics: Vec<_> = m.outbox.drain(..).map(|o| o.topic).collect();
        assert!(topics.contains(&"shellies/shellyplug-s-DDEEFF/online".into()));
        assert!(topics.contains(&"shellies/shellyplug-s-DDEEFF/announce".into()));
        m.mqtt_message(
            "shellies/shellyplug-s-DDEEFF/relay/0/command",
            b"on",
            &Fault::None,
            t0,
        );
        m.report(t0);
        let out: Vec<_> = m
            .outbox
            .drain(..)
            .map(|o| (o.topic, String::from_utf8(o.payload).unwrap()))
            .collect();
        assert_eq!(
            out[0],
            ("shellies/shellyplug-s-DDEEFF/relay/0".into(), "on".into())
        );
        assert_eq!(
            out[1],
            (
                "shellies/shellyplug-s-DDEEFF/relay/0/power".into(),
                "50.00".into()
            )
        );
        assert_eq!(m.relay.source, "mqtt");
        assert_eq!(m.requests, vec!["MQTT relay/0/command on"]);
    }

    #[test]
    fn faults_change_answers() {
        let (mut m, t0) = model(&Gen1Config::default());
        let r = m.http(&HttpRequest::get("/status"), &Fault::TooManyRequests, t0);
        assert_eq!(r.status, 429);
        let r = m.http(&HttpRequest::get("/status"), &Fault::WrongAnswers, t0);
        assert_eq!(r.status, 200);
        assert!(serde_json::from_slice::<Value>(&r.body).is_err());
        assert_eq!(m.requests.len(), 2);
    }
}
