//! The engine's error: a domain rejection, an authorisation failure or a store failure, each
//! kept apart so a caller can tell a business "no" from a broken disk.

use thiserror::Error;

use super::auth::Permission;
use crate::domain::{DomainError, UserId};
use crate::error::{Classified, ErrorKind};
use crate::store::StoreError;

/// Why [`Engine::execute`](super::Engine::execute) or a read failed.
#[derive(Debug, Error)]
pub enum Error {
    /// The lifecycle rules refused the command, or the input is malformed.
    #[error(transparent)]
    Domain(#[from] DomainError),
    /// The principal lacks the permission on the user's organisation.
    #[error("{subject:?} lacks {} on organisation {org:?}", permission.name())]
    PermissionDenied {
        /// The caller.
        subject: String,
        /// The organisation of the user acted on.
        org: String,
        /// The permission needed.
        permission: Permission,
    },
    /// The principal tried to lock, deactivate or remove itself (ours, SPEC.md).
    #[error("\"{0}\" may not {1} itself")]
    SelfAction(UserId, &'static str),
    /// Concurrent writers kept changing the user through every retry.
    #[error("user \"{user}\" changed concurrently {attempts} times; try again")]
    Aborted {
        /// The user.
        user: UserId,
        /// How often the engine tried.
        attempts: u32,
    },
    /// The idempotency key was first used for another operation, user or parameters.
    #[error("idempotency key already used for {operation} on user \"{user}\"; use a new key for a new request")]
    IdempotencyKeyReused {
        /// The first request's operation (`unlock`, …).
        operation: String,
        /// The first request's user.
        user: String,
    },
    /// The read model did not reach a position in time.
    #[error(
        "the read model did not reach position {position} within {waited_ms} ms (at {reached})"
    )]
    NotCaughtUp {
        /// The position waited for.
        position: u64,
        /// Where the read model is.
        reached: u64,
        /// How long it waited.
        waited_ms: u64,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored event could not be read as a user event.
    #[error("stored event {stream} #{sequence} cannot be read: {source}")]
    Decode {
        /// The stream.
        stream: String,
        /// The event's sequence.
        sequence: u64,
        /// Why.
        #[source]
        source: crate::domain::DecodeError,
    },
}

impl Classified for Error {
    fn kind(&self) -> ErrorKind {
        match self {
            Error::Domain(e) => e.kind(),
            Error::PermissionDenied { .. } | Error::SelfAction(..) => ErrorKind::PermissionDenied,
            Error::Aborted { .. } => ErrorKind::Aborted,
            Error::IdempotencyKeyReused { .. } => ErrorKind::KeyReused,
            Error::NotCaughtUp { .. } => ErrorKind::Unavailable,
            Error::Store(e) => e.kind(),
            Error::Decode { .. } => ErrorKind::Internal,
        }
    }

    fn id(&self) -> &'static str {
        match self {
            Error::Domain(e) => e.id(),
            Error::PermissionDenied { .. } => "AUTH-permission-denied",
            Error::SelfAction(..) => "AUTH-self-action",
            Error::Aborted { .. } => "COMMAND-concurrent-change",
            Error::IdempotencyKeyReused { .. } => "COMMAND-idempotency-key-reused",
            Error::NotCaughtUp { .. } => "QUERY-not-caught-up",
            Error::Store(e) => e.id(),
            Error::Decode { .. } => "STORE-undecodable-event",
        }
    }

    fn message_key(&self) -> &'static str {
        match self {
            Error::Domain(e) => e.message_key(),
            Error::PermissionDenied { .. } => "Errors.PermissionDenied",
            Error::SelfAction(..) => "Errors.User.NotAllowedOnSelf",
            Error::Aborted { .. } => "Errors.ConcurrentChange",
            Error::IdempotencyKeyReused { .. } => "Errors.IdempotencyKey.Reused",
            Error::NotCaughtUp { .. } => "Errors.Projection.NotCaughtUp",
            Error::Store(e) => e.message_key(),
            Error::Decode { .. } => "Errors.Internal",
        }
    }
}

impl Error {
    /// Shorthand for [`Classified::kind`].
    pub fn kind(&self) -> ErrorKind {
        Classified::kind(self)
    }
}
