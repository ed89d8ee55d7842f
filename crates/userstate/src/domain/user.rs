//! The user aggregate: a fold of its events ([`User::apply`]) and the rules that turn a command
//! into new events ([`User::decide`]). Pure: no clock, no store, no async.

use std::sync::Arc;

use super::command::validate_add;
use super::{
    DomainError, Email, OrgId, Profile, UserAdded, UserCommand, UserEvent, UserId, UserState,
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
}

impl Default for User {
    fn default() -> Self {
        Self {
            data: None,
            // Never read while `data` is `None`.
            state: UserState::Initial,
            version: 0,
        }
    }
}

impl User {
    /// Folds a whole history, oldest first.
    pub fn from_events<'a>(events: impl IntoIterator<Item = &'a UserEvent>) -> Self {
        let mut user = User::default();
        for event in events {
            user.apply(event);
        }
        user
    }

    /// Folds one event. Events come from the store, so they were valid when decided; an event
    /// that makes no sense for the current state (which `decide` never produces) still folds
    /// deterministically rather than panicking, and `userstate verify` reports such histories.
    pub fn apply(&mut self, event: &UserEvent) {
        self.version += 1;
        if let UserEvent::Added(added) = event {
            self.data = Some(Arc::new(UserData {
                username: added.username.clone(),
                resource_owner: added.resource_owner.clone(),
                profile: added.profile.clone(),
                email: added.email.clone(),
            }));
        }
        if self.data.is_some() {
            self.state = event.state_after();
        }
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

    /// Checks `command` against the current state and returns the events to append.
    /// Never returns an empty list on success.
    pub fn decide(&self, command: &UserCommand) -> Result<Vec<UserEvent>, DomainError> {
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
                UserState::Active | UserState::Initial => UserEvent::Locked,
                other => return Err(DomainError::ShouldBeActiveOrInitial(id.clone(), other)),
            },
            UserCommand::Unlock(id) => match self.require_live_state(id)? {
                UserState::Locked => UserEvent::Unlocked,
                other => return Err(DomainError::NotLocked(id.clone(), other)),
            },
            UserCommand::Remove(id) => {
                self.require_live(id)?;
                UserEvent::Removed
            }
        };
        Ok(vec![event])
    }
}
