//! Staff accounts. Credentials themselves live in the store, never in events.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Owner,
    Manager,
    Staff,
    Auditor,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Owner, Role::Manager, Role::Staff, Role::Auditor];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Manager => "manager",
            Role::Staff => "staff",
            Role::Auditor => "auditor",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                format!("unknown role {s:?} (expected owner, manager, staff or auditor)")
            })
    }
}

/// User names: what staff type at the login prompt.
pub fn valid_user_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'))
}

/// What a request may do. Every API route needs exactly one; the matrix below is the only
/// place that decides, and docs/permissions.md is checked against it by a test.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Permission {
    /// See stations and active sessions.
    ReadFloor,
    /// Add and remove stations.
    ManageStations,
    /// Start, extend, pause, resume, transfer and stop sessions.
    RunSessions,
    /// Read the event log and the live stream of it.
    ReadEvents,
    /// Verify the event chain.
    VerifyAudit,
    /// Create staff accounts.
    ManageUsers,
    /// Create and revoke one's own API tokens.
    OwnTokens,
    /// Confirm the venue clock.
    ConfirmClock,
    /// Scrape /metrics.
    ReadMetrics,
}

impl Permission {
    pub const ALL: [Permission; 9] = [
        Permission::ReadFloor,
        Permission::ManageStations,
        Permission::RunSessions,
        Permission::ReadEvents,
        Permission::VerifyAudit,
        Permission::ManageUsers,
        Permission::OwnTokens,
        Permission::ConfirmClock,
        Permission::ReadMetrics,
    ];

    /// The name used in docs/permissions.md.
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::ReadFloor => "read-floor",
            Permission::ManageStations => "manage-stations",
            Permission::RunSessions => "run-sessions",
            Permission::ReadEvents => "read-events",
            Permission::VerifyAudit => "verify-audit",
            Permission::ManageUsers => "manage-users",
            Permission::OwnTokens => "own-tokens",
            Permission::ConfirmClock => "confirm-clock",
            Permission::ReadMetrics => "read-metrics",
        }
    }
}

impl Role {
    /// The permission matrix.
    pub fn allows(self, p: Permission) -> bool {
        use Permission::*;
        match self {
            Role::Owner => true,
            Role::Manager => !matches!(p, ManageUsers),
            // Staff run the floor; the log and the money trail are for managers.
            Role::Staff => matches!(p, ReadFloor | RunSessions | OwnTokens),
            // Auditors read everything and change nothing.
            Role::Auditor => matches!(
                p,
                ReadFloor | ReadEvents | VerifyAudit | OwnTokens | ReadMetrics
            ),
        }
    }
}
