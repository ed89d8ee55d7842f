//! [`StoreWrapper`]: a store built around another that changes only some of its calls (metrics,
//! feeding a projection, and the test stores that freeze, gate or fail calls).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;

use super::{
    EventRef, EventStore, ExpectedVersion, NewEvent, RecordedEvent, Removal, StoreError, StreamId,
    Watermark,
};

/// A store built around another. Implement [`inner`](Self::inner) and override only the calls
/// the wrapper changes; every other call goes to the inner store unchanged. Every
/// `StoreWrapper` is an [`EventStore`] (call it through that trait: with both traits in scope,
/// a method call on the wrapper would be ambiguous).
#[async_trait]
pub trait StoreWrapper: Send + Sync + 'static {
    /// The wrapped store.
    fn inner(&self) -> &dyn EventStore;

    /// [`EventStore::append`]; by default the inner store's.
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.inner().append(stream, expected, events).await
    }

    /// [`EventStore::read_stream`]; by default the inner store's.
    async fn read_stream(
        &self,
        stream: &StreamId,
        from_sequence: u64,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.inner().read_stream(stream, from_sequence).await
    }

    /// [`EventStore::read_all`]; by default the inner store's. A wrapper that changes it
    /// changes [`visit_all`](Self::visit_all) too, which goes to the inner store's own.
    async fn read_all(
        &self,
        from_position: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.inner().read_all(from_position, limit).await
    }

    /// [`EventStore::visit_all`]; by default the inner store's.
    async fn visit_all(
        &self,
        from_position: u64,
        limit: usize,
        visit: &mut (dyn for<'e> FnMut(EventRef<'e>) + Send),
    ) -> Result<usize, StoreError> {
        self.inner().visit_all(from_position, limit, visit).await
    }

    /// [`EventStore::head_position`]; by default the inner store's.
    async fn head_position(&self) -> Result<u64, StoreError> {
        self.inner().head_position().await
    }

    /// [`EventStore::watch_head`]; by default the inner store's.
    fn watch_head(&self) -> Arc<Watermark> {
        self.inner().watch_head()
    }

    /// [`EventStore::dense_positions`]; by default the inner store's.
    fn dense_positions(&self) -> bool {
        self.inner().dense_positions()
    }

    /// [`EventStore::stores_chain`]; by default the inner store's.
    fn stores_chain(&self) -> bool {
        self.inner().stores_chain()
    }

    /// [`EventStore::stores_stream_chain`]; by default the inner store's.
    fn stores_stream_chain(&self) -> bool {
        self.inner().stores_stream_chain()
    }

    /// [`EventStore::removals`]; by default the inner store's.
    async fn removals(&self) -> Result<Vec<Removal>, StoreError> {
        self.inner().removals().await
    }

    /// [`EventStore::health`]; by default the inner store's.
    fn health(&self) -> Result<(), StoreError> {
        self.inner().health()
    }
}

/// The future every store call returns (what `#[async_trait]` turns an `async fn` into).
type Call<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

// Written without `async`: the wrapper's own call already returns a boxed future, and passing
// it on keeps one allocation per call and layer (an `async fn` here would box it again).
impl<W: StoreWrapper> EventStore for W {
    fn append<'a, 'b, 'c>(
        &'a self,
        stream: &'b StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Call<'c, Vec<RecordedEvent>>
    where
        'a: 'c,
        'b: 'c,
        Self: 'c,
    {
        StoreWrapper::append(self, stream, expected, events)
    }

    fn read_stream<'a, 'b, 'c>(
        &'a self,
        stream: &'b StreamId,
        from_sequence: u64,
    ) -> Call<'c, Vec<RecordedEvent>>
    where
        'a: 'c,
        'b: 'c,
        Self: 'c,
    {
        StoreWrapper::read_stream(self, stream, from_sequence)
    }

    fn read_all<'a, 'c>(&'a self, from_position: u64, limit: usize) -> Call<'c, Vec<RecordedEvent>>
    where
        'a: 'c,
        Self: 'c,
    {
        StoreWrapper::read_all(self, from_position, limit)
    }

    fn visit_all<'a, 'b, 'c>(
        &'a self,
        from_position: u64,
        limit: usize,
        visit: &'b mut (dyn for<'e> FnMut(EventRef<'e>) + Send),
    ) -> Call<'c, usize>
    where
        'a: 'c,
        'b: 'c,
        Self: 'c,
    {
        StoreWrapper::visit_all(self, from_position, limit, visit)
    }

    fn head_position<'a, 'c>(&'a self) -> Call<'c, u64>
    where
        'a: 'c,
        Self: 'c,
    {
        StoreWrapper::head_position(self)
    }

    fn watch_head(&self) -> Arc<Watermark> {
        StoreWrapper::watch_head(self)
    }

    fn dense_positions(&self) -> bool {
        StoreWrapper::dense_positions(self)
    }

    fn stores_chain(&self) -> bool {
        StoreWrapper::stores_chain(self)
    }

    fn stores_stream_chain(&self) -> bool {
        StoreWrapper::stores_stream_chain(self)
    }

    fn removals<'a, 'c>(&'a self) -> Call<'c, Vec<Removal>>
    where
        'a: 'c,
        Self: 'c,
    {
        StoreWrapper::removals(self)
    }

    fn health(&self) -> Result<(), StoreError> {
        StoreWrapper::health(self)
    }
}
