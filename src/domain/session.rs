//! The life of one paid session, as pure functions of (session, now, policy).
//!
//! The deadline is always absolute (`ends_at`) while a session runs; while it is paused
//! the remaining time is held as a duration, so paused time can never be counted.

use super::error::DomainError;
use super::ids::{SessionId, StationId};
use super::time::{add, serde_dur, since};
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

/// Venue-wide rules for timers, from the `[sessions]` config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionPolicy {
    /// Warning leads before the deadline, e.g. 5m and 1m. Kept sorted, longest first.
    warnings: Vec<SignedDuration>,
    /// Time between expiry and hard enforcement (log-off, power-off).
    pub grace: SignedDuration,
    /// Upper bound on the time bought for one session, extensions included.
    pub max_duration: SignedDuration,
}

impl SessionPolicy {
    pub fn new(
        mut warnings: Vec<SignedDuration>,
        grace: SignedDuration,
        max_duration: SignedDuration,
    ) -> Self {
        warnings.retain(|w| w.is_positive());
        warnings.sort_by(|a, b| b.cmp(a));
        warnings.dedup();
        Self {
            warnings,
            grace,
            max_duration,
        }
    }

    pub fn warnings(&self) -> &[SignedDuration] {
        &self.warnings
    }
}

impl Default for SessionPolicy {
    fn default() -> Self {
        Self::new(
            vec![SignedDuration::from_mins(5), SignedDuration::from_mins(1)],
            SignedDuration::from_secs(60),
            SignedDuration::from_hours(24),
        )
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// Staff (or the customer through staff) ended it.
    Stopped,
    /// Time ran out and the grace period passed.
    Expired,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum Phase {
    Running {
        since: Timestamp,
    },
    Paused {
        at: Timestamp,
    },
    /// Time is up; the station shows it, but hard enforcement waits until `until`.
    Grace {
        expired_at: Timestamp,
        until: Timestamp,
    },
    Ended {
        at: Timestamp,
        reason: EndReason,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Session {
    pub id: SessionId,
    pub station: StationId,
    pub started_at: Timestamp,
    /// Time bought so far; `None` for an open-ended (postpaid) session.
    #[serde(with = "serde_dur::opt", default)]
    #[schemars(with = "Option<SignedDuration>")]
    pub purchased: Option<SignedDuration>,
    /// Time played before the current running stretch.
    #[serde(with = "serde_dur::req")]
    #[schemars(with = "SignedDuration")]
    pub used_before: SignedDuration,
    /// The shortest warning lead already given for the current deadline.
    #[serde(with = "serde_dur::opt", default)]
    #[schemars(with = "Option<SignedDuration>")]
    pub warned: Option<SignedDuration>,
    #[serde(flatten)]
    pub phase: Phase,
}

/// What happened to a session; carried by every session event next to the new state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SessionChange {
    Started,
    Extended {
        #[serde(with = "serde_dur::req")]
        #[schemars(with = "SignedDuration")]
        by: SignedDuration,
    },
    Paused,
    Resumed,
    Transferred {
        from: StationId,
    },
    Stopped {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    Warned {
        #[serde(with = "serde_dur::req")]
        #[schemars(with = "SignedDuration")]
        lead: SignedDuration,
    },
    Expired,
    /// Grace is over: hard enforcement starts.
    Closed,
    /// The venue clock was corrected; the session's instants moved with it so its
    /// remaining time is unchanged (audited correction, never silent).
    Shifted {
        #[serde(with = "serde_dur::req")]
        #[schemars(with = "SignedDuration")]
        offset: SignedDuration,
    },
}

impl Session {
    pub fn start(
        id: SessionId,
        station: StationId,
        duration: Option<SignedDuration>,
        now: Timestamp,
        policy: &SessionPolicy,
    ) -> Result<Self, DomainError> {
        if let Some(d) = duration {
            check_positive("duration", d)?;
            check_max(d, policy)?;
        }
        let mut session = Self {
            id,
            station,
            started_at: now,
            purchased: duration,
            used_before: SignedDuration::ZERO,
            warned: None,
            phase: Phase::Running { since: now },
        };
        session.arm_warnings(now, policy);
        Ok(session)
    }

    pub fn is_active(&self) -> bool {
        !matches!(self.phase, Phase::Ended { .. })
    }

    /// The absolute deadline, while the session runs and has one.
    pub fn ends_at(&self) -> Option<Timestamp> {
        match (&self.phase, self.purchased) {
            (Phase::Running { since }, Some(total)) => Some(add(*since, total - self.used_before)),
            _ => None,
        }
    }

    /// Active play time up to `now`; paused and grace time are not counted.
    pub fn used(&self, now: Timestamp) -> SignedDuration {
        match &self.phase {
            Phase::Running { since: s } => {
                let stretch = since(now, *s).max(SignedDuration::ZERO);
                let used = self.used_before + stretch;
                match self.purchased {
                    Some(total) => used.min(total),
                    None => used,
                }
            }
            _ => self.used_before,
        }
    }

    /// Time left to play at `now` (fixed sessions only); none once ended. Unused time of
    /// a stopped session is `purchased - used`, a question for refunds, not for play.
    pub fn remaining(&self, now: Timestamp) -> Option<SignedDuration> {
        let total = self.purchased?;
        if !self.is_active() {
            return Some(SignedDuration::ZERO);
        }
        Some((total - self.used(now)).max(SignedDuration::ZERO))
    }

    pub fn extend(
        &self,
        by: SignedDuration,
        now: Timestamp,
        policy: &SessionPolicy,
    ) -> Result<Self, DomainError> {
        self.require_active()?;
        check_positive("extension", by)?;
        let Some(total) = self.purchased else {
            return Err(DomainError::OpenEnded(self.id));
        };
        let new_total = total + by;
        check_max(new_total, policy)?;
        let mut next = self.clone();
        next.purchased = Some(new_total);
        if let Phase::Grace { .. } = self.phase {
            // Back from grace: the customer plays the extension from now; grace was free.
            next.used_before = total;
            next.phase = Phase::Running { since: now };
        }
        next.arm_warnings(now, policy);
        Ok(next)
    }

    pub fn pause(&self, now: Timestamp) -> Result<Self, DomainError> {
        let Phase::Running { .. } = self.phase else {
            return Err(self.wrong_phase("running"));
        };
        let mut next = self.clone();
        next.used_before = self.used(now);
        next.phase = Phase::Paused { at: now };
        Ok(next)
    }

    pub fn resume(&self, now: Timestamp, policy: &SessionPolicy) -> Result<Self, DomainError> {
        let Phase::Paused { .. } = self.phase else {
            return Err(self.wrong_phase("paused"));
        };
        let mut next = self.clone();
        next.phase = Phase::Running { since: now };
        next.arm_warnings(now, policy);
        Ok(next)
    }

    pub fn transfer(&self, to: StationId) -> Result<Self, DomainError> {
        self.require_active()?;
        let mut next = self.clone();
        next.station = to;
        Ok(next)
    }

    pub fn stop(&self, now: Timestamp) -> Result<Self, DomainError> {
        self.require_active()?;
        let mut next = self.clone();
        next.used_before = self.used(now);
        next.phase = Phase::Ended {
            at: now,
            reason: EndReason::Stopped,
        };
        Ok(next)
    }

    /// Move every instant by `offset` (a clock correction), keeping remaining time.
    pub fn shift(&self, offset: SignedDuration) -> Self {
        let mut next = self.clone();
        next.started_at = add(self.started_at, offset);
        next.phase = match &self.phase {
            Phase::Running { since } => Phase::Running {
                since: add(*since, offset),
            },
            Phase::Paused { at } => Phase::Paused {
                at: add(*at, offset),
            },
            Phase::Grace { expired_at, until } => Phase::Grace {
                expired_at: add(*expired_at, offset),
                until: add(*until, offset),
            },
            ended @ Phase::Ended { .. } => ended.clone(),
        };
        next
    }

    /// The next instant at which a timer transition is due.
    pub fn next_deadline(&self, policy: &SessionPolicy) -> Option<Timestamp> {
        match &self.phase {
            Phase::Running { .. } => {
                let ends_at = self.ends_at()?;
                let first_pending = policy
                    .warnings()
                    .iter()
                    .find(|lead| self.warned.is_none_or(|w| **lead < w));
                Some(match first_pending {
                    Some(lead) => add(ends_at, -*lead),
                    None => ends_at,
                })
            }
            Phase::Grace { until, .. } => Some(*until),
            Phase::Paused { .. } | Phase::Ended { .. } => None,
        }
    }

    /// The timer transition due at `now`, if any. Call repeatedly until `None`: a session
    /// found long overdue (after a restart) goes through expiry and closing in order.
    pub fn due(&self, now: Timestamp, policy: &SessionPolicy) -> Option<(SessionChange, Self)> {
        match &self.phase {
            Phase::Running { .. } => {
                let ends_at = self.ends_at()?;
                if now >= ends_at {
                    let mut next = self.clone();
                    next.used_before = self.purchased.unwrap_or(self.used_before);
                    next.phase = Phase::Grace {
                        expired_at: ends_at,
                        until: add(ends_at, policy.grace),
                    };
                    return Some((SessionChange::Expired, next));
                }
                // The most urgent warning whose moment has come, unless already given.
                let lead = policy
                    .warnings()
                    .iter()
                    .rev()
                    .find(|lead| now >= add(ends_at, -**lead))?;
                if self.warned.is_some_and(|w| w <= *lead) {
                    return None;
                }
                let mut next = self.clone();
                next.warned = Some(*lead);
                Some((SessionChange::Warned { lead: *lead }, next))
            }
            Phase::Grace { until, .. } if now >= *until => {
                let mut next = self.clone();
                next.phase = Phase::Ended {
                    at: now,
                    reason: EndReason::Expired,
                };
                Some((SessionChange::Closed, next))
            }
            _ => None,
        }
    }

    /// Whenever the time left changes (start, extend, resume), a warning counts as given
    /// if its lead is at least the time left: a customer who just bought 3 minutes is not
    /// told "5 minutes left", and one extended to 14 minutes hears the 5-minute warning
    /// again.
    fn arm_warnings(&mut self, now: Timestamp, policy: &SessionPolicy) {
        self.warned = self.remaining(now).and_then(|left| {
            policy
                .warnings()
                .iter()
                .filter(|lead| **lead >= left)
                .min()
                .copied()
        });
    }

    fn require_active(&self) -> Result<(), DomainError> {
        if self.is_active() {
            Ok(())
        } else {
            Err(DomainError::SessionEnded(self.id))
        }
    }

    fn wrong_phase(&self, wanted: &'static str) -> DomainError {
        let actual = match self.phase {
            Phase::Running { .. } => "running",
            Phase::Paused { .. } => "paused",
            Phase::Grace { .. } => "in its grace period",
            Phase::Ended { .. } => return DomainError::SessionEnded(self.id),
        };
        DomainError::WrongPhase {
            session: self.id,
            wanted,
            actual,
        }
    }
}

fn check_positive(what: &'static str, d: SignedDuration) -> Result<(), DomainError> {
    if d.is_positive() && d >= SignedDuration::from_secs(1) {
        Ok(())
    } else {
        Err(DomainError::InvalidDuration {
            what,
            reason: "must be at least one second".into(),
        })
    }
}

fn check_max(total: SignedDuration, policy: &SessionPolicy) -> Result<(), DomainError> {
    if total > policy.max_duration {
        Err(DomainError::TooLong {
            max: policy.max_duration,
        })
    } else {
        Ok(())
    }
}
