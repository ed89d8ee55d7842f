//! The test server's data: one transaction log shared by every stream, kept outside the server
//! so a stopped server can be started again "with the same data" (like a restarted node).
//!
//! Positions mimic KurrentDB's: byte offsets into the transaction file, starting after a
//! pretend epoch record and advancing by each record's size, so they are strictly increasing
//! but not contiguous. Every event is written as a self-committed prepare (what a gRPC append
//! does), so its commit position equals its prepare position.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::watch;

/// The first log position handed out (KurrentDB's own records come first in a real log).
const FIRST_POSITION: u64 = 1_024;
/// Fixed per-record overhead added to the payload sizes when advancing the position.
const RECORD_OVERHEAD: u64 = 120;

/// One event as written.
#[derive(Clone, Debug)]
pub struct Record {
    /// Stream name bytes.
    pub stream: Vec<u8>,
    /// 0-based revision in the stream.
    pub revision: u64,
    /// Event id (as sent by the client).
    pub id: uuid::Uuid,
    /// System metadata: `type`, `content-type`, `created`.
    pub metadata: HashMap<String, String>,
    /// User-defined metadata bytes.
    pub custom_metadata: Vec<u8>,
    /// Payload bytes.
    pub data: Vec<u8>,
    /// Log position (commit = prepare).
    pub position: u64,
}

/// An event proposed by an append.
pub struct Proposed {
    /// Event id.
    pub id: uuid::Uuid,
    /// System metadata sent by the client.
    pub metadata: HashMap<String, String>,
    /// User-defined metadata bytes.
    pub custom_metadata: Vec<u8>,
    /// Payload bytes.
    pub data: Vec<u8>,
}

/// What an append expects of the stream.
#[derive(Clone, Copy, Debug)]
pub enum Expected {
    /// Anything.
    Any,
    /// No event yet.
    NoStream,
    /// At least one event.
    StreamExists,
    /// Last revision exactly this.
    Revision(u64),
}

/// Outcome of an append.
pub enum AppendOutcome {
    /// Written (or recognised as a retry of a write already made): last revision and position.
    Written { revision: u64, position: u64 },
    /// The stream's current last revision (`None`: no stream) did not match.
    WrongExpectedVersion { current: Option<u64> },
    /// The stream was tombstoned.
    Deleted,
}

#[derive(Default)]
struct Inner {
    records: Vec<Record>,
    streams: HashMap<Vec<u8>, Vec<usize>>,
    tombstoned: HashSet<Vec<u8>>,
    next_position: u64,
}

impl Inner {
    /// Rebuilds the stream index after the records were changed in place.
    fn reindex(&mut self) {
        self.streams.clear();
        for (i, r) in self.records.iter().enumerate() {
            if !self.tombstoned.contains(&r.stream) {
                self.streams.entry(r.stream.clone()).or_default().push(i);
            }
        }
    }
}

/// The shared log. Cheap to clone.
#[derive(Clone)]
pub struct Log {
    inner: Arc<Mutex<Inner>>,
    /// Number of records, for live subscriptions to wait on.
    len: Arc<watch::Sender<usize>>,
}

impl Default for Log {
    fn default() -> Self {
        Self::new()
    }
}

impl Log {
    /// An empty log.
    pub fn new() -> Self {
        let inner = Inner {
            next_position: FIRST_POSITION,
            ..Inner::default()
        };
        Self {
            inner: Arc::new(Mutex::new(inner)),
            len: Arc::new(watch::channel(0).0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends atomically after checking `expected`, like KurrentDB's storage writer.
    pub fn append(
        &self,
        stream: &[u8],
        expected: Expected,
        events: Vec<Proposed>,
    ) -> AppendOutcome {
        let mut inner = self.lock();
        if inner.tombstoned.contains(stream) {
            return AppendOutcome::Deleted;
        }
        let existing = inner.streams.get(stream).cloned().unwrap_or_default();
        let current = existing.len().checked_sub(1).map(|r| r as u64);
        // Idempotent retry: the same event ids already written in order, right after `expected`.
        if let Some(first) = events.first() {
            if let Some(start) = existing
                .iter()
                .position(|&i| inner.records[i].id == first.id)
            {
                let same = existing[start..]
                    .iter()
                    .zip(&events)
                    .all(|(&i, e)| inner.records[i].id == e.id);
                if same && existing.len() - start >= events.len() {
                    let last = existing[start + events.len() - 1];
                    let record = &inner.records[last];
                    return AppendOutcome::Written {
                        revision: record.revision,
                        position: record.position,
                    };
                }
            }
        }
        let ok = match expected {
            Expected::Any => true,
            Expected::NoStream => current.is_none(),
            Expected::StreamExists => current.is_some(),
            Expected::Revision(r) => current == Some(r),
        };
        if !ok {
            return AppendOutcome::WrongExpectedVersion { current };
        }
        let created = created_ticks();
        let mut last = (0, 0);
        for (revision, event) in (current.map_or(0, |c| c + 1)..).zip(events) {
            let position = inner.next_position;
            inner.next_position += RECORD_OVERHEAD
                + (event.data.len() + event.custom_metadata.len() + stream.len()) as u64;
            let mut metadata = event.metadata;
            metadata.insert("created".into(), created.clone());
            let index = inner.records.len();
            inner.records.push(Record {
                stream: stream.to_vec(),
                revision,
                id: event.id,
                metadata,
                custom_metadata: event.custom_metadata,
                data: event.data,
                position,
            });
            inner
                .streams
                .entry(stream.to_vec())
                .or_default()
                .push(index);
            last = (revision, position);
        }
        let len = inner.records.len();
        drop(inner);
        self.len.send_replace(len);
        AppendOutcome::Written {
            revision: last.0,
            position: last.1,
        }
    }

    /// Hard-deletes a stream: its events vanish and it can never be written again.
    pub fn tombstone(&self, stream: &[u8]) {
        let mut inner = self.lock();
        inner.tombstoned.insert(stream.to_vec());
        inner.streams.remove(stream);
    }

    /// `None` if the stream is tombstoned; otherwise its records (empty: no stream).
    pub fn stream(&self, stream: &[u8]) -> Option<Vec<Record>> {
        let inner = self.lock();
        if inner.tombstoned.contains(stream) {
            return None;
        }
        Some(
            inner
                .streams
                .get(stream)
                .map(|idx| idx.iter().map(|&i| inner.records[i].clone()).collect())
                .unwrap_or_default(),
        )
    }

    /// Every live record (tombstoned streams excluded), in log order, from index `from`.
    pub fn records_from(&self, from: usize) -> (Vec<Record>, usize) {
        let inner = self.lock();
        let records = inner.records[from.min(inner.records.len())..]
            .iter()
            .filter(|r| !inner.tombstoned.contains(&r.stream))
            .cloned()
            .collect();
        (records, inner.records.len())
    }

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

    /// What KurrentDB's scavenge does to a tombstoned stream: its events leave the log files
    /// (the tombstone itself stays: the stream can never be written again).
    pub fn scavenge(&self) {
        let mut inner = self.lock();
        let tombstoned = inner.tombstoned.clone();
        inner.records.retain(|r| !tombstoned.contains(&r.stream));
        inner.reindex();
    }

    /// Every byte the log holds (stream names, metadata and data of every record, tombstoned
    /// streams' included until scavenged), for tests that look for a string in raw storage.
    pub fn raw_bytes(&self) -> Vec<u8> {
        let inner = self.lock();
        let mut out = Vec::new();
        for r in &inner.records {
            out.extend_from_slice(&r.stream);
            out.extend_from_slice(&r.custom_metadata);
            out.extend_from_slice(&r.data);
            out.push(b'\n');
        }
        out
    }

    /// A receiver that changes whenever records are appended.
    pub fn watch_len(&self) -> watch::Receiver<usize> {
        self.len.subscribe()
    }
}

/// KurrentDB's `created` metadata: .NET ticks (100 ns) since the Unix epoch, as text.
fn created_ticks() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    (now.as_nanos() / 100).to_string()
}
