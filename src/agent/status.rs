//! `status.json` in the agent's directory: what the running agent is doing, for
//! `venued agent status` on the PC (the controller sees the same through MQTT).

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use std::path::Path;

pub const FILE: &str = "status.json";

/// How often the running agent rewrites the file at least; older than three times this
/// means the agent is not running.
pub const EVERY: std::time::Duration = std::time::Duration::from_secs(10);

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct LocalStatus {
    pub pid: u32,
    pub version: String,
    pub station: String,
    pub controller: String,
    /// Connected to the controller's MQTT now.
    pub connected: bool,
    /// The lock screen is up (or the OS session locked).
    pub locked: bool,
    /// Time left in the session as the agent counts it, if one runs with an end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub left_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_offset_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_s: Option<u64>,
    /// The overlay helper is connected.
    pub overlay: bool,
    pub updated_at: Timestamp,
}

/// Replace the file atomically (write beside it, then rename).
pub fn write(dir: &Path, status: &LocalStatus) -> std::io::Result<()> {
    let tmp = dir.join(format!("{FILE}.tmp"));
    let mut json = serde_json::to_vec_pretty(status).map_err(std::io::Error::other)?;
    json.push(b'\n');
    std::fs::write(&tmp, json)?;
    std::fs::rename(&tmp, dir.join(FILE))
}

pub fn read(dir: &Path) -> Result<LocalStatus, String> {
    let path = dir.join(FILE);
    let bytes = std::fs::read(&path).map_err(|e| {
        format!(
            "{}: {e} (the agent has not run with this --dir)",
            path.display()
        )
    })?;
    serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))
}

/// Whether a status written at `updated_at` still describes a running agent at `now`.
pub fn fresh(status: &LocalStatus, now: Timestamp) -> bool {
    let age = now.duration_since(status.updated_at);
    age < jiff::SignedDuration::try_from(EVERY * 3).unwrap_or(jiff::SignedDuration::MAX)
}

/// The human summary `venued agent status` prints.
pub fn describe(status: &LocalStatus, now: Timestamp) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let running = fresh(status, now);
    let _ = writeln!(
        out,
        "agent:       {}",
        if running {
            format!("running (pid {}, version {})", status.pid, status.version)
        } else {
            format!(
                "NOT RUNNING (last seen {} ago)",
                crate::domain::time::human(now.duration_since(status.updated_at))
            )
        }
    );
    let _ = writeln!(out, "station:     {}", status.station);
    let _ = writeln!(
        out,
        "controller:  {} ({})",
        status.controller,
        if status.connected {
            "connected"
        } else {
            "unreachable: enforcing the last known end time"
        }
    );
    let screen = match (status.locked, status.left_ms) {
        (true, _) => "locked".to_owned(),
        (false, Some(ms)) => format!(
            "unlocked, {} left",
            crate::agent::overlay::screen::clock(ms)
        ),
        (false, None) => "unlocked (open session)".to_owned(),
    };
    let _ = writeln!(out, "screen:      {screen}");
    let _ = writeln!(
        out,
        "overlay:     {}",
        if status.overlay {
            "connected"
        } else {
            "not running"
        }
    );
    if let Some(user) = &status.user {
        let _ = writeln!(out, "user:        {user}");
    }
    if let Some(idle) = status.idle_s {
        let _ = writeln!(out, "idle:        {idle} s");
    }
    if let Some(offset) = status.clock_offset_ms {
        let _ = writeln!(out, "clock:       {} ms from the controller's", offset);
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn status_round_trips_and_goes_stale() {
        let dir = tempfile::tempdir().unwrap();
        let now: Timestamp = "2026-11-23T18:00:00Z".parse().unwrap();
        let s = LocalStatus {
            pid: 42,
            version: "0.1.0".into(),
            station: "pc-01".into(),
            controller: "192.168.1.10:8883".into(),
            connected: false,
            locked: false,
            left_ms: Some(125_000),
            updated_at: now,
            ..LocalStatus::default()
        };
        write(dir.path(), &s).unwrap();
        assert_eq!(read(dir.path()).unwrap(), s);
        let text = describe(&s, now);
        assert!(text.contains("running (pid 42"), "{text}");
        assert!(text.contains("2:05 left"), "{text}");
        assert!(text.contains("unreachable"), "{text}");
        let later = now + jiff::SignedDuration::from_secs(31);
        assert!(describe(&s, later).contains("NOT RUNNING"));
        assert!(read(&dir.path().join("nope")).is_err());
    }
}
