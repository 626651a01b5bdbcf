//! Durable state in redb: typed tables, schema versions and migrations, the event log.
//!
//! Only the engine writes (one write transaction at a time, group-committed); everyone
//! else reads through read transactions that never block it.

mod error;
pub mod eventlog;
mod migrations;
pub mod tables;

pub use error::StoreError;
pub use eventlog::{ChainHead, Event, EventBody, VerifyReport};

use crate::domain::mqtt::MqttAccount;
use crate::domain::{Role, Session, SessionId, Station, StationId, VenueState};
use jiff::Timestamp;
use redb::{
    BackendError, Builder, Database, ReadableDatabase, ReadableTable, StorageBackend,
    WriteTransaction,
};
use serde::{Deserialize, Serialize};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tables::*;

/// The file inside the data directory.
pub const STORE_FILE: &str = "venued.redb";

/// Makes a storage backend for the store; called again to reopen after an I/O failure.
pub type BackendFactory = Arc<dyn Fn() -> std::io::Result<Box<dyn StorageBackend>> + Send + Sync>;

#[derive(Clone)]
pub enum StoreLocation {
    /// A data directory; the store is `STORE_FILE` inside it.
    Dir(PathBuf),
    /// A custom backend (tests simulate power cuts and full disks with one).
    Backend(BackendFactory),
}

impl std::fmt::Debug for StoreLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreLocation::Dir(p) => write!(f, "Dir({})", p.display()),
            StoreLocation::Backend(_) => f.write_str("Backend(..)"),
        }
    }
}

#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// redb page cache; redb's default (1 GiB) would not fit the venue box.
    pub cache_bytes: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            cache_bytes: 32 * 1024 * 1024,
        }
    }
}

#[derive(Debug)]
struct DynBackend(Box<dyn StorageBackend>);

impl StorageBackend for DynBackend {
    fn len(&self) -> std::io::Result<u64> {
        self.0.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        self.0.read(offset, out)
    }
    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.0.set_len(len)
    }
    fn sync_data(&self) -> std::io::Result<()> {
        self.0.sync_data()
    }
    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.0.write(offset, data)
    }
    fn close(&self) -> std::io::Result<()> {
        self.0.close()
    }
    // The lock methods too: a backend that locks must keep excluding a second opener.
    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.0.try_lock_range(start, end)
    }
    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.0.try_lock_shared_range(start, end)
    }
    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.0.lock_range(start, end)
    }
    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.0.lock_shared_range(start, end)
    }
    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.0.unlock_range(start, end)
    }
}

/// A user's stored credential. The hash is argon2id (PHC string); never logged.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct UserRecord {
    pub name: String,
    pub role: Role,
    pub password_hash: String,
    pub created_at: Timestamp,
}

/// A stored API token. The secret itself is never stored, only its SHA-256 (the key).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TokenRecord {
    pub id: String,
    pub name: String,
    pub user: String,
    pub role: Role,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Timestamp>,
    pub revoked: bool,
    pub created_at: Timestamp,
}

/// A stored MQTT account. Only the SHA-256 of its secret is kept.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MqttAccountRecord {
    #[serde(flatten)]
    pub account: MqttAccount,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_hash: Option<String>,
    pub created_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_issued_at: Option<Timestamp>,
}

/// A stored device. The password is kept in clear: venued must present it to the device.
/// It is never returned by the API; the store file is readable by the service user only.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DeviceRecord {
    #[serde(flatten)]
    pub device: crate::domain::device::Device,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    pub created_at: Timestamp,
}

/// A stored enrollment code; only the SHA-256 of its secret part is kept (the key).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EnrollmentRecord {
    pub id: String,
    pub station: StationId,
    pub expires_at: Timestamp,
    pub used: bool,
}

/// A remembered answer to an idempotent request.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct IdempotencyRecord {
    /// SHA-256 of the command, so a key reused for a different request is refused.
    pub fingerprint: String,
    pub reply: serde_json::Value,
    pub at: Timestamp,
}

/// Everything the engine needs at boot.
#[derive(Debug)]
pub struct Loaded {
    pub state: VenueState,
    pub head: ChainHead,
    pub checkpoint: Option<Timestamp>,
}

#[derive(Clone)]
pub struct Store {
    db: Arc<Database>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Store")
    }
}

impl Store {
    pub fn open(location: &StoreLocation, opts: &StoreOptions) -> Result<Self, StoreError> {
        let mut builder = Builder::new();
        builder.set_cache_size(opts.cache_bytes);
        builder.set_repair_callback(|session| {
            tracing::warn!(
                progress = format!("{:.0}%", session.progress() * 100.0),
                "repairing the store after an unclean shutdown"
            );
        });
        let db = match location {
            StoreLocation::Dir(dir) => {
                std::fs::create_dir_all(dir)?;
                restrict_dir(dir)?;
                let path = dir.join(STORE_FILE);
                builder.create(&path).map_err(|e| match e {
                    redb::DatabaseError::DatabaseAlreadyOpen => {
                        StoreError::AlreadyOpen(dir.clone())
                    }
                    other => other.into(),
                })?
            }
            StoreLocation::Backend(factory) => {
                builder.create_with_backend(DynBackend(factory()?))?
            }
        };
        let store = Self { db: Arc::new(db) };
        store.migrate()?;
        Ok(store)
    }

    pub fn db(&self) -> &Database {
        &self.db
    }

    /// Begin the single write transaction. Only the engine calls this.
    #[allow(clippy::disallowed_methods)]
    pub fn begin_write(&self) -> Result<WriteTransaction, StoreError> {
        let mut txn = self.db.begin_write()?;
        // Recovery after a crash in milliseconds instead of a full-file walk.
        txn.set_quick_repair(true);
        Ok(txn)
    }

    pub fn load(&self) -> Result<Loaded, StoreError> {
        let txn = self.db.begin_read()?;
        let mut state = VenueState::default();
        for entry in txn.open_table(STATIONS)?.iter()? {
            let (_, v) = entry?;
            let station: Station = serde_json::from_slice(v.value())?;
            state.stations.insert(station.id.clone(), station);
        }
        let sessions = txn.open_table(SESSIONS)?;
        if let Some((k, _)) = sessions.last()? {
            state.next_session = k.value() + 1;
        }
        for entry in txn.open_table(ACTIVE_SESSIONS)?.iter()? {
            let (k, _) = entry?;
            let raw = sessions.get(k.value())?.ok_or_else(|| {
                StoreError::Corrupt(format!("active session {} has no record", k.value()))
            })?;
            state.put_session(serde_json::from_slice(raw.value())?);
        }
        for entry in txn.open_table(USERS)?.iter()? {
            let (_, v) = entry?;
            let user: UserRecord = serde_json::from_slice(v.value())?;
            state.users.insert(user.name, user.role);
        }
        for entry in txn.open_table(TOKENS)?.iter()? {
            let (_, v) = entry?;
            let t: TokenRecord = serde_json::from_slice(v.value())?;
            state.tokens.insert(
                t.id.clone(),
                crate::domain::venue::TokenInfo {
                    name: t.name,
                    user: t.user,
                    role: t.role,
                    expires_at: t.expires_at,
                    revoked: t.revoked,
                },
            );
        }
        for entry in txn.open_table(MQTT_ACCOUNTS)?.iter()? {
            let (_, v) = entry?;
            let r: MqttAccountRecord = serde_json::from_slice(v.value())?;
            state.mqtt.insert(r.account.name.clone(), r.account);
        }
        for entry in txn.open_table(ENROLLMENTS)?.iter()? {
            let (_, v) = entry?;
            let e: EnrollmentRecord = serde_json::from_slice(v.value())?;
            if !e.used {
                state.enrollments.insert(
                    e.id,
                    crate::domain::venue::Enrollment {
                        station: e.station,
                        expires_at: e.expires_at,
                    },
                );
            }
        }
        for entry in txn.open_table(DEVICES)?.iter()? {
            let (_, v) = entry?;
            let r: DeviceRecord = serde_json::from_slice(v.value())?;
            state.devices.insert(r.device.name.clone(), r.device);
        }
        for entry in txn.open_table(ENFORCEMENT)?.iter()? {
            let (k, v) = entry?;
            let station = StationId::parse(k.value())
                .map_err(|e| StoreError::Corrupt(format!("enforcement key: {e}")))?;
            state
                .enforcement
                .insert(station, serde_json::from_slice(v.value())?);
        }
        let checkpoint = match txn.open_table(META)?.get(META_CHECKPOINT)? {
            Some(v) => Some(parse_ts(v.value())?),
            None => None,
        };
        let head = ChainHead::load(&txn)?;
        Ok(Loaded {
            state,
            head,
            checkpoint,
        })
    }

    pub fn enrollment_by_hash(&self, hash: &str) -> Result<Option<EnrollmentRecord>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(ENROLLMENTS)?;
        match table.get(hash)? {
            Some(v) => Ok(Some(serde_json::from_slice(v.value())?)),
            None => Ok(None),
        }
    }

    /// A device with its password (for the drivers; never for the API).
    pub fn device(&self, name: &str) -> Result<Option<DeviceRecord>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(DEVICES)?;
        match table.get(name)? {
            Some(v) => Ok(Some(serde_json::from_slice(v.value())?)),
            None => Ok(None),
        }
    }

    pub fn mqtt_account(&self, name: &str) -> Result<Option<MqttAccountRecord>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(MQTT_ACCOUNTS)?;
        match table.get(name)? {
            Some(v) => Ok(Some(serde_json::from_slice(v.value())?)),
            None => Ok(None),
        }
    }

    pub fn session(&self, id: SessionId) -> Result<Option<Session>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(SESSIONS)?;
        match table.get(id.0)? {
            Some(v) => Ok(Some(serde_json::from_slice(v.value())?)),
            None => Ok(None),
        }
    }

    /// Events in seq order from `after` (exclusive), at most `limit`.
    pub fn events(&self, after: u64, limit: usize) -> Result<Vec<Event>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(EVENTS)?;
        let mut out = Vec::new();
        for entry in table.range(after.saturating_add(1)..)?.take(limit) {
            let (k, v) = entry?;
            out.push(eventlog::decode(k.value(), v.value())?);
        }
        Ok(out)
    }

    /// Events after `after` that `keep` accepts, at most `limit`, scanning at most `scan`
    /// events; also returns the last seq scanned, where the next page starts.
    pub fn scan_events(
        &self,
        after: u64,
        limit: usize,
        scan: usize,
        mut keep: impl FnMut(&Event) -> bool,
    ) -> Result<(Vec<Event>, u64), StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(EVENTS)?;
        let (mut out, mut last) = (Vec::new(), after);
        for entry in table.range(after.saturating_add(1)..)?.take(scan) {
            let (k, v) = entry?;
            let event = eventlog::decode(k.value(), v.value())?;
            last = event.seq;
            if keep(&event) {
                out.push(event);
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok((out, last))
    }

    /// Events caused by one idempotency key (used by tests and support tooling).
    pub fn idempotency(&self, key: &str) -> Result<Option<IdempotencyRecord>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(IDEMPOTENCY)?;
        match table.get(key)? {
            Some(v) => Ok(Some(serde_json::from_slice(v.value())?)),
            None => Ok(None),
        }
    }

    pub fn user(&self, name: &str) -> Result<Option<UserRecord>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(USERS)?;
        match table.get(name)? {
            Some(v) => Ok(Some(serde_json::from_slice(v.value())?)),
            None => Ok(None),
        }
    }

    /// The token whose secret hashes to `hash` (hex SHA-256), revoked or not.
    pub fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRecord>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(TOKENS)?;
        match table.get(hash)? {
            Some(v) => Ok(Some(serde_json::from_slice(v.value())?)),
            None => Ok(None),
        }
    }

    pub fn users(&self) -> Result<Vec<UserRecord>, StoreError> {
        let txn = self.db.begin_read()?;
        let mut out = Vec::new();
        for entry in txn.open_table(USERS)?.iter()? {
            let (_, v) = entry?;
            out.push(serde_json::from_slice(v.value())?);
        }
        Ok(out)
    }

    pub fn verify(&self) -> Result<VerifyReport, StoreError> {
        eventlog::verify(self.db.as_ref())
    }

    fn migrate(&self) -> Result<(), StoreError> {
        let txn = self.begin_write()?;
        migrations::run(&txn)?;
        txn.commit()?;
        Ok(())
    }
}

/// Writes the engine makes inside its transaction.
pub mod write {
    use super::*;

    pub fn station(txn: &WriteTransaction, station: &Station) -> Result<(), StoreError> {
        txn.open_table(STATIONS)?
            .insert(station.id.as_str(), serde_json::to_vec(station)?.as_slice())?;
        Ok(())
    }

    pub fn remove_station(txn: &WriteTransaction, id: &StationId) -> Result<(), StoreError> {
        txn.open_table(STATIONS)?.remove(id.as_str())?;
        txn.open_table(ENFORCEMENT)?.remove(id.as_str())?;
        Ok(())
    }

    pub fn device(txn: &WriteTransaction, record: &DeviceRecord) -> Result<(), StoreError> {
        txn.open_table(DEVICES)?.insert(
            record.device.name.as_str(),
            serde_json::to_vec(record)?.as_slice(),
        )?;
        Ok(())
    }

    pub fn remove_device(
        txn: &WriteTransaction,
        name: &crate::domain::device::DeviceName,
    ) -> Result<(), StoreError> {
        txn.open_table(DEVICES)?.remove(name.as_str())?;
        Ok(())
    }

    pub fn enforcement(
        txn: &WriteTransaction,
        station: &StationId,
        enforcement: Option<&crate::domain::device::Enforcement>,
    ) -> Result<(), StoreError> {
        let mut table = txn.open_table(ENFORCEMENT)?;
        match enforcement {
            Some(e) => {
                table.insert(station.as_str(), serde_json::to_vec(e)?.as_slice())?;
            }
            None => {
                table.remove(station.as_str())?;
            }
        }
        Ok(())
    }

    pub fn session(txn: &WriteTransaction, session: &Session) -> Result<(), StoreError> {
        txn.open_table(SESSIONS)?
            .insert(session.id.0, serde_json::to_vec(session)?.as_slice())?;
        let mut active = txn.open_table(ACTIVE_SESSIONS)?;
        if session.is_active() {
            active.insert(session.id.0, ())?;
        } else {
            active.remove(session.id.0)?;
        }
        Ok(())
    }

    pub fn user(txn: &WriteTransaction, user: &UserRecord) -> Result<(), StoreError> {
        txn.open_table(USERS)?
            .insert(user.name.as_str(), serde_json::to_vec(user)?.as_slice())?;
        Ok(())
    }

    pub fn idempotency(
        txn: &WriteTransaction,
        key: &str,
        record: &IdempotencyRecord,
    ) -> Result<(), StoreError> {
        txn.open_table(IDEMPOTENCY)?
            .insert(key, serde_json::to_vec(record)?.as_slice())?;
        Ok(())
    }

    pub fn token(
        txn: &WriteTransaction,
        hash: &str,
        record: &TokenRecord,
    ) -> Result<(), StoreError> {
        txn.open_table(TOKENS)?
            .insert(hash, serde_json::to_vec(record)?.as_slice())?;
        txn.open_table(TOKEN_IDS)?
            .insert(record.id.as_str(), hash)?;
        Ok(())
    }

    pub fn revoke_token(txn: &WriteTransaction, id: &str) -> Result<(), StoreError> {
        let hash = {
            let ids = txn.open_table(TOKEN_IDS)?;
            let found = ids.get(id)?;
            found.map(|h| h.value().to_owned())
        };
        let Some(hash) = hash else {
            return Err(StoreError::Corrupt(format!(
                "token {id} has no stored secret"
            )));
        };
        let mut tokens = txn.open_table(TOKENS)?;
        let record = match tokens.get(hash.as_str())? {
            Some(v) => {
                let mut r: TokenRecord = serde_json::from_slice(v.value())?;
                r.revoked = true;
                r
            }
            None => return Err(StoreError::Corrupt(format!("token {id} has no record"))),
        };
        tokens.insert(hash.as_str(), serde_json::to_vec(&record)?.as_slice())?;
        Ok(())
    }

    /// Read-modify-write of one MQTT account record; `None` makes a new one from `init`.
    pub fn mqtt_account(
        txn: &WriteTransaction,
        name: &str,
        update: impl FnOnce(Option<MqttAccountRecord>) -> Result<MqttAccountRecord, StoreError>,
    ) -> Result<(), StoreError> {
        let mut table = txn.open_table(MQTT_ACCOUNTS)?;
        let current = match table.get(name)? {
            Some(v) => Some(serde_json::from_slice(v.value())?),
            None => None,
        };
        let next = update(current)?;
        table.insert(name, serde_json::to_vec(&next)?.as_slice())?;
        Ok(())
    }

    pub fn enrollment(
        txn: &WriteTransaction,
        hash: &str,
        record: &EnrollmentRecord,
    ) -> Result<(), StoreError> {
        txn.open_table(ENROLLMENTS)?
            .insert(hash, serde_json::to_vec(record)?.as_slice())?;
        txn.open_table(ENROLLMENT_IDS)?
            .insert(record.id.as_str(), hash)?;
        Ok(())
    }

    pub fn use_enrollment(txn: &WriteTransaction, id: &str) -> Result<(), StoreError> {
        let hash = {
            let ids = txn.open_table(ENROLLMENT_IDS)?;
            let found = ids.get(id)?;
            found.map(|h| h.value().to_owned())
        };
        let hash =
            hash.ok_or_else(|| StoreError::Corrupt(format!("enrollment {id} has no code")))?;
        let mut table = txn.open_table(ENROLLMENTS)?;
        let mut record: EnrollmentRecord = match table.get(hash.as_str())? {
            Some(v) => serde_json::from_slice(v.value())?,
            None => {
                return Err(StoreError::Corrupt(format!(
                    "enrollment {id} has no record"
                )));
            }
        };
        record.used = true;
        table.insert(hash.as_str(), serde_json::to_vec(&record)?.as_slice())?;
        Ok(())
    }

    pub fn checkpoint(txn: &WriteTransaction, at: Timestamp) -> Result<(), StoreError> {
        txn.open_table(META)?
            .insert(META_CHECKPOINT, at.to_string().as_bytes())?;
        Ok(())
    }

    pub fn read_idempotency(
        txn: &WriteTransaction,
        key: &str,
    ) -> Result<Option<IdempotencyRecord>, StoreError> {
        let table = txn.open_table(IDEMPOTENCY)?;
        let found = table.get(key)?;
        match found {
            Some(v) => Ok(Some(serde_json::from_slice(v.value())?)),
            None => Ok(None),
        }
    }
}

fn parse_ts(raw: &[u8]) -> Result<Timestamp, StoreError> {
    std::str::from_utf8(raw)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| StoreError::Corrupt("unreadable clock checkpoint".into()))
}

/// The data directory holds the store and the control socket: owner-only.
fn restrict_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}
