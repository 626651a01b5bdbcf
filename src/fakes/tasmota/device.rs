//! One Tasmota plug as a state machine, without I/O: commands in, MQTT messages out, time
//! passed in as [`Now`]. The network side (mod.rs) feeds it and delivers what it returns.
//!
//! What it models, from the firmware (tasmota/support_command.ino, xdrv_10_rules.ino,
//! xdrv_02_9_mqtt.ino, xdrv_03_energy.ino): command word and parameter parsing (index from
//! trailing digits, `?` = query, numbers in decimal/octal/hex, `on`/`off`/`toggle`
//! words); replies on `stat/<t>/RESULT` (or `STATUS<n>`), `{"Command":"Unknown"}` and
//! `{"Command":"Error"}`; `stat/<t>/POWER` with every power report; a queued `Backlog`
//! run one command per 200 ms; PulseTime; RuleTimers; the rule triggers of
//! [`super::rules::Trigger`]; `tele/<t>/STATE` and `SENSOR` every TelePeriod and
//! PowerDelta reports; the boot sequence (PowerOnState, System#Boot on the first MQTT
//! connection). One relay only.

use super::rules::{Command, Trigger, parse_rules_prefix, split_backlog};
use jiff::Timestamp;
use jiff::civil::Date;
use jiff::tz::TimeZone;
use std::collections::VecDeque;
use std::time::Duration;

/// The version string the fake reports.
pub const FIRMWARE: &str = "14.3.0(tasmota)";
/// The only web user name firmware accepts (`WEB_USERNAME`).
pub const WEB_USER: &str = "admin";
/// Longest rule set text kept (firmware: 511 bytes, ~1000 with compression).
const MAX_RULE_LEN: usize = 1000;
/// Most commands one Backlog queue holds.
const MAX_BACKLOG: usize = 30;
/// Most rule events handled in one go: `ON Power1#State DO Power1 2 ENDON` must not hang
/// the fake (firmware would toggle forever, 50 ms at a time).
const EVENT_BUDGET: usize = 64;

/// Both clocks at one instant: `mono` (since the fake started) for timers, `wall` for the
/// `Time` fields of payloads.
#[derive(Clone, Copy, Debug)]
pub struct Now {
    pub mono: Duration,
    pub wall: Timestamp,
}

/// One MQTT message for the device to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Publish {
    pub topic: String,
    pub payload: String,
    pub retain: bool,
}

/// Persistent settings (kept in flash, so they survive a restart).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TasmotaSettings {
    /// `PowerOnState`: 0 off, 1 on, 2 toggle, 3 last state (default), 4 on (locked, not
    /// modelled: treated as 1), 5 off then on after PulseTime.
    pub power_on_state: u8,
    /// `PulseTime1` raw value: 0 off, 1..=111 tenths of a second, 112.. seconds + 100.
    pub pulse_time: u16,
    /// `TelePeriod` in seconds (10..=3600, 0 off; default 300).
    pub tele_period: u16,
    /// `PowerDelta1` raw value: 0 off, 1..=100 percent, 101.. watts + 100.
    pub power_delta: u16,
    /// `FriendlyName1`.
    pub friendly_name: String,
}

impl Default for TasmotaSettings {
    fn default() -> Self {
        Self {
            power_on_state: 3,
            pulse_time: 0,
            tele_period: 300,
            power_delta: 0,
            friendly_name: "Tasmota".into(),
        }
    }
}

/// How long PulseTime keeps the relay on for a raw `PulseTime` value; None when off.
pub fn pulse_duration(raw: u16) -> Option<Duration> {
    match raw {
        0 => None,
        1..=111 => Some(Duration::from_millis(u64::from(raw) * 100)),
        _ => Some(Duration::from_secs(u64::from(raw) - 100)),
    }
}

/// A remaining pulse as firmware reports it (`Remaining`): tenths of a second up to 11.1 s,
/// else seconds + 100.
pub fn pulse_raw(remaining: Duration) -> u32 {
    let tenths = remaining.as_millis().div_ceil(100);
    let tenths = u32::try_from(tenths).unwrap_or(u32::MAX);
    if tenths > 111 {
        tenths / 10 + 100
    } else {
        tenths
    }
}

/// A command parameter as a number the way firmware reads it (`strtol` base 0, then the
/// state words); -99 when there is none.
pub fn payload_of(data: &str) -> i64 {
    let word = data.trim().to_ascii_lowercase();
    match word.as_str() {
        "off" | "false" | "stop" => return 0,
        "on" | "true" | "start" => return 1,
        "toggle" => return 2,
        "blink" => return 3,
        "blinkoff" => return 4,
        _ => {}
    }
    let (neg, digits) = match word.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, word.strip_prefix('+').unwrap_or(&word)),
    };
    let (radix, digits) = if let Some(hex) = digits
        .strip_prefix("0x")
        .filter(|h| h.starts_with(|c: char| c.is_ascii_hexdigit()))
    {
        (16, hex)
    } else if digits.len() > 1 && digits.starts_with('0') {
        (8, &digits[1..])
    } else {
        (10, digits)
    };
    let end = digits
        .find(|c: char| !c.is_digit(radix))
        .unwrap_or(digits.len());
    if end == 0 {
        // "0" alone, or an octal "0" followed by no octal digit, is still zero.
        return if radix == 8 { 0 } else { -99 };
    }
    match i64::from_str_radix(&digits[..end], radix) {
        Ok(v) if neg => -v,
        Ok(v) => v,
        Err(_) => -99,
    }
}

/// Firmware's HTTP answer to a command: the JSON bodies it published while running the
/// command, merged into one object (`{"POWER":"ON"}`); `{}` when it published none.
pub fn http_reply(published: &[Publish]) -> String {
    let inner: Vec<&str> = published
        .iter()
        .filter_map(|p| {
            p.payload
                .trim()
                .strip_prefix('{')
                .and_then(|s| s.strip_suffix('}'))
        })
        .filter(|s| !s.trim().is_empty())
        .collect();
    format!("{{{}}}", inner.join(","))
}

fn on_off(on: bool) -> &'static str {
    if on { "ON" } else { "OFF" }
}

/// Firmware's uptime format, `1T02:03:04`.
fn uptime_text(d: Duration) -> String {
    let s = d.as_secs();
    format!(
        "{}T{:02}:{:02}:{:02}",
        s / 86_400,
        s / 3600 % 24,
        s / 60 % 60,
        s % 60
    )
}

/// The device's local time, without offset as firmware prints it. The fake's time zone
/// is UTC.
fn local_time(t: Timestamp) -> String {
    t.to_zoned(TimeZone::UTC)
        .strftime("%Y-%m-%dT%H:%M:%S")
        .to_string()
}

fn json_str(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

/// What the device knows about its MQTT setup (for `Status 6`); None = MQTT off.
#[derive(Clone, Debug)]
pub struct MqttInfo {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub client: String,
}

/// Everything a device starts from.
#[derive(Clone, Debug)]
pub struct DeviceInit {
    pub topic: String,
    pub mac: [u8; 6],
    pub settings: TasmotaSettings,
    /// Rule sets preloaded: (number 1..=3, text, enabled).
    pub rules: Vec<(u8, String, bool)>,
    /// The relay state saved before this power-up (what PowerOnState 3 restores).
    pub saved_power: bool,
    pub load_w: f64,
    pub mqtt: Option<MqttInfo>,
    /// SetOption34: pause between Backlog commands (firmware default 200 ms).
    pub backlog_delay: Duration,
    pub voltage: f64,
}

#[derive(Clone, Debug, Default)]
struct RuleSet {
    text: String,
    enabled: bool,
    once: bool,
    stop_on_error: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Event {
    SystemBoot,
    RulesTimer(u8),
    MqttConnected,
    MqttDisconnected,
    Power(bool),
}

fn fires(trigger: &Trigger, event: Event) -> bool {
    match (trigger, event) {
        (Trigger::SystemBoot, Event::SystemBoot)
        | (Trigger::MqttConnected, Event::MqttConnected)
        | (Trigger::MqttDisconnected, Event::MqttDisconnected) => true,
        (Trigger::RulesTimer(n), Event::RulesTimer(m)) => *n == m,
        (Trigger::PowerState { relay: 1, state }, Event::Power(on)) => {
            state.is_none_or(|s| s == on)
        }
        _ => false,
    }
}

/// The result of one received command.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// What `/cm` answers.
    pub reply: String,
    /// Everything to publish, the command's own replies first.
    pub publishes: Vec<Publish>,
    /// The command asked for a restart (`Restart 1`): the caller performs it.
    pub restart: bool,
}

/// One plug.
#[derive(Debug)]
pub struct Device {
    topic: String,
    mac: [u8; 6],
    mqtt: Option<MqttInfo>,
    backlog_delay: Duration,
    voltage: f64,
    // Persistent.
    settings: TasmotaSettings,
    rules: [RuleSet; 3],
    saved_power: bool,
    boot_count: u32,
    total_wh: f64,
    today_wh: f64,
    yesterday_wh: f64,
    total_start: Timestamp,
    day: Date,
    // RAM.
    power: bool,
    load_w: f64,
    booted_at: Duration,
    booted_wall: Timestamp,
    initial_connect: bool,
    mqtt_connected: bool,
    mqtt_count: u32,
    rule_timers: [Option<Duration>; 8],
    pulse_until: Option<Duration>,
    backlog: VecDeque<String>,
    backlog_at: Duration,
    backlog_nodelay: bool,
    next_tele: Option<Duration>,
    last_energy_at: Duration,
    period_wh: f64,
    reported_power: f64,
    delta_check: bool,
    events: VecDeque<Event>,
    restart_requested: bool,
}

impl Device {
    /// A device as it comes out of the factory with `init` applied, not yet booted: call
    /// [`Device::boot`] next.
    pub fn new(init: DeviceInit, now: Now) -> Self {
        let mut rules: [RuleSet; 3] = Default::default();
        for (n, text, enabled) in init.rules {
            if let Some(set) = rules.get_mut(usize::from(n).wrapping_sub(1)) {
                set.text = text;
                set.enabled = enabled;
            }
        }
        Self {
            topic: init.topic,
            mac: init.mac,
            mqtt: init.mqtt,
            backlog_delay: init.backlog_delay,
            voltage: init.voltage,
            settings: init.settings,
            rules,
            saved_power: init.saved_power,
            boot_count: 0,
            total_wh: 0.0,
            today_wh: 0.0,
            yesterday_wh: 0.0,
            total_start: now.wall,
            day: now.wall.to_zoned(TimeZone::UTC).date(),
            power: init.saved_power,
            load_w: init.load_w.max(0.0),
            booted_at: now.mono,
            booted_wall: now.wall,
            initial_connect: true,
            mqtt_connected: false,
            mqtt_count: 0,
            rule_timers: [None; 8],
            pulse_until: None,
            backlog: VecDeque::new(),
            backlog_at: now.mono,
            backlog_nodelay: false,
            next_tele: None,
            last_energy_at: now.mono,
            period_wh: 0.0,
            reported_power: 0.0,
            delta_check: false,
            events: VecDeque::new(),
            restart_requested: false,
        }
    }

    pub fn power(&self) -> bool {
        self.power
    }

    /// The power drawn now: the load when the relay is on.
    pub fn power_w(&self) -> f64 {
        if self.power { self.load_w } else { 0.0 }
    }

    pub fn settings(&self) -> TasmotaSettings {
        self.settings.clone()
    }

    /// (number, text, enabled) of Rule1..3.
    pub fn rules(&self) -> Vec<(u8, String, bool)> {
        (1u8..)
            .zip(self.rules.iter())
            .map(|(n, r)| (n, r.text.clone(), r.enabled))
            .collect()
    }

    /// Seconds left on each RuleTimer (None = not running).
    pub fn rule_timers(&self, now: Now) -> [Option<Duration>; 8] {
        self.rule_timers
            .map(|t| t.map(|t| t.saturating_sub(now.mono)))
    }

    /// Total energy counted, in Wh.
    pub fn total_wh(&self) -> f64 {
        self.total_wh
    }

    /// Power-up (first start or a restart): RAM state is lost, the relay is set by
    /// PowerOnState, and System#Boot waits for the first MQTT connection (firmware raises
    /// it there; at once when MQTT is off).
    pub fn boot(&mut self, now: Now) -> Vec<Publish> {
        self.integrate(now);
        self.rule_timers = [None; 8];
        self.backlog.clear();
        self.events.clear();
        self.pulse_until = None;
        self.booted_at = now.mono;
        self.booted_wall = now.wall;
        self.mqtt_connected = false;
        self.mqtt_count = 0;
        self.initial_connect = true;
        self.restart_requested = false;
        self.boot_count += 1;
        self.power = match self.settings.power_on_state {
            0 | 5 => false,
            1 | 4 => true,
            2 => !self.saved_power,
            _ => self.saved_power,
        };
        self.saved_power = self.power;
        let pulse = pulse_duration(self.settings.pulse_time);
        if self.power || self.settings.power_on_state == 5 {
            self.pulse_until = pulse.map(|d| now.mono + d);
        }
        self.reported_power = self.power_w();
        self.next_tele = None;
        let mut out = Vec::new();
        if self.mqtt.is_none() {
            self.initial_connect = false;
            self.next_tele = self.tele_every().map(|p| now.mono + p);
            self.events.push_back(Event::SystemBoot);
            self.settle(now, &mut out);
        }
        out
    }

    fn tele_every(&self) -> Option<Duration> {
        (self.settings.tele_period > 0)
            .then(|| Duration::from_secs(u64::from(self.settings.tele_period)))
    }

    /// The broker accepted the connection (and the caller subscribed to `cmnd/<t>/#`).
    pub fn mqtt_connected(&mut self, now: Now) -> Vec<Publish> {
        let mut out = vec![self.tele("LWT", "Online".into(), true)];
        self.mqtt_connected = true;
        self.mqtt_count += 1;
        if self.initial_connect {
            self.initial_connect = false;
            out.push(self.tele("INFO1", self.info1(), false));
            out.push(self.tele("INFO2", self.info2(), false));
            out.push(self.tele(
                "INFO3",
                format!(
                    r#"{{"Info3":{{"RestartReason":"Power On","BootCount":{}}}}}"#,
                    self.boot_count
                ),
                false,
            ));
            self.show_power(&mut out);
            // Firmware: "Enable TelePeriod in 5 seconds".
            self.next_tele = self
                .tele_every()
                .map(|p| now.mono + p.min(Duration::from_secs(5)));
            self.events.push_back(Event::SystemBoot);
        }
        self.events.push_back(Event::MqttConnected);
        self.settle(now, &mut out);
        out
    }

    /// The broker connection was lost (what is returned cannot be delivered; rules still
    /// run).
    pub fn mqtt_disconnected(&mut self, now: Now) -> Vec<Publish> {
        let mut out = Vec::new();
        if self.mqtt_connected {
            self.mqtt_connected = false;
            self.events.push_back(Event::MqttDisconnected);
            self.settle(now, &mut out);
        }
        out
    }

    /// The local button: toggles the relay (PulseTime applies too).
    pub fn press_button(&mut self, now: Now) -> Vec<Publish> {
        let mut out = Vec::new();
        self.set_power(!self.power, true, now, &mut out);
        self.settle(now, &mut out);
        out
    }

    /// The appliance behind the plug now draws `watts` when powered.
    pub fn set_load(&mut self, watts: f64, now: Now) -> Vec<Publish> {
        self.integrate(now);
        self.load_w = if watts.is_finite() {
            watts.max(0.0)
        } else {
            0.0
        };
        self.delta_check = true;
        let mut out = Vec::new();
        self.settle(now, &mut out);
        out
    }

    /// Run one command line received over MQTT or HTTP.
    pub fn command(&mut self, line: &str, now: Now) -> Outcome {
        self.integrate(now);
        let mut publishes = Vec::new();
        self.exec(line, now, &mut publishes);
        let reply = http_reply(&publishes);
        self.settle(now, &mut publishes);
        Outcome {
            reply,
            publishes,
            restart: std::mem::take(&mut self.restart_requested),
        }
    }

    /// A restart asked for by a command run from a rule or the Backlog.
    pub fn take_restart(&mut self) -> bool {
        std::mem::take(&mut self.restart_requested)
    }

    /// When [`Device::tick`] next has something to do.
    pub fn next_deadline(&self) -> Option<Duration> {
        let backlog = (!self.backlog.is_empty()).then_some(self.backlog_at);
        self.rule_timers
            .iter()
            .flatten()
            .copied()
            .chain(self.pulse_until)
            .chain(backlog)
            .chain(self.next_tele)
            .min()
    }

    /// Let time pass: PulseTime, RuleTimers, the Backlog queue, telemetry.
    pub fn tick(&mut self, now: Now) -> Vec<Publish> {
        let mut out = Vec::new();
        self.integrate(now);
        if self.pulse_until.is_some_and(|t| t <= now.mono) {
            self.pulse_until = None;
            // PowerOnState 5 inverts PulseTime: it switches on when it runs out.
            let target = self.settings.power_on_state == 5;
            self.set_power(target, false, now, &mut out);
        }
        for (n, timer) in (1u8..).zip(self.rule_timers.iter_mut()) {
            if timer.is_some_and(|t| t <= now.mono) {
                *timer = None;
                self.events.push_back(Event::RulesTimer(n));
            }
        }
        self.settle(now, &mut out);
        while !self.backlog.is_empty() && self.backlog_at <= now.mono {
            if let Some(line) = self.backlog.pop_front() {
                self.exec(&line, now, &mut out);
                self.settle(now, &mut out);
            }
            if !self.backlog_nodelay {
                self.backlog_at = now.mono + self.backlog_delay;
                if !self.backlog_delay.is_zero() {
                    break;
                }
            }
        }
        if self.next_tele.is_some_and(|t| t <= now.mono) {
            out.push(self.tele("STATE", self.state_json(now), false));
            out.push(self.tele("SENSOR", self.sensor_json(now, true), false));
            self.period_wh = 0.0;
            self.reported_power = self.power_w();
            self.next_tele = self.tele_every().map(|p| now.mono + p);
        }
        out
    }

    // ---- commands ---------------------------------------------------------------------

    fn exec(&mut self, line: &str, now: Now, out: &mut Vec<Publish>) {
        let Some(cmd) = Command::parse(line) else {
            return;
        };
        let name = cmd.name.to_ascii_uppercase();
        let user_index = cmd.index.is_some();
        let index = cmd.index.unwrap_or(1);
        let data = if cmd.param == "?" {
            ""
        } else {
            cmd.param.as_str()
        };
        let payload = payload_of(data);
        let given = !data.is_empty();
        match name.as_str() {
            "BACKLOG" => self.cmd_backlog(index, data, now, out),
            "POWER" if index <= 1 => match payload {
                0 => self.set_power(false, true, now, out),
                1 => self.set_power(true, true, now, out),
                2 => self.set_power(!self.power, true, now, out),
                _ => self.show_power(out),
            },
            "PULSETIME" if index == 1 => {
                if given && (0..=65535).contains(&payload) {
                    self.settings.pulse_time = u16::try_from(payload).unwrap_or(0);
                    // Firmware stops a running pulse when the setting changes.
                    self.pulse_until = None;
                }
                let left = self
                    .pulse_until
                    .map_or(0, |t| pulse_raw(t.saturating_sub(now.mono)));
                out.push(self.stat(
                    "RESULT",
                    format!(
                        r#"{{"PulseTime1":{{"Set":{},"Remaining":{left}}}}}"#,
                        self.settings.pulse_time
                    ),
                ));
            }
            "POWERONSTATE" => {
                if given && (0..=5).contains(&payload) {
                    self.settings.power_on_state = u8::try_from(payload).unwrap_or(3);
                }
                out.push(self.stat(
                    "RESULT",
                    format!(r#"{{"PowerOnState":{}}}"#, self.settings.power_on_state),
                ));
            }
            "TELEPERIOD" => {
                if given && (0..=3600).contains(&payload) {
                    let p = u16::try_from(payload).unwrap_or(300);
                    self.settings.tele_period = match p {
                        1 => 300,
                        2..=9 => 10,
                        p => p,
                    };
                    // Firmware sends telemetry a second later.
                    self.next_tele =
                        (self.settings.tele_period > 0).then(|| now.mono + Duration::from_secs(1));
                }
                out.push(self.stat(
                    "RESULT",
                    format!(r#"{{"TelePeriod":{}}}"#, self.settings.tele_period),
                ));
            }
            "POWERDELTA" if index == 1 => {
                if given && (0..=32000).contains(&payload) {
                    self.settings.power_delta = u16::try_from(payload).unwrap_or(0);
                }
                out.push(self.stat(
                    "RESULT",
                    format!(r#"{{"PowerDelta1":{}}}"#, self.settings.power_delta),
                ));
            }
            "STATUS" => {
                let p = if user_index && index == 0 { 0 } else { payload };
                self.cmd_status(p, now, out);
            }
            "STATE" => out.push(self.stat("RESULT", self.state_json(now))),
            "RULETIMER" if index <= 8 => {
                if given {
                    let at = (payload > 0)
                        .then(|| now.mono + Duration::from_secs(payload.unsigned_abs()));
                    if index == 0 {
                        self.rule_timers = [at; 8];
                    } else if let Some(t) = self.rule_timers.get_mut(index as usize - 1) {
                        *t = at;
                    }
                }
                let list: Vec<String> = (1..)
                    .zip(self.rule_timers.iter())
                    .map(|(n, t)| {
                        let left = t.map_or(0, |t| t.saturating_sub(now.mono).as_secs());
                        format!(r#""T{n}":{left}"#)
                    })
                    .collect();
                out.push(self.stat("RESULT", format!("{{{}}}", list.join(","))));
            }
            "RULE" if index <= 3 => self.cmd_rule(index, data, payload, out),
            "RESTART" => {
                let text = if payload == 1 {
                    self.restart_requested = true;
                    "Restarting"
                } else {
                    "1 to restart"
                };
                out.push(self.stat("RESULT", format!(r#"{{"Restart":"{text}"}}"#)));
            }
            "TOPIC" => out.push(self.stat(
                "RESULT",
                format!(r#"{{"Topic":{}}}"#, json_str(&self.topic)),
            )),
            "FRIENDLYNAME" if index == 1 => {
                if given {
                    self.settings.friendly_name = data.to_owned();
                }
                out.push(self.stat(
                    "RESULT",
                    format!(
                        r#"{{"FriendlyName1":{}}}"#,
                        json_str(&self.settings.friendly_name)
                    ),
                ));
            }
            "POWER" | "PULSETIME" | "POWERDELTA" | "RULETIMER" | "RULE" | "FRIENDLYNAME" => {
                // A known command with an index this one-relay device does not have.
                out.push(self.stat("RESULT", r#"{"Command":"Error"}"#.into()));
            }
            _ => out.push(self.stat("RESULT", r#"{"Command":"Unknown"}"#.into())),
        }
    }

    fn cmd_backlog(&mut self, index: u32, data: &str, now: Now, out: &mut Vec<Publish>) {
        if data.is_empty() {
            let text = if self.backlog.is_empty() {
                "Empty"
            } else {
                "Aborted"
            };
            self.backlog.clear();
            out.push(self.stat("RESULT", format!(r#"{{"Backlog":"{text}"}}"#)));
            return;
        }
        // Backlog0 and Backlog2 run without the pause between commands.
        self.backlog_nodelay = index.is_multiple_of(2);
        for line in split_backlog(data) {
            let reset = line
                .get(..5)
                .is_some_and(|w| w.eq_ignore_ascii_case("reset"));
            if self.backlog.len() < MAX_BACKLOG && !reset {
                self.backlog.push_back(line);
            }
        }
        // Queued: the commands run from the main loop, after this reply (which is empty).
        self.backlog_at = now.mono;
    }

    fn cmd_status(&mut self, payload: i64, now: Now, out: &mut Vec<Publish>) {
        match payload {
            -99 => out.push(self.stat("STATUS", self.status_part(0, now))),
            0 => {
                let all: Vec<String> = (0..=11u8)
                    .filter(|n| *n != 10)
                    .map(|n| self.status_part(n, now))
                    .collect();
                // Firmware glues the parts together with `}{` → `,`.
                out.push(self.stat("STATUS0", all.concat().replace("}{", ",")));
            }
            1..=11 => {
                let n = u8::try_from(payload).unwrap_or(0);
                out.push(self.stat(&format!("STATUS{n}"), self.status_part(n, now)));
            }
            _ => out.push(self.stat("RESULT", r#"{"Command":"Error"}"#.into())),
        }
    }

    fn cmd_rule(&mut self, index: u32, data: &str, payload: i64, out: &mut Vec<Publish>) {
        let flag = (!data.is_empty() && (0..=10).contains(&payload)).then_some(payload);
        if index == 0 {
            for n in 1..=3 {
                if let Some(f) = flag {
                    self.rule_flag(n, f);
                }
                out.push(self.stat("RESULT", self.rule_json(n)));
            }
            return;
        }
        let n = index as usize;
        if let Some(f) = flag {
            self.rule_flag(n, f);
        } else if !data.is_empty() {
            let set = &mut self.rules[n - 1];
            let text = if let Some(more) = data.strip_prefix('+') {
                format!("{} {more}", set.text)
            } else if data.starts_with('"') {
                String::new()
            } else {
                data.to_owned()
            };
            // Firmware logs "RUL: Not enough space" and keeps the old text.
            if text.len() <= MAX_RULE_LEN {
                set.text = text;
            }
        }
        out.push(self.stat("RESULT", self.rule_json(n)));
    }

    fn rule_flag(&mut self, n: usize, flag: i64) {
        let set = &mut self.rules[n - 1];
        match flag {
            0 | 1 => set.enabled = flag == 1,
            2 => set.enabled = !set.enabled,
            4 | 5 => set.once = flag == 5,
            6 => set.once = !set.once,
            8 | 9 => set.stop_on_error = flag == 9,
            10 => set.stop_on_error = !set.stop_on_error,
            _ => {}
        }
    }

    fn rule_json(&self, n: usize) -> String {
        let set = &self.rules[n - 1];
        format!(
            r#"{{"Rule{n}":{{"State":"{}","Once":"{}","StopOnError":"{}","Length":{},"Free":{},"Rules":{}}}}}"#,
            on_off(set.enabled),
            on_off(set.once),
            on_off(set.stop_on_error),
            set.text.len(),
            511usize.saturating_sub(set.text.len()),
            json_str(&set.text)
        )
    }

    /// Switch the relay; `restart_pulse`: a Power ON (from a command or the button)
    /// (re)starts PulseTime, its own expiry does not.
    fn set_power(&mut self, on: bool, restart_pulse: bool, now: Now, out: &mut Vec<Publish>) {
        self.integrate(now);
        let changed = self.power != on;
        self.power = on;
        if !on {
            self.pulse_until = None;
        } else if restart_pulse {
            self.pulse_until = pulse_duration(self.settings.pulse_time).map(|d| now.mono + d);
        }
        // SaveState (SetOption0, default on) keeps the last state for PowerOnState 3.
        self.saved_power = on;
        self.show_power(out);
        if changed {
            self.events.push_back(Event::Power(on));
            self.delta_check = true;
        }
    }

    fn show_power(&self, out: &mut Vec<Publish>) {
        out.push(self.stat("RESULT", format!(r#"{{"POWER":"{}"}}"#, on_off(self.power))));
        out.push(self.stat("POWER", on_off(self.power).into()));
    }

    /// Run the rules for queued events, then a PowerDelta report if one is due.
    fn settle(&mut self, now: Now, out: &mut Vec<Publish>) {
        let mut budget = EVENT_BUDGET;
        while let Some(event) = self.events.pop_front() {
            if budget == 0 {
                self.events.clear();
                break;
            }
            budget -= 1;
            self.run_rules(event, now, out);
        }
        if std::mem::take(&mut self.delta_check) {
            self.check_power_delta(now, out);
        }
    }

    fn run_rules(&mut self, event: Event, now: Now, out: &mut Vec<Publish>) {
        let enabled: Vec<String> = self
            .rules
            .iter()
            .filter(|r| r.enabled)
            .map(|r| r.text.clone())
            .collect();
        for text in enabled {
            // Firmware stops reading a set at its first malformed rule.
            let (rules, _malformed) = parse_rules_prefix(&text);
            for rule in rules {
                if !fires(&rule.trigger, event) {
                    continue;
                }
                if rule.backlog {
                    for action in &rule.actions {
                        if self.backlog.len() < MAX_BACKLOG {
                            self.backlog.push_back(action.to_string());
                        }
                    }
                    self.backlog_nodelay = false;
                    self.backlog_at = now.mono;
                } else {
                    for action in &rule.actions {
                        self.exec(&action.to_string(), now, out);
                    }
                }
                if rule.stop {
                    break;
                }
            }
        }
    }

    // ---- energy -----------------------------------------------------------------------

    fn integrate(&mut self, now: Now) {
        let dt = now.mono.saturating_sub(self.last_energy_at);
        self.last_energy_at = self.last_energy_at.max(now.mono);
        let day = now.wall.to_zoned(TimeZone::UTC).date();
        if day != self.day {
            self.yesterday_wh = self.today_wh;
            self.today_wh = 0.0;
            self.day = day;
        }
        let wh = self.power_w() * dt.as_secs_f64() / 3600.0;
        self.total_wh += wh;
        self.today_wh += wh;
        self.period_wh += wh;
    }

    fn check_power_delta(&mut self, now: Now, out: &mut Vec<Publish>) {
        let delta = f64::from(self.settings.power_delta);
        if delta == 0.0 {
            return;
        }
        let p = self.power_w();
        let diff = (p - self.reported_power).abs();
        let limit = if delta <= 100.0 {
            self.reported_power * delta / 100.0
        } else {
            delta - 100.0
        };
        if diff > 0.0 && diff > limit {
            out.push(self.tele("SENSOR", self.sensor_json(now, true), false));
            self.reported_power = p;
        }
    }

    fn energy_json(&self, period: bool) -> String {
        let p = self.power_w();
        let current = if self.voltage > 0.0 {
            p / self.voltage
        } else {
            0.0
        };
        let factor = if p > 0.0 { 1.0 } else { 0.0 };
        let period = if period {
            format!(r#""Period":{:.0},"#, self.period_wh)
        } else {
            String::new()
        };
        format!(
            r#"{{"TotalStartTime":"{}","Total":{:.3},"Yesterday":{:.3},"Today":{:.3},{period}"Power":{:.0},"ApparentPower":{:.0},"ReactivePower":0,"Factor":{factor:.2},"Voltage":{:.0},"Current":{current:.3}}}"#,
            local_time(self.total_start),
            self.total_wh / 1000.0,
            self.yesterday_wh / 1000.0,
            self.today_wh / 1000.0,
            p,
            p,
            self.voltage,
        )
    }

    fn sensor_json(&self, now: Now, period: bool) -> String {
        format!(
            r#"{{"Time":"{}","ENERGY":{}}}"#,
            local_time(now.wall),
            self.energy_json(period)
        )
    }

    // ---- payloads ---------------------------------------------------------------------

    fn stat(&self, name: &str, payload: String) -> Publish {
        Publish {
            topic: format!("stat/{}/{name}", self.topic),
            payload,
            retain: false,
        }
    }

    fn tele(&self, name: &str, payload: String, retain: bool) -> Publish {
        Publish {
            topic: format!("tele/{}/{name}", self.topic),
            payload,
            retain,
        }
    }

    fn mac_text(&self, sep: &str) -> String {
        self.mac
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<Vec<_>>()
            .join(sep)
    }

    fn chip(&self) -> String {
        format!("{:02X}{:02X}{:02X}", self.mac[3], self.mac[4], self.mac[5])
    }

    fn hostname(&self) -> String {
        let n = (u16::from(self.mac[4]) << 8 | u16::from(self.mac[5])) & 0x1FFF;
        format!("tasmota-{}-{n:04}", self.chip())
    }

    fn info1(&self) -> String {
        format!(
            r#"{{"Info1":{{"Module":"Generic","Version":"{FIRMWARE}","FallbackTopic":"cmnd/DVES_{}_fb/","GroupTopic":"cmnd/tasmotas/"}}}}"#,
            self.chip()
        )
    }

    fn info2(&self) -> String {
        format!(
            r#"{{"Info2":{{"WebServerMode":"Admin","Hostname":"{}","IPAddress":"127.0.0.1"}}}}"#,
            self.hostname()
        )
    }

    fn state_json(&self, now: Now) -> String {
        let up = now.mono.saturating_sub(self.booted_at);
        format!(
            r#"{{"Time":"{}","Uptime":"{}","UptimeSec":{},"Heap":25,"SleepMode":"Dynamic","Sleep":50,"LoadAvg":19,"MqttCount":{},"POWER":"{}","Wifi":{{"AP":1,"SSId":"venue-iot","BSSId":"AA:BB:CC:00:00:01","Channel":6,"Mode":"11n","RSSI":86,"Signal":-57,"LinkCount":1,"Downtime":"0T00:00:03"}}}}"#,
            local_time(now.wall),
            uptime_text(up),
            up.as_secs(),
            self.mqtt_count,
            on_off(self.power)
        )
    }

    /// One `Status <n>` object, e.g. `{"StatusSNS":{...}}`; 0 is the plain `Status` one.
    fn status_part(&self, n: u8, now: Now) -> String {
        let s = &self.settings;
        let up = now.mono.saturating_sub(self.booted_at);
        match n {
            0 => format!(
                r#"{{"Status":{{"Module":0,"DeviceName":{name},"FriendlyName":[{name}],"Topic":{},"ButtonTopic":"0","Power":"{}","PowerLock":"0","PowerOnState":{},"LedState":1,"LedMask":"FFFF","SaveData":1,"SaveState":1,"SwitchTopic":"0","SwitchMode":[0,0,0,0,0,0,0,0],"ButtonRetain":0,"SwitchRetain":0,"SensorRetain":0,"PowerRetain":0,"InfoRetain":0,"StateRetain":0,"StatusRetain":0}}}}"#,
                json_str(&self.topic),
                u8::from(self.power),
                s.power_on_state,
                name = json_str(&s.friendly_name),
            ),
            1 => format!(
                r#"{{"StatusPRM":{{"Baudrate":115200,"SerialConfig":"8N1","GroupTopic":"tasmotas","OtaUrl":"http://ota.tasmota.com/tasmota/release/tasmota.bin.gz","RestartReason":"Power On","Uptime":"{}","StartupUTC":"{}","Sleep":50,"CfgHolder":4617,"BootCount":{},"BCResetTime":"{}","SaveCount":{},"SaveAddress":"F9000"}}}}"#,
                uptime_text(up),
                local_time(self.booted_wall),
                self.boot_count,
                local_time(self.total_start),
                self.boot_count + 10,
            ),
            2 => format!(
                r#"{{"StatusFWR":{{"Version":"{FIRMWARE}","BuildDateTime":"2024-10-08T10:00:00","Boot":31,"Core":"2_7_7","SDK":"2.2.2-dev(38a443e)","CpuFrequency":80,"Hardware":"ESP8266EX","CR":"378/699"}}}}"#
            ),
            3 => format!(
                r#"{{"StatusLOG":{{"SerialLog":2,"WebLog":2,"MqttLog":0,"SysLog":0,"LogHost":"","LogPort":514,"SSId":["venue-iot",""],"TelePeriod":{},"Resolution":"558180C0","SetOption":["00008009","2805C80001000600003C5A0A192800000000","00000080","00006000","00004000","00000000"]}}}}"#,
                s.tele_period
            ),
            4 => r#"{"StatusMEM":{"ProgramSize":627,"Free":372,"Heap":25,"ProgramFlashSize":1024,"FlashSize":1024,"FlashChipId":"1540A1","FlashFrequency":40,"FlashMode":"DOUT","Features":["0000080F","B7F7BFCF","05DA9BC0","37EFFFFF","01000000","00000000","00000000","00000000","00000000","00000000"],"Drivers":"1,2,3,4,5,6,7,8,9,10,12,16,18,19,20,21,22,24,26,27,29,30,35,37,45,62","Sensors":"1,2,3,4,5,6"}}"#.to_owned(),
            5 => format!(
                r#"{{"StatusNET":{{"Hostname":"{}","IPAddress":"127.0.0.1","Gateway":"127.0.0.1","Subnetmask":"255.0.0.0","DNSServer1":"127.0.0.1","DNSServer2":"0.0.0.0","Mac":"{}","Webserver":2,"HTTP_API":1,"WifiConfig":4,"WifiPower":17.0}}}}"#,
                self.hostname(),
                self.mac_text(":")
            ),
            6 => {
                let (host, port, user, client) = match &self.mqtt {
                    Some(m) => (m.host.clone(), m.port, m.user.clone(), m.client.clone()),
                    None => (String::new(), 1883, String::new(), format!("DVES_{}", self.chip())),
                };
                format!(
                    r#"{{"StatusMQT":{{"MqttHost":{},"MqttPort":{port},"MqttClientMask":"DVES_%06X","MqttClient":{},"MqttUser":{},"MqttCount":{},"MAX_PACKET_SIZE":1200,"KEEPALIVE":30,"SOCKET_TIMEOUT":4}}}}"#,
                    json_str(&host),
                    json_str(&client),
                    json_str(&user),
                    self.mqtt_count
                )
            }
            7 => {
                let utc = now
                    .wall
                    .to_zoned(TimeZone::UTC)
                    .strftime("%Y-%m-%dT%H:%M:%SZ")
                    .to_string();
                format!(
                    r#"{{"StatusTIM":{{"UTC":"{utc}","Local":"{}","StartDST":"2026-03-29T02:00:00","EndDST":"2026-10-25T03:00:00","Timezone":"+00:00","Sunrise":"08:00","Sunset":"16:30"}}}}"#,
                    local_time(now.wall)
                )
            }
            8 | 10 => format!(
                r#"{{"StatusSNS":{{"Time":"{}","ENERGY":{}}}}}"#,
                local_time(now.wall),
                self.energy_json(false)
            ),
            9 => format!(
                r#"{{"StatusPTH":{{"PowerDelta":[{}],"PowerLow":0,"PowerHigh":0,"VoltageLow":0,"VoltageHigh":0,"CurrentLow":0,"CurrentHigh":0}}}}"#,
                s.power_delta
            ),
            _ => format!(r#"{{"StatusSTS":{}}}"#, self.state_json(now)),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::Value;

    fn t(secs: u64) -> Now {
        let base: Timestamp = "2026-11-23T18:00:00Z".parse().unwrap();
        Now {
            mono: Duration::from_secs(secs),
            wall: base + jiff::SignedDuration::from_secs(secs as i64),
        }
    }

    fn ms(millis: u64) -> Now {
        let mut n = t(0);
        n.mono = Duration::from_millis(millis);
        n
    }

    fn init(mqtt: bool) -> DeviceInit {
        DeviceInit {
            topic: "tasmota_AABBCC".into(),
            mac: [0xDE, 0xAD, 0xBE, 0xAA, 0xBB, 0xCC],
            settings: TasmotaSettings::default(),
            rules: vec![],
            saved_power: false,
            load_w: 100.0,
            mqtt: mqtt.then(|| MqttInfo {
                host: "127.0.0.1".into(),
                port: 1883,
                user: "device:plug".into(),
                client: "DVES_AABBCC".into(),
            }),
            backlog_delay: Duration::from_millis(200),
            voltage: 230.0,
        }
    }

    fn booted(mqtt: bool) -> Device {
        let mut d = Device::new(init(mqtt), t(0));
        d.boot(t(0));
        d
    }

    fn topics(p: &[Publish]) -> Vec<(String, String)> {
        p.iter()
            .map(|p| (p.topic.clone(), p.payload.clone()))
            .collect()
    }

    fn json(s: &str) -> Value {
        serde_json::from_str(s).unwrap()
    }

    #[test]
    fn pulse_time_arithmetic() {
        assert_eq!(pulse_duration(0), None);
        assert_eq!(pulse_duration(1), Some(Duration::from_millis(100)));
        assert_eq!(pulse_duration(111), Some(Duration::from_millis(11_100)));
        assert_eq!(pulse_duration(112), Some(Duration::from_secs(12)));
        assert_eq!(pulse_duration(113), Some(Duration::from_secs(13)));
        assert_eq!(pulse_duration(460), Some(Duration::from_secs(360)));
        assert_eq!(pulse_duration(64900), Some(Duration::from_secs(64800)));
        assert_eq!(pulse_raw(Duration::from_millis(5_000)), 50);
        assert_eq!(pulse_raw(Duration::from_millis(11_100)), 111);
        assert_eq!(pulse_raw(Duration::from_secs(13)), 113);
        assert_eq!(pulse_raw(Duration::ZERO), 0);
    }

    #[test]
    fn payloads_parse_like_strtol_and_state_words() {
        assert_eq!(payload_of("ON"), 1);
        assert_eq!(payload_of("off"), 0);
        assert_eq!(payload_of("Toggle"), 2);
        assert_eq!(payload_of("true"), 1);
        assert_eq!(payload_of("120"), 120);
        assert_eq!(payload_of("0x10"), 16);
        assert_eq!(payload_of("010"), 8);
        assert_eq!(payload_of("0"), 0);
        assert_eq!(payload_of("-5"), -5);
        assert_eq!(payload_of(""), -99);
        assert_eq!(payload_of("maybe"), -99);
        assert_eq!(payload_of("2 seconds"), 2);
        assert_eq!(payload_of("OFF; RuleTimer1 0"), -99);
    }

    #[test]
    fn power_replies_on_result_and_power_and_over_http() {
        let mut d = booted(true);
        let o = d.command("Power ON", t(1));
        assert_eq!(o.reply, r#"{"POWER":"ON"}"#);
        assert_eq!(
            topics(&o.publishes),
            vec![
                (
                    "stat/tasmota_AABBCC/RESULT".into(),
                    r#"{"POWER":"ON"}"#.into()
                ),
                ("stat/tasmota_AABBCC/POWER".into(), "ON".into()),
            ]
        );
        assert!(d.power());
        assert_eq!(d.power_w(), 100.0);
        assert_eq!(d.command("Power1 2", t(2)).reply, r#"{"POWER":"OFF"}"#);
        assert_eq!(d.command("power", t(3)).reply, r#"{"POWER":"OFF"}"#);
        assert_eq!(d.command("Power1 maybe", t(3)).reply, r#"{"POWER":"OFF"}"#);
        assert_eq!(d.command("Power2 ON", t(3)).reply, r#"{"Command":"Error"}"#);
        assert_eq!(d.command("Fnord 1", t(3)).reply, r#"{"Command":"Unknown"}"#);
        assert!(!d.power());
    }

    #[test]
    fn pulse_time_switches_off_and_power_on_restarts_it() {
        let mut d = booted(true);
        let o = d.command("PulseTime1 113", t(0));
        assert_eq!(
            json(&o.reply),
            json(r#"{"PulseTime1":{"Set":113,"Remaining":0}}"#)
        );
        d.command("Power1 ON", t(0));
        assert_eq!(d.next_deadline(), Some(Duration::from_secs(13)));
        assert_eq!(
            json(&d.command("PulseTime1", t(3)).reply)["PulseTime1"]["Remaining"],
            100,
            "10 s left, in tenths"
        );
        // A Power ON while on restarts the pulse.
        d.command("Power1 ON", t(10));
        assert!(d.tick(t(20)).is_empty());
        assert!(d.power());
        let out = d.tick(t(23));
        assert!(!d.power());
        assert!(out.contains(&Publish {
            topic: "stat/tasmota_AABBCC/POWER".into(),
            payload: "OFF".into(),
            retain: false
        }));
        // Tenths of a second below 112.
        d.command("PulseTime 5", t(30));
        d.command("Power 1", t(30));
        d.tick(ms(30_400));
        assert!(d.power());
        d.tick(ms(30_500));
        assert!(!d.power());
        // Changing the setting stops a running pulse.
        d.command("PulseTime 200", t(40));
        d.command("Power 1", t(40));
        d.command("PulseTime 0", t(41));
        d.tick(t(500));
        assert!(d.power());
    }

    #[test]
    fn the_dead_man_rule_runs_when_mqtt_connects_and_the_timer_ends() {
        let mut d = booted(true);
        d.command(
            "Rule1 ON System#Boot DO RuleTimer1 2 ENDON ON Rules#Timer=1 DO Power1 OFF ENDON",
            t(0),
        );
        let o = d.command("Rule1 1", t(0));
        let v = json(&o.reply);
        assert_eq!(v["Rule1"]["State"], "ON");
        assert!(
            v["Rule1"]["Rules"]
                .as_str()
                .unwrap()
                .starts_with("ON System#Boot")
        );
        d.command("Power ON", t(0));
        // Restart: RAM lost, power kept (PowerOnState 3), System#Boot waits for MQTT.
        d.boot(t(1));
        assert!(d.power());
        assert_eq!(d.rule_timers(t(1))[0], None);
        let out = d.mqtt_connected(t(2));
        assert_eq!(out[0].topic, "tele/tasmota_AABBCC/LWT");
        assert_eq!(out[0].payload, "Online");
        assert!(out[0].retain);
        assert_eq!(d.rule_timers(t(2))[0], Some(Duration::from_secs(2)));
        // The controller re-arms...
        let o = d.command("RuleTimer1 2", t(3));
        assert_eq!(json(&o.reply)["T1"], 2);
        d.tick(t(4));
        assert!(d.power());
        // ...then stops: off when the timer runs out.
        let out = d.tick(t(5));
        assert!(!d.power());
        assert!(topics(&out).contains(&("stat/tasmota_AABBCC/POWER".into(), "OFF".into())));
        // A reconnect is not a boot.
        d.command("Power ON", t(6));
        d.mqtt_disconnected(t(7));
        d.mqtt_connected(t(8));
        assert_eq!(d.rule_timers(t(8))[0], None);
    }

    #[test]
    fn broker_loss_rule_and_power_state_trigger() {
        let mut d = booted(true);
        d.mqtt_connected(t(0));
        d.command(
            "Rule2 ON Mqtt#Disconnected DO RuleTimer2 300 ENDON ON Mqtt#Connected DO RuleTimer2 0 ENDON ON Rules#Timer=2 DO Power1 OFF ENDON",
            t(0),
        );
        d.command("Rule2 on", t(0));
        d.command("Rule3 ON Power1#State=1 DO RuleTimer3 60 ENDON", t(0));
        d.command("Rule3 1", t(0));
        d.command("Power ON", t(0));
        assert_eq!(d.rule_timers(t(0))[2], Some(Duration::from_secs(60)));
        d.mqtt_disconnected(t(10));
        assert_eq!(d.rule_timers(t(10))[1], Some(Duration::from_secs(300)));
        d.mqtt_connected(t(20));
        assert_eq!(d.rule_timers(t(20))[1], None);
        d.mqtt_disconnected(t(30));
        d.tick(t(329));
        assert!(d.power());
        d.tick(t(330));
        assert!(!d.power());
        // Disabled sets do nothing.
        d.command("Rule3 0", t(331));
        d.command("Power ON", t(331));
        assert_eq!(d.rule_timers(t(331))[2], None);
    }

    #[test]
    fn backlog_is_queued_and_run_200ms_apart() {
        let mut d = booted(true);
        let o = d.command("Backlog Power ON; RuleTimer1 5; Status 8", ms(0));
        assert_eq!(o.reply, "{}");
        assert!(o.publishes.is_empty());
        assert_eq!(d.next_deadline(), Some(Duration::ZERO));
        let out = d.tick(ms(0));
        assert!(d.power());
        assert_eq!(out.len(), 2);
        assert!(d.tick(ms(100)).is_empty());
        let out = d.tick(ms(200));
        assert_eq!(out[0].topic, "stat/tasmota_AABBCC/RESULT");
        let out = d.tick(ms(400));
        assert_eq!(out[0].topic, "stat/tasmota_AABBCC/STATUS8");
        assert_eq!(
            d.command("Backlog", ms(500)).reply,
            r#"{"Backlog":"Empty"}"#
        );
        // Rule actions with Backlog go through the queue too.
        // (RuleTimer1 ran at 200 ms: it ends at 5.2 s.)
        d.command(
            "Rule1 ON Rules#Timer=1 DO Backlog Power OFF; RuleTimer2 9 ENDON",
            ms(600),
        );
        d.command("Rule1 1", ms(600));
        d.tick(ms(5_100));
        assert!(d.power());
        d.tick(ms(5_200));
        assert!(!d.power());
        assert_eq!(d.rule_timers(ms(5_200))[1], None);
        d.tick(ms(5_400));
        assert_eq!(d.rule_timers(ms(5_400))[1], Some(Duration::from_secs(9)));
    }

    #[test]
    fn rule_commands_store_append_clear_and_flag() {
        let mut d = booted(false);
        d.command("Rule1 ON System#Boot DO Power1 ON ENDON", t(0));
        d.command("Rule1 +ON Rules#Timer=1 DO Power1 OFF ENDON", t(0));
        assert_eq!(
            d.rules()[0],
            (
                1,
                "ON System#Boot DO Power1 ON ENDON ON Rules#Timer=1 DO Power1 OFF ENDON".into(),
                false
            )
        );
        d.command("Rule1 5", t(0));
        let v = json(&d.command("Rule1", t(0)).reply);
        assert_eq!(v["Rule1"]["Once"], "ON");
        assert_eq!(v["Rule1"]["State"], "OFF");
        d.command("Rule1 \"", t(0));
        assert_eq!(d.rules()[0].1, "");
        let out = d.command("Rule0 1", t(0)).publishes;
        assert_eq!(out.len(), 3);
        assert!(d.rules().iter().all(|r| r.2));
        assert_eq!(d.command("Rule4 1", t(0)).reply, r#"{"Command":"Error"}"#);
        let long = format!("Rule2 ON System#Boot DO Power1 {} ENDON", "x".repeat(2000));
        d.command(&long, t(0));
        assert_eq!(d.rules()[1].1, "");
    }

    #[test]
    fn without_mqtt_system_boot_fires_at_boot() {
        let mut i = init(false);
        i.rules = vec![(1, "ON System#Boot DO RuleTimer1 30 ENDON".into(), true)];
        let mut d = Device::new(i, t(0));
        d.boot(t(0));
        assert_eq!(d.rule_timers(t(0))[0], Some(Duration::from_secs(30)));
    }

    #[test]
    fn power_on_state_decides_power_after_a_restart() {
        for (pos, before, after) in [
            (0, true, false),
            (1, false, true),
            (2, true, false),
            (2, false, true),
            (3, true, true),
            (3, false, false),
            (5, true, false),
        ] {
            let mut d = booted(true);
            d.command(&format!("PowerOnState {pos}"), t(0));
            d.command(&format!("Power {}", u8::from(before)), t(0));
            d.command("RuleTimer1 100", t(0));
            d.boot(t(1));
            assert_eq!(d.power(), after, "PowerOnState {pos}, before {before}");
            assert_eq!(d.settings().power_on_state, pos);
            assert_eq!(d.rule_timers(t(1))[0], None, "RuleTimers are RAM only");
        }
        // PowerOnState 5 switches on when PulseTime ends.
        let mut d = booted(true);
        d.command("PowerOnState 5", t(0));
        d.command("PulseTime 112", t(0));
        d.boot(t(1));
        assert!(!d.power());
        d.tick(t(13));
        assert!(d.power());
    }

    #[test]
    fn status_and_state_payloads() {
        let mut d = booted(true);
        d.mqtt_connected(t(0));
        d.command("Power ON", t(0));
        let o = d.command("Status", t(5));
        assert_eq!(o.publishes[0].topic, "stat/tasmota_AABBCC/STATUS");
        assert_eq!(json(&o.reply)["Status"]["Topic"], "tasmota_AABBCC");
        let o = d.command("Status 8", t(3600));
        assert_eq!(o.publishes[0].topic, "stat/tasmota_AABBCC/STATUS8");
        let v = json(&o.reply);
        assert_eq!(v["StatusSNS"]["ENERGY"]["Power"], 100);
        assert_eq!(v["StatusSNS"]["ENERGY"]["Voltage"], 230);
        assert_eq!(v["StatusSNS"]["ENERGY"]["Total"], 0.1);
        assert_eq!(v["StatusSNS"]["Time"], "2026-11-23T19:00:00");
        let v = json(&d.command("Status 11", t(3600)).reply);
        assert_eq!(v["StatusSTS"]["POWER"], "ON");
        assert_eq!(v["StatusSTS"]["Uptime"], "0T01:00:00");
        let v = json(&d.command("Status0", t(3600)).reply);
        for key in [
            "Status",
            "StatusPRM",
            "StatusFWR",
            "StatusNET",
            "StatusMQT",
            "StatusSNS",
            "StatusSTS",
        ] {
            assert!(v.get(key).is_some(), "{key} missing from {v}");
        }
        assert_eq!(d.command("Status 13", t(0)).reply, r#"{"Command":"Error"}"#);
        let v = json(&d.command("STATE", t(3600)).reply);
        assert_eq!(v["POWER"], "ON");
        assert_eq!(v["MqttCount"], 1);
    }

    #[test]
    fn telemetry_every_period_and_on_power_delta() {
        let mut d = booted(true);
        let out = d.mqtt_connected(t(0));
        assert!(topics(&out).contains(&("stat/tasmota_AABBCC/POWER".into(), "OFF".into())));
        assert_eq!(d.next_deadline(), Some(Duration::from_secs(5)));
        let out = d.tick(t(5));
        assert_eq!(out[0].topic, "tele/tasmota_AABBCC/STATE");
        assert_eq!(out[1].topic, "tele/tasmota_AABBCC/SENSOR");
        assert_eq!(d.next_deadline(), Some(Duration::from_secs(305)));
        assert_eq!(
            d.command("TelePeriod 5", t(10)).reply,
            r#"{"TelePeriod":10}"#
        );
        assert_eq!(d.next_deadline(), Some(Duration::from_secs(11)));
        // PowerDelta 110 = 10 W: switching the 100 W load on reports at once.
        d.command("PowerDelta1 110", t(12));
        let o = d.command("Power ON", t(12));
        assert_eq!(
            o.reply, r#"{"POWER":"ON"}"#,
            "the report is not part of the reply"
        );
        let sensor = o
            .publishes
            .iter()
            .find(|p| p.topic.ends_with("/SENSOR"))
            .unwrap();
        assert_eq!(json(&sensor.payload)["ENERGY"]["Power"], 100);
        assert!(
            d.set_load(105.0, t(13)).is_empty(),
            "5 W is within the delta"
        );
        let out = d.set_load(150.0, t(14));
        assert_eq!(json(&out[0].payload)["ENERGY"]["Power"], 150);
    }

    #[test]
    fn button_and_restart_command() {
        let mut d = booted(true);
        let out = d.press_button(t(0));
        assert!(d.power());
        assert_eq!(out[1].payload, "ON");
        let o = d.command("Restart 1", t(1));
        assert!(o.restart);
        assert_eq!(o.reply, r#"{"Restart":"Restarting"}"#);
        assert!(!d.command("Restart", t(1)).restart);
    }

    #[test]
    fn http_reply_merges_json_bodies() {
        let p = |payload: &str| Publish {
            topic: "x".into(),
            payload: payload.into(),
            retain: false,
        };
        assert_eq!(http_reply(&[]), "{}");
        assert_eq!(
            http_reply(&[p(r#"{"A":1}"#), p("ON"), p(r#"{"B":{"C":2}}"#)]),
            r#"{"A":1,"B":{"C":2}}"#
        );
    }
}
