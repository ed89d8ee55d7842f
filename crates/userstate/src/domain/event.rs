//! The events of a user's stream, their stable type strings and JSON payloads.
//!
//! Type strings and payload shapes are part of the stored format: they never change meaning. A
//! payload change gets a new `revision`, and [`UserEvent::decode`] keeps reading the old ones.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::{OrgId, UserState};

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
    /// The login name, unique per instance.
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
    Locked,
    /// `user.unlocked`
    Unlocked,
    /// `user.removed`
    Removed,
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

impl UserEvent {
    /// Every type string of a user event, as stored.
    pub const TYPES: [&'static str; 6] = [
        "user.human.added",
        "user.deactivated",
        "user.reactivated",
        "user.locked",
        "user.unlocked",
        "user.removed",
    ];

    /// The stable type string, e.g. `user.locked`.
    pub fn event_type(&self) -> &'static str {
        match self {
            UserEvent::Added(_) => Self::TYPES[0],
            UserEvent::Deactivated => Self::TYPES[1],
            UserEvent::Reactivated => Self::TYPES[2],
            UserEvent::Locked => Self::TYPES[3],
            UserEvent::Unlocked => Self::TYPES[4],
            UserEvent::Removed => Self::TYPES[5],
        }
    }

    /// The state a user is in after this event: the one event -> state mapping, folded by the
    /// aggregate ([`User::apply`](super::User::apply)) and the read model alike.
    pub fn state_after(&self) -> UserState {
        match self {
            UserEvent::Added(added) if added.initial => UserState::Initial,
            UserEvent::Added(_) | UserEvent::Reactivated | UserEvent::Unlocked => UserState::Active,
            UserEvent::Deactivated => UserState::Inactive,
            UserEvent::Locked => UserState::Locked,
            UserEvent::Removed => UserState::Deleted,
        }
    }

    /// The JSON payload stored with the event (`{}` for events without data).
    pub fn payload(&self) -> serde_json::Value {
        match self {
            UserEvent::Added(added) => {
                serde_json::to_value(added).expect("UserAdded has only string/bool fields")
            }
            _ => serde_json::Value::Object(serde_json::Map::new()),
        }
    }

    /// Reads a stored event back.
    pub fn decode(
        event_type: &str,
        revision: u16,
        payload: &serde_json::Value,
    ) -> Result<Self, DecodeError> {
        Self::decode_with(event_type, revision, || UserAdded::deserialize(payload))
    }

    /// Like [`decode`](Self::decode), for a payload that is not parsed yet: `added` parses it
    /// and is called only for the one type whose payload carries data (`user.human.added`), so
    /// a fold over millions of events parses only those.
    pub fn decode_with(
        event_type: &str,
        revision: u16,
        added: impl FnOnce() -> Result<UserAdded, serde_json::Error>,
    ) -> Result<Self, DecodeError> {
        if revision > EVENT_REVISION {
            return Err(DecodeError::UnknownRevision {
                event_type: event_type.to_owned(),
                revision,
            });
        }
        Ok(match event_type {
            "user.human.added" => {
                UserEvent::Added(added().map_err(|source| DecodeError::Payload {
                    event_type: event_type.to_owned(),
                    source,
                })?)
            }
            "user.deactivated" => UserEvent::Deactivated,
            "user.reactivated" => UserEvent::Reactivated,
            "user.locked" => UserEvent::Locked,
            "user.unlocked" => UserEvent::Unlocked,
            "user.removed" => UserEvent::Removed,
            other => return Err(DecodeError::UnknownType(other.to_owned())),
        })
    }
}
