//! An identity backend's own consumer of the event feed, in-process (issue 26): a
//! `Subscription` after the checkpoint, handling each batch, then saving the checkpoint — so a
//! restart resumes after the last batch handled (at least once: a batch handled but not yet
//! checkpointed is handled again). Here the checkpoint is in memory; an embedder keeps it in its
//! own database (implement `Checkpoint`), or in the event store with a lease
//! (`StoreCheckpoint`), as `userstate serve --delivery` does.
//!
//! ```sh
//! cargo run --example feed_consumer
//! ```

use std::sync::Arc;

use userstate::feed::{Checkpoint, Filter, MemoryCheckpoint, Subscription};
use userstate::{
    AddUser, Context, Engine, EventStore, InstanceId, MemoryStore, OrgId, Principal, UserCommand,
    UserId,
};

#[tokio::main]
async fn main() {
    let store: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
    let engine = Engine::new(store.clone());
    let ctx = Context::new(Principal::system(
        "admin",
        InstanceId::new("default").unwrap(),
    ));
    let checkpoint = MemoryCheckpoint::default();

    // The consumer: revoke sessions when a user is locked.
    let after = checkpoint.load().await.unwrap();
    let mut feed = Subscription::after(store.clone(), after)
        .with_filter(Filter::public().with_types(["user.locked"]));
    let consumer = tokio::spawn(async move {
        let batch = feed.next_batch().await.unwrap();
        for event in &batch {
            println!(
                "revoke the sessions of {} (position {})",
                event.stream, event.position
            );
        }
        checkpoint.save(feed.read_position()).await.unwrap();
        checkpoint.load().await.unwrap()
    });

    let id = UserId::new("u1").unwrap();
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
        .unwrap();
    engine.execute(&ctx, UserCommand::Lock(id)).await.unwrap();
    let saved = consumer.await.unwrap();
    println!("checkpoint saved at position {saved}");
}
