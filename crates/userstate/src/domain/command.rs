//! The commands of SPEC.md: what a caller asks of one user.

use super::{DomainError, Email, OrgId, Profile, UserId};

/// The longest username accepted, in characters.
pub const MAX_USERNAME_LEN: usize = 200;

/// Everything needed to add a human user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddUser {
    /// The new user's id (generate one with [`UserId::generate`] when the caller gave none).
    pub user_id: UserId,
    /// The login name, unique per instance.
    pub username: String,
    /// The organisation that will own the user.
    pub organization: OrgId,
    /// Optional profile.
    pub profile: Option<Profile>,
    /// Optional email.
    pub email: Option<Email>,
    /// Start in the initial state instead of active.
    pub initial: bool,
}

/// A request to change one user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UserCommand {
    /// Add a human user.
    Add(AddUser),
    /// Deactivate: active or locked -> inactive.
    Deactivate(UserId),
    /// Reactivate: inactive -> active.
    Reactivate(UserId),
    /// Lock: active or initial -> locked.
    Lock(UserId),
    /// Unlock: locked -> active.
    Unlock(UserId),
    /// Remove: any existing user -> deleted (terminal).
    Remove(UserId),
}

impl UserCommand {
    /// The user the command is about.
    pub fn user_id(&self) -> &UserId {
        match self {
            UserCommand::Add(add) => &add.user_id,
            UserCommand::Deactivate(id)
            | UserCommand::Reactivate(id)
            | UserCommand::Lock(id)
            | UserCommand::Unlock(id)
            | UserCommand::Remove(id) => id,
        }
    }

    /// A short lowercase name for logs and metrics: `add`, `lock`, …
    pub fn name(&self) -> &'static str {
        match self {
            UserCommand::Add(_) => "add",
            UserCommand::Deactivate(_) => "deactivate",
            UserCommand::Reactivate(_) => "reactivate",
            UserCommand::Lock(_) => "lock",
            UserCommand::Unlock(_) => "unlock",
            UserCommand::Remove(_) => "remove",
        }
    }
}

/// Checks a username: non-empty after trimming, at most [`MAX_USERNAME_LEN`] characters, no
/// control characters or surrounding whitespace.
pub fn validate_username(username: &str) -> Result<(), DomainError> {
    let reason = if username.trim().is_empty() {
        "must not be empty"
    } else if username.chars().count() > MAX_USERNAME_LEN {
        "is longer than 200 characters"
    } else if username.chars().any(char::is_control) {
        "must not contain control characters"
    } else if username.trim() != username {
        "must not start or end with whitespace"
    } else {
        return Ok(());
    };
    Err(DomainError::InvalidArgument {
        field: "username",
        reason: reason.to_owned(),
    })
}
