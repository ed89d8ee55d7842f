//! The user lifecycle as a pure state machine: ids, states, events, commands and the rules of
//! SPEC.md. Nothing here does I/O, reads a clock or needs a runtime, so every rule is testable
//! with plain function calls.

mod claims;
mod command;
mod error;
mod event;
mod ids;
mod lockout;
mod state;
mod stream;
mod token;
mod user;

pub use claims::{KeyClaim, KeyClaimed, UsernameClaim, UsernameEvent};
pub use command::{
    canonical_username, validate_add, validate_username, AddUser, AuthOutcome, LockFor,
    UserCommand, MAX_EMAIL_LEN, MAX_PROFILE_FIELD_LEN, MAX_USERNAME_LEN,
};
pub use error::DomainError;
pub use event::{
    CheckFailed, DecodeError, Email, PayloadSource, Profile, UserAdded, UserEvent, UserLocked,
    UserUnlocked, EVENT_REVISION,
};
pub use ids::{InstanceId, OrgId, TokenId, UserId, MAX_ID_LEN};
pub use lockout::{
    check_duration, format_duration, parse_duration, proto_duration, AuthMethod, LockoutPolicy,
    LockoutPolicySet, LockoutPolicyStream, MAX_POLICY_DURATION,
};
pub use state::UserState;
pub use stream::{instance_of, StreamKind, StreamName};
pub use token::{
    TokenCreated, TokenEvent, TokenRecord, TokenRegistry, TokenStatus, MAX_SUBJECT_LEN,
};
pub use user::{User, UserData};

#[cfg(test)]
mod lockout_tests;
#[cfg(test)]
mod tests;
