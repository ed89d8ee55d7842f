//! The engine and its projection on the KurrentDB store, end to end through the real client and
//! the test server: commands append to one stream per user, the projection follows `$all`.

#[allow(dead_code)]
mod support;

use std::sync::Arc;
use std::time::Duration;

use support::server::TestServer;
use userstate::{
    AddUser, Context, Engine, EventStore, InstanceId, OrgId, Principal, Projection, StreamId,
    UserCommand, UserId, UserState,
};
use userstate_eventstoredb::EsdbStore;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_and_projection_run_on_kurrentdb() {
    let server = TestServer::start();
    let store: Arc<dyn EventStore> = Arc::new(EsdbStore::connect(&server.url()).await.unwrap());
    let engine = Engine::new(store.clone());
    let projection = Projection::spawn(store.clone());
    let instance = InstanceId::new("default").unwrap();
    let principal = Principal::system("admin", instance.clone());
    let ctx = Context::new(principal.clone());
    let id = UserId::new("u-1").unwrap();
    engine
        .execute(
            &ctx,
            UserCommand::Add(AddUser {
                user_id: id.clone(),
                username: "alice".into(),
                organization: OrgId::new("acme").unwrap(),
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
    assert_eq!(locked.sequence, 2);
    projection
        .wait_for(locked.position, Duration::from_secs(30))
        .await
        .expect("projection caught up");
    let view = projection.get_user(&principal, &id).expect("projected");
    assert_eq!(view.state, UserState::Locked);
    let stream = store
        .read_stream(&StreamId::user(&instance, &id), 1)
        .await
        .unwrap();
    assert_eq!(stream.len(), 2);
    assert!(server
        .log()
        .stream(b"userstate-user:default:u-1")
        .is_some_and(|events| events.len() == 2));
}
