//! Devices venued drives for stations that cannot run an agent (consoles): smart plugs,
//! the venue router, and MQTT actions; and how each station is enforced with them.
//!
//! A device is configuration, not state: what it is, where it is, how to reach it. Its
//! password (a plug's web password, the router's REST user's) is needed in clear to talk
//! to it, so it travels beside the command and lives only in the store's device table,
//! never in an event and never in an API answer.

use super::acl;
use super::error::DomainError;
use serde::{Deserialize, Deserializer, Serialize};
use std::fmt;
use std::net::IpAddr;

/// The longest device name accepted.
pub const MAX_DEVICE_NAME_LEN: usize = 40;
/// The largest payload an MQTT action may publish.
pub const MAX_ACTION_PAYLOAD: usize = 4096;

/// 1-40 lowercase letters, digits, `-` and `_`, starting with a letter or digit: names
/// appear in URLs and logs.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, schemars::JsonSchema)]
#[serde(transparent)]
#[schemars(extend("pattern" = "^[a-z0-9][a-z0-9_-]{0,39}$", "examples" = ["plug-07"]))]
pub struct DeviceName(String);

impl DeviceName {
    pub fn parse(s: &str) -> Result<Self, DomainError> {
        let invalid = |reason| DomainError::InvalidField {
            field: "name",
            reason,
        };
        if s.is_empty() || s.len() > MAX_DEVICE_NAME_LEN {
            return Err(invalid("a device name has 1 to 40 characters"));
        }
        let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
        let first_ok = s.chars().next().is_some_and(allowed);
        if !first_ok || !s.chars().all(|c| allowed(c) || c == '-' || c == '_') {
            return Err(invalid(
                "a device name may only contain lowercase letters, digits, '-' and '_', and starts with a letter or digit",
            ));
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DeviceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for DeviceName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// What a device is and where to reach it, tagged by `"type"`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum DeviceKind {
    /// A Shelly Gen1 plug (Plug, Plug S): MQTT under `shellies/<mqtt_id>/`, HTTP fallback.
    ShellyGen1 {
        /// Address of its web interface, `host` or `host:port` (no scheme).
        host: String,
        /// Its MQTT id, e.g. `shellyplug-s-AABBCC`; without it, HTTP only.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mqtt_id: Option<String>,
    },
    /// A Shelly Gen2+ plug (Plus Plug S, Gen3, Gen4): MQTT RPC under `<mqtt_prefix>/`,
    /// HTTP RPC fallback with digest auth.
    ShellyGen2 {
        host: String,
        /// Its MQTT topic prefix (by default its device id, e.g.
        /// `shellyplusplugs-aabbccddeeff`); without it, HTTP only.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mqtt_prefix: Option<String>,
    },
    /// A Tasmota plug: `cmnd/<topic>/…`, `stat/<topic>/…`, `tele/<topic>/…`, HTTP `/cm`.
    Tasmota {
        host: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        topic: Option<String>,
    },
    /// A MikroTik RouterOS v7 router, driven over its REST API (HTTPS, basic auth).
    Mikrotik {
        /// e.g. `https://192.168.88.1` (HTTPS only).
        url: String,
        /// The RouterOS user venued logs in as.
        user: String,
        /// The address list venued owns (default `venue-blocked`).
        #[serde(default = "default_list")]
        list: String,
        /// SHA-256 fingerprint (hex) of the router's certificate, for the self-signed
        /// certificate RouterOS makes; without it the system's roots must trust it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tls_fingerprint: Option<String>,
    },
    /// Publish `payload` on `topic` (a PS5-MQTT or HDMI-CEC bridge, a Home Assistant
    /// script): the graceful standby of the enforcement ladder.
    MqttAction {
        topic: String,
        payload: String,
        #[serde(default)]
        retain: bool,
    },
}

fn default_list() -> String {
    "venue-blocked".to_owned()
}

impl DeviceKind {
    /// Its `"type"` as written in the API.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::ShellyGen1 { .. } => "shelly_gen1",
            Self::ShellyGen2 { .. } => "shelly_gen2",
            Self::Tasmota { .. } => "tasmota",
            Self::Mikrotik { .. } => "mikrotik",
            Self::MqttAction { .. } => "mqtt_action",
        }
    }

    /// A plug: it can switch a station's power and measure what it draws.
    pub fn is_plug(&self) -> bool {
        matches!(
            self,
            Self::ShellyGen1 { .. } | Self::ShellyGen2 { .. } | Self::Tasmota { .. }
        )
    }

    /// Check every field; the first problem found is the error.
    pub fn validate(&self) -> Result<(), DomainError> {
        let invalid = |field, reason| Err(DomainError::InvalidField { field, reason });
        match self {
            Self::ShellyGen1 { host, mqtt_id } => {
                check_host(host)?;
                if let Some(id) = mqtt_id
                    && !topic_level(id)
                {
                    return invalid("mqtt_id", "must be one MQTT topic level (no '/', '+', '#')");
                }
            }
            Self::ShellyGen2 { host, mqtt_prefix } => {
                check_host(host)?;
                if let Some(p) = mqtt_prefix {
                    check_device_topic("mqtt_prefix", p)?;
                }
            }
            Self::Tasmota { host, topic } => {
                check_host(host)?;
                if let Some(t) = topic
                    && !topic_level(t)
                {
                    return invalid("topic", "must be one MQTT topic level (no '/', '+', '#')");
                }
            }
            Self::Mikrotik {
                url,
                user,
                list,
                tls_fingerprint,
            } => {
                let Some(rest) = url.strip_prefix("https://") else {
                    return invalid("url", "must start with https:// (RouterOS REST over TLS)");
                };
                check_host(rest.trim_end_matches('/')).map_err(|_| DomainError::InvalidField {
                    field: "url",
                    reason: "must be https://<router address>[:port], without a path",
                })?;
                if user.is_empty() || user.len() > 64 || user.chars().any(char::is_control) {
                    return invalid("user", "must be 1 to 64 printable characters");
                }
                if list.is_empty()
                    || list.len() > 64
                    || !list
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                {
                    return invalid("list", "must be 1 to 64 letters, digits, '-' or '_'");
                }
                if let Some(f) = tls_fingerprint {
                    let hex: String = f.chars().filter(|c| *c != ':').collect();
                    if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
                        return invalid(
                            "tls_fingerprint",
                            "must be a SHA-256 fingerprint: 64 hex digits (colons allowed)",
                        );
                    }
                }
            }
            Self::MqttAction { topic, payload, .. } => {
                check_device_topic("topic", topic)?;
                if payload.len() > MAX_ACTION_PAYLOAD {
                    return invalid("payload", "is longer than 4096 bytes");
                }
            }
        }
        Ok(())
    }
}

/// `host` or `host:port` or `[v6]:port`: no scheme, path, user info or spaces.
fn check_host(host: &str) -> Result<(), DomainError> {
    let ok = !host.is_empty()
        && host.len() <= 253
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'));
    if ok {
        Ok(())
    } else {
        Err(DomainError::InvalidField {
            field: "host",
            reason: "must be a host name or IP address, optionally with :port (no scheme or path)",
        })
    }
}

fn topic_level(s: &str) -> bool {
    !s.is_empty() && s.len() <= 128 && acl::valid_topic(s) && !s.contains('/')
}

/// A topic venued publishes to or reads from a device: valid, not venued's own root, no
/// `$` system topic.
fn check_device_topic(field: &'static str, t: &str) -> Result<(), DomainError> {
    let reserved = t == "venued" || t.starts_with("venued/") || t.starts_with('$');
    if t.is_empty() || t.len() > 256 || !acl::valid_topic(t) || reserved {
        return Err(DomainError::InvalidField {
            field,
            reason: "must be a valid MQTT topic without wildcards, outside venued/ and $",
        });
    }
    Ok(())
}

/// A device as the API shows it: never its password, only whether it has one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Device {
    pub name: DeviceName,
    #[serde(flatten)]
    pub kind: DeviceKind,
    pub has_password: bool,
}

/// How a console station is enforced: its plug, its network block, its graceful standby
/// action, and the timing of the ladder between them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Enforcement {
    /// The plug that powers the console (and measures its draw).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plug: Option<DeviceName>,
    /// The router rule that cuts the console's network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkBlock>,
    /// The MQTT action that puts the console into standby (rest mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub standby: Option<DeviceName>,
    /// A program from the config file's `[consoles.commands]`, by name, run as the
    /// standby action (beside or instead of `standby`). Programs are never defined
    /// through the API; an unknown name is reported when the ladder reaches it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub standby_command: Option<DeviceName>,
    #[serde(default)]
    pub ladder: Ladder,
}

impl Enforcement {
    /// Whether this enforcement names `device`.
    pub fn uses(&self, device: &DeviceName) -> bool {
        self.plug.as_ref() == Some(device)
            || self.standby.as_ref() == Some(device)
            || self.network.as_ref().is_some_and(|n| &n.router == device)
    }
}

/// The console's address on the venue network, blocked on `router` when time is up.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NetworkBlock {
    pub router: DeviceName,
    #[schemars(with = "String")]
    pub address: IpAddr,
}

/// When each step of the ladder runs, counted from the end of paid time (`ends_at`), in
/// milliseconds. Defaults are safe for a PS5: the relay is never cut unless allowed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Ladder {
    /// Network block this long after the end (0: at once).
    pub block_after_ms: u64,
    /// The standby action this long after the end.
    pub standby_after_ms: u64,
    /// How long after the standby action a power reading below `standby_below_w` must
    /// arrive to count as confirmed.
    pub standby_confirm_ms: u64,
    /// Below this draw (watts) the console is in standby or off.
    pub standby_below_w: u32,
    /// Cut the relay this long after the end, if the console still draws power and
    /// `allow_cut` is set.
    pub cut_after_ms: u64,
    /// Whether cutting the plug's relay is allowed at all (a hard power cut can harm a
    /// console: a PS5 cut in rest mode needs a button press, a PS4 runs a disk check).
    pub allow_cut: bool,
}

impl Default for Ladder {
    fn default() -> Self {
        Self {
            block_after_ms: 0,
            standby_after_ms: 60_000,
            standby_confirm_ms: 120_000,
            standby_below_w: 15,
            cut_after_ms: 600_000,
            allow_cut: false,
        }
    }
}

/// The longest any ladder step may wait: a day.
const MAX_STEP_MS: u64 = 86_400_000;

impl Ladder {
    pub fn validate(&self) -> Result<(), DomainError> {
        let steps = [
            self.block_after_ms,
            self.standby_after_ms,
            self.standby_confirm_ms,
            self.cut_after_ms,
        ];
        if steps.iter().any(|ms| *ms > MAX_STEP_MS) {
            return Err(DomainError::InvalidField {
                field: "ladder",
                reason: "each delay must be at most 86400000 ms (a day)",
            });
        }
        if self.standby_below_w > 5_000 {
            return Err(DomainError::InvalidField {
                field: "ladder.standby_below_w",
                reason: "must be at most 5000 W",
            });
        }
        if self.allow_cut && self.cut_after_ms < self.standby_after_ms + self.standby_confirm_ms {
            return Err(DomainError::InvalidField {
                field: "ladder.cut_after_ms",
                reason: "must leave the standby action its confirmation time first (at least standby_after_ms + standby_confirm_ms)",
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn device_names_are_safe() {
        assert!(DeviceName::parse("plug-07").is_ok());
        assert!(DeviceName::parse(&"a".repeat(40)).is_ok());
        assert!(DeviceName::parse(&"a".repeat(41)).is_err());
        assert!(DeviceName::parse(&format!("{}X", "a".repeat(35))).is_err());
        assert!(DeviceName::parse("Plug").is_err());
        assert!(DeviceName::parse("").is_err());
        assert!(DeviceName::parse("-x").is_err());
        assert!(serde_json::from_str::<DeviceName>("\"a/b\"").is_err());
    }

    #[test]
    fn devices_read_strictly_and_validate() {
        let d: DeviceKind = serde_json::from_str(
            r#"{"type":"shelly_gen2","host":"192.168.1.50","mqtt_prefix":"shellyplusplugs-aabbcc"}"#,
        )
        .unwrap();
        assert!(d.validate().is_ok());
        assert!(d.is_plug());
        for bad in [
            r#"{"type":"shelly_gen2","host":"http://x"}"#,
            r#"{"type":"tasmota","host":"x","topic":"a/b"}"#,
            r#"{"type":"mikrotik","url":"http://r","user":"venued"}"#,
            r#"{"type":"mikrotik","url":"https://r/rest","user":"venued"}"#,
            r#"{"type":"mikrotik","url":"https://r","user":"venued","tls_fingerprint":"abc"}"#,
            r#"{"type":"mqtt_action","topic":"venued/v1/x","payload":""}"#,
            r#"{"type":"mqtt_action","topic":"ps5/+/standby","payload":""}"#,
        ] {
            let d: DeviceKind = serde_json::from_str(bad).unwrap();
            assert!(d.validate().is_err(), "{bad} was accepted");
        }
        assert!(
            serde_json::from_str::<DeviceKind>(r#"{"type":"shelly_gen1","host":"x","port":1}"#)
                .is_err(),
            "unknown fields are refused"
        );
        assert!(serde_json::from_str::<DeviceKind>(r#"{"type":"command","name":"x"}"#).is_err());
        let m: DeviceKind =
            serde_json::from_str(r#"{"type":"mikrotik","url":"https://10.0.0.1:8443","user":"v"}"#)
                .unwrap();
        assert!(m.validate().is_ok());
        assert!(matches!(m, DeviceKind::Mikrotik { ref list, .. } if list == "venue-blocked"));
    }

    #[test]
    fn the_default_ladder_never_cuts_and_bad_timings_are_refused() {
        let l = Ladder::default();
        assert!(!l.allow_cut);
        assert!(l.validate().is_ok());
        let tight = Ladder {
            allow_cut: true,
            cut_after_ms: 1_000,
            ..Ladder::default()
        };
        assert!(tight.validate().is_err());
        let long = Ladder {
            block_after_ms: MAX_STEP_MS + 1,
            ..Ladder::default()
        };
        assert!(long.validate().is_err());
        let e: Enforcement =
            serde_json::from_str(r#"{"plug":"plug-07","ladder":{"allow_cut":true}}"#).unwrap();
        assert_eq!(
            e.ladder.standby_after_ms, 60_000,
            "unset fields keep defaults"
        );
        assert!(serde_json::from_str::<Enforcement>(r#"{"plug":"p","relay":1}"#).is_err());
    }
}
