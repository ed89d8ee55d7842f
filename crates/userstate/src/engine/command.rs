//! The one command loop every aggregate goes through ([`Engine::run`]): load the stream's fold
//! (from the cache plus the stream's tail, or the whole stream), decide, append the decided
//! events with the exact version the decision was made on, and after a lost race read what
//! won and decide again. A user command, a username reservation and an idempotency key's
//! claim are three callers of it with three [`Aggregate`]s; every append it makes is told to
//! the engine's [`CommitListener`](super::CommitListener)s.
//!
//! The cache is trusted optimistically (ADR 0006): a decision on a cached fold is proven
//! current by its append's expected version, and a refusal on one is only answered after the
//! stream's tail was read and the command decided again.

use chrono::{DateTime, Utc};
use serde_json::Value;
use tracing::debug;

use super::cache::{AggregateCache, Cached};
use super::{decode, metadata, Context, Engine, Error, PUBLISH_WAIT};
use crate::domain::{
    KeyClaim, KeyClaimed, OrgId, User, UserEvent, UserId, UsernameClaim, UsernameEvent,
    EVENT_REVISION,
};
use crate::store::{ExpectedVersion, NewEvent, RecordedEvent, StoreError, StreamId};

/// A fold of one stream's events that commands decide on.
pub(super) trait Aggregate: Clone + Default + Send + Sync + 'static {
    /// The typed events of the stream.
    type Event: Send + Sync;

    /// Reads a recorded event of the stream back.
    fn decode(recorded: &RecordedEvent) -> Result<Self::Event, Error>;

    /// The type string and JSON payload `event` is stored as.
    fn encode(event: &Self::Event) -> (&'static str, Value);

    /// Folds one event, written at `at`.
    fn apply(&mut self, event: &Self::Event, at: DateTime<Utc>);

    /// How many events the fold holds: the expected version of the next append.
    fn version(&self) -> u64;
}

impl Aggregate for User {
    type Event = UserEvent;

    fn decode(recorded: &RecordedEvent) -> Result<UserEvent, Error> {
        decode(recorded)
    }

    fn encode(event: &UserEvent) -> (&'static str, Value) {
        (event.event_type(), event.payload())
    }

    fn apply(&mut self, event: &UserEvent, at: DateTime<Utc>) {
        User::apply(self, event, at)
    }

    fn version(&self) -> u64 {
        User::version(self)
    }
}

impl Aggregate for UsernameClaim {
    type Event = UsernameEvent;

    fn decode(e: &RecordedEvent) -> Result<UsernameEvent, Error> {
        UsernameEvent::decode(&e.event_type, e.revision, &e.payload)
            .map_err(|source| decode_error(e, source))
    }

    fn encode(event: &UsernameEvent) -> (&'static str, Value) {
        (event.event_type(), event.payload())
    }

    fn apply(&mut self, event: &UsernameEvent, at: DateTime<Utc>) {
        UsernameClaim::apply(self, event, at)
    }

    fn version(&self) -> u64 {
        UsernameClaim::version(self)
    }
}

impl Aggregate for KeyClaim {
    type Event = KeyClaimed;

    fn decode(e: &RecordedEvent) -> Result<KeyClaimed, Error> {
        KeyClaimed::decode(&e.event_type, e.revision, &e.payload)
            .map_err(|source| decode_error(e, source))
    }

    fn encode(event: &KeyClaimed) -> (&'static str, Value) {
        (KeyClaimed::TYPE, event.payload())
    }

    fn apply(&mut self, event: &KeyClaimed, _: DateTime<Utc>) {
        KeyClaim::apply(self, event)
    }

    fn version(&self) -> u64 {
        KeyClaim::version(self)
    }
}

fn decode_error(e: &RecordedEvent, source: crate::domain::DecodeError) -> Error {
    Error::Decode {
        stream: e.stream.as_str().to_owned(),
        sequence: e.sequence,
        source,
    }
}

/// How [`Engine::run`] reads a stream.
pub(super) struct Load<'a, A> {
    /// Folds kept between commands (`None`: the stream is read whole every time).
    cache: Option<&'a AggregateCache<A>>,
    /// Read the whole stream even when a fold is cached (the decision needs its events).
    whole: bool,
}

impl<'a, A: Aggregate> Load<'a, A> {
    /// The whole stream, every attempt.
    pub(super) fn whole() -> Self {
        Self {
            cache: None,
            whole: true,
        }
    }

    /// Through `cache`: a cached fold plus the stream's tail, or with `whole` the whole stream
    /// (the fold still goes into the cache).
    pub(super) fn cached(cache: &'a AggregateCache<A>, whole: bool) -> Self {
        Self {
            cache: Some(cache),
            whole,
        }
    }
}

/// The fold a decision is made on.
pub(super) struct Folded<A> {
    /// The fold.
    pub(super) aggregate: A,
    /// The events read for it: the whole stream when it was read whole, else the tail read
    /// after the cached fold (empty when the store was not asked).
    pub(super) events: Vec<RecordedEvent>,
    /// Whether the store was read for it; `false` for a cached fold taken on trust.
    read: bool,
    /// Whether a tail read found another engine's events (kept with the fold in the cache).
    read_tail: bool,
}

/// A command on one aggregate: what [`Engine::run`] asks to decide on each fold it reads.
///
/// `decide` may have effects of its own on other streams (a reservation, a claim): it is
/// called again after every lost race, and a command that must undo an effect of an attempt
/// that was not appended does so in its next call, or after `run` failed.
pub(super) trait Command<A: Aggregate> {
    /// What the command answers.
    type Answer;

    /// Decides on `folded`: events to append, or an answer without appending.
    async fn decide(
        &mut self,
        folded: &Folded<A>,
    ) -> Result<Decision<A::Event, Self::Answer>, Error>;
}

/// What a command decided on a fold.
pub(super) enum Decision<E, T> {
    /// Append `events` for `resource_owner` (the owner in their metadata), then answer.
    Append {
        /// At least one event.
        events: Vec<E>,
        /// The organisation the events belong to.
        resource_owner: OrgId,
        /// Handed back in [`Outcome::answer`] once the events are committed.
        answer: T,
    },
    /// Append nothing and answer at once.
    Answer(T),
}

/// A command that ran to its end.
pub(super) struct Outcome<A, T> {
    /// What the decision answered.
    pub(super) answer: T,
    /// The events appended, as recorded (empty for [`Decision::Answer`]).
    pub(super) recorded: Vec<RecordedEvent>,
    /// The fold the decision was made on (before the appended events).
    pub(super) before: A,
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

/// The event stored for `event`, with the context's metadata.
pub(super) fn new_event<A: Aggregate>(
    ctx: &Context,
    resource_owner: &OrgId,
    event: &A::Event,
) -> NewEvent {
    let (event_type, payload) = A::encode(event);
    NewEvent::new(
        event_type,
        EVENT_REVISION,
        payload,
        metadata(ctx, resource_owner),
    )
}

impl Engine {
    /// Runs `command` on `stream`: fold it as `load` says, decide, append the decided events
    /// with the fold's version as the exact expected version, and when another writer got
    /// there first, fold what won and decide again — at most `attempts` times, then
    /// [`Error::Aborted`] (about `user`).
    pub(super) async fn run<A: Aggregate, C: Command<A>>(
        &self,
        ctx: &Context,
        stream: &StreamId,
        load: Load<'_, A>,
        attempts: u32,
        user: &UserId,
        command: &mut C,
    ) -> Result<Outcome<A, C::Answer>, Error> {
        // The first attempt trusts the cache; one after a lost race reads the tail.
        let mut read = Read::Cached;
        // The version a lost race proved the stream has (a store may acknowledge it before a
        // read shows it: the file store publishes after its syncer).
        let mut at_least = 0;
        for attempt in 1..=attempts {
            let mut folded = self.current(stream, &load, read, at_least).await?;
            let mut decided = command.decide(&folded).await;
            // A refusal proves nothing about a fold taken on trust: read the tail, decide again.
            if decided.is_err() && !folded.read {
                folded = self.current(stream, &load, Read::Tail, 0).await?;
                decided = command.decide(&folded).await;
            }
            let (events, resource_owner, answer) = match decided? {
                Decision::Answer(answer) => {
                    return Ok(Outcome {
                        answer,
                        recorded: Vec::new(),
                        before: folded.aggregate,
                    })
                }
                Decision::Append {
                    events,
                    resource_owner,
                    answer,
                } => (events, resource_owner, answer),
            };
            let new_events = events
                .iter()
                .map(|e| new_event::<A>(ctx, &resource_owner, e))
                .collect();
            let version = folded.aggregate.version();
            let expected = ExpectedVersion::Exact(version);
            match self.append(stream, expected, new_events).await {
                Ok(recorded) => {
                    if let Some(cache) = load.cache {
                        let mut after = folded.aggregate.clone();
                        for (event, r) in events.iter().zip(&recorded) {
                            after.apply(event, r.created_at);
                        }
                        let entry = Cached {
                            aggregate: after,
                            read_tail: folded.read_tail,
                        };
                        cache.put(stream, entry);
                    }
                    return Ok(Outcome {
                        answer,
                        recorded,
                        before: folded.aggregate,
                    });
                }
                Err(StoreError::Conflict { actual, .. }) => {
                    debug!(attempt, %stream, "lost a race; reading the tail");
                    // The cached fold is a prefix of the stream (events never change), so the
                    // next attempt folds on only the events after it. A stream shorter than
                    // the fold (a store replaced under the engine) drops it instead.
                    if let Some(cache) = load.cache.filter(|_| actual < version) {
                        cache.forget(stream);
                    }
                    read = Read::Tail;
                    at_least = actual;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::Aborted {
            user: user.clone(),
            attempts,
        })
    }

    /// The fold of `stream` a command decides on.
    ///
    /// With `Read::Cached` a cached fold is returned as it is, without asking the store, unless
    /// its last tail read found another engine's events: the append's expected version proves
    /// the fold current, so only a refusal needs it checked (see [`Engine::run`]). With
    /// `Read::Tail` the events after the cached fold are read and folded on ("snapshot +
    /// tail"). `Folded::read` says whether the store was asked.
    ///
    /// `at_least` is a version the stream is known to have reached (a lost race's `actual`):
    /// until a read shows it, the store has acknowledged an append it does not show yet, and
    /// the read is repeated each time the store's head moves, for at most [`PUBLISH_WAIT`] —
    /// deciding on an older fold would only lose the race again.
    async fn current<A: Aggregate>(
        &self,
        stream: &StreamId,
        load: &Load<'_, A>,
        read: Read,
        at_least: u64,
    ) -> Result<Folded<A>, Error> {
        let current = self.read_current(stream, load, read).await?;
        if current.aggregate.version() >= at_least {
            return Ok(current);
        }
        let head = self.store.watch_head();
        let deadline = tokio::time::Instant::now() + PUBLISH_WAIT;
        loop {
            // Read after noting the head, so a publication between the two is not waited for.
            let seen = head.get();
            let current = self.read_current(stream, load, Read::Tail).await?;
            if current.aggregate.version() >= at_least {
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
    async fn read_current<A: Aggregate>(
        &self,
        stream: &StreamId,
        load: &Load<'_, A>,
        read: Read,
    ) -> Result<Folded<A>, Error> {
        let cache = load.cache;
        if let Some(cached) = cache.filter(|_| !load.whole).and_then(|c| c.get(stream)) {
            let mut aggregate = cached.aggregate;
            if read == Read::Cached && !cached.read_tail {
                return Ok(Folded {
                    aggregate,
                    events: Vec::new(),
                    read: false,
                    read_tail: false,
                });
            }
            let from = aggregate.version() + 1;
            let tail = self.store.read_stream(stream, from).await?;
            if tail.first().is_none_or(|e| e.sequence == from) {
                for e in &tail {
                    aggregate.apply(&A::decode(e)?, e.created_at);
                }
                // Events in the tail were written by another engine: read first next time.
                let read_tail = !tail.is_empty();
                if let Some(cache) = cache.filter(|_| read_tail || cached.read_tail) {
                    let entry = Cached {
                        aggregate: aggregate.clone(),
                        read_tail,
                    };
                    cache.put(stream, entry);
                }
                return Ok(Folded {
                    aggregate,
                    events: tail,
                    read: true,
                    read_tail,
                });
            }
            if let Some(cache) = cache {
                cache.forget(stream);
            }
        }
        let (aggregate, events) = self.fold::<A>(stream).await?;
        if let Some(cache) = cache {
            let entry = Cached {
                aggregate: aggregate.clone(),
                read_tail: false,
            };
            cache.put(stream, entry);
        }
        Ok(Folded {
            aggregate,
            events,
            read: true,
            read_tail: false,
        })
    }

    /// Reads and folds the whole of `stream`.
    pub(super) async fn fold<A: Aggregate>(
        &self,
        stream: &StreamId,
    ) -> Result<(A, Vec<RecordedEvent>), Error> {
        let events = self.store.read_stream(stream, 1).await?;
        let mut aggregate = A::default();
        for e in &events {
            aggregate.apply(&A::decode(e)?, e.created_at);
        }
        Ok((aggregate, events))
    }

    /// Appends to the store and tells the engine's listeners what was committed.
    pub(super) async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let recorded = self.store.append(stream, expected, events).await?;
        for listener in self.listeners.iter() {
            listener.committed(&recorded);
        }
        Ok(recorded)
    }
}
