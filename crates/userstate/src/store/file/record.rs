//! Record framing and codec: how one recorded event is laid out in a segment.
//!
//! A frame is a 12-byte header followed by the body:
//!
//! ```text
//! [body_len u32 LE][header_crc u32 LE = crc32c(body_len bytes)][body_crc u32 LE = crc32c(body)]
//! [body: position u64][sequence u64][created_at µs i64][event_id 16][revision u16][flags u8]
//!       [stream_len u16][stream][type_len u16][type][metadata_len u32][metadata JSON]
//!       [payload_len u32][payload JSON][hash 32]
//! ```
//!
//! Format 2 (flag bit 2 set, every record written since the hash chain, ADR 0020) ends the
//! body with the event's chain hash; the bytes from `stream_len` through the payload are the
//! chain's `content` encoding ([`crate::chain`]). A format 1 record (no flag bit 2, no hash)
//! still decodes, with [`RawRecord::hash`] `None`: a read-only open reads a log of format 1
//! throughout (so that `export` upgrades it), a writable open refuses it with the way out.
//!
//! The header has its own checksum so a damaged length is never trusted: a frame whose header
//! checks out but whose body runs past the end of the file was cut short (a torn tail); a frame
//! whose header or body fails its checksum was damaged. Flag bit 0 marks the last record of one
//! `append` call, so recovery can drop a partially written multi-event append. Flag bit 1 marks
//! the first record of one writer batch (one `write` + `fdatasync`), so recovery can tell a torn
//! last batch from damage followed by later batches (see `scan`).
//!
//! The decoder is total: any input yields a [`Decoded`] value, never a panic (fuzzed in `fuzz/`
//! and by a property test).

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::chain::EventHash;
use crate::store::{EventMetadata, EventRef, PayloadRef, RecordedEvent, StreamId};

/// Bytes in a frame header.
pub const HEADER_LEN: usize = 12;
/// The largest body accepted, in bytes (a sanity bound, far above any real event).
pub const MAX_BODY_LEN: usize = 64 << 20;
/// Flag: this record is the last of its `append` call.
const FLAG_ENDS_APPEND: u8 = 1;
/// Flag: this record is the first of a writer batch.
const FLAG_STARTS_BATCH: u8 = 2;
/// Flag: the record is format 2: its body ends with the chain hash.
const FLAG_CHAINED: u8 = 4;
/// Bytes of the chain hash at the end of a format 2 body.
const HASH_LEN: usize = 32;
/// Fixed-size part of the body before the variable fields.
const FIXED_LEN: usize = 8 + 8 + 8 + 16 + 2 + 1;

/// One decoded frame, borrowing from the input. Only the header fields the index needs are
/// parsed eagerly; JSON is parsed by [`RawRecord::to_event`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawRecord<'a> {
    /// Global position.
    pub position: u64,
    /// Sequence within the stream.
    pub sequence: u64,
    /// Commit time, microseconds since the Unix epoch (UTC).
    pub created_at_micros: i64,
    /// The event's id.
    pub event_id: Uuid,
    /// Payload schema revision.
    pub revision: u16,
    /// Whether this record is the last of its `append` call.
    pub ends_append: bool,
    /// Whether this record is the first of a writer batch.
    pub starts_batch: bool,
    /// The stream name (not yet validated as a [`StreamId`]).
    pub stream: &'a str,
    /// The event type.
    pub event_type: &'a str,
    /// Metadata as JSON bytes.
    pub metadata: &'a [u8],
    /// Payload as JSON bytes.
    pub payload: &'a [u8],
    /// The body from the stream name through the payload: the chain's `content` encoding.
    pub tail: &'a [u8],
    /// The chain hash (format 2); `None` for a format 1 record.
    pub hash: Option<EventHash>,
}

/// What [`decode`] found at the start of its input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// A whole, checksummed frame of `len` bytes.
    Record {
        /// The record.
        record: RawRecord<'a>,
        /// Bytes the frame occupies (header + body).
        len: usize,
    },
    /// The input ends inside the frame: fewer than [`HEADER_LEN`] bytes, or a valid header whose
    /// body runs past the end. At the tail of the log this is a torn write.
    Incomplete,
    /// The frame is damaged (bad checksum, impossible length, malformed body).
    Invalid(&'static str),
}

/// Decodes the frame at the start of `buf`. Never panics.
pub fn decode(buf: &[u8]) -> Decoded<'_> {
    let Some(header) = buf.get(..HEADER_LEN) else {
        return Decoded::Incomplete;
    };
    let len_bytes = [header[0], header[1], header[2], header[3]];
    let header_crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    let body_crc = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
    if crc32c::crc32c(&len_bytes) != header_crc {
        return Decoded::Invalid("header checksum mismatch");
    }
    let body_len = u32::from_le_bytes(len_bytes) as usize;
    if !(FIXED_LEN..=MAX_BODY_LEN).contains(&body_len) {
        return Decoded::Invalid("impossible body length");
    }
    let Some(body) = buf.get(HEADER_LEN..HEADER_LEN + body_len) else {
        return Decoded::Incomplete;
    };
    if crc32c::crc32c(body) != body_crc {
        return Decoded::Invalid("body checksum mismatch");
    }
    match parse_body(body) {
        Some(record) => Decoded::Record {
            record,
            len: HEADER_LEN + body_len,
        },
        None => Decoded::Invalid("malformed body"),
    }
}

/// The length of the frame at the start of `buf` as its header declares it, if the header is
/// whole and passes its checksum (the body may be missing or damaged).
pub fn declared_len(buf: &[u8]) -> Option<usize> {
    let header = buf.get(..HEADER_LEN)?;
    let len_bytes = [header[0], header[1], header[2], header[3]];
    let header_crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    let body_len = u32::from_le_bytes(len_bytes) as usize;
    (crc32c::crc32c(&len_bytes) == header_crc && (FIXED_LEN..=MAX_BODY_LEN).contains(&body_len))
        .then_some(HEADER_LEN + body_len)
}

/// A cursor over a body; every read is bounds-checked.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }
    fn u64(&mut self) -> Option<u64> {
        self.array().map(u64::from_le_bytes)
    }
    fn u16(&mut self) -> Option<u16> {
        self.array().map(u16::from_le_bytes)
    }
    fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_le_bytes)
    }
    fn str16(&mut self) -> Option<&'a str> {
        let n = self.u16()? as usize;
        std::str::from_utf8(self.take(n)?).ok()
    }
    fn bytes32(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }
}

fn parse_body(body: &[u8]) -> Option<RawRecord<'_>> {
    let mut c = Cursor(body);
    let position = c.u64()?;
    let sequence = c.u64()?;
    let created_at_micros = i64::from_le_bytes(c.array()?);
    let event_id = Uuid::from_bytes(c.array()?);
    let revision = c.u16()?;
    let [flags] = c.array()?;
    let chained = flags & FLAG_CHAINED != 0;
    let variable = c.0;
    let stream = c.str16()?;
    let event_type = c.str16()?;
    let metadata = c.bytes32()?;
    let payload = c.bytes32()?;
    let tail = &variable[..variable.len() - c.0.len()];
    let hash = if chained {
        Some(EventHash(c.array()?))
    } else {
        None
    };
    if !c.0.is_empty()
        || flags & !(FLAG_ENDS_APPEND | FLAG_STARTS_BATCH | FLAG_CHAINED) != 0
        || position == 0
        || sequence == 0
    {
        return None;
    }
    Some(RawRecord {
        position,
        sequence,
        created_at_micros,
        event_id,
        revision,
        ends_append: flags & FLAG_ENDS_APPEND != 0,
        starts_batch: flags & FLAG_STARTS_BATCH != 0,
        stream,
        event_type,
        metadata,
        payload,
        tail,
        hash,
    })
}

impl<'a> RawRecord<'a> {
    /// Parses the JSON fields and validates the stream name and time. The error says what is
    /// wrong with the record.
    pub fn to_event(&self) -> Result<RecordedEvent, String> {
        let stream = StreamId::new(self.stream).map_err(|e| e.to_string())?;
        let created_at = self.created_at()?;
        let metadata: EventMetadata = serde_json::from_slice(self.metadata)
            .map_err(|e| format!("metadata is not valid: {e}"))?;
        let payload: serde_json::Value = serde_json::from_slice(self.payload)
            .map_err(|e| format!("payload is not valid JSON: {e}"))?;
        Ok(RecordedEvent {
            event_id: self.event_id,
            stream,
            sequence: self.sequence,
            position: self.position,
            created_at,
            event_type: self.event_type.to_owned(),
            revision: self.revision,
            payload,
            metadata,
            hash: self.hash.unwrap_or_default(),
        })
    }

    /// The record lent as an [`EventRef`]: nothing parsed but the commit time.
    pub fn as_event_ref(&self) -> Result<EventRef<'a>, String> {
        Ok(EventRef {
            stream: self.stream,
            sequence: self.sequence,
            position: self.position,
            created_at: self.created_at()?,
            event_type: self.event_type,
            revision: self.revision,
            payload: PayloadRef::Json(self.payload),
        })
    }

    fn created_at(&self) -> Result<DateTime<Utc>, String> {
        DateTime::from_timestamp_micros(self.created_at_micros)
            .ok_or_else(|| format!("time {} µs is out of range", self.created_at_micros))
    }
}

/// Where a record stands in its `append` call and its writer batch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Marks {
    /// The last event of an `append`.
    pub ends_append: bool,
    /// The first event of a writer batch.
    pub starts_batch: bool,
}

impl Marks {
    fn flags(self) -> u8 {
        let mut flags = FLAG_CHAINED;
        if self.ends_append {
            flags |= FLAG_ENDS_APPEND;
        }
        if self.starts_batch {
            flags |= FLAG_STARTS_BATCH;
        }
        flags
    }
}

/// The part of a record body known before the writer assigns position, sequence and time:
/// stream, type, metadata and payload, encoded. Built by the appending task, so the JSON
/// encoding runs in parallel on the callers' threads, outside the append queue's lock.
#[derive(Clone, Debug)]
pub struct Tail(Vec<u8>);

impl Tail {
    /// Encodes the variable fields. Fails if a field is too long for its length prefix or the
    /// body would exceed [`MAX_BODY_LEN`].
    pub fn new(
        stream: &str,
        event_type: &str,
        metadata: &EventMetadata,
        payload: &serde_json::Value,
    ) -> Result<Tail, String> {
        let mut out = Vec::with_capacity(256);
        put_str16(&mut out, stream, "stream name")?;
        put_str16(&mut out, event_type, "event type")?;
        put_json32(&mut out, metadata, "metadata")?;
        put_json32(&mut out, payload, "payload")?;
        let body_len = FIXED_LEN + out.len() + HASH_LEN;
        if body_len > MAX_BODY_LEN {
            return Err(format!(
                "event is {body_len} bytes; the limit is {MAX_BODY_LEN}"
            ));
        }
        Ok(Tail(out))
    }

    /// Bytes of the whole frame this tail becomes.
    pub fn frame_len(&self) -> usize {
        HEADER_LEN + FIXED_LEN + self.0.len() + HASH_LEN
    }

    /// The chain's `content` digest of these bytes.
    pub fn content(&self) -> EventHash {
        crate::chain::content_digest_of_tail(&self.0)
    }
}

/// The fixed fields of a record body, known once the writer places the record in the log.
#[derive(Clone, Copy, Debug)]
pub struct Fixed {
    /// Global position.
    pub position: u64,
    /// Sequence within the stream.
    pub sequence: u64,
    /// Commit time, microseconds since the Unix epoch (UTC).
    pub created_at_micros: i64,
    /// The event's id.
    pub event_id: Uuid,
    /// Payload schema revision.
    pub revision: u16,
    /// Where the record stands in its append and batch.
    pub marks: Marks,
    /// The event's chain hash.
    pub hash: EventHash,
}

/// Appends the frame of a record made of `fixed` and `tail` to `out`. Cannot fail: every
/// limit was checked when the tail was built.
pub fn encode_parts(fixed: &Fixed, tail: &Tail, out: &mut Vec<u8>) {
    let start = out.len();
    out.reserve(tail.frame_len());
    out.extend_from_slice(&[0; HEADER_LEN]);
    out.extend_from_slice(&fixed.position.to_le_bytes());
    out.extend_from_slice(&fixed.sequence.to_le_bytes());
    out.extend_from_slice(&fixed.created_at_micros.to_le_bytes());
    out.extend_from_slice(fixed.event_id.as_bytes());
    out.extend_from_slice(&fixed.revision.to_le_bytes());
    out.push(fixed.marks.flags());
    out.extend_from_slice(&tail.0);
    out.extend_from_slice(&fixed.hash.0);
    let body_len = out.len() - start - HEADER_LEN;
    let len_bytes = (body_len as u32).to_le_bytes();
    let body_crc = crc32c::crc32c(&out[start + HEADER_LEN..]);
    out[start..start + 4].copy_from_slice(&len_bytes);
    out[start + 4..start + 8].copy_from_slice(&crc32c::crc32c(&len_bytes).to_le_bytes());
    out[start + 8..start + 12].copy_from_slice(&body_crc.to_le_bytes());
}

/// Appends the frame of `event`, flagged with `marks`, to `out`. Fails only if a field is too
/// long for its length prefix.
pub fn encode(event: &RecordedEvent, marks: Marks, out: &mut Vec<u8>) -> Result<(), String> {
    let tail = Tail::new(
        event.stream.as_str(),
        &event.event_type,
        &event.metadata,
        &event.payload,
    )?;
    let fixed = Fixed {
        position: event.position,
        sequence: event.sequence,
        created_at_micros: event.created_at.timestamp_micros(),
        event_id: event.event_id,
        revision: event.revision,
        marks,
        hash: event.hash,
    };
    encode_parts(&fixed, &tail, out);
    Ok(())
}

fn put_str16(out: &mut Vec<u8>, s: &str, what: &str) -> Result<(), String> {
    let n = u16::try_from(s.len()).map_err(|_| format!("{what} is longer than 65535 bytes"))?;
    out.extend_from_slice(&n.to_le_bytes());
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

/// Writes `value` as JSON behind a 32-bit length prefix, serialising straight into `out`.
fn put_json32<T: serde::Serialize>(out: &mut Vec<u8>, value: &T, what: &str) -> Result<(), String> {
    let at = out.len();
    out.extend_from_slice(&[0; 4]);
    serde_json::to_writer(&mut *out, value).map_err(|e| format!("{what}: {e}"))?;
    let n = out.len() - at - 4;
    if n > MAX_BODY_LEN {
        return Err(format!("{what} is longer than {MAX_BODY_LEN} bytes"));
    }
    out[at..at + 4].copy_from_slice(&(n as u32).to_le_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::NewEvent;
    use proptest::prelude::*;

    fn sample() -> RecordedEvent {
        let new = NewEvent::new(
            "user.locked",
            3,
            serde_json::json!({"a": [1, "x"]}),
            EventMetadata {
                instance: "i".into(),
                resource_owner: "o".into(),
                creator: "c".into(),
                correlation_id: Some("k".into()),
                idempotency_key: None,
            },
        );
        let at = DateTime::from_timestamp_micros(1_700_000_000_123_456).expect("valid time");
        RecordedEvent::record(StreamId::new("user:i:u").expect("valid"), 4, 9, at, new)
    }

    #[test]
    fn round_trips_with_every_combination_of_marks() {
        let e = sample();
        for (ends_append, starts_batch) in
            [(false, false), (true, false), (false, true), (true, true)]
        {
            let marks = Marks {
                ends_append,
                starts_batch,
            };
            let mut buf = Vec::new();
            encode(&e, marks, &mut buf).expect("encodes");
            match decode(&buf) {
                Decoded::Record { record, len } => {
                    assert_eq!(len, buf.len());
                    assert_eq!(record.ends_append, ends_append);
                    assert_eq!(record.starts_batch, starts_batch);
                    assert_eq!(record.to_event().expect("valid"), e);
                }
                other => panic!("expected a record, got {other:?}"),
            }
        }
    }

    #[test]
    fn every_prefix_is_incomplete_and_every_flip_is_invalid() {
        let mut buf = Vec::new();
        encode(&sample(), Marks::default(), &mut buf).expect("encodes");
        for cut in 0..buf.len() {
            assert_eq!(decode(&buf[..cut]), Decoded::Incomplete, "cut at {cut}");
        }
        for i in 0..buf.len() {
            let mut bad = buf.clone();
            bad[i] ^= 0x40;
            assert!(matches!(decode(&bad), Decoded::Invalid(_)), "flip at {i}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        /// Random bytes never panic the decoder (the bounded, CI-run twin of the fuzz target).
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            if let Decoded::Record { record, len } = decode(&bytes) {
                prop_assert!(len <= bytes.len());
                let _ = record.to_event();
            }
        }

        /// Valid headers over random bodies exercise the body parser, not just the checksum.
        #[test]
        fn random_bodies_never_panic(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            let len = (body.len() as u32).to_le_bytes();
            let mut frame = len.to_vec();
            frame.extend_from_slice(&crc32c::crc32c(&len).to_le_bytes());
            frame.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
            frame.extend_from_slice(&body);
            if let Decoded::Record { record, .. } = decode(&frame) {
                let _ = record.to_event();
            }
        }
    }
}
