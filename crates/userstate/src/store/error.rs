//! Store failures, kept apart from domain rejections.

use thiserror::Error;

use super::{ExpectedVersion, StreamId};
use crate::error::{Classified, ErrorKind};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a store operation failed.
#[derive(Debug, Error)]
pub enum StoreError {
    /// The stream's version did not match; nothing was written.
    #[error("stream {stream} expected {expected}, but its version is {actual}")]
    Conflict {
        /// The stream appended to.
        stream: StreamId,
        /// What the caller expected.
        expected: ExpectedVersion,
        /// The stream's actual last sequence (0: no events).
        actual: u64,
    },
    /// The request itself is malformed (empty batch, bad stream name, …).
    #[error("invalid store request: {0}")]
    InvalidArgument(String),
    /// The store cannot be reached now; the same call may succeed later.
    #[error("store unavailable: {message}")]
    Unavailable {
        /// What happened.
        message: String,
        /// The underlying failure.
        #[source]
        source: Option<BoxError>,
    },
    /// Stored data failed a check (checksum, framing, ordering).
    #[error("store data is corrupt at {location}: {reason}")]
    Corrupt {
        /// File and offset, or table and key.
        location: String,
        /// What is wrong.
        reason: String,
    },
    /// An I/O failure of a local store.
    #[error("store I/O failed: {0}")]
    Io(#[from] std::io::Error),
    /// Any other backend failure.
    #[error("store failed: {message}")]
    Backend {
        /// What happened.
        message: String,
        /// The underlying failure.
        #[source]
        source: Option<BoxError>,
    },
}

impl StoreError {
    /// An `Unavailable` error with its cause.
    pub fn unavailable(message: impl Into<String>, source: impl Into<BoxError>) -> Self {
        StoreError::Unavailable {
            message: message.into(),
            source: Some(source.into()),
        }
    }

    /// A `Backend` error with its cause.
    pub fn backend(message: impl Into<String>, source: impl Into<BoxError>) -> Self {
        StoreError::Backend {
            message: message.into(),
            source: Some(source.into()),
        }
    }
}

impl Classified for StoreError {
    fn kind(&self) -> ErrorKind {
        match self {
            StoreError::Conflict { .. } => ErrorKind::Aborted,
            StoreError::InvalidArgument(_) => ErrorKind::InvalidArgument,
            StoreError::Unavailable { .. } => ErrorKind::Unavailable,
            StoreError::Corrupt { .. } | StoreError::Io(_) | StoreError::Backend { .. } => {
                ErrorKind::Internal
            }
        }
    }

    fn id(&self) -> &'static str {
        match self {
            StoreError::Conflict { .. } => "STORE-conflict",
            StoreError::InvalidArgument(_) => "STORE-invalid-argument",
            StoreError::Unavailable { .. } => "STORE-unavailable",
            StoreError::Corrupt { .. } => "STORE-corrupt",
            StoreError::Io(_) => "STORE-io",
            StoreError::Backend { .. } => "STORE-backend",
        }
    }

    fn message_key(&self) -> &'static str {
        match self {
            StoreError::Conflict { .. } => "Errors.Store.Conflict",
            StoreError::InvalidArgument(_) => "Errors.Store.InvalidArgument",
            StoreError::Unavailable { .. } => "Errors.Store.Unavailable",
            _ => "Errors.Internal",
        }
    }
}
