//! The read model: every user's current state as a dense table, and its fold of recorded
//! events. [`Projection`](super::Projection) keeps one live by following the store;
//! [`ReadModel::rebuild`] folds the whole store from position 1.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::hash::BuildHasher;

use chrono::{DateTime, Utc};
use hashbrown::hash_table::{self, HashTable};
use tracing::{error, warn};

use super::list;
use super::{decode_ref, Details, Error};
use crate::domain::{
    AuthMethod, Email, InstanceId, OrgId, Profile, StreamKind, StreamName, UserEvent, UserId,
    UserState,
};
use crate::hash::FastState;
use crate::store::{EventRef, EventStore, RecordedEvent, StreamId};

/// Events read per `read_all` call while rebuilding.
pub(super) const PAGE: usize = 1024;

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
    /// Failed password checks in a row (0 after a success or an unlock).
    pub failed_password_attempts: u32,
    /// Failed OTP checks in a row (0 after a success or an unlock).
    pub failed_otp_attempts: u32,
    /// When the current lock expires by itself (only while locked with a duration).
    pub locked_until: Option<DateTime<Utc>>,
}

impl UserView {
    /// Failed checks in a row, password and OTP together: SPEC.md's `failedAttempts`.
    pub fn failed_attempts(&self) -> u32 {
        self.failed_password_attempts
            .saturating_add(self.failed_otp_attempts)
    }

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
/// valid. The list indexes ([`list`](super::list)) hold the same `u32` indices of the live users
/// by instance, organisation and state.
#[derive(Clone, Default)]
pub struct ReadModel {
    /// Every user, in the order first added.
    pub(super) entries: Vec<Entry>,
    /// Index into `entries`, hashed by the entry's stream name.
    index: HashTable<u32>,
    hasher: FastState,
    pub(super) orgs: Vec<OrgId>,
    pub(super) org_index: HashMap<OrgId, u32>,
    /// The list indexes of each instance, by instance id.
    pub(super) lists: list::Lists,
    position: u64,
    /// `createdAt` of the last event applied.
    last_created_at: Option<DateTime<Utc>>,
    /// The users locked with an end, by that end: what the lock expiry scheduler asks for.
    timed_locks: BTreeSet<(DateTime<Utc>, u32)>,
}

/// One user in the read model; [`UserView`] is its public, owned form.
#[derive(Clone)]
pub(super) struct Entry {
    /// The stream name (`user:{instance}:{user}`) followed by the username.
    text: Box<str>,
    extra: Option<Box<(Option<Profile>, Option<Email>)>>,
    change_date: DateTime<Utc>,
    pub(super) creation_date: DateTime<Utc>,
    sequence: u64,
    position: u64,
    /// When the current lock expires by itself (see `ReadModel::timed_locks`).
    locked_until: Option<DateTime<Utc>>,
    pub(super) org: u32,
    /// Failed password and OTP checks in a row, saturated at `u16::MAX`.
    failed: [u16; 2],
    /// Length of the stream name at the start of `text` (at most 406 bytes: two ids of at most
    /// 200 bytes, checked before an entry is made).
    key_len: u16,
    pub(super) state: UserState,
    /// The entry's place in its instance's user-name order while it is live (given and kept by
    /// the list indexes, [`list`](super::list); not part of what the entry says).
    pub(super) name_label: u64,
    /// Which lists of its state groups hold the entry (bit `k` across organisations, bit
    /// `4 + k` of its organisation, `k` a live state's group; kept by the list indexes).
    pub(super) grouped: u8,
}

/// Equal when they say the same (the name labels depend on the order users were added in).
impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
            && self.extra == other.extra
            && self.change_date == other.change_date
            && self.creation_date == other.creation_date
            && self.sequence == other.sequence
            && self.position == other.position
            && self.org == other.org
            && self.key_len == other.key_len
            && self.state == other.state
    }
}

impl Eq for Entry {}

impl Entry {
    fn text(key: &str, username: &str) -> (Box<str>, u16) {
        let key_len = u16::try_from(key.len()).expect("user stream names are at most 406 bytes");
        ([key, username].concat().into_boxed_str(), key_len)
    }

    /// The user's stream name, the key of the read model.
    pub(super) fn key(&self) -> &str {
        &self.text[..self.key_len as usize]
    }

    /// The instance and user ids of the stream name.
    pub(super) fn ids(&self) -> (&str, &str) {
        match StreamName::parse(self.key()) {
            Some(StreamName::User { instance, user }) => (instance, user),
            // Entries are made only for user streams whose name parses.
            _ => ("", ""),
        }
    }

    /// The user name as given.
    pub(super) fn username(&self) -> &str {
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
            .field("locked_until", &self.locked_until)
            .field("failed", &self.failed)
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
            // Lent, not copied: on the file store this skips parsing every event's metadata
            // and the empty payloads of state changes (docs/PERFORMANCE.md, session 6).
            let visited = store
                .visit_all(model.position + 1, PAGE, &mut |e| model.apply_ref(e))
                .await?;
            if visited == 0 {
                model.compact_lists();
                return Ok(model);
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
        let mut counts = [0usize; 5];
        for entry in &self.entries {
            let i = states.iter().position(|&s| s == entry.state).unwrap_or(0);
            counts[i] += 1;
        }
        states.into_iter().zip(counts).collect()
    }

    /// Takes the users who left a state out of that state's list indexes where they have
    /// come to outnumber the users in it. [`apply`](Self::apply) leaves them in (it skips them
    /// in lists, and they cost nothing when they come back); the projection's follower calls
    /// this about once a second, off the command path, and [`rebuild`](Self::rebuild) once
    /// at its end. Answers never depend on it, only the cost of listing a state's users.
    pub fn compact_lists(&mut self) {
        list::compact(&mut self.lists, &mut self.entries);
    }

    /// The position of the last event applied.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// `createdAt` of the last event applied.
    pub fn last_created_at(&self) -> Option<DateTime<Utc>> {
        self.last_created_at
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
        Some(self.view_of(entry, user.clone()))
    }

    /// The view of the entry at `i` (an index from the list indexes).
    pub(super) fn view_at(&self, i: u32) -> UserView {
        let entry = &self.entries[i as usize];
        let (_, user) = entry.ids();
        let user = UserId::new(user).expect("the id was checked when the entry was made");
        self.view_of(entry, user)
    }

    fn view_of(&self, entry: &Entry, user_id: UserId) -> UserView {
        let (profile, email) = entry.extra.as_deref().cloned().unwrap_or_default();
        UserView {
            user_id,
            username: entry.username().to_owned(),
            resource_owner: self.orgs[entry.org as usize].clone(),
            state: entry.state,
            profile,
            email,
            sequence: entry.sequence,
            position: entry.position,
            change_date: entry.change_date,
            creation_date: entry.creation_date,
            failed_password_attempts: entry.failed[0].into(),
            failed_otp_attempts: entry.failed[1].into(),
            locked_until: entry.locked_until,
        }
    }

    /// The users whose timed lock ends at or before `now`, with that end, earliest first (at
    /// most `limit`).
    pub fn locks_due(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Vec<(InstanceId, UserId, DateTime<Utc>)> {
        self.timed_locks
            .iter()
            .take_while(|(until, _)| *until <= now)
            .filter_map(|&(until, i)| {
                let key = self.entries[i as usize].key();
                match StreamName::parse(key)? {
                    StreamName::User { instance, user } => Some((
                        InstanceId::new(instance).ok()?,
                        UserId::new(user).ok()?,
                        until,
                    )),
                    _ => None,
                }
            })
            .take(limit)
            .collect()
    }

    /// The earliest end of a timed lock, if any user is so locked.
    pub fn next_lock_end(&self) -> Option<DateTime<Utc>> {
        self.timed_locks.first().map(|&(until, _)| until)
    }

    /// The entry of the user with stream name `key`.
    fn entry(&self, key: &str) -> Option<&Entry> {
        Some(&self.entries[self.find(key)? as usize])
    }

    /// The index of the user with stream name `key`.
    pub(super) fn find(&self, key: &str) -> Option<u32> {
        let hash = self.hasher.hash_one(key);
        self.index
            .find(hash, |&i| self.entries[i as usize].key() == key)
            .copied()
    }

    /// Adds `entry`, or replaces the one with the same stream name (keeping its place); keeps
    /// the list indexes in step.
    fn insert(&mut self, entry: Entry) {
        let Self {
            entries,
            index,
            hasher,
            timed_locks,
            lists,
            ..
        } = self;
        let hash = hasher.hash_one(entry.key());
        let i = match index.entry(
            hash,
            |&i| entries[i as usize].key() == entry.key(),
            |&i| hasher.hash_one(entries[i as usize].key()),
        ) {
            hash_table::Entry::Occupied(found) => {
                let i = *found.get();
                if let Some(until) = entries[i as usize].locked_until {
                    timed_locks.remove(&(until, i));
                }
                list::unindex(lists, entries, i);
                entries[i as usize] = entry;
                i
            }
            hash_table::Entry::Vacant(slot) => {
                let i = u32::try_from(entries.len()).expect("fewer than 2^32 users");
                entries.push(entry);
                slot.insert(i);
                i
            }
        };
        list::index(lists, entries, i);
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
        self.apply_ref(event.as_event_ref());
    }

    /// [`apply`](Self::apply) for an event a store lends (see [`EventStore::visit_all`]):
    /// its payload is parsed only when it carries data (a user added).
    pub fn apply_ref(&mut self, event: EventRef<'_>) {
        self.position = self.position.max(event.position);
        self.last_created_at = Some(event.created_at);
        let name = event.stream;
        if StreamKind::of(name) != Some(StreamKind::User) {
            return;
        }
        let decoded = match decode_ref(&event) {
            Ok(e) => e,
            Err(e) => {
                error!(error = %e, "projection skipped an undecodable event");
                return;
            }
        };
        let state = decoded.state_after();
        if let UserEvent::Added(added) = decoded {
            let valid = matches!(StreamName::parse(name), Some(StreamName::User { instance, user })
                if InstanceId::new(instance).is_ok() && UserId::new(user).is_ok());
            if !valid {
                warn!(stream = name, "user stream with an invalid name; skipped");
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
                locked_until: None,
                org,
                failed: [0; 2],
                key_len,
                state: state.unwrap_or(UserState::Active),
                name_label: 0,
                grouped: 0,
            });
            return;
        }
        let Some(i) = self.find(name) else {
            warn!(stream = name, "event for a user never added; skipped");
            return;
        };
        let state = state.unwrap_or(self.entries[i as usize].state);
        let entry = &mut self.entries[i as usize];
        let old = entry.state;
        let slot = |method| match method {
            AuthMethod::Password => 0,
            AuthMethod::Otp => 1,
        };
        let until = match &decoded {
            UserEvent::CheckFailed(method, failed) => {
                let count = u16::try_from(failed.failed_attempts).unwrap_or(u16::MAX);
                entry.failed[slot(*method)] = count;
                entry.locked_until
            }
            UserEvent::CheckSucceeded(method) => {
                entry.failed[slot(*method)] = 0;
                entry.locked_until
            }
            UserEvent::Unlocked(_) => {
                entry.failed = [0; 2];
                None
            }
            UserEvent::Locked(locked) => locked.locked_until,
            UserEvent::Erased => {
                // Profile and email go; the username stays in memory (it orders the list
                // indexes) until the next rebuild, which reads it erased. A removed user is
                // never answered, so neither is it.
                entry.extra = None;
                entry.locked_until
            }
            _ => None,
        };
        entry.state = state;
        entry.sequence = event.sequence;
        entry.position = event.position;
        entry.change_date = event.created_at;
        if until != entry.locked_until {
            if let Some(previous) = entry.locked_until {
                self.timed_locks.remove(&(previous, i));
            }
            if let Some(new) = until {
                self.timed_locks.insert((new, i));
            }
            entry.locked_until = until;
        }
        if old != state {
            list::restate(&mut self.lists, &mut self.entries, i, old);
        }
    }
}
