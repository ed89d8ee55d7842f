//! The front-end-independent service: request -> [`UserCommand`] -> [`Engine`] -> typed answer.
//! The HTTP router calls it, and a gRPC front end calls the same functions, so both answer
//! identically.
//!
//! Read-your-writes: every command answer carries the global position of its last event. A read
//! waits (at most [`UserService::read_timeout`]) until the projection reached the larger of the
//! position the client sent (`x-userstate-min-position`) and the last position this principal
//! (instance + subject) wrote through this process. A plain GET after a command by the same
//! caller therefore sees the command, without the client doing anything.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};
use userstate::{
    AddUser, AsOf, AuditState, Context, Details, DomainError, Email, Engine, EventStore,
    InstanceId, ListRequest, LockExpiry, LockoutPolicy, OrgId, PolicyDetails, PolicyView,
    Principal, Profile, Projection, RecordedEvent, UserCommand, UserId, UserList, UserView,
};

use crate::metrics::{CommandCounters, CommandType};
use crate::status::ApiError;

/// How long a read waits for the projection by default.
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// What a request carries besides its payload.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestMeta {
    /// The request id, stored as the events' correlation id.
    pub correlation_id: Option<String>,
    /// The client's idempotency key.
    pub idempotency_key: Option<String>,
    /// A read must reflect at least this global position.
    pub min_position: Option<u64>,
}

/// A human user to add, as parsed from a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewHumanUser {
    /// The id, or `None` to generate one.
    pub user_id: Option<UserId>,
    /// Login name.
    pub username: String,
    /// Owning organisation.
    pub organization: OrgId,
    /// Optional profile.
    pub profile: Option<Profile>,
    /// Optional email.
    pub email: Option<Email>,
    /// Start in the initial state.
    pub initial: bool,
}

/// The last position each caller (instance, then subject) wrote through this process.
type LastWritten = HashMap<InstanceId, HashMap<String, u64>>;

/// The engine, the read model and the bookkeeping for read-your-writes.
pub struct UserService {
    engine: Engine,
    projection: Arc<Projection>,
    /// Unlocks timed locks when they end (SPEC.md "Lockout policy and timed locks"); stops
    /// with the service.
    _expiry: LockExpiry,
    last_written: Mutex<LastWritten>,
    read_timeout: Duration,
    /// Counts every command by type and outcome, when set.
    commands: Option<CommandCounters>,
}

impl UserService {
    /// A service on `store`; starts the projection (needs a Tokio runtime). The engine tells
    /// the projection what it commits ([`Projection::listener`]), so this node's own events
    /// reach the read model as their appends return; other nodes' events are read back by the
    /// projection's follower. Starts the [`LockExpiry`] scheduler too: every node runs one, and
    /// each expired lock is unlocked exactly once.
    pub fn new(store: Arc<dyn EventStore>) -> Self {
        let projection = Arc::new(Projection::spawn(store.clone()));
        let engine = Engine::new(store).with_listener(projection.listener());
        Self {
            _expiry: LockExpiry::spawn(engine.clone(), projection.clone()),
            engine,
            projection,
            last_written: Mutex::default(),
            read_timeout: DEFAULT_READ_TIMEOUT,
            commands: None,
        }
    }

    /// Counts every command in `counters` (`userstate_commands_total`), by type and outcome.
    pub fn with_command_counters(mut self, counters: CommandCounters) -> Self {
        self.commands = Some(counters);
        self
    }

    fn count(&self, command: CommandType, outcome: Result<(), userstate::ErrorKind>) {
        if let Some(counters) = &self.commands {
            counters.count(command, outcome);
        }
    }

    /// Sets how long reads wait for the projection.
    pub fn with_read_timeout(mut self, timeout: Duration) -> Self {
        self.read_timeout = timeout;
        self
    }

    /// How long reads wait for the projection.
    pub fn read_timeout(&self) -> Duration {
        self.read_timeout
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn EventStore> {
        self.engine.store()
    }

    /// The read model.
    pub fn projection(&self) -> &Projection {
        &self.projection
    }

    /// Adds a human user. Without an id, one is generated; with an idempotency key and no id,
    /// the id is derived from (instance, subject, key), so a retried add answers the first
    /// answer instead of adding a second user.
    pub async fn add_human_user(
        &self,
        principal: &Arc<Principal>,
        meta: &RequestMeta,
        new: NewHumanUser,
    ) -> Result<(UserId, Details), ApiError> {
        let user_id = match (new.user_id, &meta.idempotency_key) {
            (Some(id), _) => id,
            (None, Some(key)) => derived_user_id(principal, key),
            (None, None) => UserId::generate(),
        };
        let command = UserCommand::Add(AddUser {
            user_id: user_id.clone(),
            username: new.username,
            organization: new.organization,
            profile: new.profile,
            email: new.email,
            initial: new.initial,
        });
        let details = self.execute(principal, meta, command).await?;
        Ok((user_id, details))
    }

    /// Runs one command as `principal`.
    pub async fn execute(
        &self,
        principal: &Arc<Principal>,
        meta: &RequestMeta,
        command: UserCommand,
    ) -> Result<Details, ApiError> {
        let ctx = Context {
            principal: Arc::clone(principal),
            correlation_id: meta.correlation_id.clone(),
            idempotency_key: meta.idempotency_key.clone(),
        };
        let kind = CommandType::of(&command);
        let result = self.engine.execute(&ctx, command).await;
        let details = result
            .map_err(ApiError::from)
            .inspect_err(|e| self.count(kind, Err(e.kind)))?;
        self.count(kind, Ok(()));
        self.remember(principal, details.position);
        Ok(details)
    }

    /// The lockout policy in force for `org` (the instance's when `None`), as `principal`.
    pub async fn get_lockout_policy(
        &self,
        principal: &Principal,
        org: Option<&OrgId>,
    ) -> Result<PolicyView, ApiError> {
        Ok(self.engine.get_lockout_policy(principal, org).await?)
    }

    /// Sets the lockout policy of `org` (the instance's when `None`), as `principal`.
    pub async fn set_lockout_policy(
        &self,
        principal: &Arc<Principal>,
        meta: &RequestMeta,
        org: Option<&OrgId>,
        policy: LockoutPolicy,
    ) -> Result<PolicyDetails, ApiError> {
        let ctx = Context {
            principal: Arc::clone(principal),
            correlation_id: meta.correlation_id.clone(),
            idempotency_key: meta.idempotency_key.clone(),
        };
        let result = self.engine.set_lockout_policy(&ctx, org, policy).await;
        let details = result
            .map_err(ApiError::from)
            .inspect_err(|e| self.count(CommandType::SetLockoutPolicy, Err(e.kind)))?;
        self.count(CommandType::SetLockoutPolicy, Ok(()));
        self.remember(principal, details.position);
        Ok(details)
    }

    /// Reads one user from the read model, after waiting for the caller's writes (see the
    /// module docs).
    pub async fn get_user(
        &self,
        principal: &Principal,
        meta: &RequestMeta,
        user: &UserId,
    ) -> Result<UserView, ApiError> {
        self.caught_up(principal, meta).await?;
        Ok(self.projection.get_user(principal, user)?)
    }

    /// One page of the users `principal` may read that match `request`, after waiting for the
    /// caller's writes as [`get_user`](Self::get_user) does.
    pub async fn list_users(
        &self,
        principal: &Principal,
        meta: &RequestMeta,
        request: &ListRequest,
    ) -> Result<UserList, ApiError> {
        self.caught_up(principal, meta).await?;
        Ok(self.projection.list_users(principal, request)?)
    }

    /// Up to `limit` events of `user`'s history after sequence `after`, oldest first, and the
    /// user's state after its last event (removed users included; `user.read`). Read from the
    /// store, so always current.
    pub async fn history(
        &self,
        principal: &Principal,
        user: &UserId,
        after: u64,
        limit: usize,
    ) -> Result<(Vec<RecordedEvent>, AuditState), ApiError> {
        let events = self.engine.history(principal, user).await?;
        let state = state_of(
            user,
            self.engine
                .state_as_of(principal, user, AsOf::Sequence(u64::MAX))
                .await?,
        )?;
        let page = events
            .into_iter()
            .filter(|e| e.sequence > after)
            .take(limit)
            .collect();
        Ok((page, state))
    }

    /// `user`'s state as of `at` (`user.read`); not found when it did not exist yet then.
    pub async fn state_as_of(
        &self,
        principal: &Principal,
        user: &UserId,
        at: AsOf,
    ) -> Result<AuditState, ApiError> {
        state_of(user, self.engine.state_as_of(principal, user, at).await?)
    }

    /// Waits until the projection holds the caller's last write and `meta`'s minimum position.
    async fn caught_up(&self, principal: &Principal, meta: &RequestMeta) -> Result<(), ApiError> {
        let written = self.last_written(principal);
        let target = meta.min_position.unwrap_or(0).max(written);
        if target > self.projection.position() {
            self.projection.wait_for(target, self.read_timeout).await?;
        }
        Ok(())
    }

    /// Whether the store answers and can take writes now ([`EventStore::health`]: e.g. the
    /// file store after a failed write, until it has repaired its segment) and the projection
    /// has reached `head` (the head read when the service started).
    pub async fn ready(&self, startup_head: u64) -> bool {
        self.store().health().is_ok()
            && self.store().head_position().await.is_ok()
            && self.projection.position() >= startup_head
    }

    fn remember(&self, principal: &Principal, position: u64) {
        let mut map = self.last_written.lock().unwrap_or_else(|e| e.into_inner());
        // Looked up by reference: keys are allocated only for a caller's first write.
        let subjects = match map.get_mut(&principal.instance) {
            Some(subjects) => subjects,
            None => map.entry(principal.instance.clone()).or_default(),
        };
        match subjects.get_mut(principal.subject.as_str()) {
            Some(last) => *last = (*last).max(position),
            None => {
                subjects.insert(principal.subject.clone(), position);
            }
        }
    }

    fn last_written(&self, principal: &Principal) -> u64 {
        let map = self.last_written.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&principal.instance)
            .and_then(|subjects| subjects.get(principal.subject.as_str()))
            .copied()
            .unwrap_or(0)
    }
}

/// A state as of a point, or not found when the user did not exist then.
fn state_of(user: &UserId, state: Option<AuditState>) -> Result<AuditState, ApiError> {
    state.ok_or_else(|| DomainError::NotFound(user.clone()).into())
}

/// The user id an add with idempotency key `key` and no id gets: 18 decimal digits from
/// SHA-256(instance, subject, key), in the same form as [`UserId::generate`].
pub fn derived_user_id(principal: &Principal, key: &str) -> UserId {
    let mut hasher = Sha256::new();
    for part in [principal.instance.as_str(), &principal.subject, key] {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part.as_bytes());
    }
    let digest = hasher.finalize();
    let mut first = [0u8; 16];
    first.copy_from_slice(&digest[..16]);
    let n = u128::from_be_bytes(first) % 900_000_000_000_000_000;
    UserId::new(format!("{}", 100_000_000_000_000_000 + n))
        .expect("an 18-digit decimal is a valid user id")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_ids_are_stable_per_caller_and_key() {
        let p = Principal::system("a", InstanceId::new("i").unwrap());
        let q = Principal::system("b", InstanceId::new("i").unwrap());
        let id = derived_user_id(&p, "k1");
        assert_eq!(id, derived_user_id(&p, "k1"));
        assert_ne!(id, derived_user_id(&p, "k2"));
        assert_ne!(id, derived_user_id(&q, "k1"));
        assert_eq!(id.as_str().len(), 18);
    }
}
