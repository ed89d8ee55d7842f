//! [`Removal`]: what a backend with its own way of removing events (KurrentDB: deleting a
//! stream, or truncating it by stream metadata) keeps in its log about each removal, for
//! `verify` to report ([`EventStore::removals`](super::EventStore::removals), ADR 0020).

use std::fmt;

use super::StreamId;

/// One record of a stream deleted or truncated through the backend's own API, at its place in
/// the log. userstate itself never deletes or truncates a stream of its log; the only such
/// records it makes are the tombstones of erased users' key streams (ADR 0021).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Removal {
    /// The record's position, in the store's position space (the one of
    /// [`RecordedEvent::position`](super::RecordedEvent::position)).
    pub position: u64,
    /// What was deleted or truncated.
    pub target: RemovalTarget,
    /// How.
    pub kind: RemovalKind,
}

/// What a [`Removal`] removed events of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RemovalTarget {
    /// A stream of the log (a user's, a username reservation's, a token's, …).
    Stream(StreamId),
    /// A key stream of crypto-shredding, by key id: `{instance}:{user}` for a user's key, or
    /// `secret` for the username secret.
    Key(String),
}

impl fmt::Display for RemovalTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Stream(stream) => write!(f, "stream {stream}"),
            Self::Key(id) => write!(f, "key stream of {id}"),
        }
    }
}

/// How a [`Removal`] removed events (KurrentDB's terms in the display).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RemovalKind {
    /// Hard-deleted: a tombstone; its events go at the next scavenge, and the stream can never
    /// be written again.
    Tombstoned,
    /// Soft-deleted: reads find no stream, its events go at the next scavenge.
    SoftDeleted,
    /// Truncated: every event before this sequence (1-based, ours) is no longer read and
    /// goes at the next scavenge.
    TruncatedBefore(u64),
    /// Truncated to its last this many events.
    MaxCount(u64),
    /// Truncated to its events younger than this many seconds.
    MaxAge(u64),
}

impl fmt::Display for RemovalKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tombstoned => write!(f, "hard-deleted (a `$streamDeleted` tombstone)"),
            Self::SoftDeleted => {
                write!(f, "soft-deleted (stream metadata `$tb` set to the maximum)")
            }
            Self::TruncatedBefore(sequence) => write!(
                f,
                "truncated before sequence {sequence} (stream metadata `$tb` {})",
                sequence.saturating_sub(1)
            ),
            Self::MaxCount(n) => write!(
                f,
                "truncated to its last {n} events (stream metadata `$maxCount`)"
            ),
            Self::MaxAge(seconds) => write!(
                f,
                "truncated to its events younger than {seconds} s (stream metadata `$maxAge`)"
            ),
        }
    }
}
