//! What the station's screen shows, decided by the agent and drawn by the helper.
//!
//! The agent owns the truth (the enforcer); the helper in the user's session only draws a
//! [`Screen`] and counts its countdown down between updates. Everything here is pure so the
//! look of every state is tested without a display.

use serde::{Deserialize, Serialize};

/// One screenful, sent to the helper on every change (and again every few seconds).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case", deny_unknown_fields)]
pub enum Screen {
    /// The full-screen kiosk page over everything: the PC may not be used.
    Locked {
        /// The station's display name, e.g. "PC 07".
        station: String,
        why: LockReason,
        /// The last staff message, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
    },
    /// The always-on-top countdown in a corner while a session runs.
    Countdown {
        station: String,
        /// Time left when this was sent; `None` for an open-ended (postpaid) session.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        left_ms: Option<i64>,
        /// The paid time is over; `left_ms` counts down the grace period.
        #[serde(default)]
        grace: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
    },
}

/// Why the kiosk page is up; it decides the page's headline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case", deny_unknown_fields)]
pub enum LockReason {
    /// No session: the station is free for the next customer.
    Free,
    /// Staff paused the session; this much time is kept.
    Paused { left_ms: Option<i64> },
    /// Staff locked the station during a session.
    Staff,
    /// The agent has not yet heard from the controller since it started.
    Connecting,
}

impl Screen {
    /// Whether this is the full-screen lock page (else the small countdown).
    pub fn is_kiosk(&self) -> bool {
        matches!(self, Screen::Locked { .. })
    }

    /// The same screen `elapsed_ms` later: the countdown runs down (never below zero).
    pub fn after(&self, elapsed_ms: i64) -> Screen {
        let mut s = self.clone();
        if let Screen::Countdown {
            left_ms: Some(left),
            ..
        } = &mut s
        {
            *left = left.saturating_sub(elapsed_ms).max(0);
        }
        s
    }

    /// The lines of text the screen shows, top to bottom, with their role. The renderer
    /// lays these out; tests read them.
    pub fn lines(&self) -> Vec<(Role, String)> {
        match self {
            Screen::Locked {
                station,
                why,
                message,
            } => {
                let mut out = vec![(Role::Title, station.clone())];
                out.push((
                    Role::Headline,
                    match why {
                        LockReason::Free => {
                            "free \u{2014} log in with your member account or ask staff".to_owned()
                        }
                        LockReason::Paused { left_ms: Some(ms) } => {
                            format!("paused \u{2014} {} kept for you", clock(*ms))
                        }
                        LockReason::Paused { left_ms: None } => "paused by staff".to_owned(),
                        LockReason::Staff => {
                            "locked by staff \u{2014} please ask at the desk".into()
                        }
                        LockReason::Connecting => "starting \u{2014} please ask staff".into(),
                    },
                ));
                if let Some(m) = message {
                    out.push((Role::Message, m.clone()));
                }
                out
            }
            Screen::Countdown {
                station,
                left_ms,
                grace,
                message,
            } => {
                let mut out = vec![(Role::Title, station.clone())];
                out.push((
                    Role::Countdown,
                    match left_ms {
                        Some(ms) => clock(*ms),
                        None => "open session".to_owned(),
                    },
                ));
                if *grace {
                    out.push((Role::Message, "time is up \u{2014} save your work".into()));
                }
                if let Some(m) = message {
                    out.push((Role::Message, m.clone()));
                }
                out
            }
        }
    }

    /// The countdown's colour band.
    pub fn band(&self) -> Band {
        match self {
            Screen::Locked { .. } => Band::Locked,
            Screen::Countdown { grace: true, .. } => Band::Red,
            Screen::Countdown { left_ms: None, .. } => Band::Green,
            Screen::Countdown {
                left_ms: Some(ms), ..
            } => Band::of(*ms),
        }
    }
}

/// What a line of text is, for its size and colour.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Title,
    Headline,
    Countdown,
    Message,
}

/// Green above 10 minutes, orange from 5 to 10, red under 5.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Band {
    Green,
    Orange,
    Red,
    Locked,
}

impl Band {
    pub fn of(left_ms: i64) -> Band {
        const MIN: i64 = 60_000;
        if left_ms > 10 * MIN {
            Band::Green
        } else if left_ms >= 5 * MIN {
            Band::Orange
        } else {
            Band::Red
        }
    }

    /// Background colour, 0x00RRGGBB. Dark enough for white text to read (and to OCR).
    pub fn rgb(self) -> u32 {
        match self {
            Band::Green => 0x0014_6b2e,
            Band::Orange => 0x00a8_5400,
            Band::Red => 0x00a0_1010,
            Band::Locked => 0x0010_1828,
        }
    }
}

/// Time left as a wall-clock-style countdown: `1:05:09`, `12:34`, `0:07`. Seconds are
/// rounded up, so "0:00" appears only when the time is really gone.
pub fn clock(ms: i64) -> String {
    let s = (ms.max(0) + 999) / 1000;
    let (h, m, s) = (s / 3600, (s / 60) % 60, s % 60);
    if h > 0 {
        format!("{h}:{m:02}:{s:02}")
    } else {
        format!("{m}:{s:02}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_rounds_up_and_shows_hours_only_when_needed() {
        assert_eq!(clock(0), "0:00");
        assert_eq!(clock(1), "0:01");
        assert_eq!(clock(59_001), "1:00");
        assert_eq!(clock(12 * 60_000 + 34_000), "12:34");
        assert_eq!(clock(3_909_000), "1:05:09");
        assert_eq!(clock(-5), "0:00");
    }

    #[test]
    fn bands_follow_the_issue_thresholds() {
        assert_eq!(Band::of(10 * 60_000 + 1), Band::Green);
        assert_eq!(Band::of(10 * 60_000), Band::Orange);
        assert_eq!(Band::of(5 * 60_000), Band::Orange);
        assert_eq!(Band::of(5 * 60_000 - 1), Band::Red);
        let grace = Screen::Countdown {
            station: "PC 01".into(),
            left_ms: Some(3_600_000),
            grace: true,
            message: None,
        };
        assert_eq!(grace.band(), Band::Red);
    }

    #[test]
    fn the_countdown_runs_down_and_stops_at_zero() {
        let s = Screen::Countdown {
            station: "PC 01".into(),
            left_ms: Some(2_000),
            grace: false,
            message: None,
        };
        assert_eq!(s.after(500).lines()[1].1, "0:02");
        assert_eq!(s.after(1_500).lines()[1].1, "0:01");
        assert_eq!(s.after(9_000).lines()[1].1, "0:00");
    }

    #[test]
    fn the_free_page_names_the_station_and_tells_what_to_do() {
        let s = Screen::Locked {
            station: "PC 07".into(),
            why: LockReason::Free,
            message: Some("back in 5".into()),
        };
        let lines = s.lines();
        assert_eq!(lines[0], (Role::Title, "PC 07".to_owned()));
        assert!(lines[1].1.starts_with("free"), "{lines:?}");
        assert_eq!(lines[2].1, "back in 5");
        assert!(s.is_kiosk());
    }

    #[test]
    fn screens_travel_as_tagged_json_and_unknown_fields_are_refused() {
        let s = Screen::Locked {
            station: "PC 07".into(),
            why: LockReason::Paused {
                left_ms: Some(60_000),
            },
            message: None,
        };
        let json = serde_json::to_string(&s).unwrap_or_default();
        assert_eq!(
            json,
            r#"{"mode":"locked","station":"PC 07","why":{"reason":"paused","left_ms":60000}}"#
        );
        assert_eq!(serde_json::from_str::<Screen>(&json).ok(), Some(s));
        assert!(
            serde_json::from_str::<Screen>(
                r#"{"mode":"locked","station":"x","why":{"reason":"free"},"evil":1}"#
            )
            .is_err()
        );
    }
}
