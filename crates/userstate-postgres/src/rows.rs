//! Between Rust values and table rows: decoding recorded events, deriving the `instance`
//! column.

use chrono::{DateTime, Utc};
use tokio_postgres::Row;
use userstate::chain::EventHash;
use userstate::store::{EventMetadata, EventRef, PayloadRef};
use userstate::{RecordedEvent, StoreError, StreamId};
use uuid::Uuid;

/// The `instance` column of a stream: the second `:`-separated part of a name with at least
/// three parts (`user:{instance}:{user}`, `username:{instance}:{name}`), else empty.
///
/// It is a function of the stream name alone, so the primary key (instance, stream, sequence)
/// identifies the same rows as (stream, sequence) and `read_stream` needs only the name. The
/// event metadata's `instance` is stored unchanged in `metadata`.
pub(crate) fn stream_instance(stream: &StreamId) -> &str {
    userstate::domain::instance_of(stream.as_str())
}

/// A `u64` coordinate as a `bigint` parameter.
pub(crate) fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Decodes a row of `read_stream.sql` / `read_all.sql`.
pub(crate) fn decode_event(row: &Row) -> Result<RecordedEvent, StoreError> {
    let (sequence, position, revision) = coordinates(row)?;
    let stream: String = row.try_get(0).map_err(|e| unreadable(row, e))?;
    let created_at: DateTime<Utc> = row.try_get(3).map_err(|e| unreadable(row, e))?;
    let event_type: String = row.try_get(4).map_err(|e| unreadable(row, e))?;
    let payload: serde_json::Value = row.try_get(6).map_err(|e| unreadable(row, e))?;
    let metadata: serde_json::Value = row.try_get(7).map_err(|e| unreadable(row, e))?;
    let event_id: Uuid = row.try_get(8).map_err(|e| unreadable(row, e))?;
    let hash: Option<&[u8]> = row.try_get(9).map_err(|e| unreadable(row, e))?;
    let metadata: EventMetadata = serde_json::from_value(metadata)
        .map_err(|e| corrupt(row, format!("metadata is not event metadata: {e}")))?;
    Ok(RecordedEvent {
        event_id,
        stream: StreamId::new(stream).map_err(|e| corrupt(row, e.to_string()))?,
        sequence,
        position,
        created_at,
        event_type,
        revision,
        payload,
        metadata,
        hash: hash.map(event_hash).unwrap_or_default(),
    })
}

/// A `hash` column's bytes as a chain hash; a value of the wrong length (the column's check
/// forbids one) reads as [`EventHash::ZERO`], which `verify` reports as a break.
pub(crate) fn event_hash(bytes: &[u8]) -> EventHash {
    <[u8; 32]>::try_from(bytes).map_or(EventHash::ZERO, EventHash)
}

/// Lends a row of `visit_all.sql`.
pub(crate) fn lend_event(row: &Row) -> Result<EventRef<'_>, StoreError> {
    let (sequence, position, revision) = coordinates(row)?;
    let payload: &str = row.try_get(6).map_err(|e| unreadable(row, e))?;
    Ok(EventRef {
        stream: row.try_get(0).map_err(|e| unreadable(row, e))?,
        sequence,
        position,
        created_at: row.try_get(3).map_err(|e| unreadable(row, e))?,
        event_type: row.try_get(4).map_err(|e| unreadable(row, e))?,
        revision,
        payload: PayloadRef::Json(payload.as_bytes()),
    })
}

/// The sequence, position and revision of an event row (columns 1, 2 and 5 of every read).
fn coordinates(row: &Row) -> Result<(u64, u64, u16), StoreError> {
    let sequence: i64 = row.try_get(1).map_err(|e| unreadable(row, e))?;
    let position: i64 = row.try_get(2).map_err(|e| unreadable(row, e))?;
    let revision: i32 = row.try_get(5).map_err(|e| unreadable(row, e))?;
    Ok((
        u64::try_from(sequence).map_err(|_| corrupt(row, "negative sequence".into()))?,
        u64::try_from(position).map_err(|_| corrupt(row, "negative position".into()))?,
        u16::try_from(revision).map_err(|_| corrupt(row, "revision out of range".into()))?,
    ))
}

/// A row that does not hold a valid event, named by its position.
fn corrupt(row: &Row, reason: String) -> StoreError {
    let position: i64 = row.try_get(2).unwrap_or_default();
    StoreError::Corrupt {
        location: format!("events position {position}"),
        reason,
    }
}

/// A column of `row` that cannot be read as the type asked for.
fn unreadable(row: &Row, e: tokio_postgres::Error) -> StoreError {
    corrupt(row, format!("unreadable column: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_is_the_middle_part_of_three() {
        let s = |n: &str| StreamId::new(n).expect("valid");
        assert_eq!(stream_instance(&s("user:inst1:u1")), "inst1");
        assert_eq!(stream_instance(&s("username:i:a:b")), "i");
        assert_eq!(stream_instance(&s("test:a")), "");
        assert_eq!(stream_instance(&s("plain")), "");
    }
}
