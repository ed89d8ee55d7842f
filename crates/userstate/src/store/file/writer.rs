//! The write path: appenders fill the next batch while one thread syncs the previous one.
//!
//! Three parties, so that the disk's `fdatasync`s run back to back:
//! - **Appenders** (the callers of `append`, on their own threads) encode their events, then,
//!   under the [`Queue`] lock, check the expected version (against the index plus the appends
//!   queued but not yet published), take positions, place the frames at the end of the open
//!   batch and wake the syncer if it is idle. A conflict is answered at once; nothing waits.
//! - **The syncer** (one OS thread, [`Syncer`]) takes the whole open batch, writes it with
//!   one positional `write` and calls `fdatasync` once ([`File::sync_data`]). Meanwhile the
//!   appenders fill the next batch, so as soon as one sync returns the next batch is ready.
//! - **The publisher** (one OS thread, [`publish`]) makes each synced batch visible (index,
//!   head watch) and only then answers its callers, in the syncer's order. `Ok` means the
//!   events are on disk: there is no relaxed mode. When nothing waits to be synced and the
//!   publisher is idle, the syncer publishes the batch itself (one thread hand-off less for a
//!   lone caller).
//!
//! Only one batch is ever written and not yet synced, the one the syncer holds: the next batch
//! is in memory until the syncer takes it, which it does only after the previous `fdatasync`
//! returned. So a crash damages at most the last batch of the log, which is what recovery
//! assumes (the first record of each batch carries the batch-start mark; see `scan`).
//!
//! Batches are written in place over zeros the syncer wrote ahead of them (see `segment`), so
//! their `fdatasync` flushes data only, without a journal commit for a new file size. The
//! zeros are added in chunks that double from [`ZERO_AHEAD_MIN`] to [`ZERO_AHEAD_MAX`]; the
//! batch that needs a new chunk writes it first and its `fdatasync` carries both.
//!
//! After a failed write or sync the store stops accepting appends (the page cache can no
//! longer be trusted to match the disk); the failed batch and every batch queued behind it are
//! answered with the error, and the syncer repairs the segment before it takes appends again
//! (`resume`, ADR 0011): meanwhile [`health`] reports the failure.
//!
//! All the syncer's I/O goes through [`SegmentIo`] (real or fault-injecting).
//!
//! The queue is a `Mutex` + `Condvar` rather than a channel because the version check, the
//! position and the place in the batch must be decided together, atomically, by the appender.

mod publish;
mod resume;
mod syncer;

pub use publish::publish;
pub use syncer::{Synced, Syncer};

use std::collections::VecDeque;
use std::sync::{Arc, MutexGuard};

use chrono::{DateTime, Utc};
use tokio::sync::oneshot;

use super::record;
use super::{Shared, SyncCompanion};
use crate::chain::EventHash;
use crate::hash::FastMap;
use crate::store::{ExpectedVersion, NewEvent, RecordedEvent, StoreError, StreamId};

/// Encoded bytes after which a batch takes no more appends (they open the next batch).
const BATCH_SOFT_LIMIT: usize = 8 << 20;
/// The first chunk of zeros written ahead of the log in a segment.
pub const ZERO_AHEAD_MIN: u64 = 64 << 10;
/// The largest chunk of zeros written ahead of the log at once: the batch that writes it waits
/// for its sync too (256 KiB: ~0.5 ms here; 4 MiB stalled one batch 5–15 ms, ADR 0007).
pub const ZERO_AHEAD_MAX: u64 = 256 << 10;
/// The longest the syncer lets a batch grow after it was idle (see `Syncer::gather`).
const GATHER_MAX: std::time::Duration = std::time::Duration::from_micros(60);
/// Gathering stops once no append arrived for this long.
const GATHER_QUIET: std::time::Duration = std::time::Duration::from_micros(10);
/// The largest single append, encoded.
pub const MAX_APPEND_BYTES: usize = 256 << 20;

/// What an appender waits for.
pub type Answer = oneshot::Receiver<Result<Vec<RecordedEvent>, StoreError>>;
type Reply = oneshot::Sender<Result<Vec<RecordedEvent>, StoreError>>;

/// The appends waiting for the disk, and what deciding a new one needs. Behind
/// `Shared::queue`.
pub struct Queue {
    /// Batches not yet taken by the syncer, oldest first; appends go to the last one.
    batches: VecDeque<Batch>,
    /// Stream versions of appends queued, being synced or not yet published: the index does
    /// not know them yet. An entry goes when the publisher has put its version in the index.
    unpublished: FastMap<StreamId, u64>,
    /// The position the next appended event gets.
    next_position: u64,
    /// The chain hash of the event before `next_position`: what the next event chains from.
    last_hash: EventHash,
    /// The time given to the last append; times never go back along the log.
    last_time: DateTime<Utc>,
    /// Why appends stopped (a failed write or sync), if they did.
    failed: Option<String>,
    /// The store is being dropped: the syncer finishes the queued batches and stops.
    closing: bool,
    /// The syncer waits for a batch (and must be woken for the next append).
    syncer_idle: bool,
    /// The syncer has stopped for good: a companion attached now would never be synced.
    syncer_gone: bool,
}

impl Queue {
    /// An empty queue whose next event gets position `next_position` and chains from
    /// `last_hash`.
    pub fn new(next_position: u64, last_hash: EventHash) -> Self {
        Self {
            batches: VecDeque::new(),
            unpublished: FastMap::default(),
            next_position,
            last_hash,
            last_time: DateTime::<Utc>::MIN_UTC,
            failed: None,
            closing: false,
            syncer_idle: false,
            syncer_gone: false,
        }
    }

    /// The batch an append of `bytes` goes to: the open one, or a new one if it is full.
    fn open_batch(&mut self, bytes: usize) -> &mut Batch {
        if self
            .batches
            .back()
            .is_none_or(|b| !b.buf.is_empty() && b.buf.len() + bytes > BATCH_SOFT_LIMIT)
        {
            self.batches.push_back(Batch::default());
        }
        self.batches.back_mut().expect("a batch was just ensured")
    }

    /// The commit time of the next append: now, truncated to what a record stores, and never
    /// before the previous append's.
    fn now(&mut self) -> DateTime<Utc> {
        self.last_time = to_micros(Utc::now()).max(self.last_time);
        self.last_time
    }
}

/// Encoded appends written together with one `write` and one `fdatasync`.
#[derive(Default)]
struct Batch {
    /// The frames, back to back; the first carries the batch-start mark.
    buf: Vec<u8>,
    /// Where each event's frame starts in `buf`, in position order.
    offsets: Vec<usize>,
    /// Each append's caller and the events it will be answered with.
    appends: Vec<(Reply, Vec<RecordedEvent>)>,
}

impl Batch {
    fn events(&self) -> impl Iterator<Item = &RecordedEvent> {
        self.appends.iter().flat_map(|(_, events)| events)
    }
}

/// Checks and queues one append; the returned [`Answer`] comes once it is durable (or failed).
/// Fails at once with [`StoreError::Conflict`] if `expected` does not match, with
/// [`StoreError::InvalidArgument`] if an event is empty-handed or too large, and with
/// [`StoreError::Unavailable`] once appends have stopped.
pub fn submit(
    shared: &Shared,
    stream: &StreamId,
    expected: ExpectedVersion,
    events: Vec<NewEvent>,
) -> Result<Answer, StoreError> {
    // The JSON encoding and size checks run here, on the appender, outside the lock.
    crate::store::ensure_events(&events)?;
    let tails = events
        .iter()
        .map(|e| record::Tail::new(stream.as_str(), &e.event_type, &e.metadata, &e.payload))
        .collect::<Result<Vec<_>, _>>()
        .map_err(StoreError::InvalidArgument)?;
    let contents: Vec<EventHash> = tails.iter().map(record::Tail::content).collect();
    let bytes: usize = tails.iter().map(record::Tail::frame_len).sum();
    if bytes > MAX_APPEND_BYTES {
        return Err(StoreError::InvalidArgument(format!(
            "the append is larger than {MAX_APPEND_BYTES} bytes"
        )));
    }

    let mut guard = shared.lock_queue();
    let queue = &mut *guard;
    if let Some(why) = &queue.failed {
        return Err(stopped(why));
    }
    if queue.closing {
        return Err(gone());
    }
    let actual = match queue.unpublished.get(stream) {
        Some(&version) => version,
        None => shared.read_index().version(stream.as_str()),
    };
    if !expected.matches(actual) {
        return Err(StoreError::Conflict {
            stream: stream.clone(),
            expected,
            actual,
        });
    }
    let now = queue.now();
    let first = queue.next_position;
    let n = events.len();
    let mut previous = queue.last_hash;
    let batch = queue.open_batch(bytes);
    let mut recorded = Vec::with_capacity(n);
    for (i, ((event, tail), content)) in events.into_iter().zip(&tails).zip(&contents).enumerate() {
        let k = i as u64;
        let mut e = RecordedEvent::record(stream.clone(), actual + 1 + k, first + k, now, event);
        e.created_at = to_micros(e.created_at);
        e.hash = crate::chain::link(&previous, &e.coordinates(), content);
        previous = e.hash;
        let fixed = record::Fixed {
            hash: e.hash,
            position: e.position,
            sequence: e.sequence,
            created_at_micros: e.created_at.timestamp_micros(),
            event_id: e.event_id,
            revision: e.revision,
            marks: record::Marks {
                ends_append: i + 1 == n,
                starts_batch: batch.buf.is_empty(),
            },
        };
        batch.offsets.push(batch.buf.len());
        record::encode_parts(&fixed, tail, &mut batch.buf);
        recorded.push(e);
    }
    let (reply, answer) = oneshot::channel();
    batch.appends.push((reply, recorded));
    queue.next_position += n as u64;
    queue.last_hash = previous;
    queue.unpublished.insert(stream.clone(), actual + n as u64);
    let wake = std::mem::take(&mut queue.syncer_idle);
    drop(guard);
    if wake {
        shared.ready.notify_one();
    }
    Ok(answer)
}

/// Attaches the companion the syncer syncs before each batch (see [`SyncCompanion`]): under
/// the queue lock, so either the syncer's exit sees it (and detaches it) or this sees the
/// syncer gone.
pub fn attach(shared: &Shared, companion: Arc<dyn SyncCompanion>) -> Result<(), StoreError> {
    let queue = shared.lock_queue();
    if queue.syncer_gone || queue.closing {
        return Err(gone());
    }
    shared.companion.set(companion).map_err(|_| {
        StoreError::InvalidArgument("the file store has a sync companion already".into())
    })?;
    drop(queue);
    Ok(())
}

/// Tells the syncer to finish the queued batches and stop (the store is being dropped).
pub fn close(shared: &Shared) {
    shared.lock_queue().closing = true;
    shared.ready.notify_all();
}

/// A time truncated to whole microseconds (imported events may carry finer times).
fn to_micros(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t)
}

fn stopped(why: &str) -> StoreError {
    StoreError::Unavailable {
        message: format!("the file store is not accepting appends: {why}"),
        source: None,
    }
}

/// Whether the store takes appends now: the failure that stopped them, while it lasts.
pub fn health(shared: &Shared) -> Result<(), StoreError> {
    let queue = shared.lock_queue();
    match (&queue.failed, queue.closing) {
        (Some(why), _) => Err(stopped(why)),
        (None, true) => Err(gone()),
        (None, false) => Ok(()),
    }
}

/// The error of an append that finds the store closing.
pub fn gone() -> StoreError {
    StoreError::Unavailable {
        message: "the file store's writer has stopped".into(),
        source: None,
    }
}

/// Guards the queue; a poisoned lock still holds a consistent queue (nothing in it panics
/// half-way through a change).
pub fn lock(queue: &std::sync::Mutex<Queue>) -> MutexGuard<'_, Queue> {
    queue.lock().unwrap_or_else(|e| e.into_inner())
}
