//! Stations: the PCs and consoles a venue sells time on.

use super::ids::StationId;
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StationKind {
    /// Runs `venued agent`, which locks the screen itself.
    Pc,
    /// Cannot run an agent; enforced through plugs and the router (enforcement ladder).
    Console,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Station {
    pub id: StationId,
    pub name: String,
    pub kind: StationKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
}

/// Longest display name or zone name accepted, in characters.
pub const MAX_NAME_LEN: usize = 64;
