//! The engine: load a user, check who is asking, decide, append, answer with [`Details`].
//!
//! The engine holds no state of its own between commands: the store's optimistic concurrency
//! decides every race, so any number of engines (in one process or on many nodes) may share
//! one store.

mod audit;
mod auth;
mod cache;
mod error;
mod idempotency;
mod list;
mod projection;
mod read_model;
mod username;

pub use audit::{AsOf, AuditState};
pub use auth::{Permission, Principal};
pub use error::Error;
pub use idempotency::CLAIMED as IDEMPOTENCY_KEY_CLAIMED;
pub use list::{
    Candidate, ListRequest, SortColumn, TextMethod, UserList, UserQuery,
    DEFAULT_LIMIT as LIST_DEFAULT_LIMIT, MAX_LIMIT as LIST_MAX_LIMIT,
};
pub use projection::{FedStore, Projection};
pub use read_model::{ReadModel, UserView};
pub(crate) use username::{holder_of as username_holder, holds as username_holds};
pub use username::{RECLAIM_AFTER, RESERVED as USERNAME_RESERVED};

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tracing::{debug, instrument};

use crate::domain::{InstanceId, OrgId, User, UserCommand, UserEvent, UserId, EVENT_REVISION};
use crate::store::{
    EventMetadata, EventRef, EventStore, ExpectedVersion, NewEvent, RecordedEvent, StoreError,
    StreamId,
};

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

/// Runs user commands against an [`EventStore`].
#[derive(Clone)]
pub struct Engine {
    store: Arc<dyn EventStore>,
    max_attempts: u32,
    cache: Arc<cache::AggregateCache>,
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
            cache: Arc::new(cache::AggregateCache::new(DEFAULT_CACHE_CAPACITY)),
        }
    }

    /// Sets how many folded users the engine keeps between commands (0: none, every command
    /// reads its whole stream).
    pub fn with_cache_capacity(mut self, users: usize) -> Self {
        self.cache = Arc::new(cache::AggregateCache::new(users));
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
        let events = self
            .store
            .read_stream(&StreamId::user(instance, user), 1)
            .await?;
        let mut folded = User::default();
        for e in &events {
            folded.apply(&decode(e)?);
        }
        Ok(Loaded {
            user: folded,
            events,
        })
    }

    /// The fold of `stream` a command decides on.
    ///
    /// With `Read::Cached` a cached fold is returned as it is, without asking the store, unless
    /// its last tail read found another engine's events: the append's expected version proves
    /// the fold current, so only a refusal needs it checked (see [`Engine::execute`]). With
    /// `Read::Tail` the events after the cached fold are read and folded on ("snapshot +
    /// tail"). With an idempotency key the whole stream is read, since earlier answers are
    /// found in the events' metadata. `Current::read` says whether the store was asked.
    ///
    /// `at_least` is a version the stream is known to have reached (a lost race's `actual`):
    /// until a read shows it, the store has acknowledged an append it does not show yet, and
    /// the read is repeated each time the store's head moves, for at most [`PUBLISH_WAIT`] —
    /// deciding on an older fold would only lose the race again.
    async fn current(
        &self,
        ctx: &Context,
        stream: &StreamId,
        id: &UserId,
        read: Read,
        at_least: u64,
    ) -> Result<Current, Error> {
        let current = self.read_current(ctx, stream, id, read).await?;
        if current.loaded.user.version() >= at_least {
            return Ok(current);
        }
        let head = self.store.watch_head();
        let deadline = tokio::time::Instant::now() + PUBLISH_WAIT;
        loop {
            // Read after noting the head, so a publication between the two is not waited for.
            let seen = head.get();
            let current = self.read_current(ctx, stream, id, Read::Tail).await?;
            if current.loaded.user.version() >= at_least {
                return Ok(current);
            }
            if tokio::time::timeout_at(deadline, head.wait_for(seen + 1))
                .await
                .is_err()
            {
                return Ok(current);
            }
        }
    }

    /// One read of [`current`](Self::current).
    async fn read_current(
        &self,
        ctx: &Context,
        stream: &StreamId,
        id: &UserId,
        read: Read,
    ) -> Result<Current, Error> {
        if ctx.idempotency_key.is_none() {
            if let Some(cached) = self.cache.get(stream) {
                let mut user = cached.user;
                if read == Read::Cached && !cached.read_tail {
                    return Ok(Current {
                        loaded: Loaded {
                            user,
                            events: Vec::new(),
                        },
                        read: false,
                        read_tail: false,
                    });
                }
                let from = user.version() + 1;
                let tail = self.store.read_stream(stream, from).await?;
                if tail.first().is_none_or(|e| e.sequence == from) {
                    for e in &tail {
                        user.apply(&decode(e)?);
                    }
                    // Events in the tail were written by another engine: read first next time.
                    let read_tail = !tail.is_empty();
                    if read_tail || cached.read_tail {
                        let entry = cache::Cached {
                            user: user.clone(),
                            read_tail,
                        };
                        self.cache.put(stream, entry);
                    }
                    return Ok(Current {
                        loaded: Loaded { user, events: tail },
                        read: true,
                        read_tail,
                    });
                }
                self.cache.forget(stream);
            }
        }
        let loaded = self.load(&ctx.principal.instance, id).await?;
        let entry = cache::Cached {
            user: loaded.user.clone(),
            read_tail: false,
        };
        self.cache.put(stream, entry);
        Ok(Current {
            loaded,
            read: true,
            read_tail: false,
        })
    }

    /// Runs one command: load, authorise, decide, append with the expected version, retrying
    /// a bounded number of times when another writer got there first.
    ///
    /// With an idempotency key, the caller is authorised on the user before anything the key
    /// remembers is consulted: a repeat answers the first answer only to a caller who may
    /// still make the request ([`idempotency`]).
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
        // The first attempt trusts the cache; one after a lost race reads the tail.
        let mut read = Read::Cached;
        // The version a lost race proved the stream has (a store may acknowledge it before a
        // read shows it: the file store publishes after its syncer).
        let mut at_least = 0;
        let mut claimed = false;
        for attempt in 1..=self.max_attempts {
            // Optimistic: decide on the cached fold without reading the store. Accepted, the
            // append below proves the fold current (its expected version is the fold's); a
            // refusal proves nothing, so it is only answered after the stream's tail was read
            // and the command decided again (ADR 0006).
            let mut current = self.current(ctx, &stream, id, read, at_least).await?;
            let mut decided = decide(principal, &command, &current.loaded.user);
            if decided.is_err() && !current.read {
                current = self.current(ctx, &stream, id, Read::Tail, 0).await?;
                decided = decide(principal, &command, &current.loaded.user);
            }
            let loaded = current.loaded;
            if let Some(key) = ctx.idempotency_key.as_deref() {
                if let Some(answer) = idempotency::previous_answer(ctx, key, &command, &loaded) {
                    authorise_repeat(principal, &command, &loaded.user)?;
                    // The same operation on the same user; its parameters are the claim's.
                    let owner = &answer.resource_owner;
                    idempotency::claim(&*self.store, ctx, key, &command, owner).await?;
                    debug!("idempotency key seen before; answering the first answer");
                    return Ok(answer);
                }
                if !claimed {
                    let owner = authorise(principal, &command, &loaded.user)?;
                    idempotency::claim(&*self.store, ctx, key, &command, &owner).await?;
                    claimed = true;
                }
            }
            let (resource_owner, events) = decided?;
            let reservation = match &command {
                UserCommand::Add(add) => Some(username::reserve(&*self.store, ctx, add).await?),
                _ => None,
            };
            let new_events = events
                .iter()
                .map(|e| to_new_event(ctx, &resource_owner, e))
                .collect();
            let appended = match &reservation {
                // An add that took too long since it reserved may have lost its name to a
                // reclaim (see `username`): it gives up rather than append.
                Some(r) if !r.fresh() => Err(StoreError::unavailable(
                    "the store took too long between reserving the username and adding the user",
                    "username reservation expired",
                )),
                _ => {
                    let expected = ExpectedVersion::Exact(loaded.user.version());
                    self.store.append(&stream, expected, new_events).await
                }
            };
            let recorded = match appended {
                Ok(recorded) => recorded,
                Err(e) => {
                    if let Some(r) = reservation {
                        r.abandon(&*self.store, ctx, id, &resource_owner).await;
                    }
                    let StoreError::Conflict { actual, .. } = e else {
                        return Err(e.into());
                    };
                    debug!(attempt, "lost a race; reading the tail");
                    // The cached fold is a prefix of the stream (events never change), so the
                    // next attempt folds on only the events after it. A stream shorter than the
                    // fold (a store replaced under the engine) drops it instead.
                    if actual < loaded.user.version() {
                        self.cache.forget(&stream);
                    }
                    read = Read::Tail;
                    at_least = actual;
                    continue;
                }
            };
            if let UserCommand::Remove(_) = &command {
                let data = loaded.user.data().expect("remove decided on a live user");
                username::release_removed(&*self.store, ctx, &data.username, id, &resource_owner)
                    .await;
            }
            let mut user = loaded.user;
            for e in &events {
                user.apply(e);
            }
            let entry = cache::Cached {
                user,
                read_tail: current.read_tail,
            };
            self.cache.put(&stream, entry);
            return Ok(Details::of_command(&recorded, resource_owner));
        }
        Err(Error::Aborted {
            user: id.clone(),
            attempts: self.max_attempts,
        })
    }
}

/// How much of the store [`Engine::current`] asks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Read {
    /// A cached fold as it is (unless its last tail read found another engine's events); the
    /// store only when nothing is cached.
    Cached,
    /// At least the stream's tail after the cached fold.
    Tail,
}

/// A fold to decide on, and whether the store was read for it.
struct Current {
    loaded: Loaded,
    read: bool,
    /// Whether the tail read found another engine's events (kept with the fold in the cache).
    read_tail: bool,
}

/// Authorises and decides `command` on `user`: the resource owner and the events to append.
fn decide(
    principal: &Principal,
    command: &UserCommand,
    user: &User,
) -> Result<(OrgId, Vec<UserEvent>), Error> {
    let resource_owner = authorise(principal, command, user)?;
    let events = user.decide(command)?;
    Ok((resource_owner, events))
}

/// Reads a recorded user event back into the domain.
pub(crate) fn decode(e: &RecordedEvent) -> Result<UserEvent, Error> {
    decode_ref(&e.as_event_ref())
}

/// Reads a lent user event back into the domain, parsing its payload only if it has data.
pub(crate) fn decode_ref(e: &EventRef<'_>) -> Result<UserEvent, Error> {
    UserEvent::decode_with(e.event_type, e.revision, || e.payload.deserialize()).map_err(|source| {
        Error::Decode {
            stream: e.stream.to_owned(),
            sequence: e.sequence,
            source,
        }
    })
}

/// The order of checks is SPEC.md's: the user exists -> the caller may act on its
/// organisation -> (later, in `decide`) the state precondition. Returns the resource owner.
fn authorise(principal: &Principal, command: &UserCommand, user: &User) -> Result<OrgId, Error> {
    let org = match command {
        UserCommand::Add(add) => add.organization.clone(),
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
        UserCommand::Remove(_) => Permission::UserDelete,
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
        UserCommand::Lock(_) => Some("lock"),
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

fn to_new_event(ctx: &Context, resource_owner: &OrgId, event: &UserEvent) -> NewEvent {
    NewEvent::new(
        event.event_type(),
        EVENT_REVISION,
        event.payload(),
        metadata(ctx, resource_owner),
    )
}

#[cfg(test)]
mod tests;
