//! The user aggregate: a fold of its events ([`User::apply`]) and the rules that turn a command
//! into new events ([`User::decide`]). Pure: no clock, no store, no async.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::command::validate_add;
use super::lockout::{after, check_duration};
use super::{
    AuthMethod, CheckFailed, DomainError, Email, LockoutPolicy, OrgId, Profile, UserAdded,
    UserCommand, UserEvent, UserId, UserLocked, UserState, UserUnlocked,
};

/// What is known about an existing user from its add: facts that no later event changes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserData {
    /// Login name.
    pub username: String,
    /// Owning organisation.
    pub resource_owner: OrgId,
    /// Profile as added.
    pub profile: Option<Profile>,
    /// Email as added.
    pub email: Option<Email>,
    /// Whether the personal data (username, profile, email) was erased: they are empty then.
    pub erased: bool,
}

/// A user folded from its history. `User::default()` is a user that was never added.
///
/// The facts of the add are shared (`Arc`): the engine's cache hands out a copy of the user
/// for every command, and folding a state change or copying the user then copies no strings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    data: Option<Arc<UserData>>,
    /// The lifecycle state; meaningful only while `data` is set.
    state: UserState,
    version: u64,
    /// When the current lock expires by itself (only while locked).
    locked_until: Option<DateTime<Utc>>,
    /// Failed password checks in a row, and when the last one was written.
    password: Failures,
    /// Failed OTP checks in a row, and when the last one was written.
    otp: Failures,
}

/// Failed checks of one method since the last success or unlock.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Failures {
    count: u32,
    last: Option<DateTime<Utc>>,
}

impl Default for User {
    fn default() -> Self {
        Self {
            data: None,
            // Never read while `data` is `None`.
            state: UserState::Initial,
            version: 0,
            locked_until: None,
            password: Failures::default(),
            otp: Failures::default(),
        }
    }
}

impl User {
    /// Folds a whole history, oldest first, each event with the time it was written.
    pub fn from_events<'a>(
        events: impl IntoIterator<Item = (&'a UserEvent, DateTime<Utc>)>,
    ) -> Self {
        let mut user = User::default();
        for (event, at) in events {
            user.apply(event, at);
        }
        user
    }

    /// Folds one event, written at `at` (its `createdAt`: the failure window is measured from
    /// it). Events come from the store, so they were valid when decided; an event that makes
    /// no sense for the current state (which `decide` never produces) still folds
    /// deterministically rather than panicking, and `userstate verify` reports such histories.
    pub fn apply(&mut self, event: &UserEvent, at: DateTime<Utc>) {
        self.version += 1;
        match event {
            UserEvent::CheckFailed(method, failed) => {
                *self.failures_mut(*method) = Failures {
                    count: failed.failed_attempts,
                    last: Some(at),
                };
            }
            UserEvent::CheckSucceeded(method) => *self.failures_mut(*method) = Failures::default(),
            UserEvent::Unlocked(_) => {
                self.password = Failures::default();
                self.otp = Failures::default();
            }
            _ => {}
        }
        // A lock's end belongs to that lock: any other change of state drops it.
        match event {
            UserEvent::Locked(locked) => self.locked_until = locked.locked_until,
            _ if event.state_after().is_some() => self.locked_until = None,
            _ => {}
        }
        if let UserEvent::Added(added) = event {
            self.data = Some(Arc::new(UserData {
                username: added.username.clone(),
                resource_owner: added.resource_owner.clone(),
                profile: added.profile.clone(),
                email: added.email.clone(),
                erased: added.erased,
            }));
        }
        if let (UserEvent::Erased, Some(data)) = (event, &self.data) {
            self.data = Some(Arc::new(UserData {
                username: String::new(),
                resource_owner: data.resource_owner.clone(),
                profile: None,
                email: None,
                erased: true,
            }));
        }
        if let Some(state) = event.state_after().filter(|_| self.data.is_some()) {
            self.state = state;
        }
    }

    fn failures_mut(&mut self, method: AuthMethod) -> &mut Failures {
        match method {
            AuthMethod::Password => &mut self.password,
            AuthMethod::Otp => &mut self.otp,
        }
    }

    fn failures(&self, method: AuthMethod) -> Failures {
        match method {
            AuthMethod::Password => self.password,
            AuthMethod::Otp => self.otp,
        }
    }

    /// Failed checks of `method` in a row, as of the last failure (0 after a success or an
    /// unlock).
    pub fn failed_attempts(&self, method: AuthMethod) -> u32 {
        self.failures(method).count
    }

    /// When the current lock expires by itself; `None` when not locked or locked until
    /// unlocked by hand.
    pub fn locked_until(&self) -> Option<DateTime<Utc>> {
        self.locked_until
    }

    /// The number of events folded: the stream's current sequence (0 when never added).
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The user's data, if it was ever added (removed users included).
    pub fn data(&self) -> Option<&UserData> {
        self.data.as_deref()
    }

    /// The current state, `None` when never added.
    pub fn state(&self) -> Option<UserState> {
        self.data.as_ref().map(|_| self.state)
    }

    /// The state of a user that exists and was not removed, else `NotFound`.
    fn require_live_state(&self, id: &UserId) -> Result<UserState, DomainError> {
        self.require_live(id).map(|_| self.state)
    }

    /// The user's data if it exists and was not removed, else `NotFound`: the first check of
    /// every command but add.
    pub fn require_live(&self, id: &UserId) -> Result<&UserData, DomainError> {
        match self.data.as_deref() {
            Some(data) if self.state != UserState::Deleted => Ok(data),
            _ => Err(DomainError::NotFound(id.clone())),
        }
    }

    /// Checks `command` against the current state and returns the events to append, with no
    /// lockout policy (every limit off): see [`decide_under`](Self::decide_under).
    pub fn decide(&self, command: &UserCommand) -> Result<Vec<UserEvent>, DomainError> {
        self.decide_under(command, &LockoutPolicy::default())
    }

    /// Checks `command` against the current state under the lockout `policy` that applies to
    /// the user, and returns the events to append. Never returns an empty list on success.
    pub fn decide_under(
        &self,
        command: &UserCommand,
        policy: &LockoutPolicy,
    ) -> Result<Vec<UserEvent>, DomainError> {
        let event = match command {
            UserCommand::Add(add) => {
                if self.data.is_some() {
                    return Err(DomainError::AlreadyExists(add.user_id.clone()));
                }
                validate_add(add)?;
                UserEvent::Added(UserAdded {
                    username: add.username.clone(),
                    resource_owner: add.organization.clone(),
                    profile: add.profile.clone(),
                    email: add.email.clone(),
                    initial: add.initial,
                    erased: false,
                })
            }
            UserCommand::Deactivate(id) => match self.require_live_state(id)? {
                UserState::Initial => return Err(DomainError::CantDeactivateInitial(id.clone())),
                UserState::Inactive => return Err(DomainError::AlreadyInactive(id.clone())),
                _ => UserEvent::Deactivated,
            },
            UserCommand::Reactivate(id) => match self.require_live_state(id)? {
                UserState::Inactive => UserEvent::Reactivated,
                other => return Err(DomainError::NotInactive(id.clone(), other)),
            },
            UserCommand::Lock(id) => match self.require_live_state(id)? {
                UserState::Active | UserState::Initial => UserEvent::Locked(UserLocked::default()),
                other => return Err(DomainError::ShouldBeActiveOrInitial(id.clone(), other)),
            },
            UserCommand::LockFor(lock) => {
                let id = &lock.user_id;
                check_duration("duration", lock.duration)?;
                match self.require_live_state(id)? {
                    UserState::Active | UserState::Initial => UserEvent::Locked(UserLocked {
                        reason: None,
                        locked_until: (!lock.duration.is_zero())
                            .then(|| after(lock.now, lock.duration)),
                    }),
                    other => return Err(DomainError::ShouldBeActiveOrInitial(id.clone(), other)),
                }
            }
            UserCommand::Unlock(id) => match self.require_live_state(id)? {
                UserState::Locked => UserEvent::Unlocked(UserUnlocked::default()),
                other => return Err(DomainError::NotLocked(id.clone(), other)),
            },
            UserCommand::ExpireLock { user_id, now } => match self.require_live_state(user_id)? {
                UserState::Locked if self.locked_until.is_some_and(|until| until <= *now) => {
                    UserEvent::Unlocked(UserUnlocked {
                        reason: Some(UserUnlocked::LOCK_EXPIRED.to_owned()),
                    })
                }
                UserState::Locked => return Err(DomainError::LockNotExpired(user_id.clone())),
                other => return Err(DomainError::NotLocked(user_id.clone(), other)),
            },
            UserCommand::AuthSucceeded(outcome) => {
                self.require_live(&outcome.user_id)?;
                UserEvent::CheckSucceeded(outcome.method)
            }
            UserCommand::AuthFailed(outcome) => {
                return self.decide_failure(outcome, policy);
            }
            UserCommand::Remove(id) => {
                self.require_live(id)?;
                UserEvent::Removed
            }
            // Again on an erased user: the key is gone already, the erasure is recorded again
            // (an idempotent retry).
            UserCommand::Erase(id) => match self.state() {
                None => return Err(DomainError::NotFound(id.clone())),
                Some(UserState::Deleted) => UserEvent::Erased,
                Some(other) => return Err(DomainError::NotRemoved(id.clone(), other)),
            },
        };
        Ok(vec![event])
    }

    /// A failed check: recorded with the count in a row (restarted when the previous failure
    /// is older than the policy's window), plus a lock when the count reaches the maximum and
    /// the user may be locked (active or initial; a locked user stays locked as it was).
    fn decide_failure(
        &self,
        outcome: &super::AuthOutcome,
        policy: &LockoutPolicy,
    ) -> Result<Vec<UserEvent>, DomainError> {
        let state = self.require_live_state(&outcome.user_id)?;
        let method = outcome.method;
        let previous = self.failures(method);
        let window = policy.failure_reset_after;
        let expired = !window.is_zero()
            && previous
                .last
                .is_some_and(|last| after(last, window) <= outcome.now);
        let count = if expired {
            1
        } else {
            previous.count.saturating_add(1)
        };
        let mut events = vec![UserEvent::CheckFailed(
            method,
            CheckFailed {
                failed_attempts: count,
            },
        )];
        let max = policy.max_attempts(method);
        if max > 0 && count >= max && matches!(state, UserState::Active | UserState::Initial) {
            let duration = policy.lock_duration;
            events.push(UserEvent::Locked(UserLocked {
                reason: Some(UserLocked::LOCKOUT_POLICY.to_owned()),
                locked_until: (!duration.is_zero()).then(|| after(outcome.now, duration)),
            }));
        }
        Ok(events)
    }
}
