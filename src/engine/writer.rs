//! The writer thread: one redb write transaction at a time, group-committed.
//!
//! It runs on its own OS thread because redb writes block (fsync); async workers only
//! enqueue and await a oneshot reply. Each iteration stages every change on copies of
//! the state, writes them in one transaction, and only after the commit succeeds adopts
//! the copies, answers the requests and broadcasts the events.

use super::venue_clock::VenueClock;
use super::{EngineConfig, EngineError, EngineStats, Msg, Reply, Request, Snapshot};
use crate::clock::Clock;
use crate::domain::mqtt::MqttAccount;
use crate::domain::{Actor, Command, DomainError, EventKind, SessionId, VenueState};
use crate::store::{
    self, ChainHead, EventBody, IdempotencyRecord, Store, StoreError, StoreLocation, StoreOptions,
    UserRecord,
};
use jiff::Timestamp;
use redb::WriteTransaction;
use sha2::{Digest, Sha256};
use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, oneshot, watch};

/// Longest the writer sleeps: clock observation and checkpoint cadence.
const TICK: Duration = Duration::from_secs(1);
/// Pause between attempts to reopen a store after an I/O failure.
const REOPEN_BACKOFF: Duration = Duration::from_millis(100);

type ReplyTx = oneshot::Sender<Result<Reply, EngineError>>;

pub(super) struct Writer {
    location: StoreLocation,
    store_options: StoreOptions,
    config: EngineConfig,
    clock: Arc<dyn Clock>,
    rx: Receiver<Msg>,
    events_tx: broadcast::Sender<Arc<store::Event>>,
    snapshot_tx: watch::Sender<Arc<Snapshot>>,
    shared_store: Arc<RwLock<Option<Store>>>,
    stats: Arc<EngineStats>,
    /// `None` after a failed commit, until a reopen succeeds.
    store: Option<Store>,
    /// Why the store is down, for the answers given meanwhile.
    down_error: Option<EngineError>,
    /// Shared with the published snapshot: adopting a batch copies nothing.
    state: Arc<VenueState>,
    head: ChainHead,
    vclock: VenueClock,
    deadlines: BinaryHeap<Reverse<(Timestamp, SessionId)>>,
    last_checkpoint: Duration,
    last_reopen_attempt: Option<Instant>,
}

/// One iteration's changes, adopted only after the commit.
struct Staged {
    state: VenueState,
    head: ChainHead,
    vclock: VenueClock,
    events: Vec<store::Event>,
    touched: BTreeSet<SessionId>,
    replies: Vec<(ReplyTx, Result<Reply, EngineError>, Trace)>,
    syncs: Vec<oneshot::Sender<()>>,
    /// Idempotency records written in this transaction.
    keys: HashMap<String, IdempotencyRecord>,
}

impl Writer {
    pub(super) fn boot(
        location: StoreLocation,
        store_options: StoreOptions,
        config: EngineConfig,
        clock: Arc<dyn Clock>,
        rx: Receiver<Msg>,
        events_tx: broadcast::Sender<Arc<store::Event>>,
        stats: Arc<EngineStats>,
    ) -> Result<Self, StoreError> {
        let store = Store::open(&location, &store_options)?;
        let loaded = store.load()?;
        let mono = clock.monotonic();
        let (vclock, boot_events) = VenueClock::boot(
            &loaded.state,
            loaded.checkpoint,
            clock.wall(),
            mono,
            clock.wall_trust(),
            config.outage,
            config.jump_threshold,
        );
        let (snapshot_tx, _) = watch::channel(Arc::new(Snapshot {
            state: Arc::new(loaded.state.clone()),
            clock: vclock.status.clone(),
            seq: loaded.head.next_seq.saturating_sub(1),
            anchor: vclock.anchor(),
        }));
        let mut writer = Self {
            location,
            store_options,
            config,
            clock,
            rx,
            events_tx,
            snapshot_tx,
            shared_store: Arc::new(RwLock::new(Some(store.clone()))),
            stats,
            store: Some(store.clone()),
            down_error: None,
            state: Arc::new(loaded.state),
            head: loaded.head,
            vclock,
            deadlines: BinaryHeap::new(),
            last_checkpoint: mono,
            last_reopen_attempt: None,
        };
        writer.rebuild_deadlines();
        // The boot decision is durable before any command runs; overdue sessions are
        // settled in the same transaction.
        let txn = store.begin_write()?;
        let mut staged = writer.stage();
        let now = staged.vclock.now(mono);
        for kind in boot_events {
            Self::record(&txn, &mut staged, now, &Actor::System, None, None, kind)?;
        }
        writer.fire_timers(&txn, &mut staged, now)?;
        store::write::checkpoint(&txn, now)?;
        txn.commit().map_err(StoreError::from)?;
        writer.adopt(staged, mono);
        Ok(writer)
    }

    pub(super) fn snapshot_receiver(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.snapshot_tx.subscribe()
    }

    pub(super) fn shared_store(&self) -> Arc<RwLock<Option<Store>>> {
        self.shared_store.clone()
    }

    pub(super) fn run(mut self) {
        loop {
            let mut batch = Vec::new();
            let mut stop = false;
            match self.rx.recv_timeout(self.wait_time()) {
                Ok(msg) => {
                    batch.push(msg);
                    batch.extend(
                        self.rx
                            .try_iter()
                            .take(self.config.max_batch.saturating_sub(1)),
                    );
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => stop = true,
            }
            stop |= batch.iter().any(|m| matches!(m, Msg::Shutdown));
            self.iteration(batch, stop);
            if stop {
                // Answer everything queued before the stop, then leave.
                loop {
                    let rest: Vec<Msg> = self.rx.try_iter().take(self.config.max_batch).collect();
                    if rest.is_empty() {
                        break;
                    }
                    self.iteration(rest, true);
                }
                tracing::info!("engine stopped; every queued command was answered");
                return;
            }
        }
    }

    fn wait_time(&self) -> Duration {
        let mono = self.clock.monotonic();
        let now = self.vclock.now(mono);
        let mut wait = TICK;
        if let Some(Reverse((deadline, _))) = self.deadlines.peek() {
            let until = deadline.duration_since(now);
            wait = wait.min(Duration::try_from(until).unwrap_or(Duration::ZERO));
        }
        let since_checkpoint = mono.saturating_sub(self.last_checkpoint);
        wait.min(
            self.config
                .checkpoint_interval
                .saturating_sub(since_checkpoint),
        )
    }

    fn stage(&self) -> Staged {
        Staged {
            state: (*self.state).clone(),
            head: self.head.clone(),
            vclock: self.vclock.clone(),
            events: Vec::new(),
            touched: BTreeSet::new(),
            replies: Vec::new(),
            syncs: Vec::new(),
            keys: HashMap::new(),
        }
    }

    fn iteration(&mut self, batch: Vec<Msg>, force_checkpoint: bool) {
        self.stats
            .queue_depth
            .fetch_sub(batch.len() as u64, Ordering::Relaxed);
        let mut requests = Vec::new();
        let mut syncs = Vec::new();
        for msg in batch {
            match msg {
                Msg::Exec(req, tx) => requests.push((req, tx)),
                Msg::Sync(tx) => syncs.push(tx),
                Msg::Shutdown => {}
            }
        }
        // Reopen (and reload from disk) before staging anything: staged copies of a
        // state that a reload is about to replace would overwrite it on adoption.
        let store = self.available_store();
        let mono = self.clock.monotonic();
        let mut vclock = self.vclock.clone();
        let now_before = vclock.now(mono);
        let timers_due = self
            .deadlines
            .peek()
            .is_some_and(|Reverse((t, _))| *t <= now_before);
        let checkpoint_due = force_checkpoint
            || mono.saturating_sub(self.last_checkpoint) >= self.config.checkpoint_interval;
        let clock_events = vclock.observe(
            &self.state,
            self.clock.wall(),
            mono,
            self.clock.wall_trust(),
        );
        if requests.is_empty() && clock_events.is_empty() && !timers_due && !checkpoint_due {
            // Idle tick: nothing to stage, so the state is not copied.
            self.vclock = vclock;
            for tx in syncs {
                let _ = tx.send(());
            }
            return;
        }
        let mut staged = self.stage();
        staged.vclock = vclock;
        staged.syncs = syncs;
        let Some(store) = store else {
            let err = match &self.down_error {
                Some(EngineError::Storage { message, disk_full }) => EngineError::Storage {
                    message: format!("the store is unavailable, retrying to reopen it ({message})"),
                    disk_full: *disk_full,
                },
                _ => EngineError::Storage {
                    message: "the store is unavailable, retrying to reopen it".into(),
                    disk_full: false,
                },
            };
            for (req, tx) in requests {
                let outcome = Err(err.clone());
                Trace::of(&req).log(&outcome, &self.stats);
                let _ = tx.send(outcome);
            }
            for tx in staged.syncs {
                let _ = tx.send(());
            }
            return;
        };
        let started = Instant::now();
        let result = store.begin_write().and_then(|txn| {
            let now = staged.vclock.now(mono);
            for kind in clock_events {
                Self::record(&txn, &mut staged, now, &Actor::System, None, None, kind)?;
            }
            for (req, tx) in requests.drain(..) {
                // Re-read per request: a clock confirmation earlier in the batch moves it.
                let now = staged.vclock.now(mono);
                let outcome = self.execute(&txn, &mut staged, now, mono, &req)?;
                staged.replies.push((tx, outcome, Trace::of(&req)));
            }
            let now = staged.vclock.now(mono);
            self.fire_timers(&txn, &mut staged, now)?;
            store::write::checkpoint(&txn, now)?;
            txn.commit().map_err(StoreError::from)
        });
        match result {
            Ok(()) => {
                self.stats.record_commit(started.elapsed());
                self.adopt(staged, mono);
            }
            Err(e) => {
                self.stats.failed_commits.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, "write failed; nothing in this batch was acknowledged");
                let err = EngineError::storage(&e);
                // Requests not reached before the failure are answered too.
                let pending = requests.into_iter().map(|(req, tx)| (tx, Trace::of(&req)));
                let answered = staged.replies.into_iter().map(|(tx, _, trace)| (tx, trace));
                for (tx, trace) in answered.chain(pending) {
                    let outcome = Err(err.clone());
                    trace.log(&outcome, &self.stats);
                    let _ = tx.send(outcome);
                }
                for tx in staged.syncs {
                    let _ = tx.send(());
                }
                // redb refuses writes after a failed commit: reopen and reload. Every
                // handle must be gone first, or redb's file lock refuses the reopen.
                self.down_error = Some(err);
                self.store = None;
                *self
                    .shared_store
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
            }
        }
    }

    /// One request inside the transaction. `Err` only for storage failures (which abort
    /// the whole batch); domain refusals are an `Ok(Err(..))` answer.
    fn execute(
        &self,
        txn: &WriteTransaction,
        staged: &mut Staged,
        now: Timestamp,
        mono: Duration,
        req: &Request,
    ) -> Result<Result<Reply, EngineError>, StoreError> {
        self.stats.commands.fetch_add(1, Ordering::Relaxed);
        let fingerprint = fingerprint(&req.actor, &req.command)?;
        if let Some(key) = &req.idempotency_key {
            let known = match staged.keys.get(key) {
                Some(rec) => Some(rec.clone()),
                None => store::write::read_idempotency(txn, key)?,
            };
            if let Some(rec) = known {
                if rec.fingerprint != fingerprint {
                    return Ok(Err(EngineError::KeyReused(key.clone())));
                }
                let mut reply: Reply = serde_json::from_value(rec.reply)?;
                reply.replayed = true;
                return Ok(Ok(reply));
            }
        }
        let kinds = match &req.command {
            Command::ConfirmClock { now: real } | Command::RouterClock { now: real }
                if !crate::domain::timekeeping::plausible(*real) =>
            {
                return Ok(Err(DomainError::InvalidField {
                    field: "now",
                    reason: "is not a plausible time for this box (before 2024 or after 2200)",
                }
                .into()));
            }
            Command::ConfirmClock { now: real } => staged.vclock.correct(
                &staged.state,
                now,
                *real,
                mono,
                crate::domain::timekeeping::TrustSource::Staff,
            ),
            // Only while no better source vouches: a trusted clock is not second-guessed
            // by the router's.
            Command::RouterClock { .. } if staged.vclock.status.trusted.is_some() => Vec::new(),
            Command::RouterClock { now: real } => staged.vclock.correct(
                &staged.state,
                now,
                *real,
                mono,
                crate::domain::timekeeping::TrustSource::Router,
            ),
            cmd => {
                match staged
                    .state
                    .decide_with(cmd, now, &self.config.policy, req.secret.is_some())
                {
                    Ok(kinds) => kinds,
                    Err(DomainError::UnknownSession(id)) => {
                        // Ended sessions are not in memory: tell "ended" from "never existed".
                        return Ok(Err(self.unknown_or_ended(id)));
                    }
                    Err(e) => return Ok(Err(e.into())),
                }
            }
        };
        let mut reply = Reply {
            events: Vec::with_capacity(kinds.len()),
            replayed: false,
        };
        for kind in kinds {
            let event = Self::record(
                txn,
                staged,
                now,
                &req.actor,
                req.idempotency_key.clone(),
                req.secret.as_deref(),
                kind,
            )?;
            reply.events.push(event);
        }
        if let Some(key) = &req.idempotency_key {
            let rec = IdempotencyRecord {
                fingerprint,
                reply: serde_json::to_value(&reply)?,
                at: now,
            };
            store::write::idempotency(txn, key, &rec)?;
            staged.keys.insert(key.clone(), rec);
        }
        Ok(Ok(reply))
    }

    fn unknown_or_ended(&self, id: SessionId) -> EngineError {
        let ended = self
            .store
            .as_ref()
            .and_then(|s| s.session(id).ok().flatten())
            .is_some();
        if ended {
            DomainError::SessionEnded(id).into()
        } else {
            DomainError::UnknownSession(id).into()
        }
    }

    /// Append one event, fold it into the staged state and write its projection.
    fn record(
        txn: &WriteTransaction,
        staged: &mut Staged,
        now: Timestamp,
        actor: &Actor,
        request: Option<String>,
        secret: Option<&str>,
        kind: EventKind,
    ) -> Result<store::Event, StoreError> {
        match &kind {
            EventKind::StationAdded { station } => store::write::station(txn, station)?,
            EventKind::StationRemoved { station } => store::write::remove_station(txn, station)?,
            EventKind::Session { session, .. } => {
                store::write::session(txn, session)?;
                staged.touched.insert(session.id);
            }
            EventKind::UserAdded { name, role } => store::write::user(
                txn,
                &UserRecord {
                    name: name.clone(),
                    role: *role,
                    password_hash: secret.unwrap_or_default().to_owned(),
                    created_at: now,
                },
            )?,
            EventKind::TokenCreated {
                id,
                name,
                user,
                role,
                expires_at,
            } => {
                let Some(hash) = secret else {
                    return Err(StoreError::Corrupt(format!(
                        "token {id} created without a secret"
                    )));
                };
                store::write::token(
                    txn,
                    hash,
                    &store::TokenRecord {
                        id: id.clone(),
                        name: name.clone(),
                        user: user.clone(),
                        role: *role,
                        expires_at: *expires_at,
                        revoked: false,
                        created_at: now,
                    },
                )?
            }
            EventKind::TokenRevoked { id, .. } => store::write::revoke_token(txn, id)?,
            EventKind::MqttAccountCreated {
                name,
                scope,
                with_secret,
            } => store::write::mqtt_account(txn, name, |_| {
                Ok(store::MqttAccountRecord {
                    account: MqttAccount {
                        name: name.clone(),
                        scope: scope.clone(),
                        revoked: false,
                        has_secret: *with_secret,
                    },
                    secret_hash: secret.map(str::to_owned),
                    created_at: now,
                    secret_issued_at: secret.map(|_| now),
                })
            })?,
            EventKind::MqttSecretIssued { name } => {
                let Some(hash) = secret else {
                    return Err(StoreError::Corrupt(format!(
                        "secret for {name} issued without a hash"
                    )));
                };
                store::write::mqtt_account(txn, name, |r| {
                    let mut r = r.ok_or_else(|| {
                        StoreError::Corrupt(format!("MQTT account {name} has no record"))
                    })?;
                    r.account.has_secret = true;
                    r.secret_hash = Some(hash.to_owned());
                    r.secret_issued_at = Some(now);
                    Ok(r)
                })?
            }
            EventKind::MqttAccountRevoked { name } => store::write::mqtt_account(txn, name, |r| {
                let mut r = r.ok_or_else(|| {
                    StoreError::Corrupt(format!("MQTT account {name} has no record"))
                })?;
                r.account.revoked = true;
                r.secret_hash = None;
                Ok(r)
            })?,
            EventKind::EnrollmentCreated {
                station,
                id,
                expires_at,
            } => {
                let Some(hash) = secret else {
                    return Err(StoreError::Corrupt(format!(
                        "enrollment {id} created without a code"
                    )));
                };
                store::write::enrollment(
                    txn,
                    hash,
                    &store::EnrollmentRecord {
                        id: id.clone(),
                        station: station.clone(),
                        expires_at: *expires_at,
                        used: false,
                    },
                )?
            }
            EventKind::AgentEnrolled { id, .. } => store::write::use_enrollment(txn, id)?,
            EventKind::DeviceAdded {
                name,
                kind,
                with_password,
            } => store::write::device(
                txn,
                &store::DeviceRecord {
                    device: crate::domain::device::Device {
                        name: name.clone(),
                        kind: kind.clone(),
                        has_password: *with_password,
                    },
                    password: secret.map(str::to_owned),
                    created_at: now,
                },
            )?,
            EventKind::DeviceRemoved { name } => store::write::remove_device(txn, name)?,
            EventKind::EnforcementSet {
                station,
                enforcement,
            } => store::write::enforcement(txn, station, enforcement.as_ref())?,
            EventKind::StationCommandSent { .. }
            | EventKind::DeviceActed { .. }
            | EventKind::EnforcementAlert { .. }
            | EventKind::PowerSampled { .. }
            | EventKind::StationCommandAcked { .. }
            | EventKind::StationCommandFailed { .. }
            | EventKind::LoggedIn { .. }
            | EventKind::LoginFailed { .. }
            | EventKind::ClockBooted { .. }
            | EventKind::ClockCorrected { .. }
            | EventKind::ClockJumpIgnored { .. } => {}
        }
        staged.state.apply(&kind);
        let event = staged.head.append(
            txn,
            EventBody {
                at: now,
                actor: actor.clone(),
                request,
                kind,
            },
        )?;
        staged.events.push(event.clone());
        Ok(event)
    }

    /// Warnings, expiry and grace end for every session whose deadline has come.
    fn fire_timers(
        &mut self,
        txn: &WriteTransaction,
        staged: &mut Staged,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let mut due = BTreeSet::new();
        // Popped entries come back through `adopt` (touched sessions) or, after a failed
        // commit, through the rebuild on reopen.
        while let Some(Reverse((t, id))) = self.deadlines.peek().copied() {
            if t > now {
                break;
            }
            self.deadlines.pop();
            due.insert(id);
        }
        for id in due {
            for kind in staged.state.due(id, now, &self.config.policy) {
                Self::record(txn, staged, now, &Actor::System, None, None, kind)?;
            }
        }
        Ok(())
    }

    /// The commit succeeded: adopt the staged state, answer, publish.
    fn adopt(&mut self, staged: Staged, mono: Duration) {
        self.state = Arc::new(staged.state);
        self.head = staged.head;
        self.vclock = staged.vclock;
        self.last_checkpoint = mono;
        for id in &staged.touched {
            self.push_deadline(*id);
        }
        let clock_changed = self.snapshot_tx.borrow().clock != self.vclock.status;
        if !staged.events.is_empty() || clock_changed {
            self.publish();
        }
        for event in staged.events {
            let _ = self.events_tx.send(Arc::new(event));
        }
        for (tx, reply, trace) in staged.replies {
            trace.log(&reply, &self.stats);
            let _ = tx.send(reply);
        }
        for tx in staged.syncs {
            let _ = tx.send(());
        }
    }

    fn publish(&self) {
        self.snapshot_tx.send_replace(Arc::new(Snapshot {
            state: Arc::clone(&self.state),
            clock: self.vclock.status.clone(),
            seq: self.head.next_seq.saturating_sub(1),
            anchor: self.vclock.anchor(),
        }));
    }

    fn push_deadline(&mut self, id: SessionId) {
        if let Some(t) = self
            .state
            .sessions
            .get(&id)
            .and_then(|s| s.next_deadline(&self.config.policy))
        {
            self.deadlines.push(Reverse((t, id)));
        }
    }

    fn rebuild_deadlines(&mut self) {
        self.deadlines.clear();
        let ids: Vec<SessionId> = self.state.sessions.keys().copied().collect();
        for id in ids {
            self.push_deadline(id);
        }
    }

    /// The open store, reopening (and reloading from it) after a failure.
    fn available_store(&mut self) -> Option<Store> {
        if let Some(store) = &self.store {
            return Some(store.clone());
        }
        if self
            .last_reopen_attempt
            .is_some_and(|t| t.elapsed() < REOPEN_BACKOFF)
        {
            return None;
        }
        self.last_reopen_attempt = Some(Instant::now());
        match self.reopen() {
            Ok(store) => {
                self.down_error = None;
                *self
                    .shared_store
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(store.clone());
                Some(store)
            }
            Err(e) => {
                tracing::warn!(error = %e, "store still unavailable");
                self.down_error = Some(EngineError::storage(&e));
                None
            }
        }
    }

    fn reopen(&mut self) -> Result<Store, StoreError> {
        let store = Store::open(&self.location, &self.store_options)?;
        // What is on disk is the truth: a failed commit may or may not have landed.
        let loaded = store.load()?;
        self.state = Arc::new(loaded.state);
        self.head = loaded.head;
        self.rebuild_deadlines();
        self.publish();
        tracing::info!("store reopened after an I/O failure");
        self.store = Some(store.clone());
        Ok(store)
    }
}

/// What a log line says about a command: what, who, under which key. Secrets never
/// travel in commands (password hashes ride beside them).
struct Trace {
    command: &'static str,
    actor: String,
    key: Option<String>,
}

impl Trace {
    fn of(req: &Request) -> Self {
        Self {
            command: req.command.name(),
            actor: req.actor.to_string(),
            key: req.idempotency_key.clone(),
        }
    }

    /// Logged (and counted for /metrics) once the outcome is final (after the commit,
    /// or its failure).
    fn log(&self, outcome: &Result<Reply, EngineError>, stats: &EngineStats) {
        stats.record_outcome(outcome);
        let key = self.key.as_deref().unwrap_or("-");
        let (command, actor) = (self.command, self.actor.as_str());
        match outcome {
            Ok(r) if r.replayed => {
                tracing::info!(command, actor, key, "answered from its idempotency key")
            }
            Ok(r) => tracing::info!(
                command,
                actor,
                key,
                first_seq = r.events.first().map(|e| e.seq),
                events = r.events.len(),
                "committed"
            ),
            Err(e) => tracing::info!(command, actor, key, code = e.code(), "refused: {e}"),
        }
    }
}

/// What an idempotency key is bound to: who asked, and for what. Another caller reusing
/// the key is refused rather than handed the first caller's answer.
fn fingerprint(actor: &Actor, cmd: &Command) -> Result<String, StoreError> {
    let mut h = Sha256::new();
    h.update(serde_json::to_vec(actor)?);
    h.update([0]);
    h.update(serde_json::to_vec(cmd)?);
    Ok(store::eventlog::hex(&h.finalize().into()))
}
