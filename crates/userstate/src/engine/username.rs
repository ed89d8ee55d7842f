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

use chrono::Utc;
use tracing::warn;

use super::command::{new_event, Command, Decision, Folded, Load};
use super::{Context, Engine, Error};
use crate::domain::{
    canonical_username, AddUser, DomainError, InstanceId, OrgId, User, UserId, UsernameClaim,
    UsernameEvent,
};
use crate::store::{ExpectedVersion, RecordedEvent, StoreError, StreamId};

/// Type of the event that gives a username to a user.
pub const RESERVED: &str = UsernameEvent::RESERVED;

/// How old a reservation whose holder never became a user must be before another add may take
/// the name over.
pub const RECLAIM_AFTER: Duration = Duration::from_secs(60);

/// How long an add may take from its reservation to its user append; past it, the add gives
/// up instead of appending (a third of [`RECLAIM_AFTER`], leaving room for clock skew between
/// the node and the store's commit times).
pub const APPEND_WITHIN: Duration = Duration::from_secs(20);

const ATTEMPTS: u32 = 8;

/// The holder of a reservation stream's name, from its last event (`None`: free, or not a
/// reservation event this version reads).
pub(crate) fn holder_of(last: &RecordedEvent) -> Option<UserId> {
    match UsernameEvent::decode(&last.event_type, last.revision, &last.payload) {
        Ok(UsernameEvent::Reserved { user, .. }) => Some(user),
        _ => None,
    }
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
    /// The user it was made for, and that user's organisation.
    user: UserId,
    resource_owner: OrgId,
    /// The sequence of this add's `username.reserved` event.
    version: u64,
    /// When it was appended.
    made: Instant,
}

/// Reserves `add.username` for `add.user_id`, taking it over from an orphaned reservation.
pub(super) async fn reserve(
    engine: &Engine,
    ctx: &Context,
    add: &AddUser,
) -> Result<Reservation, Error> {
    let instance = &ctx.principal.instance;
    let stream = StreamId::username(instance, &add.username)?;
    let canonical = canonical_username(&add.username)?;
    let load = Load::whole();
    let mut reserve = Reserve {
        engine,
        instance,
        add,
        canonical: &canonical,
    };
    let outcome = engine
        .run(ctx, &stream, load, ATTEMPTS, &add.user_id, &mut reserve)
        .await?;
    let version = outcome.before.version() + 1;
    Ok(Reservation {
        stream,
        canonical,
        user: add.user_id.clone(),
        resource_owner: add.organization.clone(),
        version: outcome.recorded.last().map_or(version, |e| e.sequence),
        made: Instant::now(),
    })
}

/// The reservation of `add.username` for `add.user_id`, as [`Engine::run`] decides it.
struct Reserve<'a> {
    engine: &'a Engine,
    instance: &'a InstanceId,
    add: &'a AddUser,
    canonical: &'a str,
}

impl Command<UsernameClaim> for Reserve<'_> {
    type Answer = ();

    async fn decide(
        &mut self,
        claim: &Folded<UsernameClaim>,
    ) -> Result<Decision<UsernameEvent, ()>, Error> {
        let (claim, add) = (&claim.aggregate, self.add);
        if let (Some(other), Some(since)) = (claim.holder(), claim.since()) {
            if *other != add.user_id
                && !reclaimable(self.engine, self.instance, other, since, self.canonical).await?
            {
                return Err(DomainError::UsernameTaken(add.username.clone()).into());
            }
        }
        // Always a new event, even when this user holds the name already (a retried add): its
        // version fences the reservation against an abandon of an earlier attempt.
        let reserved = UsernameEvent::Reserved {
            user: add.user_id.clone(),
            username: add.username.clone(),
        };
        Ok(Decision::Append {
            events: vec![reserved],
            resource_owner: add.organization.clone(),
            answer: (),
        })
    }
}

/// Whether a reservation held by `holder` since `since` is orphaned and may be taken over: its
/// holder is not a live user with this name — removed, holding another name, or never added
/// and reserved longer ago than [`RECLAIM_AFTER`].
async fn reclaimable(
    engine: &Engine,
    instance: &InstanceId,
    holder: &UserId,
    since: chrono::DateTime<Utc>,
    canonical: &str,
) -> Result<bool, Error> {
    let (user, _) = engine
        .fold::<User>(&StreamId::user(instance, holder))
        .await?;
    if user.data().is_some() {
        return Ok(!holds(&user, canonical));
    }
    let age = (Utc::now() - since).to_std().unwrap_or_default();
    Ok(age > RECLAIM_AFTER)
}

impl Reservation {
    /// Whether the add may still append its user (see [`APPEND_WITHIN`]).
    pub(super) fn fresh(&self) -> bool {
        self.made.elapsed() < APPEND_WITHIN
    }

    /// Gives the name back after the add's user append did not happen, unless the user it was
    /// made for holds the name after all (a concurrent add of the same user won) or a later
    /// reservation superseded this one (the release is appended at this reservation's exact
    /// version, never retried). Never fails: a reservation that cannot be given back now is
    /// orphaned, and the next add of the name reclaims it.
    pub(super) async fn abandon(self, engine: &Engine, ctx: &Context) {
        let stream = StreamId::user(&ctx.principal.instance, &self.user);
        match engine.fold::<User>(&stream).await {
            Ok((folded, _)) if holds(&folded, &self.canonical) => return,
            Ok(_) => {}
            Err(e) => {
                warn!(error = %e, username = %self.stream, "reservation left to be reclaimed");
                return;
            }
        }
        let released = UsernameEvent::Released { user: self.user };
        let event = new_event::<UsernameClaim>(ctx, &self.resource_owner, &released);
        let expected = ExpectedVersion::Exact(self.version);
        match engine.append(&self.stream, expected, vec![event]).await {
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
    engine: &Engine,
    ctx: &Context,
    username: &str,
    user: &UserId,
    resource_owner: &OrgId,
) {
    if let Err(e) = try_release(engine, ctx, username, user, resource_owner).await {
        warn!(error = %e, %user, "username of a removed user left to be reclaimed");
    }
}

async fn try_release(
    engine: &Engine,
    ctx: &Context,
    username: &str,
    user: &UserId,
    resource_owner: &OrgId,
) -> Result<(), Error> {
    let stream = StreamId::username(&ctx.principal.instance, username)?;
    let mut release = Release {
        user,
        resource_owner,
    };
    engine
        .run(ctx, &stream, Load::whole(), ATTEMPTS, user, &mut release)
        .await?;
    Ok(())
}

/// The release of a removed user's username, as [`Engine::run`] decides it: only while the
/// user still holds it.
struct Release<'a> {
    user: &'a UserId,
    resource_owner: &'a OrgId,
}

impl Command<UsernameClaim> for Release<'_> {
    type Answer = ();

    async fn decide(
        &mut self,
        claim: &Folded<UsernameClaim>,
    ) -> Result<Decision<UsernameEvent, ()>, Error> {
        if claim.aggregate.holder() != Some(self.user) {
            return Ok(Decision::Answer(()));
        }
        Ok(Decision::Append {
            events: vec![UsernameEvent::Released {
                user: self.user.clone(),
            }],
            resource_owner: self.resource_owner.clone(),
            answer: (),
        })
    }
}
