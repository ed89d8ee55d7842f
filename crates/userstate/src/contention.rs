//! MEASUREMENT ONLY (issue 29, reverted after the counts were taken): counts each shared
//! lock's acquisitions and those that found it taken (a `try_lock` first), and the time the
//! appenders hold the file store's queue lock. The bench prints [`report`] after its timed
//! part.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard, TryLockError};

/// One counted lock site.
pub struct Site {
    name: &'static str,
    taken: AtomicU64,
    waited: AtomicU64,
    held_ns: AtomicU64,
}

const fn site(name: &'static str) -> Site {
    Site {
        name,
        taken: AtomicU64::new(0),
        waited: AtomicU64::new(0),
        held_ns: AtomicU64::new(0),
    }
}

/// The counted sites.
pub static SITES: [Site; 11] = [
    site("file queue (appender submit)"),
    site("file queue (syncer, publisher, other)"),
    site("file index read (appender version check)"),
    site("file index read (readers)"),
    site("file index write (publisher)"),
    site("engine cache shard"),
    site("memory store shard"),
    site("memory store log"),
    site("read model write (told append)"),
    site("projection published"),
    site("read model read"),
];
/// Site numbers.
pub const QUEUE_APPEND: usize = 0;
/// Site numbers.
pub const QUEUE_OTHER: usize = 1;
/// Site numbers.
pub const INDEX_APPEND: usize = 2;
/// Site numbers.
pub const INDEX_READ: usize = 3;
/// Site numbers.
pub const INDEX_WRITE: usize = 4;
/// Site numbers.
pub const CACHE: usize = 5;
/// Site numbers.
pub const MEM_SHARD: usize = 6;
/// Site numbers.
pub const MEM_LOG: usize = 7;
/// Site numbers.
pub const MODEL_WRITE: usize = 8;
/// Site numbers.
pub const PUBLISHED: usize = 9;
/// Site numbers.
pub const MODEL_READ: usize = 10;

fn count(s: usize, waited: bool) {
    SITES[s].taken.fetch_add(1, Relaxed);
    if waited {
        SITES[s].waited.fetch_add(1, Relaxed);
    }
}

/// Locks `m`, counting whether it was free.
pub fn lock<T>(s: usize, m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.try_lock() {
        Ok(g) => {
            count(s, false);
            g
        }
        Err(TryLockError::Poisoned(e)) => e.into_inner(),
        Err(TryLockError::WouldBlock) => {
            count(s, true);
            m.lock().unwrap_or_else(|e| e.into_inner())
        }
    }
}

/// Read-locks `m`, counting whether it was free.
pub fn read<T>(s: usize, m: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    match m.try_read() {
        Ok(g) => {
            count(s, false);
            g
        }
        Err(TryLockError::Poisoned(e)) => e.into_inner(),
        Err(TryLockError::WouldBlock) => {
            count(s, true);
            m.read().unwrap_or_else(|e| e.into_inner())
        }
    }
}

/// Write-locks `m`, counting whether it was free.
pub fn write<T>(s: usize, m: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    match m.try_write() {
        Ok(g) => {
            count(s, false);
            g
        }
        Err(TryLockError::Poisoned(e)) => e.into_inner(),
        Err(TryLockError::WouldBlock) => {
            count(s, true);
            m.write().unwrap_or_else(|e| e.into_inner())
        }
    }
}

/// Adds a hold time to site `s`.
pub fn held(s: usize, since: std::time::Instant) {
    SITES[s]
        .held_ns
        .fetch_add(since.elapsed().as_nanos() as u64, Relaxed);
}

/// Zeroes every count.
pub fn reset() {
    for s in &SITES {
        s.taken.store(0, Relaxed);
        s.waited.store(0, Relaxed);
        s.held_ns.store(0, Relaxed);
    }
}

/// One line per site that was taken: acquisitions, how many waited, mean hold time if timed.
pub fn report(commands: u64) -> String {
    let mut out = String::new();
    for s in &SITES {
        let taken = s.taken.load(Relaxed);
        if taken == 0 {
            continue;
        }
        let waited = s.waited.load(Relaxed);
        let held = s.held_ns.load(Relaxed);
        out.push_str(&format!(
            "contention {:<42} taken {:>9} ({:.2}/command) waited {:>7} ({:.3} %)",
            s.name,
            taken,
            taken as f64 / commands.max(1) as f64,
            waited,
            waited as f64 * 100.0 / taken as f64
        ));
        if held > 0 {
            out.push_str(&format!(" mean hold {:.0} ns", held as f64 / taken as f64));
        }
        out.push('\n');
    }
    out
}
