//! What the agent asks of the operating system, behind one trait.
//!
//! The enforcement core decides; an adapter carries it out. The `log` adapter writes each
//! action as a line (tests and dry runs); the Windows and Linux session adapters implement
//! the same trait.

use super::enforcer::Action;
use crate::clock::Clock;
use std::io::Write;
use std::sync::Arc;

pub trait Adapter: Send {
    /// Carry out one OS action (never called with `Ack`, which goes to the controller).
    fn apply(&mut self, action: &Action) -> Result<(), String>;
}

/// Writes `<wall clock> <action>` lines, e.g. `2026-11-23T16:00:00.123Z unlock`.
pub struct LogAdapter {
    out: Box<dyn Write + Send>,
    clock: Arc<dyn Clock>,
}

impl LogAdapter {
    pub fn new(out: Box<dyn Write + Send>, clock: Arc<dyn Clock>) -> Self {
        Self { out, clock }
    }
}

/// The action as a log line's words.
pub fn describe(action: &Action) -> String {
    match action {
        Action::Lock => "lock".into(),
        Action::Unlock => "unlock".into(),
        Action::Warn { lead_s } => format!("warn {lead_s}"),
        Action::ShowMessage(text) => format!("message {text}"),
        Action::LogOff => "logoff".into(),
        Action::Shutdown => "shutdown".into(),
        Action::Restart => "restart".into(),
        Action::PreventSleep(on) => format!("prevent-sleep {on}"),
        Action::Ack { id, ok, .. } => format!("ack {id} {ok}"),
    }
}

impl Adapter for LogAdapter {
    fn apply(&mut self, action: &Action) -> Result<(), String> {
        writeln!(self.out, "{} {}", self.clock.wall(), describe(action))
            .and_then(|()| self.out.flush())
            .map_err(|e| format!("cannot write the action log: {e}"))
    }
}

/// Linux desktops under systemd-logind: lock and unlock the graphical session, log off,
/// power off and reboot through `loginctl` / `systemctl`; warnings and messages as desktop
/// notifications (`notify-send`), best effort. During a session the PC is kept awake by
/// a `systemd-inhibit` lock held by a child process, released when the session ends.
pub struct LoginctlAdapter {
    /// The session to act on (`XDG_SESSION_ID` when run inside it); `None` lets loginctl
    /// pick the caller's session.
    session: Option<String>,
    /// `systemd-inhibit ... sleep infinity`: logind holds the lock while it lives.
    inhibitor: Option<std::process::Child>,
}

/// What the sleep inhibitor runs: logind keeps the lock as long as the process lives.
pub const INHIBIT: [&str; 6] = [
    "--what=sleep:idle",
    "--who=venued",
    "--why=a paid session is running",
    "--mode=block",
    "sleep",
    "infinity",
];

impl LoginctlAdapter {
    pub fn new(session: Option<String>) -> Self {
        Self {
            session,
            inhibitor: None,
        }
    }

    fn prevent_sleep(&mut self, on: bool) -> Result<(), String> {
        if let Some(mut old) = self.inhibitor.take() {
            if on && matches!(old.try_wait(), Ok(None)) {
                self.inhibitor = Some(old);
                return Ok(());
            }
            let _ = old.kill();
            let _ = old.wait();
        }
        if on {
            let child = std::process::Command::new("systemd-inhibit")
                .args(INHIBIT)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .spawn()
                .map_err(|e| format!("cannot run systemd-inhibit: {e}"))?;
            self.inhibitor = Some(child);
        }
        Ok(())
    }

    /// The program and arguments for an action; `None` when it needs no command here.
    pub fn command_for(&self, action: &Action) -> Option<(&'static str, Vec<String>)> {
        let with_session = |verb: &str| {
            let mut args = vec![verb.to_owned()];
            args.extend(self.session.clone());
            args
        };
        match action {
            Action::Lock => Some(("loginctl", with_session("lock-session"))),
            Action::Unlock => Some(("loginctl", with_session("unlock-session"))),
            Action::LogOff => Some(("loginctl", with_session("terminate-session"))),
            Action::Shutdown => Some(("systemctl", vec!["poweroff".into()])),
            Action::Restart => Some(("systemctl", vec!["reboot".into()])),
            Action::Warn { lead_s } => Some((
                "notify-send",
                vec![
                    "--urgency=critical".into(),
                    "venued".into(),
                    format!(
                        "{} left in your session",
                        crate::domain::time::human(jiff::SignedDuration::from_secs(i64::from(
                            *lead_s
                        )))
                    ),
                ],
            )),
            Action::ShowMessage(text) => Some(("notify-send", vec!["venued".into(), text.clone()])),
            Action::PreventSleep(_) | Action::Ack { .. } => None,
        }
    }
}

fn run_program(program: &str, args: &[String]) -> Result<(), String> {
    let status = std::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .status()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{program} {} failed: {status}", args.join(" ")))
    }
}

impl Drop for LoginctlAdapter {
    fn drop(&mut self) {
        let _ = self.prevent_sleep(false);
    }
}

impl Adapter for LoginctlAdapter {
    fn apply(&mut self, action: &Action) -> Result<(), String> {
        if let Action::PreventSleep(on) = action {
            return self.prevent_sleep(*on);
        }
        match self.command_for(action) {
            Some((program, args)) => run_program(program, &args),
            None => Ok(()),
        }
    }
}

/// Any other desktop or kiosk shell: one program of the venue's, run for each action with
/// the action as its arguments (`lock`, `unlock`, `warn 300`, `message <text>`, `logoff`,
/// `shutdown`, `restart`, `prevent-sleep true|false`). A failing program is logged; the
/// agent goes on enforcing.
pub struct CommandAdapter {
    program: std::path::PathBuf,
}

impl CommandAdapter {
    pub fn new(program: std::path::PathBuf) -> Self {
        Self { program }
    }

    /// The arguments for an action.
    pub fn args_for(action: &Action) -> Vec<String> {
        match action {
            Action::Warn { lead_s } => vec!["warn".into(), lead_s.to_string()],
            Action::ShowMessage(text) => vec!["message".into(), text.clone()],
            Action::PreventSleep(on) => vec!["prevent-sleep".into(), on.to_string()],
            other => vec![describe(other)],
        }
    }
}

impl Adapter for CommandAdapter {
    fn apply(&mut self, action: &Action) -> Result<(), String> {
        run_program(&self.program.display().to_string(), &Self::args_for(action))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loginctl_commands_name_the_session() {
        let a = LoginctlAdapter::new(Some("7".into()));
        assert_eq!(
            a.command_for(&Action::Lock),
            Some(("loginctl", vec!["lock-session".to_owned(), "7".to_owned()]))
        );
        assert_eq!(
            a.command_for(&Action::LogOff),
            Some((
                "loginctl",
                vec!["terminate-session".to_owned(), "7".to_owned()]
            ))
        );
        let b = LoginctlAdapter::new(None);
        assert_eq!(
            b.command_for(&Action::Unlock),
            Some(("loginctl", vec!["unlock-session".to_owned()]))
        );
        assert_eq!(b.command_for(&Action::PreventSleep(true)), None);
        let warn = b.command_for(&Action::Warn { lead_s: 300 }).unwrap();
        assert!(warn.1[2].contains("5m"), "{warn:?}");
    }

    #[test]
    fn a_configured_command_gets_the_action_as_separate_arguments() {
        assert_eq!(CommandAdapter::args_for(&Action::Lock), ["lock"]);
        assert_eq!(
            CommandAdapter::args_for(&Action::ShowMessage("pizza is ready".into())),
            ["message", "pizza is ready"]
        );
        assert_eq!(
            CommandAdapter::args_for(&Action::Warn { lead_s: 60 }),
            ["warn", "60"]
        );
        let mut missing = CommandAdapter::new("/nonexistent/venue-hook".into());
        let e = missing.apply(&Action::Lock).err().unwrap_or_default();
        assert!(e.contains("/nonexistent/venue-hook"), "{e}");
    }
}
