//! A volatile store for tests, examples and benchmarks. It enforces expected versions exactly
//! like the durable stores, so code that works here does not break on them.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::Utc;
use tokio::sync::watch;

use super::{EventStore, ExpectedVersion, NewEvent, RecordedEvent, StoreError, StreamId};

/// An in-process event store. Nothing survives the process.
pub struct MemoryStore {
    inner: Mutex<Inner>,
    head: watch::Sender<u64>,
}

#[derive(Default)]
struct Inner {
    /// Every event in position order; `log[i]` has position `i + 1`.
    log: Vec<RecordedEvent>,
    /// Per stream, the indexes into `log` of its events in sequence order.
    streams: HashMap<StreamId, Vec<usize>>,
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
            inner.log.extend(recorded.iter().cloned());
            let end = inner.log.len();
            inner
                .streams
                .entry(stream.clone())
                .or_default()
                .extend(start..end);
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
            .map(|&i| inner.log[i].clone())
            .collect())
    }

    async fn read_all(
        &self,
        from_position: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let inner = self.lock();
        let start = from_position.saturating_sub(1).min(inner.log.len() as u64) as usize;
        Ok(inner.log[start..].iter().take(limit).cloned().collect())
    }

    async fn head_position(&self) -> Result<u64, StoreError> {
        Ok(self.lock().log.len() as u64)
    }

    fn watch_head(&self) -> watch::Receiver<u64> {
        self.head.subscribe()
    }
}
