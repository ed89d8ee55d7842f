//! The live read model: a [`ReadModel`] kept current by following the store (`visit_all`, ADR
//! 0010) from a checkpoint.
//!
//! [`Projection::spawn`] starts a task that pages through the store, wakes on the store's head
//! watch (with a slow poll as a safety net for stores shared between processes), and publishes
//! how far it has read. It waits on the head at most once a millisecond, so told appends do not
//! wake it one by one (see `follow`). [`Projection::listener`] is a [`CommitListener`] to build
//! the [`Engine`](super::Engine) with: the engine then hands the projection the events it
//! appends, as each append returns, so they need not wait for that task (ADR 0014).
//! [`Projection::wait_for`] lets a caller read its own writes; [`ReadModel::rebuild`] folds the
//! whole store from position 1 into the same model.

use std::borrow::Cow;
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio::task::JoinHandle;
use tracing::warn;

use super::read_model::{ReadModel, UserView, PAGE};
use super::{CommitListener, Error, Permission, Principal};
use crate::domain::{DomainError, UserEvent, UserId, UserState};
use crate::store::{EventRef, EventStore, PayloadRef, RecordedEvent, StreamId, Watermark};

/// How often the follower polls even without a head notification.
const POLL: Duration = Duration::from_millis(500);
/// How many of the latest publications [`Projection::visible_at`] remembers (16 bytes each; a
/// fed projection publishes once per append, so this covers ≈ 0.1 s at 500k appends/s).
const HISTORY: usize = 65_536;
/// At most this many told events wait for an earlier position; past it the follower reads them.
const MAX_PENDING: usize = 65_536;
/// How often the follower compacts the read model's list indexes ([`ReadModel::compact_lists`]).
const COMPACT_EVERY: Duration = Duration::from_secs(1);
/// The follower waits on the head at most once per this long (see `follow`).
const TOLD_POLL: Duration = Duration::from_millis(1);
/// While told appends arrive, how long the follower gives them to reach a head it was woken
/// for before it reads the store (see `follow`).
const TOLD_GRACE: Duration = Duration::from_millis(2);

#[derive(Default)]
struct Shared {
    /// Set by every told append, cleared by the follower when it looks (see `follow`).
    told: AtomicBool,
    model: RwLock<Model>,
    /// How far the model has applied (published after the model's lock is released).
    position: Watermark,
    published: Mutex<Published>,
}

/// The read model and the told events waiting for their turn, under one lock: every told append
/// needs both, and a second lock was one more cache line for the two cores to pass back and
/// forth per command.
#[derive(Default)]
struct Model {
    read: ReadModel,
    /// Told events whose position is past the next one the model needs, by position.
    pending: BTreeMap<u64, Waiting>,
}

impl Shared {
    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Model> {
        // The model is only written by `apply`, which does not panic on any input.
        self.model.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies `events` (of one append, in position order) if they are next, and every waiting
    /// told event that then is; keeps the ones whose turn has not come.
    fn offer(&self, events: &[RecordedEvent]) {
        let last = {
            let mut guard = self.write();
            let Model {
                read: model,
                pending,
            } = &mut *guard;
            let before = model.position();
            for event in events {
                let next = model.position() + 1;
                if event.position == next {
                    model.apply(event);
                } else if event.position > next && pending.len() < MAX_PENDING {
                    pending.insert(event.position, Waiting::of(event));
                }
            }
            drain(model, pending);
            if model.position() == before {
                return;
            }
            model.position()
        };
        self.publish(last);
    }

    /// Says that the model holds every event up to `last`. Called after the write lock is
    /// released, so the instant recorded is never earlier than the moment readers could see it.
    fn publish(&self, last: u64) {
        let at = Instant::now();
        self.published
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .record(last, at);
        self.position.advance(last);
    }
}

/// Applies the waiting told events that are next, and forgets those the model already holds.
fn drain(model: &mut ReadModel, pending: &mut BTreeMap<u64, Waiting>) {
    while let Some(entry) = pending.first_entry() {
        let position = *entry.key();
        if position <= model.position() {
            entry.remove();
        } else if position == model.position() + 1 {
            model.apply_ref(entry.remove().as_event_ref(position));
        } else {
            break;
        }
    }
}

/// A told event waiting for its turn: what the read model applies of it
/// ([`ReadModel::apply_ref`]), without the metadata. With two cores, appends often return out
/// of position order, and a whole copy of the event (five strings of metadata among them) was
/// a noticeable part of the told appends' cost.
struct Waiting {
    stream: StreamId,
    sequence: u64,
    created_at: DateTime<Utc>,
    /// A user event's type without a copy; any other as its own text.
    event_type: Cow<'static, str>,
    revision: u16,
    payload: serde_json::Value,
}

impl Waiting {
    fn of(event: &RecordedEvent) -> Self {
        let event_type = match UserEvent::TYPES.iter().find(|t| **t == event.event_type) {
            Some(t) => Cow::Borrowed(*t),
            None => Cow::Owned(event.event_type.clone()),
        };
        Self {
            stream: event.stream.clone(),
            sequence: event.sequence,
            created_at: event.created_at,
            event_type,
            revision: event.revision,
            payload: event.payload.clone(),
        }
    }

    fn as_event_ref(&self, position: u64) -> EventRef<'_> {
        EventRef {
            stream: self.stream.as_str(),
            sequence: self.sequence,
            position,
            created_at: self.created_at,
            event_type: &self.event_type,
            revision: self.revision,
            payload: PayloadRef::Value(&self.payload),
        }
    }
}

/// When the latest pages became visible, for [`Projection::visible_at`].
#[derive(Default)]
struct Published {
    /// `(last position of the page, instant taken after the page was applied)`, oldest first.
    pages: VecDeque<(u64, Instant)>,
    /// The last position of the newest page dropped from `pages` (0 while none was dropped).
    forgotten: u64,
}

impl Published {
    /// Records that every event up to `position` was visible at `at`. A position not past the
    /// last one recorded changes nothing: a later publication covers it, and its own instant
    /// was taken after the earlier publication's lock was released.
    fn record(&mut self, position: u64, at: Instant) {
        if self.pages.back().is_some_and(|&(p, _)| p >= position) {
            return;
        }
        if self.pages.len() == HISTORY {
            if let Some((p, _)) = self.pages.pop_front() {
                self.forgotten = p;
            }
        }
        self.pages.push_back((position, at));
    }

    fn visible_at(&self, position: u64) -> Option<Instant> {
        if position <= self.forgotten {
            return None;
        }
        let i = self.pages.partition_point(|&(p, _)| p < position);
        self.pages.get(i).map(|&(_, at)| at)
    }
}

/// A live read model following a store. Dropping it stops the follower.
pub struct Projection {
    shared: Arc<Shared>,
    task: JoinHandle<()>,
    /// Whether the store's positions are gap-free ([`EventStore::dense_positions`]).
    dense: bool,
}

impl Projection {
    /// Starts following `store` from its first event.
    pub fn spawn(store: Arc<dyn EventStore>) -> Self {
        let shared = Arc::new(Shared::default());
        let dense = store.dense_positions();
        let task = tokio::spawn(follow(store, shared.clone()));
        Self {
            shared,
            task,
            dense,
        }
    }

    /// A [`CommitListener`] that applies what an engine appends to this projection's read
    /// model as soon as the append returns, when its turn has come, instead of waiting for the
    /// follower to be scheduled and read it back. Build the [`Engine`](super::Engine) with it
    /// (`Engine::new(store).with_listener(projection.listener())`). Events appended elsewhere
    /// (another process, another engine) are still read by the follower, which also fills any
    /// gap the told events leave.
    ///
    /// Order is never given up: the read model still applies positions 1, 2, 3, … and nothing
    /// else, so [`position`](Self::position) keeps its meaning; an event whose turn has not
    /// come waits until it has (by another append or by the follower). On a store whose
    /// positions have holes ([`EventStore::dense_positions`] false) a told event could never
    /// be applied before the follower read it anyway, and the listener ignores it. Once the
    /// projection is dropped, the listener does nothing.
    pub fn listener(&self) -> Arc<dyn CommitListener> {
        Arc::new(Told {
            projection: Arc::downgrade(&self.shared),
            dense: self.dense,
        })
    }

    /// The position of the last event the read model has applied.
    pub fn position(&self) -> u64 {
        self.shared.position.get()
    }

    /// When `position` became visible: an instant taken right after the read model had applied
    /// it (a page of the follower or a told append) and released its lock, so never earlier
    /// than the moment a reader could first see it. `None` while `position` is not applied
    /// yet, and once it is older than the last 65,536 publications.
    pub fn visible_at(&self, position: u64) -> Option<Instant> {
        self.shared
            .published
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .visible_at(position)
    }

    /// Waits until the read model has applied `position`, for at most `timeout`.
    pub async fn wait_for(&self, position: u64, timeout: Duration) -> Result<(), Error> {
        let reached = tokio::time::timeout(timeout, self.shared.position.wait_for(position))
            .await
            .is_ok();
        match reached {
            true => Ok(()),
            false => Err(Error::NotCaughtUp {
                position,
                reached: self.position(),
                waited_ms: timeout.as_millis() as u64,
            }),
        }
    }

    /// How many users are in each state ([`ReadModel::count_by_state`]): one pass over the
    /// users under the read lock (a few milliseconds per million users; writers wait meanwhile).
    pub fn count_by_state(&self) -> Vec<(UserState, usize)> {
        self.read().read.count_by_state()
    }

    /// A copy of the whole read model (for comparison and export).
    pub fn snapshot(&self) -> ReadModel {
        self.read().read.clone()
    }

    /// Reads one user as `principal`: not found when absent, removed or in another instance;
    /// permission denied without `user.read` on its organisation.
    pub fn get_user(&self, principal: &Principal, user: &UserId) -> Result<UserView, Error> {
        let view = self
            .read()
            .read
            .user(&principal.instance, user)
            .filter(|v| v.state != UserState::Deleted)
            .ok_or_else(|| DomainError::NotFound(user.clone()))?;
        if !principal.may(Permission::UserRead, &view.resource_owner) {
            return Err(Error::PermissionDenied {
                subject: principal.subject.clone(),
                org: view.resource_owner.to_string(),
                permission: Permission::UserRead,
            });
        }
        Ok(view)
    }

    /// The users whose timed lock ended at or before `now`, earliest first (at most `limit`;
    /// see [`ReadModel::locks_due`]).
    pub fn locks_due(
        &self,
        now: chrono::DateTime<chrono::Utc>,
        limit: usize,
    ) -> Vec<(
        crate::domain::InstanceId,
        UserId,
        chrono::DateTime<chrono::Utc>,
    )> {
        self.read().read.locks_due(now, limit)
    }

    /// The earliest end of a timed lock in the read model.
    pub fn next_lock_end(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        self.read().read.next_lock_end()
    }

    /// One page of the users `principal` may read that match `request` (see
    /// [`ReadModel::list`]).
    pub fn list_users(
        &self,
        principal: &Principal,
        request: &super::ListRequest,
    ) -> Result<super::UserList, Error> {
        self.read().read.list(principal, request)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Model> {
        // The model is only written by `apply`, which does not panic on any input.
        self.shared.model.read().unwrap_or_else(|e| e.into_inner())
    }
}

/// The [`CommitListener`] of [`Projection::listener`].
struct Told {
    projection: Weak<Shared>,
    dense: bool,
}

impl CommitListener for Told {
    fn committed(&self, events: &[RecordedEvent]) {
        if !self.dense {
            return;
        }
        if let Some(shared) = self.projection.upgrade() {
            // Read first: the line stays shared between the cores until the follower clears it.
            if !shared.told.load(Ordering::Relaxed) {
                shared.told.store(true, Ordering::Relaxed);
            }
            shared.offer(events);
        }
    }
}

impl Drop for Projection {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The follower: reads what the model lacks, then waits for the head to move.
///
/// While an engine tells the projection its appends, they are in the model as soon as they
/// return, and a follower woken by each head move found nothing to read: a wake-up, a read of
/// the model's lock and, in the store's append, a lock of the head's notifier per command, at
/// hundreds of thousands a second. So the follower waits on the head at most once per
/// [`TOLD_POLL`]: after a wait that ended less than that ago, it first sleeps out the rest.
/// A head that moves less often (a file store's group commits at a few hundred a second) wakes
/// it as before; an append nobody told of (another engine, another process) waits up to about
/// a millisecond more for the follower while the head moves faster than that.
///
/// A store moves its head before it answers the appends that moved it (PostgreSQL's writer
/// when its batch commits), so a woken follower usually finds the model just behind the head,
/// with the told events on their way. While told appends arrive (one came since the follower
/// last looked) and the model is less than a page behind, it gives them up to [`TOLD_GRACE`]
/// to reach the head before it reads the store: reading them back cost PostgreSQL a JSON
/// rendering of every event and this process its parsing. Appends nobody told of wait up to
/// that much longer then.
async fn follow(store: Arc<dyn EventStore>, shared: Arc<Shared>) {
    let head = store.watch_head();
    let mut backoff = Duration::from_millis(50);
    // Whether the last wait ended by the poll timer rather than a head change.
    let mut polled = false;
    // When the last wait on the head ended.
    let mut woke = Instant::now();
    let mut compacted = Instant::now();
    loop {
        if compacted.elapsed() >= COMPACT_EVERY {
            shared.write().read.compact_lists();
            compacted = Instant::now();
        }
        // Note the head before reading, so a commit after the read wakes us.
        let seen = head.get();
        let applied = shared.position.get();
        let told = shared.told.swap(false, Ordering::Relaxed);
        if told && !polled && seen > applied && seen - applied <= PAGE as u64 {
            let _ = tokio::time::timeout(TOLD_GRACE, shared.position.wait_for(seen)).await;
        }
        // Read from where the model is, past what told appends applied meanwhile.
        let next = shared
            .model
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .read
            .position()
            + 1;
        let visited = if next > seen && seen > 0 && !polled {
            // Told appends already applied everything up to the head we were told of: nothing
            // to read. (After a poll timeout the store is read anyway, in case a watch lags.)
            Ok(0)
        } else {
            // Lent, not copied (a node's start-up folds the whole log this way), and applied
            // one event at a time: the model's lock cannot be held across the read's await.
            store
                .visit_all(next, PAGE, &mut |event| {
                    let mut guard = shared.write();
                    // Told appends may have applied part of the page already.
                    if event.position > guard.read.position() {
                        guard.read.apply_ref(event);
                    }
                })
                .await
        };
        let visited = match visited {
            Ok(visited) => {
                backoff = Duration::from_millis(50);
                visited
            }
            Err(e) => {
                warn!(error = %e, "projection cannot read the store; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        polled = false;
        if visited == 0 {
            // Told appends keep the model current: look again soon, not at every append.
            let since = woke.elapsed();
            if since < TOLD_POLL {
                tokio::time::sleep(TOLD_POLL - since).await;
            }
            tokio::select! {
                _ = head.wait_for(seen + 1) => {},
                _ = tokio::time::sleep(POLL) => polled = true,
            }
            woke = Instant::now();
            continue;
        }
        let (before, last) = {
            let mut guard = shared.write();
            let Model {
                read: model,
                pending,
            } = &mut *guard;
            drain(model, pending);
            (next - 1, model.position())
        };
        if last > before {
            shared.publish(last);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::InstanceId;
    use crate::domain::UserId;
    use crate::engine::tests::read_model::recorded;
    use crate::store::{EventMetadata, ExpectedVersion, NewEvent, StreamId};

    #[test]
    fn told_events_are_applied_in_position_order_whatever_order_they_arrive_in() {
        let shared = Shared::default();
        let events: Vec<RecordedEvent> = (0..6)
            .map(|i| {
                let payload =
                    serde_json::json!({"username": format!("n{i}"), "resourceOwner": "o1"});
                let added = ("user.human.added".to_owned(), 1, payload);
                recorded(i, &format!("user:i1:u{i}"), 1, added)
            })
            .collect();
        let mut reference = ReadModel::default();
        for e in &events {
            reference.apply(e);
        }
        let position = || shared.position.get();
        shared.offer(&events[2..4]);
        shared.offer(&events[5..6]);
        assert_eq!(position(), 0, "positions 1 and 2 have not come");
        assert_eq!(shared.write().pending.len(), 3);
        shared.offer(&events[0..1]);
        assert_eq!(position(), 1);
        shared.offer(&events[1..2]);
        assert_eq!(position(), 4, "3 and 4 were waiting");
        shared.offer(&events[0..3]);
        assert_eq!(position(), 4, "already applied: ignored");
        shared.offer(&events[4..5]);
        assert_eq!(position(), 6);
        assert!(shared.write().pending.is_empty());
        assert_eq!(shared.model.read().unwrap().read, reference);
    }

    /// The follower reads back only what the listener did not apply: its own appends cost it
    /// no read, another writer's appends are still read and applied.
    #[tokio::test]
    async fn a_told_follower_reads_only_what_others_wrote() {
        let store = Arc::new(crate::testkit::SpyStore::new(Arc::new(
            crate::MemoryStore::new(),
        )));
        let projection = Projection::spawn(store.clone());
        let listener = projection.listener();
        let added = |i: usize| {
            let payload = serde_json::json!({"username": format!("n{i}"), "resourceOwner": "o1"});
            NewEvent::new("user.human.added", 1, payload, EventMetadata::default())
        };
        let wait_for = |position: u64| projection.wait_for(position, Duration::from_secs(5));
        for i in 0..50 {
            let stream = StreamId::new(format!("user:i1:u{i}")).unwrap();
            let recorded = store
                .append(&stream, ExpectedVersion::NoStream, vec![added(i)])
                .await
                .unwrap();
            listener.committed(&recorded);
            // Let the follower run: it is woken by every append.
            tokio::task::yield_now().await;
        }
        wait_for(50).await.unwrap();
        let pages = store.pages_read();
        assert!(
            pages <= 2,
            "the follower read {pages} pages for told appends"
        );

        let stream = StreamId::new("user:i1:elsewhere").unwrap();
        store
            .append(&stream, ExpectedVersion::NoStream, vec![added(50)])
            .await
            .unwrap();
        wait_for(51).await.unwrap();
        let instance = InstanceId::new("i1").unwrap();
        let view = projection
            .shared
            .model
            .read()
            .unwrap()
            .read
            .user(&instance, &UserId::new("elsewhere").unwrap());
        assert_eq!(view.map(|v| v.username), Some("n50".to_owned()));
    }

    /// A store that moves its head before the append returns (PostgreSQL's writer does, when
    /// its batch commits) wakes the follower before the engine tells the projection: the
    /// follower gives told appends their moment instead of reading every one back.
    #[tokio::test]
    async fn a_follower_woken_before_the_tell_waits_for_it_instead_of_reading() {
        let store = Arc::new(crate::testkit::SpyStore::new(Arc::new(
            crate::MemoryStore::new(),
        )));
        let projection = Projection::spawn(store.clone());
        let listener = projection.listener();
        for i in 0..50 {
            let stream = StreamId::new(format!("user:i1:u{i}")).unwrap();
            let payload = serde_json::json!({"username": format!("n{i}"), "resourceOwner": "o1"});
            let event = NewEvent::new("user.human.added", 1, payload, EventMetadata::default());
            let recorded = store
                .append(&stream, ExpectedVersion::NoStream, vec![event])
                .await
                .unwrap();
            // The head moved; the follower runs before the caller tells.
            tokio::time::sleep(Duration::from_micros(500)).await;
            listener.committed(&recorded);
            // Past TOLD_POLL: every append wakes the follower on its own.
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
        projection
            .wait_for(50, Duration::from_secs(5))
            .await
            .unwrap();
        let pages = store.pages_read();
        assert!(
            pages <= 10,
            "the follower read {pages} pages for 50 told appends"
        );
    }

    #[test]
    fn visible_at_answers_with_the_first_page_holding_the_position_while_remembered() {
        let mut published = Published::default();
        let t0 = Instant::now();
        let at = |i: u64| t0 + Duration::from_micros(i);
        assert_eq!(published.visible_at(1), None);
        published.record(3, at(3));
        published.record(4, at(4));
        published.record(9, at(9));
        assert_eq!(published.visible_at(1), Some(at(3)));
        assert_eq!(published.visible_at(3), Some(at(3)));
        assert_eq!(published.visible_at(4), Some(at(4)));
        assert_eq!(published.visible_at(5), Some(at(9)));
        assert_eq!(published.visible_at(10), None, "not applied yet");
        for p in 10..10 + HISTORY as u64 {
            published.record(p, at(p));
        }
        assert_eq!(published.pages.len(), HISTORY);
        assert_eq!(published.visible_at(9), None, "its page was forgotten");
        assert_eq!(published.visible_at(10), Some(at(10)));
        published.record(10 + HISTORY as u64, at(0));
        assert_eq!(published.visible_at(10), None, "its page was forgotten");
        assert_eq!(published.visible_at(11), Some(at(11)));
    }
}
