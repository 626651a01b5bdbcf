//! Engine counters for `/metrics` and the benchmarks, and the lock-free histogram that
//! the engine (commit latency) and the HTTP layer (request latency) share.
//!
//! Everything here is plain atomics: recording never takes a lock and never blocks the
//! writer thread; a scrape reads whatever the counters hold at that instant.

use super::{EngineError, Reply};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds, in seconds, of the latency histograms: 0.5 ms to 2.5 s. Slower
/// observations land only in the implicit `+Inf` bucket.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// A fixed-bucket histogram of durations. `observe` is two relaxed atomic additions.
#[derive(Debug)]
pub struct Histogram {
    /// Upper bounds in seconds, ascending, as exposed in the `le` label.
    bounds: &'static [f64],
    /// The same bounds in nanoseconds, for integer comparisons on the hot path.
    bounds_nanos: Box<[u64]>,
    /// Observations per bucket (not cumulative); one more than `bounds`, the last
    /// being `+Inf`.
    buckets: Box<[AtomicU64]>,
    sum_nanos: AtomicU64,
}

/// A histogram as read at one instant, in Prometheus terms.
#[derive(Clone, Debug, PartialEq)]
pub struct HistogramSnapshot {
    /// `(le, observations <= le)`, cumulative, ascending; `+Inf` is `count`.
    pub buckets: Vec<(f64, u64)>,
    /// Every observation; by construction equal to the `+Inf` bucket.
    pub count: u64,
    pub sum_seconds: f64,
}

impl Histogram {
    /// `bounds` must be ascending, in seconds.
    pub fn new(bounds: &'static [f64]) -> Self {
        debug_assert!(bounds.windows(2).all(|w| w[0] < w[1]), "bounds must ascend");
        Self {
            bounds,
            bounds_nanos: bounds.iter().map(|b| (b * 1e9).round() as u64).collect(),
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_nanos: AtomicU64::new(0),
        }
    }

    /// A histogram with [`LATENCY_BUCKETS`].
    pub fn latency() -> Self {
        Self::new(LATENCY_BUCKETS)
    }

    pub fn observe(&self, d: Duration) {
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        // First bound >= the value: Prometheus buckets are "less than or equal".
        let i = self.bounds_nanos.partition_point(|&b| b < nanos);
        if let Some(bucket) = self.buckets.get(i) {
            bucket.fetch_add(1, Ordering::Relaxed);
        }
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Cumulative counts. `count` is derived from the buckets (not a separate counter),
    /// so `+Inf == _count` holds in every scrape even while observations race with it.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut cumulative = 0u64;
        let mut buckets = Vec::with_capacity(self.bounds.len());
        for (bound, count) in self.bounds.iter().zip(self.buckets.iter()) {
            cumulative += count.load(Ordering::Relaxed);
            buckets.push((*bound, cumulative));
        }
        if let Some(inf) = self.buckets.last() {
            cumulative += inf.load(Ordering::Relaxed);
        }
        HistogramSnapshot {
            buckets,
            count: cumulative,
            sum_seconds: self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9,
        }
    }
}

/// How a command ended, the `outcome` label of `venued_commands_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommandOutcome {
    /// Committed; its events are durable.
    Committed,
    /// Answered from its idempotency key: a retry, nothing changed.
    Replayed,
    /// Refused by the domain or for its idempotency key (a 4xx): nothing changed.
    Refused,
    /// The store failed (or was down); not acknowledged.
    Failed,
    /// Never queued: the queue was full or the engine was stopping.
    Busy,
}

impl CommandOutcome {
    pub const ALL: [Self; 5] = [
        Self::Committed,
        Self::Replayed,
        Self::Refused,
        Self::Failed,
        Self::Busy,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Committed => "committed",
            Self::Replayed => "replayed",
            Self::Refused => "refused",
            Self::Failed => "failed",
            Self::Busy => "busy",
        }
    }

    pub fn of(result: &Result<Reply, EngineError>) -> Self {
        match result {
            Ok(r) if r.replayed => Self::Replayed,
            Ok(_) => Self::Committed,
            Err(e) => Self::of_error(e),
        }
    }

    pub fn of_error(e: &EngineError) -> Self {
        match e {
            EngineError::Busy | EngineError::ShuttingDown => Self::Busy,
            EngineError::Storage { .. } => Self::Failed,
            EngineError::Domain(_) | EngineError::KeyReused(_) | EngineError::BadKey(_) => {
                Self::Refused
            }
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Counters for /metrics and benchmarks.
#[derive(Debug)]
pub struct EngineStats {
    /// Commands the writer executed (counted as it runs them, before the commit).
    pub commands: AtomicU64,
    /// Successful write transactions (one per group commit).
    pub commits: AtomicU64,
    pub failed_commits: AtomicU64,
    pub commit_micros_total: AtomicU64,
    /// Messages sent to the writer and not yet taken by it.
    pub queue_depth: AtomicU64,
    /// Wall time of each successful write transaction, fsync included.
    pub commit_duration: Histogram,
    /// Final outcomes, indexed by [`CommandOutcome`].
    outcomes: [AtomicU64; 5],
}

impl Default for EngineStats {
    fn default() -> Self {
        Self {
            commands: AtomicU64::new(0),
            commits: AtomicU64::new(0),
            failed_commits: AtomicU64::new(0),
            commit_micros_total: AtomicU64::new(0),
            queue_depth: AtomicU64::new(0),
            commit_duration: Histogram::latency(),
            outcomes: [const { AtomicU64::new(0) }; 5],
        }
    }
}

impl EngineStats {
    /// One successful write transaction that took `elapsed`.
    pub fn record_commit(&self, elapsed: Duration) {
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.commits.fetch_add(1, Ordering::Relaxed);
        self.commit_micros_total
            .fetch_add(micros, Ordering::Relaxed);
        self.commit_duration.observe(elapsed);
    }

    /// A command's final answer, as sent to its caller.
    pub fn record_outcome(&self, result: &Result<Reply, EngineError>) {
        self.count(CommandOutcome::of(result));
    }

    /// A command answered without reaching the writer.
    pub fn record_unqueued(&self, e: &EngineError) {
        self.count(CommandOutcome::of_error(e));
    }

    fn count(&self, outcome: CommandOutcome) {
        if let Some(c) = self.outcomes.get(outcome.index()) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Commands by final outcome, every outcome listed (zeros included).
    pub fn commands_by_outcome(&self) -> [(CommandOutcome, u64); 5] {
        CommandOutcome::ALL.map(|o| {
            let n = self
                .outcomes
                .get(o.index())
                .map_or(0, |c| c.load(Ordering::Relaxed));
            (o, n)
        })
    }

    /// The queue depth, never negative: the shutdown message is taken without having
    /// been counted in.
    pub fn queue_depth(&self) -> u64 {
        let v = self.queue_depth.load(Ordering::Relaxed);
        if v > i64::MAX as u64 { 0 } else { v }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_less_or_equal_and_cumulative() {
        let h = Histogram::new(&[0.001, 0.01, 0.1]);
        h.observe(Duration::from_micros(1000)); // exactly on a bound: counted in it
        h.observe(Duration::from_micros(1001));
        h.observe(Duration::from_millis(50));
        h.observe(Duration::from_secs(3));
        let s = h.snapshot();
        assert_eq!(s.buckets, vec![(0.001, 1), (0.01, 2), (0.1, 3)]);
        assert_eq!(s.count, 4);
        assert!((s.sum_seconds - 3.052001).abs() < 1e-9, "{}", s.sum_seconds);
    }

    #[test]
    fn outcomes_are_counted_by_kind() {
        let stats = EngineStats::default();
        stats.record_outcome(&Ok(Reply {
            events: Vec::new(),
            replayed: false,
        }));
        stats.record_outcome(&Ok(Reply {
            events: Vec::new(),
            replayed: true,
        }));
        stats.record_unqueued(&EngineError::Busy);
        stats.record_outcome(&Err(EngineError::KeyReused("k".into())));
        let got: Vec<(&str, u64)> = stats
            .commands_by_outcome()
            .iter()
            .map(|(o, n)| (o.as_str(), *n))
            .collect();
        assert_eq!(
            got,
            [
                ("committed", 1),
                ("replayed", 1),
                ("refused", 1),
                ("failed", 0),
                ("busy", 1)
            ]
        );
    }
}
