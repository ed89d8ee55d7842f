//! The event feed (SPEC.md "Event feed"): every committed event after a position, in position
//! order, live — for the server's `GET /v2/events` and its streaming RPC, for delivery targets,
//! and for embedders that run their own consumer in-process.
//!
//! - [`Subscription`]: reads the store from a position, page by page, and waits on the store's
//!   head ([`EventStore::watch_head`]) when it has read everything. It pulls: it holds at most
//!   one page, so a slow reader costs memory of one page and never slows a command; a reader
//!   more than [`Subscription::with_max_lag`] events behind the head (once it had caught up
//!   with the head it started from) is told so with [`FeedError::TooFarBehind`] instead.
//! - [`Checkpoint`]: where a consumer keeps the position it has handled; [`MemoryCheckpoint`]
//!   for tests and [`StoreCheckpoint`] kept in the store itself (a stream of its own, so every
//!   node sharing a PostgreSQL store agrees) with a lease, so one node at a time delivers a
//!   target (ADR 0018).
//! - [`Filter`] and [`is_public`]: which events a reader sees. The feed carries the events of
//!   users and lockout policies; the bookkeeping streams (username reservations, idempotency
//!   keys, delivery checkpoints) are never delivered.
//!
//! Not here: the wire (SSE, gRPC) and the delivery targets (webhooks, NATS), which live in the
//! server and CLI crates.

mod checkpoint;
mod filter;
mod subscription;

pub use checkpoint::{
    Checkpoint, CheckpointStatus, DeadLetter, LeaseState, MemoryCheckpoint, StoreCheckpoint,
    DEFAULT_LEASE,
};
pub use filter::{is_public, Filter};
pub use subscription::{Subscription, DEFAULT_MAX_LAG, DEFAULT_PAGE};

use thiserror::Error;

use crate::error::{Classified, ErrorKind};
use crate::store::StoreError;

/// Why a subscription or a checkpoint failed.
#[derive(Debug, Error)]
pub enum FeedError {
    /// The reader fell more than the allowed number of events behind the head; it should
    /// resubscribe from the last position it handled.
    #[error("the reader is {lag} events behind the head (at most {max_lag} allowed); resubscribe from position {position}")]
    TooFarBehind {
        /// The last position delivered to the reader.
        position: u64,
        /// How far behind it was.
        lag: u64,
        /// The limit.
        max_lag: u64,
    },
    /// Another node holds the delivery lease of this checkpoint's target.
    #[error("delivery target {target:?} is leased to node {holder:?}")]
    LeaseLost {
        /// The target.
        target: String,
        /// The node that holds it.
        holder: String,
    },
    /// A name (delivery target, node) is not acceptable.
    #[error("invalid {what} {value:?}: {reason}")]
    InvalidName {
        /// What was named.
        what: &'static str,
        /// The value given.
        value: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// A checkpoint stream holds an event this version cannot read.
    #[error("checkpoint stream {stream} at sequence {sequence}: {reason}")]
    Corrupt {
        /// The stream.
        stream: String,
        /// The event's sequence.
        sequence: u64,
        /// What is wrong.
        reason: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Classified for FeedError {
    fn kind(&self) -> ErrorKind {
        match self {
            FeedError::TooFarBehind { .. } => ErrorKind::ResourceExhausted,
            FeedError::LeaseLost { .. } => ErrorKind::Aborted,
            FeedError::InvalidName { .. } => ErrorKind::InvalidArgument,
            FeedError::Corrupt { .. } => ErrorKind::Internal,
            FeedError::Store(e) => e.kind(),
        }
    }

    fn id(&self) -> &'static str {
        match self {
            FeedError::TooFarBehind { .. } => "FEED-too-far-behind",
            FeedError::LeaseLost { .. } => "FEED-lease-lost",
            FeedError::InvalidName { .. } => "FEED-invalid-name",
            FeedError::Corrupt { .. } => "FEED-corrupt-checkpoint",
            FeedError::Store(e) => e.id(),
        }
    }

    fn message_key(&self) -> &'static str {
        match self {
            FeedError::TooFarBehind { .. } => "Errors.Feed.TooFarBehind",
            FeedError::LeaseLost { .. } => "Errors.Feed.LeaseLost",
            FeedError::InvalidName { .. } => "Errors.Feed.InvalidName",
            FeedError::Corrupt { .. } => "Errors.Internal",
            FeedError::Store(e) => e.message_key(),
        }
    }
}
