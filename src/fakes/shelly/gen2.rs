//! Shelly Plus Plug S (Gen2 "Shelly-NG", SNPL-00112EU, firmware 1.1): JSON-RPC over HTTP
//! (`/rpc/<Method>` GET and POST, `POST /rpc` frames) with SHA-256 Digest auth, and over
//! MQTT (`<prefix>/rpc` → `<src>/rpc`, `NotifyStatus` on `<prefix>/events/rpc`).
//!
//! The RPC methods run on a plain state struct (`Gen2Model::dispatch`); HTTP, MQTT and
//! in-process callers (a script engine later: [`ShellyGen2::call`]) all go through it.
//! Scripts are stored, never run: running them is another component's job.

use super::auth;
use super::net::{
    HttpRequest, HttpResponse, Model, MqttConfig, MqttSession, Outgoing, Runner, garble,
    parse_query, publishable,
};
use super::relay::{Relay, Time, round};
use super::{Fault, ReArm, wall_start};
use crate::clock::Clock;
use rumqttc::QoS;
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::time::Instant;

const FIXTURE: &str = include_str!("../fixtures/shelly/gen2_plus_plug_s_SNPL-00112EU_fw1.1.0.json");

/// Sources as real Gen2 firmware reports them (`HTTP_in` seen in device captures).
const SOURCE_HTTP: &str = "HTTP_in";
const SOURCE_MQTT: &str = "MQTT";
const SOURCE_BUTTON: &str = "button";
/// What firmware reports for calls a script makes into the device.
const SOURCE_LOOPBACK: &str = "loopback";

/// Script slots on a Plus Plug S.
const MAX_SCRIPTS: usize = 10;
/// Nonces remembered for Digest auth (older ones get a fresh 401).
const MAX_NONCES: usize = 32;
/// Mains voltage the fake reports (the fixture's 227.9 V, rounded).
const VOLTAGE: f64 = 230.0;

fn fixture() -> &'static Value {
    static F: OnceLock<Value> = OnceLock::new();
    F.get_or_init(|| serde_json::from_str(FIXTURE).unwrap_or(Value::Null))
}

/// `switch:0` `initial_state`: output after power comes back.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum InitialState {
    #[default]
    Off,
    On,
    RestoreLast,
    /// Follow the input; a plug's button is momentary, so: off.
    MatchInput,
}

impl InitialState {
    fn as_str(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::On => "on",
            Self::RestoreLast => "restore_last",
            Self::MatchInput => "match_input",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "off" => Self::Off,
            "on" => Self::On,
            "restore_last" => Self::RestoreLast,
            "match_input" => Self::MatchInput,
            _ => return None,
        })
    }
}

/// An RPC error as the firmware sends it: `{"code": -103, "message": "…"}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RpcError {
    pub code: i64,
    pub message: String,
}

impl RpcError {
    fn new(code: i64, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    fn missing(arg: &str) -> Self {
        Self::new(-103, format!("Missing required argument '{arg}'!"))
    }

    fn invalid(arg: &str) -> Self {
        Self::new(-103, format!("Invalid argument '{arg}'!"))
    }

    fn not_found(arg: &str, value: impl std::fmt::Display) -> Self {
        Self::new(-105, format!("Argument '{arg}', value {value} not found!"))
    }

    fn no_handler(method: &str) -> Self {
        Self::new(404, format!("No handler for {method}"))
    }

    fn rate_limited() -> Self {
        Self::new(429, "Too Many Requests")
    }

    pub fn to_json(&self) -> Value {
        json!({ "code": self.code, "message": self.message })
    }

    /// The HTTP status of a bare error answer on `/rpc/<Method>`.
    fn http_status(&self) -> u16 {
        match self.code {
            401 => 401,
            404 => 404,
            429 => 429,
            -103 | -105 => 400,
            _ => 500,
        }
    }
}

/// A stored script (code kept, never executed here).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScriptInfo {
    pub id: u32,
    pub name: String,
    pub code: String,
    /// Start at boot.
    pub enable: bool,
    pub running: bool,
}

/// How to build a Gen2 fake. `Gen2Config::new(mac)` gives a plain plug: no password, no
/// MQTT, output off, timers supported, toggle_after re-arm restarts the timer.
#[derive(Clone)]
pub struct Gen2Config {
    /// 12 hex digits; the id is `shellyplusplugs-` and the MAC in lower case.
    pub mac: String,
    pub name: Option<String>,
    /// Enables Digest auth (user `admin`, realm = id) on everything but `/shelly` and
    /// `Shelly.GetDeviceInfo`. MQTT is never authenticated.
    pub password: Option<String>,
    pub mqtt: Option<MqttConfig>,
    /// MQTT topic prefix; None: the device id (the firmware's default).
    pub topic_prefix: Option<String>,
    /// 0: any free port on 127.0.0.1.
    pub http_port: u16,
    /// Output when the fake starts (source "init").
    pub relay_on: bool,
    /// Output after [`ShellyGen2::power_cycle`].
    pub initial_state: InitialState,
    /// `auto_off` with this `auto_off_delay` from the start (also settable by RPC).
    pub auto_off: Option<Duration>,
    /// False: `toggle_after` and auto-off/on are accepted and ignored.
    pub timers: bool,
    /// Re-sending `Switch.Set on=true toggle_after=N` while on (unverified on hardware).
    pub rearm: ReArm,
    /// What the appliance draws while powered, in W.
    pub load_w: f64,
    /// Also publish the whole `switch:0` status on `<prefix>/status/switch:0` on change
    /// (the firmware's `status_ntf`, off by default).
    pub status_ntf: bool,
    /// How often a `NotifyStatus` with `aenergy` goes out (the firmware: every minute).
    pub energy_period: Duration,
    /// Wall time at start (afterwards it advances with tokio time); None: the system clock.
    pub clock: Option<Arc<dyn Clock>>,
}

impl Gen2Config {
    pub fn new(mac: &str) -> Self {
        Self {
            mac: mac.to_ascii_uppercase(),
            name: None,
            password: None,
            mqtt: None,
            topic_prefix: None,
            http_port: 0,
            relay_on: false,
            initial_state: InitialState::Off,
            auto_off: None,
            timers: true,
            rearm: ReArm::Restarts,
            load_w: 0.0,
            status_ntf: false,
            energy_period: Duration::from_secs(60),
            clock: None,
        }
    }

    /// e.g. `shellyplusplugs-aabbccddeeff`.
    pub fn id(&self) -> String {
        format!("shellyplusplugs-{}", self.mac.to_ascii_lowercase())
    }

    pub fn prefix(&self) -> String {
        self.topic_prefix.clone().unwrap_or_else(|| self.id())
    }
}

impl Default for Gen2Config {
    fn default() -> Self {
        Self::new("AABBCCDDEEFF")
    }
}

/// What was last notified about `switch:0`.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Seen {
    output: bool,
    timer: Option<(Instant, Duration)>,
    apower: f64,
}

pub(crate) struct Gen2Model {
    id: String,
    mac: String,
    name: Option<String>,
    password: Option<String>,
    prefix: String,
    time: Time,
    booted: Instant,
    pub(crate) relay: Relay,
    switch_name: Option<String>,
    initial_state: InitialState,
    nonces: VecDeque<String>,
    scripts: BTreeMap<u32, ScriptInfo>,
    kvs: BTreeMap<String, Value>,
    kvs_rev: u64,
    cfg_rev: u64,
    mqtt: Option<(String, String)>,
    mqtt_connected: bool,
    status_ntf: bool,
    energy_period: Duration,
    next_energy: Option<Instant>,
    seen: Seen,
    pub(crate) requests: Vec<String>,
    outbox: Vec<Outgoing>,
}

/// Parameters of a call: a JSON object, or nothing.
fn arg<'a>(params: &'a Value, key: &str) -> Option<&'a Value> {
    params.get(key).filter(|v| !v.is_null())
}

fn bool_arg(params: &Value, key: &str) -> Result<Option<bool>, RpcError> {
    match arg(params, key) {
        None => Ok(None),
        Some(v) => v.as_bool().map(Some).ok_or_else(|| RpcError::invalid(key)),
    }
}

fn num_arg(params: &Value, key: &str) -> Result<Option<f64>, RpcError> {
    match arg(params, key) {
        None => Ok(None),
        Some(v) => v
            .as_f64()
            .filter(|n| n.is_finite())
            .map(Some)
            .ok_or_else(|| RpcError::invalid(key)),
    }
}

fn str_arg<'a>(params: &'a Value, key: &str) -> Result<Option<&'a str>, RpcError> {
    match arg(params, key) {
        None => Ok(None),
        Some(v) => v.as_str().map(Some).ok_or_else(|| RpcError::invalid(key)),
    }
}

fn required<T>(v: Result<Option<T>, RpcError>, key: &str) -> Result<T, RpcError> {
    v?.ok_or_else(|| RpcError::missing(key))
}

/// The `id` of a component instance; only `switch:0` exists.
fn switch_id(params: &Value) -> Result<(), RpcError> {
    let id = required(num_arg(params, "id"), "id")?;
    if id == 0.0 {
        Ok(())
    } else {
        Err(RpcError::not_found("id", id))
    }
}

fn secs(d: Option<Duration>, default: f64) -> f64 {
    d.map_or(default, |d| d.as_secs_f64())
}

/// GET parameters → JSON params: each value is JSON if it parses (`true`, `0`, `"s"`,
/// `{…}`), else a bare string, as firmware ≥ 1.0 reads them.
pub(crate) fn query_params(query: &str) -> Value {
    let mut map = Map::new();
    for (k, v) in parse_query(query) {
        let value = serde_json::from_str(&v).unwrap_or(Value::String(v));
        map.insert(k, value);
    }
    Value::Object(map)
}

impl Gen2Model {
    pub(crate) fn new(cfg: &Gen2Config, now: Instant, wall0: f64) -> Self {
        let mut relay = Relay::new(cfg.relay_on, now);
        relay.load_w = cfg.load_w.max(0.0);
        relay.timers_supported = cfg.timers;
        relay.rearm = cfg.rearm;
        relay.auto_off = cfg.auto_off.filter(|d| !d.is_zero());
        if cfg.relay_on {
            relay.boot(true, now);
        }
        let seen = Seen {
            output: relay.on,
            timer: relay.timer.map(|t| (t.started, t.duration)),
            apower: relay.power_w(),
        };
        Self {
            id: cfg.id(),
            mac: cfg.mac.clone(),
            name: cfg.name.clone(),
            password: cfg.password.clone(),
            prefix: cfg.prefix(),
            time: Time::new(now, wall0),
            booted: now,
            relay,
            switch_name: None,
            initial_state: cfg.initial_state,
            nonces: VecDeque::new(),
            scripts: BTreeMap::new(),
            kvs: BTreeMap::new(),
            kvs_rev: 0,
            cfg_rev: 0,
            mqtt: cfg
                .mqtt
                .as_ref()
                .map(|m| (m.broker.to_string(), m.username.clone())),
            mqtt_connected: false,
            status_ntf: cfg.status_ntf,
            energy_period: cfg.energy_period.max(Duration::from_millis(100)),
            next_energy: cfg.mqtt.as_ref().map(|_| now + cfg.energy_period),
            seen,
            requests: Vec::new(),
            outbox: Vec::new(),
        }
    }

    fn ts(&self, now: Instant) -> f64 {
        round(self.time.unix(now), 2)
    }

    // ---- payloads ----

    pub(crate) fn device_info(&self) -> Value {
        let mut v = fixture()["shelly"].clone();
        v["id"] = json!(self.id);
        v["mac"] = json!(self.mac);
        v["name"] = json!(self.name);
        v["auth_en"] = json!(self.password.is_some());
        v["auth_domain"] = Value::Null;
        v
    }

    fn aenergy(&mut self, now: Instant) -> Value {
        let unix = self.time.unix(now);
        // mWh in each of the last three full minutes, assuming the present draw.
        let per_minute = round(self.relay.power_w() * 1000.0 / 60.0, 3);
        json!({
            "total": round(self.relay.energy_wh(now), 3),
            "by_minute": [per_minute, per_minute, per_minute],
            "minute_ts": (unix / 60.0).floor() as i64 * 60,
        })
    }

    pub(crate) fn switch_status(&mut self, now: Instant) -> Value {
        let apower = round(self.relay.power_w(), 1);
        let mut v = json!({
            "id": 0,
            "source": self.relay.source,
            "output": self.relay.on,
            "apower": apower,
            "voltage": VOLTAGE,
            "current": round(apower / VOLTAGE, 3),
            "aenergy": self.aenergy(now),
            "temperature": fixture()["status"]["switch:0"]["temperature"],
        });
        if let Some(t) = self.relay.timer {
            v["timer_started_at"] = json!(round(self.time.unix(t.started), 2));
            v["timer_duration"] = json!(t.duration.as_secs_f64());
        }
        v
    }

    fn switch_config(&self) -> Value {
        json!({
            "id": 0,
            "name": self.switch_name,
            "initial_state": self.initial_state.as_str(),
            "auto_on": self.relay.auto_on.is_some(),
            "auto_on_delay": secs(self.relay.auto_on, 60.0),
            "auto_off": self.relay.auto_off.is_some(),
            "auto_off_delay": secs(self.relay.auto_off, 60.0),
            "power_limit": 2500,
            "voltage_limit": 280,
            "current_limit": 12.0,
        })
    }

    fn sys_status(&self, now: Instant) -> Value {
        let mut v = fixture()["status"]["sys"].clone();
        let unix = self.time.unix(now) as i64;
        let secs = unix.rem_euclid(86_400);
        v["mac"] = json!(self.mac);
        v["unixtime"] = json!(unix);
        v["time"] = json!(format!("{:02}:{:02}", secs / 3600, secs % 3600 / 60));
        v["uptime"] = json!(now.saturating_duration_since(self.booted).as_secs());
        v["cfg_rev"] = json!(self.cfg_rev);
        v["kvs_rev"] = json!(self.kvs_rev);
        v
    }

    fn mqtt_config(&self) -> Value {
        let (server, user) = match &self.mqtt {
            Some((s, u)) => (json!(s), json!(u)),
            None => (Value::Null, Value::Null),
        };
        json!({
            "enable": self.mqtt.is_some(),
            "server": server,
            "client_id": self.id,
            "user": user,
            "ssl_ca": null,
            "topic_prefix": self.prefix,
            "rpc_ntf": true,
            "status_ntf": self.status_ntf,
            "use_client_cert": false,
            "enable_rpc": true,
            "enable_control": true,
        })
    }

    fn full_status(&mut self, now: Instant) -> Value {
        let mut v = fixture()["status"].clone();
        v["switch:0"] = self.switch_status(now);
        v["sys"] = self.sys_status(now);
        v["mqtt"] = json!({ "connected": self.mqtt_connected });
        v["wifi"]["sta_ip"] = json!("127.0.0.1");
        for s in self.scripts.values() {
            v[format!("script:{}", s.id)] = json!({ "id": s.id, "running": s.running });
        }
        v
    }

    fn full_config(&self) -> Value {
        let mut v = fixture()["config"].clone();
        v["switch:0"] = self.switch_config();
        v["mqtt"] = self.mqtt_config();
        v["sys"]["device"]["mac"] = json!(self.mac);
        v["sys"]["device"]["name"] = json!(self.name);
        v["sys"]["cfg_rev"] = json!(self.cfg_rev);
        for s in self.scripts.values() {
            v[format!("script:{}", s.id)] =
                json!({ "id": s.id, "name": s.name, "enable": s.enable });
        }
        v
    }

    fn script_mut(&mut self, params: &Value) -> Result<&mut ScriptInfo, RpcError> {
        let id = required(num_arg(params, "id"), "id")?;
        self.scripts
            .get_mut(&(id as u32))
            .filter(|s| f64::from(s.id) == id)
            .ok_or_else(|| RpcError::not_found("id", id))
    }

    fn etag(value: &Value) -> String {
        auth::sha256_hex(&value.to_string())[..26].to_owned()
    }

    // ---- RPC ----

    /// Run one RPC method, as the firmware would; `source` is what a switch change
    /// reports. Method names are matched case-insensitively, as the firmware does.
    pub(crate) fn dispatch(
        &mut self,
        method: &str,
        params: &Value,
        source: &str,
        now: Instant,
    ) -> Result<Value, RpcError> {
        if !(params.is_object() || params.is_null()) {
            return Err(RpcError::invalid("params"));
        }
        match method.to_ascii_lowercase().as_str() {
            "shelly.getdeviceinfo" => Ok(self.device_info()),
            "shelly.getstatus" => Ok(self.full_status(now)),
            "shelly.getconfig" => Ok(self.full_config()),
            "shelly.listmethods" => Ok(json!({ "methods": METHODS })),
            "sys.getstatus" => Ok(self.sys_status(now)),
            "mqtt.getconfig" => Ok(self.mqtt_config()),
            "switch.getstatus" => {
                switch_id(params)?;
                Ok(self.switch_status(now))
            }
            "switch.getconfig" => {
                switch_id(params)?;
                Ok(self.switch_config())
            }
            "switch.set" => {
                switch_id(params)?;
                let on = required(bool_arg(params, "on"), "on")?;
                let after = num_arg(params, "toggle_after")?;
                if after.is_some_and(|a| a < 0.0) {
                    return Err(RpcError::invalid("toggle_after"));
                }
                let after = after.filter(|a| *a > 0.0).map(Duration::from_secs_f64);
                let was_on = self.relay.command(on, source, after, now);
                Ok(json!({ "was_on": was_on }))
            }
            "switch.toggle" => {
                switch_id(params)?;
                let was_on = self.relay.toggle(source, now);
                Ok(json!({ "was_on": was_on }))
            }
            "switch.setconfig" => {
                switch_id(params)?;
                let config = arg(params, "config")
                    .filter(|c| c.is_object())
                    .ok_or_else(|| RpcError::missing("config"))?;
                self.set_switch_config(config)?;
                Ok(json!({ "restart_required": false }))
            }
            "switch.resetcounters" => {
                switch_id(params)?;
                let total = round(self.relay.energy_wh(now), 3);
                self.relay.reset_energy(now);
                Ok(json!({ "aenergy": { "total": total } }))
            }
            "script.create" => {
                if self.scripts.len() >= MAX_SCRIPTS {
                    return Err(RpcError::new(-106, "Too many scripts!"));
                }
                let id = self.scripts.keys().next_back().map_or(1, |k| k + 1);
                let name =
                    str_arg(params, "name")?.map_or_else(|| format!("script_{id}"), str::to_owned);
                self.scripts.insert(
                    id,
                    ScriptInfo {
                        id,
                        name,
                        code: String::new(),
                        enable: false,
                        running: false,
                    },
                );
                self.cfg_rev += 1;
                Ok(json!({ "id": id }))
            }
            "script.putcode" => {
                let code = required(str_arg(params, "code"), "code")?.to_owned();
                let append = bool_arg(params, "append")?.unwrap_or(false);
                let s = self.script_mut(params)?;
                if append {
                    s.code.push_str(&code);
                } else {
                    s.code = code;
                }
                Ok(json!({ "len": s.code.len() }))
            }
            "script.getcode" => {
                let offset = num_arg(params, "offset")?.unwrap_or(0.0).max(0.0) as usize;
                let len = num_arg(params, "len")?;
                let s = self.script_mut(params)?;
                let bytes = s.code.as_bytes();
                let start = offset.min(bytes.len());
                let end = len.map_or(bytes.len(), |l| {
                    (start + l.max(0.0) as usize).min(bytes.len())
                });
                Ok(json!({
                    "data": String::from_utf8_lossy(&bytes[start..end]),
                    "left": bytes.len() - end,
                }))
            }
            "script.setconfig" => {
                let config = arg(params, "config")
                    .filter(|c| c.is_object())
                    .ok_or_else(|| RpcError::missing("config"))?
                    .clone();
                let name = str_arg(&config, "name")?.map(str::to_owned);
                let enable = bool_arg(&config, "enable")?;
                let s = self.script_mut(params)?;
                if let Some(n) = name {
                    s.name = n;
                }
                if let Some(e) = enable {
                    s.enable = e;
                }
                self.cfg_rev += 1;
                Ok(json!({ "restart_required": false }))
            }
            "script.getconfig" => {
                let s = self.script_mut(params)?;
                Ok(json!({ "id": s.id, "name": s.name, "enable": s.enable }))
            }
            "script.getstatus" => {
                let s = self.script_mut(params)?;
                Ok(json!({ "id": s.id, "running": s.running, "errors": [] }))
            }
            "script.start" | "script.stop" => {
                let start = method.eq_ignore_ascii_case("script.start");
                let s = self.script_mut(params)?;
                let was_running = s.running;
                s.running = start;
                Ok(json!({ "was_running": was_running }))
            }
            "script.delete" => {
                let id = self.script_mut(params)?.id;
                self.scripts.remove(&id);
                self.cfg_rev += 1;
                Ok(Value::Null)
            }
            "script.list" => Ok(json!({
                "scripts": self.scripts.values().map(|s| json!({
                    "id": s.id, "name": s.name, "enable": s.enable, "running": s.running,
                })).collect::<Vec<_>>(),
            })),
            "kvs.set" => {
                let key = required(str_arg(params, "key"), "key")?.to_owned();
                let value = arg(params, "value")
                    .cloned()
                    .ok_or_else(|| RpcError::missing("value"))?;
                let etag = Self::etag(&value);
                self.kvs.insert(key, value);
                self.kvs_rev += 1;
                Ok(json!({ "etag": etag, "rev": self.kvs_rev }))
            }
            "kvs.get" => {
                let key = required(str_arg(params, "key"), "key")?;
                let value = self
                    .kvs
                    .get(key)
                    .ok_or_else(|| RpcError::not_found("key", format!("'{key}'")))?;
                Ok(json!({ "etag": Self::etag(value), "value": value }))
            }
            "kvs.delete" => {
                let key = required(str_arg(params, "key"), "key")?;
                self.kvs
                    .remove(key)
                    .ok_or_else(|| RpcError::not_found("key", format!("'{key}'")))?;
                self.kvs_rev += 1;
                Ok(json!({ "rev": self.kvs_rev }))
            }
            "kvs.list" => Ok(json!({
                "keys": self.kvs.iter()
                    .map(|(k, v)| (k.clone(), json!({ "etag": Self::etag(v) })))
                    .collect::<Map<_, _>>(),
                "rev": self.kvs_rev,
            })),
            "kvs.getmany" => Ok(json!({
                "items": self.kvs.iter()
                    .map(|(k, v)| (k.clone(), json!({ "etag": Self::etag(v), "value": v })))
                    .collect::<Map<_, _>>(),
            })),
            _ => Err(RpcError::no_handler(method)),
        }
    }

    fn set_switch_config(&mut self, c: &Value) -> Result<(), RpcError> {
        // Validate everything first: a refused call changes nothing.
        let initial = match str_arg(c, "initial_state")? {
            Some(s) => {
                Some(InitialState::parse(s).ok_or_else(|| RpcError::invalid("initial_state"))?)
            }
            None => None,
        };
        let name = str_arg(c, "name")?.map(str::to_owned);
        let auto_off = bool_arg(c, "auto_off")?;
        let auto_on = bool_arg(c, "auto_on")?;
        let delay = |k: &str| -> Result<Option<Duration>, RpcError> {
            match num_arg(c, k)? {
                Some(d) if d > 0.0 => Ok(Some(Duration::from_secs_f64(d))),
                Some(_) => Err(RpcError::invalid(k)),
                None => Ok(None),
            }
        };
        let off_delay = delay("auto_off_delay")?;
        let on_delay = delay("auto_on_delay")?;
        if let Some(i) = initial {
            self.initial_state = i;
        }
        if name.is_some() {
            self.switch_name = name;
        }
        // The firmware keeps the delay even while the feature is off; the fake keeps one
        // Option, so a delay given alone applies only once the feature is on.
        let old_off = secs(self.relay.auto_off, 60.0);
        let off_on = auto_off.unwrap_or(self.relay.auto_off.is_some());
        self.relay.auto_off =
            off_on.then(|| off_delay.unwrap_or_else(|| Duration::from_secs_f64(old_off)));
        let old_on = secs(self.relay.auto_on, 60.0);
        let on_on = auto_on.unwrap_or(self.relay.auto_on.is_some());
        self.relay.auto_on =
            on_on.then(|| on_delay.unwrap_or_else(|| Duration::from_secs_f64(old_on)));
        self.cfg_rev += 1;
        Ok(())
    }

    // ---- auth ----

    fn needs_auth(&self, method: &str) -> bool {
        self.password.is_some() && !method.eq_ignore_ascii_case("Shelly.GetDeviceInfo")
    }

    fn new_nonce(&mut self) -> String {
        let nonce = format!("{:016x}", rand::random::<u64>());
        if self.nonces.len() >= MAX_NONCES {
            self.nonces.pop_front();
        }
        self.nonces.push_back(nonce.clone());
        nonce
    }

    /// Whether `req` carries a valid Digest header (or, for frames, a valid `auth`).
    fn authenticated(&self, req: &HttpRequest, frame_auth: Option<&Value>) -> bool {
        let Some(password) = &self.password else {
            return true;
        };
        let known = |n: &str| self.nonces.iter().any(|k| k == n);
        let header_ok = req.authorization.as_deref().is_some_and(|h| {
            auth::verify_header(h, &req.method, &req.target, &self.id, password, known).is_ok()
        });
        header_ok
            || frame_auth.is_some_and(|a| auth::verify_frame(a, &self.id, password, known).is_ok())
    }

    fn unauthorized(&mut self, frame_id: Option<&Value>) -> HttpResponse {
        let nonce = self.new_nonce();
        let error = RpcError::new(401, auth::frame_challenge(&self.id, &nonce));
        let body = match frame_id {
            Some(id) => json!({ "id": id, "src": self.id, "error": error.to_json() }),
            None => error.to_json(),
        };
        let mut r = HttpResponse::json(401, &body);
        r.www_authenticate = Some(auth::challenge(&self.id, &nonce));
        r
    }

    // ---- HTTP ----

    /// The HTTP API, pure: what the firmware answers to `req` at `now`.
    pub(crate) fn answer(
        &mut self,
        req: &HttpRequest,
        fault: &Fault,
        now: Instant,
    ) -> HttpResponse {
        let limited = matches!(fault, Fault::TooManyRequests);
        let r = if req.path == "/shelly" {
            self.requests.push(format!("{} {}", req.method, req.target));
            if limited {
                HttpResponse::json(429, &RpcError::rate_limited().to_json())
            } else {
                HttpResponse::json(200, &self.device_info())
            }
        } else if req.path == "/rpc" && req.method == "POST" {
            self.answer_frame(req, limited, now)
        } else if let Some(method) = req.path.strip_prefix("/rpc/") {
            self.requests.push(format!("{} {}", req.method, req.target));
            self.answer_method(req, method, limited, now)
        } else {
            self.requests.push(format!("{} {}", req.method, req.target));
            HttpResponse::text(404, "Not Found")
        };
        match fault {
            Fault::WrongAnswers => r.garbled(),
            _ => r,
        }
    }

    /// `GET /rpc/<Method>?params` or `POST /rpc/<Method>` with JSON params: bare answers.
    fn answer_method(
        &mut self,
        req: &HttpRequest,
        method: &str,
        limited: bool,
        now: Instant,
    ) -> HttpResponse {
        if limited {
            return HttpResponse::json(429, &RpcError::rate_limited().to_json());
        }
        let params = if req.method == "POST" && !req.body.iter().all(u8::is_ascii_whitespace) {
            match serde_json::from_slice::<Value>(&req.body) {
                Ok(v) => v,
                Err(_) => {
                    return HttpResponse::json(400, &RpcError::invalid("params").to_json());
                }
            }
        } else {
            query_params(&req.query)
        };
        if self.needs_auth(method) && !self.authenticated(req, None) {
            return self.unauthorized(None);
        }
        match self.dispatch(method, &params, SOURCE_HTTP, now) {
            Ok(v) => HttpResponse::json(200, &v),
            Err(e) => HttpResponse::json(e.http_status(), &e.to_json()),
        }
    }

    /// `POST /rpc` with a full frame: full frames back (errors inside, HTTP 200), except a
    /// missing authentication (401) and rate limiting (429).
    fn answer_frame(&mut self, req: &HttpRequest, limited: bool, now: Instant) -> HttpResponse {
        let frame: Value = match serde_json::from_slice(&req.body) {
            Ok(v @ Value::Object(_)) => v,
            _ => {
                self.requests.push("POST /rpc <malformed>".into());
                return HttpResponse::json(400, &RpcError::invalid("frame").to_json());
            }
        };
        let id = frame.get("id").cloned().unwrap_or(Value::Null);
        let src = frame.get("src").and_then(Value::as_str).map(str::to_owned);
        let method = frame
            .get("method")
            .and_then(Value::as_str)
            .map(str::to_owned);
        self.requests.push(format!(
            "POST /rpc {}",
            method.as_deref().unwrap_or("<no method>")
        ));
        let reply = |me: &Self, body: Result<Value, RpcError>| {
            let mut f = json!({ "id": id, "src": me.id });
            if let Some(s) = &src {
                f["dst"] = json!(s);
            }
            match body {
                Ok(v) => f["result"] = v,
                Err(e) => f["error"] = e.to_json(),
            }
            f
        };
        if limited {
            return HttpResponse::json(429, &reply(self, Err(RpcError::rate_limited())));
        }
        let Some(method) = method else {
            return HttpResponse::json(200, &reply(self, Err(RpcError::missing("method"))));
        };
        if self.needs_auth(&method) && !self.authenticated(req, frame.get("auth")) {
            return self.unauthorized(Some(&id));
        }
        let params = frame.get("params").cloned().unwrap_or(Value::Null);
        let result = self.dispatch(&method, &params, SOURCE_HTTP, now);
        HttpResponse::json(200, &reply(self, result))
    }

    // ---- MQTT ----

    fn push(&mut self, topic: String, payload: impl Into<Vec<u8>>, retain: bool) {
        self.outbox
            .push(Outgoing::new(topic, payload, QoS::AtLeastOnce, retain));
    }

    fn notify(&mut self, switch: Value, now: Instant) {
        let frame = json!({
            "src": self.id,
            "dst": format!("{}/events", self.prefix),
            "method": "NotifyStatus",
            "params": { "ts": self.ts(now), "switch:0": switch },
        });
        self.push(
            format!("{}/events/rpc", self.prefix),
            frame.to_string(),
            false,
        );
    }

    fn push_status(&mut self, now: Instant) {
        let s = self.switch_status(now).to_string();
        self.push(format!("{}/status/switch:0", self.prefix), s, false);
    }

    /// An RPC frame from `<prefix>/rpc`: answered on `<src>/rpc`. Without a usable `src`
    /// there is nowhere to answer, so the frame is dropped (as the firmware does).
    fn rpc_frame(&mut self, payload: &[u8], fault: &Fault, now: Instant) {
        let frame: Value = match serde_json::from_slice(payload) {
            Ok(v @ Value::Object(_)) => v,
            _ => {
                self.requests.push("MQTT rpc <malformed>".into());
                return;
            }
        };
        let method = frame
            .get("method")
            .and_then(Value::as_str)
            .map(str::to_owned);
        self.requests.push(format!(
            "MQTT rpc {}",
            method.as_deref().unwrap_or("<no method>")
        ));
        let Some(src) = frame.get("src").and_then(Value::as_str).map(str::to_owned) else {
            return;
        };
        let topic = format!("{src}/rpc");
        if src.is_empty() || !publishable(&topic) {
            return;
        }
        let result = match (fault, method) {
            (Fault::TooManyRequests, _) => Err(RpcError::rate_limited()),
            (_, None) => Err(RpcError::missing("method")),
            (_, Some(m)) => {
                let params = frame.get("params").cloned().unwrap_or(Value::Null);
                self.dispatch(&m, &params, SOURCE_MQTT, now)
            }
        };
        let mut reply = json!({
            "id": frame.get("id").cloned().unwrap_or(Value::Null),
            "src": self.id,
            "dst": src,
        });
        match result {
            Ok(v) => reply["result"] = v,
            Err(e) => reply["error"] = e.to_json(),
        }
        let body = reply.to_string().into_bytes();
        let body = match fault {
            Fault::WrongAnswers => garble(&body),
            _ => body,
        };
        self.push(topic, body, false);
    }
}

/// Methods `Gen2Model::dispatch` knows (for `Shelly.ListMethods`).
const METHODS: &[&str] = &[
    "Shelly.GetDeviceInfo",
    "Shelly.GetStatus",
    "Shelly.GetConfig",
    "Shelly.ListMethods",
    "Sys.GetStatus",
    "MQTT.GetConfig",
    "Switch.Set",
    "Switch.Toggle",
    "Switch.GetStatus",
    "Switch.GetConfig",
    "Switch.SetConfig",
    "Switch.ResetCounters",
    "Script.Create",
    "Script.PutCode",
    "Script.GetCode",
    "Script.SetConfig",
    "Script.GetConfig",
    "Script.GetStatus",
    "Script.Start",
    "Script.Stop",
    "Script.Delete",
    "Script.List",
    "KVS.Set",
    "KVS.Get",
    "KVS.Delete",
    "KVS.List",
    "KVS.GetMany",
];

impl Model for Gen2Model {
    fn advance(&mut self, now: Instant) {
        self.relay.tick(now);
        self.report(now);
        if let Some(at) = self.next_energy
            && at <= now
        {
            if self.mqtt_connected {
                let aenergy = self.aenergy(now);
                self.notify(json!({ "id": 0, "aenergy": aenergy }), now);
            }
            self.next_energy = Some(now + self.energy_period);
        }
    }

    fn report(&mut self, now: Instant) {
        let seen = Seen {
            output: self.relay.on,
            timer: self.relay.timer.map(|t| (t.started, t.duration)),
            apower: self.relay.power_w(),
        };
        if seen == self.seen {
            return;
        }
        let mut sw = json!({ "id": 0 });
        if seen.output != self.seen.output {
            sw["output"] = json!(seen.output);
            sw["source"] = json!(self.relay.source);
        }
        if seen.timer != self.seen.timer
            && let Some((started, duration)) = seen.timer
        {
            sw["timer_started_at"] = json!(round(self.time.unix(started), 2));
            sw["timer_duration"] = json!(duration.as_secs_f64());
        }
        if sw.as_object().is_some_and(|o| o.len() > 1) {
            self.notify(sw, now);
        }
        if seen.apower != self.seen.apower {
            let apower = round(seen.apower, 1);
            let current = round(apower / VOLTAGE, 3);
            self.notify(
                json!({ "id": 0, "apower": apower, "current": current }),
                now,
            );
        }
        if self.status_ntf {
            self.push_status(now);
        }
        self.seen = seen;
    }

    fn next_deadline(&self) -> Option<Instant> {
        [self.relay.deadline(), self.next_energy]
            .into_iter()
            .flatten()
            .min()
    }

    fn outbox(&mut self) -> &mut Vec<Outgoing> {
        &mut self.outbox
    }

    fn http(&mut self, req: &HttpRequest, fault: &Fault, now: Instant) -> HttpResponse {
        self.answer(req, fault, now)
    }

    fn mqtt_session(&self) -> MqttSession {
        MqttSession {
            client_id: self.id.clone(),
            will: Outgoing::new(
                format!("{}/online", self.prefix),
                "false",
                QoS::AtLeastOnce,
                true,
            ),
            subscriptions: vec![
                format!("{}/rpc", self.prefix),
                format!("{}/command/switch:0", self.prefix),
                format!("{}/command", self.prefix),
            ],
            qos: QoS::AtLeastOnce,
        }
    }

    fn mqtt_up(&mut self, now: Instant) {
        self.mqtt_connected = true;
        self.push(format!("{}/online", self.prefix), "true", true);
        if self.status_ntf {
            self.push_status(now);
        }
    }

    fn mqtt_down(&mut self) {
        self.mqtt_connected = false;
    }

    fn mqtt_message(&mut self, topic: &str, payload: &[u8], fault: &Fault, now: Instant) {
        let Some(rest) = topic
            .strip_prefix(self.prefix.as_str())
            .and_then(|r| r.strip_prefix('/'))
        else {
            return;
        };
        match rest {
            "rpc" => self.rpc_frame(payload, fault, now),
            "command/switch:0" => {
                let text = String::from_utf8_lossy(payload).trim().to_owned();
                self.requests.push(format!("MQTT command/switch:0 {text}"));
                if matches!(fault, Fault::TooManyRequests) {
                    return;
                }
                match text.as_str() {
                    "on" => {
                        self.relay.command(true, SOURCE_MQTT, None, now);
                    }
                    "off" => {
                        self.relay.command(false, SOURCE_MQTT, None, now);
                    }
                    "toggle" => {
                        self.relay.toggle(SOURCE_MQTT, now);
                    }
                    _ => {}
                }
            }
            "command" => {
                let text = String::from_utf8_lossy(payload).trim().to_owned();
                self.requests.push(format!("MQTT command {text}"));
                if text == "status_update" {
                    self.push_status(now);
                }
            }
            _ => {}
        }
    }

    fn power_cycle(&mut self, now: Instant) {
        let on = match self.initial_state {
            InitialState::Off | InitialState::MatchInput => false,
            InitialState::On => true,
            InitialState::RestoreLast => self.relay.on,
        };
        self.relay.boot(on, now);
        self.booted = now;
        self.nonces.clear();
        for s in self.scripts.values_mut() {
            s.running = s.enable;
        }
    }
}

/// A Shelly Plus Plug S (Gen2) on 127.0.0.1: HTTP RPC, and MQTT to venued's broker if
/// configured.
///
/// MQTT (prefix = `topic_prefix`, default the id; QoS 1): publishes `<prefix>/online`
/// (`true`, retained; the will is `false`, retained) and `NotifyStatus` frames on
/// `<prefix>/events/rpc`; answers request frames from `<prefix>/rpc` on `<src>/rpc`;
/// obeys `<prefix>/command/switch:0` (`on`/`off`/`toggle`) and `<prefix>/command`
/// (`status_update`). The broker lets a device publish only under its own roots, so a
/// caller whose replies must reach it uses a `src` under the prefix (`<prefix>/venued` →
/// replies on `<prefix>/venued/rpc`); any `src` works as far as the fake is concerned.
pub struct ShellyGen2 {
    runner: Runner<Gen2Model>,
    id: String,
    prefix: String,
}

impl ShellyGen2 {
    pub async fn start(cfg: Gen2Config) -> std::io::Result<Self> {
        let now = Instant::now();
        let model = Gen2Model::new(&cfg, now, wall_start(cfg.clock.as_deref()));
        let runner = Runner::start(model, cfg.http_port, cfg.mqtt.clone()).await?;
        Ok(Self {
            runner,
            id: cfg.id(),
            prefix: cfg.prefix(),
        })
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.runner.addr
    }

    /// e.g. `shellyplusplugs-aabbccddeeff` (also the Digest realm).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The MQTT topic prefix, which a `device:` account must own.
    pub fn topic_prefix(&self) -> &str {
        &self.prefix
    }

    pub fn relay_on(&self) -> bool {
        self.runner.core.with(|m, _| m.relay.on)
    }

    /// Who switched last: "init", "HTTP_in", "MQTT", "timer", "button" or "loopback".
    pub fn source(&self) -> String {
        self.runner.core.with(|m, _| m.relay.source.clone())
    }

    pub fn power_w(&self) -> f64 {
        self.runner.core.with(|m, _| m.relay.power_w())
    }

    /// `aenergy.total`, in Wh.
    pub fn energy_wh(&self) -> f64 {
        self.runner.core.with(|m, now| m.relay.energy_wh(now))
    }

    pub fn set_load_w(&self, watts: f64) {
        self.runner.core.with(|m, now| m.relay.set_load(watts, now));
    }

    /// The running flip-back or auto timer: (`timer_started_at` unix seconds,
    /// `timer_duration` seconds).
    pub fn timer(&self) -> Option<(f64, f64)> {
        self.runner.core.with(|m, _| {
            m.relay
                .timer
                .map(|t| (m.time.unix(t.started), t.duration.as_secs_f64()))
        })
    }

    /// Someone presses the plug's button: the output toggles (source "button"),
    /// auto-off applies, a `NotifyStatus` goes out.
    pub fn press_button(&self) {
        self.runner.core.with(|m, now| {
            m.relay.toggle(SOURCE_BUTTON, now);
        });
    }

    /// Power cut and back: output per `initial_state`, timers gone, enabled scripts
    /// running again, and the MQTT connection dies (the broker publishes the will) and
    /// comes back.
    pub fn power_cycle(&self) {
        self.runner.core.power_cycle();
    }

    pub fn set_fault(&self, f: Fault) {
        self.runner.core.set_fault(f);
    }

    pub fn fault(&self) -> Fault {
        self.runner.core.fault()
    }

    /// Requests seen, in order: `GET /rpc/Switch.Set?id=0&on=true`, `POST /rpc Switch.Set`,
    /// `MQTT rpc Switch.Set`, `MQTT command/switch:0 on`…
    pub fn requests(&self) -> Vec<String> {
        self.runner.core.with(|m, _| m.requests.clone())
    }

    /// Call an RPC method from inside the device (what a script's `Shelly.call` does):
    /// no auth, no faults, source "loopback".
    pub fn call(&self, method: &str, params: serde_json::Value) -> Result<Value, RpcError> {
        self.runner
            .core
            .with(|m, now| m.dispatch(method, &params, SOURCE_LOOPBACK, now))
    }

    /// The stored scripts, by id.
    pub fn scripts(&self) -> Vec<ScriptInfo> {
        self.runner
            .core
            .with(|m, _| m.scripts.values().cloned().collect())
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

    const S: Duration = Duration::from_secs(1);

    fn model(cfg: &Gen2Config) -> (Gen2Model, Instant) {
        let t0 = Instant::now();
        (Gen2Model::new(cfg, t0, 1_700_000_000.0), t0)
    }

    fn call(
        m: &mut Gen2Model,
        method: &str,
        params: Value,
        now: Instant,
    ) -> Result<Value, RpcError> {
        m.dispatch(method, &params, "HTTP_in", now)
    }

    fn body(r: &HttpResponse) -> Value {
        serde_json::from_slice(&r.body).unwrap()
    }

    fn notifications(m: &mut Gen2Model) -> Vec<Value> {
        m.outbox
            .drain(..)
            .filter(|o| o.topic.ends_with("/events/rpc"))
            .map(|o| {
                serde_json::from_slice::<Value>(&o.payload).unwrap()["params"]["switch:0"].clone()
            })
            .collect()
    }

    #[test]
    fn fixture_parses() {
        assert!(fixture()["status"]["switch:0"].is_object());
        assert_eq!(Gen2Config::default().id(), "shellyplusplugs-aabbccddeeff");
    }

    #[test]
    fn switch_set_and_errors() {
        let (mut m, t0) = model(&Gen2Config::default());
        assert_eq!(
            call(&mut m, "Switch.Set", json!({"id": 0, "on": true}), t0),
            Ok(json!({"was_on": false}))
        );
        assert_eq!(
            call(&mut m, "switch.set", json!({"id": 0, "on": false}), t0),
            Ok(json!({"was_on": true}))
        );
        assert_eq!(
            call(&mut m, "Switch.Set", json!({"on": true}), t0)
                .unwrap_err()
                .code,
            -103
        );
        assert_eq!(
            call(&mut m, "Switch.Set", json!({"id": 1, "on": true}), t0).unwrap_err(),
            RpcError::new(-105, "Argument 'id', value 1 not found!")
        );
        assert_eq!(
            call(&mut m, "Switch.Set", json!({"id": 0}), t0)
                .unwrap_err()
                .code,
            -103
        );
        assert_eq!(
            call(&mut m, "Switch.Set", json!({"id": 0, "on": "yes"}), t0)
                .unwrap_err()
                .code,
            -103
        );
        assert_eq!(
            call(&mut m, "Switch.GetStatus", json!([1]), t0)
                .unwrap_err()
                .code,
            -103
        );
        assert_eq!(
            call(&mut m, "Nope.Nothing", Value::Null, t0).unwrap_err(),
            RpcError::new(404, "No handler for Nope.Nothing")
        );
    }

    #[test]
    fn toggle_after_shows_timer_and_flips() {
        let (mut m, t0) = model(&Gen2Config::default());
        call(
            &mut m,
            "Switch.Set",
            json!({"id": 0, "on": true, "toggle_after": 30}),
            t0,
        )
        .unwrap();
        let s = call(&mut m, "Switch.GetStatus", json!({"id": 0}), t0).unwrap();
        assert_eq!(s["timer_started_at"], 1_700_000_000.0);
        assert_eq!(s["timer_duration"], 30.0);
        m.advance(t0 + 30 * S);
        let s = call(&mut m, "Switch.GetStatus", json!({"id": 0}), t0 + 30 * S).unwrap();
        assert_eq!(s["output"], false);
        assert_eq!(s["source"], "timer");
        assert!(s.get("timer_started_at").is_none());
    }

    #[test]
    fn rearm_modes() {
        for (rearm, moved) in [(ReArm::Restarts, true), (ReArm::Ignored, false)] {
            let cfg = Gen2Config {
                rearm,
                ..Default::default()
            };
            let (mut m, t0) = model(&cfg);
            let set = json!({"id": 0, "on": true, "toggle_after": 10});
            call(&mut m, "Switch.Set", set.clone(), t0).unwrap();
            call(&mut m, "Switch.Set", set, t0 + 5 * S).unwrap();
            let s = call(&mut m, "Switch.GetStatus", json!({"id": 0}), t0 + 5 * S).unwrap();
            let started = s["timer_started_at"].as_f64().unwrap();
            assert_eq!(started == 1_700_000_005.0, moved, "{rearm:?}");
            assert_eq!(started == 1_700_000_000.0, !moved, "{rearm:?}");
        }
    }

    #[test]
    fn auto_off_config() {
        let (mut m, t0) = model(&Gen2Config::default());
        let r = call(
            &mut m,
            "Switch.SetConfig",
            json!({"id": 0, "config": {"auto_off": true, "auto_off_delay": 2, "initial_state": "on"}}),
            t0,
        );
        assert_eq!(r, Ok(json!({"restart_required": false})));
        let c = call(&mut m, "Switch.GetConfig", json!({"id": 0}), t0).unwrap();
        assert_eq!(c["auto_off"], true);
        assert_eq!(c["auto_off_delay"], 2.0);
        assert_eq!(c["initial_state"], "on");
        assert!(
            call(
                &mut m,
                "Switch.SetConfig",
                json!({"id": 0, "config": {"initial_state": "x"}}),
                t0
            )
            .is_err()
        );
        m.press_button_for_test(t0);
        assert!(m.relay.on);
        m.advance(t0 + 2 * S);
        assert!(!m.relay.on);
        assert_eq!(m.relay.source, "timer");
    }

    impl Gen2Model {
        fn press_button_for_test(&mut self, now: Instant) {
            self.relay.toggle(SOURCE_BUTTON, now);
        }
    }

    #[test]
    fn notify_status_carries_changed_keys() {
        let cfg = Gen2Config {
            load_w: 100.0,
            ..Default::default()
        };
        let (mut m, t0) = model(&cfg);
        m.press_button_for_test(t0);
        m.report(t0);
        let n = notifications(&mut m);
        assert_eq!(n[0], json!({"id": 0, "output": true, "source": "button"}));
        assert_eq!(n[1], json!({"id": 0, "apower": 100.0, "current": 0.435}));
        m.report(t0);
        assert!(notifications(&mut m).is_empty());
        call(
            &mut m,
            "Switch.Set",
            json!({"id": 0, "on": true, "toggle_after": 5}),
            t0 + S,
        )
        .unwrap();
        m.report(t0 + S);
        let n = notifications(&mut m);
        assert_eq!(
            n,
            vec![json!({"id": 0, "timer_started_at": 1_700_000_001.0, "timer_duration": 5.0})]
        );
    }

    #[test]
    fn scripts_and_kvs() {
        let (mut m, t0) = model(&Gen2Config::default());
        assert_eq!(
            call(&mut m, "Script.Create", json!({"name": "wd"}), t0),
            Ok(json!({"id": 1}))
        );
        assert_eq!(
            call(
                &mut m,
                "Script.PutCode",
                json!({"id": 1, "code": "let a"}),
                t0
            ),
            Ok(json!({"len": 5}))
        );
        assert_eq!(
            call(
                &mut m,
                "Script.PutCode",
                json!({"id": 1, "code": " = 1;", "append": true}),
                t0
            ),
            Ok(json!({"len": 10}))
        );
        call(
            &mut m,
            "Script.SetConfig",
            json!({"id": 1, "config": {"enable": true}}),
            t0,
        )
        .unwrap();
        assert_eq!(
            call(&mut m, "Script.Start", json!({"id": 1}), t0),
            Ok(json!({"was_running": false}))
        );
        let list = call(&mut m, "Script.List", Value::Null, t0).unwrap();
        assert_eq!(
            list["scripts"],
            json!([{"id": 1, "name": "wd", "enable": true, "running": true}])
        );
        assert_eq!(m.scripts[&1].code, "let a = 1;");
        assert_eq!(
            call(
                &mut m,
                "Script.GetCode",
                json!({"id": 1, "offset": 4, "len": 3}),
                t0
            ),
            Ok(json!({"data": "a =", "left": 3}))
        );
        assert_eq!(
            call(&mut m, "Script.Start", json!({"id": 9}), t0)
                .unwrap_err()
                .code,
            -105
        );
        let set = call(
            &mut m,
            "KVS.Set",
            json!({"key": "k", "value": {"a": 1}}),
            t0,
        )
        .unwrap();
        assert_eq!(set["rev"], 1);
        let got = call(&mut m, "KVS.Get", json!({"key": "k"}), t0).unwrap();
        assert_eq!(got["value"], json!({"a": 1}));
        assert_eq!(got["etag"], set["etag"]);
        assert_eq!(
            call(&mut m, "KVS.Get", json!({"key": "x"}), t0)
                .unwrap_err()
                .code,
            -105
        );
        m.power_cycle(t0 + S);
        assert!(m.scripts[&1].running);
    }

    #[test]
    fn http_get_params_and_digest() {
        let cfg = Gen2Config {
            password: Some("secret".into()),
            ..Default::default()
        };
        let (mut m, t0) = model(&cfg);
        let info = m.answer(
            &HttpRequest::get("/rpc/Shelly.GetDeviceInfo"),
            &Fault::None,
            t0,
        );
        assert_eq!(info.status, 200);
        assert_eq!(body(&info)["auth_en"], true);
        let target = "/rpc/Switch.Set?id=0&on=true";
        let r = m.answer(&HttpRequest::get(target), &Fault::None, t0);
        assert_eq!(r.status, 401);
        let challenge = r.www_authenticate.unwrap();
        let nonce = challenge
            .split("nonce=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        let realm = m.id.clone();
        let resp = auth::response(
            &auth::ha1(&realm, "secret"),
            nonce,
            "00000001",
            "x",
            &auth::sha256_hex(&format!("GET:{target}")),
        );
        let mut req = HttpRequest::get(target);
        req.authorization = Some(format!(
            "Digest username=\"admin\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{target}\", \
             algorithm=SHA-256, qop=auth, nc=00000001, cnonce=\"x\", response=\"{resp}\""
        ));
        let ok = m.answer(&req, &Fault::None, t0);
        assert_eq!(ok.status, 200);
        assert_eq!(body(&ok), json!({"was_on": false}));
        assert!(m.relay.on);
    }

    #[test]
    fn query_params_are_json_or_strings() {
        assert_eq!(
            query_params("id=0&on=true&key=abc&config=%7B%22auto_off%22%3Atrue%7D&s=%22x%22"),
            json!({"id": 0, "on": true, "key": "abc", "config": {"auto_off": true}, "s": "x"})
        );
    }

    #[test]
    fn mqtt_rpc_frames() {
        let (mut m, t0) = model(&Gen2Config::default());
        let p = m.prefix.clone();
        let frame = json!({"id": 7, "src": format!("{p}/venued"), "method": "Switch.Set",
                           "params": {"id": 0, "on": true}});
        m.mqtt_message(
            &format!("{p}/rpc"),
            frame.to_string().as_bytes(),
            &Fault::None,
            t0,
        );
        let o = m.outbox.pop().unwrap();
        assert_eq!(o.topic, format!("{p}/venued/rpc"));
        let reply: Value = serde_json::from_slice(&o.payload).unwrap();
        assert_eq!(
            reply,
            json!({"id": 7, "src": m.id, "dst": format!("{p}/venued"), "result": {"was_on": false}})
        );
        assert_eq!(m.relay.source, "MQTT");
        // Garbage, no src, wildcard src: nothing to answer, nothing published.
        for bad in [
            &b"not json"[..],
            br#"{"id":1,"method":"Switch.Toggle"}"#,
            br#"{"id":1,"src":"a/#","method":"x"}"#,
        ] {
            m.mqtt_message(&format!("{p}/rpc"), bad, &Fault::None, t0);
            assert!(m.outbox.is_empty());
        }
        let frame = json!({"id": "q", "src": "c"});
        m.mqtt_message(
            &format!("{p}/rpc"),
            frame.to_string().as_bytes(),
            &Fault::TooManyRequests,
            t0,
        );
        let reply: Value = serde_json::from_slice(&m.outbox.pop().unwrap().payload).unwrap();
        assert_eq!(reply["error"]["code"], 429);
    }
}
