//! Schema versions. Each migration moves the store from version N-1 to N inside the same
//! write transaction as the version bump, so a crash mid-migration leaves the old version.

use super::StoreError;
use super::tables::*;
use redb::{ReadableTable, WriteTransaction};

/// The schema this binary writes.
pub const SCHEMA_VERSION: u32 = 5;

type Migration = fn(&WriteTransaction) -> Result<(), StoreError>;

/// `MIGRATIONS[i]` takes the store from version `i` to `i + 1`; version 0 is empty.
const MIGRATIONS: [Migration; SCHEMA_VERSION as usize] = [
    v1_initial,
    v2_tokens,
    v3_mqtt_accounts,
    v4_enrollments,
    v5_devices,
];

fn v1_initial(txn: &WriteTransaction) -> Result<(), StoreError> {
    // Opening a table in a write transaction creates it.
    txn.open_table(META)?;
    txn.open_table(STATIONS)?;
    txn.open_table(SESSIONS)?;
    txn.open_table(ACTIVE_SESSIONS)?;
    txn.open_table(EVENTS)?;
    txn.open_table(SEALS)?;
    txn.open_table(IDEMPOTENCY)?;
    txn.open_table(USERS)?;
    let id: [u8; 16] = rand::random();
    let id: String = id.iter().map(|b| format!("{b:02x}")).collect();
    txn.open_table(META)?.insert(META_STORE_ID, id.as_bytes())?;
    Ok(())
}

/// v2: API tokens for the network API.
fn v2_tokens(txn: &WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(TOKENS)?;
    txn.open_table(TOKEN_IDS)?;
    Ok(())
}

/// v3: MQTT accounts for the embedded broker.
fn v3_mqtt_accounts(txn: &WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(MQTT_ACCOUNTS)?;
    Ok(())
}

/// v4: enrollment codes for PC agents.
fn v4_enrollments(txn: &WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(ENROLLMENTS)?;
    txn.open_table(ENROLLMENT_IDS)?;
    Ok(())
}

/// v5: devices (plugs, routers, MQTT actions) and station enforcement.
fn v5_devices(txn: &WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(DEVICES)?;
    txn.open_table(ENFORCEMENT)?;
    Ok(())
}

pub fn run(txn: &WriteTransaction) -> Result<(), StoreError> {
    let found = {
        let meta = txn.open_table(META)?;
        let v = meta.get(META_SCHEMA_VERSION)?;
        match v {
            Some(v) => {
                let bytes: [u8; 4] = v.value().try_into().map_err(|_| {
                    StoreError::Corrupt("schema version is not a 32-bit number".into())
                })?;
                u32::from_le_bytes(bytes)
            }
            None => 0,
        }
    };
    if found > SCHEMA_VERSION {
        return Err(StoreError::NewerSchema {
            found,
            known: SCHEMA_VERSION,
        });
    }
    for (from, migration) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        tracing::info!(from, to = from + 1, "migrating store schema");
        migration(txn)?;
    }
    if found != SCHEMA_VERSION {
        txn.open_table(META)?
            .insert(META_SCHEMA_VERSION, SCHEMA_VERSION.to_le_bytes().as_slice())?;
    }
    Ok(())
}
