//! RouterOS v7 state, without I/O: the firewall tables venued touches (address lists,
//! filter and raw rules, connection tracking), their REST-visible shapes, and a small
//! model of how the forward chain decides a packet (with FastTrack), so tests can check
//! that a blocking design really blocks.
//!
//! Shapes follow RouterOS 7 REST: every value is a string, `.id` is `*<hex>`, booleans are
//! `"true"`/`"false"`, durations look like `23h59m58s`, dates like `2026-11-23 18:00:00`.
//! Error texts are RouterOS's where known (`failure: already have such entry`, `failure:
//! cannot move builtin`, `no such item`, `unknown parameter x`); the rest are marked in the
//! module doc of [`super`].

use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp, Zoned};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

/// Both clocks at one instant: `mono` (since the fake started) for timeouts and uptime,
/// `wall` the host's wall clock (the router adds its own offset).
#[derive(Clone, Copy, Debug)]
pub struct Now {
    pub mono: Duration,
    pub wall: Timestamp,
}

/// The tables the fake keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Menu {
    AddressList,
    Filter,
    Raw,
    Connection,
    AddressList6,
    Filter6,
}

impl Menu {
    pub const ALL: [Menu; 6] = [
        Menu::AddressList,
        Menu::Filter,
        Menu::Raw,
        Menu::Connection,
        Menu::AddressList6,
        Menu::Filter6,
    ];

    /// The menu path under `/rest`.
    pub fn path(self) -> &'static [&'static str] {
        match self {
            Self::AddressList => &["ip", "firewall", "address-list"],
            Self::Filter => &["ip", "firewall", "filter"],
            Self::Raw => &["ip", "firewall", "raw"],
            Self::Connection => &["ip", "firewall", "connection"],
            Self::AddressList6 => &["ipv6", "firewall", "address-list"],
            Self::Filter6 => &["ipv6", "firewall", "filter"],
        }
    }

    pub fn is_rules(self) -> bool {
        matches!(self, Self::Filter | Self::Raw | Self::Filter6)
    }

    pub fn is_address_list(self) -> bool {
        matches!(self, Self::AddressList | Self::AddressList6)
    }

    fn settable(self) -> &'static [&'static str] {
        match self {
            Self::AddressList | Self::AddressList6 => {
                &["list", "address", "comment", "disabled", "timeout"]
            }
            Self::Filter | Self::Raw | Self::Filter6 => RULE_PROPS,
            Self::Connection => &[],
        }
    }

    fn actions(self) -> &'static [&'static str] {
        match self {
            Self::Raw => &[
                "accept",
                "drop",
                "notrack",
                "jump",
                "return",
                "log",
                "passthrough",
                "add-src-to-address-list",
                "add-dst-to-address-list",
            ],
            _ => &[
                "accept",
                "drop",
                "reject",
                "fasttrack-connection",
                "passthrough",
                "jump",
                "return",
                "log",
                "tarpit",
                "add-src-to-address-list",
                "add-dst-to-address-list",
            ],
        }
    }
}

/// Properties a filter or raw rule may be given (matchers and settings).
const RULE_PROPS: &[&str] = &[
    "chain",
    "action",
    "comment",
    "disabled",
    "log",
    "log-prefix",
    "src-address",
    "dst-address",
    "src-address-list",
    "dst-address-list",
    "src-address-type",
    "dst-address-type",
    "protocol",
    "src-port",
    "dst-port",
    "port",
    "in-interface",
    "out-interface",
    "in-interface-list",
    "out-interface-list",
    "connection-state",
    "connection-nat-state",
    "connection-mark",
    "connection-type",
    "packet-mark",
    "routing-mark",
    "hw-offload",
    "ipsec-policy",
    "jump-target",
    "reject-with",
    "address-list",
    "address-list-timeout",
    "tcp-flags",
    "icmp-options",
    "content",
    "limit",
    "dst-limit",
    "connection-limit",
    "connection-rate",
    "time",
    "src-mac-address",
    "layer7-protocol",
    "priority",
    "dscp",
    "ttl",
    "nth",
    "random",
    "fragment",
    "hotspot",
    "tls-host",
    "packet-size",
];

/// Rule properties that only configure the rule; every other property is a matcher.
const RULE_SETTINGS: &[&str] = &[
    "chain",
    "action",
    "comment",
    "disabled",
    "log",
    "log-prefix",
    "hw-offload",
    "jump-target",
    "reject-with",
    "address-list",
    "address-list-timeout",
];

const BOOL_PROPS: &[&str] = &["disabled", "log", "hw-offload"];

/// A RouterOS error: the status and the optional `detail`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RosError {
    pub status: u16,
    pub detail: Option<String>,
}

impl RosError {
    pub fn bad(detail: impl Into<String>) -> Self {
        Self {
            status: 400,
            detail: Some(detail.into()),
        }
    }

    pub fn not_found() -> Self {
        Self {
            status: 404,
            detail: None,
        }
    }

    /// The JSON body RouterOS sends: `{"error":400,"message":"Bad Request","detail":…}`.
    pub fn body(&self) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        m.insert("error".into(), self.status.into());
        m.insert("message".into(), reason(self.status).into());
        if let Some(d) = &self.detail {
            m.insert("detail".into(), d.clone().into());
        }
        serde_json::Value::Object(m)
    }
}

/// The reason phrase RouterOS puts in `message`.
pub fn reason(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        406 => "Not Acceptable",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

/// A RouterOS duration: `1w2d3h4m5s`, `500ms`, `00:05:00`, `1d 02:00:00`, or seconds.
pub fn parse_ros_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse().ok().map(Duration::from_secs);
    }
    if s.contains(':') {
        let (days, hms) = match s.split_once('d') {
            Some((d, rest)) => (d.trim().parse::<u64>().ok()?, rest.trim()),
            None => (0, s),
        };
        let parts: Vec<u64> = hms
            .split(':')
            .map(|p| p.parse().ok())
            .collect::<Option<_>>()?;
        let [h, m, sec] = parts[..] else { return None };
        return Some(Duration::from_secs(days * 86_400 + h * 3600 + m * 60 + sec));
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return None;
        }
        let n: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let (unit, len) = if rest.starts_with("ms") {
            (Duration::from_millis(1), 2)
        } else {
            let unit = match rest.chars().next() {
                Some('w') => Duration::from_secs(604_800),
                Some('d') => Duration::from_secs(86_400),
                Some('h') => Duration::from_secs(3600),
                Some('m') => Duration::from_secs(60),
                Some('s') => Duration::from_secs(1),
                _ => return None,
            };
            (unit, 1)
        };
        total += unit * u32::try_from(n).ok()?;
        rest = &rest[len..];
    }
    Some(total)
}

/// A duration as RouterOS prints it: `59m58s`, `1w2d`, `0s`.
pub fn format_ros_duration(d: Duration) -> String {
    let mut s = d.as_secs();
    if s == 0 {
        let ms = d.subsec_millis();
        return if ms > 0 {
            format!("{ms}ms")
        } else {
            "0s".into()
        };
    }
    let mut out = String::new();
    for (unit, name) in [
        (604_800, 'w'),
        (86_400, 'd'),
        (3600, 'h'),
        (60, 'm'),
        (1, 's'),
    ] {
        if s >= unit {
            out.push_str(&format!("{}{name}", s / unit));
            s %= unit;
        }
    }
    out
}

/// An address-list address as RouterOS keeps it: `/32` dropped, a prefix reduced to its
/// network, ranges and DNS names as given.
fn normalize_address(s: &str, v6: bool) -> Result<String, RosError> {
    let invalid = || RosError::bad("invalid value for argument address");
    let s = s.trim();
    if s.is_empty() || s.contains(char::is_whitespace) {
        return Err(invalid());
    }
    if v6 {
        let (ip, len) = match s.split_once('/') {
            Some((ip, len)) => (ip, len.parse::<u8>().map_err(|_| invalid())?),
            None => (s, 128),
        };
        let ip: Ipv6Addr = ip.parse().map_err(|_| invalid())?;
        if len > 128 {
            return Err(invalid());
        }
        let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
        let net = Ipv6Addr::from(u128::from(ip) & mask);
        return Ok(format!("{net}/{len}"));
    }
    if let Some((ip, len)) = s.split_once('/') {
        let ip: Ipv4Addr = ip.parse().map_err(|_| invalid())?;
        let len: u8 = len.parse().map_err(|_| invalid())?;
        if len > 32 {
            return Err(invalid());
        }
        if len == 32 {
            return Ok(ip.to_string());
        }
        let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
        return Ok(format!("{}/{len}", Ipv4Addr::from(u32::from(ip) & mask)));
    }
    if let Some((a, b)) = s.split_once('-') {
        let (a, b): (Ipv4Addr, Ipv4Addr) = (
            a.parse().map_err(|_| invalid())?,
            b.parse().map_err(|_| invalid())?,
        );
        if a > b {
            return Err(invalid());
        }
        return Ok(format!("{a}-{b}"));
    }
    if let Ok(ip) = s.parse::<Ipv4Addr>() {
        return Ok(ip.to_string());
    }
    let dns = s
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        && s.chars().any(|c| c.is_ascii_alphabetic());
    if dns {
        Ok(s.to_owned())
    } else {
        Err(invalid())
    }
}

/// Whether `ip` is in an address, prefix or range written RouterOS's way (a DNS name never
/// matches here: the fake resolves nothing).
pub fn address_contains(spec: &str, ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(ip) => {
            if let Some((net, len)) = spec.split_once('/') {
                let (Ok(net), Ok(len)) = (net.parse::<Ipv4Addr>(), len.parse::<u32>()) else {
                    return false;
                };
                let mask = u32::MAX.checked_shl(32 - len.min(32)).unwrap_or(0);
                u32::from(ip) & mask == u32::from(net) & mask
            } else if let Some((a, b)) = spec.split_once('-') {
                match (a.parse::<Ipv4Addr>(), b.parse::<Ipv4Addr>()) {
                    (Ok(a), Ok(b)) => a <= ip && ip <= b,
                    _ => false,
                }
            } else {
                spec.parse::<Ipv4Addr>() == Ok(ip)
            }
        }
        IpAddr::V6(ip) => {
            let (net, len) = spec.split_once('/').unwrap_or((spec, "128"));
            let (Ok(net), Ok(len)) = (net.parse::<Ipv6Addr>(), len.parse::<u32>()) else {
                return false;
            };
            let mask = u128::MAX.checked_shl(128 - len.min(128)).unwrap_or(0);
            u128::from(ip) & mask == u128::from(net) & mask
        }
    }
}

/// The connection state a packet is in, as `connection-state` matches it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnState {
    New,
    Established,
    Related,
    Invalid,
    Untracked,
}

impl ConnState {
    fn name(self) -> &'static str {
        match self {
            Self::New => "new",
            Self::Established => "established",
            Self::Related => "related",
            Self::Invalid => "invalid",
            Self::Untracked => "untracked",
        }
    }
}

/// What the router does with a forwarded packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    Drop,
    Reject,
    /// The connection is FastTracked: its packets skip the firewall entirely.
    Fasttracked,
}

/// An address-list entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddressEntry {
    pub id: String,
    pub list: String,
    pub address: String,
    pub comment: Option<String>,
    pub disabled: bool,
    /// Entries with a timeout are dynamic: gone after a reboot.
    pub dynamic: bool,
    /// Time left, for dynamic entries.
    pub timeout: Option<Duration>,
}

/// A firewall (filter or raw) rule, in table order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FilterRule {
    pub id: String,
    pub chain: String,
    pub action: String,
    pub comment: Option<String>,
    pub disabled: bool,
    pub dynamic: bool,
    /// Every property as REST shows it (matchers included).
    pub props: BTreeMap<String, String>,
}

impl FilterRule {
    pub fn get(&self, prop: &str) -> Option<&str> {
        self.props.get(prop).map(String::as_str)
    }
}

/// A connection-tracking entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Connection {
    pub id: String,
    /// `ip:port`.
    pub src_address: String,
    pub dst_address: String,
    pub protocol: String,
    pub fasttracked: bool,
}

/// One row of a table. `props` hold what was set (with defaults); computed fields are
/// added when rendering.
#[derive(Clone, Debug)]
struct Row {
    id: u32,
    props: BTreeMap<String, String>,
    /// Shown as `dynamic=true` (timed address-list entries, the FastTrack counter rule).
    dynamic: bool,
    /// Made by RouterOS itself: cannot be changed, moved or removed.
    builtin: bool,
    expires: Option<Duration>,
    created: String,
}

fn id_text(id: u32) -> String {
    format!("*{id:X}")
}

/// `*1A` → 0x1A.
pub fn parse_id(s: &str) -> Option<u32> {
    u32::from_str_radix(s.strip_prefix('*')?, 16).ok()
}

fn props(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// The router.
#[derive(Debug)]
pub struct Router {
    tables: BTreeMap<Menu, Vec<Row>>,
    next_id: BTreeMap<Menu, u32>,
    counts: BTreeMap<(String, String), (u32, u32)>,
    booted: Duration,
    offset: SignedDuration,
    tz: TimeZone,
    tz_name: String,
    pub version: String,
    pub board: String,
}

/// The id of the dynamic "special dummy rule to show fasttrack counters" (arbitrary).
const DUMMY_ID: u32 = 0xFFFF_FFFE;
/// First id handed to seeded connections (conntrack ids are large).
const FIRST_CONNECTION: u32 = 0x2A_0000;

impl Router {
    /// A router after a reset with (or without) the default configuration's firewall.
    pub fn new(defconf: bool, time_zone: &str, now: Now) -> Self {
        let (tz, tz_name) = match TimeZone::get(time_zone) {
            Ok(tz) => (tz, time_zone.to_owned()),
            Err(_) => (TimeZone::UTC, "UTC".to_owned()),
        };
        let mut r = Self {
            tables: Menu::ALL.iter().map(|m| (*m, Vec::new())).collect(),
            next_id: Menu::ALL.iter().map(|m| (*m, 1)).collect(),
            counts: BTreeMap::new(),
            booted: now.mono,
            offset: SignedDuration::ZERO,
            tz,
            tz_name,
            version: "7.19.4 (stable)".into(),
            board: "hAP ax^2".into(),
        };
        r.next_id.insert(Menu::Connection, FIRST_CONNECTION);
        if defconf {
            r.defconf(now);
        }
        r
    }

    fn defconf(&mut self, now: Now) {
        let created = self.local_text(now);
        let dummy = Row {
            id: DUMMY_ID,
            props: props(&[
                ("chain", "forward"),
                ("action", "passthrough"),
                ("comment", "special dummy rule to show fasttrack counters"),
                ("disabled", "false"),
                ("log", "false"),
                ("log-prefix", ""),
            ]),
            dynamic: true,
            builtin: true,
            expires: None,
            created,
        };
        self.rows(Menu::Filter).push(dummy);
        let rules: &[&[(&str, &str)]] = &[
            &[
                ("chain", "input"),
                ("action", "accept"),
                ("connection-state", "established,related,untracked"),
                ("comment", "defconf: accept established,related,untracked"),
            ],
            &[
                ("chain", "input"),
                ("action", "drop"),
                ("connection-state", "invalid"),
                ("comment", "defconf: drop invalid"),
            ],
            &[
                ("chain", "input"),
                ("action", "accept"),
                ("protocol", "icmp"),
                ("comment", "defconf: accept ICMP"),
            ],
            &[
                ("chain", "input"),
                ("action", "accept"),
                ("dst-address", "127.0.0.1"),
                ("comment", "defconf: accept to local loopback (for CAPsMAN)"),
            ],
            &[
                ("chain", "input"),
                ("action", "drop"),
                ("in-interface-list", "!LAN"),
                ("comment", "defconf: drop all not coming from LAN"),
            ],
            &[
                ("chain", "forward"),
                ("action", "accept"),
                ("ipsec-policy", "in,ipsec"),
                ("comment", "defconf: accept in ipsec policy"),
            ],
            &[
                ("chain", "forward"),
                ("action", "accept"),
                ("ipsec-policy", "out,ipsec"),
                ("comment", "defconf: accept out ipsec policy"),
            ],
            &[
                ("chain", "forward"),
                ("action", "fasttrack-connection"),
                ("connection-state", "established,related"),
                ("hw-offload", "true"),
                ("comment", "defconf: fasttrack"),
            ],
            &[
                ("chain", "forward"),
                ("action", "accept"),
                ("connection-state", "established,related,untracked"),
                ("comment", "defconf: accept established,related, untracked"),
            ],
            &[
                ("chain", "forward"),
                ("action", "drop"),
                ("connection-state", "invalid"),
                ("comment", "defconf: drop invalid"),
            ],
            &[
                ("chain", "forward"),
                ("action", "drop"),
                ("connection-state", "new"),
                ("connection-nat-state", "!dstnat"),
                ("in-interface-list", "WAN"),
                ("comment", "defconf: drop all from WAN not DSTNATed"),
            ],
        ];
        for rule in rules {
            let mut p = props(rule);
            for (k, v) in [("disabled", "false"), ("log", "false"), ("log-prefix", "")] {
                p.entry(k.into()).or_insert_with(|| v.into());
            }
            self.insert(Menu::Filter, p, None, None, now);
        }
    }

    fn rows(&mut self, menu: Menu) -> &mut Vec<Row> {
        self.tables.entry(menu).or_default()
    }

    fn table(&self, menu: Menu) -> &[Row] {
        self.tables.get(&menu).map_or(&[], Vec::as_slice)
    }

    fn insert(
        &mut self,
        menu: Menu,
        props: BTreeMap<String, String>,
        expires: Option<Duration>,
        at: Option<usize>,
        now: Now,
    ) -> u32 {
        let next = self.next_id.entry(menu).or_insert(1);
        let id = *next;
        *next += 1;
        let row = Row {
            id,
            props,
            dynamic: expires.is_some(),
            builtin: false,
            expires,
            created: self.local_text(now),
        };
        let rows = self.rows(menu);
        let at = at.unwrap_or(rows.len()).min(rows.len());
        rows.insert(at, row);
        id
    }

    // ---- clock ------------------------------------------------------------------------

    /// The router's clock: the host's wall clock plus the offset the test set.
    pub fn clock(&self, now: Now) -> Zoned {
        let t = now.wall.checked_add(self.offset).unwrap_or(now.wall);
        t.to_zoned(self.tz.clone())
    }

    pub fn set_clock_offset(&mut self, offset: SignedDuration) {
        self.offset = offset;
    }

    fn local_text(&self, now: Now) -> String {
        self.clock(now).strftime("%Y-%m-%d %H:%M:%S").to_string()
    }

    /// `GET /system/clock`.
    pub fn clock_json(&self, now: Now) -> serde_json::Value {
        let z = self.clock(now);
        let secs = z.offset().seconds();
        let sign = if secs < 0 { '-' } else { '+' };
        let abs = secs.unsigned_abs();
        let dst = self.tz.to_offset_info(z.timestamp()).dst().is_dst();
        serde_json::json!({
            "date": z.strftime("%Y-%m-%d").to_string(),
            "time": z.strftime("%H:%M:%S").to_string(),
            "time-zone-autodetect": "true",
            "time-zone-name": self.tz_name,
            "gmt-offset": format!("{sign}{:02}:{:02}", abs / 3600, abs / 60 % 60),
            "dst-active": dst.to_string(),
        })
    }

    /// `GET /system/resource`.
    pub fn resource_json(&self, now: Now) -> serde_json::Value {
        serde_json::json!({
            "architecture-name": "arm64",
            "bad-blocks": "0",
            "board-name": self.board,
            "build-time": "2025-06-30 10:00:00",
            "cpu": "ARM64",
            "cpu-count": "4",
            "cpu-frequency": "864",
            "cpu-load": "2",
            "factory-software": "7.5",
            "free-hdd-space": "96075776",
            "free-memory": "861114368",
            "platform": "MikroTik",
            "total-hdd-space": "134217728",
            "total-memory": "1073741824",
            "uptime": format_ros_duration(now.mono.saturating_sub(self.booted)),
            "version": self.version,
            "write-sect-since-reboot": "1234",
            "write-sect-total": "56789",
        })
    }

    /// A reboot: dynamic address-list entries and connections are gone, uptime restarts.
    pub fn reboot(&mut self, now: Now) {
        self.booted = now.mono;
        for menu in [Menu::AddressList, Menu::AddressList6] {
            self.rows(menu).retain(|r| !r.dynamic);
        }
        self.rows(Menu::Connection).clear();
    }

    // ---- table operations -------------------------------------------------------------

    /// Drop address-list entries whose timeout ran out.
    pub fn expire(&mut self, now: Now) {
        for menu in [Menu::AddressList, Menu::AddressList6] {
            self.rows(menu)
                .retain(|r| r.expires.is_none_or(|t| t > now.mono));
        }
    }

    fn render(&self, menu: Menu, row: &Row, now: Now) -> BTreeMap<String, String> {
        let mut out = row.props.clone();
        out.insert(".id".into(), id_text(row.id));
        match menu {
            Menu::AddressList | Menu::AddressList6 => {
                out.insert("creation-time".into(), row.created.clone());
                out.insert("dynamic".into(), row.dynamic.to_string());
                if let Some(t) = row.expires {
                    out.insert(
                        "timeout".into(),
                        format_ros_duration(t.saturating_sub(now.mono)),
                    );
                }
            }
            Menu::Filter | Menu::Raw | Menu::Filter6 => {
                out.insert("dynamic".into(), row.dynamic.to_string());
                out.insert("invalid".into(), "false".into());
                out.insert("bytes".into(), "0".into());
                out.insert("packets".into(), "0".into());
            }
            Menu::Connection => {}
        }
        out.retain(|k, v| !(k == "comment" && v.is_empty()));
        out
    }

    /// Every row as REST shows it, in order.
    pub fn list(&mut self, menu: Menu, now: Now) -> Vec<BTreeMap<String, String>> {
        self.expire(now);
        self.table(menu)
            .iter()
            .map(|r| self.render(menu, r, now))
            .collect()
    }

    fn position(&self, menu: Menu, id: &str) -> Option<usize> {
        let id = parse_id(id)?;
        self.table(menu).iter().position(|r| r.id == id)
    }

    /// One row by `.id`; 404 if there is none.
    pub fn get(
        &mut self,
        menu: Menu,
        id: &str,
        now: Now,
    ) -> Result<BTreeMap<String, String>, RosError> {
        self.expire(now);
        let at = self.position(menu, id).ok_or_else(RosError::not_found)?;
        Ok(self.render(menu, &self.table(menu)[at], now))
    }

    /// Check and normalize one property for `menu`.
    fn normalize(menu: Menu, key: &str, value: &str) -> Result<String, RosError> {
        if BOOL_PROPS.contains(&key) {
            return match value.to_ascii_lowercase().as_str() {
                "true" | "yes" => Ok("true".into()),
                "false" | "no" => Ok("false".into()),
                _ => Err(RosError::bad(format!(
                    "input does not match any value of {key}"
                ))),
            };
        }
        match key {
            "action" if !menu.actions().contains(&value) => {
                Err(RosError::bad("input does not match any value of action"))
            }
            "address" if menu.is_address_list() => {
                normalize_address(value, menu == Menu::AddressList6)
            }
            _ => Ok(value.to_owned()),
        }
    }

    /// Split checked properties from the one-shot and timing ones.
    fn checked(
        menu: Menu,
        given: BTreeMap<String, String>,
        adding: bool,
    ) -> Result<Checked, RosError> {
        let mut c = Checked::default();
        for (k, v) in given {
            match k.as_str() {
                "place-before" if adding && menu.is_rules() => c.place_before = Some(v),
                "timeout" if menu.is_address_list() => {
                    let d = parse_ros_duration(&v)
                        .ok_or_else(|| RosError::bad("invalid value for argument timeout"))?;
                    c.timeout = Some(d);
                }
                _ if menu.settable().contains(&k.as_str()) => {
                    let v = Self::normalize(menu, &k, &v)?;
                    c.props.insert(k, v);
                }
                _ => return Err(RosError::bad(format!("unknown parameter {k}"))),
            }
        }
        Ok(c)
    }

    fn duplicate(&self, menu: Menu, list: &str, address: &str, except: Option<u32>) -> bool {
        self.table(menu).iter().any(|r| {
            Some(r.id) != except
                && r.props.get("list").map(String::as_str) == Some(list)
                && r.props.get("address").map(String::as_str) == Some(address)
        })
    }

    /// Add a row (REST `PUT`, `POST …/add`); its `.id`.
    pub fn add(
        &mut self,
        menu: Menu,
        given: BTreeMap<String, String>,
        now: Now,
    ) -> Result<String, RosError> {
        self.expire(now);
        if menu == Menu::Connection {
            return Err(RosError::bad("no such command or directory (add)"));
        }
        let c = Self::checked(menu, given, true)?;
        let mut p = c.props;
        let at = match &c.place_before {
            Some(id) => {
                let at = self
                    .position(menu, id)
                    .ok_or_else(|| RosError::bad("no such item"))?;
                if self.table(menu)[at].builtin {
                    return Err(RosError::bad("failure: cannot move builtin"));
                }
                Some(at)
            }
            None => None,
        };
        if menu.is_address_list() {
            let missing: Vec<&str> = ["list", "address"]
                .into_iter()
                .filter(|k| p.get(*k).is_none_or(String::is_empty))
                .collect();
            if !missing.is_empty() {
                return Err(RosError::bad(format!(
                    "missing value(s) of argument(s) {}",
                    missing.join(", ")
                )));
            }
            p.entry("disabled".into()).or_insert_with(|| "false".into());
            let list = p.get("list").cloned().unwrap_or_default();
            let address = p.get("address").cloned().unwrap_or_default();
            if self.duplicate(menu, &list, &address, None) {
                return Err(RosError::bad("failure: already have such entry"));
            }
            self.counts.entry((list, address)).or_default().0 += 1;
        } else {
            if p.get("chain").is_none_or(String::is_empty) {
                return Err(RosError::bad("missing value(s) of argument(s) chain"));
            }
            for (k, v) in [
                ("action", "accept"),
                ("disabled", "false"),
                ("log", "false"),
                ("log-prefix", ""),
            ] {
                p.entry(k.into()).or_insert_with(|| v.into());
            }
        }
        let expires = c.timeout.filter(|d| !d.is_zero()).map(|d| now.mono + d);
        Ok(id_text(self.insert(menu, p, expires, at, now)))
    }

    /// Change a row (REST `PATCH`, `POST …/set`).
    pub fn set(
        &mut self,
        menu: Menu,
        id: &str,
        given: BTreeMap<String, String>,
        now: Now,
    ) -> Result<(), RosError> {
        self.expire(now);
        if menu == Menu::Connection {
            return Err(RosError::bad("no such command or directory (set)"));
        }
        let at = self.position(menu, id).ok_or_else(RosError::not_found)?;
        let row = &self.table(menu)[at];
        if row.builtin {
            return Err(RosError::bad("failure: cannot change builtin"));
        }
        let c = Self::checked(menu, given, false)?;
        let mut p = row.props.clone();
        p.extend(c.props);
        let row_id = row.id;
        if menu.is_address_list() {
            let list = p.get("list").cloned().unwrap_or_default();
            let address = p.get("address").cloned().unwrap_or_default();
            if self.duplicate(menu, &list, &address, Some(row_id)) {
                return Err(RosError::bad("failure: already have such entry"));
            }
        }
        let row = &mut self.rows(menu)[at];
        row.props = p;
        if let Some(d) = c.timeout {
            row.expires = (!d.is_zero()).then(|| now.mono + d);
            row.dynamic = row.expires.is_some();
        }
        Ok(())
    }

    /// Remove a row (REST `DELETE`, `POST …/remove`).
    pub fn remove(&mut self, menu: Menu, id: &str, now: Now) -> Result<(), RosError> {
        self.expire(now);
        let at = self.position(menu, id).ok_or_else(RosError::not_found)?;
        if self.table(menu)[at].builtin {
            return Err(RosError::bad("failure: cannot remove builtin"));
        }
        let row = self.rows(menu).remove(at);
        if menu.is_address_list() {
            let key = (
                row.props.get("list").cloned().unwrap_or_default(),
                row.props.get("address").cloned().unwrap_or_default(),
            );
            self.counts.entry(key).or_default().1 += 1;
        }
        Ok(())
    }

    /// `POST …/move`: put `ids` (in their current order) before `destination`, or at the
    /// end without one.
    pub fn move_rows(
        &mut self,
        menu: Menu,
        ids: &[String],
        destination: Option<&str>,
    ) -> Result<(), RosError> {
        if !menu.is_rules() {
            return Err(RosError::bad("no such command or directory (move)"));
        }
        let mut moving = Vec::new();
        for id in ids {
            let at = self
                .position(menu, id)
                .ok_or_else(|| RosError::bad("no such item"))?;
            if self.table(menu)[at].builtin {
                return Err(RosError::bad("failure: cannot move builtin"));
            }
            moving.push(self.table(menu)[at].id);
        }
        let dest = match destination {
            Some(d) => {
                let at = self
                    .position(menu, d)
                    .ok_or_else(|| RosError::bad("no such item"))?;
                if self.table(menu)[at].builtin {
                    return Err(RosError::bad("failure: cannot move builtin"));
                }
                Some(self.table(menu)[at].id)
            }
            None => None,
        };
        if dest.is_some_and(|d| moving.contains(&d)) {
            return Ok(());
        }
        let rows = self.rows(menu);
        let (taken, mut kept): (Vec<Row>, Vec<Row>) =
            rows.drain(..).partition(|r| moving.contains(&r.id));
        let at = dest
            .and_then(|d| kept.iter().position(|r| r.id == d))
            .unwrap_or(kept.len());
        kept.splice(at..at, taken);
        *rows = kept;
        Ok(())
    }

    // ---- seeding and assertions -------------------------------------------------------

    /// Put an entry in an address list as if it came with the configuration (no duplicate
    /// check: imported configurations can hold duplicates). Not counted as an add.
    pub fn seed_address(&mut self, list: &str, address: &str, comment: &str, now: Now) -> String {
        let mut p = props(&[("list", list), ("address", address), ("disabled", "false")]);
        if !comment.is_empty() {
            p.insert("comment".into(), comment.into());
        }
        id_text(self.insert(Menu::AddressList, p, None, None, now))
    }

    /// A tracked connection (`ip:port` each), not FastTracked yet.
    pub fn add_connection(&mut self, src: &str, dst: &str, protocol: &str, now: Now) -> String {
        let mut p = props(&[
            ("src-address", src),
            ("dst-address", dst),
            ("reply-src-address", dst),
            ("reply-dst-address", src),
            ("protocol", protocol),
            (
                "tcp-state",
                if protocol == "tcp" { "established" } else { "" },
            ),
            ("timeout", "23h59m59s"),
            ("orig-bytes", "1500"),
            ("repl-bytes", "4200"),
            ("orig-packets", "10"),
            ("repl-packets", "12"),
            ("assured", "true"),
            ("seen-reply", "true"),
            ("confirmed", "true"),
            ("dying", "false"),
            ("expected", "false"),
            ("fasttrack", "false"),
            ("hw-offload", "false"),
            ("srcnat", "true"),
            ("dstnat", "false"),
        ]);
        p.retain(|_, v| !v.is_empty());
        id_text(self.insert(Menu::Connection, p, None, None, now))
    }

    pub fn address_list(&mut self, list: &str, now: Now) -> Vec<AddressEntry> {
        self.expire(now);
        self.table(Menu::AddressList)
            .iter()
            .filter(|r| r.props.get("list").map(String::as_str) == Some(list))
            .map(|r| AddressEntry {
                id: id_text(r.id),
                list: list.to_owned(),
                address: r.props.get("address").cloned().unwrap_or_default(),
                comment: r.props.get("comment").filter(|c| !c.is_empty()).cloned(),
                disabled: r.props.get("disabled").map(String::as_str) == Some("true"),
                dynamic: r.dynamic,
                timeout: r.expires.map(|t| t.saturating_sub(now.mono)),
            })
            .collect()
    }

    pub fn rules(&self, menu: Menu, now: Now) -> Vec<FilterRule> {
        self.table(menu)
            .iter()
            .map(|r| {
                let props = self.render(menu, r, now);
                let get = |k: &str| props.get(k).cloned().unwrap_or_default();
                FilterRule {
                    id: id_text(r.id),
                    chain: get("chain"),
                    action: get("action"),
                    comment: props.get("comment").cloned(),
                    disabled: get("disabled") == "true",
                    dynamic: r.dynamic,
                    props,
                }
            })
            .collect()
    }

    pub fn connections(&self) -> Vec<Connection> {
        self.table(Menu::Connection)
            .iter()
            .map(|r| {
                let get = |k: &str| r.props.get(k).cloned().unwrap_or_default();
                Connection {
                    id: id_text(r.id),
                    src_address: get("src-address"),
                    dst_address: get("dst-address"),
                    protocol: get("protocol"),
                    fasttracked: get("fasttrack") == "true",
                }
            })
            .collect()
    }

    /// How often an entry for `address` was added to / removed from `list` over REST.
    pub fn counts(&self, list: &str, address: &str) -> (u32, u32) {
        self.counts
            .get(&(list.to_owned(), address.to_owned()))
            .copied()
            .unwrap_or_default()
    }

    // ---- packets ----------------------------------------------------------------------

    fn in_list(&self, spec: &str, ip: IpAddr) -> bool {
        let menu = if ip.is_ipv4() {
            Menu::AddressList
        } else {
            Menu::AddressList6
        };
        self.table(menu).iter().any(|r| {
            r.props.get("list").map(String::as_str) == Some(spec)
                && r.props.get("disabled").map(String::as_str) != Some("true")
                && r.props
                    .get("address")
                    .is_some_and(|a| address_contains(a, ip))
        })
    }

    fn matches(&self, rule: &Row, p: &Packet) -> bool {
        rule.props.iter().all(|(k, v)| {
            if RULE_SETTINGS.contains(&k.as_str()) {
                return true;
            }
            let (negate, v) = match v.strip_prefix('!') {
                Some(rest) => (true, rest),
                None => (false, v.as_str()),
            };
            let hit = match k.as_str() {
                "src-address" => address_contains(v, p.src),
                "dst-address" => address_contains(v, p.dst),
                "src-address-list" => self.in_list(v, p.src),
                "dst-address-list" => self.in_list(v, p.dst),
                "connection-state" => v.split(',').any(|s| s == p.state.name()),
                "protocol" => v == p.protocol,
                // A matcher the fake does not model (interfaces, IPsec, NAT state, ...):
                // the rule does not match. LAN-to-internet traffic is what is modelled.
                _ => return false,
            };
            hit != negate
        })
    }

    /// Walk `chain` of `menu`; the first final action, and whether a
    /// `fasttrack-connection` rule matched on the way.
    fn walk(&self, menu: Menu, chain: &str, p: &Packet) -> (Option<&str>, bool) {
        let mut fasttrack = false;
        for rule in self.table(menu) {
            if rule.props.get("chain").map(String::as_str) != Some(chain)
                || rule.props.get("disabled").map(String::as_str) == Some("true")
                || !self.matches(rule, p)
            {
                continue;
            }
            match rule.props.get("action").map(String::as_str) {
                Some(a @ ("accept" | "drop" | "reject" | "tarpit")) => return (Some(a), fasttrack),
                Some("fasttrack-connection") => fasttrack = true,
                _ => {} // passthrough, log, jump (not followed), address-list actions
            }
        }
        (None, fasttrack)
    }

    /// What the forward path does with a packet from `src` to `dst` in `state`: the raw
    /// `prerouting` chain, then the filter `forward` chain; no rule = accept.
    pub fn forward_verdict(
        &self,
        src: IpAddr,
        dst: IpAddr,
        protocol: &str,
        state: ConnState,
    ) -> Verdict {
        self.decide(&Packet {
            src,
            dst,
            protocol: protocol.to_owned(),
            state,
        })
        .0
    }

    fn decide(&self, p: &Packet) -> (Verdict, bool) {
        let (filter, raw) = if p.src.is_ipv4() {
            (Menu::Filter, Some(Menu::Raw))
        } else {
            (Menu::Filter6, None)
        };
        if let Some(raw) = raw
            && self.walk(raw, "prerouting", p).0 == Some("drop")
        {
            return (Verdict::Drop, false);
        }
        match self.walk(filter, "forward", p) {
            (Some("drop"), _) => (Verdict::Drop, false),
            (Some("reject" | "tarpit"), _) => (Verdict::Reject, false),
            (_, fasttrack) => (Verdict::Accept, fasttrack),
        }
    }

    /// The next packet of a tracked connection (state established). A FastTracked
    /// connection skips the firewall; one accepted after a `fasttrack-connection` rule
    /// becomes FastTracked. None if there is no such connection.
    pub fn connection_verdict(&mut self, id: &str) -> Option<Verdict> {
        let at = self.position(Menu::Connection, id)?;
        let row = &self.table(Menu::Connection)[at];
        let get = |k: &str| row.props.get(k).cloned().unwrap_or_default();
        if get("fasttrack") == "true" {
            return Some(Verdict::Fasttracked);
        }
        let ip = |a: String| -> Option<IpAddr> {
            let host = a.rsplit_once(':').map_or(a.as_str(), |(h, _)| h).to_owned();
            host.trim_matches(['[', ']']).parse().ok()
        };
        let packet = Packet {
            src: ip(get("src-address"))?,
            dst: ip(get("dst-address"))?,
            protocol: get("protocol"),
            state: ConnState::Established,
        };
        let (verdict, fasttrack) = self.decide(&packet);
        if fasttrack && verdict == Verdict::Accept {
            self.rows(Menu::Connection)[at]
                .props
                .insert("fasttrack".into(), "true".into());
        }
        Some(verdict)
    }
}

#[derive(Default)]
struct Checked {
    props: BTreeMap<String, String>,
    place_before: Option<String>,
    timeout: Option<Duration>,
}

struct Packet {
    src: IpAddr,
    dst: IpAddr,
    protocol: String,
    state: ConnState,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn now(secs: u64) -> Now {
        Now {
            mono: Duration::from_secs(secs),
            wall: "2026-11-23T17:00:00Z".parse().unwrap(),
        }
    }

    fn p(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        props(pairs)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn durations() {
        assert_eq!(parse_ros_duration("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(
            parse_ros_duration("1d2h3m4s"),
            Some(Duration::from_secs(93_784))
        );
        assert_eq!(parse_ros_duration("1w"), Some(Duration::from_secs(604_800)));
        assert_eq!(
            parse_ros_duration("500ms"),
            Some(Duration::from_millis(500))
        );
        assert_eq!(
            parse_ros_duration("00:05:00"),
            Some(Duration::from_secs(300))
        );
        assert_eq!(
            parse_ros_duration("1d 00:00:10"),
            Some(Duration::from_secs(86_410))
        );
        assert_eq!(parse_ros_duration("90"), Some(Duration::from_secs(90)));
        assert_eq!(parse_ros_duration("soon"), None);
        assert_eq!(parse_ros_duration("5x"), None);
        assert_eq!(format_ros_duration(Duration::from_secs(3598)), "59m58s");
        assert_eq!(format_ros_duration(Duration::from_secs(691_200)), "1w1d");
        assert_eq!(format_ros_duration(Duration::ZERO), "0s");
        assert_eq!(format_ros_duration(Duration::from_millis(250)), "250ms");
    }

    #[test]
    fn addresses_are_normalized_and_matched() {
        assert_eq!(
            normalize_address("192.168.50.21/32", false).unwrap(),
            "192.168.50.21"
        );
        assert_eq!(
            normalize_address("10.1.2.3/8", false).unwrap(),
            "10.0.0.0/8"
        );
        assert_eq!(
            normalize_address("10.0.0.1-10.0.0.9", false).unwrap(),
            "10.0.0.1-10.0.0.9"
        );
        assert_eq!(
            normalize_address("example.com", false).unwrap(),
            "example.com"
        );
        assert!(normalize_address("1.2.3.999", false).is_err());
        assert!(normalize_address("", false).is_err());
        assert!(normalize_address("10.0.0.9-10.0.0.1", false).is_err());
        assert_eq!(normalize_address("fd00::1/64", true).unwrap(), "fd00::/64");
        assert!(address_contains("10.0.0.0/8", ip("10.9.9.9")));
        assert!(!address_contains("10.0.0.0/8", ip("11.0.0.1")));
        assert!(address_contains("10.0.0.1-10.0.0.9", ip("10.0.0.5")));
        assert!(address_contains("192.168.1.1", ip("192.168.1.1")));
        assert!(!address_contains("example.com", ip("192.168.1.1")));
        assert!(address_contains("fd00::/64", ip("fd00::42")));
    }

    #[test]
    fn address_list_add_duplicate_set_remove_and_counts() {
        let mut r = Router::new(true, "Europe/Berlin", now(0));
        let id = r
            .add(
                Menu::AddressList,
                p(&[
                    ("list", "venue-blocked"),
                    ("address", "192.168.50.21/32"),
                    ("comment", "venued st07"),
                ]),
                now(0),
            )
            .unwrap();
        let row = r.get(Menu::AddressList, &id, now(0)).unwrap();
        assert_eq!(row["address"], "192.168.50.21");
        assert_eq!(row["dynamic"], "false");
        assert_eq!(row["disabled"], "false");
        assert_eq!(row["creation-time"], "2026-11-23 18:00:00");
        assert_eq!(
            r.add(
                Menu::AddressList,
                p(&[("list", "venue-blocked"), ("address", "192.168.50.21")]),
                now(1)
            ),
            Err(RosError::bad("failure: already have such entry"))
        );
        // Another list may hold the same address.
        r.add(
            Menu::AddressList,
            p(&[("list", "venue-consoles"), ("address", "192.168.50.21")]),
            now(1),
        )
        .unwrap();
        assert_eq!(
            r.add(Menu::AddressList, p(&[("list", "x")]), now(1)),
            Err(RosError::bad("missing value(s) of argument(s) address"))
        );
        assert_eq!(
            r.add(
                Menu::AddressList,
                p(&[("list", "x"), ("address", "1.2.3.4"), ("colour", "red")]),
                now(1)
            ),
            Err(RosError::bad("unknown parameter colour"))
        );
        r.set(Menu::AddressList, &id, p(&[("disabled", "yes")]), now(2))
            .unwrap();
        assert!(r.address_list("venue-blocked", now(2))[0].disabled);
        r.remove(Menu::AddressList, &id, now(3)).unwrap();
        assert_eq!(
            r.remove(Menu::AddressList, &id, now(3)),
            Err(RosError::not_found())
        );
        assert_eq!(r.counts("venue-blocked", "192.168.50.21"), (1, 1));
        assert_eq!(r.counts("venue-consoles", "192.168.50.21"), (1, 0));
    }

    #[test]
    fn timed_entries_are_dynamic_expire_and_vanish_on_reboot() {
        let mut r = Router::new(false, "UTC", now(0));
        r.add(
            Menu::AddressList,
            p(&[
                ("list", "venue-paid"),
                ("address", "10.0.0.5"),
                ("timeout", "1h"),
            ]),
            now(0),
        )
        .unwrap();
        r.add(
            Menu::AddressList,
            p(&[
                ("list", "venue-paid"),
                ("address", "10.0.0.6"),
                ("timeout", "2h"),
            ]),
            now(0),
        )
        .unwrap();
        let e = r.address_list("venue-paid", now(2));
        assert!(e[0].dynamic);
        assert_eq!(e[0].timeout, Some(Duration::from_secs(3598)));
        assert_eq!(r.list(Menu::AddressList, now(2))[0]["timeout"], "59m58s");
        assert_eq!(r.address_list("venue-paid", now(3600)).len(), 1);
        r.reboot(now(3601));
        assert!(r.address_list("venue-paid", now(3601)).is_empty());
    }

    #[test]
    fn filter_rules_defconf_place_before_move_and_builtin() {
        let mut r = Router::new(true, "UTC", now(0));
        let rules = r.rules(Menu::Filter, now(0));
        assert_eq!(
            rules[0].comment.as_deref(),
            Some("special dummy rule to show fasttrack counters")
        );
        assert!(rules[0].dynamic);
        assert!(rules.iter().any(|r| r.action == "fasttrack-connection"));
        let first = rules
            .iter()
            .find(|r| r.chain == "forward" && !r.dynamic)
            .unwrap()
            .id
            .clone();
        for c in ["venued:block-out", "venued:block-in"] {
            r.add(
                Menu::Filter,
                p(&[
                    ("chain", "forward"),
                    ("action", "drop"),
                    ("comment", c),
                    ("place-before", &first),
                ]),
                now(1),
            )
            .unwrap();
        }
        let order: Vec<String> = r
            .rules(Menu::Filter, now(1))
            .iter()
            .filter(|r| r.chain == "forward")
            .filter_map(|r| r.comment.clone())
            .collect();
        assert_eq!(order[1], "venued:block-out");
        assert_eq!(order[2], "venued:block-in");
        assert_eq!(order[3], "defconf: accept in ipsec policy");
        let dummy = id_text(DUMMY_ID);
        assert_eq!(
            r.add(
                Menu::Filter,
                p(&[("chain", "forward"), ("place-before", &dummy)]),
                now(1)
            ),
            Err(RosError::bad("failure: cannot move builtin"))
        );
        assert_eq!(
            r.remove(Menu::Filter, &dummy, now(1)),
            Err(RosError::bad("failure: cannot remove builtin"))
        );
        assert_eq!(
            r.set(Menu::Filter, &dummy, p(&[("disabled", "true")]), now(1)),
            Err(RosError::bad("failure: cannot change builtin"))
        );
        assert_eq!(
            r.add(
                Menu::Filter,
                p(&[("chain", "forward"), ("action", "explode")]),
                now(1)
            ),
            Err(RosError::bad("input does not match any value of action"))
        );
        // A rule added at the end, moved up before the first venued one.
        let last = r
            .add(
                Menu::Filter,
                p(&[("chain", "forward"), ("comment", "late")]),
                now(2),
            )
            .unwrap();
        let block_out = r.rules(Menu::Filter, now(2))[1].id.clone();
        r.move_rows(Menu::Filter, std::slice::from_ref(&last), Some(&block_out))
            .unwrap();
        assert_eq!(r.rules(Menu::Filter, now(2))[1].id, last);
        r.move_rows(Menu::Filter, std::slice::from_ref(&last), None)
            .unwrap();
        assert_eq!(r.rules(Menu::Filter, now(2)).last().unwrap().id, last);
        assert_eq!(
            r.move_rows(Menu::Filter, &[dummy], None),
            Err(RosError::bad("failure: cannot move builtin"))
        );
    }

    #[test]
    fn blocking_needs_rules_above_fasttrack_and_fasttracked_connections_removed() {
        let mut r = Router::new(true, "UTC", now(0));
        let console = ip("192.168.50.21");
        let server = ip("203.0.113.7");
        let conn = r.add_connection("192.168.50.21:3074", "203.0.113.7:3074", "udp", now(0));
        // The game session runs and gets FastTracked by defconf.
        assert_eq!(r.connection_verdict(&conn), Some(Verdict::Accept));
        assert_eq!(r.connection_verdict(&conn), Some(Verdict::Fasttracked));
        // venued's design: drop rules above fasttrack, then block the console.
        let first = r
            .rules(Menu::Filter, now(0))
            .iter()
            .find(|r| r.chain == "forward" && !r.dynamic)
            .unwrap()
            .id
            .clone();
        for (k, c) in [
            ("src-address-list", "venued:block-out"),
            ("dst-address-list", "venued:block-in"),
        ] {
            r.add(
                Menu::Filter,
                p(&[
                    ("chain", "forward"),
                    ("action", "drop"),
                    (k, "venue-blocked"),
                    ("comment", c),
                    ("place-before", &first),
                ]),
                now(0),
            )
            .unwrap();
        }
        assert_eq!(
            r.forward_verdict(console, server, "udp", ConnState::New),
            Verdict::Accept
        );
        r.add(
            Menu::AddressList,
            p(&[("list", "venue-blocked"), ("address", "192.168.50.21")]),
            now(1),
        )
        .unwrap();
        assert_eq!(
            r.forward_verdict(console, server, "udp", ConnState::New),
            Verdict::Drop
        );
        assert_eq!(
            r.forward_verdict(server, console, "udp", ConnState::Established),
            Verdict::Drop
        );
        // The FastTracked session still flows until its connection is removed.
        assert_eq!(r.connection_verdict(&conn), Some(Verdict::Fasttracked));
        r.remove(Menu::Connection, &conn, now(2)).unwrap();
        assert_eq!(r.connection_verdict(&conn), None);
        // A connection made after the rules never gets FastTracked while blocked.
        let c2 = r.add_connection("192.168.50.21:3075", "203.0.113.7:3074", "udp", now(3));
        assert_eq!(r.connection_verdict(&c2), Some(Verdict::Drop));
        // Raw prerouting drops before anything else.
        r.add(
            Menu::Raw,
            p(&[
                ("chain", "prerouting"),
                ("action", "drop"),
                ("src-address", "192.168.50.30"),
            ]),
            now(4),
        )
        .unwrap();
        assert_eq!(
            r.forward_verdict(ip("192.168.50.30"), server, "tcp", ConnState::New),
            Verdict::Drop
        );
    }

    #[test]
    fn clock_with_offset_and_zone() {
        let mut r = Router::new(false, "Europe/Berlin", now(0));
        let c = r.clock_json(now(0));
        assert_eq!(c["date"], "2026-11-23");
        assert_eq!(c["time"], "18:00:00");
        assert_eq!(c["gmt-offset"], "+01:00");
        assert_eq!(c["dst-active"], "false");
        assert_eq!(c["time-zone-name"], "Europe/Berlin");
        r.set_clock_offset(SignedDuration::from_hours(-48));
        assert_eq!(r.clock_json(now(0))["date"], "2026-11-21");
        assert_eq!(r.resource_json(now(3725))["uptime"], "1h2m5s");
    }
}
