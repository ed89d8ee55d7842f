//! The in-memory index: where each durable record lives and which positions each stream holds.
//!
//! Built on open by [`recovery`](super::recovery), extended by the writer after each durable
//! batch, read by every reader under a short read lock. It holds only numbers and stream names,
//! never event bodies: 4 bytes per event for its offset, 8 for the position of its stream's
//! previous event, and per stream its name, version and last position.
//!
//! A stream's positions are a chain walked back from its last event, not a list per stream: a
//! list per stream was one allocation per stream plus the slack of its growth, and at 10M events
//! in 2M streams zeroing that memory was a fifth of the open (session 6, docs/PERFORMANCE.md).

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

/// What the index keeps per stream.
#[derive(Clone, Copy)]
struct Tail {
    /// The stream's last sequence.
    version: u64,
    /// The position of its last event.
    last: u64,
}

/// Streams and offsets of every durable record.
#[derive(Default)]
pub struct Index {
    /// Per stream, its version and last position.
    streams: FastMap<Box<str>, Tail>,
    /// `offsets[p - 1]` is the byte offset of position `p` in its segment.
    offsets: Vec<u32>,
    /// `previous[p - 1]` is the position of the event before position `p` in its stream (0:
    /// `p` is the stream's first).
    previous: Vec<u64>,
    /// Segments in position order; the last one is the one being written.
    segments: Vec<Segment>,
    /// Whether the log's records are of format 1 (written before the hash chain, ADR 0020),
    /// decided by its first record; `None` for an empty log. Only a read-only open accepts
    /// them (for `export`), and never mixed with format 2.
    pub unchained: Option<bool>,
}

impl Index {
    /// The last durable position (0: empty).
    pub fn head(&self) -> u64 {
        self.offsets.len() as u64
    }

    /// The stream's last sequence (0: no events).
    pub fn version(&self, stream: &str) -> u64 {
        self.streams.get(stream).map_or(0, |t| t.version)
    }

    /// Records that position `head + 1` (of `stream`) sits at `offset` in the last segment.
    pub fn push(&mut self, stream: &str, offset: u32) {
        // Without a sequence to check, the stream's next one is taken: this cannot fail.
        let _ = self.push_at(stream, offset, None);
    }

    /// Like [`push`](Self::push), but only if `sequence` is the stream's next one; otherwise
    /// returns the sequence that was due. One map lookup: the open-time scan's hot path.
    pub fn push_checked(&mut self, stream: &str, offset: u32, sequence: u64) -> Result<(), u64> {
        self.push_at(stream, offset, Some(sequence))
    }

    fn push_at(&mut self, stream: &str, offset: u32, sequence: Option<u64>) -> Result<(), u64> {
        let position = self.head() + 1;
        let previous = match self.streams.get_mut(stream) {
            Some(tail) if sequence.is_none_or(|s| s == tail.version + 1) => {
                let previous = tail.last;
                *tail = Tail {
                    version: tail.version + 1,
                    last: position,
                };
                previous
            }
            Some(tail) => return Err(tail.version + 1),
            None if sequence.is_none_or(|s| s == 1) => {
                let tail = Tail {
                    version: 1,
                    last: position,
                };
                self.streams.insert(stream.into(), tail);
                0
            }
            None => return Err(1),
        };
        self.offsets.push(offset);
        self.previous.push(previous);
        Ok(())
    }

    /// Takes back the last `count` pushes, all of them to `stream` (a torn append).
    pub fn pop(&mut self, stream: &str, count: usize) {
        let count = count.min(self.offsets.len());
        let keep = self.offsets.len() - count;
        self.offsets.truncate(keep);
        let Some(tail) = self.streams.get_mut(stream) else {
            self.previous.truncate(keep);
            return;
        };
        for _ in 0..count {
            tail.last = self.previous.pop().unwrap_or(0);
            tail.version = tail.version.saturating_sub(1);
        }
        if tail.version == 0 {
            self.streams.remove(stream);
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

    /// The positions of `stream`'s events with `sequence >= from_sequence`, in order.
    pub fn stream_positions(&self, stream: &str, from_sequence: u64) -> Vec<u64> {
        let Some(tail) = self.streams.get(stream) else {
            return Vec::new();
        };
        let from = from_sequence.max(1);
        if from > tail.version {
            return Vec::new();
        }
        let count = (tail.version - from + 1) as usize;
        let mut positions = Vec::with_capacity(count);
        let mut position = tail.last;
        for _ in 0..count {
            positions.push(position);
            position = self.previous[(position - 1) as usize];
        }
        positions.reverse();
        positions
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

    /// Every segment with the end of its indexed records, for a backup.
    pub fn segment_extents(&self) -> Vec<super::backup::Extent> {
        self.segments
            .iter()
            .map(|s| super::backup::Extent {
                first: s.first,
                file: s.file.clone(),
                path: s.path.clone(),
                len: s.len,
            })
            .collect()
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

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;

    /// What the index must answer, kept the plain way: per stream, its positions in order.
    #[derive(Default)]
    struct Model {
        streams: HashMap<String, Vec<u64>>,
        head: u64,
    }

    /// One step: push `n` events to stream `s`, then maybe take the last push of several back
    /// (a torn append at the end of the log, as the open-time scan does).
    #[derive(Debug, Clone)]
    struct Step {
        stream: u8,
        events: usize,
        torn: bool,
    }

    fn step() -> impl Strategy<Value = Step> {
        (0u8..6, 1usize..4, any::<bool>()).prop_map(|(stream, events, torn)| Step {
            stream,
            events,
            torn,
        })
    }

    proptest! {
        #[test]
        fn positions_versions_and_pops_agree_with_a_list_per_stream(
            steps in proptest::collection::vec(step(), 1..60),
        ) {
            let (mut index, mut model) = (Index::default(), Model::default());
            for (i, step) in steps.iter().enumerate() {
                let name = format!("s{}", step.stream);
                for _ in 0..step.events {
                    let due = model.streams.get(&name).map_or(1, |p| p.len() as u64 + 1);
                    prop_assert_eq!(index.push_checked(&name, i as u32, due + 1), Err(due));
                    if step.events > 1 {
                        index.push_checked(&name, i as u32, due).unwrap();
                    } else {
                        index.push(&name, i as u32);
                    }
                    model.head += 1;
                    model.streams.entry(name.clone()).or_default().push(model.head);
                }
                // Only the last append may be torn, so only the last step's pop is kept.
                if step.torn && i + 1 == steps.len() {
                    index.pop(&name, step.events);
                    model.head -= step.events as u64;
                    let positions = model.streams.get_mut(&name).unwrap();
                    positions.truncate(positions.len() - step.events);
                    if positions.is_empty() {
                        model.streams.remove(&name);
                    }
                }
            }
            prop_assert_eq!(index.head(), model.head);
            prop_assert_eq!(index.stream_count(), model.streams.len());
            for s in 0u8..7 {
                let name = format!("s{s}");
                let positions = model.streams.get(&name).cloned().unwrap_or_default();
                prop_assert_eq!(index.version(&name), positions.len() as u64);
                for from in 0..positions.len() as u64 + 2 {
                    let skip = (from.max(1) - 1).min(positions.len() as u64) as usize;
                    prop_assert_eq!(index.stream_positions(&name, from), positions[skip..].to_vec());
                }
            }
        }
    }
}
