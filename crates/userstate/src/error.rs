//! Error kinds and their wire codes: the one place that maps a failure to a gRPC code and an
//! HTTP status (SPEC.md, "Errors on the wire"). Every front end asks [`ErrorKind`]; none keeps
//! its own table.

use std::fmt;

/// The kinds of failure a caller can tell apart, one per row of SPEC.md's error table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// Malformed id, body or JSON.
    InvalidArgument,
    /// A state rule of the user lifecycle forbids the command.
    FailedPrecondition,
    /// No token, or a token that is not known.
    Unauthenticated,
    /// The principal lacks the organisation or permission.
    PermissionDenied,
    /// The user does not exist (or was removed, or lives in another instance).
    NotFound,
    /// The user id or username is taken.
    AlreadyExists,
    /// A concurrency conflict that persisted through every retry.
    Aborted,
    /// Body too large, or a rate limit.
    ResourceExhausted,
    /// The store cannot be reached.
    Unavailable,
    /// A bug or an unexpected failure.
    Internal,
    /// Well formed, but an idempotency key already used for another request (SPEC.md
    /// "Idempotency keys"): 422 over HTTP, as the IETF Idempotency-Key draft answers, and
    /// InvalidArgument over gRPC.
    KeyReused,
}

impl ErrorKind {
    /// Every kind, in the order of SPEC.md's table (then the idempotency section's 422).
    pub const ALL: [ErrorKind; 11] = [
        ErrorKind::InvalidArgument,
        ErrorKind::FailedPrecondition,
        ErrorKind::Unauthenticated,
        ErrorKind::PermissionDenied,
        ErrorKind::NotFound,
        ErrorKind::AlreadyExists,
        ErrorKind::Aborted,
        ErrorKind::ResourceExhausted,
        ErrorKind::Unavailable,
        ErrorKind::Internal,
        ErrorKind::KeyReused,
    ];

    /// The gRPC status code (`google.rpc.Code`).
    pub fn grpc_code(self) -> i32 {
        match self {
            ErrorKind::InvalidArgument | ErrorKind::KeyReused => 3,
            ErrorKind::FailedPrecondition => 9,
            ErrorKind::Unauthenticated => 16,
            ErrorKind::PermissionDenied => 7,
            ErrorKind::NotFound => 5,
            ErrorKind::AlreadyExists => 6,
            ErrorKind::Aborted => 10,
            ErrorKind::ResourceExhausted => 8,
            ErrorKind::Unavailable => 14,
            ErrorKind::Internal => 13,
        }
    }

    /// The HTTP status of the JSON API.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorKind::InvalidArgument | ErrorKind::FailedPrecondition => 400,
            ErrorKind::Unauthenticated => 401,
            ErrorKind::PermissionDenied => 403,
            ErrorKind::NotFound => 404,
            ErrorKind::AlreadyExists | ErrorKind::Aborted => 409,
            ErrorKind::ResourceExhausted => 429,
            ErrorKind::Unavailable => 503,
            ErrorKind::Internal => 500,
            ErrorKind::KeyReused => 422,
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// What every userstate error tells a client: its kind, a stable id and a message key
/// (ZITADEL's `ErrorDetail`), besides its human message (`Display`).
pub trait Classified: std::error::Error {
    /// The kind, which fixes the gRPC code and HTTP status.
    fn kind(&self) -> ErrorKind;
    /// A stable id such as `COMMAND-olb9vb0oca`.
    fn id(&self) -> &'static str;
    /// A message key such as `Errors.User.NotLocked`.
    fn message_key(&self) -> &'static str;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_follow_the_spec_table() {
        let table: Vec<(i32, u16)> = ErrorKind::ALL
            .iter()
            .map(|k| (k.grpc_code(), k.http_status()))
            .collect();
        assert_eq!(
            table,
            vec![
                (3, 400),
                (9, 400),
                (16, 401),
                (7, 403),
                (5, 404),
                (6, 409),
                (10, 409),
                (8, 429),
                (14, 503),
                (13, 500),
                (3, 422)
            ]
        );
    }
}
