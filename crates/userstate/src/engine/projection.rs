//! The read model: every user's current state, kept by following `read_all` from a checkpoint.
//!
//! [`Projection::spawn`] starts a task that pages through the store, wakes on the store's head
//! watch (with a slow poll as a safety net for stores shared between processes), and publishes
//! how far it has read. [`Projection::spawn_fed`] also hands the projection the events its
//! process appends, as the append returns, so they need not wait for that task (see
//! [`FedStore`]). [`Projection::wait_for`] lets a caller read its own writes;
//! [`ReadModel::rebuild`] folds the whole store from position 1 into the same model.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use hashbrown::hash_table::{self, HashTable};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{error, warn};

use super::{decode, Details, Error, Permission, Principal};
use crate::domain::{DomainError, Email, InstanceId, OrgId, Profile, UserEvent, UserId, UserState};
use crate::store::{EventStore, ExpectedVersion, NewEvent, RecordedEvent, StoreError, StreamId};

/// Events read per `read_all` call.
const PAGE: usize = 1024;
/// How often the follower polls even without a head notification.
const POLL: Duration = Duration::from_millis(500);
/// How many of the latest publications [`Projection::visible_at`] remembers (16 bytes each; a
/// fed projection publishes once per append, so this covers ≈ 0.1 s at 500k appends/s).
const HISTORY: usize = 65_536;
/// At most this many fed events wait for an earlier position; past it the follower reads them.
const MAX_PENDING: usize = 65_536;

/// One user as the read model knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserView {
    /// The user's id.
    pub user_id: UserId,
    /// Login name.
    pub username: String,
    /// Owning organisation.
    pub resource_owner: OrgId,
    /// Current state.
    pub state: UserState,
    /// Profile as added.
    pub profile: Option<Profile>,
    /// Email as added.
    pub email: Option<Email>,
    /// Sequence of the last reduced event.
    pub sequence: u64,
    /// Position of the last reduced event.
    pub position: u64,
    /// `createdAt` of the last reduced event.
    pub change_date: DateTime<Utc>,
    /// `createdAt` of the first event.
    pub creation_date: DateTime<Utc>,
}

impl UserView {
    /// The read form of SPEC.md's `details`.
    pub fn details(&self) -> Details {
        Details {
            sequence: self.sequence,
            change_date: self.change_date,
            resource_owner: self.resource_owner.clone(),
            creation_date: self.creation_date,
            position: self.position,
        }
    }
}

/// Every user of every instance, folded from the store.
///
/// Kept compact because it holds every user in memory: users are a dense `Vec` of entries, each
/// holding its stream name and username in one boxed string, found through a hash table of
/// `u32` indices; organisations are interned and profile and email boxed only when present (see
/// docs/PERFORMANCE.md for the measured bytes per user). Users are never removed, so indices stay
/// valid.
#[derive(Clone, Default)]
pub struct ReadModel {
    /// Every user, in the order first added.
    entries: Vec<Entry>,
    /// Index into `entries`, hashed by the entry's stream name.
    index: HashTable<u32>,
    hasher: RandomState,
    orgs: Vec<OrgId>,
    org_index: HashMap<OrgId, u32>,
    position: u64,
}

/// One user in the read model; [`UserView`] is its public, owned form.
#[derive(Clone, PartialEq, Eq)]
struct Entry {
    /// The stream name (`user:{instance}:{user}`) followed by the username.
    text: Box<str>,
    extra: Option<Box<(Option<Profile>, Option<Email>)>>,
    change_date: DateTime<Utc>,
    creation_date: DateTime<Utc>,
    sequence: u64,
    position: u64,
    org: u32,
    /// Length of the stream name at the start of `text` (at most 262 bytes: two ids of at most
    /// 128 bytes, checked before an entry is made).
    key_len: u16,
    state: UserState,
}

impl Entry {
    fn text(key: &str, username: &str) -> (Box<str>, u16) {
        let key_len = u16::try_from(key.len()).expect("user stream names are at most 262 bytes");
        ([key, username].concat().into_boxed_str(), key_len)
    }

    /// The user's stream name, the key of the read model.
    fn key(&self) -> &str {
        &self.text[..self.key_len as usize]
    }

    fn username(&self) -> &str {
        &self.text[self.key_len as usize..]
    }
}

/// Shows the username on its own (the stream name is the entry's key in [`ReadModel`]'s output).
impl fmt::Debug for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Entry")
            .field("username", &self.username())
            .field("extra", &self.extra)
            .field("change_date", &self.change_date)
            .field("creation_date", &self.creation_date)
            .field("sequence", &self.sequence)
            .field("position", &self.position)
            .field("org", &self.org)
            .field("state", &self.state)
            .finish()
    }
}

/// Equal when both hold the same users (whatever order they were added in), organisations and
/// position.
impl PartialEq for ReadModel {
    fn eq(&self, other: &Self) -> bool {
        self.position == other.position
            && self.orgs == other.orgs
            && self.entries.len() == other.entries.len()
            && self.entries.iter().all(|e| other.entry(e.key()) == Some(e))
    }
}

impl Eq for ReadModel {}

impl fmt::Debug for ReadModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadModel")
            .field("users", &Users(&self.entries))
            .field("orgs", &self.orgs)
            .field("position", &self.position)
            .finish()
    }
}

/// Debug-formats the users as a map from stream name to entry.
struct Users<'a>(&'a [Entry]);

impl fmt::Debug for Users<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.0.iter().map(|e| (e.key(), e)))
            .finish()
    }
}

impl ReadModel {
    /// Folds the whole store from position 1.
    pub async fn rebuild(store: &dyn EventStore) -> Result<Self, Error> {
        Self::rebuild_with_progress(store, |_| {}).await
    }

    /// Folds the whole store from position 1, calling `progress` with the position reached
    /// after each page.
    pub async fn rebuild_with_progress(
        store: &dyn EventStore,
        mut progress: impl FnMut(u64),
    ) -> Result<Self, Error> {
        let mut model = ReadModel::default();
        loop {
            let page = store.read_all(model.position + 1, PAGE).await?;
            if page.is_empty() {
                return Ok(model);
            }
            for event in &page {
                model.apply(event);
            }
            progress(model.position);
        }
    }

    /// How many users are in each state, in the order of SPEC.md's table.
    pub fn count_by_state(&self) -> Vec<(UserState, usize)> {
        let states = [
            UserState::Initial,
            UserState::Active,
            UserState::Inactive,
            UserState::Locked,
            UserState::Deleted,
        ];
        states
            .into_iter()
            .map(|s| (s, self.entries.iter().filter(|e| e.state == s).count()))
            .collect()
    }

    /// The position of the last event applied.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// The number of users known (removed ones included).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no user is known.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// One user, removed ones included.
    pub fn user(&self, instance: &InstanceId, user: &UserId) -> Option<UserView> {
        let key = StreamId::user(instance, user);
        let entry = self.entry(key.as_str())?;
        let (profile, email) = entry.extra.as_deref().cloned().unwrap_or_default();
        Some(UserView {
            user_id: user.clone(),
            username: entry.username().to_owned(),
            resource_owner: self.orgs[entry.org as usize].clone(),
            state: entry.state,
            profile,
            email,
            sequence: entry.sequence,
            position: entry.position,
            change_date: entry.change_date,
            creation_date: entry.creation_date,
        })
    }

    /// The entry of the user with stream name `key`.
    fn entry(&self, key: &str) -> Option<&Entry> {
        let hash = self.hasher.hash_one(key);
        let &i = self
            .index
            .find(hash, |&i| self.entries[i as usize].key() == key)?;
        Some(&self.entries[i as usize])
    }

    /// The entry of the user with stream name `key`, for update.
    fn entry_mut(&mut self, key: &str) -> Option<&mut Entry> {
        let hash = self.hasher.hash_one(key);
        let entries = &self.entries;
        let &i = self
            .index
            .find(hash, |&i| entries[i as usize].key() == key)?;
        Some(&mut self.entries[i as usize])
    }

    /// Adds `entry`, or replaces the one with the same stream name (keeping its place).
    fn insert(&mut self, entry: Entry) {
        let Self {
            entries,
            index,
            hasher,
            ..
        } = self;
        let hash = hasher.hash_one(entry.key());
        match index.entry(
            hash,
            |&i| entries[i as usize].key() == entry.key(),
            |&i| hasher.hash_one(entries[i as usize].key()),
        ) {
            hash_table::Entry::Occupied(found) => entries[*found.get() as usize] = entry,
            hash_table::Entry::Vacant(slot) => {
                let i = u32::try_from(entries.len()).expect("fewer than 2^32 users");
                entries.push(entry);
                slot.insert(i);
            }
        }
    }

    fn intern(&mut self, org: OrgId) -> u32 {
        if let Some(&i) = self.org_index.get(&org) {
            return i;
        }
        let i = self.orgs.len() as u32;
        self.orgs.push(org.clone());
        self.org_index.insert(org, i);
        i
    }

    /// Folds one recorded event. Events of other kinds (username reservations) only move the
    /// position. An event that cannot be decoded is logged and skipped here; `verify` reports it.
    pub fn apply(&mut self, event: &RecordedEvent) {
        self.position = self.position.max(event.position);
        let name = event.stream.as_str();
        if !name.starts_with("user:") {
            return;
        }
        let decoded = match decode(event) {
            Ok(e) => e,
            Err(e) => {
                error!(error = %e, "projection skipped an undecodable event");
                return;
            }
        };
        if let UserEvent::Added(added) = decoded {
            let valid = name[5..]
                .split_once(':')
                .is_some_and(|(i, u)| InstanceId::new(i).is_ok() && UserId::new(u).is_ok());
            if !valid {
                warn!(stream = %event.stream, "user stream with an invalid name; skipped");
                return;
            }
            let org = self.intern(added.resource_owner);
            let extra = (added.profile.is_some() || added.email.is_some())
                .then(|| Box::new((added.profile, added.email)));
            let (text, key_len) = Entry::text(name, &added.username);
            self.insert(Entry {
                text,
                extra,
                change_date: event.created_at,
                creation_date: event.created_at,
                sequence: event.sequence,
                position: event.position,
                org,
                key_len,
                state: if added.initial {
                    UserState::Initial
                } else {
                    UserState::Active
                },
            });
            return;
        }
        let Some(entry) = self.entry_mut(name) else {
            warn!(stream = %event.stream, "event for a user never added; skipped");
            return;
        };
        entry.state = match decoded {
            UserEvent::Deactivated => UserState::Inactive,
            UserEvent::Reactivated | UserEvent::Unlocked => UserState::Active,
            UserEvent::Locked => UserState::Locked,
            UserEvent::Removed => UserState::Deleted,
            UserEvent::Added(_) => unreachable!("handled above"),
        };
        entry.sequence = event.sequence;
        entry.position = event.position;
        entry.change_date = event.created_at;
    }
}

struct Shared {
    model: RwLock<ReadModel>,
    position: watch::Sender<u64>,
    published: Mutex<Published>,
    /// Fed events whose position is past the next one the model needs, by position.
    pending: Mutex<BTreeMap<u64, RecordedEvent>>,
}

impl Shared {
    fn write(&self) -> std::sync::RwLockWriteGuard<'_, ReadModel> {
        // The model is only written by `apply`, which does not panic on any input.
        self.model.write().unwrap_or_else(|e| e.into_inner())
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, RecordedEvent>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies `events` (of one append, in position order) if they are next, and every waiting
    /// fed event that then is; keeps the ones whose turn has not come.
    fn offer(&self, events: &[RecordedEvent]) {
        let last = {
            let mut model = self.write();
            let before = model.position();
            let mut pending = self.pending();
            for event in events {
                let next = model.position() + 1;
                if event.position == next {
                    model.apply(event);
                } else if event.position > next && pending.len() < MAX_PENDING {
                    pending.insert(event.position, event.clone());
                }
            }
            drain(&mut model, &mut pending);
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
        self.position.send_if_modified(|p| {
            let newer = *p < last;
            *p = (*p).max(last);
            newer
        });
    }
}

/// Applies the waiting fed events that are next, and forgets those the model already holds.
fn drain(model: &mut ReadModel, pending: &mut BTreeMap<u64, RecordedEvent>) {
    while let Some(entry) = pending.first_entry() {
        let position = *entry.key();
        if position <= model.position() {
            entry.remove();
        } else if position == model.position() + 1 {
            model.apply(&entry.remove());
        } else {
            break;
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
}

impl Projection {
    /// Starts following `store` from its first event.
    pub fn spawn(store: Arc<dyn EventStore>) -> Self {
        let shared = Arc::new(Shared {
            model: RwLock::new(ReadModel::default()),
            position: watch::channel(0).0,
            published: Mutex::default(),
            pending: Mutex::default(),
        });
        let task = tokio::spawn(follow(store, shared.clone()));
        Self { shared, task }
    }

    /// Starts following `store` like [`spawn`](Self::spawn), and returns with it a
    /// [`FedStore`]: `store` wrapped so that the events appended through it are applied to this
    /// projection as soon as the append returns, when their turn has come, instead of waiting
    /// for the follower to be scheduled and read them back. Build the [`Engine`](super::Engine)
    /// on the returned store. Events appended elsewhere (another process, another wrapper) are
    /// still read by the follower, which also fills any gap the fed events leave.
    pub fn spawn_fed(store: Arc<dyn EventStore>) -> (Self, Arc<dyn EventStore>) {
        let projection = Self::spawn(store.clone());
        let fed = FedStore {
            inner: store,
            projection: Arc::downgrade(&projection.shared),
        };
        (projection, Arc::new(fed))
    }

    /// The position of the last event the read model has applied.
    pub fn position(&self) -> u64 {
        *self.shared.position.borrow()
    }

    /// When `position` became visible: an instant taken right after the read model had applied
    /// it (a page of the follower or a fed append) and released its lock, so never earlier
    /// than the moment a reader could first see it. `None` while `position` is not applied
    /// yet, and once it is older than the last 65,536 publications.
    pub fn visible_at(&self, position: u64) -> Option<Instant> {
        self.shared
            .published
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .visible_at(position)
    }

    /// A watch of [`position`](Self::position).
    pub fn watch_position(&self) -> watch::Receiver<u64> {
        self.shared.position.subscribe()
    }

    /// Waits until the read model has applied `position`, for at most `timeout`.
    pub async fn wait_for(&self, position: u64, timeout: Duration) -> Result<(), Error> {
        let mut rx = self.shared.position.subscribe();
        let reached = tokio::time::timeout(timeout, rx.wait_for(|p| *p >= position))
            .await
            .is_ok_and(|r| r.is_ok());
        match reached {
            true => Ok(()),
            false => Err(Error::NotCaughtUp {
                position,
                reached: self.position(),
                waited_ms: timeout.as_millis() as u64,
            }),
        }
    }

    /// A copy of the whole read model (for comparison and export).
    pub fn snapshot(&self) -> ReadModel {
        self.read().clone()
    }

    /// Reads one user as `principal`: not found when absent, removed or in another instance;
    /// permission denied without `user.read` on its organisation.
    pub fn get_user(&self, principal: &Principal, user: &UserId) -> Result<UserView, Error> {
        let model = self.read();
        let view = model
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

    fn read(&self) -> std::sync::RwLockReadGuard<'_, ReadModel> {
        // The model is only written by `apply`, which does not panic on any input.
        self.shared.model.read().unwrap_or_else(|e| e.into_inner())
    }
}

/// A store that hands what it appends to a [`Projection`] (from [`Projection::spawn_fed`]).
///
/// Every call goes to the wrapped store; after an append succeeds, its recorded events are
/// applied to the projection's read model right away if every earlier position is already
/// there, and otherwise kept until it is (by another fed append or by the follower). Order is
/// never given up: the read model still applies positions 1, 2, 3, … and nothing else, so
/// [`Projection::position`] keeps its meaning. A store whose positions have holes loses
/// nothing either: the follower reads past the hole and the waiting events are then applied
/// or dropped. Once the projection is dropped, appends are only forwarded.
pub struct FedStore {
    inner: Arc<dyn EventStore>,
    projection: Weak<Shared>,
}

#[async_trait]
impl EventStore for FedStore {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let recorded = self.inner.append(stream, expected, events).await?;
        if let Some(shared) = self.projection.upgrade() {
            shared.offer(&recorded);
        }
        Ok(recorded)
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        from_sequence: u64,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.inner.read_stream(stream, from_sequence).await
    }

    async fn read_all(
        &self,
        from_position: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.inner.read_all(from_position, limit).await
    }

    async fn head_position(&self) -> Result<u64, StoreError> {
        self.inner.head_position().await
    }

    fn watch_head(&self) -> watch::Receiver<u64> {
        self.inner.watch_head()
    }
}

impl Drop for Projection {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn follow(store: Arc<dyn EventStore>, shared: Arc<Shared>) {
    let mut head = store.watch_head();
    let mut backoff = Duration::from_millis(50);
    loop {
        // Mark the head as seen before reading, so a commit after the read wakes us.
        head.borrow_and_update();
        // Read from where the model is, past what fed appends applied meanwhile.
        let next = shared
            .model
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .position()
            + 1;
        let page = match store.read_all(next, PAGE).await {
            Ok(page) => {
                backoff = Duration::from_millis(50);
                page
            }
            Err(e) => {
                warn!(error = %e, "projection cannot read the store; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        if page.is_empty() {
            tokio::select! {
                changed = head.changed() => if changed.is_err() { tokio::time::sleep(POLL).await },
                _ = tokio::time::sleep(POLL) => {}
            }
            continue;
        }
        let (before, last) = {
            let mut model = shared.write();
            let before = model.position();
            // Fed appends may have applied part of the page already.
            for event in &page {
                if event.position > model.position() {
                    model.apply(event);
                }
            }
            drain(&mut model, &mut shared.pending());
            (before, model.position())
        };
        if last > before {
            shared.publish(last);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::EVENT_REVISION;
    use crate::store::{EventMetadata, NewEvent};
    use proptest::prelude::*;

    /// The read model's fold written plainly over a `HashMap` of views, as the reference.
    #[derive(Default)]
    struct Reference {
        users: HashMap<String, UserView>,
        position: u64,
    }

    impl Reference {
        fn apply(&mut self, event: &RecordedEvent) {
            self.position = self.position.max(event.position);
            let name = event.stream.as_str();
            let Some(rest) = name.strip_prefix("user:") else {
                return;
            };
            let Ok(decoded) = decode(event) else {
                return;
            };
            if let UserEvent::Added(added) = decoded {
                let Some((i, u)) = rest.split_once(':') else {
                    return;
                };
                let (Ok(_), Ok(user_id)) = (InstanceId::new(i), UserId::new(u)) else {
                    return;
                };
                let view = UserView {
                    user_id,
                    username: added.username,
                    resource_owner: added.resource_owner,
                    state: match added.initial {
                        true => UserState::Initial,
                        false => UserState::Active,
                    },
                    profile: added.profile,
                    email: added.email,
                    sequence: event.sequence,
                    position: event.position,
                    change_date: event.created_at,
                    creation_date: event.created_at,
                };
                self.users.insert(name.to_owned(), view);
                return;
            }
            let Some(view) = self.users.get_mut(name) else {
                return;
            };
            view.state = match decoded {
                UserEvent::Deactivated => UserState::Inactive,
                UserEvent::Reactivated | UserEvent::Unlocked => UserState::Active,
                UserEvent::Locked => UserState::Locked,
                UserEvent::Removed => UserState::Deleted,
                UserEvent::Added(_) => unreachable!(),
            };
            view.sequence = event.sequence;
            view.position = event.position;
            view.change_date = event.created_at;
        }
    }

    const INSTANCES: [&str; 2] = ["i1", "i2"];
    const USERS: usize = 40;

    fn user_stream(instance: usize, user: usize) -> String {
        format!("user:{}:u{user}", INSTANCES[instance])
    }

    /// A stream name: mostly valid user streams, sometimes a username reservation or a user
    /// stream whose name does not parse.
    fn any_stream() -> impl Strategy<Value = String> {
        prop_oneof![
            8 => (0..INSTANCES.len(), 0..USERS).prop_map(|(i, u)| user_stream(i, u)),
            1 => Just("username:i1:alice".to_owned()),
            1 => prop::sample::select(vec!["user:i1", "user::u1", "user:i1:", "user:i 1:u1", "user:i1:u1:x"])
                .prop_map(str::to_owned),
        ]
    }

    /// An event type, revision and payload: mostly well-formed, sometimes undecodable.
    fn any_event() -> impl Strategy<Value = (String, u16, serde_json::Value)> {
        let added = (
            prop::sample::select(vec![
                "alice",
                "",
                "Bob@example.com",
                "é名",
                "a-much-longer-username-than-most",
            ]),
            prop::sample::select(vec!["o1", "o2", "o3"]),
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
        )
            .prop_map(|(username, org, profile, email, initial)| {
                let mut payload = serde_json::json!({
                    "username": username, "resourceOwner": org, "initial": initial
                });
                if profile {
                    payload["profile"] =
                        serde_json::json!({"givenName": "G", "familyName": username});
                }
                if email {
                    payload["email"] =
                        serde_json::json!({"email": "e@x.org", "isVerified": initial});
                }
                ("user.human.added".to_owned(), 1, payload)
            });
        let other = prop::sample::select(UserEvent::TYPES[1..].to_vec())
            .prop_map(|t| (t.to_owned(), 1, serde_json::json!({})));
        prop_oneof![
            3 => added,
            6 => other,
            1 => Just(("user.human.added".to_owned(), 1, serde_json::json!({"username": 5}))),
            1 => Just(("user.renamed".to_owned(), 1, serde_json::json!({}))),
            1 => Just(("user.locked".to_owned(), EVENT_REVISION + 1, serde_json::json!({}))),
        ]
    }

    fn recorded(
        i: usize,
        stream: &str,
        sequence: u64,
        (event_type, revision, payload): (String, u16, serde_json::Value),
    ) -> RecordedEvent {
        let at = DateTime::<Utc>::from_timestamp(1_700_000_000 + i as i64, 0).unwrap();
        RecordedEvent::record(
            StreamId::new(stream).unwrap(),
            sequence,
            i as u64 + 1,
            at,
            NewEvent::new(event_type, revision, payload, EventMetadata::default()),
        )
    }

    fn assert_same(model: &ReadModel, reference: &Reference) -> Result<(), TestCaseError> {
        prop_assert_eq!(model.position(), reference.position);
        prop_assert_eq!(model.len(), reference.users.len());
        prop_assert_eq!(model.is_empty(), reference.users.is_empty());
        for (i, instance) in INSTANCES.iter().enumerate() {
            let instance = InstanceId::new(*instance).unwrap();
            for u in 0..USERS {
                let user = UserId::new(format!("u{u}")).unwrap();
                let expected = reference.users.get(&user_stream(i, u)).cloned();
                prop_assert_eq!(model.user(&instance, &user), expected);
            }
        }
        let mut counts: HashMap<UserState, usize> = HashMap::new();
        for view in reference.users.values() {
            *counts.entry(view.state).or_default() += 1;
        }
        for (state, n) in model.count_by_state() {
            prop_assert_eq!(n, counts.get(&state).copied().unwrap_or(0), "{:?}", state);
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        /// Any sequence of recorded events (re-adds, events for unknown users, undecodable
        /// events, streams of other kinds or with bad names) leaves the read model answering
        /// exactly as the plain `HashMap` fold does; a clone equals it, and so does a model that
        /// folded the same events.
        #[test]
        fn read_model_answers_like_a_plain_map(
            events in prop::collection::vec((any_stream(), 1u64..5, any_event()), 0..300)
        ) {
            let mut model = ReadModel::default();
            let mut again = ReadModel::default();
            let mut reference = Reference::default();
            for (i, (stream, sequence, event)) in events.into_iter().enumerate() {
                let event = recorded(i, &stream, sequence, event);
                model.apply(&event);
                again.apply(&event);
                reference.apply(&event);
            }
            assert_same(&model, &reference)?;
            prop_assert_eq!(&model.clone(), &model);
            prop_assert_eq!(&again, &model);
        }
    }

    #[test]
    fn fed_events_are_applied_in_position_order_whatever_order_they_arrive_in() {
        let shared = Shared {
            model: RwLock::new(ReadModel::default()),
            position: watch::channel(0).0,
            published: Mutex::default(),
            pending: Mutex::default(),
        };
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
        let position = || *shared.position.borrow();
        shared.offer(&events[2..4]);
        shared.offer(&events[5..6]);
        assert_eq!(position(), 0, "positions 1 and 2 have not come");
        assert_eq!(shared.pending().len(), 3);
        shared.offer(&events[0..1]);
        assert_eq!(position(), 1);
        shared.offer(&events[1..2]);
        assert_eq!(position(), 4, "3 and 4 were waiting");
        shared.offer(&events[0..3]);
        assert_eq!(position(), 4, "already applied: ignored");
        shared.offer(&events[4..5]);
        assert_eq!(position(), 6);
        assert!(shared.pending().is_empty());
        assert_eq!(*shared.model.read().unwrap(), reference);
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

    #[test]
    fn many_users_are_all_found_after_the_index_grows() {
        let instance = InstanceId::new("i1").unwrap();
        let mut model = ReadModel::default();
        let n = 5_000;
        for u in 0..n {
            let payload = serde_json::json!({
                "username": format!("name{u}"), "resourceOwner": format!("o{}", u % 7)
            });
            let event = ("user.human.added".to_owned(), 1, payload);
            model.apply(&recorded(u, &format!("user:i1:u{u}"), 1, event));
        }
        assert_eq!(model.len(), n);
        for u in 0..n {
            let view = model
                .user(&instance, &UserId::new(format!("u{u}")).unwrap())
                .unwrap();
            assert_eq!(view.username, format!("name{u}"));
            assert_eq!(view.resource_owner.as_str(), format!("o{}", u % 7));
            assert_eq!(view.position, u as u64 + 1);
        }
        assert_eq!(
            model.user(&instance, &UserId::new(format!("u{n}")).unwrap()),
            None
        );
        assert_eq!(
            model.user(&InstanceId::new("i2").unwrap(), &UserId::new("u1").unwrap()),
            None
        );
    }

    #[test]
    fn models_with_the_same_users_added_in_another_order_are_equal() {
        let add = |i: usize, u: usize| {
            let payload = serde_json::json!({"username": format!("n{u}"), "resourceOwner": "o1"});
            recorded(
                i,
                &format!("user:i1:u{u}"),
                1,
                ("user.human.added".to_owned(), 1, payload),
            )
        };
        let (mut forward, mut backward) = (ReadModel::default(), ReadModel::default());
        for u in 0..3 {
            forward.apply(&add(u, u));
            backward.apply(&add(u, 2 - u));
        }
        // Same users, but each with its own position: not equal until the positions match.
        assert_ne!(forward, backward);
        let (mut forward, mut backward) = (ReadModel::default(), ReadModel::default());
        for u in 0..3 {
            forward.apply(&add(0, u));
            backward.apply(&add(0, 2 - u));
        }
        assert_eq!(forward, backward);
        assert_eq!(format!("{forward:?}").matches("user:i1:u").count(), 3);
    }
}
