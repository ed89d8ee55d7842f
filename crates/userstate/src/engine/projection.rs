//! The read model: every user's current state, kept by following `read_all` from a checkpoint.
//!
//! [`Projection::spawn`] starts a task that pages through the store, wakes on the store's head
//! watch (with a slow poll as a safety net for stores shared between processes), and publishes
//! how far it has read. [`Projection::wait_for`] lets a caller read its own writes;
//! [`ReadModel::rebuild`] folds the whole store from position 1 into the same model.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{error, warn};

use super::{decode, Details, Error, Permission, Principal};
use crate::domain::{DomainError, Email, InstanceId, OrgId, Profile, UserEvent, UserId, UserState};
use crate::store::{EventStore, RecordedEvent, StreamId};

/// Events read per `read_all` call.
const PAGE: usize = 1024;
/// How often the follower polls even without a head notification.
const POLL: Duration = Duration::from_millis(500);

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
/// Kept compact because it holds every user in memory: one map entry per user keyed by its
/// stream name, organisations interned, profile and email boxed only when present (see
/// docs/PERFORMANCE.md for the measured bytes per user).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReadModel {
    users: HashMap<Box<str>, Entry>,
    orgs: Vec<OrgId>,
    org_index: HashMap<OrgId, u32>,
    position: u64,
}

/// One user in the read model; [`UserView`] is its public, owned form.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    username: Box<str>,
    extra: Option<Box<(Option<Profile>, Option<Email>)>>,
    change_date: DateTime<Utc>,
    creation_date: DateTime<Utc>,
    sequence: u64,
    position: u64,
    org: u32,
    state: UserState,
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
            .map(|s| (s, self.users.values().filter(|e| e.state == s).count()))
            .collect()
    }

    /// The position of the last event applied.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// The number of users known (removed ones included).
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// Whether no user is known.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// One user, removed ones included.
    pub fn user(&self, instance: &InstanceId, user: &UserId) -> Option<UserView> {
        let key = StreamId::user(instance, user);
        let entry = self.users.get(key.as_str())?;
        let (profile, email) = entry.extra.as_deref().cloned().unwrap_or_default();
        Some(UserView {
            user_id: user.clone(),
            username: entry.username.to_string(),
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
            self.users.insert(
                name.into(),
                Entry {
                    username: added.username.into_boxed_str(),
                    extra,
                    change_date: event.created_at,
                    creation_date: event.created_at,
                    sequence: event.sequence,
                    position: event.position,
                    org,
                    state: if added.initial {
                        UserState::Initial
                    } else {
                        UserState::Active
                    },
                },
            );
            return;
        }
        let Some(entry) = self.users.get_mut(name) else {
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
        });
        let task = tokio::spawn(follow(store, shared.clone()));
        Self { shared, task }
    }

    /// The position of the last event the read model has applied.
    pub fn position(&self) -> u64 {
        *self.shared.position.borrow()
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

impl Drop for Projection {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn follow(store: Arc<dyn EventStore>, shared: Arc<Shared>) {
    let mut head = store.watch_head();
    let mut next = 1;
    let mut backoff = Duration::from_millis(50);
    loop {
        // Mark the head as seen before reading, so a commit after the read wakes us.
        head.borrow_and_update();
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
        let Some(last) = page.last().map(|e| e.position) else {
            tokio::select! {
                changed = head.changed() => if changed.is_err() { tokio::time::sleep(POLL).await },
                _ = tokio::time::sleep(POLL) => {}
            }
            continue;
        };
        {
            let mut model = shared.model.write().unwrap_or_else(|e| e.into_inner());
            for event in &page {
                model.apply(event);
            }
        }
        next = last + 1;
        shared.position.send_replace(last);
    }
}
