//! The two small aggregates that keep the user's rules which one user's stream cannot decide:
//! who holds a username ([`UsernameClaim`], SPEC.md "Identifiers and usernames"), and which
//! request an idempotency key was first used for ([`KeyClaim`], SPEC.md "Idempotency keys").
//! Each has typed events stored as JSON payloads, like [`UserEvent`](super::UserEvent), and
//! folds them with no I/O and no clock: times enter as arguments.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{DecodeError, UserId, EVENT_REVISION};

/// An event of a username's reservation stream (`username:{instance}:{canonical}`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UsernameEvent {
    /// `username.reserved`: `user` holds the name from now on, with this display form.
    Reserved {
        /// The holder.
        user: UserId,
        /// The name as the add gave it.
        username: String,
    },
    /// `username.released`: `user` gave the name back; it is free.
    Released {
        /// The user that held it.
        user: UserId,
    },
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReservedPayload {
    user_id: UserId,
    /// Empty in a stored payload (sealed there, see `crate::crypto`) and after erasure.
    #[serde(default)]
    username: String,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReleasedPayload {
    user_id: UserId,
}

impl UsernameEvent {
    /// The type string of [`UsernameEvent::Reserved`].
    pub const RESERVED: &'static str = "username.reserved";
    /// The type string of [`UsernameEvent::Released`].
    pub const RELEASED: &'static str = "username.released";

    /// The stable type string.
    pub fn event_type(&self) -> &'static str {
        match self {
            UsernameEvent::Reserved { .. } => Self::RESERVED,
            UsernameEvent::Released { .. } => Self::RELEASED,
        }
    }

    /// The JSON payload stored with the event.
    pub fn payload(&self) -> Value {
        let value = match self {
            UsernameEvent::Reserved { user, username } => serde_json::to_value(ReservedPayload {
                user_id: user.clone(),
                username: username.clone(),
            }),
            UsernameEvent::Released { user } => serde_json::to_value(ReleasedPayload {
                user_id: user.clone(),
            }),
        };
        value.expect("username payloads have only string fields")
    }

    /// Reads a stored event back.
    pub fn decode(event_type: &str, revision: u16, payload: &Value) -> Result<Self, DecodeError> {
        check_revision(event_type, revision)?;
        let schema = |source| DecodeError::Payload {
            event_type: event_type.to_owned(),
            source,
        };
        Ok(match event_type {
            Self::RESERVED => {
                let p = ReservedPayload::deserialize(payload).map_err(schema)?;
                UsernameEvent::Reserved {
                    user: p.user_id,
                    username: p.username,
                }
            }
            Self::RELEASED => UsernameEvent::Released {
                user: ReleasedPayload::deserialize(payload)
                    .map_err(schema)?
                    .user_id,
            },
            other => return Err(DecodeError::UnknownType(other.to_owned())),
        })
    }
}

/// Who holds a username: the fold of its reservation stream.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UsernameClaim {
    holder: Option<UserId>,
    /// When the last event was written (`None` for a name never reserved).
    since: Option<DateTime<Utc>>,
    version: u64,
}

impl UsernameClaim {
    /// Folds one event, written at `at`.
    pub fn apply(&mut self, event: &UsernameEvent, at: DateTime<Utc>) {
        self.version += 1;
        self.since = Some(at);
        self.holder = match event {
            UsernameEvent::Reserved { user, .. } => Some(user.clone()),
            UsernameEvent::Released { .. } => None,
        };
    }

    /// The user holding the name, `None` when it is free.
    pub fn holder(&self) -> Option<&UserId> {
        self.holder.as_ref()
    }

    /// When the holder took the name (or it was released); `None` if never reserved.
    pub fn since(&self) -> Option<DateTime<Utc>> {
        self.since
    }

    /// How many events the stream has.
    pub fn version(&self) -> u64 {
        self.version
    }
}

/// The event of an idempotency key's claim stream (`idempotency:{instance}:{digest}`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyClaimed {
    /// The first request's operation (`lock`, `add`, …).
    pub operation: String,
    /// The first request's user.
    pub user_id: String,
    /// A hash of the first request's operation, user and parameters. Sealed under the user's
    /// key in the store (ADR 0021): empty once the user is erased (the key is then compared on
    /// `operation` and `user_id` alone; see the engine's `idempotency` module).
    #[serde(default)]
    pub fingerprint: String,
}

impl KeyClaimed {
    /// The type string, `idempotency.key.claimed`.
    pub const TYPE: &'static str = "idempotency.key.claimed";

    /// The JSON payload stored with the event.
    pub fn payload(&self) -> Value {
        serde_json::to_value(self).expect("a key claim has only string fields")
    }

    /// Reads a stored event back.
    pub fn decode(event_type: &str, revision: u16, payload: &Value) -> Result<Self, DecodeError> {
        check_revision(event_type, revision)?;
        if event_type != Self::TYPE {
            return Err(DecodeError::UnknownType(event_type.to_owned()));
        }
        KeyClaimed::deserialize(payload).map_err(|source| DecodeError::Payload {
            event_type: event_type.to_owned(),
            source,
        })
    }
}

/// Which request an idempotency key is bound to: the fold of its claim stream, whose first
/// event binds it for good.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyClaim {
    first: Option<KeyClaimed>,
    version: u64,
}

impl KeyClaim {
    /// Folds one event.
    pub fn apply(&mut self, event: &KeyClaimed) {
        self.version += 1;
        self.first.get_or_insert_with(|| event.clone());
    }

    /// The request the key was first used for; `None` while unused.
    pub fn first(&self) -> Option<&KeyClaimed> {
        self.first.as_ref()
    }

    /// How many events the stream has.
    pub fn version(&self) -> u64 {
        self.version
    }
}

fn check_revision(event_type: &str, revision: u16) -> Result<(), DecodeError> {
    if revision > EVENT_REVISION {
        return Err(DecodeError::UnknownRevision {
            event_type: event_type.to_owned(),
            revision,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uid(s: &str) -> UserId {
        UserId::new(s).unwrap()
    }

    #[test]
    fn username_events_read_back_as_written() {
        let events = [
            UsernameEvent::Reserved {
                user: uid("u1"),
                username: "Alice".into(),
            },
            UsernameEvent::Released { user: uid("u1") },
        ];
        for e in events {
            let back = UsernameEvent::decode(e.event_type(), 1, &e.payload()).unwrap();
            assert_eq!(back, e);
        }
        let stored = serde_json::json!({"userId": "u1", "username": "Alice"});
        assert!(matches!(
            UsernameEvent::decode("username.reserved", 1, &stored),
            Ok(UsernameEvent::Reserved { username, .. }) if username == "Alice"
        ));
        assert!(UsernameEvent::decode("username.reserved", 2, &stored).is_err());
        assert!(UsernameEvent::decode("username.reserved", 1, &serde_json::json!({})).is_err());
        assert!(UsernameEvent::decode("user.locked", 1, &stored).is_err());
    }

    #[test]
    fn the_last_username_event_says_who_holds_the_name() {
        let t = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let mut claim = UsernameClaim::default();
        assert_eq!(
            (claim.holder(), claim.since(), claim.version()),
            (None, None, 0)
        );
        let reserved = |u: &str| UsernameEvent::Reserved {
            user: uid(u),
            username: "alice".into(),
        };
        claim.apply(&reserved("u1"), t);
        assert_eq!(claim.holder(), Some(&uid("u1")));
        claim.apply(&UsernameEvent::Released { user: uid("u1") }, t);
        assert_eq!(claim.holder(), None);
        let later = t + chrono::Duration::seconds(5);
        claim.apply(&reserved("u2"), later);
        assert_eq!(claim.holder(), Some(&uid("u2")));
        assert_eq!((claim.since(), claim.version()), (Some(later), 3));
    }

    #[test]
    fn a_key_stays_bound_to_its_first_claim() {
        let claimed = |op: &str| KeyClaimed {
            operation: op.into(),
            user_id: "u1".into(),
            fingerprint: format!("fp-{op}"),
        };
        let mut claim = KeyClaim::default();
        assert_eq!(claim.first(), None);
        claim.apply(&claimed("lock"));
        claim.apply(&claimed("unlock"));
        assert_eq!(claim.first(), Some(&claimed("lock")));
        assert_eq!(claim.version(), 2);
        let e = claimed("lock");
        assert_eq!(
            KeyClaimed::decode(KeyClaimed::TYPE, 1, &e.payload()).unwrap(),
            e
        );
        assert!(KeyClaimed::decode("username.reserved", 1, &e.payload()).is_err());
    }
}
