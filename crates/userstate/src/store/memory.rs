//! A volatile store for tests, examples and benchmarks. It enforces expected versions exactly
//! like the durable stores, so code that works here does not break on them.
//!
//! Kept lean because the benchmarks measure the engine on it: streams live in shards of their
//! own, apart from the log, so a command's read of its stream and its append do not queue on
//! one lock; and each event is kept in a compact form ([`Kept`]) that names its stream and type
//! by index and shares its metadata with other events instead of copying five strings per
//! event.
//!
//! An append touches as little of the stream's own memory as it can: with 10,000 users a
//! stream's entry is rarely in the CPU's caches, and each line it touches was a cache miss
//! (`perf annotate` of `append`: the stream's bucket, its name's reference count and its last
//! metadata were most of its samples; docs/PERFORMANCE.md).

use std::cell::RefCell;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::chain::{self, EventHash};
use crate::hash::{FastMap, FastState};

use super::{
    EventMetadata, EventStore, ExpectedVersion, NewEvent, RecordedEvent, StoreError, StreamId,
    Watermark,
};

/// Shards of the stream table (a power of two).
const SHARDS: usize = 16;

/// An in-process event store. Nothing survives the process.
pub struct MemoryStore {
    /// Per stream, its events' indexes into the log; a stream is in shard `hash % SHARDS`.
    streams: Vec<Mutex<FastMap<StreamId, Stream>>>,
    hasher: FastState,
    log: Mutex<Log>,
    head: Arc<Watermark>,
}

struct Stream {
    /// The stream's name in [`Log::names`], which every event of the stream in the log holds.
    name: u32,
    /// Indexes into the log of the stream's events, in sequence order.
    events: Vec<usize>,
}

/// Every event in position order: `events.get(i)` has position `i + 1`.
#[derive(Default)]
struct Log {
    events: ChunkedLog<Kept>,
    /// The first event types seen, each stored once (a store holds a handful) and named by
    /// index: no reference count for the two cores to pass back and forth on every append.
    types: Vec<Box<str>>,
    /// Every stream's name, stored once and named by index by its events (an index, not an
    /// `Arc`: no reference count to bump on a line that is rarely in the cache).
    names: Vec<StreamId>,
    /// The hash of the last event (what the next one chains from).
    last_hash: EventHash,
}

/// At most this many distinct event types are shared; further types are kept per event.
const MAX_SHARED_TYPES: usize = 64;

/// An event's type: an index into [`Log::types`], or its own text past the shared ones.
enum EventType {
    Shared(u8),
    Own(Box<str>),
}

impl Log {
    fn event_type(&mut self, event_type: &str) -> EventType {
        match self.types.iter().position(|t| **t == *event_type) {
            Some(i) => EventType::Shared(i as u8),
            None if self.types.len() < MAX_SHARED_TYPES => {
                self.types.push(event_type.into());
                EventType::Shared((self.types.len() - 1) as u8)
            }
            None => EventType::Own(event_type.into()),
        }
    }

    /// Stores the name of a stream's first append; returns its index.
    fn add_name(&mut self, stream: &StreamId) -> u32 {
        self.names.push(stream.clone());
        u32::try_from(self.names.len() - 1).expect("fewer than 2^32 streams in memory")
    }

    /// The recorded form of `kept`, the event at `position`.
    fn recorded(&self, kept: &Kept, position: u64) -> RecordedEvent {
        let event_type = match &kept.event_type {
            EventType::Shared(t) => &self.types[*t as usize],
            EventType::Own(t) => t,
        };
        kept.recorded(position, &self.names[kept.stream as usize], event_type)
    }
}

/// One event as the store keeps it; [`Kept::recorded`] gives it back whole.
struct Kept {
    event_id: Uuid,
    /// The stream's name in [`Log::names`].
    stream: u32,
    sequence: u64,
    created_at: DateTime<Utc>,
    event_type: EventType,
    revision: u16,
    payload: serde_json::Value,
    metadata: Arc<EventMetadata>,
    hash: EventHash,
}

impl Kept {
    fn recorded(&self, position: u64, stream: &StreamId, event_type: &str) -> RecordedEvent {
        RecordedEvent {
            event_id: self.event_id,
            stream: stream.clone(),
            sequence: self.sequence,
            position,
            created_at: self.created_at,
            event_type: event_type.to_owned(),
            revision: self.revision,
            payload: self.payload.clone(),
            metadata: EventMetadata::clone(&self.metadata),
            hash: self.hash,
        }
    }
}

/// Items in fixed-size chunks that never move once allocated. One `Vec` of every event was
/// copied whole at each doubling (the allocator's `realloc` of a block of hundreds of MB), and
/// the copy's page faults took ~40 % of a 64-caller benchmark's CPU (perf, docs/PERFORMANCE.md).
struct ChunkedLog<T> {
    chunks: Vec<Vec<T>>,
    len: usize,
}

impl<T> Default for ChunkedLog<T> {
    fn default() -> Self {
        Self {
            chunks: Vec::new(),
            len: 0,
        }
    }
}

impl<T> ChunkedLog<T> {
    /// Items per chunk.
    const CHUNK: usize = 1 << 14;

    fn len(&self) -> usize {
        self.len
    }

    fn push(&mut self, item: T) {
        if self.len.is_multiple_of(Self::CHUNK) {
            self.chunks.push(Vec::with_capacity(Self::CHUNK));
        }
        if let Some(chunk) = self.chunks.last_mut() {
            chunk.push(item);
            self.len += 1;
        }
    }

    fn get(&self, i: usize) -> Option<&T> {
        self.chunks.get(i / Self::CHUNK)?.get(i % Self::CHUNK)
    }

    /// The items from index `start` on, in order.
    fn iter_from(&self, start: usize) -> impl Iterator<Item = &T> {
        let (first, skip) = (start / Self::CHUNK, start % Self::CHUNK);
        self.chunks.iter().skip(first).flatten().skip(skip)
    }
}

/// Takes a lock whatever a panicking holder left: appends validate first and then only push,
/// so a panic cannot leave a table half-updated.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self {
            streams: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: FastState::default(),
            log: Mutex::default(),
            head: Arc::default(),
        }
    }

    /// The shard of `stream`, locked. Lock order: a shard before the log.
    fn shard(&self, stream: &StreamId) -> MutexGuard<'_, FastMap<StreamId, Stream>> {
        let i = self.hasher.hash_one(stream) as usize % SHARDS;
        lock(&self.streams[i])
    }

    /// Appends `events` to the stream `entry` (its shard locked by the caller), each with the
    /// metadata and content digest [`prepare`] made for it, and returns them as recorded.
    fn commit(
        &self,
        stream: &StreamId,
        entry: &mut Stream,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        mut prepared: Vec<Prepared>,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let actual = entry.events.len() as u64;
        check(stream, expected, actual)?;
        let (start, now) = {
            let mut log = lock(&self.log);
            // Taken under the log's lock, so commit times follow positions.
            let now = Utc::now();
            let start = log.events.len();
            for (i, (e, p)) in events.iter().zip(&mut prepared).enumerate() {
                let event_type = log.event_type(&e.event_type);
                let sequence = actual + 1 + i as u64;
                let created_at = e.created_at.unwrap_or(now);
                let at = chain::Coordinates {
                    position: (start + i + 1) as u64,
                    sequence,
                    created_at_micros: created_at.timestamp_micros(),
                    event_id: e.event_id,
                    revision: e.revision,
                };
                // The content digest gives way to the event's link.
                p.hash = chain::link(&log.last_hash, &at, &p.hash);
                log.last_hash = p.hash;
                log.events.push(Kept {
                    event_id: e.event_id,
                    stream: entry.name,
                    sequence,
                    created_at,
                    event_type,
                    revision: e.revision,
                    payload: e.payload.clone(),
                    metadata: p.metadata.clone(),
                    hash: p.hash,
                });
            }
            (start, now)
        };
        entry.events.extend(start..start + events.len());
        Ok(events
            .into_iter()
            .zip(prepared)
            .enumerate()
            .map(|(i, (e, p))| {
                let (sequence, position) = (actual + 1 + i as u64, (start + i + 1) as u64);
                let mut recorded =
                    RecordedEvent::record(stream.clone(), sequence, position, now, e);
                recorded.hash = p.hash;
                recorded
            })
            .collect())
    }
}

/// Refuses an append to `stream` at version `actual` that expected another.
fn check(stream: &StreamId, expected: ExpectedVersion, actual: u64) -> Result<(), StoreError> {
    if expected.matches(actual) {
        return Ok(());
    }
    Err(StoreError::Conflict {
        stream: stream.clone(),
        expected,
        actual,
    })
}

/// What an append works out for each event before it takes a lock.
struct Prepared {
    /// The metadata the event keeps.
    metadata: Arc<EventMetadata>,
    /// The `content` part of its chain hash, then (once linked) its hash.
    hash: EventHash,
}

/// The metadata `event` keeps and its content digest (see [`Encoder`]).
fn prepare(stream: &StreamId, event: &NewEvent) -> Prepared {
    thread_local! {
        static ENCODER: RefCell<Encoder> = RefCell::default();
    }
    ENCODER.with(|encoder| match encoder.try_borrow_mut() {
        Ok(mut encoder) => encoder.prepare(stream, event),
        // Not reentrant in practice; a fresh encoder keeps it correct if it ever were.
        Err(_) => Encoder::default().prepare(stream, event),
    })
}

/// Per thread: the metadata of the last event the thread appended, with its JSON, shared with
/// the next event whose metadata is the same — the same caller on the same organisation with no
/// correlation id (an embedder's commands, the benchmarks). A server's requests each carry
/// their own request id, so there every event keeps a copy, as before.
///
/// Kept per thread, not per stream: the last metadata of a stream was rarely in the cache (a
/// miss on each of its four allocations), and its JSON was encoded again for every event only
/// to hash it. A thread's own `Arc` is bumped by that thread alone.
#[derive(Default)]
struct Encoder {
    metadata: Option<Arc<EventMetadata>>,
    /// `metadata` as compact JSON (what the chain's content digest covers).
    metadata_json: Vec<u8>,
    /// Scratch for a payload's compact JSON.
    payload_json: Vec<u8>,
}

impl Encoder {
    /// Buffers larger than this are not kept for the thread's life.
    const KEEP: usize = 64 << 10;

    fn prepare(&mut self, stream: &StreamId, event: &NewEvent) -> Prepared {
        let metadata = match &self.metadata {
            Some(last) if **last == event.metadata => last.clone(),
            _ => {
                self.metadata_json.clear();
                // Serializing the metadata struct or a `Value` cannot fail (string keys only).
                let _ = serde_json::to_writer(&mut self.metadata_json, &event.metadata);
                let metadata = Arc::new(event.metadata.clone());
                self.metadata = Some(metadata.clone());
                metadata
            }
        };
        self.payload_json.clear();
        let _ = serde_json::to_writer(&mut self.payload_json, &event.payload);
        let hash = chain::content_digest_raw(
            stream.as_str(),
            &event.event_type,
            &self.metadata_json,
            &self.payload_json,
        );
        if self.payload_json.capacity() > Self::KEEP {
            self.payload_json = Vec::new();
        }
        if self.metadata_json.capacity() > Self::KEEP {
            // Encoded again with the next event, whatever its metadata.
            *self = Self::default();
        }
        Prepared { metadata, hash }
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl EventStore for MemoryStore {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        super::ensure_events(&events)?;
        // The content part of the chain hash, on the caller's thread and outside every lock.
        let prepared = events.iter().map(|e| prepare(stream, e)).collect();
        let recorded = {
            // The shard stays locked until the stream's indexes are in: the version check and
            // the sequences taken from it cannot interleave with another append to the stream.
            let mut shard = self.shard(stream);
            match shard.get_mut(stream) {
                Some(entry) => self.commit(stream, entry, expected, events, prepared)?,
                None => {
                    // A stream is in the table exactly when it has events (it is added right
                    // before its first ones), so it has none yet.
                    check(stream, expected, 0)?;
                    let name = lock(&self.log).add_name(stream);
                    let entry = Stream {
                        name,
                        events: Vec::new(),
                    };
                    let entry = shard.entry(stream.clone()).or_insert(entry);
                    self.commit(stream, entry, expected, events, prepared)?
                }
            }
        };
        self.head.advance(recorded.last().map_or(0, |e| e.position));
        Ok(recorded)
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        from_sequence: u64,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let shard = self.shard(stream);
        let Some(entry) = shard.get(stream) else {
            return Ok(Vec::new());
        };
        let skip = from_sequence
            .saturating_sub(1)
            .min(entry.events.len() as u64) as usize;
        let indexes = &entry.events[skip..];
        if indexes.is_empty() {
            // A command on a cached user asks for the events after its version: usually none.
            return Ok(Vec::new());
        }
        let log = lock(&self.log);
        Ok(indexes
            .iter()
            .filter_map(|&i| Some(log.recorded(log.events.get(i)?, i as u64 + 1)))
            .collect())
    }

    async fn read_all(
        &self,
        from_position: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let log = lock(&self.log);
        let start = from_position.saturating_sub(1).min(log.events.len() as u64) as usize;
        Ok(log
            .events
            .iter_from(start)
            .take(limit)
            .zip(start as u64 + 1..)
            .map(|(k, position)| log.recorded(k, position))
            .collect())
    }

    async fn head_position(&self) -> Result<u64, StoreError> {
        Ok(lock(&self.log).events.len() as u64)
    }

    fn watch_head(&self) -> Arc<Watermark> {
        self.head.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{event, stream};

    /// Reads across chunk boundaries return exactly the events in position order.
    #[tokio::test]
    async fn reads_cross_chunk_boundaries() {
        let store = MemoryStore::new();
        let total = 2 * ChunkedLog::<Kept>::CHUNK + 3;
        let mut appended = 0;
        while appended < total {
            let n = 100.min(total - appended);
            let name = format!("s{}", appended % 7);
            let events = (0..n).map(|i| event("t", (appended + i) as u64)).collect();
            store
                .append(&stream(&name), ExpectedVersion::Any, events)
                .await
                .unwrap();
            appended += n;
        }
        assert_eq!(store.head_position().await.unwrap(), total as u64);
        let c = ChunkedLog::<Kept>::CHUNK as u64;
        for from in [1, c - 1, c, c + 1, 2 * c, 2 * c + 3, 2 * c + 4] {
            let page = store.read_all(from, 5).await.unwrap();
            let want: Vec<u64> = (from..(from + 5).min(total as u64 + 1)).collect();
            let got: Vec<u64> = page.iter().map(|e| e.position).collect();
            assert_eq!(got, want, "from {from}");
        }
        let mut seen = 0;
        for k in 0..7 {
            let events = store
                .read_stream(&stream(&format!("s{k}")), 1)
                .await
                .unwrap();
            assert!(events.windows(2).all(|w| w[0].position < w[1].position));
            assert!(events
                .iter()
                .enumerate()
                .all(|(i, e)| e.sequence == i as u64 + 1));
            seen += events.len();
        }
        assert_eq!(seen, total);
    }

    /// Events keep their own metadata and type although the store shares equal ones between
    /// events: what is read back is what was appended, event by event.
    #[tokio::test]
    async fn shared_metadata_and_types_read_back_per_event() {
        let store = MemoryStore::new();
        let s = stream("s");
        let mut appended = Vec::new();
        for n in 0..6u64 {
            let mut e = event(["a", "b"][n as usize % 2], n);
            // Pairs of equal metadata, then a change.
            e.metadata.correlation_id = Some(format!("c-{}", n / 2));
            appended.push(e.clone());
            store
                .append(&s, ExpectedVersion::Exact(n), vec![e])
                .await
                .unwrap();
        }
        let by_stream = store.read_stream(&s, 1).await.unwrap();
        let by_position = store.read_all(1, 100).await.unwrap();
        assert_eq!(by_stream, by_position);
        for (got, want) in by_stream.iter().zip(&appended) {
            assert_eq!(got.event_id, want.event_id);
            assert_eq!(got.event_type, want.event_type);
            assert_eq!(got.metadata, want.metadata);
            assert_eq!(got.payload, want.payload);
        }
        assert_eq!(by_stream.len(), appended.len());
    }

    /// The hashes the store records are the chain's, whether an event's metadata was shared
    /// with the one before it (its JSON reused) or not.
    #[tokio::test]
    async fn recorded_hashes_follow_the_chain_with_shared_and_own_metadata() {
        let store = MemoryStore::new();
        for n in 0..6u64 {
            let mut e = event("t", n);
            e.metadata.correlation_id = Some(format!("c-{}", n / 2));
            let s = stream(["a", "b"][n as usize % 2]);
            store
                .append(&s, ExpectedVersion::Any, vec![e])
                .await
                .unwrap();
        }
        let mut previous = EventHash::ZERO;
        for e in store.read_all(1, 100).await.unwrap() {
            let content =
                chain::content_digest(e.stream.as_str(), &e.event_type, &e.metadata, &e.payload);
            let link = chain::link(&previous, &e.coordinates(), &content);
            assert_eq!(e.hash, link, "position {}", e.position);
            previous = link;
        }
    }

    /// Past the shared event types, events keep their own: every type reads back as written.
    #[tokio::test]
    async fn more_types_than_are_shared_read_back() {
        let store = MemoryStore::new();
        let s = stream("t");
        let types: Vec<String> = (0..MAX_SHARED_TYPES + 10)
            .map(|i| format!("type.{i}"))
            .collect();
        let events = types.iter().enumerate().map(|(i, t)| event(t, i as u64));
        store
            .append(&s, ExpectedVersion::NoStream, events.collect())
            .await
            .unwrap();
        // A shared type again, after the overflow.
        store
            .append(&s, ExpectedVersion::Any, vec![event("type.3", 0)])
            .await
            .unwrap();
        let read: Vec<String> = store
            .read_all(1, 1000)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.event_type)
            .collect();
        let mut want = types.clone();
        want.push("type.3".into());
        assert_eq!(read, want);
        let by_stream: Vec<String> = store
            .read_stream(&s, 1)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.event_type)
            .collect();
        assert_eq!(by_stream, want);
    }
}
