//! Lockout policies and timed locks through the engine: the policy in force per organisation,
//! the atomic failure + lock append, the system's unlock racing between engines, and the
//! [`LockExpiry`] scheduler beside a projection.

use std::time::Duration;

use chrono::Utc;

use super::*;
use crate::domain::{AuthMethod, AuthOutcome, LockoutPolicy, UserState};

fn failed(id: &str) -> UserCommand {
    UserCommand::AuthFailed(AuthOutcome {
        user_id: uid(id),
        method: AuthMethod::Password,
        now: Utc::now(),
    })
}

fn limit(max: u32, lock_secs: u64) -> LockoutPolicy {
    LockoutPolicy {
        max_password_attempts: max,
        lock_duration: Duration::from_secs(lock_secs),
        ..LockoutPolicy::default()
    }
}

#[tokio::test]
async fn an_organisations_policy_overrides_the_instances() {
    let engine = engine();
    for (id, name, o) in [("u1", "alice", "o1"), ("u2", "bob", "o2")] {
        engine.execute(&admin(), add(id, name, o)).await.unwrap();
    }
    let none = engine.lockout_policy(&inst("i1"), Some(&org("o1"))).await;
    assert_eq!(none.unwrap().source, PolicySource::Default);
    engine
        .set_lockout_policy(&admin(), None, limit(3, 60))
        .await
        .unwrap();
    engine
        .set_lockout_policy(&admin(), Some(&org("o2")), limit(1, 0))
        .await
        .unwrap();
    // o2's own policy: the first failure locks, until unlocked by hand.
    let details = engine.execute(&admin(), failed("u2")).await.unwrap();
    assert_eq!(
        details.sequence, 3,
        "the failure and the lock, in one append"
    );
    let history = engine.load(&inst("i1"), &uid("u2")).await.unwrap();
    let types: Vec<_> = history
        .events
        .iter()
        .map(|e| e.event_type.as_str())
        .collect();
    assert_eq!(
        types,
        [
            "user.human.added",
            "user.human.password.check.failed",
            "user.locked"
        ]
    );
    assert_eq!(history.events[1].position + 1, history.events[2].position);
    assert_eq!(history.user.locked_until(), None);
    // o1 follows the instance's policy: the third failure locks for 60 s.
    for _ in 0..2 {
        engine.execute(&admin(), failed("u1")).await.unwrap();
    }
    let u1 = engine.load(&inst("i1"), &uid("u1")).await.unwrap().user;
    assert_eq!(u1.state(), Some(UserState::Active));
    engine.execute(&admin(), failed("u1")).await.unwrap();
    let u1 = engine.load(&inst("i1"), &uid("u1")).await.unwrap().user;
    assert_eq!(u1.state(), Some(UserState::Locked));
    let until = u1.locked_until().expect("a timed lock");
    assert!(until > Utc::now() + chrono::Duration::seconds(55));
    // A policy change is audited in its own stream; a writer of o1 only may not set the
    // instance's.
    let o1_writer = Context::new(Principal::for_orgs(
        "w",
        inst("i1"),
        [org("o1")],
        &[Permission::UserWrite, Permission::UserRead],
    ));
    let denied = engine
        .set_lockout_policy(&o1_writer, None, limit(9, 9))
        .await;
    assert_eq!(denied.unwrap_err().kind(), ErrorKind::PermissionDenied);
    let view = engine
        .get_lockout_policy(&o1_writer.principal, Some(&org("o1")))
        .await
        .unwrap();
    assert_eq!(
        (view.source, view.policy),
        (PolicySource::Instance, limit(3, 60))
    );
}

#[tokio::test]
async fn two_engines_expiring_the_same_lock_append_one_unlock() {
    let store: Arc<dyn crate::store::EventStore> = Arc::new(MemoryStore::new());
    let a = Engine::new(store.clone());
    let b = Engine::new(store.clone());
    a.execute(&admin(), add("u1", "alice", "o1")).await.unwrap();
    let lock = UserCommand::LockFor(crate::domain::LockFor {
        user_id: uid("u1"),
        duration: Duration::from_secs(1),
        now: Utc::now() - chrono::Duration::seconds(5),
    });
    // b caches the locked user; a's unlock then makes b's fold stale.
    b.execute(&admin(), lock).await.unwrap();
    let now = Utc::now();
    let first = a.expire_lock(&inst("i1"), &uid("u1"), now).await.unwrap();
    assert_eq!(first.map(|d| d.sequence), Some(3));
    let second = b.expire_lock(&inst("i1"), &uid("u1"), now).await.unwrap();
    assert_eq!(second, None);
    let history = a.load(&inst("i1"), &uid("u1")).await.unwrap().events;
    assert_eq!(history.len(), 3);
    assert_eq!(history[2].metadata.creator, "system");
    assert_eq!(
        history[2].payload,
        serde_json::json!({"reason": "lock-expired"})
    );
}

#[tokio::test]
async fn the_scheduler_unlocks_a_timed_lock_once_and_leaves_a_manual_unlock_alone() {
    let store: Arc<dyn crate::store::EventStore> = Arc::new(MemoryStore::new());
    let projection = Arc::new(Projection::spawn(store.clone()));
    let engine = Engine::new(store.clone()).with_listener(projection.listener());
    for (id, name) in [("u1", "alice"), ("u2", "bob")] {
        engine.execute(&admin(), add(id, name, "o1")).await.unwrap();
        let lock = UserCommand::LockFor(crate::domain::LockFor {
            user_id: uid(id),
            duration: Duration::from_millis(300),
            now: Utc::now(),
        });
        engine.execute(&admin(), lock).await.unwrap();
    }
    // u2 is unlocked by hand before its end.
    engine
        .execute(&admin(), UserCommand::Unlock(uid("u2")))
        .await
        .unwrap();
    let view = projection.get_user(&admin().principal, &uid("u1")).unwrap();
    assert_eq!(view.state, UserState::Locked);
    assert!(view.locked_until.is_some());
    // Two schedulers, as on two nodes.
    let expiry = [
        LockExpiry::spawn(engine.clone(), projection.clone()),
        LockExpiry::spawn(Engine::new(store.clone()), projection.clone()),
    ];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while projection
        .get_user(&admin().principal, &uid("u1"))
        .unwrap()
        .state
        != UserState::Active
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "u1 was never unlocked"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Let both schedulers run a few more rounds before counting.
    tokio::time::sleep(Duration::from_millis(600)).await;
    drop(expiry);
    for (id, unlocks) in [("u1", 1), ("u2", 1)] {
        let events = engine.load(&inst("i1"), &uid(id)).await.unwrap().events;
        let found = events
            .iter()
            .filter(|e| e.event_type == "user.unlocked")
            .count();
        assert_eq!(found, unlocks, "{id}");
    }
    let u2 = engine.load(&inst("i1"), &uid("u2")).await.unwrap().events;
    assert_eq!(u2.last().unwrap().metadata.creator, "admin");
}

/// The list indexes follow the lockout fold: a check event keeps the user in its state's list,
/// the policy's lock moves it to LOCKED and the system's unlock back to ACTIVE.
#[tokio::test]
async fn the_list_indexes_follow_failures_locks_and_expiry() {
    let engine = engine();
    engine
        .execute(&admin(), add("u1", "alice", "o1"))
        .await
        .unwrap();
    engine
        .set_lockout_policy(&admin(), None, limit(2, 1))
        .await
        .unwrap();
    let listed = |model: &ReadModel, state: UserState| -> Vec<String> {
        let request = ListRequest {
            queries: vec![UserQuery::State(state)],
            ..ListRequest::default()
        };
        let list = model.list(&admin().principal, &request).unwrap();
        assert_eq!(list.total as usize, list.users.len());
        list.users.iter().map(|u| u.user_id.to_string()).collect()
    };
    let store = engine.store().clone();
    engine.execute(&admin(), failed("u1")).await.unwrap();
    let model = ReadModel::rebuild(&*store).await.unwrap();
    assert_eq!(listed(&model, UserState::Active), ["u1"]);
    assert!(listed(&model, UserState::Locked).is_empty());
    engine.execute(&admin(), failed("u1")).await.unwrap();
    let model = ReadModel::rebuild(&*store).await.unwrap();
    assert!(listed(&model, UserState::Active).is_empty());
    assert_eq!(listed(&model, UserState::Locked), ["u1"]);
    let later = Utc::now() + chrono::TimeDelta::seconds(2);
    let unlocked = engine.expire_lock(&inst("i1"), &uid("u1"), later).await;
    assert!(unlocked.unwrap().is_some());
    let model = ReadModel::rebuild(&*store).await.unwrap();
    assert_eq!(listed(&model, UserState::Active), ["u1"]);
    assert!(listed(&model, UserState::Locked).is_empty());
    assert_eq!(model.next_lock_end(), None);
}
