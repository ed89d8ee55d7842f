//! The single writer and its group commit.
//!
//! Every `append` becomes a [`Request`] on a channel to one OS thread. The thread takes
//! everything pending, checks each request's expected version against the index plus the
//! requests accepted earlier in the same batch, encodes the accepted ones into one buffer,
//! issues one `write` and one `fdatasync` ([`File::sync_data`]), publishes the batch to the
//! index and the head watch, and only then answers every caller. A conflict fails only its own
//! caller. There is no relaxed mode: an answer `Ok` means the events are on disk.
//!
//! The batch is written in place over zeros the writer wrote ahead of it (see `segment`), so
//! its `fdatasync` flushes data only, without a journal commit for a new file size. The zeros
//! are added in chunks that double from [`ZERO_AHEAD_MIN`] to [`ZERO_AHEAD_MAX`]; the batch that
//! needs a new chunk writes it first and its `fdatasync` carries both. The first record of each
//! batch carries the batch-start mark, which recovery uses to find the end of the log.
//!
//! After a failed write or sync the writer stops accepting appends (the page cache can no
//! longer be trusted to match the disk); reopening the store recovers whatever reached the disk.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use tokio::sync::oneshot;
use tracing::{debug, error};

use super::index::Segment;
use super::record;
use super::segment::{self, SEGMENT_HEADER_LEN};
use super::Shared;
use crate::store::{ExpectedVersion, NewEvent, RecordedEvent, StoreError, StreamId};

/// Encoded bytes after which a batch takes no more requests (the rest wait for the next one).
const BATCH_SOFT_LIMIT: usize = 8 << 20;
/// The first chunk of zeros written ahead of the log in a segment.
pub const ZERO_AHEAD_MIN: u64 = 64 << 10;
/// The largest chunk of zeros written ahead of the log at once (its write stalls one batch).
pub const ZERO_AHEAD_MAX: u64 = 4 << 20;
/// The largest single append, encoded.
pub const MAX_APPEND_BYTES: usize = 256 << 20;

/// The answer to one append.
pub type Reply = oneshot::Sender<Result<Vec<RecordedEvent>, StoreError>>;

/// One caller's append, queued for the writer.
pub struct Request {
    /// The stream appended to.
    pub stream: StreamId,
    /// What the caller expects the stream's version to be.
    pub expected: ExpectedVersion,
    /// The events, at least one.
    pub events: Vec<NewEvent>,
    /// Their encoded variable parts, one per event (see [`Request::new`]).
    pub tails: Vec<record::Tail>,
    /// Where the answer goes.
    pub reply: Reply,
}

impl Request {
    /// A request for `events`, whose variable parts are encoded here, on the caller's thread.
    /// Fails with [`StoreError::InvalidArgument`] if an event is empty-handed or too large.
    pub fn new(
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        reply: Reply,
    ) -> Result<Request, StoreError> {
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
        Ok(Request {
            stream: stream.clone(),
            expected,
            events,
            tails,
            reply,
        })
    }
}

/// The writer's state; owned by its thread.
pub struct Writer {
    shared: Arc<Shared>,
    dir: PathBuf,
    file: File,
    /// Bytes of the segment holding records (the log ends here).
    len: u64,
    /// Bytes of the segment file: records, then zeros up to here.
    allocated: u64,
    segment_size: u64,
    buf: Vec<u8>,
    failed: Option<String>,
}

impl Writer {
    /// A writer appending to the open last segment `file`, whose records end at `len` and
    /// whose file (zeros after the records) ends at `allocated`.
    pub fn new(
        shared: Arc<Shared>,
        dir: PathBuf,
        file: File,
        (len, allocated): (u64, u64),
        segment_size: u64,
    ) -> Self {
        Self {
            shared,
            dir,
            file,
            len,
            allocated: allocated.max(len),
            segment_size,
            buf: Vec::new(),
            failed: None,
        }
    }

    /// Serves requests until every sender is gone and nothing is pending.
    pub fn run(mut self, rx: Receiver<Request>) {
        let mut pending = VecDeque::new();
        loop {
            if pending.is_empty() {
                match rx.recv() {
                    Ok(r) => pending.push_back(r),
                    Err(_) => return,
                }
            }
            while let Ok(r) = rx.try_recv() {
                pending.push_back(r);
            }
            self.commit(&mut pending);
        }
    }

    /// Commits as many pending requests as fit in one batch.
    fn commit(&mut self, pending: &mut VecDeque<Request>) {
        if let Some(why) = &self.failed {
            for r in pending.drain(..) {
                let _ = r.reply.send(Err(stopped(why)));
            }
            return;
        }
        let now = commit_time();
        self.buf.clear();
        let mut answers: Vec<(Reply, Result<Vec<RecordedEvent>, StoreError>)> = Vec::new();
        let mut offsets: Vec<usize> = Vec::new();
        let mut overlay: HashMap<StreamId, u64> = HashMap::new();
        let mut next;
        {
            let shared = self.shared.clone();
            let index = shared.read_index();
            next = index.head() + 1;
            while self.buf.len() < BATCH_SOFT_LIMIT {
                let Some(mut req) = pending.pop_front() else {
                    break;
                };
                let actual = overlay
                    .get(&req.stream)
                    .copied()
                    .unwrap_or_else(|| index.version(req.stream.as_str()));
                let result = self.encode(&mut req, actual, next, now, &mut offsets);
                if let Ok(recorded) = &result {
                    next += recorded.len() as u64;
                    overlay.insert(req.stream.clone(), actual + recorded.len() as u64);
                }
                answers.push((req.reply, result));
            }
        }
        if !self.buf.is_empty() {
            if let Err(e) = self.write_batch(&answers, &offsets, next - 1) {
                let why = e.to_string();
                error!(error = %why, "file store write failed; appends stop until reopened");
                for (_, result) in &mut answers {
                    if result.is_ok() {
                        *result = Err(StoreError::Io(std::io::Error::other(why.clone())));
                    }
                }
                self.failed = Some(why);
            }
        }
        debug!(
            requests = answers.len(),
            bytes = self.buf.len(),
            "batch committed"
        );
        for (reply, result) in answers {
            let _ = reply.send(result);
        }
    }

    /// Checks one request's expected version and encodes it into the batch buffer, or
    /// explains why not.
    fn encode(
        &mut self,
        req: &mut Request,
        actual: u64,
        first_position: u64,
        now: DateTime<Utc>,
        offsets: &mut Vec<usize>,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        if !req.expected.matches(actual) {
            return Err(StoreError::Conflict {
                stream: req.stream.clone(),
                expected: req.expected,
                actual,
            });
        }
        let events = std::mem::take(&mut req.events);
        let n = events.len();
        let mut recorded = Vec::with_capacity(n);
        for (i, (event, tail)) in events.into_iter().zip(&req.tails).enumerate() {
            let k = i as u64;
            let mut e = RecordedEvent::record(
                req.stream.clone(),
                actual + 1 + k,
                first_position + k,
                now,
                event,
            );
            e.created_at = to_micros(e.created_at);
            let fixed = record::Fixed {
                position: e.position,
                sequence: e.sequence,
                created_at_micros: e.created_at.timestamp_micros(),
                event_id: e.event_id,
                revision: e.revision,
                marks: record::Marks {
                    ends_append: i + 1 == n,
                    starts_batch: offsets.is_empty(),
                },
            };
            offsets.push(self.buf.len());
            record::encode_parts(&fixed, tail, &mut self.buf);
            recorded.push(e);
        }
        Ok(recorded)
    }

    /// Rotates if due, writes and syncs the batch, then publishes it to readers.
    fn write_batch(
        &mut self,
        answers: &[(Reply, Result<Vec<RecordedEvent>, StoreError>)],
        offsets: &[usize],
        new_head: u64,
    ) -> Result<(), StoreError> {
        if self.len > SEGMENT_HEADER_LEN && self.len + self.buf.len() as u64 > self.segment_size {
            self.rotate(new_head + 1 - offsets.len() as u64)?;
        }
        let base = self.len;
        self.zero_ahead(base + self.buf.len() as u64)?;
        self.file.write_all_at(&self.buf, base)?;
        self.file.sync_data()?;
        self.len += self.buf.len() as u64;
        let mut index = self.shared.write_index();
        let recorded = answers
            .iter()
            .filter_map(|(_, r)| r.as_ref().ok())
            .flatten();
        for (event, &rel) in recorded.zip(offsets) {
            let offset = u32::try_from(base + rel as u64)
                .map_err(|_| StoreError::InvalidArgument("segment offset overflow".into()))?;
            index.push(event.stream.as_str(), offset);
        }
        index.set_last_len(self.len);
        drop(index);
        self.shared.head.send_replace(new_head);
        Ok(())
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
        segment::write_zeros(&self.file, self.allocated, target)?;
        debug!(
            from = self.allocated,
            to = target,
            elapsed_us = started.elapsed().as_micros() as u64,
            "zeros written ahead of the log"
        );
        self.allocated = target;
        Ok(())
    }

    /// Seals the current segment (cut to its last record, synced) and starts a new one whose
    /// first record is `first`.
    fn rotate(&mut self, first: u64) -> Result<(), StoreError> {
        if self.allocated > self.len {
            self.file.set_len(self.len)?;
            self.file.sync_all()?;
        }
        let (path, file) = segment::create(&self.dir, first)?;
        let reader = File::open(&path)?;
        debug!(segment = %path.display(), "new segment");
        self.shared.write_index().add_segment(Segment {
            first,
            path,
            file: Arc::new(reader),
            len: SEGMENT_HEADER_LEN,
        });
        self.file = file;
        self.len = SEGMENT_HEADER_LEN;
        self.allocated = SEGMENT_HEADER_LEN;
        Ok(())
    }
}

/// The batch's commit time, truncated to what a record stores (microseconds), so the time a
/// caller gets back equals the time later read.
fn commit_time() -> DateTime<Utc> {
    to_micros(Utc::now())
}

/// A time truncated to whole microseconds (imported events may carry finer times).
fn to_micros(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t)
}

fn stopped(why: &str) -> StoreError {
    StoreError::Unavailable {
        message: format!(
            "the file store stopped accepting appends after a write failure ({why}); reopen it"
        ),
        source: None,
    }
}
