//! Audit: a user's full history and its state as of any event or time. The history is the
//! stream itself, never rewritten; the state as of a point is the fold of the prefix.

use chrono::{DateTime, Utc};

use super::{decode, Details, Engine, Error, Permission, Principal};
use crate::domain::{DomainError, User, UserId, UserState};
use crate::store::RecordedEvent;

/// A point in a user's history.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AsOf {
    /// After the event with this sequence (or the last one, if the stream is shorter).
    Sequence(u64),
    /// After every event created at or before this time.
    Time(DateTime<Utc>),
}

/// A user's state at a point of its history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditState {
    /// The state then.
    pub state: UserState,
    /// Read-form details as a read model would have answered then.
    pub details: Details,
}

impl Engine {
    /// Every event of `user`, oldest first, removed users included. Needs `user.read` on the
    /// user's organisation.
    pub async fn history(
        &self,
        principal: &Principal,
        user: &UserId,
    ) -> Result<Vec<RecordedEvent>, Error> {
        let loaded = self.load(&principal.instance, user).await?;
        let data = loaded
            .user
            .data()
            .ok_or_else(|| DomainError::NotFound(user.clone()))?;
        if !principal.may(Permission::UserRead, &data.resource_owner) {
            return Err(Error::PermissionDenied {
                subject: principal.subject.clone(),
                org: data.resource_owner.to_string(),
                permission: Permission::UserRead,
            });
        }
        Ok(loaded.events)
    }

    /// The state of `user` as of `at`; `None` when the user did not exist yet then.
    pub async fn state_as_of(
        &self,
        principal: &Principal,
        user: &UserId,
        at: AsOf,
    ) -> Result<Option<AuditState>, Error> {
        let history = self.history(principal, user).await?;
        let prefix: Vec<&RecordedEvent> = history
            .iter()
            .take_while(|e| match at {
                AsOf::Sequence(n) => e.sequence <= n,
                AsOf::Time(t) => e.created_at <= t,
            })
            .collect();
        let (Some(first), Some(last)) = (prefix.first(), prefix.last()) else {
            return Ok(None);
        };
        let mut folded = User::default();
        for e in &prefix {
            folded.apply(&decode(e)?, e.created_at);
        }
        // A history that does not start with its add is damage, not a reason to panic.
        let (Some(data), Some(state)) = (folded.data(), folded.state()) else {
            return Err(Error::Store(crate::store::StoreError::Corrupt {
                location: format!("stream {}", first.stream),
                reason: "the user's history does not start with user.human.added".to_owned(),
            }));
        };
        Ok(Some(AuditState {
            state,
            details: Details {
                sequence: last.sequence,
                change_date: last.created_at,
                resource_owner: data.resource_owner.clone(),
                creation_date: first.created_at,
                position: last.position,
            },
        }))
    }
}
