//! The venue clock: an anchor plus the monotonic clock. See `domain::timekeeping`.

use crate::domain::time::{add, since};
use crate::domain::timekeeping::{self, Correction, OutagePolicy, TrustSource};
use crate::domain::{EventKind, VenueState};
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};
use std::time::Duration;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ClockStatus {
    /// Who vouched for the current anchor; `None` while counting from a checkpoint.
    pub trusted: Option<TrustSource>,
    /// Boot could not measure the outage; the first trusted reading settles it.
    pub outage_pending: bool,
    pub policy: OutagePolicy,
}

#[derive(Clone, Debug)]
pub struct VenueClock {
    anchor_venue: Timestamp,
    anchor_mono: Duration,
    pub status: ClockStatus,
    last_jump_reported: Option<SignedDuration>,
    threshold: SignedDuration,
}

impl VenueClock {
    /// Decide how the clock starts; returns the clock and the boot events (the boot
    /// record and any session shifts).
    pub fn boot(
        state: &VenueState,
        last_checkpoint: Option<Timestamp>,
        wall: Timestamp,
        mono: Duration,
        trust: Option<TrustSource>,
        policy: OutagePolicy,
        threshold: SignedDuration,
    ) -> (Self, Vec<EventKind>) {
        let d = timekeeping::on_boot(last_checkpoint, wall, trust, policy);
        let mut events = vec![EventKind::ClockBooted {
            last_checkpoint,
            wall,
            venue_now: d.venue_now,
            trusted: d.trusted,
            policy,
            downtime: d.downtime,
            shift: d.shift,
        }];
        events.extend(state.shift_all(d.shift));
        let clock = Self {
            anchor_venue: d.venue_now,
            anchor_mono: mono,
            status: ClockStatus {
                trusted: d.trusted,
                outage_pending: d.outage_pending,
                policy,
            },
            last_jump_reported: None,
            threshold,
        };
        (clock, events)
    }

    pub fn now(&self, mono: Duration) -> Timestamp {
        let elapsed = mono.saturating_sub(self.anchor_mono);
        add(
            self.anchor_venue,
            SignedDuration::try_from(elapsed).unwrap_or(SignedDuration::MAX),
        )
    }

    pub fn anchor(&self) -> (Timestamp, Duration) {
        (self.anchor_venue, self.anchor_mono)
    }

    /// Compare the wall clock with the venue clock; correct from a trusted wall clock,
    /// note (once) a disagreeing untrusted one.
    pub fn observe(
        &mut self,
        state: &VenueState,
        wall: Timestamp,
        mono: Duration,
        trust: Option<TrustSource>,
    ) -> Vec<EventKind> {
        let venue_now = self.now(mono);
        let offset = since(wall, venue_now);
        match trust {
            Some(source) if self.status.trusted.is_none() || offset.abs() > self.threshold => {
                self.correct(state, venue_now, wall, mono, source)
            }
            None if offset.abs() > self.threshold
                && self
                    .last_jump_reported
                    .is_none_or(|r| (r - offset).abs() > self.threshold) =>
            {
                self.last_jump_reported = Some(offset);
                vec![EventKind::ClockJumpIgnored {
                    wall,
                    venue_now,
                    offset,
                }]
            }
            _ => Vec::new(),
        }
    }

    /// A trusted source (the kernel, staff) says the time is `real`.
    pub fn correct(
        &mut self,
        state: &VenueState,
        venue_now: Timestamp,
        real: Timestamp,
        mono: Duration,
        source: TrustSource,
    ) -> Vec<EventKind> {
        let correction: Correction = timekeeping::correction(
            venue_now,
            real,
            self.status.outage_pending,
            self.status.policy,
        );
        let mut events = state.shift_all(correction.shift);
        events.insert(
            0,
            EventKind::ClockCorrected {
                source,
                from: venue_now,
                to: real,
                correction,
            },
        );
        self.anchor_venue = real;
        self.anchor_mono = mono;
        self.status.trusted = Some(source);
        self.status.outage_pending = false;
        self.last_jump_reported = None;
        events
    }
}
