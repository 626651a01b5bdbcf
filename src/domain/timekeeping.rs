//! Decisions about time itself: how the venue clock starts after a boot, and how it is
//! corrected when a trusted source speaks. Pure: the engine feeds it readings.
//!
//! The venue clock is an anchor (a venue instant at a monotonic reading) plus the
//! monotonic clock. It never follows an untrusted wall clock, so a wall-clock jump can
//! never expire a session early. When a trusted source disagrees with it, every running
//! session is shifted by the same offset in an audited event, keeping its remaining time.

use super::time::{serde_dur, since};
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

/// What happens to running sessions for the time the controller was down.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum OutagePolicy {
    /// Customers keep the time they had when the power went.
    #[default]
    Pause,
    /// The outage counts as played time (once a trusted clock says how long it was).
    Consume,
}

/// Who vouched for the current time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TrustSource {
    /// The kernel reports the clock synchronised (NTP, chrony, systemd-timesyncd).
    SystemSync,
    /// The operator configured the system clock as always trusted (e.g. a good RTC).
    SystemAssumed,
    /// A staff member confirmed the time.
    Staff,
    /// The venue's MikroTik router's clock, read over its REST API by the reconciler
    /// while the venue clock was untrusted.
    Router,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootDecision {
    /// The venue clock's reading at boot.
    pub venue_now: Timestamp,
    pub trusted: Option<TrustSource>,
    /// How far to move running sessions (audited).
    pub shift: SignedDuration,
    /// The measured outage, when a trusted clock could measure it.
    pub downtime: Option<SignedDuration>,
    /// The outage could not be measured yet; the first trusted reading settles it.
    pub outage_pending: bool,
}

pub fn on_boot(
    last_checkpoint: Option<Timestamp>,
    wall: Timestamp,
    wall_trust: Option<TrustSource>,
    policy: OutagePolicy,
) -> BootDecision {
    let Some(checkpoint) = last_checkpoint else {
        // A new store: nothing to protect yet.
        return BootDecision {
            venue_now: wall,
            trusted: wall_trust,
            shift: SignedDuration::ZERO,
            downtime: None,
            outage_pending: false,
        };
    };
    match wall_trust {
        Some(source) => {
            let gap = since(wall, checkpoint);
            let shift = match policy {
                // Move deadlines by the outage (or back, if the old clock ran ahead).
                OutagePolicy::Pause => gap,
                OutagePolicy::Consume => gap.min(SignedDuration::ZERO),
            };
            BootDecision {
                venue_now: wall,
                trusted: Some(source),
                shift,
                downtime: Some(gap.max(SignedDuration::ZERO)),
                outage_pending: false,
            }
        }
        // No trusted clock: carry on from the checkpoint on the monotonic clock. The
        // outage is not counted (never early expiry); free play is bounded by the
        // checkpoint interval.
        None => BootDecision {
            venue_now: checkpoint,
            trusted: None,
            shift: SignedDuration::ZERO,
            downtime: None,
            outage_pending: true,
        },
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Correction {
    /// True time minus venue time.
    #[serde(with = "serde_dur::req")]
    #[schemars(with = "SignedDuration")]
    pub offset: SignedDuration,
    /// How far running sessions move.
    #[serde(with = "serde_dur::req")]
    #[schemars(with = "SignedDuration")]
    pub shift: SignedDuration,
    /// The part of the offset counted as played (policy `consume` after an outage).
    #[serde(with = "serde_dur::req")]
    #[schemars(with = "SignedDuration")]
    pub consumed: SignedDuration,
}

/// Whether a time a person confirms could be now: this software did not exist before 2024,
/// and a typo of a century must not shift every session by it.
pub fn plausible(t: Timestamp) -> bool {
    // 2024-01-01T00:00:00Z and 2200-01-01T00:00:00Z as Unix seconds.
    (1_704_067_200..7_258_118_400).contains(&t.as_second())
}

/// A trusted source says the time is `real` while the venue clock says `venue_now`.
pub fn correction(
    venue_now: Timestamp,
    real: Timestamp,
    outage_pending: bool,
    policy: OutagePolicy,
) -> Correction {
    let offset = since(real, venue_now);
    let consumed = if outage_pending && policy == OutagePolicy::Consume {
        offset.max(SignedDuration::ZERO)
    } else {
        SignedDuration::ZERO
    };
    Correction {
        offset,
        shift: offset - consumed,
        consumed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap_or(Timestamp::UNIX_EPOCH)
    }

    #[test]
    fn boot_with_trusted_clock_pauses_the_outage() {
        let d = on_boot(
            Some(ts("2026-01-01T10:00:00Z")),
            ts("2026-01-01T10:20:00Z"),
            Some(TrustSource::SystemSync),
            OutagePolicy::Pause,
        );
        assert_eq!(d.shift, SignedDuration::from_mins(20));
        assert_eq!(d.downtime, Some(SignedDuration::from_mins(20)));
    }

    #[test]
    fn boot_with_trusted_clock_can_consume_the_outage() {
        let d = on_boot(
            Some(ts("2026-01-01T10:00:00Z")),
            ts("2026-01-01T10:20:00Z"),
            Some(TrustSource::SystemSync),
            OutagePolicy::Consume,
        );
        assert_eq!(d.shift, SignedDuration::ZERO);
    }

    #[test]
    fn boot_with_clock_in_the_past_never_expires_early() {
        // An RTC-less box boots in 1970: the venue clock continues from the checkpoint.
        let d = on_boot(
            Some(ts("2026-01-01T10:00:00Z")),
            ts("1970-01-01T00:00:10Z"),
            None,
            OutagePolicy::Consume,
        );
        assert_eq!(d.venue_now, ts("2026-01-01T10:00:00Z"));
        assert_eq!(d.shift, SignedDuration::ZERO);
        assert!(d.outage_pending);
    }

    #[test]
    fn correction_consumes_only_a_pending_outage_under_consume() {
        let v = ts("2026-01-01T10:00:00Z");
        let r = ts("2026-01-01T10:30:00Z");
        let c = correction(v, r, true, OutagePolicy::Consume);
        assert_eq!(c.shift, SignedDuration::ZERO);
        assert_eq!(c.consumed, SignedDuration::from_mins(30));
        let c = correction(v, r, false, OutagePolicy::Consume);
        assert_eq!(c.shift, SignedDuration::from_mins(30));
        let back = correction(r, v, true, OutagePolicy::Consume);
        assert_eq!(back.shift, SignedDuration::from_mins(-30));
    }
}
