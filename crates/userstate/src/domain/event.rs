//! The events of a user's stream, their stable type strings and JSON payloads.
//!
//! Type strings and payload shapes are part of the stored format: they never change meaning. A
//! payload change gets a new `revision`, and [`UserEvent::decode`] keeps reading the old ones.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::{AuthMethod, OrgId, UserState};

/// The payload schema revision written with every event of this version of userstate.
pub const EVENT_REVISION: u16 = 1;

/// A user's profile, as given on add.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Profile {
    /// Given (first) name.
    #[serde(default)]
    pub given_name: String,
    /// Family (last) name.
    #[serde(default)]
    pub family_name: String,
}

/// A user's email address, as given on add.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Email {
    /// The address.
    #[serde(default)]
    pub email: String,
    /// Whether the address was verified when given.
    #[serde(default)]
    pub is_verified: bool,
}

/// Payload of `user.human.added`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserAdded {
    /// The login name, unique per instance. Empty in a stored payload (it is sealed there, see
    /// `crate::crypto`) and once the user was erased.
    #[serde(default)]
    pub username: String,
    /// The organisation that owns the user.
    pub resource_owner: OrgId,
    /// Profile, if given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<Profile>,
    /// Email, if given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<Email>,
    /// Whether the user starts in the initial state.
    #[serde(default)]
    pub initial: bool,
    /// Set when the personal data (username, profile, email) was erased: the user's key is
    /// gone, the fields are empty (SPEC.md "Erasure and tamper evidence"). Never stored: a
    /// read of the sealed payload without its key sets it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub erased: bool,
}

/// Payload of `user.locked`. Locks written before issue 24 have an empty payload: a lock by
/// hand until unlocked by hand.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserLocked {
    /// Why: [`UserLocked::LOCKOUT_POLICY`] for a lock the policy made; absent for a lock by hand.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When the lock expires by itself; absent for a lock until unlocked by hand.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locked_until: Option<DateTime<Utc>>,
}

impl UserLocked {
    /// The reason of a lock made by the lockout policy.
    pub const LOCKOUT_POLICY: &'static str = "lockout-policy";
}

/// Payload of `user.unlocked`. Unlocks written before issue 24 (and every unlock by hand) have
/// an empty payload.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserUnlocked {
    /// Why: [`UserUnlocked::LOCK_EXPIRED`] for the unlock of a timed lock; absent by hand.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl UserUnlocked {
    /// The reason of the unlock appended when `lockedUntil` passed.
    pub const LOCK_EXPIRED: &'static str = "lock-expired";
}

/// Payload of a failed check (`user.human.password.check.failed`,
/// `user.human.mfa.otp.check.failed`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckFailed {
    /// Failed checks of this method in a row, this one included: the count the decision made,
    /// after the policy's `failureResetAfter` window (so the fold needs no policy).
    #[serde(default)]
    pub failed_attempts: u32,
}

/// One fact in a user's history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UserEvent {
    /// `user.human.added`
    Added(UserAdded),
    /// `user.deactivated`
    Deactivated,
    /// `user.reactivated`
    Reactivated,
    /// `user.locked`
    Locked(UserLocked),
    /// `user.unlocked`
    Unlocked(UserUnlocked),
    /// `user.removed`
    Removed,
    /// `user.human.password.check.failed` / `user.human.mfa.otp.check.failed`
    CheckFailed(AuthMethod, CheckFailed),
    /// `user.human.password.check.succeeded` / `user.human.mfa.otp.check.succeeded`
    CheckSucceeded(AuthMethod),
    /// `user.erased`: the user's personal data was erased (its key destroyed); the user stays
    /// removed.
    Erased,
}

/// A stored event that is not a user event this version understands.
#[derive(Debug, Error)]
pub enum DecodeError {
    /// The type string is not one of SPEC.md's.
    #[error("unknown event type {0:?}")]
    UnknownType(String),
    /// The revision is newer than this version of userstate reads.
    #[error("event type {event_type:?} has revision {revision}, this version reads up to {EVENT_REVISION}")]
    UnknownRevision {
        /// The type string.
        event_type: String,
        /// The stored revision.
        revision: u16,
    },
    /// The payload does not match the type's schema.
    #[error("payload of {event_type:?} does not match its schema: {source}")]
    Payload {
        /// The type string.
        event_type: String,
        /// What serde found.
        #[source]
        source: serde_json::Error,
    },
}

/// A payload a decoder parses only for the event types that carry data: a parsed JSON value, or
/// a store's lent bytes.
pub trait PayloadSource {
    /// Deserializes the payload into `T`.
    fn parse<T: serde::de::DeserializeOwned>(self) -> Result<T, serde_json::Error>;
}

impl PayloadSource for &serde_json::Value {
    fn parse<T: serde::de::DeserializeOwned>(self) -> Result<T, serde_json::Error> {
        T::deserialize(self)
    }
}

impl UserEvent {
    /// Every type string of a user event, as stored.
    pub const TYPES: [&'static str; 11] = [
        "user.human.added",
        "user.deactivated",
        "user.reactivated",
        "user.locked",
        "user.unlocked",
        "user.removed",
        "user.human.password.check.failed",
        "user.human.mfa.otp.check.failed",
        "user.human.password.check.succeeded",
        "user.human.mfa.otp.check.succeeded",
        "user.erased",
    ];

    /// The stable type string, e.g. `user.locked`.
    pub fn event_type(&self) -> &'static str {
        Self::TYPES[match self {
            UserEvent::Added(_) => 0,
            UserEvent::Deactivated => 1,
            UserEvent::Reactivated => 2,
            UserEvent::Locked(_) => 3,
            UserEvent::Unlocked(_) => 4,
            UserEvent::Removed => 5,
            UserEvent::CheckFailed(AuthMethod::Password, _) => 6,
            UserEvent::CheckFailed(AuthMethod::Otp, _) => 7,
            UserEvent::CheckSucceeded(AuthMethod::Password) => 8,
            UserEvent::CheckSucceeded(AuthMethod::Otp) => 9,
            UserEvent::Erased => 10,
        }]
    }

    /// The state a user is in after this event (`None`: the event leaves the state as it was):
    /// the one event -> state mapping, folded by the aggregate
    /// ([`User::apply`](super::User::apply)) and the read model alike.
    pub fn state_after(&self) -> Option<UserState> {
        Some(match self {
            UserEvent::Added(added) if added.initial => UserState::Initial,
            UserEvent::Added(_) | UserEvent::Reactivated | UserEvent::Unlocked(_) => {
                UserState::Active
            }
            UserEvent::Deactivated => UserState::Inactive,
            UserEvent::Locked(_) => UserState::Locked,
            UserEvent::Removed => UserState::Deleted,
            UserEvent::CheckFailed(..) | UserEvent::CheckSucceeded(_) | UserEvent::Erased => {
                return None
            }
        })
    }

    /// The JSON payload stored with the event (`{}` for events without data).
    pub fn payload(&self) -> serde_json::Value {
        let value = match self {
            UserEvent::Added(added) => serde_json::to_value(added),
            UserEvent::Locked(locked) => serde_json::to_value(locked),
            UserEvent::Unlocked(unlocked) => serde_json::to_value(unlocked),
            UserEvent::CheckFailed(_, failed) => serde_json::to_value(failed),
            _ => Ok(serde_json::Value::Object(serde_json::Map::new())),
        };
        value.expect("user payloads have only strings, numbers, bools and times")
    }

    /// Reads a stored event back.
    pub fn decode(
        event_type: &str,
        revision: u16,
        payload: &serde_json::Value,
    ) -> Result<Self, DecodeError> {
        Self::decode_with(event_type, revision, payload)
    }

    /// Like [`decode`](Self::decode), for a payload that may not be parsed yet: `payload` is
    /// parsed only for the types whose payload carries data (added, locked, unlocked, a failed
    /// check), so a fold over millions of state changes parses few of them.
    pub fn decode_with(
        event_type: &str,
        revision: u16,
        payload: impl PayloadSource,
    ) -> Result<Self, DecodeError> {
        if revision > EVENT_REVISION {
            return Err(DecodeError::UnknownRevision {
                event_type: event_type.to_owned(),
                revision,
            });
        }
        let schema = |source| DecodeError::Payload {
            event_type: event_type.to_owned(),
            source,
        };
        Ok(match event_type {
            "user.human.added" => UserEvent::Added(payload.parse().map_err(schema)?),
            "user.deactivated" => UserEvent::Deactivated,
            "user.reactivated" => UserEvent::Reactivated,
            "user.locked" => UserEvent::Locked(payload.parse().map_err(schema)?),
            "user.unlocked" => UserEvent::Unlocked(payload.parse().map_err(schema)?),
            "user.removed" => UserEvent::Removed,
            "user.human.password.check.failed" => {
                UserEvent::CheckFailed(AuthMethod::Password, payload.parse().map_err(schema)?)
            }
            "user.human.mfa.otp.check.failed" => {
                UserEvent::CheckFailed(AuthMethod::Otp, payload.parse().map_err(schema)?)
            }
            "user.human.password.check.succeeded" => {
                UserEvent::CheckSucceeded(AuthMethod::Password)
            }
            "user.human.mfa.otp.check.succeeded" => UserEvent::CheckSucceeded(AuthMethod::Otp),
            "user.erased" => UserEvent::Erased,
            other => return Err(DecodeError::UnknownType(other.to_owned())),
        })
    }
}
