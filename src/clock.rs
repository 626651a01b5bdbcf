//! The only place that reads the wall clock. Everything else asks a [`Clock`].
//!
//! The engine needs three readings: the wall clock, a monotonic clock (never jumps), and
//! whether anything vouches for the wall clock right now.

use crate::domain::timekeeping::TrustSource;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub trait Clock: Send + Sync + 'static {
    fn wall(&self) -> Timestamp;
    /// Time since an arbitrary origin; never goes backwards, ignores wall-clock steps.
    fn monotonic(&self) -> Duration;
    /// Who vouches for `wall()` now, if anyone.
    fn wall_trust(&self) -> Option<TrustSource>;
}

/// When to believe the system clock (`[clock] trust` in the config).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TrustMode {
    /// Only while the kernel reports it synchronised (NTP, chrony, timesyncd).
    #[default]
    NtpSync,
    /// Always (a box with a good RTC and no network time).
    Always,
    /// Never: only staff confirmation sets the time.
    Never,
}

#[derive(Debug)]
pub struct SystemClock {
    origin: Instant,
    mode: TrustMode,
}

impl SystemClock {
    pub fn new(mode: TrustMode) -> Self {
        Self {
            origin: Instant::now(),
            mode,
        }
    }
}

impl Clock for SystemClock {
    #[allow(clippy::disallowed_methods)]
    fn wall(&self) -> Timestamp {
        Timestamp::now()
    }

    fn monotonic(&self) -> Duration {
        self.origin.elapsed()
    }

    fn wall_trust(&self) -> Option<TrustSource> {
        match self.mode {
            TrustMode::Always => Some(TrustSource::SystemAssumed),
            TrustMode::Never => None,
            TrustMode::NtpSync => kernel_synchronised().then_some(TrustSource::SystemSync),
        }
    }
}

/// Whether the kernel considers its clock synchronised to a time source.
#[cfg(target_os = "linux")]
pub fn kernel_synchronised() -> bool {
    // SAFETY: `timex` is a plain C struct for which all-zero is a valid value; with
    // `modes == 0` adjtimex only reads the kernel's clock state into it and changes nothing.
    let (state, status) = unsafe {
        let mut tx: libc::timex = std::mem::zeroed();
        let state = libc::adjtimex(&mut tx);
        (state, tx.status)
    };
    state >= 0 && state != libc::TIME_ERROR && status & libc::STA_UNSYNC == 0
}

#[cfg(not(target_os = "linux"))]
pub fn kernel_synchronised() -> bool {
    false
}

/// A clock moved by hand: for tests and for `venued simulate`'s accelerated time.
#[derive(Clone, Debug)]
pub struct ManualClock {
    inner: Arc<Mutex<ManualState>>,
}

#[derive(Debug)]
struct ManualState {
    wall: Timestamp,
    mono: Duration,
    trust: Option<TrustSource>,
}

impl ManualClock {
    pub fn new(wall: Timestamp, trust: Option<TrustSource>) -> Self {
        Self {
            inner: Arc::new(Mutex::new(ManualState {
                wall,
                mono: Duration::ZERO,
                trust,
            })),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut ManualState) -> R) -> R {
        // A poisoned lock only means a panicking test thread; the state is still usable.
        let mut guard = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut guard)
    }

    /// Real time passes: both clocks move.
    pub fn advance(&self, d: Duration) {
        self.with(|s| {
            s.mono += d;
            s.wall = crate::domain::time::add(
                s.wall,
                jiff::SignedDuration::try_from(d).unwrap_or(jiff::SignedDuration::MAX),
            );
        });
    }

    /// Someone sets the wall clock: only it moves.
    pub fn jump_wall(&self, d: jiff::SignedDuration) {
        self.with(|s| s.wall = crate::domain::time::add(s.wall, d));
    }

    pub fn set_trust(&self, trust: Option<TrustSource>) {
        self.with(|s| s.trust = trust);
    }
}

impl Clock for ManualClock {
    fn wall(&self) -> Timestamp {
        self.with(|s| s.wall)
    }
    fn monotonic(&self) -> Duration {
        self.with(|s| s.mono)
    }
    fn wall_trust(&self) -> Option<TrustSource> {
        self.with(|s| s.trust)
    }
}
