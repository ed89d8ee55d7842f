//! Two stores on one schema stand for two processes on one database: the second learns of the
//! first one's commits through LISTEN/NOTIFY (its polling is set to once an hour, so nothing
//! else could wake it), also after its listening session was killed, and a projection on it
//! follows commands executed through the first.

mod common;

use std::sync::Arc;
use std::time::Duration;

use userstate::testkit::event;
use userstate::{
    AddUser, Context, Engine, EventStore, ExpectedVersion, InstanceId, OrgId, Principal,
    Projection, StreamId, UserCommand, UserId, UserState,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn another_process_commits_wake_the_head_watch() {
    let Some((writer, guard)) = common::fresh("notify").await else {
        return;
    };
    let app = format!("{}_b", guard.schema);
    let follower = common::connect(
        common::builder(&guard.url, &guard.schema)
            .application_name(&app)
            .poll_interval(Duration::from_secs(3600)),
    )
    .await
    .expect("second store");
    let head = follower.watch_head();
    let s = StreamId::new("notify:i:u").expect("stream");
    let recorded = writer
        .append(&s, ExpectedVersion::Any, vec![event("n.one", 1)])
        .await
        .expect("append");
    tokio::time::timeout(Duration::from_secs(10), head.wait_for(recorded[0].position))
        .await
        .expect("NOTIFY woke the other store");

    // Kill the follower's sessions (its LISTEN connection among them): it reconnects.
    let (client, connection) = tokio_postgres::connect(&guard.url, tokio_postgres::NoTls)
        .await
        .expect("admin connection");
    tokio::spawn(connection);
    let killed: i64 = client
        .query_one(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE application_name = $1",
            &[&app],
        )
        .await
        .expect("terminate")
        .get(0);
    assert!(killed >= 1, "the listening session was killed");
    let woke = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            let r = writer
                .append(&s, ExpectedVersion::Any, vec![event("n.two", 2)])
                .await
                .expect("append");
            let target = r[0].position;
            let waited =
                tokio::time::timeout(Duration::from_millis(500), head.wait_for(target)).await;
            if waited.is_ok() {
                return;
            }
        }
    })
    .await;
    assert!(woke.is_ok(), "the head watch works again after a reconnect");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_projection_in_one_process_follows_commands_of_another() {
    let Some((writer, guard)) = common::fresh("proj").await else {
        return;
    };
    let reader = common::connect(
        common::builder(&guard.url, &guard.schema).poll_interval(Duration::from_secs(3600)),
    )
    .await
    .expect("second store");
    let engine = Engine::new(Arc::new(writer));
    let projection = Projection::spawn(Arc::new(reader));
    let instance = InstanceId::new("i1").expect("instance");
    let ctx = Context::new(Principal::system("admin", instance.clone()));
    let id = UserId::new("u1").expect("user id");
    engine
        .execute(
            &ctx,
            UserCommand::Add(AddUser {
                user_id: id.clone(),
                username: "alice".into(),
                organization: OrgId::new("acme").expect("org"),
                profile: None,
                email: None,
                initial: false,
            }),
        )
        .await
        .expect("add");
    let locked = engine
        .execute(&ctx, UserCommand::Lock(id.clone()))
        .await
        .expect("lock");
    projection
        .wait_for(locked.position, Duration::from_secs(10))
        .await
        .expect("the projection caught up through NOTIFY");
    let view = projection
        .get_user(&ctx.principal, &id)
        .expect("user visible");
    assert_eq!(view.state, UserState::Locked);
    assert_eq!(view.sequence, locked.sequence);
}
