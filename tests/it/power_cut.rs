//! Power cuts, I/O errors and a full disk, on a simulated disk with a volatile page cache.
//!
//! [`SimDisk`] is a redb storage backend that behaves like a disk behind a page cache:
//! writes and length changes land in the cache (reads see them at once) and reach the
//! durable image only at `sync_data`. A power cut throws the cache away, after possibly
//! persisting some of it (a prefix of the writes in issue order, or any subset of the
//! dirty pages), possibly with one write torn. Every backend handle opened before the
//! cut fails from then on, and so does the factory of the engine that was running (the
//! process died with the power). Fault modes make writes fail as a full disk or a
//! generic I/O error would.
//!
//! The tests check that the engine never loses or duplicates an acknowledged command
//! across cuts and never acknowledges what it did not commit.
//!
//! Seeds: `VENUED_POWER_CUT_SEED=<n>` fixes the base seed (it is printed either way and
//! in every failure message). Thread interleaving still varies between runs; the cuts
//! scheduled at a backend operation count are the most reproducible part.

use crate::support::*;
use jiff::SignedDuration;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};
use venued::clock::ManualClock;
use venued::domain::{Actor, Command, EventKind, SessionId, StationKind, VenueState};
use venued::engine::{Engine, EngineConfig, EngineError, Reply, Request};
use venued::store::{BackendFactory, Event, StoreError, StoreLocation, StoreOptions};

// ---------------------------------------------------------------------------------------
// A tiny deterministic PRNG (splitmix64): no dependency, reproducible from a printed seed.

#[derive(Clone, Debug)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (0 when `n` is 0).
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }

    fn one_in(&mut self, n: u64) -> bool {
        self.below(n) == 0
    }

    fn fork(&mut self) -> Rng {
        Rng::new(self.next_u64())
    }
}

fn base_seed() -> u64 {
    match std::env::var("VENUED_POWER_CUT_SEED") {
        Ok(s) => s
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("VENUED_POWER_CUT_SEED={s:?} is not a u64")),
        Err(_) => rand::random(),
    }
}

// ---------------------------------------------------------------------------------------
// The simulated disk.

/// Page size of the simulated page cache (what a subset cut persists or loses as a unit).
const PAGE: usize = 4096;
/// Granularity of a torn write. 1 byte is harsher than real hardware (which keeps 512-byte
/// sectors atomic); redb is expected to survive it because every commit is checksummed.
const TEAR_GRANULE: usize = 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    Healthy,
    /// `write`, `set_len` and `sync_data` fail with `ErrorKind::StorageFull`.
    DiskFull,
    /// `write`, `set_len` and `sync_data` fail with a generic `ErrorKind::Other` error.
    IoError,
    /// Writes land in the page cache but `sync_data` fails (EIO), once `DiskState::
    /// syncs_before_failure` more syncs have gone through. The dirty pages stay dirty:
    /// reads see them and a later successful sync persists them.
    SyncFails,
}

#[derive(Clone, Debug)]
enum Op {
    Write { offset: u64, data: Vec<u8> },
    SetLen(u64),
}

/// How the last power cut treated the unsynced writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum CutStyle {
    /// Nothing was pending: the cut hit between a sync and the next write.
    NothingPending,
    /// Every unsynced write was lost.
    LostAll,
    /// A prefix of the writes (in issue order) reached the platter.
    Prefix,
    /// Any subset of the dirty pages reached the platter, in no particular order.
    Pages,
}

#[derive(Debug, Default, Clone)]
struct DiskStats {
    cuts: BTreeMap<CutStyle, u64>,
    torn: u64,
    /// Unsynced operations that a cut could drop, summed over cuts.
    pending_at_cut: u64,
}

#[derive(Debug)]
struct DiskState {
    /// What survives a power cut.
    durable: Vec<u8>,
    /// What reads see: `durable` with `pending` applied in order.
    cache: Vec<u8>,
    /// Writes and length changes since the last `sync_data`.
    pending: Vec<Op>,
    /// Bumped by every power cut; handles from an older generation are dead.
    generation: u64,
    fault: Fault,
    /// Mutating calls (`write`, `set_len`, `sync_data`) since the disk was made.
    ops: u64,
    /// Cut the power when `ops` reaches this, inside the call.
    cut_at_op: Option<u64>,
    /// With `Fault::SyncFails`: syncs that still succeed before they start failing.
    syncs_before_failure: u64,
    rng: Rng,
    stats: DiskStats,
}

fn apply(image: &mut Vec<u8>, op: &Op) {
    match op {
        Op::SetLen(len) => image.resize(*len as usize, 0),
        Op::Write { offset, data } => {
            let start = *offset as usize;
            let end = start + data.len();
            if image.len() < end {
                image.resize(end, 0);
            }
            image[start..end].copy_from_slice(data);
        }
    }
}

fn power_lost() -> io::Error {
    io::Error::other("power lost (simulated power cut)")
}

impl DiskState {
    fn power_cut(&mut self) {
        let pending = std::mem::take(&mut self.pending);
        self.stats.pending_at_cut += pending.len() as u64;
        let style = if pending.is_empty() {
            CutStyle::NothingPending
        } else {
            match self.rng.below(3) {
                0 => CutStyle::LostAll,
                1 => CutStyle::Prefix,
                _ => CutStyle::Pages,
            }
        };
        match style {
            CutStyle::NothingPending | CutStyle::LostAll => {}
            CutStyle::Prefix => {
                let keep = 1 + self.rng.below(pending.len() as u64) as usize;
                let tear = self.rng.one_in(2);
                for (i, op) in pending[..keep].iter().enumerate() {
                    match op {
                        Op::Write { offset, data } if tear && i + 1 == keep => {
                            let granules = data.len().div_ceil(TEAR_GRANULE) as u64;
                            let cut =
                                (self.rng.below(granules) as usize * TEAR_GRANULE).min(data.len());
                            apply(
                                &mut self.durable,
                                &Op::Write {
                                    offset: *offset,
                                    data: data[..cut].to_vec(),
                                },
                            );
                            self.stats.torn += 1;
                        }
                        op => apply(&mut self.durable, op),
                    }
                }
            }
            CutStyle::Pages => {
                // The length (file metadata) is persisted or not, independently of data.
                let mut dirty = std::collections::BTreeSet::new();
                for op in &pending {
                    if let Op::Write { offset, data } = op
                        && !data.is_empty()
                    {
                        let first = *offset as usize / PAGE;
                        let last = (*offset as usize + data.len() - 1) / PAGE;
                        dirty.extend(first..=last);
                    }
                }
                if self.rng.one_in(2) {
                    self.durable.resize(self.cache.len(), 0);
                }
                let torn_page = if self.rng.one_in(2) && !dirty.is_empty() {
                    let n = self.rng.below(dirty.len() as u64) as usize;
                    dirty.iter().nth(n).copied()
                } else {
                    None
                };
                for page in dirty {
                    if !self.rng.one_in(2) {
                        continue;
                    }
                    let start = page * PAGE;
                    let mut end = (start + PAGE).min(self.cache.len()).min(self.durable.len());
                    if Some(page) == torn_page && end > start {
                        let granules = (end - start).div_ceil(TEAR_GRANULE) as u64;
                        end = start + self.rng.below(granules) as usize * TEAR_GRANULE;
                        self.stats.torn += 1;
                    }
                    if end > start {
                        self.durable[start..end].copy_from_slice(&self.cache[start..end]);
                    }
                }
            }
        }
        *self.stats.cuts.entry(style).or_default() += 1;
        self.cache = self.durable.clone();
        self.generation += 1;
        self.cut_at_op = None;
    }

    /// Count a mutating call; true when the scheduled cut fires on it.
    fn tick(&mut self) -> bool {
        self.ops += 1;
        self.cut_at_op == Some(self.ops)
    }

    fn fault_error(&self) -> Option<io::Error> {
        match self.fault {
            Fault::Healthy | Fault::SyncFails => None,
            Fault::DiskFull => Some(io::Error::new(
                io::ErrorKind::StorageFull,
                "no space left on device (simulated)",
            )),
            Fault::IoError => Some(io::Error::other("input/output error (simulated)")),
        }
    }
}

/// One simulated disk, shared by every handle opened on it.
#[derive(Clone, Debug)]
struct SimDisk(Arc<Mutex<DiskState>>);

impl SimDisk {
    fn new(seed: u64) -> Self {
        Self(Arc::new(Mutex::new(DiskState {
            durable: Vec::new(),
            cache: Vec::new(),
            pending: Vec::new(),
            generation: 0,
            fault: Fault::Healthy,
            ops: 0,
            cut_at_op: None,
            syncs_before_failure: 0,
            rng: Rng::new(seed),
            stats: DiskStats::default(),
        })))
    }

    fn lock(&self) -> MutexGuard<'_, DiskState> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn generation(&self) -> u64 {
        self.lock().generation
    }

    fn stats(&self) -> DiskStats {
        self.lock().stats.clone()
    }

    fn power_cut(&self) {
        self.lock().power_cut();
    }

    /// Cut the power inside the `n`th mutating call from now (1 = the next one).
    fn schedule_cut(&self, n: u64) {
        let mut s = self.lock();
        s.cut_at_op = Some(s.ops + n.max(1));
    }

    fn set_fault(&self, fault: Fault) {
        self.lock().fault = fault;
    }

    /// Let `ok` more syncs succeed, then fail every sync (writes keep working).
    fn fail_syncs_after(&self, ok: u64) {
        let mut s = self.lock();
        s.fault = Fault::SyncFails;
        s.syncs_before_failure = ok;
    }

    /// The factory of one engine "process": it opens handles on the current generation,
    /// and refuses once the power has been cut (that process died with it).
    fn factory(&self) -> BackendFactory {
        let disk = self.clone();
        let born = disk.generation();
        Arc::new(move || {
            if disk.generation() != born {
                return Err(power_lost());
            }
            Ok(Box::new(SimHandle {
                disk: disk.clone(),
                generation: born,
            }) as Box<dyn redb::StorageBackend>)
        })
    }
}

/// A backend handle: an open file on the simulated disk.
#[derive(Debug)]
struct SimHandle {
    disk: SimDisk,
    generation: u64,
}

impl SimHandle {
    /// The disk, if the power has not been cut since this handle was opened.
    fn alive(&self) -> io::Result<MutexGuard<'_, DiskState>> {
        let s = self.disk.lock();
        if s.generation != self.generation {
            return Err(power_lost());
        }
        Ok(s)
    }

    /// The disk, ready for a mutating call: alive, not faulted, not cut by the schedule.
    fn for_write(&self, op: Option<Op>) -> io::Result<MutexGuard<'_, DiskState>> {
        let mut s = self.alive()?;
        if let Some(e) = s.fault_error() {
            return Err(e);
        }
        if s.tick() {
            // The call in progress may itself partly reach the platter.
            if let Some(op) = op {
                s.pending.push(op);
            }
            s.power_cut();
            return Err(power_lost());
        }
        Ok(s)
    }
}

impl redb::StorageBackend for SimHandle {
    fn len(&self) -> io::Result<u64> {
        Ok(self.alive()?.cache.len() as u64)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        let s = self.alive()?;
        let start = offset as usize;
        let end = start + out.len();
        if end > s.cache.len() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("read {start}..{end} past the end ({})", s.cache.len()),
            ));
        }
        out.copy_from_slice(&s.cache[start..end]);
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let op = Op::SetLen(len);
        let mut s = self.for_write(Some(op.clone()))?;
        apply(&mut s.cache, &op);
        s.pending.push(op);
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        let mut s = self.for_write(None)?;
        if s.fault == Fault::SyncFails {
            if s.syncs_before_failure == 0 {
                return Err(io::Error::other("fsync: input/output error (simulated)"));
            }
            s.syncs_before_failure -= 1;
        }
        let pending = std::mem::take(&mut s.pending);
        for op in &pending {
            apply(&mut s.durable, op);
        }
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let op = Op::Write {
            offset,
            data: data.to_vec(),
        };
        let mut s = self.for_write(Some(op.clone()))?;
        apply(&mut s.cache, &op);
        s.pending.push(op);
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// Engine helpers.

fn boot(disk: &SimDisk, clock: &ManualClock) -> Result<Engine, StoreError> {
    Engine::start(
        StoreLocation::Backend(disk.factory()),
        StoreOptions::default(),
        EngineConfig::default(),
        Arc::new(clock.clone()),
    )
}

fn keyed(cmd: Command, key: &str) -> Request {
    Request::new(cmd, Actor::Local { uid: None }).with_key(Some(key.to_owned()))
}

fn add_station_cmd(id: &str) -> Command {
    Command::AddStation {
        id: station(id),
        name: id.to_uppercase(),
        kind: StationKind::Pc,
        zone: None,
    }
}

/// Stop an engine whose disk lost power (or is gone); it must not hang.
async fn stop_dead_engine(engine: Engine, ctx: &str) {
    let stopped = tokio::time::timeout(Duration::from_secs(10), engine.shutdown()).await;
    assert!(
        stopped.is_ok(),
        "{ctx}: Engine::shutdown did not return within 10 s after its disk lost power"
    );
}

/// What every recovered store must agree with.
#[derive(Debug, Default)]
struct Ledger {
    /// Every key ever sent, with its command (a retry must send the very same command).
    sent: HashMap<String, Command>,
    /// Acknowledged keys and the events their `Ok` reply reported.
    acked: HashMap<String, Vec<Event>>,
    /// Keys answered with a domain refusal: nothing may be stored for them.
    refused: HashSet<String>,
    /// Keys without an answer (in flight at a cut, or failed with it): may or may not be
    /// stored, but at most once.
    unresolved: Vec<String>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Check the recovered log against the ledger: (a) every acknowledged key is stored
/// exactly as acknowledged, once; (b) no event carries a key never sent; a key stored
/// without an acknowledgement is stored once, exactly as its idempotency record says;
/// refused keys left nothing; (c) the hash chain verifies; and the engine's state is
/// what the store's tables say. The idempotency records of acknowledged keys are
/// compared too when `all_records` (an acknowledged key's events are already pinned by
/// its acknowledgement). Returns (events, stored keys never acknowledged).
fn check_log(engine: &Engine, ledger: &Ledger, all_records: bool, ctx: &str) -> (u64, usize) {
    let store = engine.store().unwrap();
    let events = store
        .events(0, usize::MAX)
        .unwrap_or_else(|e| panic!("{ctx}: reading the recovered event log failed: {e}"));
    for (i, e) in events.iter().enumerate() {
        assert_eq!(
            e.seq,
            i as u64 + 1,
            "{ctx}: the recovered log has a gap or reordering at position {i} (seq {})",
            e.seq
        );
    }
    let mut by_key: HashMap<&str, Vec<&Event>> = HashMap::new();
    for e in &events {
        if let Some(k) = &e.body.request {
            by_key.entry(k.as_str()).or_default().push(e);
        }
    }
    for (key, found) in &by_key {
        let seqs: Vec<u64> = found.iter().map(|e| e.seq).collect();
        assert!(
            ledger.sent.contains_key(*key),
            "{ctx}: events {seqs:?} carry idempotency key {key:?}, which was never sent"
        );
        assert!(
            !ledger.refused.contains(*key),
            "{ctx}: key {key:?} was refused by the domain, yet events {seqs:?} carry it"
        );
        if !all_records && ledger.acked.contains_key(*key) {
            continue;
        }
        // Stored at most once: the events of a key are exactly those its idempotency
        // record remembers (a second application would add events the record lacks).
        let record = store
            .idempotency(key)
            .unwrap_or_else(|e| panic!("{ctx}: reading the idempotency record of {key:?}: {e}"))
            .unwrap_or_else(|| {
                panic!(
                    "{ctx}: events {seqs:?} carry key {key:?} but no idempotency record was \
                     stored with them, so a retry would apply the command a second time"
                )
            });
        let remembered: Reply = serde_json::from_value(record.reply).unwrap_or_else(|e| {
            panic!("{ctx}: the idempotency record of {key:?} does not decode: {e}")
        });
        let remembered_seqs: Vec<u64> = remembered.events.iter().map(|e| e.seq).collect();
        assert_eq!(
            seqs, remembered_seqs,
            "{ctx}: key {key:?} appears in the log at {seqs:?} but its remembered reply lists \
             {remembered_seqs:?}: the command was applied more than once or partly"
        );
        let stored: Vec<Event> = found.iter().map(|e| (*e).clone()).collect();
        assert_eq!(
            stored, remembered.events,
            "{ctx}: key {key:?}: the remembered reply differs from the events in the log"
        );
    }
    for (key, acked) in &ledger.acked {
        let acked_seqs: Vec<u64> = acked.iter().map(|e| e.seq).collect();
        let found: Vec<Event> = by_key
            .get(key.as_str())
            .map(|v| v.iter().map(|e| (*e).clone()).collect())
            .unwrap_or_default();
        let found_seqs: Vec<u64> = found.iter().map(|e| e.seq).collect();
        if found.is_empty() && !acked.is_empty() {
            let now_there: Vec<(u64, Option<&str>)> = acked_seqs
                .iter()
                .filter_map(|s| events.iter().find(|e| e.seq == *s))
                .map(|e| (e.seq, e.body.request.as_deref()))
                .collect();
            panic!(
                "{ctx}: acknowledged key {key:?} (events {acked_seqs:?}) is missing from the \
                 log; those seqs now hold (seq, key): {now_there:?}"
            );
        }
        assert_eq!(
            found, *acked,
            "{ctx}: acknowledged key {key:?}: the log holds events {found_seqs:?}, the \
             acknowledgement reported {acked_seqs:?} (lost, duplicated or rewritten)"
        );
    }
    let report = store
        .verify()
        .unwrap_or_else(|e| panic!("{ctx}: verify failed to run on the recovered store: {e}"));
    assert!(
        report.broken.is_none(),
        "{ctx}: the recovered hash chain is broken: {:?}",
        report.broken
    );
    assert_eq!(
        report.events,
        events.len() as u64,
        "{ctx}: verify counted {} events, the log read back {}",
        report.events,
        events.len()
    );
    let on_disk = store
        .load()
        .unwrap_or_else(|e| panic!("{ctx}: loading the state from the store failed: {e}"));
    assert_eq!(
        *engine.snapshot().state,
        on_disk.state,
        "{ctx}: the engine's in-memory state differs from the state in the store's tables"
    );
    let unacked_present = by_key
        .keys()
        .filter(|k| !ledger.acked.contains_key(**k))
        .count();
    (events.len() as u64, unacked_present)
}

// ---------------------------------------------------------------------------------------
// The power-cut test.

const TASKS: usize = 4;
const DISKS: u64 = 25;
const CUTS_PER_DISK: u64 = 8;
const MAX_COMMANDS_PER_TASK: usize = 10;

const AFTER_ACKS: &str = "after N acknowledgements";
const AT_OP: &str = "inside the Nth write/set_len/sync";
const AFTER_DELAY: &str = "after a random delay";

#[derive(Debug, Default)]
struct Totals {
    cuts: u64,
    by_trigger: BTreeMap<&'static str, u64>,
    acked_in_rounds: u64,
    acked_distinct: u64,
    ack_checks: u64,
    unanswered: u64,
    replayed_on_retry: u64,
    applied_on_retry: u64,
    refused_on_retry: u64,
    stored_unacked: u64,
    domain_refusals: u64,
    events: u64,
    torn: u64,
    pending_at_cut: u64,
    styles: BTreeMap<CutStyle, u64>,
}

struct Round {
    engine: Engine,
    ledger: Arc<Mutex<Ledger>>,
    disk: SimDisk,
    born: u64,
    acks: AtomicU64,
    cut_after_acks: Option<u64>,
    prefix: String,
}

/// One client: works its own station (start, extend, stop) with fresh keys until the
/// engine stops answering `Ok` (the power is gone) or it has sent its share.
async fn drive(round: Arc<Round>, task: usize, mut rng: Rng) -> Result<(), String> {
    let st = station(&format!("pc-{task}"));
    let active_on = |engine: &Engine| engine.snapshot().state.session_on(&st).map(|s| s.id);
    let mut active: Option<SessionId> = active_on(&round.engine);
    let mut force_stop = false;
    for n in 0..MAX_COMMANDS_PER_TASK {
        let cmd = match active {
            None => Command::StartSession {
                station: st.clone(),
                duration: Some(SignedDuration::from_mins(30)),
            },
            Some(id) if force_stop || rng.one_in(4) => Command::StopSession {
                session: id,
                reason: None,
            },
            Some(id) => Command::ExtendSession {
                session: id,
                by: SignedDuration::from_mins(1),
            },
        };
        let key = format!("{}-t{task}-n{n}", round.prefix);
        lock(&round.ledger).sent.insert(key.clone(), cmd.clone());
        match round.engine.execute(keyed(cmd, &key)).await {
            Ok(reply) => {
                if reply.replayed {
                    return Err(format!("fresh key {key} was answered as a replay"));
                }
                force_stop = false;
                for e in &reply.events {
                    if let EventKind::Session { session, .. } = &e.body.kind {
                        active = session.is_active().then_some(session.id);
                    }
                }
                lock(&round.ledger).acked.insert(key, reply.events);
                let total = round.acks.fetch_add(1, Ordering::SeqCst) + 1;
                if Some(total) == round.cut_after_acks {
                    round.disk.power_cut();
                }
            }
            Err(EngineError::Domain(_)) => {
                // Not expected on a still clock, but legitimate: nothing may be stored.
                lock(&round.ledger).refused.insert(key);
                active = active_on(&round.engine);
                force_stop = true;
            }
            Err(e @ (EngineError::Storage { .. } | EngineError::ShuttingDown)) => {
                lock(&round.ledger).unresolved.push(key.clone());
                if round.disk.generation() == round.born {
                    return Err(format!(
                        "{key}: the engine answered {e:?} although the power was never cut"
                    ));
                }
                return Ok(());
            }
            Err(e) => return Err(format!("{key}: unexpected answer {e:?}")),
        }
    }
    Ok(())
}

/// Send a keyed command once and record the answer in the ledger (setup and probes).
async fn send_acked(engine: &Engine, ledger: &Mutex<Ledger>, cmd: Command, key: &str, ctx: &str) {
    lock(ledger).sent.insert(key.to_owned(), cmd.clone());
    let reply = engine
        .execute(keyed(cmd, key))
        .await
        .unwrap_or_else(|e| panic!("{ctx}: the recovered engine refused command {key}: {e}"));
    lock(ledger).acked.insert(key.to_owned(), reply.events);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_cut_never_loses_an_acknowledged_command() {
    let started = Instant::now();
    let seed = base_seed();
    eprintln!("power_cut: base seed {seed} (rerun with VENUED_POWER_CUT_SEED={seed})");
    let mut totals = Totals::default();
    for d in 0..DISKS {
        // One disk lives through several cuts: recovery of a recovered store is exercised.
        let disk_seed = seed.wrapping_add(d.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let mut rng = Rng::new(disk_seed);
        let disk = SimDisk::new(rng.next_u64());
        let clock = trusted_clock();
        let ledger = Arc::new(Mutex::new(Ledger::default()));
        for c in 0..=CUTS_PER_DISK {
            let ctx = format!("seed {seed}, disk {d} (disk seed {disk_seed}), boot after {c} cuts");
            let engine = boot(&disk, &clock)
                .unwrap_or_else(|e| panic!("{ctx}: the engine could not recover the store: {e}"));
            {
                let l = lock(&ledger);
                let (events, stored_unacked) = check_log(&engine, &l, c == CUTS_PER_DISK, &ctx);
                totals.ack_checks += l.acked.len() as u64;
                totals.stored_unacked += stored_unacked as u64;
                if c == CUTS_PER_DISK {
                    totals.events += events;
                    totals.acked_distinct += l.acked.len() as u64;
                }
            }
            // A client retries what it never got an answer for: at most one effect.
            let unresolved = std::mem::take(&mut lock(&ledger).unresolved);
            for key in unresolved {
                let cmd = lock(&ledger).sent[&key].clone();
                match engine.execute(keyed(cmd, &key)).await {
                    Ok(reply) => {
                        if reply.replayed {
                            totals.replayed_on_retry += 1;
                        } else {
                            totals.applied_on_retry += 1;
                        }
                        lock(&ledger).acked.insert(key, reply.events);
                    }
                    Err(EngineError::Domain(_)) => {
                        totals.refused_on_retry += 1;
                        lock(&ledger).refused.insert(key);
                    }
                    Err(e) => panic!("{ctx}: retrying the unanswered command {key} failed: {e:?}"),
                }
            }
            // (d) the recovered engine takes new commands.
            if c == 0 {
                for t in 0..TASKS {
                    let cmd = add_station_cmd(&format!("pc-{t}"));
                    send_acked(&engine, &ledger, cmd, &format!("d{d}-setup-{t}"), &ctx).await;
                }
            } else {
                let cmd = add_station_cmd(&format!("probe-{c}"));
                send_acked(&engine, &ledger, cmd, &format!("d{d}-c{c}-probe"), &ctx).await;
            }
            if c == CUTS_PER_DISK {
                check_log(&engine, &lock(&ledger), true, &ctx);
                engine.shutdown().await;
                break;
            }

            // Several clients send commands; the power goes at a random moment.
            let trigger = match rng.below(4) {
                0 => AFTER_ACKS,
                1 => AFTER_DELAY,
                _ => AT_OP,
            };
            *totals.by_trigger.entry(trigger).or_default() += 1;
            let cut_after_acks = (trigger == AFTER_ACKS).then(|| 1 + rng.below(20));
            if trigger == AT_OP {
                // About 20 mutating calls per group commit: this spans the first ~7.
                disk.schedule_cut(1 + rng.below(150));
            }
            let round = Arc::new(Round {
                engine: engine.clone(),
                ledger: ledger.clone(),
                disk: disk.clone(),
                born: disk.generation(),
                acks: AtomicU64::new(0),
                cut_after_acks,
                prefix: format!("d{d}-c{c}"),
            });
            let clients: Vec<_> = (0..TASKS)
                .map(|t| tokio::spawn(drive(round.clone(), t, rng.fork())))
                .collect();
            if trigger == AFTER_DELAY {
                tokio::time::sleep(Duration::from_micros(rng.below(20_000))).await;
                disk.power_cut();
            }
            for client in clients {
                let outcome = tokio::time::timeout(Duration::from_secs(20), client)
                    .await
                    .unwrap_or_else(|_| panic!("{ctx}: a client got no answer for 20 s"))
                    .unwrap_or_else(|e| panic!("{ctx}: a client task panicked: {e}"));
                if let Err(e) = outcome {
                    panic!("{ctx}: {e}");
                }
            }
            if disk.generation() == round.born {
                // The clients were done before the trigger: cut now, between commits.
                disk.power_cut();
            }
            totals.cuts += 1;
            totals.acked_in_rounds += round.acks.load(Ordering::SeqCst);
            totals.unanswered += lock(&ledger).unresolved.len() as u64;
            drop(round);
            stop_dead_engine(engine, &ctx).await;
            // Time passes while the power is off; overdue sessions settle at the next boot.
            clock.advance(Duration::from_secs(rng.below(600)));
        }
        totals.domain_refusals += lock(&ledger).refused.len() as u64;
        let stats = disk.stats();
        totals.torn += stats.torn;
        totals.pending_at_cut += stats.pending_at_cut;
        for (style, n) in stats.cuts {
            *totals.styles.entry(style).or_default() += n;
        }
    }
    let t = &totals;
    eprintln!(
        "power_cut: {} cut points on {DISKS} disks ({CUTS_PER_DISK} each); triggers {:?}; \
         unsynced writes at the cut: {:?} ({} ops in all, {} writes torn)",
        t.cuts, t.by_trigger, t.styles, t.pending_at_cut, t.torn
    );
    eprintln!(
        "power_cut: {} commands acknowledged between cuts, {} distinct acknowledged commands \
         in the final logs, {} acknowledged-command checks after recoveries, {} events in \
         the final logs",
        t.acked_in_rounds, t.acked_distinct, t.ack_checks, t.events
    );
    eprintln!(
        "power_cut: {} commands unanswered at a cut; on recovery {} of them were stored, on \
         retry {} were replayed, {} applied for the first time, {} refused; {} domain \
         refusals; took {:.1?}",
        t.unanswered,
        t.stored_unacked,
        t.replayed_on_retry,
        t.applied_on_retry,
        t.refused_on_retry,
        t.domain_refusals,
        started.elapsed()
    );
    assert_eq!(
        t.cuts,
        DISKS * CUTS_PER_DISK,
        "every round must end in a cut"
    );
    assert_eq!(
        t.stored_unacked, t.replayed_on_retry,
        "every unanswered command found stored at recovery must be replayed, not re-applied, \
         on retry"
    );
}

// ---------------------------------------------------------------------------------------
// I/O errors and a full disk.

/// What the engine answers while it cannot reopen its store.
const UNAVAILABLE: &str = "the store is unavailable, retrying to reopen it";

/// Retry `cmd` with `key` until the engine takes it (it reopens with a 100 ms backoff).
async fn until_recovered(engine: &Engine, cmd: &Command, key: &str, what: &str) -> (Reply, u32) {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut attempts = 0;
    loop {
        attempts += 1;
        match engine.execute(keyed(cmd.clone(), key)).await {
            Ok(reply) => return (reply, attempts),
            Err(EngineError::Storage { .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!(
                "{what}: the engine did not take a command within 5 s of the disk healing \
                 ({attempts} attempts); last answer: {e:?}"
            ),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn io_errors_and_full_disk_are_refused_then_recovered() {
    let started = Instant::now();
    let disk = SimDisk::new(base_seed());
    let clock = trusted_clock();
    let engine = boot(&disk, &clock).expect("a healthy simulated disk opens");
    for id in ["pc-1", "pc-2", "pc-3"] {
        engine
            .execute(keyed(add_station_cmd(id), &format!("setup-{id}")))
            .await
            .expect("adding a station on a healthy disk");
    }
    let reply = engine
        .execute(keyed(
            Command::StartSession {
                station: station("pc-1"),
                duration: Some(SignedDuration::from_mins(30)),
            },
            "setup-start",
        ))
        .await
        .expect("starting a session on a healthy disk");
    let sid = match &reply.events[..] {
        [e] => match &e.body.kind {
            EventKind::Session { session, .. } => session.id,
            other => panic!("StartSession recorded {other:?}"),
        },
        other => panic!("StartSession recorded {other:?}"),
    };

    // (fault, expected code of the first refusal, what its message must mention)
    let phases = [
        (Fault::DiskFull, "disk_full", "no space left on device"),
        (Fault::IoError, "storage_failed", "input/output error"),
        // The fsync of the commit's data fails: the commit never became primary.
        (
            Fault::SyncFails,
            "storage_failed",
            "fsync: input/output error",
        ),
    ];
    for (fault, first_code, first_cause) in phases {
        let before = (*engine.snapshot().state).clone();
        let events_before = engine
            .store()
            .unwrap()
            .verify()
            .expect("verify before the fault")
            .events;
        match fault {
            Fault::SyncFails => disk.fail_syncs_after(0),
            other => disk.set_fault(other),
        }
        let mut refused = Vec::new();
        for i in 0..5 {
            let cmd = match i % 3 {
                0 => Command::ExtendSession {
                    session: sid,
                    by: SignedDuration::from_mins(5),
                },
                1 => Command::StartSession {
                    station: station("pc-2"),
                    duration: Some(SignedDuration::from_mins(30)),
                },
                _ => add_station_cmd(&format!("pc-new-{i}")),
            };
            let key = format!("{fault:?}-{i}");
            let answer = engine.execute(keyed(cmd.clone(), &key)).await;
            let Err(e @ EngineError::Storage { message, disk_full }) = &answer else {
                panic!(
                    "{fault:?}: command {i} was answered {answer:?} although the disk refuses \
                     every write; it must be refused with a storage error"
                );
            };
            if i == 0 {
                // The commit itself failed: redb surfaces the backend's io::Error unchanged.
                assert_eq!(
                    (e.code(), *disk_full),
                    (first_code, fault == Fault::DiskFull),
                    "{fault:?}: the failed commit was reported as {e:?}"
                );
                assert!(
                    message.contains(first_cause),
                    "{fault:?}: the failed commit's message {message:?} does not carry the \
                     cause {first_cause:?}"
                );
            } else {
                // No store any more: the engine tries to reopen (that needs a write, which
                // fails too) and answers with why the store is down, disk full included.
                assert!(
                    message.starts_with(UNAVAILABLE)
                        && message.contains(first_cause)
                        && e.code() == first_code,
                    "{fault:?}: command {i} while the store is down was answered {e:?}"
                );
            }
            refused.push((key, cmd));
        }
        assert_eq!(
            *engine.snapshot().state,
            before,
            "{fault:?}: the engine's state changed although every commit failed"
        );

        disk.set_fault(Fault::Healthy);
        // The first refused command, retried with its key, is applied now, not replayed:
        // it had not been committed.
        let (key, cmd) = &refused[0];
        let (reply, attempts) = until_recovered(&engine, cmd, key, &format!("{fault:?}")).await;
        assert!(
            !reply.replayed,
            "{fault:?}: the refused command {key} was answered as a replay after recovery, so \
             it had been committed although the engine reported a failure"
        );
        let mut expected: VenueState = before.clone();
        for e in &reply.events {
            expected.apply(&e.body.kind);
        }
        assert_eq!(
            *engine.snapshot().state,
            expected,
            "{fault:?}: after recovery the state is not the pre-fault state plus the retried \
             command"
        );
        let store = engine.store().unwrap();
        let events = store.events(0, usize::MAX).expect("reading the log");
        for (key, _) in &refused[1..] {
            assert!(
                store.idempotency(key).expect("reading a key").is_none(),
                "{fault:?}: refused command {key} has an idempotency record after recovery"
            );
            let stored: Vec<u64> = events
                .iter()
                .filter(|e| e.body.request.as_deref() == Some(key.as_str()))
                .map(|e| e.seq)
                .collect();
            assert!(
                stored.is_empty(),
                "{fault:?}: refused command {key} left events {stored:?} in the log"
            );
        }
        let report = store.verify().expect("verify after recovery");
        assert!(
            report.broken.is_none(),
            "{fault:?}: hash chain broken after recovery: {:?}",
            report.broken
        );
        assert_eq!(
            report.events,
            events_before + reply.events.len() as u64,
            "{fault:?}: the log must hold the pre-fault events plus the retried command's"
        );
        eprintln!("io_errors: {fault:?} refused 5 commands, recovered after {attempts} attempts");
    }

    // The power goes while the disk is full; the box boots on the still-full disk, then
    // on a disk with space again.
    let before = (*engine.snapshot().state).clone();
    disk.set_fault(Fault::DiskFull);
    let cmd = add_station_cmd("pc-cut");
    let answer = engine.execute(keyed(cmd.clone(), "full-then-cut")).await;
    assert!(
        matches!(&answer, Err(e @ EngineError::Storage { .. }) if e.code() == "disk_full"),
        "a command on a full disk was answered {answer:?}"
    );
    disk.power_cut();
    stop_dead_engine(engine, "cut while the disk was full").await;
    match boot(&disk, &clock) {
        Err(e) => assert!(
            e.is_disk_full(),
            "booting on a full disk failed, but not as 'disk full': {e}"
        ),
        Ok(_) => panic!("the engine booted on a disk that refuses every write"),
    }
    disk.set_fault(Fault::Healthy);
    let engine = boot(&disk, &clock).expect("the engine boots once the disk has space again");
    assert_eq!(
        *engine.snapshot().state,
        before,
        "after a cut on a full disk the state is not what was committed before the fault"
    );
    let store = engine.store().unwrap();
    assert!(
        store
            .idempotency("full-then-cut")
            .expect("reading a key")
            .is_none(),
        "the command refused on the full disk was stored"
    );
    let report = store.verify().expect("verify after the cut");
    assert!(
        report.broken.is_none(),
        "hash chain broken after a cut on a full disk: {:?}",
        report.broken
    );
    let reply = engine
        .execute(keyed(cmd, "full-then-cut"))
        .await
        .expect("the recovered engine takes the refused command again");
    assert!(
        !reply.replayed,
        "the command refused on the full disk was replayed, so it had been committed"
    );
    engine.shutdown().await;
    eprintln!("io_errors: took {:.1?}", started.elapsed());
}

// ---------------------------------------------------------------------------------------
// Regression tests for product bugs the simulated disk found (both fixed in the writer).

/// redb's durable commit syncs twice: the data, then the header that makes the commit the
/// primary. When only the second sync fails, the commit is visible to a reopened store
/// (and persists at the next successful sync), although the engine answered an error.
/// The engine must then adopt what it reloads. It once staged state and chain head
/// *before* reopening and adopted them afterwards, so the next event reused the seq of
/// the reloaded one and overwrote it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_whose_final_fsync_failed_is_adopted_consistently() {
    let disk = SimDisk::new(base_seed());
    let clock = trusted_clock();
    let engine = boot(&disk, &clock).expect("a healthy simulated disk opens");
    let ledger = Mutex::new(Ledger::default());
    let ctx = "final fsync failed";
    send_acked(&engine, &ledger, add_station_cmd("pc-1"), "k-1", ctx).await;

    disk.fail_syncs_after(1);
    let cmd = add_station_cmd("pc-2");
    lock(&ledger).sent.insert("k-2".into(), cmd.clone());
    let answer = engine.execute(keyed(cmd.clone(), "k-2")).await;
    assert!(
        matches!(answer, Err(EngineError::Storage { .. })),
        "{ctx}: the command whose commit could not be synced was answered {answer:?}"
    );
    disk.set_fault(Fault::Healthy);
    // The client retries with the same key; whatever the answer, it is an acknowledgement.
    let (reply, _) = until_recovered(&engine, &cmd, "k-2", ctx).await;
    lock(&ledger).acked.insert("k-2".into(), reply.events);
    send_acked(&engine, &ledger, add_station_cmd("pc-3"), "k-3", ctx).await;
    check_log(&engine, &lock(&ledger), true, ctx);

    disk.power_cut();
    stop_dead_engine(engine, ctx).await;
    let engine = boot(&disk, &clock).expect("boot after the cut");
    check_log(
        &engine,
        &lock(&ledger),
        true,
        "final fsync failed, then a cut",
    );
    engine.shutdown().await;
}

/// With a real data directory the engine must recover in-process from an I/O error, as
/// it does on the simulated disk. It once reopened the file while the failed `Store` was
/// still held, so redb's file lock refused (`StoreError::AlreadyOpen`) every attempt. The
/// write error is made with RLIMIT_FSIZE, in a child process so the limit touches no
/// other test.
#[test]
fn a_data_dir_store_recovers_in_process_from_an_io_error() {
    const CHILD: &str = "VENUED_POWER_CUT_RLIMIT_CHILD";
    if std::env::var_os(CHILD).is_none() {
        let exe = std::env::current_exe().expect("the test binary's path");
        let out = std::process::Command::new(exe)
            .args([
                "power_cut::a_data_dir_store_recovers_in_process_from_an_io_error",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD, "1")
            .output()
            .expect("running the test binary as a child");
        assert!(
            out.status.success(),
            "the child process failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        return;
    }
    // SAFETY: ignoring SIGXFSZ only makes writes past the file-size limit fail with EFBIG
    // instead of killing this (child) process.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    rt.block_on(async {
        let dir = tempfile::tempdir().expect("a temp dir");
        let clock = trusted_clock();
        let engine = start_engine(dir.path(), &clock, EngineConfig::default());
        engine
            .execute(keyed(add_station_cmd("pc-1"), "k-1"))
            .await
            .expect("a command on a healthy disk");
        let mut normal = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit/setrlimit on this process with valid pointers.
        unsafe {
            assert_eq!(libc::getrlimit(libc::RLIMIT_FSIZE, &mut normal), 0);
            let small = libc::rlimit {
                rlim_cur: 4096,
                rlim_max: normal.rlim_max,
            };
            assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &small), 0);
        }
        let cmd = add_station_cmd("pc-2");
        let answer = engine.execute(keyed(cmd.clone(), "k-2")).await;
        // SAFETY: as above; restores the limit read before.
        unsafe {
            assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &normal), 0);
        }
        assert!(
            matches!(answer, Err(EngineError::Storage { .. })),
            "a write past RLIMIT_FSIZE was answered {answer:?}"
        );
        let (reply, attempts) = until_recovered(&engine, &cmd, "k-2", "data dir").await;
        assert!(!reply.replayed, "the refused command had been committed");
        eprintln!("data dir: recovered after {attempts} attempts");
        engine.shutdown().await;
    });
}
