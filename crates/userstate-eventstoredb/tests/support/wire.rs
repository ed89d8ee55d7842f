//! Protocol messages as KurrentDB fills them: event records, ids, the tombstone status,
//! wrong-expected-version answers, and `$all` filters.

// `tonic::Status` is the protocol's error type; boxing it here would only add noise.
#![allow(clippy::result_large_err)]

use tonic::metadata::MetadataValue;
use tonic::Status;

use super::log::Record;
use super::proto::event_store::client::streams::{append_resp, read_req, read_resp, ReadResp};
use super::proto::event_store::client::{uuid as proto_uuid, Empty, StreamIdentifier, Uuid};

pub fn empty() -> Empty {
    Empty {}
}

/// The status KurrentDB answers for a tombstoned stream (the client maps it by the
/// `exception` trailer to `ResourceDeleted`).
pub fn stream_deleted(stream: &[u8]) -> Status {
    let mut status = Status::failed_precondition(format!(
        "Event stream '{}' is deleted.",
        String::from_utf8_lossy(stream)
    ));
    status
        .metadata_mut()
        .insert("exception", MetadataValue::from_static("stream-deleted"));
    if let Ok(name) = MetadataValue::try_from(String::from_utf8_lossy(stream).as_ref()) {
        status.metadata_mut().insert("stream-name", name);
    }
    status
}

/// The status KurrentDB answers for a delete whose expected revision does not hold (trailer
/// `exception: wrong-expected-version`; the `kurrentdb` 1.x client passes it on as a gRPC
/// error).
pub fn wrong_expected_status(stream: &[u8], current: Option<u64>) -> Status {
    let mut status = Status::failed_precondition(format!(
        "Append failed due to WrongExpectedVersion. Stream: {}",
        String::from_utf8_lossy(stream)
    ));
    let metadata = status.metadata_mut();
    metadata.insert(
        "exception",
        MetadataValue::from_static("wrong-expected-version"),
    );
    if let Ok(name) = MetadataValue::try_from(String::from_utf8_lossy(stream).as_ref()) {
        metadata.insert("stream-name", name);
    }
    let actual = current.map_or("-1".to_owned(), |c| c.to_string());
    if let Ok(actual) = MetadataValue::try_from(actual.as_str()) {
        metadata.insert("actual-version", actual);
    }
    status
}

pub fn proto_id(id: uuid::Uuid, as_string: bool) -> Uuid {
    let value = if as_string {
        proto_uuid::Value::String(id.to_string())
    } else {
        let n = id.as_u128();
        proto_uuid::Value::Structured(proto_uuid::Structured {
            most_significant_bits: (n >> 64) as u64 as i64,
            least_significant_bits: n as u64 as i64,
        })
    };
    Uuid { value: Some(value) }
}

pub fn parse_id(id: Option<Uuid>) -> Result<uuid::Uuid, Status> {
    match id.and_then(|u| u.value) {
        Some(proto_uuid::Value::String(s)) => s
            .parse()
            .map_err(|_| Status::invalid_argument("event id is not a UUID")),
        Some(proto_uuid::Value::Structured(s)) => Ok(uuid::Uuid::from_u128(
            ((s.most_significant_bits as u64 as u128) << 64)
                | s.least_significant_bits as u64 as u128,
        )),
        None => Err(Status::invalid_argument("event id is required")),
    }
}

pub fn event_message(record: &Record, ids_as_string: bool) -> ReadResp {
    let event = read_resp::read_event::RecordedEvent {
        id: Some(proto_id(record.id, ids_as_string)),
        stream_identifier: Some(StreamIdentifier {
            stream_name: record.stream.clone(),
        }),
        stream_revision: record.revision,
        prepare_position: record.position,
        commit_position: record.position,
        metadata: record.metadata.clone(),
        custom_metadata: record.custom_metadata.clone(),
        data: record.data.clone(),
    };
    ReadResp {
        content: Some(read_resp::Content::Event(read_resp::ReadEvent {
            event: Some(event),
            link: None,
            position: Some(read_resp::read_event::Position::CommitPosition(
                record.position,
            )),
        })),
    }
}

/// A `$all` filter: stream-name or event-type prefixes (regexes are not reproduced).
pub struct Filter {
    on_stream: bool,
    prefixes: Vec<String>,
}

impl Filter {
    pub fn parse(option: Option<read_req::options::FilterOption>) -> Result<Option<Self>, Status> {
        use read_req::options::filter_options::Filter as F;
        let Some(read_req::options::FilterOption::Filter(f)) = option else {
            return Ok(None);
        };
        let (on_stream, expr) = match f.filter {
            Some(F::StreamIdentifier(e)) => (true, e),
            Some(F::EventType(e)) => (false, e),
            None => return Ok(None),
        };
        if !expr.regex.is_empty() {
            return Err(Status::unimplemented(
                "the test server has no regex filters",
            ));
        }
        Ok(Some(Self {
            on_stream,
            prefixes: expr.prefix,
        }))
    }

    pub fn matches(&self, r: &Record) -> bool {
        let subject = if self.on_stream {
            String::from_utf8_lossy(&r.stream).into_owned()
        } else {
            r.metadata.get("type").cloned().unwrap_or_default()
        };
        self.prefixes
            .iter()
            .any(|p| subject.starts_with(p.as_str()))
    }
}

#[derive(Clone, Copy)]
pub enum ExpectedMsg {
    Any,
    NoStream,
    Exists,
    Revision(u64),
}

/// Both the current and the pre-20.6 fields, as KurrentDB sends them.
pub fn wrong_expected(
    current: Option<u64>,
    expected: ExpectedMsg,
) -> append_resp::WrongExpectedVersion {
    use append_resp::wrong_expected_version as w;
    let (cur_old, cur) = match current {
        Some(r) => (
            w::CurrentRevisionOption2060::CurrentRevision2060(r),
            w::CurrentRevisionOption::CurrentRevision(r),
        ),
        None => (
            w::CurrentRevisionOption2060::NoStream2060(empty()),
            w::CurrentRevisionOption::CurrentNoStream(empty()),
        ),
    };
    let (exp_old, exp) = match expected {
        ExpectedMsg::Any => (
            Some(w::ExpectedRevisionOption2060::Any2060(empty())),
            w::ExpectedRevisionOption::ExpectedAny(empty()),
        ),
        ExpectedMsg::NoStream => (None, w::ExpectedRevisionOption::ExpectedNoStream(empty())),
        ExpectedMsg::Exists => (
            Some(w::ExpectedRevisionOption2060::StreamExists2060(empty())),
            w::ExpectedRevisionOption::ExpectedStreamExists(empty()),
        ),
        ExpectedMsg::Revision(r) => (
            Some(w::ExpectedRevisionOption2060::ExpectedRevision2060(r)),
            w::ExpectedRevisionOption::ExpectedRevision(r),
        ),
    };
    append_resp::WrongExpectedVersion {
        current_revision_option_20_6_0: Some(cur_old),
        expected_revision_option_20_6_0: exp_old,
        current_revision_option: Some(cur),
        expected_revision_option: Some(exp),
    }
}
