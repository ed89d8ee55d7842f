//! Mapping PostgreSQL failures to [`StoreError`], by SQLSTATE and error kind — never by
//! message text.

use std::sync::Arc;

use deadpool_postgres::PoolError;
use tokio_postgres::error::SqlState;
use userstate::StoreError;

/// What a failed statement means for the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Failure {
    /// A unique violation (23505), serialisation failure (40001) or deadlock (40P01): another
    /// writer got there first; re-check the versions.
    Conflict,
    /// The server is down, restarting, refusing connections or killed our session.
    Unavailable,
    /// The server rejected the data itself (SQLSTATE class 22, e.g. `\u0000` in jsonb).
    InvalidData,
    /// Anything else: a bug or a schema problem.
    Other,
}

/// Classifies a `tokio_postgres` error.
pub(crate) fn classify(e: &tokio_postgres::Error) -> Failure {
    match e.code() {
        Some(code) => classify_sqlstate(code),
        // No SQLSTATE: a client-side failure. A closed connection or an I/O error (refused,
        // reset, connect timeout) means the server is unreachable.
        None if e.is_closed() || io_source(e) => Failure::Unavailable,
        None => Failure::Other,
    }
}

fn io_source(e: &tokio_postgres::Error) -> bool {
    std::error::Error::source(e).is_some_and(|s| s.downcast_ref::<std::io::Error>().is_some())
}

/// Classifies a SQLSTATE.
pub(crate) fn classify_sqlstate(code: &SqlState) -> Failure {
    const CONFLICT: &[SqlState] = &[
        SqlState::UNIQUE_VIOLATION,
        SqlState::T_R_SERIALIZATION_FAILURE,
        SqlState::T_R_DEADLOCK_DETECTED,
    ];
    const UNAVAILABLE: &[SqlState] = &[
        SqlState::ADMIN_SHUTDOWN,
        SqlState::CRASH_SHUTDOWN,
        SqlState::CANNOT_CONNECT_NOW,
        SqlState::TOO_MANY_CONNECTIONS,
        SqlState::IDLE_IN_TRANSACTION_SESSION_TIMEOUT,
        SqlState::IDLE_SESSION_TIMEOUT,
        SqlState::QUERY_CANCELED,
        SqlState::LOCK_NOT_AVAILABLE,
        SqlState::READ_ONLY_SQL_TRANSACTION,
    ];
    if CONFLICT.contains(code) {
        Failure::Conflict
    } else if UNAVAILABLE.contains(code) || code.code().starts_with("08") {
        // Class 08: connection exceptions.
        Failure::Unavailable
    } else if code.code().starts_with("22") {
        Failure::InvalidData
    } else {
        Failure::Other
    }
}

/// Converts a `tokio_postgres` error into a [`StoreError`], describing `what` was attempted.
/// Conflicts need the stream's actual version and are built by the caller; here they become
/// `Backend` errors.
pub(crate) fn store_error(what: &str, e: tokio_postgres::Error) -> StoreError {
    match classify(&e) {
        Failure::Unavailable => {
            StoreError::unavailable(format!("{what}: PostgreSQL unavailable"), e)
        }
        Failure::InvalidData => StoreError::InvalidArgument(format!("{what}: {e}")),
        Failure::Conflict | Failure::Other => StoreError::backend(what.to_string(), e),
    }
}

/// Converts a pool error (timeout waiting for or creating a connection, refused connection).
pub(crate) fn pool_error(e: PoolError) -> StoreError {
    match e {
        PoolError::Backend(e) => store_error("getting a connection", e),
        other => StoreError::unavailable("getting a connection from the pool", other),
    }
}

/// An operation did not finish within the configured timeout.
pub(crate) fn timed_out(what: &str, timeout: std::time::Duration) -> StoreError {
    StoreError::Unavailable {
        message: format!("{what} did not finish within {} ms", timeout.as_millis()),
        source: None,
    }
}

/// A copy of `e` for every caller of a failed batch. The cause is shared, not cloned.
pub(crate) fn share(e: &Arc<StoreError>) -> StoreError {
    match &**e {
        StoreError::Unavailable { message, .. } => StoreError::Unavailable {
            message: message.clone(),
            source: Some(Box::new(e.clone())),
        },
        StoreError::InvalidArgument(m) => StoreError::InvalidArgument(m.clone()),
        StoreError::Conflict {
            stream,
            expected,
            actual,
        } => StoreError::Conflict {
            stream: stream.clone(),
            expected: *expected,
            actual: *actual,
        },
        other => StoreError::Backend {
            message: other.to_string(),
            source: Some(Box::new(e.clone())),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstates_map_to_failures() {
        assert_eq!(
            classify_sqlstate(&SqlState::UNIQUE_VIOLATION),
            Failure::Conflict
        );
        assert_eq!(
            classify_sqlstate(&SqlState::T_R_SERIALIZATION_FAILURE),
            Failure::Conflict
        );
        assert_eq!(
            classify_sqlstate(&SqlState::ADMIN_SHUTDOWN),
            Failure::Unavailable
        );
        assert_eq!(
            classify_sqlstate(&SqlState::CONNECTION_FAILURE),
            Failure::Unavailable
        );
        assert_eq!(
            classify_sqlstate(&SqlState::UNTRANSLATABLE_CHARACTER),
            Failure::InvalidData
        );
        assert_eq!(
            classify_sqlstate(&SqlState::UNDEFINED_TABLE),
            Failure::Other
        );
    }
}
