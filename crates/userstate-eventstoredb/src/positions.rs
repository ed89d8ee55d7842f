//! Where to start a `$all` read for one of our positions.
//!
//! KurrentDB reads `$all` from a log position it handed out; our positions are those plus one,
//! and callers page with `last.position + 1`, which is not a record boundary. So the store
//! remembers the exact KurrentDB position of events it has seen and starts a read at the
//! closest remembered event at or before the wanted position (or at the start of the log),
//! skipping what lies before. The index is bounded: past its capacity every second entry is
//! dropped, which keeps coverage of the whole log at a coarser grain.

use std::collections::BTreeMap;
use std::sync::Mutex;

/// Bounded map from our positions to KurrentDB positions.
pub struct PositionIndex {
    map: Mutex<BTreeMap<u64, kurrentdb::Position>>,
    capacity: usize,
}

impl PositionIndex {
    /// An empty index holding at most `capacity` entries (at least 2).
    pub fn new(capacity: usize) -> Self {
        Self {
            map: Mutex::new(BTreeMap::new()),
            // Even, so that thinning an over-full map (odd length) keeps the newest entry.
            capacity: capacity.max(2).next_multiple_of(2),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, kurrentdb::Position>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Remembers that our position `ours` is KurrentDB's `theirs`.
    pub fn remember(&self, ours: u64, theirs: kurrentdb::Position) {
        let mut map = self.lock();
        map.insert(ours, theirs);
        if map.len() > self.capacity {
            let drop: Vec<u64> = map.keys().copied().skip(1).step_by(2).collect();
            for k in drop {
                map.remove(&k);
            }
        }
    }

    /// The remembered event closest at or before `ours`.
    pub fn at_or_before(&self, ours: u64) -> Option<(u64, kurrentdb::Position)> {
        self.lock()
            .range(..=ours)
            .next_back()
            .map(|(k, v)| (*k, *v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(n: u64) -> kurrentdb::Position {
        kurrentdb::Position {
            commit: n,
            prepare: n,
        }
    }

    #[test]
    fn finds_the_closest_earlier_event_and_stays_bounded() {
        let index = PositionIndex::new(8);
        for n in 1..=100u64 {
            index.remember(n * 10, p(n * 10 - 1));
        }
        assert!(index.lock().len() <= 8);
        let (ours, theirs) = index.at_or_before(1000).unwrap();
        assert_eq!((ours, theirs), (1000, p(999)));
        assert!(index.at_or_before(5).is_none());
        let (earlier, _) = index.at_or_before(555).unwrap();
        assert!(earlier <= 555);
    }
}
