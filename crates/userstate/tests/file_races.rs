//! Commands racing on one user over the real file store (issue 20): the store decides an append
//! against appends it has queued but not yet published, so a loser can be refused for a
//! version its next read does not show yet. Losers must still answer from the winner's result
//! (FailedPrecondition), never Aborted.

use std::sync::Arc;

use userstate::domain::AddUser;
use userstate::{
    Context, Engine, ErrorKind, FileStore, InstanceId, OrgId, Principal, UserCommand, UserId,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_unlocks_on_the_file_store_have_one_winner_and_no_aborts() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(FileStore::open(dir.path()).unwrap());
    let engine = Engine::new(store);
    let admin = Context::new(Principal::system("admin", InstanceId::new("i1").unwrap()));
    let id = UserId::new("u1").unwrap();
    let add = UserCommand::Add(AddUser {
        user_id: id.clone(),
        username: "alice".into(),
        organization: OrgId::new("o1").unwrap(),
        profile: None,
        email: None,
        initial: false,
    });
    engine.execute(&admin, add).await.unwrap();
    let mut aborted = 0;
    for round in 0..20 {
        engine
            .execute(&admin, UserCommand::Lock(id.clone()))
            .await
            .unwrap();
        let barrier = Arc::new(tokio::sync::Barrier::new(64));
        let tasks: Vec<_> = (0..64)
            .map(|_| {
                let (engine, admin, id, barrier) =
                    (engine.clone(), admin.clone(), id.clone(), barrier.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    engine.execute(&admin, UserCommand::Unlock(id)).await
                })
            })
            .collect();
        let mut wins = 0;
        for task in tasks {
            match task.await.unwrap() {
                Ok(_) => wins += 1,
                Err(e) if e.kind() == ErrorKind::Aborted => aborted += 1,
                Err(e) => assert_eq!(e.kind(), ErrorKind::FailedPrecondition, "{e}"),
            }
        }
        assert_eq!(wins, 1, "round {round}");
    }
    assert_eq!(
        aborted, 0,
        "losers answered Aborted instead of the winner's result"
    );
}
