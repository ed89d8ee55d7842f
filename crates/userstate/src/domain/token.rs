//! Bearer tokens kept in the store (SPEC.md "Operator interface", Tokens): an aggregate of
//! its own, [`TokenRegistry`], the fold of the store-wide token stream
//! ([`StreamName::Tokens`](super::StreamName::Tokens)), whose events — `token.created` and
//! `token.revoked` — are the tokens' audit trail.
//!
//! A token's secret never enters the domain: a created token carries the SHA-256 of its
//! secret only. Pure: no clock (times enter as arguments), no I/O.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{DecodeError, DomainError, InstanceId, OrgId, TokenId, EVENT_REVISION};
use crate::engine::{Permission, Principal};

/// The longest subject a token may have, in bytes.
pub const MAX_SUBJECT_LEN: usize = 200;

/// `token.created`: a token exists from now on, known by the hash of its secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TokenCreated {
    /// Its id (what `token list` shows and `token revoke` names).
    pub id: TokenId,
    /// The SHA-256 of the secret, 64 lowercase hex digits.
    pub sha256: String,
    /// Whom it authenticates as (recorded as the creator of the events it causes).
    pub subject: String,
    /// The only instance it sees.
    pub instance: InstanceId,
    /// Permissions on every organisation of the instance.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub instance_grants: Vec<Permission>,
    /// Permissions per organisation.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub org_grants: BTreeMap<OrgId, Vec<Permission>>,
    /// When it stops being accepted; `None`: never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
}

impl TokenCreated {
    /// The principal the token authenticates as.
    pub fn principal(&self) -> Principal {
        Principal {
            subject: self.subject.clone(),
            instance: self.instance.clone(),
            instance_grants: self.instance_grants.iter().copied().collect(),
            org_grants: self
                .org_grants
                .iter()
                .map(|(org, perms)| (org.clone(), perms.iter().copied().collect()))
                .collect(),
        }
    }

    /// Checks the fields a store cannot: a hash of 64 lowercase hex digits, a subject of
    /// 1 to [`MAX_SUBJECT_LEN`] bytes without control characters, at least one grant, and no
    /// organisation granted nothing.
    pub fn validate(&self) -> Result<(), DomainError> {
        let invalid = |field, reason: &str| DomainError::InvalidArgument {
            field,
            reason: reason.to_owned(),
        };
        let hex = |c: u8| c.is_ascii_digit() || (b'a'..=b'f').contains(&c);
        if self.sha256.len() != 64 || !self.sha256.bytes().all(hex) {
            return Err(invalid("sha256", "must be 64 lowercase hex digits"));
        }
        if self.subject.is_empty() || self.subject.len() > MAX_SUBJECT_LEN {
            return Err(invalid("subject", "must be 1 to 200 bytes long"));
        }
        if self.subject.chars().any(char::is_control) {
            return Err(invalid("subject", "must not contain control characters"));
        }
        if self.instance_grants.is_empty() && self.org_grants.is_empty() {
            return Err(invalid(
                "grants",
                "must name at least one permission (instance or organisation)",
            ));
        }
        if let Some((org, _)) = self.org_grants.iter().find(|(_, p)| p.is_empty()) {
            return Err(DomainError::InvalidArgument {
                field: "orgGrants",
                reason: format!("grant no permission on organisation {org:?}"),
            });
        }
        Ok(())
    }
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RevokedPayload {
    id: TokenId,
}

/// An event of the token stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenEvent {
    /// `token.created`.
    Created(TokenCreated),
    /// `token.revoked`: the token is refused from now on, for good.
    Revoked {
        /// The token revoked.
        id: TokenId,
    },
}

impl TokenEvent {
    /// The type string of [`TokenEvent::Created`].
    pub const CREATED: &'static str = "token.created";
    /// The type string of [`TokenEvent::Revoked`].
    pub const REVOKED: &'static str = "token.revoked";

    /// The stable type string.
    pub fn event_type(&self) -> &'static str {
        match self {
            TokenEvent::Created(_) => Self::CREATED,
            TokenEvent::Revoked { .. } => Self::REVOKED,
        }
    }

    /// The JSON payload stored with the event (a hash, never a secret).
    pub fn payload(&self) -> Value {
        let value = match self {
            TokenEvent::Created(created) => serde_json::to_value(created),
            TokenEvent::Revoked { id } => serde_json::to_value(RevokedPayload { id: id.clone() }),
        };
        value.expect("token payloads have only strings, lists and maps of strings")
    }

    /// Reads a stored event back.
    pub fn decode(event_type: &str, revision: u16, payload: &Value) -> Result<Self, DecodeError> {
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
            Self::CREATED => {
                TokenEvent::Created(TokenCreated::deserialize(payload).map_err(schema)?)
            }
            Self::REVOKED => TokenEvent::Revoked {
                id: RevokedPayload::deserialize(payload).map_err(schema)?.id,
            },
            other => return Err(DecodeError::UnknownType(other.to_owned())),
        })
    }
}

/// Whether a token is accepted at a given time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenStatus {
    /// Accepted.
    Active,
    /// Past its expiry.
    Expired,
    /// Revoked.
    Revoked,
}

impl TokenStatus {
    /// `active`, `expired` or `revoked`.
    pub fn name(self) -> &'static str {
        match self {
            TokenStatus::Active => "active",
            TokenStatus::Expired => "expired",
            TokenStatus::Revoked => "revoked",
        }
    }
}

/// One token as the registry knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenRecord {
    /// What was created.
    pub token: TokenCreated,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it was revoked, if it was.
    pub revoked_at: Option<DateTime<Utc>>,
}

impl TokenRecord {
    /// Its status at `now`: revoked over expired over active. A token expires at its
    /// `expires_at` (from that instant on it is refused).
    pub fn status(&self, now: DateTime<Utc>) -> TokenStatus {
        if self.revoked_at.is_some() {
            TokenStatus::Revoked
        } else if self.token.expires_at.is_some_and(|end| now >= end) {
            TokenStatus::Expired
        } else {
            TokenStatus::Active
        }
    }
}

/// Every token of the store: the fold of the token stream.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TokenRegistry {
    tokens: BTreeMap<TokenId, TokenRecord>,
    version: u64,
}

impl TokenRegistry {
    /// Folds one event, written at `at`. A revocation of an unknown token only counts.
    pub fn apply(&mut self, event: &TokenEvent, at: DateTime<Utc>) {
        self.version += 1;
        match event {
            TokenEvent::Created(created) => {
                self.tokens.insert(
                    created.id.clone(),
                    TokenRecord {
                        token: created.clone(),
                        created_at: at,
                        revoked_at: None,
                    },
                );
            }
            TokenEvent::Revoked { id } => {
                if let Some(record) = self.tokens.get_mut(id) {
                    record.revoked_at.get_or_insert(at);
                }
            }
        }
    }

    /// How many events the stream has.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The token with `id`.
    pub fn get(&self, id: &TokenId) -> Option<&TokenRecord> {
        self.tokens.get(id)
    }

    /// Every token, by id.
    pub fn iter(&self) -> impl Iterator<Item = &TokenRecord> {
        self.tokens.values()
    }

    /// The tokens of `instance`, by id.
    pub fn of_instance<'a>(
        &'a self,
        instance: &'a InstanceId,
    ) -> impl Iterator<Item = &'a TokenRecord> + 'a {
        self.iter().filter(move |r| &r.token.instance == instance)
    }

    /// Decides a creation: valid fields, and neither its id nor its hash known yet.
    pub fn decide_create(&self, created: &TokenCreated) -> Result<TokenEvent, DomainError> {
        created.validate()?;
        if self.tokens.contains_key(&created.id) {
            return Err(DomainError::TokenExists(created.id.to_string()));
        }
        if self.iter().any(|r| r.token.sha256 == created.sha256) {
            return Err(DomainError::TokenExists(format!(
                "with the same secret as {}",
                created.id
            )));
        }
        Ok(TokenEvent::Created(created.clone()))
    }

    /// Decides `token revoke TARGET` in `instance`: the token of `instance` whose id is
    /// `target`, else every not yet revoked token of `instance` whose subject is `target`
    /// (expired ones too, so they stay refused whatever the clock says).
    pub fn decide_revoke(
        &self,
        instance: &InstanceId,
        target: &str,
    ) -> Result<Vec<TokenEvent>, DomainError> {
        let by_id = TokenId::new(target)
            .ok()
            .and_then(|id| self.tokens.get(&id))
            .filter(|r| &r.token.instance == instance);
        if let Some(record) = by_id {
            if record.revoked_at.is_some() {
                return Err(DomainError::TokenAlreadyRevoked(record.token.id.clone()));
            }
            return Ok(vec![TokenEvent::Revoked {
                id: record.token.id.clone(),
            }]);
        }
        let events: Vec<TokenEvent> = self
            .of_instance(instance)
            .filter(|r| r.token.subject == target && r.revoked_at.is_none())
            .map(|r| TokenEvent::Revoked {
                id: r.token.id.clone(),
            })
            .collect();
        if events.is_empty() {
            return Err(DomainError::TokenNotFound(target.to_owned()));
        }
        Ok(events)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + secs, 0).unwrap()
    }

    fn inst(s: &str) -> InstanceId {
        InstanceId::new(s).unwrap()
    }

    fn token(id: &str, subject: &str, instance: &str) -> TokenCreated {
        TokenCreated {
            id: TokenId::new(id).unwrap(),
            sha256: format!("{:064x}", id.len() * 1000 + subject.len()),
            subject: subject.into(),
            instance: inst(instance),
            instance_grants: vec![Permission::UserRead],
            org_grants: BTreeMap::new(),
            expires_at: None,
        }
    }

    fn given(events: &[TokenEvent]) -> TokenRegistry {
        let mut registry = TokenRegistry::default();
        for (i, e) in events.iter().enumerate() {
            registry.apply(e, at(i as i64));
        }
        registry
    }

    fn revoked(id: &str) -> TokenEvent {
        TokenEvent::Revoked {
            id: TokenId::new(id).unwrap(),
        }
    }

    /// Given these events, when this command, then these events or this error: one row per
    /// rule of the token stream.
    #[test]
    fn given_when_then() {
        let a = token("tok_a", "ci", "i1");
        let b = token("tok_b", "ci", "i1");
        let other = token("tok_c", "ci", "i2");
        let created = |t: &TokenCreated| TokenEvent::Created(t.clone());
        let history = [created(&a), created(&b), created(&other)];
        // create
        assert_eq!(TokenRegistry::default().decide_create(&a), Ok(created(&a)));
        assert_eq!(
            given(&history).decide_create(&a),
            Err(DomainError::TokenExists("tok_a".into()))
        );
        let same_secret = TokenCreated {
            id: TokenId::new("tok_z").unwrap(),
            ..a.clone()
        };
        assert!(matches!(
            given(&history).decide_create(&same_secret),
            Err(DomainError::TokenExists(_))
        ));
        // revoke by id: only in its own instance
        assert_eq!(
            given(&history).decide_revoke(&inst("i1"), "tok_a"),
            Ok(vec![revoked("tok_a")])
        );
        assert_eq!(
            given(&history).decide_revoke(&inst("i1"), "tok_c"),
            Err(DomainError::TokenNotFound("tok_c".into()))
        );
        // revoke by subject: every live token of the subject in the instance
        assert_eq!(
            given(&history).decide_revoke(&inst("i1"), "ci"),
            Ok(vec![revoked("tok_a"), revoked("tok_b")])
        );
        let with_a_revoked = [created(&a), created(&b), revoked("tok_a")];
        assert_eq!(
            given(&with_a_revoked).decide_revoke(&inst("i1"), "ci"),
            Ok(vec![revoked("tok_b")])
        );
        assert_eq!(
            given(&with_a_revoked).decide_revoke(&inst("i1"), "tok_a"),
            Err(DomainError::TokenAlreadyRevoked(
                TokenId::new("tok_a").unwrap()
            ))
        );
        assert_eq!(
            given(&history).decide_revoke(&inst("i1"), "nobody"),
            Err(DomainError::TokenNotFound("nobody".into()))
        );
        assert_eq!(
            given(&[]).decide_revoke(&inst("i1"), "bad id with spaces"),
            Err(DomainError::TokenNotFound("bad id with spaces".into()))
        );
    }

    #[test]
    fn bad_fields_are_refused() {
        let good = token("tok_a", "ci", "i1");
        let cases = [
            TokenCreated {
                sha256: "ABC".into(),
                ..good.clone()
            },
            TokenCreated {
                sha256: "A".repeat(64),
                ..good.clone()
            },
            TokenCreated {
                subject: String::new(),
                ..good.clone()
            },
            TokenCreated {
                subject: "x".repeat(201),
                ..good.clone()
            },
            TokenCreated {
                subject: "a\nb".into(),
                ..good.clone()
            },
            TokenCreated {
                instance_grants: vec![],
                ..good.clone()
            },
            TokenCreated {
                org_grants: [(OrgId::new("acme").unwrap(), vec![])].into(),
                ..good.clone()
            },
        ];
        for bad in cases {
            let got = TokenRegistry::default().decide_create(&bad);
            assert!(
                matches!(got, Err(DomainError::InvalidArgument { .. })),
                "{bad:?}: {got:?}"
            );
        }
    }

    #[test]
    fn events_read_back_as_written_and_carry_no_secret_field() {
        let mut t = token("tok_a", "ci", "i1");
        t.org_grants = [(OrgId::new("acme").unwrap(), vec![Permission::UserWrite])].into();
        t.expires_at = Some(at(3600));
        for e in [TokenEvent::Created(t.clone()), revoked("tok_a")] {
            let back = TokenEvent::decode(e.event_type(), 1, &e.payload()).unwrap();
            assert_eq!(back, e);
        }
        let payload = TokenEvent::Created(t).payload();
        let keys: Vec<&str> = payload
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            [
                "expiresAt",
                "id",
                "instance",
                "instanceGrants",
                "orgGrants",
                "sha256",
                "subject"
            ]
        );
        assert!(TokenEvent::decode("token.created", 2, &payload).is_err());
        assert!(TokenEvent::decode("token.created", 1, &serde_json::json!({})).is_err());
        assert!(TokenEvent::decode("user.locked", 1, &payload).is_err());
    }

    proptest! {
        /// Whatever the history, a token is active exactly when it was created, never revoked,
        /// and `now` is before its expiry.
        #[test]
        fn status_follows_revocations_and_expiry(
            steps in prop::collection::vec((0..4u8, any::<bool>(), 0..100i64), 0..20),
            now in 0..100i64,
        ) {
            let mut registry = TokenRegistry::default();
            let mut model: BTreeMap<u8, (Option<i64>, bool)> = BTreeMap::new();
            for (i, (n, create, expiry)) in steps.into_iter().enumerate() {
                let id = format!("tok_{n}");
                if create && !model.contains_key(&n) {
                    let mut t = token(&id, "s", "i1");
                    t.sha256 = format!("{n:064x}");
                    t.expires_at = (expiry % 2 == 0).then(|| at(expiry));
                    let e = registry.decide_create(&t).unwrap();
                    registry.apply(&e, at(i as i64));
                    model.insert(n, (t.expires_at.map(|_| expiry), false));
                } else if let Ok(events) = registry.decide_revoke(&inst("i1"), &id) {
                    for e in &events {
                        registry.apply(e, at(i as i64));
                    }
                    model.get_mut(&n).unwrap().1 = true;
                }
            }
            for (n, (expiry, revoked)) in model {
                let record = registry.get(&TokenId::new(format!("tok_{n}")).unwrap()).unwrap();
                let expected = if revoked {
                    TokenStatus::Revoked
                } else if expiry.is_some_and(|e| now >= e) {
                    TokenStatus::Expired
                } else {
                    TokenStatus::Active
                };
                prop_assert_eq!(record.status(at(now)), expected);
            }
        }
    }
}
