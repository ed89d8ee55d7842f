//! Lockout policies and timed locks (SPEC.md "Lockout policy and timed locks").
//!
//! A policy is an aggregate of its own ([`LockoutPolicyStream`], one stream per instance and one
//! per overriding organisation) run through the one command loop ([`Engine::run`]). A failed
//! check is decided under the policy in force for the user's organisation
//! ([`Engine::lockout_policy`]). [`LockExpiry`] is the scheduler that unlocks timed locks when
//! they end: it finds them in the [`Projection`]'s read model and appends through the command
//! loop, whose expected-version check makes the unlock happen once however many nodes try.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use super::command::{Aggregate, Command, Decision, Folded, Load};
use super::{Context, Details, Engine, Error, Permission, Principal, Projection};
use crate::domain::{
    InstanceId, LockoutPolicy, LockoutPolicySet, LockoutPolicyStream, OrgId, StreamName,
    UserCommand, UserId,
};
use crate::error::ErrorKind;
use crate::store::{RecordedEvent, StreamId};

/// The creator recorded on the unlocks [`LockExpiry`] appends.
pub const SYSTEM_SUBJECT: &str = "system";

impl Aggregate for LockoutPolicyStream {
    type Event = LockoutPolicySet;

    fn decode(e: &RecordedEvent) -> Result<LockoutPolicySet, Error> {
        LockoutPolicySet::decode(&e.event_type, e.revision, &e.payload).map_err(|source| {
            Error::Decode {
                stream: e.stream.as_str().to_owned(),
                sequence: e.sequence,
                source,
            }
        })
    }

    fn encode(event: &LockoutPolicySet) -> (&'static str, Value) {
        (LockoutPolicySet::TYPE, event.payload())
    }

    fn apply(&mut self, event: &LockoutPolicySet, at: DateTime<Utc>) {
        LockoutPolicyStream::apply(self, event, at)
    }

    fn version(&self) -> u64 {
        LockoutPolicyStream::version(self)
    }
}

/// Where the policy in force comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PolicySource {
    /// The organisation's own policy.
    Organization,
    /// The instance's policy.
    Instance,
    /// No policy was ever set: every limit is off.
    Default,
}

/// A lockout policy as read: the policy in force and where it comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyView {
    /// The policy in force.
    pub policy: LockoutPolicy,
    /// Where it comes from.
    pub source: PolicySource,
    /// The sequence of its stream's last event (0 for the default).
    pub sequence: u64,
    /// When it was set last (`None` for the default).
    pub change_date: Option<DateTime<Utc>>,
}

/// What setting a policy answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyDetails {
    /// The sequence of the event appended in the policy's stream.
    pub sequence: u64,
    /// Its `createdAt`.
    pub change_date: DateTime<Utc>,
    /// Its global position.
    pub position: u64,
}

fn policy_stream(instance: &InstanceId, org: Option<&OrgId>) -> StreamId {
    let name = StreamName::LockoutPolicy {
        instance: instance.as_str(),
        org: org.map(OrgId::as_str),
    };
    StreamId::new(name.to_name()).expect("two ids make a valid stream name")
}

/// Setting a policy, as [`Engine::run`] decides it.
struct SetPolicy {
    policy: LockoutPolicy,
    owner: OrgId,
}

impl Command<LockoutPolicyStream> for SetPolicy {
    type Answer = ();

    async fn decide(
        &mut self,
        _: &Folded<LockoutPolicyStream>,
    ) -> Result<Decision<LockoutPolicySet, ()>, Error> {
        Ok(Decision::Append {
            events: vec![LockoutPolicySet(self.policy)],
            resource_owner: self.owner.clone(),
            answer: (),
        })
    }
}

impl Engine {
    /// The lockout policy in force for users of `org` (the instance's when `org` is `None`):
    /// the organisation's own, else the instance's, else every limit off.
    pub async fn lockout_policy(
        &self,
        instance: &InstanceId,
        org: Option<&OrgId>,
    ) -> Result<PolicyView, Error> {
        let scopes = [
            (org, PolicySource::Organization),
            (None, PolicySource::Instance),
        ];
        for (scope, source) in scopes {
            if source == PolicySource::Organization && scope.is_none() {
                continue;
            }
            let (folded, _) = self
                .fold::<LockoutPolicyStream>(&policy_stream(instance, scope))
                .await?;
            if let Some(policy) = folded.policy() {
                return Ok(PolicyView {
                    policy,
                    source,
                    sequence: folded.version(),
                    change_date: folded.changed_at(),
                });
            }
        }
        Ok(PolicyView {
            policy: LockoutPolicy::default(),
            source: PolicySource::Default,
            sequence: 0,
            change_date: None,
        })
    }

    /// Reads the lockout policy in force for `org` (or the instance's) as `principal`:
    /// `user.read` on the organisation, or instance-wide for the instance's policy.
    pub async fn get_lockout_policy(
        &self,
        principal: &Principal,
        org: Option<&OrgId>,
    ) -> Result<PolicyView, Error> {
        may_policy(principal, Permission::UserRead, org)?;
        self.lockout_policy(&principal.instance, org).await
    }

    /// Sets the lockout policy of `org` (overriding the instance's), or the instance's when
    /// `org` is `None`: `user.write` on the organisation, or instance-wide for the instance's.
    /// Every change is an event of the policy's stream (`policy.lockout.set`).
    pub async fn set_lockout_policy(
        &self,
        ctx: &Context,
        org: Option<&OrgId>,
        policy: LockoutPolicy,
    ) -> Result<PolicyDetails, Error> {
        let principal = &ctx.principal;
        may_policy(principal, Permission::UserWrite, org)?;
        policy.validate()?;
        let stream = policy_stream(&principal.instance, org);
        // The events' resource owner: the organisation, or for the instance's policy the
        // instance id (a valid organisation id too).
        let owner = match org {
            Some(org) => org.clone(),
            None => OrgId::new(principal.instance.as_str())?,
        };
        let mut set = SetPolicy { policy, owner };
        let subject = UserId::new(SYSTEM_SUBJECT).expect("a valid id");
        let outcome = self
            .run(
                ctx,
                &stream,
                Load::whole(),
                self.max_attempts,
                &subject,
                &mut set,
            )
            .await?;
        let last = outcome
            .recorded
            .last()
            .expect("setting a policy appends an event");
        Ok(PolicyDetails {
            sequence: last.sequence,
            change_date: last.created_at,
            position: last.position,
        })
    }

    /// Appends the system's unlock (`user.unlocked`, reason `lock-expired`, creator
    /// [`SYSTEM_SUBJECT`]) of `user` if its timed lock ended at or before `now`. `Ok(None)`
    /// when there is nothing to unlock: not locked (any more), locked until unlocked by hand,
    /// not due yet, or removed — among several nodes trying at once, one appends and the
    /// others, deciding again on what won, answer `None`.
    pub async fn expire_lock(
        &self,
        instance: &InstanceId,
        user: &UserId,
        now: DateTime<Utc>,
    ) -> Result<Option<Details>, Error> {
        let ctx = Context::new(Principal::system(SYSTEM_SUBJECT, instance.clone()));
        let command = UserCommand::ExpireLock {
            user_id: user.clone(),
            now,
        };
        match self.execute(&ctx, command).await {
            Ok(details) => Ok(Some(details)),
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::FailedPrecondition | ErrorKind::NotFound
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }
}

fn may_policy(
    principal: &Principal,
    permission: Permission,
    org: Option<&OrgId>,
) -> Result<(), Error> {
    let allowed = match org {
        Some(org) => principal.may(permission, org),
        None => principal.instance_grants.contains(&permission),
    };
    if allowed {
        return Ok(());
    }
    Err(Error::PermissionDenied {
        subject: principal.subject.clone(),
        org: org.map_or_else(|| "(instance)".to_owned(), OrgId::to_string),
        permission,
    })
}

/// How often [`LockExpiry`] looks for due locks at least (a lock appended by another node is
/// seen by the projection's follower, and then here within this).
const TICK: Duration = Duration::from_millis(200);
/// How long [`LockExpiry`] leaves a lock it tried alone (the projection is catching up on what
/// won, or the store refused).
const RETRY: Duration = Duration::from_secs(1);
/// The shortest wait between two rounds of [`LockExpiry`].
const FLOOR: Duration = Duration::from_millis(50);
/// Locks unlocked per round at most.
const BATCH: usize = 1024;

/// The scheduler of timed locks: unlocks each user whose `lockedUntil` passed, within about
/// [`TICK`] plus the projection's lag. Run one per node: every node may try the same unlock,
/// and exactly one append wins (the command loop's expected version); a lock unlocked by hand
/// first is not unlocked again. After a restart the due locks are found in the read model.
///
/// ```no_run
/// # use std::sync::Arc;
/// # use userstate::{Engine, MemoryStore, Projection, LockExpiry};
/// # async fn f() {
/// let store = Arc::new(MemoryStore::new());
/// let projection = Arc::new(Projection::spawn(store.clone()));
/// let engine = Engine::new(store).with_listener(projection.listener());
/// let expiry = LockExpiry::spawn(engine, projection);
/// # drop(expiry);
/// # }
/// ```
#[derive(Debug)]
pub struct LockExpiry {
    task: JoinHandle<()>,
}

impl LockExpiry {
    /// Starts the scheduler on the current tokio runtime. It runs until dropped or
    /// [`stop`](Self::stop)ped.
    pub fn spawn(engine: Engine, projection: Arc<Projection>) -> Self {
        let task = tokio::spawn(run(engine, projection));
        Self { task }
    }

    /// Stops the scheduler.
    pub fn stop(self) {
        drop(self)
    }
}

impl Drop for LockExpiry {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn run(engine: Engine, projection: Arc<Projection>) {
    // Locks tried: (instance, user, end) -> not before this instant again.
    let mut tried: HashMap<(InstanceId, UserId, DateTime<Utc>), tokio::time::Instant> =
        HashMap::new();
    loop {
        let now = Utc::now();
        let due = projection.locks_due(now, BATCH);
        let at = tokio::time::Instant::now();
        tried.retain(|_, until| *until > at);
        for (instance, user, end) in due {
            let key = (instance, user, end);
            if tried.contains_key(&key) {
                continue;
            }
            let (instance, user, _) = &key;
            match engine.expire_lock(instance, user, Utc::now()).await {
                Ok(Some(details)) => {
                    debug!(%instance, %user, sequence = details.sequence, "timed lock expired")
                }
                Ok(None) => debug!(%instance, %user, "timed lock already gone"),
                Err(e) => warn!(%instance, %user, error = %e, "could not unlock an expired lock"),
            }
            tried.insert(key, tokio::time::Instant::now() + RETRY);
        }
        // Until the next end, if it comes before the next tick (ends already passed were
        // tried above, and wait for `RETRY`), but never less than `FLOOR`: an end that is
        // about due does not wake the loop every millisecond while the projection catches up.
        let mut wait = TICK;
        if let Some(Ok(until)) = projection
            .next_lock_end()
            .map(|next| (next - Utc::now()).to_std())
        {
            wait = wait.min(until.max(FLOOR));
        }
        tokio::time::sleep(wait).await;
    }
}
