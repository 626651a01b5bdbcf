//! Configuration: TOML, every key optional with a default, kebab-case, unknown keys
//! refused. Errors name the file, the line, the key and the reason.

use crate::clock::TrustMode;
use crate::domain::enforcement::AutoResponse;
use crate::domain::session::SessionPolicy;
use crate::domain::time::{exact, serde_dur};
use crate::domain::timekeeping::OutagePolicy;
use jiff::SignedDuration;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct Config {
    pub venue: VenueConfig,
    pub data: DataConfig,
    pub http: HttpConfig,
    pub tls: TlsConfig,
    pub log: LogConfig,
    pub engine: EngineSection,
    pub sessions: SessionsConfig,
    pub clock: ClockConfig,
    pub mqtt: MqttConfig,
    pub mdns: MdnsConfig,
    pub consoles: ConsolesConfig,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct VenueConfig {
    pub name: String,
    /// IANA zone for tariffs and reports; instants are always stored in UTC.
    pub timezone: String,
}

impl Default for VenueConfig {
    fn default() -> Self {
        Self {
            name: "My venue".into(),
            timezone: "UTC".into(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct DataConfig {
    pub dir: PathBuf,
    /// redb page cache in MiB.
    pub cache_size_mib: u32,
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("./venued-data"),
            cache_size_mib: 32,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct HttpConfig {
    pub listen: Vec<SocketAddr>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 8080))],
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct TlsConfig {
    /// HTTPS listeners, with the box's own CA unless `cert-file`/`key-file` are set.
    pub https_listen: Vec<SocketAddr>,
    /// Extra names (DNS or IP) for the generated server certificate.
    pub names: Vec<String>,
    /// An operator-supplied certificate chain (PEM) replacing the generated one.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// Answer plain HTTP with a redirect to HTTPS (probes stay on HTTP).
    pub redirect_http: bool,
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            https_listen: vec![SocketAddr::from(([127, 0, 0, 1], 8443))],
            names: Vec::new(),
            cert_file: None,
            key_file: None,
            redirect_http: false,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    /// Text on a terminal, JSON lines otherwise (journald, files).
    #[default]
    Auto,
    Text,
    Json,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct LogConfig {
    /// A tracing filter: `info`, `debug`, `venued=debug,warn`.
    pub level: String,
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Auto,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct EngineSection {
    pub queue_capacity: usize,
    pub max_batch: usize,
    #[serde(with = "serde_dur::req")]
    pub checkpoint_interval: SignedDuration,
}

impl Default for EngineSection {
    fn default() -> Self {
        Self {
            queue_capacity: 1024,
            max_batch: 256,
            checkpoint_interval: SignedDuration::from_secs(10),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct SessionsConfig {
    #[serde(with = "serde_dur::vec")]
    pub warnings: Vec<SignedDuration>,
    #[serde(with = "serde_dur::req")]
    pub grace: SignedDuration,
    #[serde(with = "serde_dur::req")]
    pub max_duration: SignedDuration,
}

impl Default for SessionsConfig {
    fn default() -> Self {
        Self {
            warnings: vec![SignedDuration::from_mins(5), SignedDuration::from_mins(1)],
            grace: SignedDuration::from_secs(60),
            max_duration: SignedDuration::from_hours(24),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct ClockConfig {
    pub trust: TrustMode,
    pub outage_policy: OutagePolicy,
    #[serde(with = "serde_dur::req")]
    pub jump_threshold: SignedDuration,
}

impl Default for ClockConfig {
    fn default() -> Self {
        Self {
            trust: TrustMode::NtpSync,
            outage_policy: OutagePolicy::Pause,
            jump_threshold: SignedDuration::from_secs(2),
        }
    }
}

/// The embedded MQTT broker's listeners and per-client limits.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct MqttConfig {
    /// Plain MQTT, for plugs that cannot do TLS (device and integration accounts only).
    pub listen: Vec<SocketAddr>,
    /// MQTT over TLS with the box CA; required for agent and staff accounts.
    pub tls_listen: Vec<SocketAddr>,
    /// Largest MQTT packet a client may send, in bytes.
    pub max_packet_size: usize,
    /// Simultaneous client connections, all listeners together.
    pub max_connections: usize,
    /// PUBLISH packets per second one client may send on average ...
    pub publish_rate: u32,
    /// ... and in a burst. Past that the front stops reading from the client.
    pub publish_burst: u32,
    /// Subscriptions one client may hold.
    pub max_subscriptions: usize,
    /// Time a new connection has to send CONNECT (and finish TLS).
    #[serde(with = "serde_dur::req")]
    pub connect_timeout: SignedDuration,
    /// First wait before an unacknowledged agent command is resent; doubles each time.
    #[serde(with = "serde_dur::req")]
    pub command_retry: SignedDuration,
    /// Sends of one agent command before the agent counts as unhealthy.
    pub command_attempts: u32,
}

impl Default for MqttConfig {
    fn default() -> Self {
        Self {
            listen: vec![SocketAddr::from(([0, 0, 0, 0], 1883))],
            tls_listen: vec![SocketAddr::from(([0, 0, 0, 0], 8883))],
            max_packet_size: 64 * 1024,
            max_connections: 4096,
            publish_rate: 50,
            publish_burst: 200,
            max_subscriptions: 64,
            connect_timeout: SignedDuration::from_secs(10),
            command_retry: SignedDuration::from_secs(1),
            command_attempts: 5,
        }
    }
}

/// How the reconciler drives console stations' plugs, router and standby actions
/// (src/enforce). Per-station ladder timings live with each station's enforcement.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct ConsolesConfig {
    /// Longest one device call (an HTTP round trip, an MQTT reply) may take.
    #[serde(with = "serde_dur::req")]
    pub device_timeout: SignedDuration,
    /// First wait before a failed device action is retried; doubles up to `retry-max`.
    #[serde(with = "serde_dur::req")]
    pub retry_min: SignedDuration,
    #[serde(with = "serde_dur::req")]
    pub retry_max: SignedDuration,
    /// How often plugs without MQTT are asked for their status over HTTP, and how often
    /// a blocked console's router entry is checked.
    #[serde(with = "serde_dur::req")]
    pub poll_interval: SignedDuration,
    /// The plug's own flip-back timer while a session runs, re-armed well before it
    /// runs out: a dead controller leaves a console powered at most this long.
    #[serde(with = "serde_dur::req")]
    pub failsafe: SignedDuration,
    /// How often the in-memory power readings are written to the store.
    #[serde(with = "serde_dur::req")]
    pub power_sample_interval: SignedDuration,
    /// What `venued device provision` writes into a plug: the dead-man's grace (Tasmota
    /// `RuleTimer1`, the Shelly script's own allowance until a heartbeat brings one) ...
    #[serde(with = "serde_dur::req")]
    pub deadman_grace: SignedDuration,
    /// ... Shelly `auto_off`, the longest a relay stays on after any switch-on ...
    #[serde(with = "serde_dur::req")]
    pub auto_off: SignedDuration,
    /// ... and Tasmota `PowerDelta1`: a change of this many watts reports at once.
    pub power_delta_w: u32,
    pub responses: ResponsesConfig,
    /// Programs a station's standby may run, by name (never creatable through the API).
    pub commands: std::collections::BTreeMap<String, CommandConfig>,
}

impl Default for ConsolesConfig {
    fn default() -> Self {
        Self {
            device_timeout: SignedDuration::from_secs(5),
            retry_min: SignedDuration::from_secs(1),
            retry_max: SignedDuration::from_secs(60),
            poll_interval: SignedDuration::from_secs(10),
            failsafe: SignedDuration::from_mins(5),
            power_sample_interval: SignedDuration::from_mins(5),
            deadman_grace: SignedDuration::from_mins(2),
            auto_off: SignedDuration::from_hours(12),
            power_delta_w: 5,
            responses: ResponsesConfig::default(),
            commands: std::collections::BTreeMap::new(),
        }
    }
}

/// What the reconciler does about each alert besides recording it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct ResponsesConfig {
    /// `alert` or `power-off`.
    pub power_without_session: AutoResponse,
    /// `alert` or `block`.
    pub plug_offline: AutoResponse,
    /// `alert` or `restore`.
    pub relay_switched_by_hand: AutoResponse,
    /// `alert` or `restore`.
    pub router_entry_removed: AutoResponse,
}

impl Default for ResponsesConfig {
    fn default() -> Self {
        Self {
            power_without_session: AutoResponse::Alert,
            plug_offline: AutoResponse::Alert,
            relay_switched_by_hand: AutoResponse::Restore,
            router_entry_removed: AutoResponse::Restore,
        }
    }
}

/// A program run as a station's standby action.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct CommandConfig {
    /// Absolute path of the program (no shell is involved).
    pub program: PathBuf,
    #[serde(default)]
    pub args: Vec<String>,
    /// Killed after this long; a timeout counts as a failure.
    #[serde(with = "serde_dur::req", default = "default_command_timeout")]
    pub timeout: SignedDuration,
}

fn default_command_timeout() -> SignedDuration {
    SignedDuration::from_secs(10)
}

/// Advertising the controller on the LAN (mDNS / DNS-SD), so `venued agent enroll` finds
/// it without an address (src/discovery.rs).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct MdnsConfig {
    /// Advertise `_venued._tcp.local.` while HTTPS listens on a non-loopback address.
    pub enabled: bool,
}

impl Default for MdnsConfig {
    fn default() -> Self {
        Self { enabled: true }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: Option<PathBuf>,
    pub line: Option<usize>,
    pub key: Option<String>,
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.file {
            Some(file) => write!(f, "{}", file.display())?,
            None => f.write_str("configuration")?,
        }
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(key) = &self.key {
            write!(f, ": key `{key}`")?;
        }
        write!(f, ": {}", self.reason)
    }
}

impl std::error::Error for ConfigError {}

/// Where overrides come from; `std::env::var` in production, a map in tests.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// `Err((key, reason))` unless `lo <= v <= hi`.
fn in_range(
    key: &'static str,
    v: SignedDuration,
    lo: SignedDuration,
    hi: SignedDuration,
) -> Result<(), (&'static str, String)> {
    if v < lo || v > hi {
        Err((
            key,
            format!(
                "must be between {} and {} (got {})",
                exact(lo),
                exact(hi),
                exact(v)
            ),
        ))
    } else {
        Ok(())
    }
}

impl Config {
    /// Parse and validate a file's text. `file` is only used in messages.
    pub fn parse(text: &str, file: Option<&Path>) -> Result<Self, ConfigError> {
        let err = |line, key, reason| ConfigError {
            file: file.map(Path::to_path_buf),
            line,
            key,
            reason,
        };
        let de = toml::Deserializer::parse(text).map_err(|e| {
            let line = e.span().map(|s| line_of(text, s.start));
            err(line, None, e.message().trim().to_owned())
        })?;
        let config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            let inner = e.into_inner();
            let line = inner.span().map(|s| line_of(text, s.start));
            let key = (key != ".").then_some(key);
            err(line, key, inner.message().trim().to_owned())
        })?;
        config.validate().map_err(|(key, reason)| ConfigError {
            file: file.map(Path::to_path_buf),
            line: key_line(text, key),
            key: Some(key.to_owned()),
            reason,
        })?;
        Ok(config)
    }

    pub fn load(file: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(file).map_err(|e| ConfigError {
            file: Some(file.to_path_buf()),
            line: None,
            key: None,
            reason: format!("cannot read: {e}"),
        })?;
        Self::parse(&text, Some(file))
    }

    /// Apply `VENUED_DATA_DIR`, `VENUED_HTTP_LISTEN` (comma-separated) and `VENUED_LOG`.
    pub fn apply_env(&mut self, env: EnvLookup<'_>) -> Result<(), ConfigError> {
        let err = |var: &str, reason: String| ConfigError {
            file: None,
            line: None,
            key: Some(var.to_owned()),
            reason,
        };
        if let Some(dir) = env("VENUED_DATA_DIR").filter(|d| !d.is_empty()) {
            self.data.dir = PathBuf::from(dir);
        }
        if let Some(listen) = env("VENUED_HTTP_LISTEN") {
            self.http.listen = parse_listen("VENUED_HTTP_LISTEN", &listen)?;
        }
        if let Some(listen) = env("VENUED_HTTPS_LISTEN") {
            self.tls.https_listen = parse_listen("VENUED_HTTPS_LISTEN", &listen)?;
        }
        if let Some(listen) = env("VENUED_MQTT_LISTEN") {
            self.mqtt.listen = parse_listen("VENUED_MQTT_LISTEN", &listen)?;
        }
        if let Some(listen) = env("VENUED_MQTTS_LISTEN") {
            self.mqtt.tls_listen = parse_listen("VENUED_MQTTS_LISTEN", &listen)?;
        }
        if let Some(level) = env("VENUED_LOG").filter(|l| !l.is_empty()) {
            self.log.level = level;
        }
        self.validate().map_err(|(key, reason)| err(key, reason))
    }

    fn validate_consoles(&self) -> Result<(), (&'static str, String)> {
        let c = &self.consoles;
        let ms = SignedDuration::from_millis;
        let bounds = [
            (
                "consoles.device-timeout",
                c.device_timeout,
                ms(50),
                ms(60_000),
            ),
            ("consoles.retry-min", c.retry_min, ms(10), ms(60_000)),
            (
                "consoles.retry-max",
                c.retry_max,
                c.retry_min,
                ms(3_600_000),
            ),
            (
                "consoles.poll-interval",
                c.poll_interval,
                ms(50),
                ms(3_600_000),
            ),
            // Plug timers count whole seconds and a heartbeat goes every third of it:
            // below 2 s a late one would switch a console off mid-session.
            ("consoles.failsafe", c.failsafe, ms(2_000), ms(86_400_000)),
            (
                "consoles.power-sample-interval",
                c.power_sample_interval,
                ms(1_000),
                ms(86_400_000),
            ),
            // Tasmota's RuleTimer counts whole seconds up to 65535.
            (
                "consoles.deadman-grace",
                c.deadman_grace,
                ms(10_000),
                ms(65_535_000),
            ),
            ("consoles.auto-off", c.auto_off, ms(60_000), ms(86_400_000)),
        ];
        for (key, v, lo, hi) in bounds {
            in_range(key, v, lo, hi)?;
        }
        if !(1..=1000).contains(&c.power_delta_w) {
            return Err((
                "consoles.power-delta-w",
                format!("must be between 1 and 1000 (got {})", c.power_delta_w),
            ));
        }
        use AutoResponse::{Alert, Block, PowerOff, Restore};
        let r = &c.responses;
        let allowed = [
            (
                "consoles.responses.power-without-session",
                r.power_without_session,
                [Alert, PowerOff],
            ),
            (
                "consoles.responses.plug-offline",
                r.plug_offline,
                [Alert, Block],
            ),
            (
                "consoles.responses.relay-switched-by-hand",
                r.relay_switched_by_hand,
                [Alert, Restore],
            ),
            (
                "consoles.responses.router-entry-removed",
                r.router_entry_removed,
                [Alert, Restore],
            ),
        ];
        for (key, v, ok) in allowed {
            if !ok.contains(&v) {
                let name = |a: AutoResponse| {
                    serde_json::to_value(a)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default()
                };
                return Err((
                    key,
                    format!("must be \"{}\" or \"{}\"", name(ok[0]), name(ok[1])),
                ));
            }
        }
        for (name, cmd) in &c.commands {
            if crate::domain::device::DeviceName::parse(name).is_err() {
                return Err((
                    "consoles.commands",
                    format!(
                        "{name:?}: a command name has 1-40 lowercase letters, digits, '-' and '_'"
                    ),
                ));
            }
            if !cmd.program.is_absolute() {
                return Err((
                    "consoles.commands",
                    format!("{name}: program must be an absolute path (no shell, no PATH lookup)"),
                ));
            }
            if cmd.timeout < ms(100) || cmd.timeout > ms(300_000) {
                return Err((
                    "consoles.commands",
                    format!("{name}: timeout must be between 100ms and 5m"),
                ));
            }
        }
        Ok(())
    }

    fn validate(&self) -> Result<(), (&'static str, String)> {
        let range = in_range;
        let secs = SignedDuration::from_secs;
        if jiff::tz::TimeZone::get(&self.venue.timezone).is_err() {
            return Err((
                "venue.timezone",
                format!(
                    "{:?} is not an IANA time zone (e.g. Europe/Berlin)",
                    self.venue.timezone
                ),
            ));
        }
        if self.data.dir.as_os_str().is_empty() {
            return Err(("data.dir", "must not be empty".into()));
        }
        if self.tls.cert_file.is_some() != self.tls.key_file.is_some() {
            return Err((
                "tls.cert-file",
                "cert-file and key-file go together: set both or neither".into(),
            ));
        }
        if self.tls.redirect_http && self.tls.https_listen.is_empty() {
            return Err((
                "tls.redirect-http",
                "needs at least one tls.https-listen address to redirect to".into(),
            ));
        }
        if !(1..=1024).contains(&self.data.cache_size_mib) {
            return Err((
                "data.cache-size-mib",
                format!(
                    "must be between 1 and 1024 (got {})",
                    self.data.cache_size_mib
                ),
            ));
        }
        let within = |key, v: usize, lo: usize, hi: usize| {
            if (lo..=hi).contains(&v) {
                Ok(())
            } else {
                Err((key, format!("must be between {lo} and {hi} (got {v})")))
            }
        };
        // A station state or a plug reading is well under 2 KiB; 16 MiB is a sanity cap.
        within(
            "mqtt.max-packet-size",
            self.mqtt.max_packet_size,
            1024,
            16 << 20,
        )?;
        within(
            "mqtt.max-connections",
            self.mqtt.max_connections,
            1,
            100_000,
        )?;
        within(
            "mqtt.publish-rate",
            self.mqtt.publish_rate as usize,
            1,
            100_000,
        )?;
        within(
            "mqtt.publish-burst",
            self.mqtt.publish_burst as usize,
            1,
            1_000_000,
        )?;
        within(
            "mqtt.max-subscriptions",
            self.mqtt.max_subscriptions,
            1,
            10_000,
        )?;
        range(
            "mqtt.connect-timeout",
            self.mqtt.connect_timeout,
            SignedDuration::from_millis(100),
            secs(300),
        )?;
        range(
            "mqtt.command-retry",
            self.mqtt.command_retry,
            SignedDuration::from_millis(10),
            secs(60),
        )?;
        within(
            "mqtt.command-attempts",
            self.mqtt.command_attempts as usize,
            1,
            20,
        )?;
        self.validate_consoles()?;
        if let Err(reason) = check_log_filter(&self.log.level) {
            return Err(("log.level", reason));
        }
        if !(1..=1_000_000).contains(&self.engine.queue_capacity) {
            return Err((
                "engine.queue-capacity",
                "must be between 1 and 1000000".into(),
            ));
        }
        if !(1..=10_000).contains(&self.engine.max_batch) {
            return Err(("engine.max-batch", "must be between 1 and 10000".into()));
        }
        range(
            "engine.checkpoint-interval",
            self.engine.checkpoint_interval,
            secs(1),
            secs(300),
        )?;
        for w in &self.sessions.warnings {
            range(
                "sessions.warnings",
                *w,
                secs(1),
                SignedDuration::from_hours(2),
            )?;
        }
        range(
            "sessions.grace",
            self.sessions.grace,
            SignedDuration::ZERO,
            SignedDuration::from_hours(1),
        )?;
        range(
            "sessions.max-duration",
            self.sessions.max_duration,
            SignedDuration::from_mins(1),
            SignedDuration::from_hours(24 * 7),
        )?;
        range(
            "clock.jump-threshold",
            self.clock.jump_threshold,
            secs(1),
            SignedDuration::from_hours(1),
        )?;
        Ok(())
    }

    pub fn session_policy(&self) -> SessionPolicy {
        SessionPolicy::new(
            self.sessions.warnings.clone(),
            self.sessions.grace,
            self.sessions.max_duration,
        )
    }

    /// The control socket lives in the data directory; its permissions stand in for login.
    pub fn socket_path(&self) -> PathBuf {
        self.data.dir.join(SOCKET_FILE)
    }
}

pub const SOCKET_FILE: &str = "venued.sock";

/// A comma-separated address list from the environment; empty turns the listener off.
fn parse_listen(var: &str, value: &str) -> Result<Vec<SocketAddr>, ConfigError> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse().map_err(|_| ConfigError {
                file: None,
                line: None,
                key: Some(var.to_owned()),
                reason: format!("{s:?} is not an address like 127.0.0.1:8080"),
            })
        })
        .collect()
}

fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset).map_or(0, |s| s.matches('\n').count()) + 1
}

/// Best effort: the line where the last segment of a dotted key is set.
fn key_line(text: &str, key: &str) -> Option<usize> {
    let leaf = key.rsplit('.').next()?;
    text.lines()
        .position(|l| {
            let l = l.trim_start();
            l.starts_with(leaf) && l[leaf.len()..].trim_start().starts_with('=')
        })
        .map(|i| i + 1)
}

/// A warning for a config file anyone on the box may rewrite; shown by `config check`
/// and logged by `serve` once logging is up.
pub fn permission_warning(file: &Path) -> Option<String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(file).ok()?;
        if meta.permissions().mode() & 0o002 != 0 {
            return Some(format!(
                "{} is world-writable: anyone on this box can change how venued runs (chmod o-w)",
                file.display()
            ));
        }
    }
    #[cfg(not(unix))]
    let _ = file;
    None
}

const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];

/// tracing's filter syntax takes a bare word as a module name, so `level = "verbose"`
/// would parse and silently log nothing. Require every directive to name a level.
fn check_log_filter(filter: &str) -> Result<(), String> {
    let hint =
        "(e.g. info, debug, venued=debug,warn; levels: trace, debug, info, warn, error, off)";
    if tracing_subscriber::EnvFilter::try_new(filter).is_err() {
        return Err(format!("{filter:?} is not a log filter {hint}"));
    }
    for directive in filter.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let level = directive.rsplit('=').next().unwrap_or(directive);
        if !LEVELS.contains(&level.to_ascii_lowercase().as_str()) {
            return Err(format!("{directive:?} names no log level {hint}"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_defaults() {
        assert_eq!(Config::parse("", None), Ok(Config::default()));
    }

    #[test]
    fn unknown_key_is_named_with_its_line() {
        let e = Config::parse("[sessions]\ngrace = \"30s\"\ngrase = \"1m\"\n", None).unwrap_err();
        assert_eq!(e.line, Some(3));
        assert!(e.reason.contains("unknown field `grase`"), "{e}");
    }

    #[test]
    fn mdns_is_on_by_default_and_can_be_turned_off() {
        assert!(Config::default().mdns.enabled);
        let c = Config::parse("[mdns]\nenabled = false\n", None).unwrap();
        assert!(!c.mdns.enabled);
        let e = Config::parse("[mdns]\nenable = false\n", None).unwrap_err();
        assert_eq!(e.line, Some(2));
        assert!(e.reason.contains("unknown field `enable`"), "{e}");
        let e = Config::parse("[mdns]\nenabled = \"yes\"\n", None).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("mdns.enabled"), "{e}");
    }

    #[test]
    fn env_overrides_data_dir_and_listen() {
        let mut c = Config::default();
        let env = |k: &str| match k {
            "VENUED_DATA_DIR" => Some("/tmp/x".to_owned()),
            "VENUED_HTTP_LISTEN" => Some("127.0.0.1:1, [::1]:2".to_owned()),
            _ => None,
        };
        c.apply_env(&env).unwrap();
        assert_eq!(c.data.dir, PathBuf::from("/tmp/x"));
        assert_eq!(c.http.listen.len(), 2);
        let bad = |k: &str| (k == "VENUED_HTTP_LISTEN").then(|| "nonsense".to_owned());
        assert!(c.apply_env(&bad).is_err());
    }

    #[test]
    fn a_word_that_is_not_a_log_level_is_refused() {
        for bad in ["verbose", "warning", "info,inf", "venued=loud"] {
            let e = Config::parse(&format!("[log]\nlevel = \"{bad}\"\n"), None).unwrap_err();
            assert_eq!(e.key.as_deref(), Some("log.level"), "{bad}");
        }
        for good in ["info", "DEBUG", "venued=debug,warn", "off"] {
            assert!(
                Config::parse(&format!("[log]\nlevel = \"{good}\"\n"), None).is_ok(),
                "{good}"
            );
        }
    }
}
