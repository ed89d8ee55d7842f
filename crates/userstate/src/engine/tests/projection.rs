//! A projection beside an engine on the memory store: following, waiting, store failures, and
//! a projection told of the engine's commits showing each command when it returns.

use super::*;

#[tokio::test]
async fn the_projection_follows_and_can_be_waited_on() {
    let store: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
    let engine = Engine::new(store.clone());
    let projection = Projection::spawn(store.clone());
    engine
        .execute(&admin(), add("u1", "alice", "o1"))
        .await
        .unwrap();
    let d = engine
        .execute(&admin(), UserCommand::Deactivate(uid("u1")))
        .await
        .unwrap();
    projection
        .wait_for(d.position, Duration::from_secs(5))
        .await
        .unwrap();
    let view = projection.get_user(&admin().principal, &uid("u1")).unwrap();
    assert_eq!(view.state, UserState::Inactive);
    assert_eq!(view.details().sequence, 2);
    assert_eq!(view.details().change_date, d.change_date);
    let reader_elsewhere =
        Principal::for_orgs("r", inst("i1"), [org("o2")], &[Permission::UserRead]);
    assert_eq!(
        projection
            .get_user(&reader_elsewhere, &uid("u1"))
            .unwrap_err()
            .kind(),
        ErrorKind::PermissionDenied
    );
    let r = engine
        .execute(&admin(), UserCommand::Remove(uid("u1")))
        .await
        .unwrap();
    projection
        .wait_for(r.position, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(
        projection
            .get_user(&admin().principal, &uid("u1"))
            .unwrap_err()
            .kind(),
        ErrorKind::NotFound
    );
    // A position never reached times out with Unavailable.
    let err = projection
        .wait_for(r.position + 100, Duration::from_millis(20))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable);
}

#[tokio::test]
async fn a_told_projection_shows_each_command_when_it_returns() {
    let store: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
    let projection = Projection::spawn(store.clone());
    let engine = Engine::new(store.clone()).with_listener(projection.listener());
    let added = engine
        .execute(&admin(), add("u1", "alice", "o1"))
        .await
        .unwrap();
    assert!(projection.position() >= added.position);
    let locked = engine
        .execute(&admin(), UserCommand::Lock(uid("u1")))
        .await
        .unwrap();
    // No waiting: one caller's events are always next, so the append applied them.
    assert_eq!(projection.position(), locked.position);
    assert!(projection.visible_at(locked.position).is_some());
    let view = projection.get_user(&admin().principal, &uid("u1")).unwrap();
    assert_eq!(view.state, UserState::Locked);
    assert_eq!(
        (view.sequence, view.position, view.change_date),
        (locked.sequence, locked.position, locked.change_date)
    );
}

#[tokio::test]
async fn a_told_projection_still_reads_what_was_appended_around_it() {
    let store: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
    let projection = Projection::spawn(store.clone());
    let direct = Engine::new(store.clone());
    let through_feed = Engine::new(store.clone()).with_listener(projection.listener());
    direct
        .execute(&admin(), add("u1", "alice", "o1"))
        .await
        .unwrap();
    through_feed
        .execute(&admin(), add("u2", "bob", "o1"))
        .await
        .unwrap();
    let last = direct
        .execute(&admin(), UserCommand::Deactivate(uid("u1")))
        .await
        .unwrap();
    through_feed
        .execute(&admin(), UserCommand::Lock(uid("u2")))
        .await
        .unwrap();
    projection
        .wait_for(last.position + 1, Duration::from_secs(5))
        .await
        .unwrap();
    let rebuilt = ReadModel::rebuild(&*store).await.unwrap();
    assert_eq!(projection.snapshot(), rebuilt);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_told_projection_from_many_callers_equals_a_rebuild() {
    let store: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
    let projection = Projection::spawn(store.clone());
    let engine = Engine::new(store.clone()).with_listener(projection.listener());
    let mut tasks = Vec::new();
    for t in 0..16 {
        let engine = engine.clone();
        tasks.push(tokio::spawn(async move {
            let id = format!("u{t}");
            engine
                .execute(&admin(), add(&id, &format!("name{t}"), "o1"))
                .await
                .unwrap();
            for _ in 0..25 {
                engine
                    .execute(&admin(), UserCommand::Lock(uid(&id)))
                    .await
                    .unwrap();
                engine
                    .execute(&admin(), UserCommand::Unlock(uid(&id)))
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let head = store.head_position().await.unwrap();
    projection
        .wait_for(head, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(
        projection.snapshot(),
        ReadModel::rebuild(&*store).await.unwrap()
    );
}
