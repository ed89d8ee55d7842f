//! Exit codes and the error line: a script can tell success from a refused command from a
//! failure, and a person reads what failed and where, each cause once.
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | failure (I/O, internal error, verify found damage, import refused) |
//! | 2 | usage error (clap) |
//! | 3 | FailedPrecondition: the lifecycle rules refused the command |
//! | 4 | NotFound |
//! | 5 | AlreadyExists |
//! | 6 | InvalidArgument |
//! | 7 | PermissionDenied |
//! | 8 | Aborted: concurrent changes through every retry |
//! | 9 | Unavailable: the store cannot be reached now (or another process holds it); try again |
//!
//! Every failure goes through [`fail`] or [`report`]: the code comes from the first error in
//! the chain that the engine, the store or the domain classified, wherever in the program it
//! surfaced (a malformed id parsed before the engine runs is still InvalidArgument; a file
//! store locked by a running `serve` is still Unavailable).

use std::error::Error as StdError;
use std::process::ExitCode;

use userstate::transfer::TransferError;
use userstate::{Classified, DomainError, ErrorKind, StoreError};

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

/// What the engine, the store or the domain said about one error: kind, ZITADEL id, message
/// key.
struct Classification {
    kind: ErrorKind,
    id: String,
    key: String,
}

impl Classification {
    fn of(e: &dyn Classified) -> Self {
        Self {
            kind: e.kind(),
            id: e.id().to_owned(),
            key: e.message_key().to_owned(),
        }
    }
}

/// The classification of `e` itself (not of its causes), when it is one of the classified
/// error types.
fn classify_one(e: &(dyn StdError + 'static)) -> Option<Classification> {
    if let Some(e) = e.downcast_ref::<userstate::Error>() {
        return Some(Classification::of(e));
    }
    if let Some(e) = e.downcast_ref::<StoreError>() {
        return Some(Classification::of(e));
    }
    if let Some(e) = e.downcast_ref::<DomainError>() {
        return Some(Classification::of(e));
    }
    // What a server answered over the admin socket (`userstate token …` beside `serve`).
    #[cfg(unix)]
    if let Some(e) = e.downcast_ref::<userstate_server::admin::RemoteError>() {
        return Some(Classification {
            kind: e.error_kind().unwrap_or(ErrorKind::Internal),
            id: e.id.clone(),
            key: e.key.clone(),
        });
    }
    match e.downcast_ref::<TransferError>() {
        // "Try again" is true of an unreachable store; a conflict with what the target
        // already holds is an import refused (1): retrying never helps.
        Some(TransferError::Store(store)) if store.kind() == ErrorKind::Unavailable => {
            Some(Classification::of(store))
        }
        _ => None,
    }
}

/// The first classified error in the chain of `err`.
fn classify(err: &(dyn StdError + 'static)) -> Option<Classification> {
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(c) = classify_one(e) {
            return Some(c);
        }
        next = e.source();
    }
    None
}

/// `err` and its causes on one line, `what: why: why`, each cause once: a cause whose text
/// the error before it already shows (error types that print their source in their own
/// message, as `std::io::Error` wrappers often do) is not repeated.
pub fn describe(err: &(dyn StdError + 'static)) -> String {
    let mut line = err.to_string();
    let mut previous = line.clone();
    let mut cause = err.source();
    while let Some(e) = cause {
        let text = e.to_string();
        if !previous.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        previous = text;
        cause = e.source();
    }
    line
}

/// Reports `err` on stderr (its causes, and kind, id and message key when classified) and
/// returns its exit code: the classified kind's, 1 otherwise.
pub fn fail(err: &(dyn StdError + 'static)) -> ExitCode {
    let line = describe(err);
    match classify(err) {
        Some(c) => {
            eprintln!("error: {line} ({}, {}: {})", c.kind, c.id, c.key);
            ExitCode::from(code_for(c.kind))
        }
        None => {
            eprintln!("error: {line}");
            ExitCode::FAILURE
        }
    }
}

/// Reports an engine error on stderr (message and causes, kind, id and message key) and
/// returns its exit code.
pub fn report(err: &userstate::Error) -> ExitCode {
    fail(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An error that prints its source in its own message and also returns it as its source.
    #[derive(Debug, thiserror::Error)]
    #[error("cannot serve on 127.0.0.1:8080: {0}")]
    struct Bind(#[source] std::io::Error);

    fn in_use() -> std::io::Error {
        std::io::Error::from(std::io::ErrorKind::AddrInUse)
    }

    #[test]
    fn a_cause_already_in_the_message_is_not_repeated() {
        let cause = in_use().to_string();
        let err = anyhow::Error::new(Bind(in_use())).context("starting the server");
        let line = describe(err.as_ref());
        assert_eq!(
            line,
            format!("starting the server: cannot serve on 127.0.0.1:8080: {cause}")
        );
        assert_eq!(line.matches(&cause).count(), 1, "{line}");
    }

    #[test]
    fn causes_not_in_the_message_are_kept() {
        let err = anyhow::Error::new(in_use())
            .context("binding")
            .context("starting the server");
        assert_eq!(
            describe(err.as_ref()),
            format!("starting the server: binding: {}", in_use())
        );
    }

    #[test]
    fn the_code_is_the_classified_causes_wherever_it_is_in_the_chain() {
        let malformed = userstate::UserId::new("bad id").unwrap_err();
        let err = anyhow::Error::new(malformed).context("reading the history");
        assert_eq!(
            classify(err.as_ref()).map(|c| c.kind),
            Some(ErrorKind::InvalidArgument)
        );
        let held = StoreError::Unavailable {
            message: "lock file x is locked".into(),
            source: None,
        };
        let err = anyhow::Error::new(held).context("cannot open the file store in d");
        assert_eq!(
            classify(err.as_ref()).map(|c| c.kind),
            Some(ErrorKind::Unavailable)
        );
        let err = anyhow::Error::new(in_use()).context("x");
        assert!(classify(err.as_ref()).is_none());
    }
}
