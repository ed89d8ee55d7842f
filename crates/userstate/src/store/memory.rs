//! A volatile store for tests, examples and benchmarks. It enforces expected versions exactly
//! like the durable stores, so code that works here does not break on them.

use std::sync::Mutex;

use async_trait::async_trait;
use chrono::Utc;
use tokio::sync::watch;

use crate::hash::FastMap;

use super::{EventStore, ExpectedVersion, NewEvent, RecordedEvent, StoreError, StreamId};

/// An in-process event store. Nothing survives the process.
pub struct MemoryStore {
    inner: Mutex<Inner>,
    head: watch::Sender<u64>,
}

#[derive(Default)]
struct Inner {
    /// Every event in position order; `log.get(i)` has position `i + 1`.
    log: ChunkedLog,
    /// Per stream, the indexes into `log` of its events in sequence order.
    streams: FastMap<StreamId, Vec<usize>>,
}

/// Events in fixed-size chunks that never move once allocated. One `Vec` of every event was
/// copied whole at each doubling (the allocator's `realloc` of a block of hundreds of MB), and
/// the copy's page faults took ~40 % of a 64-caller benchmark's CPU (perf, docs/PERFORMANCE.md).
#[derive(Default)]
struct ChunkedLog {
    chunks: Vec<Vec<RecordedEvent>>,
    len: usize,
}

impl ChunkedLog {
    /// Events per chunk.
    const CHUNK: usize = 1 << 14;

    fn len(&self) -> usize {
        self.len
    }

    fn push(&mut self, event: RecordedEvent) {
        if self.len.is_multiple_of(Self::CHUNK) {
            self.chunks.push(Vec::with_capacity(Self::CHUNK));
        }
        if let Some(chunk) = self.chunks.last_mut() {
            chunk.push(event);
            self.len += 1;
        }
    }

    fn get(&self, i: usize) -> Option<&RecordedEvent> {
        self.chunks.get(i / Self::CHUNK)?.get(i % Self::CHUNK)
    }

    /// The events from index `start` on, in order.
    fn iter_from(&self, start: usize) -> impl Iterator<Item = &RecordedEvent> {
        let (first, skip) = (start / Self::CHUNK, start % Self::CHUNK);
        self.chunks.iter().skip(first).flatten().skip(skip)
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            head: watch::channel(0).0,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave `Inner` half-updated: appends validate
        // first and then only push.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
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
        let recorded = {
            let mut inner = self.lock();
            let actual = inner.streams.get(stream).map_or(0, |s| s.len() as u64);
            if !expected.matches(actual) {
                return Err(StoreError::Conflict {
                    stream: stream.clone(),
                    expected,
                    actual,
                });
            }
            let now = Utc::now();
            let start = inner.log.len();
            let recorded: Vec<RecordedEvent> = events
                .into_iter()
                .enumerate()
                .map(|(i, e)| {
                    RecordedEvent::record(
                        stream.clone(),
                        actual + 1 + i as u64,
                        (start + i + 1) as u64,
                        now,
                        e,
                    )
                })
                .collect();
            for e in &recorded {
                inner.log.push(e.clone());
            }
            let end = inner.log.len();
            match inner.streams.get_mut(stream) {
                Some(indexes) => indexes.extend(start..end),
                None => {
                    inner.streams.insert(stream.clone(), (start..end).collect());
                }
            }
            recorded
        };
        let head = recorded.last().map_or(0, |e| e.position);
        self.head.send_if_modified(|h| {
            let changed = *h < head;
            *h = (*h).max(head);
            changed
        });
        Ok(recorded)
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        from_sequence: u64,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let inner = self.lock();
        let Some(indexes) = inner.streams.get(stream) else {
            return Ok(Vec::new());
        };
        let skip = from_sequence.saturating_sub(1).min(indexes.len() as u64) as usize;
        Ok(indexes[skip..]
            .iter()
            .filter_map(|&i| inner.log.get(i).cloned())
            .collect())
    }

    async fn read_all(
        &self,
        from_position: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let inner = self.lock();
        let start = from_position.saturating_sub(1).min(inner.log.len() as u64) as usize;
        Ok(inner.log.iter_from(start).take(limit).cloned().collect())
    }

    async fn head_position(&self) -> Result<u64, StoreError> {
        Ok(self.lock().log.len() as u64)
    }

    fn watch_head(&self) -> watch::Receiver<u64> {
        self.head.subscribe()
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
        let total = 2 * ChunkedLog::CHUNK + 3;
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
        let c = ChunkedLog::CHUNK as u64;
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
}
