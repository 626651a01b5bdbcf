//! Who asked for a change; recorded on every event.

use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Actor {
    /// The controller itself: timers, clock decisions.
    System,
    /// Someone with access to the control socket (file permissions stand in for login).
    Local {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        uid: Option<u32>,
    },
    /// A logged-in staff account.
    User { name: String },
    /// An MQTT client (a PC agent, a plug, an integration), by account.
    Mqtt { account: String },
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Actor::System => f.write_str("system"),
            Actor::Local { uid: Some(uid) } => write!(f, "local(uid {uid})"),
            Actor::Local { uid: None } => f.write_str("local"),
            Actor::User { name } => write!(f, "user {name}"),
            Actor::Mqtt { account } => write!(f, "mqtt {account}"),
        }
    }
}
