//! The appenders' stream versions, in partitions by stream (issue 29, ADR 0008): what an
//! append's expected version is checked against, apart from the queue's lock.
//!
//! An append locks the partition of its stream, checks its expected version against the
//! partition's entry for the stream (or, without one, the index), queues its frames under the
//! queue's lock (position, chain link, encoding) and then records the stream's new version in
//! the partition before unlocking it. So two appends to one stream are decided one after the
//! other, in the order of their positions, while appends to streams of other partitions check
//! their versions at the same time, and the queue's lock covers only what the global position
//! and hash chain make serial.
//!
//! An entry is `unpublished` from its append until the publisher has put that version in the
//! index ([`Versions::published`]); only then may it be forgotten, as the index then answers
//! for the stream. Published entries are kept (up to [`RETAIN`] per partition) so that a
//! stream appended to again soon, the usual case, is decided without the index's lock, which
//! the publisher write-locks for each batch. Lock order: a partition, then the index's read
//! lock or the queue; the publisher and the resume path lock partitions holding nothing else.

use std::hash::BuildHasher;
use std::sync::{Mutex, MutexGuard};

use crate::hash::{FastMap, FastState};
use crate::store::StreamId;

/// Partitions of the version table: a power of two, so a stream's partition is its hash's low
/// bits. 64 is far more than this machine's 2 cores and a server's 8–32: two appenders of
/// unrelated streams meet on one partition with a chance of 1/64 per pair.
pub const PARTITIONS: usize = 64;

/// Published entries a partition keeps before it forgets them (64 × 1,024 streams in all).
pub const RETAIN: usize = 1024;

/// A stream's last version as the appenders know it.
#[derive(Clone, Copy, Debug)]
pub struct Entry {
    /// The stream's last sequence, queued, synced or published.
    pub version: u64,
    /// Whether the index holds `version` (the entry may then be forgotten).
    pub published: bool,
}

/// The entries of one partition's streams.
pub type Partition = FastMap<StreamId, Entry>;

/// One partition's lock, alone on its cache lines (two cores writing neighbouring partitions
/// would otherwise pass one line back and forth).
#[repr(align(128))]
#[derive(Default)]
struct Padded(Mutex<Partition>);

/// The version table, partitioned by stream.
pub struct Versions {
    parts: Box<[Padded]>,
    hasher: FastState,
}

impl Default for Versions {
    fn default() -> Self {
        Self {
            parts: (0..PARTITIONS).map(|_| Padded::default()).collect(),
            hasher: FastState::default(),
        }
    }
}

impl Versions {
    /// The partition of `stream`, locked.
    pub fn lock(&self, stream: &StreamId) -> MutexGuard<'_, Partition> {
        // Entries are single numbers, changed whole: a poisoned lock still holds a valid table.
        self.parts[self.partition_of(stream)]
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    fn partition_of(&self, stream: &StreamId) -> usize {
        self.hasher.hash_one(stream) as usize % PARTITIONS
    }

    /// Records that `stream`'s version `version` was queued (the partition is the one
    /// [`lock`](Self::lock) gave for `stream`). Forgets the partition's published entries
    /// first if it holds [`RETAIN`] of them or more.
    pub fn queued(part: &mut Partition, stream: &StreamId, version: u64) {
        let entry = Entry {
            version,
            published: false,
        };
        if let Some(slot) = part.get_mut(stream) {
            *slot = entry;
            return;
        }
        if part.len() >= RETAIN {
            part.retain(|_, e| !e.published);
        }
        part.insert(stream.clone(), entry);
    }

    /// Says that the index now holds `stream` up to `version`: its entry may be forgotten,
    /// unless a later append has already been queued.
    pub fn published(&self, stream: &StreamId, version: u64) {
        if let Some(entry) = self.lock(stream).get_mut(stream) {
            if entry.version == version {
                entry.published = true;
            }
        }
    }

    /// Forgets every entry (after a failed batch, whose versions will never be published).
    /// The caller must make sure no append is queued meanwhile (appends are stopped).
    pub fn clear(&self) {
        for part in self.parts.iter() {
            part.0.lock().unwrap_or_else(|e| e.into_inner()).clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(name: &str) -> StreamId {
        StreamId::new(format!("test:{name}")).unwrap()
    }

    /// A partition past [`RETAIN`] forgets published entries only: an unpublished version
    /// (not in the index yet) is never forgotten, and a version published after a later
    /// append was queued does not mark the later one.
    #[test]
    fn a_full_partition_forgets_published_versions_only() {
        let versions = Versions::default();
        let pinned = stream("pinned");
        Versions::queued(&mut versions.lock(&pinned), &pinned, 1);
        // Published 1, but 2 was queued first: 2 stays unpublished.
        Versions::queued(&mut versions.lock(&pinned), &pinned, 2);
        versions.published(&pinned, 1);
        assert!(!versions.lock(&pinned).get(&pinned).unwrap().published);
        let mut names = Vec::new();
        let mut i = 0;
        // Fill the pinned stream's partition past RETAIN with published entries.
        while names.len() < RETAIN + 10 {
            let s = stream(&format!("s{i}"));
            i += 1;
            if versions.partition_of(&s) != versions.partition_of(&pinned) {
                continue;
            }
            Versions::queued(&mut versions.lock(&s), &s, 1);
            versions.published(&s, 1);
            names.push(s);
        }
        let part = versions.lock(&pinned);
        assert!(part.len() <= RETAIN + 1, "{} entries kept", part.len());
        assert_eq!(part.get(&pinned).unwrap().version, 2);
        assert!(!part.get(&pinned).unwrap().published);
    }
}
