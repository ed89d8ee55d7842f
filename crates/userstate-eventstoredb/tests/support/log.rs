//! The test server's data: one transaction log shared by every stream, kept outside the server
//! so a stopped server can be started again "with the same data" (like a restarted node).
//!
//! Positions mimic KurrentDB's: byte offsets into the transaction file, starting after a
//! pretend epoch record and advancing by each record's size, so they are strictly increasing
//! but not contiguous. Every event is written as a self-committed prepare (what a gRPC append
//! does), so its commit position equals its prepare position.
//!
//! Removal works as KurrentDB's (see `src/removals.rs`): a hard delete writes a
//! `$streamDeleted` tombstone into the stream; a soft delete and truncation are `$metadata`
//! events of the metadata stream `$$stream` (`$tb`, `$maxCount`, `$maxAge`) that stream reads
//! honour. `$all` bypasses all of it — it is the log as written — until [`Log::scavenge`]
//! drops the removed events.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::watch;

mod tamper;

/// The first log position handed out (KurrentDB's own records come first in a real log).
const FIRST_POSITION: u64 = 1_024;
/// The event type of a hard delete's tombstone.
pub const TOMBSTONE: &str = "$streamDeleted";
/// The event type of stream metadata.
pub const METADATA: &str = "$metadata";
/// `$tb` of a soft-deleted stream, and a tombstone's revision (`EventNumber.DeletedStream`).
pub const DELETED_STREAM: u64 = i64::MAX as u64;
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

/// What a soft delete answers.
pub enum DeleteOutcome {
    /// Soft-deleted: the position of the metadata event written.
    Deleted { position: u64 },
    /// The stream's current last revision (`None`: no stream) did not match.
    WrongExpectedVersion { current: Option<u64> },
    /// The stream was tombstoned.
    Tombstoned,
}

#[derive(Default)]
struct Inner {
    records: Vec<Record>,
    /// Stream -> its records' indexes (tombstones and tombstoned streams excluded).
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

    /// Writes one record at the next position.
    fn write(&mut self, mut record: Record) -> u64 {
        let position = self.next_position;
        self.next_position += RECORD_OVERHEAD
            + (record.data.len() + record.custom_metadata.len() + record.stream.len()) as u64;
        record.position = position;
        if !self.tombstoned.contains(&record.stream) {
            let index = self.records.len();
            self.streams
                .entry(record.stream.clone())
                .or_default()
                .push(index);
        }
        self.records.push(record);
        position
    }

    /// The last revision of `stream`, visible or not (`None`: no event).
    fn current(&self, stream: &[u8]) -> Option<u64> {
        let last = *self.streams.get(stream)?.last()?;
        Some(self.records[last].revision)
    }

    /// The stream's metadata: the data of the last event of `$$stream`, if a JSON object.
    fn metadata(&self, stream: &[u8]) -> serde_json::Map<String, serde_json::Value> {
        let last = self
            .streams
            .get(&metastream(stream))
            .and_then(|idx| idx.last());
        match last.map(|&i| serde_json::from_slice::<serde_json::Value>(&self.records[i].data)) {
            Some(Ok(serde_json::Value::Object(meta))) => meta,
            _ => serde_json::Map::new(),
        }
    }

    /// Whether the stream's metadata soft-deletes it.
    fn soft_deleted(&self, stream: &[u8]) -> bool {
        let tb = self.metadata(stream).get("$tb").and_then(|v| v.as_u64());
        tb == Some(DELETED_STREAM)
    }

    /// Writes `$$stream` metadata: `change` applied to the current metadata.
    fn write_metadata(
        &mut self,
        stream: &[u8],
        change: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>),
    ) -> u64 {
        let mut meta = self.metadata(stream);
        change(&mut meta);
        let meta_stream = metastream(stream);
        let revision = self.current(&meta_stream).map_or(0, |c| c + 1);
        self.write(Record {
            stream: meta_stream,
            revision,
            id: uuid::Uuid::new_v4(),
            metadata: system_metadata(METADATA, "application/json"),
            custom_metadata: Vec::new(),
            data: serde_json::to_vec(&meta).unwrap_or_default(),
            position: 0,
        })
    }

    /// The records of `stream` a stream read returns: those its metadata has not truncated.
    fn visible(&self, stream: &[u8]) -> Vec<Record> {
        let all: Vec<&Record> = self
            .streams
            .get(stream)
            .map(|idx| idx.iter().map(|&i| &self.records[i]).collect())
            .unwrap_or_default();
        let meta = self.metadata(stream);
        let number = |key: &str| meta.get(key).and_then(|v| v.as_u64());
        let last = all.last().map_or(0, |r| r.revision);
        let tb = number("$tb").unwrap_or(0);
        let from_count = number("$maxCount").map_or(0, |n| (last + 1).saturating_sub(n));
        let oldest = number("$maxAge").map(|seconds| {
            let now: u64 = created_ticks().parse().unwrap_or(0);
            now.saturating_sub(seconds.saturating_mul(10_000_000))
        });
        all.into_iter()
            .filter(|r| r.revision >= tb.max(from_count))
            .filter(|r| oldest.is_none_or(|o| ticks_of(r) >= o))
            .cloned()
            .collect()
    }
}

/// The metadata stream of `stream`.
pub fn metastream(stream: &[u8]) -> Vec<u8> {
    [b"$$".as_slice(), stream].concat()
}

fn system_metadata(event_type: &str, content_type: &str) -> HashMap<String, String> {
    HashMap::from([
        ("type".to_owned(), event_type.to_owned()),
        ("content-type".to_owned(), content_type.to_owned()),
        ("created".to_owned(), created_ticks()),
    ])
}

fn ticks_of(record: &Record) -> u64 {
    record
        .metadata
        .get("created")
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
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
        let current = inner.current(stream);
        let soft_deleted = inner.soft_deleted(stream);
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
            // A soft-deleted stream may be written again as a new one, its revisions going on.
            Expected::NoStream => current.is_none() || soft_deleted,
            Expected::StreamExists => current.is_some() && !soft_deleted,
            Expected::Revision(r) => current == Some(r),
        };
        if !ok {
            return AppendOutcome::WrongExpectedVersion { current };
        }
        let created = created_ticks();
        let first = current.map_or(0, |c| c + 1);
        let mut last = (0, 0);
        for (revision, event) in (first..).zip(events) {
            let mut metadata = event.metadata;
            metadata.insert("created".into(), created.clone());
            let position = inner.write(Record {
                stream: stream.to_vec(),
                revision,
                id: event.id,
                metadata,
                custom_metadata: event.custom_metadata,
                data: event.data,
                position: 0,
            });
            last = (revision, position);
        }
        if soft_deleted {
            // KurrentDB's soft undelete: the events before the new ones stay truncated.
            inner.write_metadata(stream, |meta| {
                meta.insert("$tb".into(), first.into());
            });
        }
        let len = inner.records.len();
        drop(inner);
        self.len.send_replace(len);
        AppendOutcome::Written {
            revision: last.0,
            position: last.1,
        }
    }

    /// Hard-deletes a stream: writes its `$streamDeleted` tombstone (at revision `i64::MAX`);
    /// its events are no longer read (but stay in `$all` until scavenged) and it can never be
    /// written again. Answers the tombstone's position (`None`: tombstoned already).
    pub fn tombstone(&self, stream: &[u8]) -> Option<u64> {
        let mut inner = self.lock();
        if !inner.tombstoned.insert(stream.to_vec()) {
            return None;
        }
        inner.streams.remove(stream);
        let position = inner.write(Record {
            stream: stream.to_vec(),
            revision: DELETED_STREAM,
            id: uuid::Uuid::new_v4(),
            metadata: system_metadata(TOMBSTONE, "application/octet-stream"),
            custom_metadata: Vec::new(),
            data: Vec::new(),
            position: 0,
        });
        let len = inner.records.len();
        drop(inner);
        self.len.send_replace(len);
        Some(position)
    }

    /// Soft-deletes a stream, as KurrentDB's `Delete`: checks `expected`, then writes `$$stream`
    /// metadata with `$tb` = `i64::MAX`. A stream without events or metadata cannot be.
    pub fn soft_delete(&self, stream: &[u8], expected: Expected) -> DeleteOutcome {
        let mut inner = self.lock();
        if inner.tombstoned.contains(stream) {
            return DeleteOutcome::Tombstoned;
        }
        let current = inner.current(stream);
        let has_meta = inner.current(&metastream(stream)).is_some();
        let ok = match expected {
            Expected::Any => current.is_some() || has_meta,
            Expected::NoStream => current.is_none() && has_meta,
            Expected::StreamExists => current.is_some(),
            Expected::Revision(r) => current == Some(r),
        };
        if !ok {
            return DeleteOutcome::WrongExpectedVersion { current };
        }
        let position = inner.write_metadata(stream, |meta| {
            meta.insert("$tb".into(), DELETED_STREAM.into());
        });
        let len = inner.records.len();
        drop(inner);
        self.len.send_replace(len);
        DeleteOutcome::Deleted { position }
    }

    /// `None` if the stream is tombstoned; otherwise the records a stream read returns (empty:
    /// no stream, soft-deleted, or truncated to nothing).
    pub fn stream(&self, stream: &[u8]) -> Option<Vec<Record>> {
        let inner = self.lock();
        if inner.tombstoned.contains(stream) {
            return None;
        }
        Some(inner.visible(stream))
    }

    /// Every record in log order, from index `from`: `$all` as written, deleted and truncated
    /// streams' events included until scavenged, tombstones and metadata events too.
    pub fn records_from(&self, from: usize) -> (Vec<Record>, usize) {
        let inner = self.lock();
        let records = inner.records[from.min(inner.records.len())..].to_vec();
        (records, inner.records.len())
    }

    /// What KurrentDB's scavenge does: a tombstoned stream's events leave the log files (the
    /// tombstone stays: the stream can never be written again); of a soft-deleted or
    /// truncated stream, the events its metadata removed leave too, but for the stream's last
    /// event (which keeps its last revision); a metadata stream keeps only its last event.
    pub fn scavenge(&self) {
        let mut inner = self.lock();
        let mut keep: HashSet<usize> = HashSet::new();
        for (stream, idx) in &inner.streams {
            if stream.starts_with(b"$$") {
                keep.extend(idx.last());
                continue;
            }
            let visible: HashSet<uuid::Uuid> = inner.visible(stream).iter().map(|r| r.id).collect();
            keep.extend(idx.last());
            keep.extend(
                idx.iter()
                    .filter(|&&i| visible.contains(&inner.records[i].id)),
            );
        }
        let records = std::mem::take(&mut inner.records);
        inner.records = records
            .into_iter()
            .enumerate()
            .filter(|(i, r)| {
                keep.contains(i) || r.metadata.get("type").map(String::as_str) == Some(TOMBSTONE)
            })
            .map(|(_, r)| r)
            .collect();
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
