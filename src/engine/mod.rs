//! The single writer. Every state change is a [`Request`] sent here; the writer thread
//! validates it through the domain, writes state and events in one redb transaction
//! (group commit: everything queued meanwhile shares the fsync), and only then replies
//! and broadcasts. A full queue is an immediate [`EngineError::Busy`], never a hang.

pub mod stats;
mod venue_clock;
mod writer;

pub use stats::EngineStats;
pub use venue_clock::ClockStatus;

use crate::clock::Clock;
use crate::domain::session::SessionPolicy;
use crate::domain::timekeeping::OutagePolicy;
use crate::domain::{Actor, Command, DomainError, VenueState};
use crate::store::{Event, Store, StoreError, StoreLocation, StoreOptions};
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::{broadcast, oneshot, watch};

#[derive(Clone, Debug)]
pub struct EngineConfig {
    pub queue_capacity: usize,
    pub max_batch: usize,
    /// How often the venue clock is persisted while idle (bounds free play after a cut).
    pub checkpoint_interval: Duration,
    pub policy: SessionPolicy,
    pub outage: OutagePolicy,
    /// Wall/venue disagreement that counts as a clock jump.
    pub jump_threshold: SignedDuration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            queue_capacity: 1024,
            max_batch: 256,
            checkpoint_interval: Duration::from_secs(10),
            policy: SessionPolicy::default(),
            outage: OutagePolicy::Pause,
            jump_threshold: SignedDuration::from_secs(2),
        }
    }
}

/// Longest idempotency key accepted.
pub const MAX_IDEMPOTENCY_KEY: usize = 128;

#[derive(Clone)]
pub struct Request {
    pub command: Command,
    pub actor: Actor,
    /// A retried request with the same key gets the first answer, not a second effect.
    pub idempotency_key: Option<String>,
    /// Beside the command, never in events: for `AddUser` the argon2id hash, for tokens,
    /// MQTT secrets and enrollment codes their SHA-256, for `AddDevice` the device's
    /// password (in clear: venued must present it).
    pub secret: Option<String>,
}

/// Never prints the secret (a device password is in clear).
impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("command", &self.command)
            .field("actor", &self.actor)
            .field("idempotency_key", &self.idempotency_key)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl Request {
    pub fn new(command: Command, actor: Actor) -> Self {
        Self {
            command,
            actor,
            idempotency_key: None,
            secret: None,
        }
    }

    pub fn with_key(mut self, key: Option<String>) -> Self {
        self.idempotency_key = key;
        self
    }
}

/// The answer to a committed request: the events it caused, as stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Reply {
    pub events: Vec<Event>,
    /// True when this is the remembered answer to an earlier request with the same key.
    #[serde(default)]
    pub replayed: bool,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum EngineError {
    #[error("the controller is busy (command queue full); retry shortly")]
    Busy,
    #[error("the controller is shutting down")]
    ShuttingDown,
    #[error(transparent)]
    Domain(#[from] DomainError),
    #[error("idempotency key {0:?} was already used for a different request")]
    KeyReused(String),
    #[error("invalid idempotency key: {0}")]
    BadKey(&'static str),
    /// The command was not acknowledged. If the failure hit the final fsync it may still
    /// have been saved: a retry with the same idempotency key applies it at most once.
    #[error(
        "storage failed; the command was not acknowledged (retry with the same idempotency key to apply it at most once): {message}"
    )]
    Storage { message: String, disk_full: bool },
}

impl EngineError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::Busy => "busy",
            Self::ShuttingDown => "shutting_down",
            Self::Domain(e) => e.code(),
            Self::KeyReused(_) => "idempotency_key_reused",
            Self::BadKey(_) => "invalid_idempotency_key",
            Self::Storage {
                disk_full: true, ..
            } => "disk_full",
            Self::Storage { .. } => "storage_failed",
        }
    }

    pub(crate) fn storage(e: &StoreError) -> Self {
        Self::Storage {
            message: e.to_string(),
            disk_full: e.is_disk_full(),
        }
    }
}

/// What readers see: the state as of the last commit.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// Shared with the writer, never copied to publish.
    pub state: Arc<VenueState>,
    pub clock: ClockStatus,
    /// Sequence number of the last event this state includes (0 before any).
    pub seq: u64,
    anchor: (Timestamp, Duration),
}

enum Msg {
    Exec(Box<Request>, oneshot::Sender<Result<Reply, EngineError>>),
    Sync(oneshot::Sender<()>),
    Shutdown,
}

#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    tx: SyncSender<Msg>,
    snapshot: watch::Receiver<Arc<Snapshot>>,
    events: broadcast::Sender<Arc<Event>>,
    store: Arc<RwLock<Option<Store>>>,
    clock: Arc<dyn Clock>,
    stats: Arc<EngineStats>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Engine")
    }
}

impl Engine {
    /// Open the store, decide the clock, rebuild the scheduler, start the writer thread.
    pub fn start(
        location: StoreLocation,
        store_options: StoreOptions,
        config: EngineConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, StoreError> {
        let (tx, rx) = std::sync::mpsc::sync_channel(config.queue_capacity.max(1));
        let (events, _) = broadcast::channel(4096);
        let stats = Arc::new(EngineStats::default());
        let writer = writer::Writer::boot(
            location,
            store_options,
            config,
            clock.clone(),
            rx,
            events.clone(),
            stats.clone(),
        )?;
        let snapshot = writer.snapshot_receiver();
        let store = writer.shared_store();
        let thread = std::thread::Builder::new()
            .name("venued-engine".into())
            .spawn(move || writer.run())?;
        Ok(Self {
            inner: Arc::new(Inner {
                tx,
                snapshot,
                events,
                store,
                clock,
                stats,
                thread: Mutex::new(Some(thread)),
            }),
        })
    }

    pub async fn execute(&self, request: Request) -> Result<Reply, EngineError> {
        self.submit(request)?.await
    }

    /// Queue `request` now, without waiting: requests submitted one after another are
    /// applied in that order, and the writer commits those queued together in one
    /// transaction (one fsync). The future resolves to the answer.
    pub fn submit(
        &self,
        request: Request,
    ) -> Result<impl Future<Output = Result<Reply, EngineError>> + use<>, EngineError> {
        if let Some(key) = &request.idempotency_key {
            validate_key(key).inspect_err(|e| self.inner.stats.record_unqueued(e))?;
        }
        let (tx, rx) = oneshot::channel();
        self.send(Msg::Exec(Box::new(request), tx))
            .inspect_err(|e| self.inner.stats.record_unqueued(e))?;
        Ok(async move { rx.await.map_err(|_| EngineError::ShuttingDown)? })
    }

    /// Wait until the writer has run one full iteration (timers and clock included).
    pub async fn sync(&self) -> Result<(), EngineError> {
        let (tx, rx) = oneshot::channel();
        self.send(Msg::Sync(tx))?;
        rx.await.map_err(|_| EngineError::ShuttingDown)
    }

    fn send(&self, msg: Msg) -> Result<(), EngineError> {
        // Counted before the send: the writer may take the message (and count it out)
        // before `try_send` even returns.
        let depth = &self.inner.stats.queue_depth;
        depth.fetch_add(1, Ordering::Relaxed);
        let result = match self.inner.tx.try_send(msg) {
            Ok(()) => return Ok(()),
            Err(TrySendError::Full(_)) => Err(EngineError::Busy),
            Err(TrySendError::Disconnected(_)) => Err(EngineError::ShuttingDown),
        };
        depth.fetch_sub(1, Ordering::Relaxed);
        result
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.inner.snapshot.borrow().clone()
    }

    /// Resolves when a commit changes the snapshot.
    pub fn watch(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.inner.snapshot.clone()
    }

    /// The venue clock now, as the engine counts it.
    pub fn now(&self) -> Timestamp {
        let snap = self.snapshot();
        let (venue, mono) = snap.anchor;
        let elapsed = self.inner.clock.monotonic().saturating_sub(mono);
        crate::domain::time::add(
            venue,
            SignedDuration::try_from(elapsed).unwrap_or(SignedDuration::ZERO),
        )
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.inner.events.subscribe()
    }

    /// The store for reads (read transactions never block the writer). Unavailable while
    /// the writer reopens it after an I/O failure.
    pub fn store(&self) -> Result<Store, EngineError> {
        self.inner
            .store
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
            .ok_or_else(|| EngineError::Storage {
                message: "the store is being reopened after an I/O failure".into(),
                disk_full: false,
            })
    }

    pub fn stats(&self) -> &EngineStats {
        &self.inner.stats
    }

    /// Stop taking commands, finish everything queued, commit, and stop the writer.
    pub async fn shutdown(&self) {
        // If the queue is full the writer is busy and will see the sender drop instead;
        // queued requests are still answered.
        let _ = self.inner.tx.try_send(Msg::Shutdown);
        let handle = self
            .inner
            .thread
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(handle) = handle {
            let _ = tokio::task::spawn_blocking(move || handle.join()).await;
        }
    }
}

fn validate_key(key: &str) -> Result<(), EngineError> {
    if key.is_empty() {
        return Err(EngineError::BadKey("must not be empty"));
    }
    if key.len() > MAX_IDEMPOTENCY_KEY {
        return Err(EngineError::BadKey("longer than 128 bytes"));
    }
    if !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(EngineError::BadKey("only printable ASCII without spaces"));
    }
    Ok(())
}
