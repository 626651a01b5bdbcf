//! What the reconciler did to a station's devices and what it caught, as recorded in the
//! audit log: every device action and every disagreement between what a station should
//! be and what its devices report is an event, so a venue can answer "who switched the
//! PS5 on at 02:00" from the log alone.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The longest detail text kept with an action or alert (device answers can be long).
pub const MAX_DETAIL_LEN: usize = 300;

/// One thing the reconciler asked a device to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeviceAction {
    /// Plug relay on (a session started or was restored).
    PowerOn,
    /// Plug relay off (the ladder's last step, or an auto-response).
    PowerOff,
    /// Re-arm the plug's own flip-back timer while the station should be powered.
    Heartbeat,
    /// Console's address added to the router's blocked list.
    Block,
    /// Console's address removed from it.
    Unblock,
    /// The graceful standby (an MQTT action or a configured command).
    Standby,
}

impl DeviceAction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PowerOn => "power_on",
            Self::PowerOff => "power_off",
            Self::Heartbeat => "heartbeat",
            Self::Block => "block",
            Self::Unblock => "unblock",
            Self::Standby => "standby",
        }
    }
}

impl fmt::Display for DeviceAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How an action ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum ActionOutcome {
    /// The device confirmed it (or already was in that state).
    Done,
    /// It failed; the reconciler retries after `retry_in_ms` (with back-off).
    Failed { error: String, retry_in_ms: u64 },
    /// Standby was sent and a later power reading below the threshold (whole watts)
    /// confirmed it.
    Confirmed { watts: u32 },
}

/// What a station's plug drew when the readings were sampled (whole watts: the log is
/// for trends and disputes, not metering).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PowerSample {
    pub station: super::StationId,
    pub watts: u32,
}

/// A reading in whole watts (negative or not-a-number readings count as 0).
pub fn whole_watts(w: f64) -> u32 {
    if w.is_finite() && w > 0.0 {
        // In range by the clamp; the cast only drops the fraction.
        w.round().min(f64::from(u32::MAX)) as u32
    } else {
        0
    }
}

/// A disagreement between what a station should be and what its devices say: tamper,
/// bypass or a failing device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// The console draws power above its standby threshold and no session runs.
    PowerWithoutSession,
    /// The plug went offline (its will, or no answer) while a session runs.
    PlugOffline,
    /// The relay changed and venued did not ask for it (a button, the app, a timer).
    RelaySwitchedByHand,
    /// The console's entry vanished from the router's blocked list while it should be
    /// blocked.
    RouterEntryRemoved,
    /// Standby was sent but no power reading below the threshold followed in time.
    StandbyNotConfirmed,
    /// A device keeps failing; the reconciler goes on retrying.
    DeviceFailing,
}

impl AlertKind {
    pub const ALL: [AlertKind; 6] = [
        Self::PowerWithoutSession,
        Self::PlugOffline,
        Self::RelaySwitchedByHand,
        Self::RouterEntryRemoved,
        Self::StandbyNotConfirmed,
        Self::DeviceFailing,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::PowerWithoutSession => "power_without_session",
            Self::PlugOffline => "plug_offline",
            Self::RelaySwitchedByHand => "relay_switched_by_hand",
            Self::RouterEntryRemoved => "router_entry_removed",
            Self::StandbyNotConfirmed => "standby_not_confirmed",
            Self::DeviceFailing => "device_failing",
        }
    }
}

impl fmt::Display for AlertKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the reconciler does about an alert besides recording it (config
/// `[consoles.responses]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum AutoResponse {
    /// Record it and leave the device as found until the station's state next changes.
    Alert,
    /// Put the device back the way the station should be (relay, router entry).
    Restore,
    /// Block the console's network (a plug offline may mean a bypass).
    Block,
    /// Switch the plug off even without `allow_cut` (power drawn with no session).
    PowerOff,
}

/// Trim free text from a device to what an event keeps.
pub fn detail(s: &str) -> String {
    s.chars().take(MAX_DETAIL_LEN).collect()
}
