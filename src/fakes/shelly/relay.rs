//! The relay both generations share, as pure state over tokio instants: output, source,
//! the one-shot flip-back timer (`timer=` / `toggle_after`), auto-off / auto-on, and the
//! power drawn through it.
//!
//! No I/O and no clock reading here: every call gets `now`, so tests can step time by
//! hand and the servers can call [`Relay::tick`] whenever they take the lock.

use super::ReArm;
use std::time::Duration;
use tokio::time::Instant;

/// Wall time derived from one reading at start plus tokio's monotonic time, so `ts`,
/// `unixtime` and `timer_started_at` advance together with the timers (also when a test
/// pauses or advances tokio time).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Time {
    mono0: Instant,
    wall0: f64,
}

impl Time {
    pub(crate) fn new(mono0: Instant, wall0_unix: f64) -> Self {
        Self {
            mono0,
            wall0: wall0_unix,
        }
    }

    /// Unix seconds at `at`.
    pub(crate) fn unix(&self, at: Instant) -> f64 {
        self.wall0 + at.saturating_duration_since(self.mono0).as_secs_f64()
    }
}

/// A running one-shot timer: at `started + duration` the output becomes `to`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Timer {
    pub started: Instant,
    pub duration: Duration,
    pub to: bool,
}

impl Timer {
    pub(crate) fn deadline(&self) -> Instant {
        self.started + self.duration
    }

    pub(crate) fn remaining(&self, now: Instant) -> Duration {
        self.deadline().saturating_duration_since(now)
    }
}

#[derive(Debug)]
pub(crate) struct Relay {
    pub on: bool,
    /// Who changed the output last, in the firmware's own words ("http", "MQTT", …).
    pub source: String,
    /// What the appliance draws while powered, in W.
    pub load_w: f64,
    pub timer: Option<Timer>,
    /// Persistent "turn off this long after any turn-on" (None: disabled).
    pub auto_off: Option<Duration>,
    /// Persistent "turn on this long after any turn-off".
    pub auto_on: Option<Duration>,
    /// Firmware without timers ignores `timer=`, `toggle_after` and auto-off/on.
    pub timers_supported: bool,
    pub rearm: ReArm,
    energy_wh: f64,
    energy_at: Instant,
}

/// The source the firmware reports when its own timer (flip-back or auto) switched.
pub(crate) const TIMER: &str = "timer";

impl Relay {
    pub(crate) fn new(on: bool, now: Instant) -> Self {
        Self {
            on,
            source: "init".into(),
            load_w: 0.0,
            timer: None,
            auto_off: None,
            auto_on: None,
            timers_supported: true,
            rearm: ReArm::Restarts,
            energy_wh: 0.0,
            energy_at: now,
        }
    }

    pub(crate) fn power_w(&self) -> f64 {
        if self.on { self.load_w.max(0.0) } else { 0.0 }
    }

    /// Energy through the relay since [`Relay::reset_energy`], in Wh, up to `now` (timers
    /// due by then fire first, so the sum stops where the output went off).
    pub(crate) fn energy_wh(&mut self, now: Instant) -> f64 {
        self.tick(now);
        self.energy_wh
    }

    pub(crate) fn reset_energy(&mut self, now: Instant) {
        self.energy_wh = 0.0;
        self.energy_at = now;
    }

    fn accumulate(&mut self, now: Instant) {
        if now > self.energy_at {
            let hours = (now - self.energy_at).as_secs_f64() / 3600.0;
            self.energy_wh += self.power_w() * hours;
            self.energy_at = now;
        }
    }

    pub(crate) fn set_load(&mut self, watts: f64, now: Instant) {
        self.accumulate(now);
        self.load_w = if watts.is_finite() {
            watts.max(0.0)
        } else {
            0.0
        };
    }

    /// When the next timer fires, if one runs.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.timer.as_ref().map(Timer::deadline)
    }

    /// Fire every timer due by `now`; true if the output changed.
    pub(crate) fn tick(&mut self, now: Instant) -> bool {
        let before = self.on;
        // A loop: an auto-off firing may arm an auto-on that is due too (catching up after
        // a long stall); durations are never zero, so this ends.
        while let Some(t) = self.timer.filter(|t| t.deadline() <= now) {
            let at = t.deadline();
            self.accumulate(at);
            self.on = t.to;
            self.source = TIMER.into();
            self.timer = self.auto_timer(at);
        }
        self.accumulate(now);
        before != self.on
    }

    /// The auto-off (after an on) or auto-on (after an off) timer, if configured.
    fn auto_timer(&self, now: Instant) -> Option<Timer> {
        if !self.timers_supported {
            return None;
        }
        let (delay, to) = if self.on {
            (self.auto_off?, false)
        } else {
            (self.auto_on?, true)
        };
        (!delay.is_zero()).then_some(Timer {
            started: now,
            duration: delay,
            to,
        })
    }

    /// Switch to `on` because `source` asked, with an optional flip-back after
    /// `flip_after`; returns the previous output (`was_on`).
    ///
    /// Re-sending the current output while a timer runs: with [`ReArm::Restarts`] the
    /// timer is replaced (a new `flip_after` starts from now, none falls back to
    /// auto-off/on); with [`ReArm::Ignored`] the running timer keeps its start and length.
    pub(crate) fn command(
        &mut self,
        on: bool,
        source: &str,
        flip_after: Option<Duration>,
        now: Instant,
    ) -> bool {
        self.tick(now);
        let was_on = self.on;
        let flip_after = flip_after.filter(|d| self.timers_supported && !d.is_zero());
        self.source = source.into();
        if was_on == on && self.rearm == ReArm::Ignored && self.timer.is_some() {
            return was_on;
        }
        self.on = on;
        self.timer = match flip_after {
            Some(duration) => Some(Timer {
                started: now,
                duration,
                to: !on,
            }),
            None => self.auto_timer(now),
        };
        was_on
    }

    /// Flip the output; returns the previous one.
    pub(crate) fn toggle(&mut self, source: &str, now: Instant) -> bool {
        self.tick(now);
        let target = !self.on;
        self.command(target, source, None, now)
    }

    /// The device lost power and came back: output `on`, no timers, source "init"
    /// (auto-off still applies to an output that boots on).
    pub(crate) fn boot(&mut self, on: bool, now: Instant) {
        self.accumulate(now);
        self.on = on;
        self.source = "init".into();
        self.timer = self.auto_timer(now);
    }
}

/// A number of seconds as JSON the way the firmware prints it: whole numbers as integers.
pub(crate) fn secs_json(secs: f64) -> serde_json::Value {
    if secs.fract() == 0.0 && secs.abs() < 1e15 {
        serde_json::Value::from(secs as i64)
    } else {
        serde_json::Value::from(secs)
    }
}

/// Round to `places` decimals (the firmware prints 2 or 3).
pub(crate) fn round(x: f64, places: i32) -> f64 {
    let f = 10f64.powi(places);
    (x * f).round() / f
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn flip_back_timer_fires_once() {
        let t0 = Instant::now();
        let mut r = Relay::new(false, t0);
        assert!(!r.command(true, "http", Some(s(10)), t0));
        assert!(r.on);
        assert_eq!(r.deadline(), Some(t0 + s(10)));
        assert!(!r.tick(t0 + s(9)));
        assert!(r.on);
        assert!(r.tick(t0 + s(10)));
        assert!(!r.on);
        assert_eq!(r.source, "timer");
        assert_eq!(r.timer, None);
    }

    #[test]
    fn rearm_restarts_or_is_ignored() {
        let t0 = Instant::now();
        let mut r = Relay::new(false, t0);
        r.command(true, "http", Some(s(10)), t0);
        assert!(r.command(true, "http", Some(s(10)), t0 + s(5)));
        assert_eq!(r.timer.map(|t| t.started), Some(t0 + s(5)));
        assert!(!r.tick(t0 + s(12)));
        assert!(r.tick(t0 + s(15)));

        let mut r = Relay::new(false, t0);
        r.rearm = ReArm::Ignored;
        r.command(true, "http", Some(s(10)), t0);
        r.command(true, "MQTT", Some(s(30)), t0 + s(5));
        assert_eq!(r.timer.map(|t| (t.started, t.duration)), Some((t0, s(10))));
        assert_eq!(r.source, "MQTT");
        assert!(r.tick(t0 + s(10)));
        // A change of output always replaces the timer, in both modes.
        r.command(true, "http", Some(s(3)), t0 + s(11));
        assert_eq!(r.timer.map(|t| t.started), Some(t0 + s(11)));
        r.command(false, "http", None, t0 + s(12));
        assert_eq!(r.timer, None);
    }

    #[test]
    fn auto_off_follows_every_turn_on() {
        let t0 = Instant::now();
        let mut r = Relay::new(false, t0);
        r.auto_off = Some(s(60));
        r.toggle("button", t0);
        assert_eq!(r.deadline(), Some(t0 + s(60)));
        assert!(r.tick(t0 + s(61)));
        assert!(!r.on);
        assert_eq!(r.timer, None);
        // An explicit flip-back wins over auto-off.
        r.command(true, "http", Some(s(5)), t0 + s(100));
        assert_eq!(r.deadline(), Some(t0 + s(105)));
    }

    #[test]
    fn auto_off_then_auto_on_catch_up() {
        let t0 = Instant::now();
        let mut r = Relay::new(false, t0);
        r.auto_off = Some(s(10));
        r.auto_on = Some(s(5));
        r.command(true, "http", None, t0);
        // off at 10, on at 15, off again at 25: at 26 it is off with an auto-on pending.
        assert!(r.tick(t0 + s(26)));
        assert!(!r.on);
        assert_eq!(r.deadline(), Some(t0 + s(30)));
    }

    #[test]
    fn without_timer_support_timers_are_ignored() {
        let t0 = Instant::now();
        let mut r = Relay::new(false, t0);
        r.timers_supported = false;
        r.auto_off = Some(s(1));
        r.command(true, "http", Some(s(1)), t0);
        assert_eq!(r.timer, None);
        assert!(!r.tick(t0 + s(100)));
    }

    #[test]
    fn power_and_energy() {
        let t0 = Instant::now();
        let mut r = Relay::new(false, t0);
        r.set_load(120.0, t0);
        assert_eq!(r.power_w(), 0.0);
        r.command(true, "http", Some(s(1800)), t0);
        assert_eq!(r.power_w(), 120.0);
        // 30 minutes at 120 W, then the timer turns it off: 60 Wh.
        let e = r.energy_wh(t0 + s(7200));
        assert!((e - 60.0).abs() < 1e-9, "{e}");
        r.set_load(f64::NAN, t0 + s(7200));
        assert_eq!(r.load_w, 0.0);
    }

    #[test]
    fn time_and_numbers() {
        let t0 = Instant::now();
        let t = Time::new(t0, 1_700_000_000.0);
        assert_eq!(t.unix(t0 + Duration::from_millis(1500)), 1_700_000_001.5);
        assert_eq!(secs_json(5.0), serde_json::json!(5));
        assert_eq!(secs_json(0.5), serde_json::json!(0.5));
        assert_eq!(round(1.23456, 2), 1.23);
    }
}
