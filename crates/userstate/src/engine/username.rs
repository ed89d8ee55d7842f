//! Usernames are unique per instance (SPEC.md). Uniqueness across users cannot be decided inside
//! one user's stream, so each username has a reservation stream
//! (`username:{instance}:{canonical name}`, [`StreamId::username`]) whose last event says who
//! holds it. Reserving is an append with an expected version, so two adds racing for one name
//! cannot both win.
//!
//! Reserve and add are two appends, not one transaction, so a reservation can outlive the add it
//! was made for (ADR 0004, revised by issue 20). Nothing leaves one behind for long:
//! - an add whose user append fails for any reason gives its reservation back
//!   ([`Reservation::abandon`]), unless the user it was made for holds the name after all;
//! - a reservation that an add left behind in a crash is *orphaned*: its holder's stream has no
//!   live user with that name. The next add of the name takes it over ([`reclaimable`]) once it
//!   is older than [`RECLAIM_AFTER`] — younger, its add may still be on its way, and an add
//!   gives up rather than append later than [`APPEND_WITHIN`] after reserving;
//! - a removed user's name is released with the removal, and reclaimable at once if that failed;
//! - `userstate verify` reports every orphan it sees.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::json;
use tracing::warn;

use super::{decode, metadata, Context, Error};
use crate::domain::{canonical_username, AddUser, DomainError, OrgId, User, UserId};
use crate::store::{EventStore, ExpectedVersion, NewEvent, RecordedEvent, StoreError, StreamId};

/// Type of the event that gives a username to a user.
pub const RESERVED: &str = "username.reserved";
/// Type of the event that frees a username.
pub const RELEASED: &str = "username.released";

/// How old a reservation whose holder never became a user must be before another add may take
/// the name over.
pub const RECLAIM_AFTER: Duration = Duration::from_secs(60);

/// How long an add may take from its reservation to its user append; past it, the add gives
/// up instead of appending (a third of [`RECLAIM_AFTER`], leaving room for clock skew between
/// the node and the store's commit times).
pub const APPEND_WITHIN: Duration = Duration::from_secs(20);

const ATTEMPTS: u32 = 8;

/// The last event of a reservation stream.
struct Holder {
    /// Who holds the name; `None` when it is free.
    user: Option<UserId>,
    /// When the last event was written.
    since: DateTime<Utc>,
}

/// The holder of a reservation stream's name, from its last event (`None`: never reserved).
pub(crate) fn holder_of(last: &RecordedEvent) -> Option<UserId> {
    (last.event_type == RESERVED)
        .then(|| {
            last.payload["userId"]
                .as_str()
                .and_then(|s| UserId::new(s).ok())
        })
        .flatten()
}

/// Who holds the name now, and the stream's version.
async fn holder(store: &dyn EventStore, stream: &StreamId) -> Result<(Option<Holder>, u64), Error> {
    let events = store.read_stream(stream, 1).await?;
    let Some(last) = events.last() else {
        return Ok((None, 0));
    };
    let holder = Holder {
        user: holder_of(last),
        since: last.created_at,
    };
    Ok((Some(holder), last.sequence))
}

/// Whether `user` (folded from its stream) is a live user holding the username whose canonical
/// form is `canonical`.
pub(crate) fn holds(user: &User, canonical: &str) -> bool {
    user.data().is_some_and(|data| {
        user.state() != Some(crate::domain::UserState::Deleted)
            && canonical_username(&data.username).is_ok_and(|c| c == canonical)
    })
}

/// A username this add reserved: the event it appended.
#[must_use = "a reservation must be kept by a user append or abandoned"]
pub(super) struct Reservation {
    stream: StreamId,
    canonical: String,
    /// The sequence of this add's `username.reserved` event.
    version: u64,
    /// When it was appended.
    made: Instant,
}

/// Reserves `add.username` for `add.user_id`, taking it over from an orphaned reservation.
pub(super) async fn reserve(
    store: &dyn EventStore,
    ctx: &Context,
    add: &AddUser,
) -> Result<Reservation, Error> {
    let instance = &ctx.principal.instance;
    let stream = StreamId::username(instance, &add.username)?;
    let canonical = canonical_username(&add.username)?;
    for _ in 0..ATTEMPTS {
        let (holder, version) = holder(store, &stream).await?;
        if let Some(Holder {
            user: Some(other),
            since,
        }) = &holder
        {
            if *other != add.user_id
                && !reclaimable(store, instance, other, *since, &canonical).await?
            {
                return Err(DomainError::UsernameTaken(add.username.clone()).into());
            }
        }
        // Always a new event, even when this user holds the name already (a retried add): its
        // version fences the reservation against an abandon of an earlier attempt.
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
            Ok(recorded) => {
                return Ok(Reservation {
                    stream,
                    canonical,
                    version: recorded.last().map_or(version + 1, |e| e.sequence),
                    made: Instant::now(),
                })
            }
            Err(StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(Error::Aborted {
        user: add.user_id.clone(),
        attempts: ATTEMPTS,
    })
}

/// Whether a reservation held by `holder` since `since` is orphaned and may be taken over: its
/// holder is not a live user with this name — removed, holding another name, or never added
/// and reserved longer ago than [`RECLAIM_AFTER`].
async fn reclaimable(
    store: &dyn EventStore,
    instance: &crate::domain::InstanceId,
    holder: &UserId,
    since: DateTime<Utc>,
    canonical: &str,
) -> Result<bool, Error> {
    let user = fold(store, &StreamId::user(instance, holder)).await?;
    if user.data().is_some() {
        return Ok(!holds(&user, canonical));
    }
    let age = (Utc::now() - since).to_std().unwrap_or_default();
    Ok(age > RECLAIM_AFTER)
}

async fn fold(store: &dyn EventStore, stream: &StreamId) -> Result<User, Error> {
    let mut user = User::default();
    for e in &store.read_stream(stream, 1).await? {
        user.apply(&decode(e)?);
    }
    Ok(user)
}

impl Reservation {
    /// Whether the add may still append its user (see [`APPEND_WITHIN`]).
    pub(super) fn fresh(&self) -> bool {
        self.made.elapsed() < APPEND_WITHIN
    }

    /// Gives the name back after the add's user append did not happen, unless the user it was
    /// made for holds the name after all (a concurrent add of the same user won) or a later
    /// reservation superseded this one. Never fails: a reservation that cannot be given back
    /// now is orphaned, and the next add of the name reclaims it.
    pub(super) async fn abandon(
        self,
        store: &dyn EventStore,
        ctx: &Context,
        user: &UserId,
        resource_owner: &OrgId,
    ) {
        let stream = StreamId::user(&ctx.principal.instance, user);
        match fold(store, &stream).await {
            Ok(folded) if holds(&folded, &self.canonical) => return,
            Ok(_) => {}
            Err(e) => {
                warn!(error = %e, username = %self.stream, "reservation left to be reclaimed");
                return;
            }
        }
        let event = NewEvent::new(
            RELEASED,
            1,
            json!({ "userId": user }),
            metadata(ctx, resource_owner),
        );
        let expected = ExpectedVersion::Exact(self.version);
        match store.append(&self.stream, expected, vec![event]).await {
            Ok(_) | Err(StoreError::Conflict { .. }) => {}
            Err(e) => {
                warn!(error = %e, username = %self.stream, "reservation left to be reclaimed")
            }
        }
    }
}

/// Frees `username` after `user` was removed, if `user` holds it. A failure is logged, not
/// returned: the removal is committed, and a removed user's reservation is reclaimable at once.
pub(super) async fn release_removed(
    store: &dyn EventStore,
    ctx: &Context,
    username: &str,
    user: &UserId,
    resource_owner: &OrgId,
) {
    if let Err(e) = try_release(store, ctx, username, user, resource_owner).await {
        warn!(error = %e, %user, "username of a removed user left to be reclaimed");
    }
}

async fn try_release(
    store: &dyn EventStore,
    ctx: &Context,
    username: &str,
    user: &UserId,
    resource_owner: &OrgId,
) -> Result<(), Error> {
    let stream = StreamId::username(&ctx.principal.instance, username)?;
    for _ in 0..ATTEMPTS {
        let (holder, version) = holder(store, &stream).await?;
        if holder.and_then(|h| h.user).as_ref() != Some(user) {
            return Ok(());
        }
        let event = NewEvent::new(
            RELEASED,
            1,
            json!({ "userId": user }),
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
