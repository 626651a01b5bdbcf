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
