//! Table definitions. Values are JSON so an operator can read them with any redb tool;
//! event values are `prev hash (32) | hash (32) | body JSON` so hashing never depends on
//! re-serialisation.

use redb::TableDefinition;

pub const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
pub const STATIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("stations");
/// Every session ever started, by id.
pub const SESSIONS: TableDefinition<u64, &[u8]> = TableDefinition::new("sessions");
/// Ids of sessions not yet ended, so boot does not scan history.
pub const ACTIVE_SESSIONS: TableDefinition<u64, ()> = TableDefinition::new("active_sessions");
pub const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
/// Sealed segments of the event chain, by segment index.
pub const SEALS: TableDefinition<u64, &[u8]> = TableDefinition::new("seals");
pub const IDEMPOTENCY: TableDefinition<&str, &[u8]> = TableDefinition::new("idempotency");
pub const USERS: TableDefinition<&str, &[u8]> = TableDefinition::new("users");
/// API tokens by the hex SHA-256 of their secret (schema v2).
pub const TOKENS: TableDefinition<&str, &[u8]> = TableDefinition::new("tokens");
/// Token public id -> secret hash, to revoke by id (schema v2).
pub const TOKEN_IDS: TableDefinition<&str, &str> = TableDefinition::new("token_ids");

/// MQTT accounts by user name, with the SHA-256 of their secret (schema v3).
pub const MQTT_ACCOUNTS: TableDefinition<&str, &[u8]> = TableDefinition::new("mqtt_accounts");

/// Enrollment codes by the hex SHA-256 of their secret part (schema v4).
pub const ENROLLMENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("enrollments");
/// Enrollment public id -> code hash, to mark a code used (schema v4).
pub const ENROLLMENT_IDS: TableDefinition<&str, &str> = TableDefinition::new("enrollment_ids");

/// Devices by name, with the password venued logs in with, in clear: the device needs it
/// so (schema v5).
pub const DEVICES: TableDefinition<&str, &[u8]> = TableDefinition::new("devices");
/// Station id -> how it is enforced with devices (schema v5).
pub const ENFORCEMENT: TableDefinition<&str, &[u8]> = TableDefinition::new("enforcement");

pub const META_SCHEMA_VERSION: &str = "schema_version";
pub const META_CHECKPOINT: &str = "clock_checkpoint";
pub const META_STORE_ID: &str = "store_id";
