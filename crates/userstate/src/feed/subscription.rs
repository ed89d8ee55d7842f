//! [`Subscription`]: every event after a position, in position order, live.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use super::{FeedError, Filter};
use crate::store::{EventStore, RecordedEvent, Watermark};

/// Events read from the store per call.
pub const DEFAULT_PAGE: usize = 512;
/// How far behind the head a live reader may fall, in events, before it is told
/// [`FeedError::TooFarBehind`].
pub const DEFAULT_MAX_LAG: u64 = 100_000;
/// How long a subscription waits on the head before it reads the store anyway (a backend that
/// learns of other processes' commits late, or a head watch that missed one).
const RECHECK: Duration = Duration::from_secs(2);

/// Every committed event after a position, in position order, without gaps, live: when it has
/// read everything it waits for the store's head to move.
///
/// It pulls pages of at most [`with_page`](Self::with_page) events from the store, only when
/// the reader asks for more: memory stays one page however slow the reader, and no command
/// ever waits for it. A reader that falls more than [`with_max_lag`](Self::with_max_lag)
/// events behind the head, after it had caught up with the head it started from, gets
/// [`FeedError::TooFarBehind`] (it resubscribes from its last position, which loses nothing).
///
/// ```
/// use std::sync::Arc;
/// use userstate::feed::Subscription;
/// use userstate::store::{EventMetadata, NewEvent};
/// use userstate::{EventStore, ExpectedVersion, MemoryStore, StreamId};
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let store = Arc::new(MemoryStore::new());
/// let stream = StreamId::new("t:1").unwrap();
/// let event = || NewEvent::new("t.happened", 1, serde_json::json!({}), EventMetadata::default());
/// store.append(&stream, ExpectedVersion::Any, vec![event(), event()]).await.unwrap();
/// let mut feed = Subscription::after(store.clone(), 1);
/// assert_eq!(feed.next().await.unwrap().position, 2);
/// // Live: the next event arrives when it is committed.
/// let waiting = tokio::spawn(async move { feed.next().await.unwrap().position });
/// store.append(&stream, ExpectedVersion::Any, vec![event()]).await.unwrap();
/// assert_eq!(waiting.await.unwrap(), 3);
/// # });
/// ```
pub struct Subscription {
    store: Arc<dyn EventStore>,
    head: Arc<Watermark>,
    /// The last position read from the store (filtered out or not).
    read: u64,
    /// The last position handed to the reader.
    delivered: u64,
    /// Read but not yet handed out (at most one page).
    buffer: VecDeque<RecordedEvent>,
    page: usize,
    max_lag: u64,
    /// The head when the subscription started: until it reaches it, it is catching up and the
    /// lag limit does not apply.
    catch_up_to: Option<u64>,
    filter: Filter,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("read", &self.read)
            .field("delivered", &self.delivered)
            .field("buffered", &self.buffer.len())
            .field("page", &self.page)
            .field("max_lag", &self.max_lag)
            .finish_non_exhaustive()
    }
}

impl Subscription {
    /// Every event of `store` with a position greater than `position` (0: from the start).
    pub fn after(store: Arc<dyn EventStore>, position: u64) -> Self {
        let head = store.watch_head();
        Self {
            store,
            head,
            read: position,
            delivered: position,
            buffer: VecDeque::new(),
            page: DEFAULT_PAGE,
            max_lag: DEFAULT_MAX_LAG,
            catch_up_to: None,
            filter: Filter::all(),
        }
    }

    /// Reads at most `page` events per store call (at least 1).
    pub fn with_page(mut self, page: usize) -> Self {
        self.page = page.max(1);
        self
    }

    /// Allows a live reader to fall at most `max_lag` events behind the head.
    pub fn with_max_lag(mut self, max_lag: u64) -> Self {
        self.max_lag = max_lag;
        self
    }

    /// Hands out only the events `filter` accepts (the others are read and skipped; the
    /// position still moves past them).
    pub fn with_filter(mut self, filter: Filter) -> Self {
        self.filter = filter;
        self
    }

    /// The position of the last event handed out (the starting position before any).
    pub fn position(&self) -> u64 {
        self.delivered
    }

    /// The position up to which the store has been read, filtered events included: a consumer
    /// that checkpoints this after handling everything [`next_batch`](Self::next_batch) gave it
    /// does not read the filtered events again.
    pub fn read_position(&self) -> u64 {
        if self.buffer.is_empty() {
            self.read
        } else {
            self.delivered
        }
    }

    /// The next event, waiting for one to be committed when the reader is at the head.
    pub async fn next(&mut self) -> Result<RecordedEvent, FeedError> {
        loop {
            if let Some(event) = self.buffer.pop_front() {
                self.delivered = event.position;
                return Ok(event);
            }
            self.fill().await?;
        }
    }

    /// The events already read and not yet handed out, or, when there are none, the next page
    /// (waiting for one event at least). Never empty.
    pub async fn next_batch(&mut self) -> Result<Vec<RecordedEvent>, FeedError> {
        while self.buffer.is_empty() {
            self.fill().await?;
        }
        let batch: Vec<RecordedEvent> = self.buffer.drain(..).collect();
        if let Some(last) = batch.last() {
            self.delivered = last.position;
        }
        Ok(batch)
    }

    /// The events that are committed now and not yet handed out, up to a page, without
    /// waiting (empty at the head).
    pub async fn poll_batch(&mut self) -> Result<Vec<RecordedEvent>, FeedError> {
        if self.buffer.is_empty() {
            self.read_page().await?;
        }
        let batch: Vec<RecordedEvent> = self.buffer.drain(..).collect();
        if let Some(last) = batch.last() {
            self.delivered = last.position;
        }
        Ok(batch)
    }

    /// Reads the next page into the buffer, waiting for the head when everything is read.
    async fn fill(&mut self) -> Result<(), FeedError> {
        loop {
            if self.read_page().await? {
                return Ok(());
            }
            // At the head: wait for it to move (or recheck the store now and then).
            let _ = tokio::time::timeout(RECHECK, self.head.wait_for(self.read + 1)).await;
        }
    }

    /// Reads one page; whether it found events (filtered out or not: the caller loops).
    async fn read_page(&mut self) -> Result<bool, FeedError> {
        self.check_lag().await?;
        let page = self.store.read_all(self.read + 1, self.page).await?;
        let Some(last) = page.last() else {
            return Ok(false);
        };
        self.read = last.position;
        self.buffer
            .extend(page.into_iter().filter(|e| self.filter.accepts(e)));
        Ok(true)
    }

    async fn check_lag(&mut self) -> Result<(), FeedError> {
        let head = self.head.get().max(self.read);
        let target = match self.catch_up_to {
            Some(target) => target,
            None => {
                let target = head.max(self.store.head_position().await?);
                self.catch_up_to = Some(target);
                target
            }
        };
        if self.read < target {
            return Ok(());
        }
        // Read but filtered out counts as kept up with: measure from what was read.
        let lag = head.saturating_sub(self.read_position());
        if lag > self.max_lag {
            return Err(FeedError::TooFarBehind {
                position: self.delivered,
                lag,
                max_lag: self.max_lag,
            });
        }
        Ok(())
    }
}
