//! The hasher of the in-memory maps keyed by stream names (the aggregate cache, the memory
//! store, the file store's index and append queue, the read model's index).
//!
//! std's default SipHash took about 12 % of a command's instructions (callgrind of
//! `userstate bench --store memory`, docs/PERFORMANCE.md): a command hashes its stream name
//! several times. foldhash is several times cheaper for such short keys and is hashbrown's own
//! default. Its seed is random per process, which gives the minimal resistance to crafted
//! colliding keys that its authors describe (stream names come from user ids); it is not a
//! cryptographic hash and nothing relies on it being one.

/// Builds the hashers of [`FastMap`]: foldhash, randomly seeded.
pub(crate) type FastState = foldhash::fast::RandomState;

/// A `HashMap` with the [`FastState`] hasher.
pub(crate) type FastMap<K, V> = std::collections::HashMap<K, V, FastState>;
