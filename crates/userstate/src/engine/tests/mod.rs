//! Engine behaviour on the memory store: authorisation, idempotency, races, usernames, audit and
//! agreement between the engine, the stored history and the read model. The projection's
//! behaviour beside an engine is in `projection`, the read model's fold in `read_model`.

mod idempotency;
mod lockout;
mod projection;
pub(crate) mod read_model;
mod tokens;
mod usernames;

use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;

use super::*;
use crate::domain::{AddUser, DomainError, UserState};
use crate::error::{Classified, ErrorKind};
use crate::store::{ExpectedVersion, MemoryStore, NewEvent};

/// The event the engine stores for `event`.
fn to_new_event(ctx: &Context, resource_owner: &OrgId, event: &UserEvent) -> NewEvent {
    command::new_event::<User>(ctx, resource_owner, event)
}

fn inst(s: &str) -> InstanceId {
    InstanceId::new(s).unwrap()
}
fn org(s: &str) -> OrgId {
    OrgId::new(s).unwrap()
}
fn uid(s: &str) -> UserId {
    UserId::new(s).unwrap()
}

fn admin() -> Context {
    Context::new(Principal::system("admin", inst("i1")))
}

fn add(id: &str, username: &str, organisation: &str) -> UserCommand {
    UserCommand::Add(AddUser {
        user_id: uid(id),
        username: username.into(),
        organization: org(organisation),
        profile: None,
        email: None,
        initial: false,
    })
}

fn engine() -> Engine {
    Engine::new(Arc::new(MemoryStore::new()))
}

#[tokio::test]
async fn commands_answer_manipulation_details() {
    let engine = engine();
    let added = engine
        .execute(&admin(), add("u1", "alice", "o1"))
        .await
        .unwrap();
    assert_eq!(added.sequence, 1);
    assert_eq!(added.resource_owner, org("o1"));
    assert_eq!(added.creation_date, added.change_date);
    let locked = engine
        .execute(&admin(), UserCommand::Lock(uid("u1")))
        .await
        .unwrap();
    assert_eq!(locked.sequence, 2);
    assert!(locked.position > added.position);
    assert!(locked.change_date >= added.change_date);
    let err = engine
        .execute(&admin(), UserCommand::Lock(uid("u1")))
        .await
        .unwrap_err();
    assert_eq!(err.id(), "COMMAND-lgws8wtsqf");
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition);
}

#[tokio::test]
async fn other_organisation_is_denied_and_other_instance_not_found() {
    let engine = engine();
    engine
        .execute(&admin(), add("u1", "alice", "o1"))
        .await
        .unwrap();
    let o2_writer = Context::new(Principal::for_orgs(
        "bob",
        inst("i1"),
        [org("o2")],
        &[Permission::UserWrite],
    ));
    let err = engine
        .execute(&o2_writer, UserCommand::Lock(uid("u1")))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied);
    let other_instance = Context::new(Principal::system("eve", inst("i2")));
    let err = engine
        .execute(&other_instance, UserCommand::Lock(uid("u1")))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert_eq!(err.id(), "COMMAND-450yxuqrh1");
    // Existence is checked before permission: an unknown user is NotFound even for o2's writer.
    let err = engine
        .execute(&o2_writer, UserCommand::Lock(uid("nobody")))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    // Permission before state: o2's writer learns nothing about u1's state.
    let err = engine
        .execute(&o2_writer, UserCommand::Unlock(uid("u1")))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied);
    // Adding into an organisation the caller lacks is denied too.
    let err = engine
        .execute(&o2_writer, add("u9", "zed", "o1"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied);
}

#[tokio::test]
async fn remove_needs_user_delete_and_nobody_acts_on_itself() {
    let engine = engine();
    engine
        .execute(&admin(), add("u1", "alice", "o1"))
        .await
        .unwrap();
    engine
        .execute(&admin(), add("u2", "bob", "o1"))
        .await
        .unwrap();
    let writer = Context::new(Principal::for_orgs(
        "u2",
        inst("i1"),
        [org("o1")],
        &[Permission::UserWrite],
    ));
    let err = engine
        .execute(&writer, UserCommand::Remove(uid("u1")))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied);
    for cmd in [
        UserCommand::Lock(uid("u2")),
        UserCommand::Deactivate(uid("u2")),
    ] {
        let err = engine.execute(&writer, cmd).await.unwrap_err();
        assert_eq!(err.id(), "AUTH-self-action");
    }
    engine
        .execute(&writer, UserCommand::Lock(uid("u1")))
        .await
        .expect("u2 may lock another user of o1");
}

#[tokio::test]
async fn usernames_are_unique_per_instance_and_freed_on_remove() {
    let engine = engine();
    engine
        .execute(&admin(), add("u1", "alice", "o1"))
        .await
        .unwrap();
    let err = engine
        .execute(&admin(), add("u2", "Alice", "o1"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Domain(DomainError::UsernameTaken(_))));
    assert_eq!(err.kind(), ErrorKind::AlreadyExists);
    let elsewhere = Context::new(Principal::system("admin", inst("i2")));
    engine
        .execute(&elsewhere, add("u2", "alice", "o1"))
        .await
        .expect("another instance may use the name");
    engine
        .execute(&admin(), UserCommand::Remove(uid("u1")))
        .await
        .unwrap();
    engine
        .execute(&admin(), add("u3", "alice", "o1"))
        .await
        .expect("a removed user's name is free again");
    let err = engine
        .execute(&admin(), add("u1", "carol", "o1"))
        .await
        .unwrap_err();
    assert_eq!(
        err.kind(),
        ErrorKind::AlreadyExists,
        "a removed id stays used"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_adds_of_one_username_have_one_winner() {
    for round in 0..20 {
        let engine = engine();
        let tasks: Vec<_> = (0..16)
            .map(|i| {
                let engine = engine.clone();
                tokio::spawn(async move {
                    engine
                        .execute(&admin(), add(&format!("u{round}-{i}"), "same", "o1"))
                        .await
                })
            })
            .collect();
        let mut wins = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(_) => wins += 1,
                Err(e) => assert_eq!(e.kind(), ErrorKind::AlreadyExists, "{e}"),
            }
        }
        assert_eq!(wins, 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_four_racing_unlocks_have_exactly_one_winner() {
    let store = Arc::new(MemoryStore::new());
    let engine = Engine::new(store.clone());
    engine
        .execute(&admin(), add("u1", "alice", "o1"))
        .await
        .unwrap();
    engine
        .execute(&admin(), UserCommand::Lock(uid("u1")))
        .await
        .unwrap();
    let barrier = Arc::new(tokio::sync::Barrier::new(64));
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let (engine, barrier) = (engine.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                engine
                    .execute(&admin(), UserCommand::Unlock(uid("u1")))
                    .await
            })
        })
        .collect();
    let mut wins = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => wins += 1,
            Err(e) => assert_eq!(e.id(), "COMMAND-olb9vb0oca", "{e}"),
        }
    }
    assert_eq!(wins, 1);
    let unlocked = store
        .read_stream(&StreamId::user(&inst("i1"), &uid("u1")), 1)
        .await
        .unwrap()
        .iter()
        .filter(|e| e.event_type == "user.unlocked")
        .count();
    assert_eq!(unlocked, 1);
}

#[tokio::test]
async fn engines_sharing_a_store_never_act_on_a_stale_cache() {
    let store: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
    let (a, b) = (Engine::new(store.clone()), Engine::new(store.clone()));
    a.execute(&admin(), add("u1", "alice", "o1")).await.unwrap();
    // b caches u1 as active.
    b.execute(&admin(), UserCommand::Lock(uid("u1")))
        .await
        .unwrap();
    b.execute(&admin(), UserCommand::Unlock(uid("u1")))
        .await
        .unwrap();
    // a changes it behind b's back; b must see the change, not its cached "active".
    a.execute(&admin(), UserCommand::Lock(uid("u1")))
        .await
        .unwrap();
    let d = b
        .execute(&admin(), UserCommand::Unlock(uid("u1")))
        .await
        .expect("b reads the tail and sees the lock");
    assert_eq!(d.sequence, 5);
    let err = a
        .execute(&admin(), UserCommand::Unlock(uid("u1")))
        .await
        .unwrap_err();
    assert_eq!(err.id(), "COMMAND-olb9vb0oca");
    // A cache of one user still answers correctly for many.
    let small = Engine::new(store.clone()).with_cache_capacity(1);
    for i in 0..5 {
        small
            .execute(&admin(), add(&format!("c{i}"), &format!("n{i}"), "o1"))
            .await
            .unwrap();
    }
    for i in 0..5 {
        let d = small
            .execute(&admin(), UserCommand::Lock(uid(&format!("c{i}"))))
            .await
            .unwrap();
        assert_eq!(d.sequence, 2);
    }
}

/// Two engines (two nodes) on one spied memory store, with user u1 added through the first.
async fn two_engines_on_a_spy() -> (
    Arc<crate::testkit::SpyStore>,
    Arc<dyn EventStore>,
    Engine,
    Engine,
) {
    let spy = Arc::new(crate::testkit::SpyStore::new(Arc::new(MemoryStore::new())));
    let store: Arc<dyn EventStore> = spy.clone();
    let (a, b) = (Engine::new(store.clone()), Engine::new(store.clone()));
    a.execute(&admin(), add("u1", "alice", "o1")).await.unwrap();
    (spy, store, a, b)
}

#[tokio::test]
async fn an_accepted_command_reads_no_stream_and_a_refusal_reads_the_tail_first() {
    let (spy, _, a, b) = two_engines_on_a_spy().await;
    let reads = || spy.stream_reads().len();
    let after_add = reads();
    for _ in 0..3 {
        a.execute(&admin(), UserCommand::Lock(uid("u1")))
            .await
            .unwrap();
        a.execute(&admin(), UserCommand::Unlock(uid("u1")))
            .await
            .unwrap();
    }
    assert_eq!(
        reads(),
        after_add,
        "a cached user's accepted commands are proven current by their appends alone"
    );
    // Refused on the cached fold: the tail is read before the refusal is answered.
    let err = a
        .execute(&admin(), UserCommand::Unlock(uid("u1")))
        .await
        .unwrap_err();
    assert_eq!(err.id(), "COMMAND-olb9vb0oca");
    assert_eq!(spy.stream_reads()[after_add..], [8]);
    // Another engine locks u1: a's cached "active" would refuse the unlock; the tail read
    // shows the lock, and the unlock is accepted after all.
    b.execute(&admin(), UserCommand::Lock(uid("u1")))
        .await
        .unwrap();
    let d = a
        .execute(&admin(), UserCommand::Unlock(uid("u1")))
        .await
        .expect("a reads the tail before refusing and sees b's lock");
    assert_eq!(d.sequence, 9);
    // b's first command loaded the whole stream (1); a read only the tail after its 7 (8).
    assert_eq!(spy.stream_reads()[after_add + 1..], [1, 8]);
}

#[tokio::test]
async fn a_command_accepted_on_a_stale_fold_loses_its_race_and_reads_first_next_time() {
    let (spy, store, a, b) = two_engines_on_a_spy().await;
    // b locks and unlocks: a's cached fold (active, version 1) is stale, yet would accept a
    // lock, so a's first append conflicts.
    b.execute(&admin(), UserCommand::Lock(uid("u1")))
        .await
        .unwrap();
    b.execute(&admin(), UserCommand::Unlock(uid("u1")))
        .await
        .unwrap();
    let before = spy.stream_reads().len();
    let d = a
        .execute(&admin(), UserCommand::Lock(uid("u1")))
        .await
        .expect("the second attempt decides on the current fold");
    assert_eq!(d.sequence, 4);
    assert_eq!(
        spy.stream_reads()[before..],
        [2],
        "after the conflict only the tail after the cached version 1 is read"
    );
    // A user another engine writes is read first: a's next command reads the tail (empty now,
    // b has stopped), and the one after trusts the fold again.
    a.execute(&admin(), UserCommand::Unlock(uid("u1")))
        .await
        .unwrap();
    a.execute(&admin(), UserCommand::Lock(uid("u1")))
        .await
        .unwrap();
    assert_eq!(spy.stream_reads()[before..], [2, 5]);
    let stored = store
        .read_stream(&StreamId::user(&inst("i1"), &uid("u1")), 1)
        .await
        .unwrap();
    let types: Vec<&str> = stored.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(
        types,
        [
            "user.human.added",
            "user.locked",
            "user.unlocked",
            "user.locked",
            "user.unlocked",
            "user.locked"
        ]
    );
}

#[tokio::test]
async fn an_idempotency_key_answers_the_first_answer_and_appends_nothing() {
    let store = Arc::new(MemoryStore::new());
    let engine = Engine::new(store.clone());
    engine
        .execute(&admin(), add("u1", "alice", "o1"))
        .await
        .unwrap();
    engine
        .execute(&admin(), UserCommand::Lock(uid("u1")))
        .await
        .unwrap();
    let keyed = admin().with_idempotency_key("k-1");
    let first = engine
        .execute(&keyed, UserCommand::Unlock(uid("u1")))
        .await
        .unwrap();
    let head = store.head_position().await.unwrap();
    let again = engine
        .execute(&keyed, UserCommand::Unlock(uid("u1")))
        .await
        .unwrap();
    assert_eq!(again, first);
    assert_eq!(store.head_position().await.unwrap(), head);
    // Without the key the repeat is the precondition failure SPEC.md asks for.
    let err = engine
        .execute(&admin(), UserCommand::Unlock(uid("u1")))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition);
}

#[tokio::test]
async fn audit_shows_history_and_state_as_of_any_point() {
    let engine = engine();
    engine
        .execute(&admin(), add("u1", "alice", "o1"))
        .await
        .unwrap();
    let locked = engine
        .execute(&admin(), UserCommand::Lock(uid("u1")))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    engine
        .execute(&admin(), UserCommand::Unlock(uid("u1")))
        .await
        .unwrap();
    let p = admin().principal;
    let history = engine.history(&p, &uid("u1")).await.unwrap();
    let types: Vec<&str> = history.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(types, ["user.human.added", "user.locked", "user.unlocked"]);
    assert!(history.iter().all(|e| e.metadata.creator == "admin"));
    let u1 = uid("u1");
    let at = |a| engine.state_as_of(&p, &u1, a);
    assert_eq!(
        at(AsOf::Sequence(1)).await.unwrap().unwrap().state,
        UserState::Active
    );
    assert_eq!(
        at(AsOf::Sequence(2)).await.unwrap().unwrap().state,
        UserState::Locked
    );
    assert_eq!(
        at(AsOf::Sequence(99)).await.unwrap().unwrap().state,
        UserState::Active
    );
    assert_eq!(at(AsOf::Sequence(0)).await.unwrap(), None);
    let then = at(AsOf::Time(locked.change_date)).await.unwrap().unwrap();
    assert_eq!(then.state, UserState::Locked);
    assert_eq!(then.details.sequence, 2);
    let before = locked.change_date - chrono::Duration::days(1);
    assert_eq!(at(AsOf::Time(before)).await.unwrap(), None);
}

fn any_command() -> impl Strategy<Value = (usize, u8)> {
    (0usize..3, 0u8..6)
}

fn command_for(user: usize, which: u8) -> UserCommand {
    let id = uid(&format!("p{user}"));
    match which {
        0 => add(&format!("p{user}"), &format!("name{user}"), "o1"),
        1 => UserCommand::Deactivate(id),
        2 => UserCommand::Reactivate(id),
        3 => UserCommand::Lock(id),
        4 => UserCommand::Unlock(id),
        _ => UserCommand::Remove(id),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// Any command sequence over a few users: sequences stay gapless, a failed command appends
    /// nothing, and the fold of the stored history equals the engine's answers and the read
    /// model (live and rebuilt).
    #[test]
    fn engine_history_and_read_model_agree(commands in prop::collection::vec(any_command(), 1..60)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let store: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
            let engine = Engine::new(store.clone());
            let projection = Projection::spawn(store.clone());
            let mut last: std::collections::HashMap<usize, Details> = Default::default();
            for (user, which) in commands {
                let head = store.head_position().await.unwrap();
                match engine.execute(&admin(), command_for(user, which)).await {
                    Ok(d) => { last.insert(user, d); }
                    Err(_) => prop_assert_eq!(store.head_position().await.unwrap(), head),
                }
            }
            let head = store.head_position().await.unwrap();
            projection.wait_for(head, Duration::from_secs(5)).await.unwrap();
            let live = projection.snapshot();
            let rebuilt = ReadModel::rebuild(&*store).await.unwrap();
            prop_assert_eq!(&live, &rebuilt);
            for (user, details) in last {
                let id = uid(&format!("p{user}"));
                let loaded = engine.load(&inst("i1"), &id).await.unwrap();
                let seqs: Vec<u64> = loaded.events.iter().map(|e| e.sequence).collect();
                prop_assert_eq!(seqs, (1..=loaded.events.len() as u64).collect::<Vec<_>>());
                prop_assert_eq!(loaded.user.version(), details.sequence);
                let view = live.user(&inst("i1"), &id).unwrap();
                prop_assert_eq!(Some(view.state), loaded.user.state());
                prop_assert_eq!(view.sequence, details.sequence);
                prop_assert_eq!(view.change_date, details.change_date);
            }
            Ok(())
        })?;
    }
}

/// A stored history that does not start with its add (damage: written by hand, or a store
/// replaced under the engine) is reported as corrupt by the audit, not a panic.
#[tokio::test]
async fn audit_of_a_history_without_its_add_is_corrupt_not_a_panic() {
    let store = Arc::new(MemoryStore::new());
    let engine = Engine::new(store.clone());
    let stream = StreamId::user(&inst("i1"), &uid("u1"));
    let locked = to_new_event(
        &admin(),
        &org("o1"),
        &crate::domain::UserEvent::Locked(Default::default()),
    );
    let added = crate::domain::UserEvent::Added(crate::domain::UserAdded {
        username: "alice".into(),
        resource_owner: org("o1"),
        profile: None,
        email: None,
        initial: false,
        erased: false,
    });
    let added = to_new_event(&admin(), &org("o1"), &added);
    store
        .append(&stream, ExpectedVersion::NoStream, vec![locked, added])
        .await
        .unwrap();
    let err = engine
        .state_as_of(&admin().principal, &uid("u1"), AsOf::Sequence(1))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Internal, "{err}");
    assert!(err.to_string().contains("user.human.added"), "{err}");
}
