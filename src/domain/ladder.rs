//! The enforcement ladder of a console station, decided without I/O:
//! `(ladder, situation, progress, last power reading, now) -> what the devices should do`.
//!
//! A console cannot lock itself, and a hard power cut can harm it, so the end of paid time
//! climbs a ladder, gently first: the network is blocked, then the console is asked to go
//! into standby (rest mode) and that is confirmed by the plug's power reading; the relay is
//! cut only when that failed, after the grace period, and only if the venue allowed it.
//! The reconciler turns [`Want`] into device calls and feeds back what it observed.

use super::device::Ladder;
use jiff::{SignedDuration, Timestamp};

/// Where the station is, from the engine's point of view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Situation {
    /// A session runs: the console must be powered and online.
    Playing,
    /// Paid time ran out at `at` (the grace period is running or over, or staff stopped
    /// the session then); `grace_over` once the customer's grace period has ended.
    Ended { at: Timestamp, grace_over: bool },
    /// Staff paused the session: the network is blocked, nothing else.
    Paused,
}

/// What the reconciler did and saw since the current ending began (reset when a session
/// starts).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// When the standby action was sent.
    pub standby_sent_at: Option<Timestamp>,
    /// A power reading below the threshold arrived after the standby action.
    pub standby_confirmed: bool,
}

/// A power reading: watts, and when the plug measured it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Reading {
    pub watts: f64,
    pub at: Timestamp,
}

/// What the station's devices should do now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Want {
    /// The plug's relay: on, off, or left as it is.
    pub relay: Option<bool>,
    /// The console's network blocked on the router.
    pub blocked: bool,
    /// Send the standby action now (once per ending).
    pub standby: bool,
}

fn elapsed(since: Timestamp, now: Timestamp) -> SignedDuration {
    now.duration_since(since)
}

fn ms(v: u64) -> SignedDuration {
    SignedDuration::from_millis(i64::try_from(v).unwrap_or(i64::MAX))
}

/// Whether `reading` confirms the standby action sent at `sent`: below the threshold and
/// taken after the action (an older reading says nothing about the console now).
pub fn confirms_standby(ladder: &Ladder, sent: Timestamp, reading: &Reading) -> bool {
    reading.at > sent && reading.watts < f64::from(ladder.standby_below_w)
}

/// The step of the ladder at `now`. `has_standby` and `has_plug` say which devices the
/// station has (a missing device's steps are skipped).
pub fn want(
    ladder: &Ladder,
    situation: Situation,
    progress: &Progress,
    last: Option<&Reading>,
    has_standby: bool,
    now: Timestamp,
) -> Want {
    match situation {
        Situation::Playing => Want {
            relay: Some(true),
            blocked: false,
            standby: false,
        },
        Situation::Paused => Want {
            relay: None,
            blocked: true,
            standby: false,
        },
        Situation::Ended { at, grace_over } => {
            let e = elapsed(at, now);
            let blocked = e >= ms(ladder.block_after_ms);
            let standby = has_standby
                && progress.standby_sent_at.is_none()
                && e >= ms(ladder.standby_after_ms);
            // Cut only when allowed, after grace, at its time, when standby did not
            // confirm, and the console is known to draw power (no reading: no cut, the
            // plug may simply be silent; the reconciler alerts on that instead).
            let drawing = last.is_some_and(|r| r.watts >= f64::from(ladder.standby_below_w));
            let standby_window_over = match progress.standby_sent_at {
                Some(sent) => elapsed(sent, now) >= ms(ladder.standby_confirm_ms),
                None => !has_standby,
            };
            let cut = ladder.allow_cut
                && grace_over
                && e >= ms(ladder.cut_after_ms)
                && !progress.standby_confirmed
                && standby_window_over
                && drawing;
            Want {
                relay: cut.then_some(false),
                blocked,
                standby,
            }
        }
    }
}

/// When [`want`] may next change on its own (a step's time), so the reconciler sleeps
/// until then rather than polling.
pub fn next_step(
    ladder: &Ladder,
    situation: Situation,
    progress: &Progress,
    now: Timestamp,
) -> Option<Timestamp> {
    let Situation::Ended { at, .. } = situation else {
        return None;
    };
    let mut steps = vec![
        at + ms(ladder.block_after_ms),
        at + ms(ladder.standby_after_ms),
        at + ms(ladder.cut_after_ms),
    ];
    if let Some(sent) = progress.standby_sent_at {
        steps.push(sent + ms(ladder.standby_confirm_ms));
    }
    steps.into_iter().filter(|t| *t > now).min()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn end() -> Timestamp {
        ts("2026-11-23T18:00:00Z")
    }

    fn at(secs: i64) -> Timestamp {
        end() + SignedDuration::from_secs(secs)
    }

    fn cutting() -> Ladder {
        Ladder {
            block_after_ms: 0,
            standby_after_ms: 30_000,
            standby_confirm_ms: 60_000,
            standby_below_w: 15,
            cut_after_ms: 120_000,
            allow_cut: true,
        }
    }

    #[test]
    fn the_ladder_climbs_in_order_and_standby_stops_it() {
        let l = cutting();
        let ended = Situation::Ended {
            at: end(),
            grace_over: true,
        };
        let mut p = Progress::default();
        let hot = Reading {
            watts: 180.0,
            at: at(1),
        };
        assert_eq!(
            want(&l, ended, &p, Some(&hot), true, at(0)),
            Want {
                relay: None,
                blocked: true,
                standby: false
            }
        );
        assert!(want(&l, ended, &p, Some(&hot), true, at(30)).standby);
        p.standby_sent_at = Some(at(30));
        assert!(
            !want(&l, ended, &p, Some(&hot), true, at(31)).standby,
            "once"
        );
        // Confirmed by a reading after the action: no cut, ever.
        let cool = Reading {
            watts: 1.4,
            at: at(40),
        };
        assert!(confirms_standby(&l, at(30), &cool));
        assert!(!confirms_standby(
            &l,
            at(30),
            &Reading {
                watts: 1.4,
                at: at(20)
            }
        ));
        p.standby_confirmed = true;
        assert_eq!(want(&l, ended, &p, Some(&cool), true, at(500)).relay, None);
        // Not confirmed and still drawing: cut at its time.
        p.standby_confirmed = false;
        assert_eq!(want(&l, ended, &p, Some(&hot), true, at(119)).relay, None);
        assert_eq!(
            want(&l, ended, &p, Some(&hot), true, at(120)).relay,
            Some(false)
        );
        assert_eq!(next_step(&l, ended, &p, at(100)), Some(at(120)));
    }

    #[test]
    fn a_session_reverses_everything() {
        let w = want(
            &cutting(),
            Situation::Playing,
            &Progress::default(),
            None,
            true,
            at(0),
        );
        assert_eq!(
            w,
            Want {
                relay: Some(true),
                blocked: false,
                standby: false
            }
        );
    }

    fn ladder() -> impl Strategy<Value = Ladder> {
        (
            0u64..200_000,
            0u64..200_000,
            0u64..200_000,
            1u32..50,
            0u64..400_000,
            any::<bool>(),
        )
            .prop_map(|(b, s, c, w, cut, allow)| Ladder {
                block_after_ms: b,
                standby_after_ms: s,
                standby_confirm_ms: c,
                standby_below_w: w,
                cut_after_ms: cut,
                allow_cut: allow,
            })
    }

    proptest! {
        /// Never cut unless allowed, never before grace is over or before its time, never
        /// after a confirmed standby, never while playing or paused.
        #[test]
        fn the_relay_is_cut_only_when_every_condition_holds(
            l in ladder(),
            secs in -100i64..1_000,
            grace_over in any::<bool>(),
            sent in proptest::option::of(0i64..500),
            confirmed in any::<bool>(),
            watts in 0.0f64..300.0,
            has_standby in any::<bool>(),
        ) {
            let p = Progress { standby_sent_at: sent.map(at), standby_confirmed: confirmed };
            let r = Reading { watts, at: at(secs) };
            let ended = Situation::Ended { at: end(), grace_over };
            let w = want(&l, ended, &p, Some(&r), has_standby, at(secs));
            if w.relay == Some(false) {
                prop_assert!(l.allow_cut && grace_over && !confirmed);
                prop_assert!(at(secs) >= end() + ms(l.cut_after_ms));
                prop_assert!(watts >= f64::from(l.standby_below_w));
            }
            prop_assert_ne!(w.relay, Some(true), "the ladder never powers a console on");
            for s in [Situation::Playing, Situation::Paused] {
                prop_assert_ne!(want(&l, s, &p, Some(&r), has_standby, at(secs)).relay, Some(false));
            }
            prop_assert!(!want(&l, Situation::Playing, &p, Some(&r), has_standby, at(secs)).blocked);
            // The next step, if any, is in the future and changes nothing before it.
            if let Some(next) = next_step(&l, ended, &p, at(secs)) {
                prop_assert!(next > at(secs));
            }
        }
    }
}
