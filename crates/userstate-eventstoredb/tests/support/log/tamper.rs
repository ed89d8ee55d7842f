//! Changes to the log as someone with access to the server's files could make them (the
//! tamper-evidence tests): through no API of KurrentDB's.

use super::{Log, Record, FIRST_POSITION};

impl Log {
    /// Replaces the data of the record at `index` in log order, as someone with access to the
    /// server's files could (the tamper-evidence tests).
    pub fn tamper_data(&self, index: usize, data: Vec<u8>) {
        self.lock().records[index].data = data;
    }

    /// Rewrites the custom metadata (a JSON object) of the record at `index` with `change`.
    pub fn tamper_custom_metadata(
        &self,
        index: usize,
        change: impl FnOnce(&mut serde_json::Value),
    ) {
        let mut inner = self.lock();
        let record = &mut inner.records[index];
        let mut meta: serde_json::Value =
            serde_json::from_slice(&record.custom_metadata).unwrap_or_default();
        change(&mut meta);
        record.custom_metadata = serde_json::to_vec(&meta).unwrap_or_default();
    }

    /// Removes the record at `index` in log order and renumbers the later records of its
    /// stream, as someone fixing up the revisions after deleting an event would.
    pub fn tamper_remove(&self, index: usize) {
        let mut inner = self.lock();
        let removed = inner.records.remove(index);
        for r in inner.records[index..].iter_mut() {
            if r.stream == removed.stream {
                r.revision -= 1;
            }
        }
        inner.reindex();
    }

    /// Inserts before the record at `index` a copy of it with `data` and a new id, at a
    /// position between it and the record before, renumbering the later records of its stream.
    pub fn tamper_insert(&self, index: usize, data: Vec<u8>) {
        let mut inner = self.lock();
        let mut copy = inner.records[index].clone();
        copy.id = uuid::Uuid::new_v4();
        copy.data = data;
        copy.position = index
            .checked_sub(1)
            .map_or(FIRST_POSITION - 1, |i| inner.records[i].position + 1);
        for r in inner.records[index..].iter_mut() {
            if r.stream == copy.stream {
                r.revision += 1;
            }
        }
        inner.records.insert(index, copy);
        inner.reindex();
    }

    /// Swaps what the records at `a` and `b` say (id, type, metadata, data), keeping their
    /// positions and revisions: two events reordered, with the revisions fixed up.
    pub fn tamper_swap(&self, a: usize, b: usize) {
        let mut inner = self.lock();
        let (ra, rb) = (inner.records[a].clone(), inner.records[b].clone());
        for (at, from, to) in [(a, &rb, &ra), (b, &ra, &rb)] {
            inner.records[at] = Record {
                stream: from.stream.clone(),
                revision: if from.stream == to.stream {
                    to.revision
                } else {
                    from.revision
                },
                position: to.position,
                ..from.clone()
            };
        }
        inner.reindex();
    }
}
