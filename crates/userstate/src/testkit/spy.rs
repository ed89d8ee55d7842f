//! [`SpyStore`]: a store wrapper for tests of what reads the store and when.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use crate::store::{EventRef, EventStore, RecordedEvent, StoreError, StoreWrapper, StreamId};

/// Wraps a store, counts the pages read through [`read_all`](EventStore::read_all) or
/// [`visit_all`](EventStore::visit_all) (calls with `limit > 1`, as a projection's follower
/// makes them) and, while frozen, answers those with nothing, as for a node cut off from the
/// store's feed. It also notes where each [`read_stream`](EventStore::read_stream) started,
/// which pass through unchanged, as do single-event
/// reads (`limit == 1`, as lag probes make them), appends and the head.
pub struct SpyStore {
    inner: Arc<dyn EventStore>,
    pages: AtomicUsize,
    stream_reads: Mutex<Vec<u64>>,
    frozen: AtomicBool,
}

impl SpyStore {
    /// A spy on `inner`, not frozen, with no page read yet.
    pub fn new(inner: Arc<dyn EventStore>) -> Self {
        Self {
            inner,
            pages: AtomicUsize::new(0),
            stream_reads: Mutex::new(Vec::new()),
            frozen: AtomicBool::new(false),
        }
    }

    /// How many pages were read (frozen or not).
    pub fn pages_read(&self) -> usize {
        self.pages.load(Ordering::SeqCst)
    }

    /// The `from_sequence` of every stream read so far, in order (1: a whole stream).
    pub fn stream_reads(&self) -> Vec<u64> {
        self.stream_reads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Counts a read of `limit` events if it is a page (`limit > 1`), and says whether it is
    /// frozen: to be answered with nothing.
    fn page_frozen(&self, limit: usize) -> bool {
        if limit <= 1 {
            return false;
        }
        self.pages.fetch_add(1, Ordering::SeqCst);
        self.frozen.load(Ordering::SeqCst)
    }

    /// Freezes (`true`) or thaws page reads.
    pub fn freeze(&self, frozen: bool) {
        self.frozen.store(frozen, Ordering::SeqCst);
    }
}

#[async_trait]
impl StoreWrapper for SpyStore {
    fn inner(&self) -> &dyn EventStore {
        &*self.inner
    }

    async fn read_all(
        &self,
        from_position: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        if self.page_frozen(limit) {
            return Ok(Vec::new());
        }
        self.inner.read_all(from_position, limit).await
    }

    async fn visit_all(
        &self,
        from_position: u64,
        limit: usize,
        visit: &mut (dyn for<'e> FnMut(EventRef<'e>) + Send),
    ) -> Result<usize, StoreError> {
        if self.page_frozen(limit) {
            return Ok(0);
        }
        self.inner.visit_all(from_position, limit, visit).await
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        from_sequence: u64,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.stream_reads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(from_sequence);
        self.inner.read_stream(stream, from_sequence).await
    }
}
