//! The syncer: one OS thread that takes the whole open batch, writes it with one positional
//! `write`, calls `fdatasync` once, and hands it to the publisher (see the parent module).

use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Sender;
use std::sync::{Arc, MutexGuard};
use std::time::Instant;

use tracing::{debug, error};

use super::publish::publish_one;
use super::*; // the queue, its batches and helpers (`writer.rs`)
use crate::store::file::index::Segment;
use crate::store::file::io::{write_all_at, SegmentFile, SegmentIo};
use crate::store::file::manifest;
use crate::store::file::recovery::LastSegment;
use crate::store::file::segment::{self, SEGMENT_HEADER_LEN};
use crate::store::file::Shared;
use crate::store::StoreError;

/// A batch the syncer is done with, for the publisher.
pub struct Synced {
    pub(super) batch: Batch,
    pub(super) outcome: Result<Placed, String>,
}

/// Where a durable batch landed.
pub(super) struct Placed {
    /// The segment the syncer started for this batch, if it rotated.
    pub(super) new_segment: Option<Segment>,
    /// The batch's offset in the last segment.
    pub(super) base: u64,
    /// The last segment's records end here after the batch.
    pub(super) len: u64,
}

/// The syncer's state; owned by its thread.
pub struct Syncer {
    pub(super) shared: Arc<Shared>,
    pub(super) dir: PathBuf,
    pub(super) io: Arc<dyn SegmentIo>,
    /// The segment being written: its handle, path and first position.
    pub(super) file: Box<dyn SegmentFile>,
    pub(super) path: PathBuf,
    pub(super) first: u64,
    /// Bytes of the segment holding durable records (the log ends here).
    pub(super) len: u64,
    /// Bytes of the segment file: records, then zeros up to here.
    pub(super) allocated: u64,
    pub(super) segment_size: u64,
    /// Appends in the batch synced last.
    pub(super) last_appends: usize,
    /// The last position synced.
    pub(super) synced_head: u64,
    /// First positions of the segments, as the manifest lists them.
    pub(super) segments: Vec<u64>,
    /// A segment this syncer started that no durable batch has reached yet: the index learns
    /// of it with the first batch synced there.
    pub(super) unannounced: Option<Segment>,
    /// A rotation began and the manifest may not match `segments`.
    pub(super) manifest_stale: bool,
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

    /// Syncs the companion (if any), rotates if due, writes the batch where the records end,
    /// and syncs it.
    fn write(&mut self, batch: &Batch) -> Result<Placed, StoreError> {
        // What the batch's events depend on beside the log (the keys they are sealed with,
        // written before their appends were queued) is durable before any of them can be on
        // disk (ADR 0021). A failure fails the batch before the log is touched.
        if let Some(companion) = self.shared.companion.get() {
            companion.sync()?;
        }
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
            queue.syncer_gone = true;
            std::mem::take(&mut queue.batches)
        };
        drop(dropped);
        if let Some(companion) = self.0.companion.get() {
            companion.detached();
        }
    }
}
