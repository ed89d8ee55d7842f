//! Usernames are unique per instance (SPEC.md). Uniqueness across users cannot be decided inside
//! one user's stream, so each username has a reservation stream
//! (`username:{instance}:{lowercased name}`) whose last event says who holds it. Reserving is
//! an append with an expected version, so two adds racing for one name cannot both win.
//!
//! Reserve and add are two appends, not one transaction: a crash between them leaves a
//! reservation without a user. The same user id may take it again (a retried add succeeds); a
//! different id sees the name as taken until an operator releases it.

use serde_json::json;

use super::{metadata, Context, Error};
use crate::domain::{AddUser, DomainError, OrgId, UserId};
use crate::store::{EventStore, ExpectedVersion, NewEvent, StoreError, StreamId};

/// Type of the event that gives a username to a user.
pub const RESERVED: &str = "username.reserved";
/// Type of the event that frees a username.
pub const RELEASED: &str = "username.released";

const ATTEMPTS: u32 = 8;

/// Who holds the name now, and the stream's version.
async fn holder(store: &dyn EventStore, stream: &StreamId) -> Result<(Option<String>, u64), Error> {
    let events = store.read_stream(stream, 1).await?;
    let version = events.last().map_or(0, |e| e.sequence);
    let holder = events
        .last()
        .filter(|e| e.event_type == RESERVED)
        .and_then(|e| e.payload["userId"].as_str().map(str::to_owned));
    Ok((holder, version))
}

/// Reserves `add.username` for `add.user_id`; returns the username.
pub(super) async fn reserve(
    store: &dyn EventStore,
    ctx: &Context,
    add: &AddUser,
) -> Result<String, Error> {
    let stream = StreamId::username(&ctx.principal.instance, &add.username);
    for _ in 0..ATTEMPTS {
        let (holder, version) = holder(store, &stream).await?;
        match holder {
            Some(h) if h == add.user_id.as_str() => return Ok(add.username.clone()),
            Some(_) => return Err(DomainError::UsernameTaken(add.username.clone()).into()),
            None => {}
        }
        let event = NewEvent::new(
            RESERVED,
            1,
            json!({ "userId": add.user_id, "username": add.username }),
            metadata(ctx, &add.organization),
        );
        match store
            .append(&stream, ExpectedVersion::Exact(version), vec![event])
            .await
        {
            Ok(_) => return Ok(add.username.clone()),
            Err(StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(Error::Aborted {
        user: add.user_id.clone(),
        attempts: ATTEMPTS,
    })
}

/// Frees `username` if `user` holds it.
pub(super) async fn release(
    store: &dyn EventStore,
    ctx: &Context,
    username: &str,
    user: &UserId,
    resource_owner: &OrgId,
) -> Result<(), Error> {
    let stream = StreamId::username(&ctx.principal.instance, username);
    for _ in 0..ATTEMPTS {
        let (holder, version) = holder(store, &stream).await?;
        if holder.as_deref() != Some(user.as_str()) {
            return Ok(());
        }
        let event = NewEvent::new(
            RELEASED,
            1,
            json!({ "userId": user, "username": username }),
            metadata(ctx, resource_owner),
        );
        match store
            .append(&stream, ExpectedVersion::Exact(version), vec![event])
            .await
        {
            Ok(_) => return Ok(()),
            Err(StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(Error::Aborted {
        user: user.clone(),
        attempts: ATTEMPTS,
    })
}
