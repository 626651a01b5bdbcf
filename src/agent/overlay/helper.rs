//! The helper process (`venued agent overlay`): runs in the customer's desktop session,
//! draws what the agent sends and passes back what the customer types.
//!
//! The platform part is a [`Display`] (X11 here, Win32 on Windows); [`Page`] is the pure
//! state of what is shown and typed, and [`run`] ties them to the agent link.

use super::ipc::{self, ToAgent, ToHelper};
use super::render::{Entry, Font, countdown_size, render};
use super::screen::{LockReason, Screen};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A key the lock page understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Key {
    Char(char),
    Backspace,
    Tab,
    Enter,
    Escape,
}

/// What the helper needs from the platform's window system.
pub trait Display {
    /// The screen's size in pixels.
    fn size(&self) -> (u32, u32);
    /// Show `canvas`: over the whole screen, above everything and taking all input when
    /// `kiosk`; else as a small always-on-top window in the top right corner.
    fn present(&mut self, canvas: super::render::Canvas, kiosk: bool) -> Result<(), String>;
    /// Wait up to `timeout` for input; the keys typed meanwhile.
    fn wait_input(&mut self, timeout: Duration) -> Result<Vec<Key>, String>;
    /// Milliseconds since the last keyboard or mouse input, if the platform tells.
    fn idle_ms(&mut self) -> Option<u64>;
}

/// The longest member number and PIN accepted from the keyboard.
const MAX_MEMBER: usize = 16;
const MAX_PIN: usize = 8;
/// How long the helper keeps the screen after losing the agent (which, restarted by its
/// service manager, starts a new helper well within it).
const ORPHAN_FOR: Duration = Duration::from_secs(60);
const PRESENCE_EVERY: Duration = Duration::from_secs(5);

/// What is on screen and being typed.
#[derive(Debug, Default)]
pub struct Page {
    shown: Option<(Screen, Instant)>,
    pub entry: Entry,
}

impl Page {
    pub fn on_message(&mut self, msg: ToHelper, now: Instant) {
        match msg {
            ToHelper::Show { screen } => {
                if !screen.is_kiosk() {
                    self.entry = Entry::default();
                }
                self.shown = Some((screen, now));
            }
            ToHelper::LoginResult { ok, text } => self.entry.note = Some((ok, text)),
        }
    }

    /// The screen as it is at `now` (the countdown run down since it arrived). Before the
    /// agent has said anything, the station is locked.
    pub fn current(&self, now: Instant) -> Screen {
        match &self.shown {
            Some((s, at)) => s.after(now.saturating_duration_since(*at).as_millis() as i64),
            None => Screen::Locked {
                station: String::new(),
                why: LockReason::Connecting,
                message: None,
            },
        }
    }

    /// Without the agent, a countdown that has run out turns into the lock page: the
    /// helper never leaves a PC open past its time on its own.
    pub fn orphaned(&mut self, now: Instant) {
        let screen = self.current(now);
        if let Screen::Countdown {
            station,
            left_ms: Some(0),
            ..
        } = screen
        {
            self.shown = Some((
                Screen::Locked {
                    station,
                    why: LockReason::Connecting,
                    message: None,
                },
                now,
            ));
        }
    }

    /// A key on the lock page; a complete login is returned to send to the agent.
    pub fn on_key(&mut self, key: Key, now: Instant) -> Option<ToAgent> {
        if !self.current(now).is_kiosk() {
            return None;
        }
        let e = &mut self.entry;
        match key {
            Key::Char(c) if e.on_pin => {
                if c.is_ascii_digit() && e.pin.len() < MAX_PIN {
                    e.pin.push(c);
                }
            }
            Key::Char(c) => {
                if c.is_ascii_alphanumeric() && e.member.len() < MAX_MEMBER {
                    e.member.push(c);
                }
            }
            Key::Backspace if e.on_pin => {
                e.pin.pop();
            }
            Key::Backspace => {
                e.member.pop();
            }
            Key::Tab => e.on_pin = !e.on_pin,
            Key::Escape => *e = Entry::default(),
            Key::Enter if !e.on_pin => e.on_pin = true,
            Key::Enter => {
                if e.member.is_empty() || e.pin.is_empty() {
                    e.note = Some((false, "type your member number and PIN".into()));
                    return None;
                }
                let login = ToAgent::Login {
                    member: e.member.clone(),
                    pin: std::mem::take(&mut e.pin),
                };
                e.note = Some((true, "checking\u{2026}".into()));
                return Some(login);
            }
        }
        None
    }
}

/// Connect to the agent at `addr`, prove ourselves with `token`, and draw until the agent
/// goes away.
pub fn run(
    addr: SocketAddr,
    token: &str,
    display: &mut dyn Display,
    mut font: Option<Font>,
    user: Option<String>,
) -> Result<(), String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|e| format!("cannot reach the agent at {addr}: {e}"))?;
    let _ = stream.set_nodelay(true);
    let reader = stream
        .try_clone()
        .map_err(|e| format!("cannot read from the agent: {e}"))?;
    stream
        .write_all(&ipc::encode(&ToAgent::Hello {
            token: token.to_owned(),
        }))
        .map_err(|e| format!("cannot greet the agent: {e}"))?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || read_agent(reader, tx));

    let mut page = Page::default();
    let mut drawn: Option<(Screen, Entry)> = None;
    let mut lost: Option<Instant> = None;
    // The first presence goes out at once: it tells the agent the overlay is up.
    let mut presence_at = Instant::now()
        .checked_sub(PRESENCE_EVERY)
        .unwrap_or_else(Instant::now);
    loop {
        let now = Instant::now();
        loop {
            match rx.try_recv() {
                Ok(msg) => page.on_message(msg, now),
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => {
                    if lost.is_none() {
                        tracing::warn!("lost the agent; keeping the screen");
                        lost = Some(now);
                    }
                    break;
                }
            }
        }
        if let Some(since) = lost {
            page.orphaned(now);
            if now.duration_since(since) > ORPHAN_FOR {
                return Ok(());
            }
        }
        let screen = page.current(now);
        let fresh = (screen.clone(), page.entry.clone());
        if drawn.as_ref() != Some(&fresh) {
            let (w, h) = if screen.is_kiosk() {
                display.size()
            } else {
                countdown_size(&screen)
            };
            let canvas = render(&screen, &page.entry, font.as_mut(), w, h);
            display.present(canvas, screen.is_kiosk())?;
            drawn = Some(fresh);
        }
        for key in display.wait_input(Duration::from_millis(200))? {
            if let Some(login) = page.on_key(key, Instant::now())
                && lost.is_none()
            {
                let _ = stream.write_all(&ipc::encode(&login));
            }
        }
        if lost.is_none() && presence_at.elapsed() >= PRESENCE_EVERY {
            presence_at = Instant::now();
            let presence = ToAgent::Presence {
                user: user.clone(),
                idle_s: display.idle_ms().map(|ms| ms / 1000),
            };
            let _ = stream.write_all(&ipc::encode(&presence));
        }
    }
}

fn read_agent(stream: TcpStream, tx: mpsc::Sender<ToHelper>) {
    let mut lines = BufReader::new(stream);
    let mut line = Vec::new();
    loop {
        line.clear();
        match lines
            .by_ref()
            .take(ipc::MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut line)
        {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        if line.last() != Some(&b'\n') {
            tracing::warn!("over-long line from the agent; closing");
            return;
        }
        match ipc::decode::<ToHelper>(&line[..line.len() - 1]) {
            Ok(msg) => {
                if tx.send(msg).is_err() {
                    return;
                }
            }
            Err(e) => tracing::warn!(error = %e, "unreadable message from the agent ignored"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn locked() -> ToHelper {
        ToHelper::Show {
            screen: Screen::Locked {
                station: "PC 07".into(),
                why: LockReason::Free,
                message: None,
            },
        }
    }

    #[test]
    fn typing_a_login_sends_it_once_and_forgets_the_pin() {
        let now = Instant::now();
        let mut p = Page::default();
        p.on_message(locked(), now);
        for c in "10x42".chars() {
            assert_eq!(p.on_key(Key::Char(c), now), None);
        }
        assert_eq!(p.on_key(Key::Enter, now), None, "Enter moves to the PIN");
        for c in "7a788".chars() {
            p.on_key(Key::Char(c), now);
        }
        p.on_key(Key::Backspace, now);
        assert_eq!(
            p.on_key(Key::Enter, now),
            Some(ToAgent::Login {
                member: "10x42".into(),
                pin: "778".into()
            })
        );
        assert!(p.entry.pin.is_empty());
        assert_eq!(p.on_key(Key::Enter, now), None, "no PIN, nothing sent");
    }

    #[test]
    fn keys_do_nothing_during_a_session() {
        let now = Instant::now();
        let mut p = Page::default();
        p.on_message(
            ToHelper::Show {
                screen: Screen::Countdown {
                    station: "PC 07".into(),
                    left_ms: Some(60_000),
                    grace: false,
                    message: None,
                },
            },
            now,
        );
        p.on_key(Key::Char('1'), now);
        assert_eq!(p.entry, Entry::default());
    }

    #[test]
    fn an_orphaned_countdown_locks_when_it_runs_out() {
        let now = Instant::now();
        let mut p = Page::default();
        assert!(p.current(now).is_kiosk(), "locked before the agent speaks");
        p.on_message(
            ToHelper::Show {
                screen: Screen::Countdown {
                    station: "PC 07".into(),
                    left_ms: Some(1_000),
                    grace: false,
                    message: None,
                },
            },
            now,
        );
        p.orphaned(now);
        assert!(!p.current(now).is_kiosk());
        let later = now + Duration::from_millis(1_500);
        p.orphaned(later);
        assert!(p.current(later).is_kiosk());
    }
}
