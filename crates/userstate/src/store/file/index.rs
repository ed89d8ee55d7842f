//! The in-memory index: where each durable record lives and which positions each stream holds.
//!
//! Built on open by [`recovery`](super::recovery), extended by the writer after each durable
//! batch, read by every reader under a short read lock. It holds only numbers and stream names,
//! never event bodies: 4 bytes per event for its offset and 8 per event in its stream's list.

use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;

use crate::hash::FastMap;

/// One segment file as the index knows it.
pub struct Segment {
    /// Position of its first record.
    pub first: u64,
    /// Its path, for error messages.
    pub path: PathBuf,
    /// A read handle for positional reads.
    pub file: Arc<File>,
    /// Bytes known durable (header included).
    pub len: u64,
}

/// A contiguous byte range of one segment holding records `first..first + count`.
pub struct Span {
    /// The segment's read handle.
    pub file: Arc<File>,
    /// The segment's path.
    pub path: PathBuf,
    /// Byte range in the segment.
    pub start: u64,
    /// End of the byte range (exclusive).
    pub end: u64,
    /// Position of the first record in the range.
    pub first: u64,
    /// Number of records in the range.
    pub count: u64,
}

/// Streams and offsets of every durable record.
#[derive(Default)]
pub struct Index {
    /// Per stream, the positions of its events in sequence order (`len` = its version).
    streams: FastMap<Box<str>, Vec<u64>>,
    /// `offsets[p - 1]` is the byte offset of position `p` in its segment.
    offsets: Vec<u32>,
    /// Segments in position order; the last one is the one being written.
    segments: Vec<Segment>,
}

impl Index {
    /// The last durable position (0: empty).
    pub fn head(&self) -> u64 {
        self.offsets.len() as u64
    }

    /// The stream's last sequence (0: no events).
    pub fn version(&self, stream: &str) -> u64 {
        self.streams.get(stream).map_or(0, |p| p.len() as u64)
    }

    /// Records that position `head + 1` (of `stream`) sits at `offset` in the last segment.
    pub fn push(&mut self, stream: &str, offset: u32) {
        let position = self.head() + 1;
        self.offsets.push(offset);
        match self.streams.get_mut(stream) {
            Some(positions) => positions.push(position),
            None => {
                self.streams.insert(stream.into(), vec![position]);
            }
        }
    }

    /// Like [`push`](Self::push), but only if `sequence` is the stream's next one; otherwise
    /// returns the sequence that was due. One map lookup: the open-time scan's hot path.
    pub fn push_checked(&mut self, stream: &str, offset: u32, sequence: u64) -> Result<(), u64> {
        let position = self.head() + 1;
        match self.streams.get_mut(stream) {
            Some(positions) if positions.len() as u64 + 1 == sequence => positions.push(position),
            Some(positions) => return Err(positions.len() as u64 + 1),
            None if sequence == 1 => {
                self.streams.insert(stream.into(), vec![position]);
            }
            None => return Err(1),
        }
        self.offsets.push(offset);
        Ok(())
    }

    /// Takes back the last `count` pushes, all of them to `stream` (a torn append).
    pub fn pop(&mut self, stream: &str, count: usize) {
        let keep = self.offsets.len().saturating_sub(count);
        self.offsets.truncate(keep);
        if let Some(positions) = self.streams.get_mut(stream) {
            positions.truncate(positions.len().saturating_sub(count));
            if positions.is_empty() {
                self.streams.remove(stream);
            }
        }
    }

    /// Adds a new (last) segment.
    pub fn add_segment(&mut self, segment: Segment) {
        self.segments.push(segment);
    }

    /// Sets the durable length of the last segment.
    pub fn set_last_len(&mut self, len: u64) {
        if let Some(last) = self.segments.last_mut() {
            last.len = len;
        }
    }

    /// The positions of `stream`'s events with `sequence >= from_sequence`.
    pub fn stream_positions(&self, stream: &str, from_sequence: u64) -> Vec<u64> {
        let Some(positions) = self.streams.get(stream) else {
            return Vec::new();
        };
        let skip = from_sequence.saturating_sub(1).min(positions.len() as u64) as usize;
        positions[skip..].to_vec()
    }

    /// The byte ranges holding `positions` (ascending, each `<= head`), merging neighbours.
    pub fn spans(&self, positions: &[u64]) -> Vec<Span> {
        let mut spans: Vec<Span> = Vec::new();
        let mut seg_idx = 0;
        for &p in positions {
            if p == 0 || p > self.head() {
                continue;
            }
            if self.segments.get(seg_idx).is_none_or(|s| s.first > p)
                || self.segments.get(seg_idx + 1).is_some_and(|s| s.first <= p)
            {
                seg_idx = self
                    .segments
                    .partition_point(|s| s.first <= p)
                    .saturating_sub(1);
            }
            let Some(seg) = self.segments.get(seg_idx) else {
                continue;
            };
            let next_first = self.segments.get(seg_idx + 1).map(|s| s.first);
            let start = u64::from(self.offsets[(p - 1) as usize]);
            let end = if p < self.head() && next_first.is_none_or(|n| p + 1 < n) {
                u64::from(self.offsets[p as usize])
            } else {
                seg.len
            };
            if let Some(last) = spans.last_mut() {
                if last.first + last.count == p
                    && last.end == start
                    && Arc::ptr_eq(&last.file, &seg.file)
                {
                    last.end = end;
                    last.count += 1;
                    continue;
                }
            }
            spans.push(Span {
                file: seg.file.clone(),
                path: seg.path.clone(),
                start,
                end,
                first: p,
                count: 1,
            });
        }
        spans
    }

    /// Number of streams.
    pub fn stream_count(&self) -> usize {
        self.streams.len()
    }

    /// Number of segments.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }
}
