//! The engine's aggregate cache: the last folded state of recently used aggregates (users), so
//! a command reads only the tail of a stream (events after the cached version) instead of all
//! of it.
//!
//! The cache is never trusted to be current: a command decides on the cached fold, and its
//! append carries the fold's version as the expected version, so a write by another engine
//! (another node) shows up as a conflict, after which the command reads the tail after the
//! cached fold and is decided again; a command refused on the cached fold reads the tail the
//! same way before the refusal is answered (ADR 0006). An entry remembers whether its last
//! tail read found events ([`Cached::read_tail`]): a user other engines write too is read
//! first, as a conflict would cost more than the read.

use std::hash::BuildHasher;
use std::sync::Mutex;

use crate::hash::{FastMap, FastState};
use crate::store::StreamId;

const SHARDS: usize = 16;

/// One cached aggregate.
#[derive(Clone, Debug)]
pub(super) struct Cached<A> {
    /// The fold of the stream's first `version` events.
    pub(super) aggregate: A,
    /// Whether the last read of the stream's tail found events another engine wrote: then the
    /// next command reads the tail before deciding, instead of deciding on the fold at once.
    pub(super) read_tail: bool,
}

/// A bounded map from stream to folded aggregate, sharded to keep lock hold times short.
pub(super) struct AggregateCache<A> {
    shards: Vec<Mutex<FastMap<StreamId, Cached<A>>>>,
    per_shard: usize,
    hasher: FastState,
}

impl<A: Clone> AggregateCache<A> {
    /// A cache holding about `capacity` aggregates (0 disables it).
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            shards: (0..SHARDS)
                .map(|_| Mutex::new(FastMap::default()))
                .collect(),
            per_shard: capacity.div_ceil(SHARDS),
            hasher: FastState::default(),
        }
    }

    fn shard(&self, stream: &StreamId) -> std::sync::MutexGuard<'_, FastMap<StreamId, Cached<A>>> {
        let i = (self.hasher.hash_one(stream) as usize) % SHARDS;
        // Entries are replaced whole; a panic elsewhere cannot leave one half-written.
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn get(&self, stream: &StreamId) -> Option<Cached<A>> {
        if self.per_shard == 0 {
            return None;
        }
        self.shard(stream).get(stream).cloned()
    }

    pub(super) fn put(&self, stream: &StreamId, entry: Cached<A>) {
        if self.per_shard == 0 {
            return;
        }
        let mut shard = self.shard(stream);
        if let Some(slot) = shard.get_mut(stream) {
            // The usual case (a command on a cached user): no copy of the key.
            *slot = entry;
            return;
        }
        if shard.len() >= self.per_shard {
            // Crude but bounded: forget an arbitrary entry. A miss costs one full stream read.
            if let Some(victim) = shard.keys().next().cloned() {
                shard.remove(&victim);
            }
        }
        shard.insert(stream.clone(), entry);
    }

    pub(super) fn forget(&self, stream: &StreamId) {
        self.shard(stream).remove(stream);
    }
}
