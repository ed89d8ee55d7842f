//! The engine: load a user, check who is asking, decide, append, answer with [`Details`].
//!
//! The engine holds no state of its own between commands: the store's optimistic concurrency
//! decides every race, so any number of engines (in one process or on many nodes) may share
//! one store.

mod audit;
mod auth;
mod cache;
mod command;
mod error;
mod idempotency;
mod list;
mod listen;
mod lockout;
mod projection;
mod read_model;
mod tokens;
mod username;

pub use audit::{AsOf, AuditState};
pub use auth::{Permission, Principal};
pub use error::Error;
pub use idempotency::CLAIMED as IDEMPOTENCY_KEY_CLAIMED;
pub use list::{
    Candidate, ListRequest, SortColumn, TextMethod, UserList, UserQuery,
    DEFAULT_LIMIT as LIST_DEFAULT_LIMIT, MAX_LIMIT as LIST_MAX_LIMIT,
};
pub use listen::CommitListener;
pub use lockout::{LockExpiry, PolicyDetails, PolicySource, PolicyView, SYSTEM_SUBJECT};
pub use projection::Projection;
pub use read_model::{ReadModel, UserView};
pub use tokens::tokens_stream;
pub(crate) use username::{holder_of as username_holder, holds as username_holds};
pub use username::{RECLAIM_AFTER, RESERVED as USERNAME_RESERVED};

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tracing::{debug, instrument};

use crate::domain::{InstanceId, LockoutPolicy, OrgId, User, UserCommand, UserEvent, UserId};
use crate::store::{EventMetadata, EventRef, EventStore, RecordedEvent, StoreError, StreamId};
use command::{Decision, Load};

/// How many users the engine's aggregate cache holds by default.
pub const DEFAULT_CACHE_CAPACITY: usize = 100_000;

/// How often `execute` reloads and retries after losing a race, before answering `Aborted`.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 8;

/// How long a command that lost a race waits for the store to show the winner's events.
const PUBLISH_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// The caller of one command: who, and how the request should be tied to others.
#[derive(Clone, Debug)]
pub struct Context {
    /// The authenticated caller (shared: a server hands the same principal to every request
    /// of a token without copying its grants).
    pub principal: Arc<Principal>,
    /// Ties the events of one request together in the audit trail.
    pub correlation_id: Option<String>,
    /// A client-chosen key: a repeated request with the same key answers the first answer
    /// again and appends nothing.
    pub idempotency_key: Option<String>,
}

impl Context {
    /// A context for `principal` (a [`Principal`] or an `Arc` of one) with no correlation id
    /// or idempotency key.
    pub fn new(principal: impl Into<Arc<Principal>>) -> Self {
        Self {
            principal: principal.into(),
            correlation_id: None,
            idempotency_key: None,
        }
    }

    /// The same context with an idempotency key.
    pub fn with_idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }
}

/// SPEC.md's `details` object, plus the global position of the last event for
/// read-your-writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Details {
    /// Sequence of the last event appended (command) or reduced (read).
    pub sequence: u64,
    /// `createdAt` of that event.
    pub change_date: DateTime<Utc>,
    /// The user's organisation.
    pub resource_owner: OrgId,
    /// Command: the same as `change_date`; read: `createdAt` of the user's first event.
    pub creation_date: DateTime<Utc>,
    /// Global position of that event (the consistency token).
    pub position: u64,
}

impl Details {
    /// The manipulation form of SPEC.md, from the events one command appended.
    fn of_command(recorded: &[RecordedEvent], resource_owner: OrgId) -> Self {
        let last = recorded
            .last()
            .expect("a successful command appends events");
        Self {
            sequence: last.sequence,
            change_date: last.created_at,
            resource_owner,
            creation_date: last.created_at,
            position: last.position,
        }
    }
}

/// Runs user commands against an [`EventStore`], and tells its [`CommitListener`]s what it
/// committed.
#[derive(Clone)]
pub struct Engine {
    store: Arc<dyn EventStore>,
    max_attempts: u32,
    users: Arc<cache::AggregateCache<User>>,
    listeners: Arc<[Arc<dyn CommitListener>]>,
}

/// A user as loaded from its stream.
#[derive(Clone, Debug, Default)]
pub struct Loaded {
    /// The fold of the stream.
    pub user: User,
    /// The recorded events read, oldest first: the whole stream from [`Engine::load`].
    pub events: Vec<RecordedEvent>,
}

impl Engine {
    /// An engine on `store`.
    pub fn new(store: Arc<dyn EventStore>) -> Self {
        Self {
            store,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            users: Arc::new(cache::AggregateCache::new(DEFAULT_CACHE_CAPACITY)),
            listeners: Arc::new([]),
        }
    }

    /// Adds a listener told of every append this engine commits (see [`CommitListener`]),
    /// after the ones added before.
    pub fn with_listener(mut self, listener: Arc<dyn CommitListener>) -> Self {
        let mut listeners = self.listeners.to_vec();
        listeners.push(listener);
        self.listeners = listeners.into();
        self
    }

    /// Sets how many folded users the engine keeps between commands (0: none, every command
    /// reads its whole stream).
    pub fn with_cache_capacity(mut self, users: usize) -> Self {
        self.users = Arc::new(cache::AggregateCache::new(users));
        self
    }

    /// Sets how many times a command is tried when it loses races (at least once).
    pub fn with_max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// The store the engine writes to.
    pub fn store(&self) -> &Arc<dyn EventStore> {
        &self.store
    }

    /// Loads and folds one user's stream.
    pub async fn load(&self, instance: &InstanceId, user: &UserId) -> Result<Loaded, Error> {
        let (user, events) = self.fold(&StreamId::user(instance, user)).await?;
        Ok(Loaded { user, events })
    }

    /// Runs one command: load, authorise, decide, append with the expected version, retrying
    /// a bounded number of times when another writer got there first ([`Engine::run`], the
    /// loop every aggregate goes through).
    ///
    /// With an idempotency key, the caller is authorised on the user before anything the key
    /// remembers is consulted: a repeat answers the first answer only to a caller who may
    /// still make the request ([`idempotency`]). An add reserves its username before its user
    /// append, and gives the reservation back when that append is not made ([`username`]).
    ///
    /// Its span is at `debug`: the server's request span and access line are too (see
    /// `userstate-server`'s `http::layers`), and at `info` the span alone cost ~5 % of a
    /// request's CPU.
    #[instrument(level = "debug", skip_all, fields(command = command.name(),
        user = %command.user_id(), subject = %ctx.principal.subject))]
    pub async fn execute(&self, ctx: &Context, command: UserCommand) -> Result<Details, Error> {
        let principal = &ctx.principal;
        let id = command.user_id();
        let stream = StreamId::user(&principal.instance, id);
        // With a key the whole stream is read: earlier answers are in its events' metadata.
        let load = Load::cached(&self.users, ctx.idempotency_key.is_some());
        let mut run = Execute {
            engine: self,
            ctx,
            command: &command,
            claimed: false,
            reservation: None,
        };
        let outcome = self
            .run(ctx, &stream, load, self.max_attempts, id, &mut run)
            .await;
        let outcome = match outcome {
            Ok(outcome) => outcome,
            Err(e) => {
                if let Some(r) = run.reservation {
                    r.abandon(self, ctx).await;
                }
                return Err(e);
            }
        };
        match outcome.answer {
            Answer::Repeated(details) => Ok(details),
            Answer::Committed(resource_owner) => {
                if let UserCommand::Remove(_) = &command {
                    let data = outcome
                        .before
                        .data()
                        .expect("remove decided on a live user");
                    username::release_removed(self, ctx, &data.username, id, &resource_owner).await;
                }
                Ok(Details::of_command(&outcome.recorded, resource_owner))
            }
        }
    }
}

/// One user command as [`Engine::run`] decides it.
struct Execute<'a> {
    engine: &'a Engine,
    ctx: &'a Context,
    command: &'a UserCommand,
    /// Whether the idempotency key is claimed for this command.
    claimed: bool,
    /// This add's username reservation, while its user append is not made.
    reservation: Option<username::Reservation>,
}

impl command::Command<User> for Execute<'_> {
    type Answer = Answer;

    async fn decide(
        &mut self,
        current: &command::Folded<User>,
    ) -> Result<Decision<UserEvent, Answer>, Error> {
        let (engine, ctx, command) = (self.engine, self.ctx, self.command);
        let principal = &ctx.principal;
        // The last attempt's append was not made: give its reservation back.
        if let Some(r) = self.reservation.take() {
            r.abandon(engine, ctx).await;
        }
        let user = &current.aggregate;
        // A failed check is decided under the lockout policy of the user's organisation.
        let policy = match (command, user.data()) {
            (UserCommand::AuthFailed(_), Some(data)) => {
                let org = Some(&data.resource_owner);
                engine
                    .lockout_policy(&principal.instance, org)
                    .await?
                    .policy
            }
            _ => LockoutPolicy::default(),
        };
        let decided = decide(principal, command, user, &policy);
        // A claim is sealed under its user's key (ADR 0021), which an erased user's is not
        // any more: see `idempotency::claim`.
        let erased = user.data().is_some_and(|data| data.erased);
        if let Some(key) = ctx.idempotency_key.as_deref() {
            if let Some(answer) = idempotency::previous_answer(ctx, key, command, &current.events) {
                authorise_repeat(principal, command, user)?;
                // The same operation on the same user; its parameters are the claim's.
                let owner = &answer.resource_owner;
                idempotency::claim(engine, ctx, key, command, owner, erased).await?;
                debug!("idempotency key seen before; answering the first answer");
                return Ok(Decision::Answer(Answer::Repeated(answer)));
            }
            if !self.claimed {
                let owner = authorise(principal, command, user)?;
                idempotency::claim(engine, ctx, key, command, &owner, erased).await?;
                self.claimed = true;
            }
        }
        let (resource_owner, events) = decided?;
        if let UserCommand::Add(add) = command {
            let reserved = username::reserve(engine, ctx, add).await?;
            // An add that took too long since it reserved may have lost its name to a reclaim
            // (see `username`): it gives up rather than append.
            if !self.reservation.insert(reserved).fresh() {
                return Err(StoreError::unavailable(
                    "the store took too long between reserving the username and adding the user",
                    "username reservation expired",
                )
                .into());
            }
        }
        Ok(Decision::Append {
            events,
            resource_owner: resource_owner.clone(),
            answer: Answer::Committed(resource_owner),
        })
    }
}

/// What a user command answers.
enum Answer {
    /// Its events were appended, for this organisation.
    Committed(OrgId),
    /// An idempotency key's repeat: the first answer.
    Repeated(Details),
}

/// Authorises and decides `command` on `user`: the resource owner and the events to append.
fn decide(
    principal: &Principal,
    command: &UserCommand,
    user: &User,
    policy: &LockoutPolicy,
) -> Result<(OrgId, Vec<UserEvent>), Error> {
    let resource_owner = authorise(principal, command, user)?;
    let events = user.decide_under(command, policy)?;
    Ok((resource_owner, events))
}

/// Reads a recorded user event back into the domain.
pub(crate) fn decode(e: &RecordedEvent) -> Result<UserEvent, Error> {
    decode_ref(&e.as_event_ref())
}

/// Reads a lent user event back into the domain, parsing its payload only if it has data.
pub(crate) fn decode_ref(e: &EventRef<'_>) -> Result<UserEvent, Error> {
    UserEvent::decode_with(e.event_type, e.revision, e.payload).map_err(|source| Error::Decode {
        stream: e.stream.to_owned(),
        sequence: e.sequence,
        source,
    })
}

/// The order of checks is SPEC.md's: the user exists -> the caller may act on its
/// organisation -> (later, in `decide`) the state precondition. Returns the resource owner.
fn authorise(principal: &Principal, command: &UserCommand, user: &User) -> Result<OrgId, Error> {
    let org = match command {
        UserCommand::Add(add) => add.organization.clone(),
        // Erase is for removed users (its state precondition is checked in `decide`).
        UserCommand::Erase(id) => user
            .data()
            .ok_or_else(|| crate::domain::DomainError::NotFound(id.clone()))?
            .resource_owner
            .clone(),
        _ => user.require_live(command.user_id())?.resource_owner.clone(),
    };
    may_act(principal, command, &org)?;
    Ok(org)
}

/// Authorises a repeat of a keyed command that already succeeded, on the user as it is now —
/// removed included, since a repeated remove finds its user removed by the first.
fn authorise_repeat(
    principal: &Principal,
    command: &UserCommand,
    user: &User,
) -> Result<(), Error> {
    let id = command.user_id();
    let data = user
        .data()
        .ok_or_else(|| crate::domain::DomainError::NotFound(id.clone()))?;
    may_act(principal, command, &data.resource_owner)
}

/// Whether `principal` may run `command` on a user of organisation `org`: the permission the
/// command needs there, and never a lock, deactivate or remove of itself.
fn may_act(principal: &Principal, command: &UserCommand, org: &OrgId) -> Result<(), Error> {
    let id = command.user_id();
    let permission = match command {
        UserCommand::Remove(_) | UserCommand::Erase(_) => Permission::UserDelete,
        _ => Permission::UserWrite,
    };
    if !principal.may(permission, org) {
        return Err(Error::PermissionDenied {
            subject: principal.subject.clone(),
            org: org.to_string(),
            permission,
        });
    }
    let self_action = match command {
        UserCommand::Lock(_) | UserCommand::LockFor(_) => Some("lock"),
        UserCommand::Deactivate(_) => Some("deactivate"),
        UserCommand::Remove(_) => Some("remove"),
        _ => None,
    };
    if let Some(action) = self_action.filter(|_| principal.is_user(id)) {
        return Err(Error::SelfAction(id.clone(), action));
    }
    Ok(())
}

fn metadata(ctx: &Context, resource_owner: &OrgId) -> EventMetadata {
    // `as_str().to_owned()`, not `to_string()`: the latter goes through `Display` and the
    // formatting machinery, ~250 instructions of a command's ~6,700 (callgrind).
    EventMetadata {
        instance: ctx.principal.instance.as_str().to_owned(),
        resource_owner: resource_owner.as_str().to_owned(),
        creator: ctx.principal.subject.clone(),
        correlation_id: ctx.correlation_id.clone(),
        idempotency_key: ctx.idempotency_key.clone(),
    }
}

#[cfg(test)]
mod tests;
