//! The user lifecycle as a pure state machine: ids, states, events, commands and the rules of
//! SPEC.md. Nothing here does I/O, reads a clock or needs a runtime, so every rule is testable
//! with plain function calls.

mod claims;
mod command;
mod error;
mod event;
mod ids;
mod state;
mod stream;
mod user;

pub use claims::{KeyClaim, KeyClaimed, UsernameClaim, UsernameEvent};
pub use command::{
    canonical_username, validate_add, validate_username, AddUser, UserCommand, MAX_EMAIL_LEN,
    MAX_PROFILE_FIELD_LEN, MAX_USERNAME_LEN,
};
pub use error::DomainError;
pub use event::{DecodeError, Email, Profile, UserAdded, UserEvent, EVENT_REVISION};
pub use ids::{InstanceId, OrgId, UserId, MAX_ID_LEN};
pub use state::UserState;
pub use stream::{instance_of, StreamKind, StreamName};
pub use user::{User, UserData};

#[cfg(test)]
mod tests;
