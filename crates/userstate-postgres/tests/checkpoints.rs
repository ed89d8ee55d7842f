//! Projection checkpoints live in PostgreSQL: saved, loaded, overwritten, and saved atomically
//! with a caller's own transaction.

mod common;

use userstate_postgres::Checkpoints;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_round_trip() {
    let Some((store, _guard)) = common::fresh("ckpt").await else {
        return;
    };
    let checkpoints = store.checkpoints();
    assert_eq!(checkpoints.load("users").await.expect("load"), None);
    checkpoints.save("users", 42).await.expect("save");
    checkpoints.save("audit", 7).await.expect("save");
    assert_eq!(checkpoints.load("users").await.expect("load"), Some(42));
    checkpoints
        .save("users", 40)
        .await
        .expect("overwrite (rebuild)");
    assert_eq!(checkpoints.load("users").await.expect("load"), Some(40));
    assert_eq!(checkpoints.load("audit").await.expect("load"), Some(7));

    // Another process sees them too.
    let other = common::connect(common::builder(&_guard.url, &_guard.schema))
        .await
        .expect("second store");
    assert_eq!(
        other.checkpoints().load("users").await.expect("load"),
        Some(40)
    );

    // Inside a caller's transaction: rolled back with it, committed with it.
    let mut client = store.pool().get().await.expect("pooled connection");
    let tx = client.transaction().await.expect("begin");
    Checkpoints::save_in(&*tx, "users", 99)
        .await
        .expect("save in tx");
    tx.rollback().await.expect("rollback");
    assert_eq!(checkpoints.load("users").await.expect("load"), Some(40));
    let tx = client.transaction().await.expect("begin");
    Checkpoints::save_in(&*tx, "users", 100)
        .await
        .expect("save in tx");
    tx.commit().await.expect("commit");
    assert_eq!(checkpoints.load("users").await.expect("load"), Some(100));
}
