//! The values that cross the store contract.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::StoreError;
use crate::chain::EventHash;
use crate::domain::{canonical_username, DomainError, InstanceId, StreamName, UserId};

/// The longest stream name accepted, in bytes.
pub const MAX_STREAM_LEN: usize = 512;

/// The name of a stream. Opaque to the store; the domain names userstate's streams
/// ([`StreamName`]: built by [`StreamId::user`], [`StreamId::username`], parsed back by
/// [`StreamName::parse`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct StreamId(String);

impl StreamId {
    /// Validates a stream name: non-empty, at most 512 bytes, no control characters.
    pub fn new(name: impl Into<String>) -> Result<Self, StoreError> {
        let name = name.into();
        if name.is_empty() || name.len() > MAX_STREAM_LEN || name.chars().any(char::is_control) {
            return Err(StoreError::InvalidArgument(format!(
                "stream name must be 1 to {MAX_STREAM_LEN} bytes without control characters"
            )));
        }
        Ok(Self(name))
    }

    /// The stream of one user ([`StreamName::User`]).
    pub fn user(instance: &InstanceId, user: &UserId) -> Self {
        let name = StreamName::User {
            instance: instance.as_str(),
            user: user.as_str(),
        };
        Self(name.to_name())
    }

    /// The stream that reserves a username in an instance ([`StreamName::Username`]), named by
    /// the username's canonical form ([`canonical_username`]: usernames that are the same
    /// username share one stream). A username that is not valid is refused, so the name always
    /// fits: at most 410 bytes (an id and a canonical username of at most 200 bytes each).
    pub fn username(instance: &InstanceId, username: &str) -> Result<Self, DomainError> {
        let canonical = canonical_username(username)?;
        let name = StreamName::Username {
            instance: instance.as_str(),
            canonical: &canonical,
        };
        debug_assert!(name.len() <= MAX_STREAM_LEN);
        Ok(Self(name.to_name()))
    }

    /// The stream of a delivery target's checkpoint and lease ([`StreamName::Delivery`]). The
    /// caller validates `target` ([`crate::feed::StoreCheckpoint::new`] does): an id of at
    /// most 200 bytes, no control characters.
    pub fn delivery(target: &str) -> Self {
        Self(StreamName::Delivery { target }.to_name())
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for StreamId {
    type Error = StoreError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<StreamId> for String {
    fn from(value: StreamId) -> Self {
        value.0
    }
}

/// What an append expects the stream's current version (its last sequence) to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ExpectedVersion {
    /// No check.
    Any,
    /// The stream must have no events.
    NoStream,
    /// The stream's last sequence must be exactly this (0 means no events, like `NoStream`).
    Exact(u64),
}

impl ExpectedVersion {
    /// Whether a stream whose last sequence is `actual` (0: no events) satisfies this.
    pub fn matches(self, actual: u64) -> bool {
        match self {
            ExpectedVersion::Any => true,
            ExpectedVersion::NoStream => actual == 0,
            ExpectedVersion::Exact(n) => actual == n,
        }
    }
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpectedVersion::Any => f.write_str("any"),
            ExpectedVersion::NoStream => f.write_str("no stream"),
            ExpectedVersion::Exact(n) => write!(f, "version {n}"),
        }
    }
}

/// Who and what caused an event; stored with it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventMetadata {
    /// The instance (tenant) the stream belongs to.
    pub instance: String,
    /// The organisation that owns the aggregate.
    pub resource_owner: String,
    /// The principal that caused the event.
    pub creator: String,
    /// Ties together the events of one request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    /// The client's idempotency key, when it sent one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

/// An event to append.
#[derive(Clone, Debug, PartialEq)]
pub struct NewEvent {
    /// Unique per event; lets a backend recognise a retried append.
    pub event_id: Uuid,
    /// Stable type string, e.g. `user.locked`.
    pub event_type: String,
    /// Payload schema revision.
    pub revision: u16,
    /// JSON payload.
    pub payload: serde_json::Value,
    /// Who and what caused it.
    pub metadata: EventMetadata,
    /// `None` (always, except on import): the store records the commit's time. `Some(t)`:
    /// keep `t`, so a history moved between stores (`userstate import`) keeps its dates.
    pub created_at: Option<DateTime<Utc>>,
}

impl NewEvent {
    /// A new event with a fresh id.
    pub fn new(
        event_type: impl Into<String>,
        revision: u16,
        payload: serde_json::Value,
        metadata: EventMetadata,
    ) -> Self {
        Self {
            event_id: Uuid::new_v4(),
            event_type: event_type.into(),
            revision,
            payload,
            metadata,
            created_at: None,
        }
    }

    /// The event of a recorded one, keeping its id and time (for moving histories between
    /// stores).
    pub fn from_recorded(recorded: RecordedEvent) -> Self {
        Self {
            event_id: recorded.event_id,
            event_type: recorded.event_type,
            revision: recorded.revision,
            payload: recorded.payload,
            metadata: recorded.metadata,
            created_at: Some(recorded.created_at),
        }
    }
}

/// An event as the store recorded it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordedEvent {
    /// The id given on append.
    pub event_id: Uuid,
    /// The stream it belongs to.
    pub stream: StreamId,
    /// 1-based, gapless within the stream.
    pub sequence: u64,
    /// Global, strictly increasing in commit order, starting at 1.
    pub position: u64,
    /// The commit's time (UTC).
    pub created_at: DateTime<Utc>,
    /// Stable type string.
    #[serde(rename = "type")]
    pub event_type: String,
    /// Payload schema revision.
    pub revision: u16,
    /// JSON payload.
    pub payload: serde_json::Value,
    /// Who and what caused it.
    pub metadata: EventMetadata,
    /// The hash chaining this event to the one before it in position order
    /// ([`crate::chain`]). [`EventHash::ZERO`] until a store sets it; absent from an export
    /// written before the chain.
    #[serde(default)]
    pub hash: EventHash,
}

impl RecordedEvent {
    /// Records `event` at the given coordinates (for store implementations); the store then
    /// sets [`hash`](Self::hash) where it orders the event. `created_at` is
    /// the commit's time; an event that carries its own time (an import) keeps that instead.
    pub fn record(
        stream: StreamId,
        sequence: u64,
        position: u64,
        created_at: DateTime<Utc>,
        event: NewEvent,
    ) -> Self {
        Self {
            event_id: event.event_id,
            stream,
            sequence,
            position,
            created_at: event.created_at.unwrap_or(created_at),
            event_type: event.event_type,
            revision: event.revision,
            payload: event.payload,
            metadata: event.metadata,
            hash: EventHash::ZERO,
        }
    }
}

/// A recorded event lent by a store for the time of one call of
/// [`EventStore::visit_all`](super::EventStore::visit_all): what a fold over the whole log
/// needs (what happened, where and when), without the metadata and without copies.
/// [`RecordedEvent::as_event_ref`] lends an owned one.
#[derive(Clone, Copy, Debug)]
pub struct EventRef<'a> {
    /// The stream's name, as stored (not validated again: a fold checks the names it keeps).
    pub stream: &'a str,
    /// 1-based, gapless within the stream.
    pub sequence: u64,
    /// Global position.
    pub position: u64,
    /// The commit's time (UTC).
    pub created_at: DateTime<Utc>,
    /// Stable type string.
    pub event_type: &'a str,
    /// Payload schema revision.
    pub revision: u16,
    /// The payload, parsed or still as stored.
    pub payload: PayloadRef<'a>,
}

/// An event's payload as a store lends it: still JSON text (a file store's bytes), parsed
/// only by a fold that needs it, or already parsed.
#[derive(Clone, Copy, Debug)]
pub enum PayloadRef<'a> {
    /// JSON text, not yet parsed (nor checked to be JSON).
    Json(&'a [u8]),
    /// A parsed value.
    Value(&'a serde_json::Value),
}

impl PayloadRef<'_> {
    /// Deserializes the payload into `T`.
    pub fn deserialize<T: serde::de::DeserializeOwned>(self) -> Result<T, serde_json::Error> {
        match self {
            PayloadRef::Json(bytes) => serde_json::from_slice(bytes),
            PayloadRef::Value(value) => T::deserialize(value),
        }
    }
}

impl crate::domain::PayloadSource for PayloadRef<'_> {
    fn parse<T: serde::de::DeserializeOwned>(self) -> Result<T, serde_json::Error> {
        self.deserialize()
    }
}

impl RecordedEvent {
    /// This event lent as an [`EventRef`].
    pub fn as_event_ref(&self) -> EventRef<'_> {
        EventRef {
            stream: self.stream.as_str(),
            sequence: self.sequence,
            position: self.position,
            created_at: self.created_at,
            event_type: &self.event_type,
            revision: self.revision,
            payload: PayloadRef::Value(&self.payload),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_streams_are_named_user_instance_id() {
        let instance = InstanceId::new("inst-1").unwrap();
        let user = UserId::new("u.42@x").unwrap();
        assert_eq!(
            StreamId::user(&instance, &user).as_str(),
            "user:inst-1:u.42@x"
        );
        assert_eq!(
            StreamId::username(&instance, "Alice").unwrap().as_str(),
            "username:inst-1:alice"
        );
    }

    /// Issue 20: 200 emoji are 200 characters but 800 bytes; the stream name built from them
    /// was longer than any store accepts back, and reading it was called corruption.
    #[test]
    fn username_streams_are_refused_rather_than_built_too_long() {
        let instance = InstanceId::new("i".repeat(crate::domain::MAX_ID_LEN)).unwrap();
        for long in ["\u{1F600}", "é", "用"].map(|c| c.repeat(200)) {
            assert!(StreamId::username(&instance, &long).is_err(), "{long}");
        }
        let longest = StreamId::username(&instance, &"a".repeat(200)).unwrap();
        assert!(StreamId::new(longest.as_str()).is_ok());
    }

    proptest::proptest! {
        /// Whatever a caller sends, a username stream either is refused or round-trips through
        /// the store's own validation (what every read path applies).
        #[test]
        fn any_accepted_username_names_a_valid_stream(name in "\\PC{0,220}") {
            let instance = InstanceId::new("i".repeat(crate::domain::MAX_ID_LEN)).unwrap();
            if let Ok(stream) = StreamId::username(&instance, &name) {
                proptest::prop_assert!(StreamId::new(stream.as_str()).is_ok());
            }
        }
    }
}
