//! Counters of the group-commit writer, for benchmarks and operators.

use std::sync::atomic::{AtomicU64, Ordering};

/// What the writer has done since the store was opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// Transactions committed (batches that appended something).
    pub commits: u64,
    /// Append requests answered, successfully or not.
    pub requests: u64,
    /// Events committed.
    pub events: u64,
    /// Total time spent in batches, in microseconds.
    pub busy_us: u64,
    /// Batch attempts repeated on a fresh connection after a lost one.
    pub retries: u64,
    /// Batches whose COMMIT was interrupted and that turned out to have committed.
    pub recovered_commits: u64,
}

impl WriterStats {
    /// Requests per committed transaction (the group-commit factor).
    pub fn requests_per_commit(&self) -> f64 {
        self.requests as f64 / self.commits.max(1) as f64
    }
}

/// The live counters behind [`WriterStats`].
#[derive(Default)]
pub(crate) struct Counters {
    commits: AtomicU64,
    requests: AtomicU64,
    events: AtomicU64,
    busy_us: AtomicU64,
    retries: AtomicU64,
    recovered_commits: AtomicU64,
}

impl Counters {
    pub(crate) fn batch(&self, requests: usize, events: u64, committed: bool, busy_us: u64) {
        self.requests.fetch_add(requests as u64, Ordering::Relaxed);
        self.events.fetch_add(events, Ordering::Relaxed);
        self.commits
            .fetch_add(u64::from(committed), Ordering::Relaxed);
        self.busy_us.fetch_add(busy_us, Ordering::Relaxed);
    }

    pub(crate) fn retried(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn recovered(&self) {
        self.recovered_commits.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> WriterStats {
        WriterStats {
            commits: self.commits.load(Ordering::Relaxed),
            requests: self.requests.load(Ordering::Relaxed),
            events: self.events.load(Ordering::Relaxed),
            busy_us: self.busy_us.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
            recovered_commits: self.recovered_commits.load(Ordering::Relaxed),
        }
    }
}
