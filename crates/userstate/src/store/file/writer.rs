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

mod resume;

use std::collections::VecDeque;
use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, MutexGuard};
use std::time::Instant;

use chrono::{DateTime, Utc};
use tokio::sync::oneshot;
use tracing::{debug, error};

use super::index::Segment;
use super::io::{write_all_at, SegmentFile, SegmentIo};
use super::manifest;
use super::record;
use super::recovery::LastSegment;
use super::segment::{self, SEGMENT_HEADER_LEN};
use super::Shared;
use crate::hash::FastMap;
use crate::store::{ExpectedVersion, NewEvent, RecordedEvent, StoreError, StreamId};

/// Encoded bytes after which a batch takes no more appends (they open the next batch).
const BATCH_SOFT_LIMIT: usize = 8 << 20;
/// The first chunk of zeros written ahead of the log in a segment.
pub const ZERO_AHEAD_MIN: u64 = 64 << 10;
/// The largest chunk of zeros written ahead of the log at once (its write stalls one batch).
pub const ZERO_AHEAD_MAX: u64 = 4 << 20;
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
    /// The time given to the last append; times never go back along the log.
    last_time: DateTime<Utc>,
    /// Why appends stopped (a failed write or sync), if they did.
    failed: Option<String>,
    /// The store is being dropped: the syncer finishes the queued batches and stops.
    closing: bool,
    /// The syncer waits for a batch (and must be woken for the next append).
    syncer_idle: bool,
}

impl Queue {
    /// An empty queue whose next event gets position `next_position`.
    pub fn new(next_position: u64) -> Self {
        Self {
            batches: VecDeque::new(),
            unpublished: FastMap::default(),
            next_position,
            last_time: DateTime::<Utc>::MIN_UTC,
            failed: None,
            closing: false,
            syncer_idle: false,
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
    let batch = queue.open_batch(bytes);
    let mut recorded = Vec::with_capacity(n);
    for (i, (event, tail)) in events.into_iter().zip(&tails).enumerate() {
        let k = i as u64;
        let mut e = RecordedEvent::record(stream.clone(), actual + 1 + k, first + k, now, event);
        e.created_at = to_micros(e.created_at);
        let fixed = record::Fixed {
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
    queue.unpublished.insert(stream.clone(), actual + n as u64);
    let wake = std::mem::take(&mut queue.syncer_idle);
    drop(guard);
    if wake {
        shared.ready.notify_one();
    }
    Ok(answer)
}

/// Tells the syncer to finish the queued batches and stop (the store is being dropped).
pub fn close(shared: &Shared) {
    shared.lock_queue().closing = true;
    shared.ready.notify_all();
}

/// A batch the syncer is done with, for the publisher.
pub struct Synced {
    batch: Batch,
    outcome: Result<Placed, String>,
}

/// Where a durable batch landed.
struct Placed {
    /// The segment the syncer started for this batch, if it rotated.
    new_segment: Option<Segment>,
    /// The batch's offset in the last segment.
    base: u64,
    /// The last segment's records end here after the batch.
    len: u64,
}

/// The syncer's state; owned by its thread.
pub struct Syncer {
    shared: Arc<Shared>,
    dir: PathBuf,
    io: Arc<dyn SegmentIo>,
    /// The segment being written: its handle, path and first position.
    file: Box<dyn SegmentFile>,
    path: PathBuf,
    first: u64,
    /// Bytes of the segment holding durable records (the log ends here).
    len: u64,
    /// Bytes of the segment file: records, then zeros up to here.
    allocated: u64,
    segment_size: u64,
    /// Appends in the batch synced last.
    last_appends: usize,
    /// The last position synced.
    synced_head: u64,
    /// First positions of the segments, as the manifest lists them.
    segments: Vec<u64>,
    /// A segment this syncer started that no durable batch has reached yet: the index learns
    /// of it with the first batch synced there.
    unannounced: Option<Segment>,
    /// A rotation began and the manifest may not match `segments`.
    manifest_stale: bool,
}

impl Syncer {
    /// A syncer appending to `last` (opened through `io`), with the log synced up to `head`
    /// and the manifest listing `segments`.
    pub fn new(
        shared: Arc<Shared>,
        dir: PathBuf,
        io: Arc<dyn SegmentIo>,
        last: LastSegment,
        segments: Vec<u64>,
        segment_size: u64,
    ) -> Result<Self, StoreError> {
        let file = io.open(&last.path)?;
        let synced_head = shared.read_index().head();
        Ok(Self {
            shared,
            dir,
            io,
            file,
            path: last.path,
            first: last.first,
            len: last.len,
            allocated: last.allocated.max(last.len),
            segment_size,
            last_appends: 0,
            synced_head,
            segments,
            unannounced: None,
            manifest_stale: false,
        })
    }

    /// Writes and syncs batches until the store closes, handing each to the publisher.
    pub fn run(mut self, publisher: Sender<Synced>) {
        let _stopped = StopAppendsOnExit(self.shared.clone());
        while let Some(batch) = self.next_batch() {
            self.last_appends = batch.appends.len();
            let started = Instant::now();
            let outcome = self.write(&batch).map_err(|e| e.to_string());
            debug!(
                requests = batch.appends.len(),
                bytes = batch.buf.len(),
                elapsed_us = started.elapsed().as_micros() as u64,
                "batch committed"
            );
            let hand_over = |batch, outcome| {
                self.shared.publishing.fetch_add(1, Ordering::Relaxed);
                let _ = publisher.send(Synced { batch, outcome });
            };
            if let Err(why) = &outcome {
                error!(error = %why,
                    "file store write failed; appends stop until the segment is repaired");
                let queued = {
                    let mut queue = self.shared.lock_queue();
                    queue.failed = Some(format!(
                        "a write failed ({why}); appends resume once the syncer has repaired \
                         the segment"
                    ));
                    std::mem::take(&mut queue.batches)
                };
                for batch in std::iter::once(batch).chain(queued) {
                    hand_over(batch, Err(why.clone()));
                }
                if !self.resume() {
                    return;
                }
                continue;
            }
            // With nothing to sync next and the publisher idle, publishing here saves the
            // callers a thread hand-off; otherwise the next sync must not wait for it.
            let idle = self.shared.publishing.load(Ordering::Acquire) == 0
                && self.shared.lock_queue().batches.is_empty();
            if idle {
                publish_one(&self.shared, Synced { batch, outcome });
            } else {
                hand_over(batch, outcome);
            }
        }
    }

    /// Waits for the next batch; `None` once the store closes and nothing is queued.
    fn next_batch(&self) -> Option<Batch> {
        let mut queue = self.shared.lock_queue();
        let mut waited = false;
        loop {
            if !queue.batches.is_empty() {
                if waited && self.last_appends > 1 {
                    queue = self.gather(queue);
                }
                return queue.batches.pop_front();
            }
            if queue.closing {
                return None;
            }
            queue.syncer_idle = true;
            waited = true;
            queue = self
                .shared
                .ready
                .wait(queue)
                .unwrap_or_else(|e| e.into_inner());
        }
    }

    /// After the syncer was idle, the append that woke it is usually the first of several
    /// callers coming back from their previous answers: let the batch grow while appends keep
    /// arriving (at most [`GATHER_MAX`], stopping after [`GATHER_QUIET`] without a new one).
    /// Only when the previous batch had several appends: a lone caller would only wait.
    /// Measured in docs/PERFORMANCE.md (session 3): +15 % at 8 callers, +5 % at 64; without the
    /// "several appends" condition, -15 % for one caller.
    fn gather<'a>(&'a self, mut queue: MutexGuard<'a, Queue>) -> MutexGuard<'a, Queue> {
        let started = Instant::now();
        let mut seen = queue.batches.front().map_or(0, |b| b.appends.len());
        let mut grew = started;
        loop {
            drop(queue);
            std::thread::yield_now();
            queue = self.shared.lock_queue();
            let now = Instant::now();
            let len = queue.batches.front().map_or(0, |b| b.appends.len());
            if len > seen {
                seen = len;
                grew = now;
            }
            if queue.closing || now - started >= GATHER_MAX || now - grew >= GATHER_QUIET {
                return queue;
            }
        }
    }

    /// Rotates if due, writes the batch where the records end, and syncs it.
    fn write(&mut self, batch: &Batch) -> Result<Placed, StoreError> {
        let bytes = batch.buf.len() as u64;
        if self.len > SEGMENT_HEADER_LEN && self.len + bytes > self.segment_size {
            let first = batch.events().next().map_or(0, |e| e.position);
            self.unannounced = Some(self.rotate(first)?);
        }
        let base = self.len;
        if base + bytes > u64::from(u32::MAX) {
            return Err(StoreError::InvalidArgument(
                "the batch does not fit in one segment's 32-bit offsets".into(),
            ));
        }
        self.zero_ahead(base + bytes)?;
        write_all_at(&*self.file, &batch.buf, base)?;
        self.file.sync_data()?;
        self.len += bytes;
        if let Some(last) = batch.events().last() {
            self.synced_head = last.position;
        }
        Ok(Placed {
            new_segment: self.unannounced.take(),
            base,
            len: self.len,
        })
    }

    /// Makes sure the segment file reaches `end` (zeros beyond the records), writing the next
    /// chunk of zeros if it does not. Not synced here: the batch's `fdatasync` covers it.
    fn zero_ahead(&mut self, end: u64) -> std::io::Result<()> {
        if end <= self.allocated {
            return Ok(());
        }
        let chunk = self
            .allocated
            .next_power_of_two()
            .clamp(ZERO_AHEAD_MIN, ZERO_AHEAD_MAX);
        let target = (end + chunk).min(self.segment_size).max(end);
        let started = Instant::now();
        segment::write_zeros(&*self.file, self.allocated, target)?;
        debug!(
            from = self.allocated,
            to = target,
            elapsed_us = started.elapsed().as_micros() as u64,
            "zeros written ahead of the log"
        );
        self.allocated = target;
        Ok(())
    }

    /// Seals the current segment (cut to its last record, synced), starts a new one whose
    /// first record is at position `first`, and lists it in the manifest. The index learns of
    /// it from the publisher, with the first batch synced there.
    fn rotate(&mut self, first: u64) -> Result<Segment, StoreError> {
        if self.allocated > self.len {
            self.file.set_len(self.len)?;
            self.file.sync_all()?;
            self.allocated = self.len;
        }
        self.manifest_stale = true;
        let (path, file) = segment::create(&*self.io, &self.dir, first)?;
        let mut segments = self.segments.clone();
        segments.push(first);
        manifest::write(&*self.io, &self.dir, &segments)?;
        self.segments = segments;
        self.manifest_stale = false;
        let reader = File::open(&path)?;
        debug!(segment = %path.display(), "new segment");
        self.file = file;
        self.path = path.clone();
        self.first = first;
        self.len = SEGMENT_HEADER_LEN;
        self.allocated = SEGMENT_HEADER_LEN;
        Ok(Segment {
            first,
            path,
            file: Arc::new(reader),
            len: SEGMENT_HEADER_LEN,
        })
    }
}

/// Makes appends fail instead of waiting forever once the syncer is gone, whichever way it
/// left (a closed store, a write failure, or a bug's panic): queued batches are dropped, so
/// their callers get [`gone`], and later appends are refused.
struct StopAppendsOnExit(Arc<Shared>);

impl Drop for StopAppendsOnExit {
    fn drop(&mut self) {
        let dropped = {
            let mut queue = self.0.lock_queue();
            if queue.failed.is_none() && !queue.closing {
                queue.failed = Some("the syncer thread stopped".into());
            }
            std::mem::take(&mut queue.batches)
        };
        drop(dropped);
    }
}

/// The publisher's loop: makes each synced batch visible to readers, then answers its
/// callers, in the order the syncer wrote them. Ends when the syncer has stopped.
pub fn publish(shared: Arc<Shared>, synced: Receiver<Synced>) {
    for batch in synced {
        publish_one(&shared, batch);
        shared.publishing.fetch_sub(1, Ordering::Release);
    }
}

/// Makes one synced batch visible (index, head watch), then answers its callers.
fn publish_one(shared: &Shared, Synced { batch, outcome }: Synced) {
    let placed = match outcome {
        Ok(placed) => placed,
        Err(why) => {
            for (reply, _) in batch.appends {
                let error = StoreError::Io(std::io::Error::other(why.clone()));
                let _ = reply.send(Err(error));
            }
            return;
        }
    };
    let mut index = shared.write_index();
    if let Some(segment) = placed.new_segment {
        index.add_segment(segment);
    }
    for (event, &rel) in batch.events().zip(&batch.offsets) {
        // `Syncer::write` checked that every offset of the batch fits in 32 bits.
        let offset = u32::try_from(placed.base + rel as u64).unwrap_or(u32::MAX);
        index.push(event.stream.as_str(), offset);
    }
    index.set_last_len(placed.len);
    let head = index.head();
    drop(index);
    shared.head.advance(head);
    {
        let mut queue = shared.lock_queue();
        for (_, events) in &batch.appends {
            let Some(last) = events.last() else { continue };
            if queue.unpublished.get(&last.stream) == Some(&last.sequence) {
                queue.unpublished.remove(&last.stream);
            }
        }
    }
    for (reply, events) in batch.appends {
        let _ = reply.send(Ok(events));
    }
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
