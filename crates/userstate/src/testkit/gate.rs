//! [`GatedStore`]: a store wrapper for tests of what happens while a write is in flight.

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::{watch, Notify};

use crate::store::{
    EventStore, ExpectedVersion, NewEvent, RecordedEvent, StoreError, StoreWrapper, StreamId,
};

/// Which appends a [`GatedStore`] holds while its gate is closed.
pub type Gated = fn(&StreamId, &[NewEvent]) -> bool;

/// Wraps a store; while its gate is [closed](Self::close), every append that `gated` picks
/// waits (before it reaches the inner store) until the gate [opens](Self::open), and says it
/// is waiting ([`entered`](Self::entered)). Everything else passes through unchanged.
pub struct GatedStore {
    inner: Arc<dyn EventStore>,
    gated: Gated,
    open: watch::Sender<bool>,
    entered: Notify,
}

impl GatedStore {
    /// A gate, open, around `inner`, for the appends `gated` picks.
    pub fn new(inner: Arc<dyn EventStore>, gated: Gated) -> Self {
        Self {
            inner,
            gated,
            open: watch::Sender::new(true),
            entered: Notify::new(),
        }
    }

    /// Holds the picked appends from now on.
    pub fn close(&self) {
        self.open.send_replace(false);
    }

    /// Lets the held appends and every later one through.
    pub fn open(&self) {
        self.open.send_replace(true);
    }

    /// Waits until a picked append waits at the closed gate (one call per append held).
    pub async fn entered(&self) {
        self.entered.notified().await;
    }
}

#[async_trait]
impl StoreWrapper for GatedStore {
    fn inner(&self) -> &dyn EventStore {
        &*self.inner
    }

    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        if (self.gated)(stream, &events) {
            let mut open = self.open.subscribe();
            if !*open.borrow_and_update() {
                self.entered.notify_one();
                // The sender lives as long as `self`: the wait ends when the gate opens.
                let _ = open.wait_for(|open| *open).await;
            }
        }
        self.inner.append(stream, expected, events).await
    }
}
