//! The event store contract: streams of opaque, typed, JSON-payload events.
//!
//! The store knows nothing about users. It keeps, per stream, a gapless 1-based `sequence`, and
//! across all streams a global `position` that increases strictly in commit order and never
//! skips a committed event: a reader that has seen position `P` never later finds a new event at
//! a position `≤ P`. Appends are atomic per call and checked against an [`ExpectedVersion`].
//!
//! Backends: [`MemoryStore`] and the durable [`FileStore`] here; PostgreSQL and KurrentDB elsewhere.
//! Every backend passes the conformance suite in `testkit` (feature `testkit`).

mod error;
pub(crate) mod file;
mod memory;
mod removal;
mod types;
mod watermark;
mod wrap;

pub use error::StoreError;
#[cfg(feature = "testkit")]
pub(crate) use file::faults;
pub use file::{
    record as file_record, BackupSummary, FileStore, FileStoreOptions, PendingRepair, SyncCompanion,
};
pub use memory::MemoryStore;
pub use removal::{Removal, RemovalKind, RemovalTarget};
pub use types::{
    EventMetadata, EventRef, ExpectedVersion, NewEvent, PayloadRef, RecordedEvent, StreamId,
};
pub use watermark::Watermark;
pub use wrap::StoreWrapper;

use std::sync::Arc;

use async_trait::async_trait;

/// The contract's rule for every backend: an append carries at least one event.
pub fn ensure_events(events: &[NewEvent]) -> Result<(), StoreError> {
    if events.is_empty() {
        return Err(StoreError::InvalidArgument(
            "an append needs at least one event".into(),
        ));
    }
    Ok(())
}

/// One append of [`EventStore::append_batch`]: what [`EventStore::append`] takes.
#[derive(Clone, Debug)]
pub struct Append {
    /// The stream appended to.
    pub stream: StreamId,
    /// The version the stream must have.
    pub expected: ExpectedVersion,
    /// At least one event.
    pub events: Vec<NewEvent>,
}

/// Why [`EventStore::append_batch`] stopped: the first append (in order) that failed.
#[derive(Debug)]
pub struct BatchError {
    /// Its index in the batch. The appends before it are committed; it and those after it
    /// are not.
    pub index: usize,
    /// Why it failed.
    pub error: StoreError,
}

/// A durable (or, for [`MemoryStore`], volatile) log of event streams.
///
/// Implementations must be safe to share between tasks (`Arc<dyn EventStore>`).
#[async_trait]
pub trait EventStore: Send + Sync + 'static {
    /// Appends `events` to `stream` atomically if the stream's current version matches
    /// `expected`; otherwise writes nothing and returns [`StoreError::Conflict`]. Returns the
    /// recorded events (sequence, position and `created_at` assigned). When it returns `Ok` on a
    /// durable store, the events are durable.
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<Vec<RecordedEvent>, StoreError>;

    /// Appends `appends` in order, each atomically and checked against its expected version
    /// as if appended one after the other (an append may expect a version an earlier one of
    /// the batch creates), so their positions follow the order. Returns how many events were
    /// appended. Not atomic as a whole: on a failure the appends before the first failing one
    /// are committed, that one and every later one are not ([`BatchError`]). When it returns
    /// `Ok` on a durable store, every event is durable.
    ///
    /// For moving histories between stores (`userstate import`). The default appends one
    /// after the other with [`append`](Self::append) (a wrapper's own `append` included); the
    /// file store queues the whole batch at once, so group commit writes it with a few
    /// `fdatasync`s instead of one per append.
    async fn append_batch(&self, appends: Vec<Append>) -> Result<u64, BatchError> {
        let mut count = 0;
        for (index, append) in appends.into_iter().enumerate() {
            let n = append.events.len() as u64;
            self.append(&append.stream, append.expected, append.events)
                .await
                .map_err(|error| BatchError { index, error })?;
            count += n;
        }
        Ok(count)
    }

    /// The events of `stream` with `sequence >= from_sequence`, in sequence order. An unknown
    /// stream is empty.
    async fn read_stream(
        &self,
        stream: &StreamId,
        from_sequence: u64,
    ) -> Result<Vec<RecordedEvent>, StoreError>;

    /// Up to `limit` events of every stream with `position >= from_position`, in position order.
    async fn read_all(
        &self,
        from_position: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError>;

    /// Calls `visit` with up to `limit` events of every stream with `position >=
    /// from_position`, in position order, as [`read_all`](Self::read_all) would return them
    /// but lent instead of copied and without their metadata; returns how many it visited (0:
    /// none left). For folds over the whole log, such as rebuilding a read model.
    ///
    /// The default reads the page with `read_all` and lends its events; a store that can lend
    /// its own bytes overrides it (the file store: no metadata parsed, no payload parsed
    /// unless the fold asks, no strings copied).
    async fn visit_all(
        &self,
        from_position: u64,
        limit: usize,
        visit: &mut (dyn for<'e> FnMut(EventRef<'e>) + Send),
    ) -> Result<usize, StoreError> {
        let page = self.read_all(from_position, limit).await?;
        for event in &page {
            visit(event.as_event_ref());
        }
        Ok(page.len())
    }

    /// The position of the last committed event (0 for an empty store).
    async fn head_position(&self) -> Result<u64, StoreError>;

    /// The head position as a [`Watermark`], for followers to wait on instead of polling.
    /// Backends shared between processes advance it as they learn of other processes' commits.
    fn watch_head(&self) -> Arc<Watermark>;

    /// Whether positions are gap-free: every position from 1 to the head belongs to an event,
    /// so the event after position `p` is at `p + 1`. True for the memory, file and PostgreSQL
    /// stores; a backend whose positions have holes (KurrentDB) says false, and a projection
    /// then learns of new events only by reading them back (see
    /// [`Projection::listener`](crate::Projection::listener)). Wrappers forward it.
    fn dense_positions(&self) -> bool {
        true
    }

    /// Whether the store records each event's chain hash ([`RecordedEvent::hash`], ADR 0020)
    /// where it orders the event. True for the memory, file and PostgreSQL stores. KurrentDB
    /// assigns positions itself, with no lock a client could compute the link under, so it
    /// says false (its events carry their stream's link instead, see
    /// [`stores_stream_chain`](Self::stores_stream_chain)): `verify` and `export` then compute
    /// the global chain over the log as read. Wrappers forward it.
    fn stores_chain(&self) -> bool {
        true
    }

    /// Whether [`RecordedEvent::hash`] holds the event's link in its **stream's** chain
    /// ([`chain::stream_link`](crate::chain::stream_link)) instead of the global one: KurrentDB,
    /// which links each event to the one before it in its stream at append (ADR 0020), so
    /// `verify` names a changed, removed, inserted or reordered event of a stream by its
    /// position, and a signed checkpoint covers the global order. Only when
    /// [`stores_chain`](Self::stores_chain) is false. Wrappers forward it.
    fn stores_stream_chain(&self) -> bool {
        false
    }

    /// The records the backend keeps of streams deleted or truncated through its own API, in
    /// position order (ADR 0020): KurrentDB's tombstones (`$streamDeleted`) and stream
    /// metadata that deletes or truncates (`$tb`, `$maxCount`, `$maxAge`) of the store's
    /// streams and key streams, which outlive the events they remove. `verify` reports each
    /// one but the tombstone of an erased user's key stream. Empty (the default) for a store
    /// with no such API: the memory, file and PostgreSQL stores, whose removals only the
    /// chain tells. Wrappers forward it.
    async fn removals(&self) -> Result<Vec<Removal>, StoreError> {
        Ok(Vec::new())
    }

    /// Whether the store can take appends now, answered from what it already knows (no I/O,
    /// no waiting): for a readiness check. `Err` says why not — for the file store, a write
    /// or sync that failed and whose repair has not finished yet, a segment it could not
    /// repair, or a store opened read-only. An `Ok` is no promise that the next append
    /// succeeds, and a backend that learns of failures only by trying (a database) answers
    /// `Ok`, the default. Wrappers forward it.
    ///
    /// ```
    /// use userstate::{EventStore, MemoryStore};
    /// assert!(MemoryStore::new().health().is_ok());
    /// ```
    fn health(&self) -> Result<(), StoreError> {
        Ok(())
    }
}
