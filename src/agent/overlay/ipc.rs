//! The agent ↔ helper link: one loopback TCP connection, one JSON object per line.
//!
//! The agent listens on 127.0.0.1 on a port the OS picks and starts the helper with that
//! address and a one-time token (in the helper's environment, which other users cannot
//! read). The helper's first line must carry the token; anything else closes the link.
//! Loopback TCP works the same from a Windows service in session 0 to a process in the
//! user's session as between two Linux processes, which a Unix socket or a named pipe
//! would not give us with one piece of code.

use super::screen::Screen;
use serde::{Deserialize, Serialize};

/// The environment variable that carries the token to the helper.
pub const TOKEN_ENV: &str = "VENUED_OVERLAY_TOKEN";

/// The longest line either side accepts; longer closes the link.
pub const MAX_LINE: usize = 8 * 1024;

/// Agent → helper.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ToHelper {
    /// Draw this (the countdown counts down locally until the next one).
    Show { screen: Screen },
    /// The answer to a member login typed on the lock page.
    LoginResult { ok: bool, text: String },
}

/// Helper → agent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ToAgent {
    /// The first line: proves the helper is the one the agent started.
    Hello { token: String },
    /// A member typed their number and PIN on the lock page.
    Login { member: String, pin: String },
    /// Who sits at the PC and how long since they last touched it (for the status).
    Presence {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        user: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        idle_s: Option<u64>,
    },
}

/// One message as a line (with its newline).
pub fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    // Serialising these plain enums cannot fail; an empty line is ignored by the reader.
    let mut line = serde_json::to_vec(msg).unwrap_or_default();
    line.push(b'\n');
    line
}

/// One line (without its newline) as a message.
pub fn decode<T: for<'de> Deserialize<'de>>(line: &[u8]) -> Result<T, String> {
    if line.len() > MAX_LINE {
        return Err(format!("line of {} bytes is over {MAX_LINE}", line.len()));
    }
    serde_json::from_slice(line).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::overlay::screen::LockReason;

    #[test]
    fn messages_round_trip_as_lines() {
        let show = ToHelper::Show {
            screen: Screen::Locked {
                station: "PC 01".into(),
                why: LockReason::Free,
                message: None,
            },
        };
        let line = encode(&show);
        assert_eq!(line.last(), Some(&b'\n'));
        assert_eq!(decode::<ToHelper>(&line[..line.len() - 1]), Ok(show));
        let login = ToAgent::Login {
            member: "1042".into(),
            pin: "7788".into(),
        };
        let line = encode(&login);
        assert_eq!(decode::<ToAgent>(&line[..line.len() - 1]), Ok(login));
    }

    #[test]
    fn bad_lines_are_refused() {
        assert!(decode::<ToAgent>(b"{\"type\":\"hello\"}").is_err());
        assert!(decode::<ToAgent>(b"{\"type\":\"hello\",\"token\":\"t\",\"x\":1}").is_err());
        assert!(decode::<ToAgent>(b"not json").is_err());
        assert!(decode::<ToAgent>(&vec![b' '; MAX_LINE + 1]).is_err());
    }
}
