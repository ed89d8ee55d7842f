//! Exit codes: a script can tell success from a refused command from a failure.
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | failure (store unreachable, I/O, internal error, verify found damage) |
//! | 2 | usage error (clap) |
//! | 3 | FailedPrecondition: the lifecycle rules refused the command |
//! | 4 | NotFound |
//! | 5 | AlreadyExists |
//! | 6 | InvalidArgument |
//! | 7 | PermissionDenied |
//! | 8 | Aborted: concurrent changes through every retry |
//! | 9 | Unavailable: the store cannot be reached now; try again |

use std::process::ExitCode;

use userstate::{Classified, ErrorKind};

/// The exit code for an error the engine classified.
pub fn code_for(kind: ErrorKind) -> u8 {
    match kind {
        ErrorKind::FailedPrecondition => 3,
        ErrorKind::NotFound => 4,
        ErrorKind::AlreadyExists => 5,
        ErrorKind::InvalidArgument | ErrorKind::KeyReused => 6,
        ErrorKind::PermissionDenied | ErrorKind::Unauthenticated => 7,
        ErrorKind::Aborted => 8,
        ErrorKind::Unavailable => 9,
        ErrorKind::ResourceExhausted | ErrorKind::Internal => 1,
    }
}

/// Reports `err` on stderr (message, id and kind) and returns its exit code.
pub fn report(err: &userstate::Error) -> ExitCode {
    eprintln!(
        "error: {err} ({}, {}: {})",
        err.kind(),
        err.id(),
        err.message_key()
    );
    ExitCode::from(code_for(err.kind()))
}
