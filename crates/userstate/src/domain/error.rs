//! Why the domain refuses a command: the rows of SPEC.md's precondition table, each with the
//! ZITADEL error id and message key a client already knows.

use thiserror::Error;

use super::{UserId, UserState};
use crate::error::{Classified, ErrorKind};

/// A command refused by the user lifecycle rules, or input that is not well formed.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum DomainError {
    /// An id is empty, too long or has characters outside the safe set.
    #[error("{what} {value:?} {reason}")]
    InvalidId {
        /// Which id ("user id", "organisation id", …).
        what: &'static str,
        /// The offending value (shortened when very long).
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Another field of a command is not acceptable.
    #[error("{field} {reason}")]
    InvalidArgument {
        /// The field's wire name.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The user does not exist or was removed.
    #[error("user \"{0}\" not found")]
    NotFound(UserId),
    /// The user id is already used in this instance (also by a removed user).
    #[error("user \"{0}\" already exists")]
    AlreadyExists(UserId),
    /// The username is already used in this instance.
    #[error("username {0:?} is already taken")]
    UsernameTaken(String),
    /// Deactivate on a user still in the initial state.
    #[error("user \"{0}\" is in the initial state and cannot be deactivated")]
    CantDeactivateInitial(UserId),
    /// Deactivate on a user that is already inactive.
    #[error("user \"{0}\" is already inactive")]
    AlreadyInactive(UserId),
    /// Reactivate on a user that is not inactive.
    #[error("user \"{0}\" is not inactive (state: {1})")]
    NotInactive(UserId, UserState),
    /// Lock on a user that is neither active nor initial.
    #[error("user \"{0}\" is neither active nor initial (state: {1})")]
    ShouldBeActiveOrInitial(UserId, UserState),
    /// Unlock on a user that is not locked.
    #[error("user \"{0}\" is not locked (state: {1})")]
    NotLocked(UserId, UserState),
    /// Erase on a user that exists but was not removed.
    #[error("user \"{0}\" is not removed (state: {1}); only a removed user can be erased")]
    NotRemoved(UserId, UserState),
    /// The system's unlock of a lock that has no end, or whose end has not passed.
    #[error("the lock of user \"{0}\" has not expired")]
    LockNotExpired(UserId),
    /// No token has this id, and no live token has this subject (`token revoke ID|SUBJECT`).
    #[error("no token with id or subject {0:?}")]
    TokenNotFound(String),
    /// A token with this id, or with this secret's hash, exists already.
    #[error("token {0:?} already exists")]
    TokenExists(String),
    /// Revoke on a token that is already revoked.
    #[error("token \"{0}\" is already revoked")]
    TokenAlreadyRevoked(super::TokenId),
}

impl Classified for DomainError {
    fn kind(&self) -> ErrorKind {
        match self {
            DomainError::InvalidId { .. } | DomainError::InvalidArgument { .. } => {
                ErrorKind::InvalidArgument
            }
            DomainError::NotFound(_) | DomainError::TokenNotFound(_) => ErrorKind::NotFound,
            DomainError::AlreadyExists(_)
            | DomainError::UsernameTaken(_)
            | DomainError::TokenExists(_) => ErrorKind::AlreadyExists,
            DomainError::CantDeactivateInitial(_)
            | DomainError::AlreadyInactive(_)
            | DomainError::NotInactive(..)
            | DomainError::ShouldBeActiveOrInitial(..)
            | DomainError::NotLocked(..)
            | DomainError::LockNotExpired(_)
            | DomainError::NotRemoved(..)
            | DomainError::TokenAlreadyRevoked(_) => ErrorKind::FailedPrecondition,
        }
    }

    fn id(&self) -> &'static str {
        match self {
            DomainError::InvalidId { .. } => "USERSTATE-invalid-id",
            DomainError::InvalidArgument { .. } => "USERSTATE-invalid-argument",
            DomainError::NotFound(_) => "COMMAND-450yxuqrh1",
            DomainError::AlreadyExists(_) | DomainError::UsernameTaken(_) => "COMMAND-7yiox1isql",
            DomainError::CantDeactivateInitial(_) => "COMMAND-gvx4kct9r2",
            DomainError::AlreadyInactive(_) => "COMMAND-5gunjw0cd7",
            DomainError::NotInactive(..) => "COMMAND-s5qqcz97hf",
            DomainError::ShouldBeActiveOrInitial(..) => "COMMAND-lgws8wtsqf",
            DomainError::NotLocked(..) => "COMMAND-olb9vb0oca",
            DomainError::LockNotExpired(_) => "USERSTATE-lock-not-expired",
            DomainError::TokenNotFound(_) => "USERSTATE-token-not-found",
            DomainError::TokenExists(_) => "USERSTATE-token-exists",
            DomainError::TokenAlreadyRevoked(_) => "USERSTATE-token-revoked",
            DomainError::NotRemoved(..) => "USERSTATE-not-removed",
        }
    }

    fn message_key(&self) -> &'static str {
        match self {
            DomainError::InvalidId { .. } => "Errors.Invalid.Id",
            DomainError::InvalidArgument { .. } => "Errors.Invalid.Argument",
            DomainError::NotFound(_) => "Errors.User.NotFound",
            DomainError::AlreadyExists(_) | DomainError::UsernameTaken(_) => {
                "Errors.User.AlreadyExisting"
            }
            DomainError::CantDeactivateInitial(_) => "Errors.User.CantDeactivateInitial",
            DomainError::AlreadyInactive(_) => "Errors.User.AlreadyInactive",
            DomainError::NotInactive(..) => "Errors.User.NotInactive",
            DomainError::ShouldBeActiveOrInitial(..) => "Errors.User.ShouldBeActiveOrInitial",
            DomainError::NotLocked(..) => "Errors.User.NotLocked",
            DomainError::LockNotExpired(_) => "Errors.User.LockNotExpired",
            DomainError::TokenNotFound(_) => "Errors.Token.NotFound",
            DomainError::TokenExists(_) => "Errors.Token.AlreadyExisting",
            DomainError::TokenAlreadyRevoked(_) => "Errors.Token.AlreadyRevoked",
            DomainError::NotRemoved(..) => "Errors.User.NotRemoved",
        }
    }
}

impl DomainError {
    /// Shorthand for [`Classified::kind`], so callers need not import the trait.
    pub fn kind(&self) -> ErrorKind {
        Classified::kind(self)
    }
}
