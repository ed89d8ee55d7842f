//! The read path: positional reads (`pread`) of index spans, decoded and checked again.
//!
//! Readers take no lock while reading: the index hands out spans of durable bytes, which the
//! writer never changes, so a read never waits for the writer and the writer never waits for
//! a read. Every record is checksummed again on the way out, so damage that appears after open
//! is reported as [`StoreError::Corrupt`] instead of being returned.

use std::os::unix::fs::FileExt;

use super::index::Span;
use super::record::{decode, Decoded, RawRecord};
use super::segment::location;
use crate::store::{EventRef, RecordedEvent, StoreError};

/// Reads and decodes every record of `spans`, in order.
pub fn read_spans(spans: &[Span]) -> Result<Vec<RecordedEvent>, StoreError> {
    let total: u64 = spans.iter().map(|s| s.count).sum();
    let mut events = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    for_each_record(spans, |record| {
        events.push(record.to_event()?);
        Ok(())
    })?;
    Ok(events)
}

/// Lends every record of `spans` to `visit`, in order, without parsing its metadata or
/// payload; returns how many it visited.
pub fn visit_spans(
    spans: &[Span],
    visit: &mut (dyn for<'e> FnMut(EventRef<'e>) + Send),
) -> Result<usize, StoreError> {
    let mut visited = 0;
    for_each_record(spans, |record| {
        visit(record.as_event_ref()?);
        visited += 1;
        Ok(())
    })?;
    Ok(visited)
}

/// Reads the records of `spans` in order, checks each one's checksums and position, and hands
/// it to `each`; an error from `each` is reported as damage at that record.
fn for_each_record(
    spans: &[Span],
    mut each: impl FnMut(RawRecord<'_>) -> Result<(), String>,
) -> Result<(), StoreError> {
    let mut buf = Vec::new();
    for span in spans {
        let len = usize::try_from(span.end.saturating_sub(span.start)).map_err(|_| {
            StoreError::Corrupt {
                location: location(&span.path, span.start),
                reason: "span does not fit in memory".into(),
            }
        })?;
        buf.clear();
        buf.resize(len, 0);
        span.file.read_exact_at(&mut buf, span.start)?;
        let mut offset = 0usize;
        for i in 0..span.count {
            let at = span.start + offset as u64;
            let corrupt = |reason: String| StoreError::Corrupt {
                location: location(&span.path, at),
                reason,
            };
            let (record, n) = match decode(&buf[offset..]) {
                Decoded::Record { record, len } => (record, len),
                Decoded::Incomplete => return Err(corrupt("record is cut short".into())),
                Decoded::Invalid(why) => return Err(corrupt(why.into())),
            };
            if record.position != span.first + i {
                return Err(corrupt(format!(
                    "expected position {}, found {}",
                    span.first + i,
                    record.position
                )));
            }
            each(record).map_err(corrupt)?;
            offset += n;
        }
    }
    Ok(())
}
