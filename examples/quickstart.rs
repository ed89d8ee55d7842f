//! Quickstart: add a user, lock, unlock, deactivate, reactivate; print each `details`, read the
//! user back from the read model (the projection that answers queries), and print the audit
//! history. Runs on the embedded durable file store.
//!
//! Run with `cargo run --example quickstart [DATA_DIR]` (default `./userstate-quickstart`);
//! every run adds a new user to the same log, so the history grows across runs.

use std::sync::Arc;
use std::time::Duration;

use userstate::{
    AddUser, Context, Details, Engine, EventStore, FileStore, InstanceId, OrgId, Principal,
    Projection, UserCommand, UserId,
};

fn show(what: &str, d: &Details) {
    println!(
        "{what:<11} sequence={} changeDate={} resourceOwner={} position={}",
        d.sequence,
        d.change_date
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        d.resource_owner,
        d.position
    );
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "./userstate-quickstart".into());
    let store: Arc<dyn EventStore> = Arc::new(FileStore::open(&dir)?);
    // The read model follows the store from its first event; the engine also tells it of
    // each append it commits, so the read model has it as the command returns.
    let projection = Projection::spawn(store.clone());
    let engine = Engine::new(store).with_listener(projection.listener());
    println!("file store in {dir}");
    let admin = Principal::system("quickstart-admin", InstanceId::new("default")?);
    let ctx = Context::new(admin.clone());
    let alice = UserId::generate();

    let added = engine
        .execute(
            &ctx,
            UserCommand::Add(AddUser {
                user_id: alice.clone(),
                username: format!("alice-{alice}"),
                organization: OrgId::new("acme")?,
                profile: None,
                email: None,
                initial: false,
            }),
        )
        .await?;
    show("added", &added);
    let mut last = added;
    for (name, cmd) in [
        ("locked", UserCommand::Lock(alice.clone())),
        ("unlocked", UserCommand::Unlock(alice.clone())),
        ("deactivated", UserCommand::Deactivate(alice.clone())),
        ("reactivated", UserCommand::Reactivate(alice.clone())),
    ] {
        last = engine.execute(&ctx, cmd).await?;
        show(name, &last);
    }

    // A rule the spec forbids: unlocking a user that is not locked.
    let refused = engine
        .execute(&ctx, UserCommand::Unlock(alice.clone()))
        .await
        .expect_err("alice is active, not locked");
    println!(
        "refused     {refused} ({})",
        userstate::Classified::id(&refused)
    );

    // Queries read the read model, which follows the store asynchronously: wait until it has
    // applied our last write (what the HTTP API's `x-userstate-min-position` does), then read.
    projection
        .wait_for(last.position, Duration::from_secs(5))
        .await?;
    let view = projection.get_user(&admin, &alice)?;
    println!(
        "\nread model: user {} ({}) is {} at sequence {}",
        view.user_id,
        view.username,
        view.state.wire_name(),
        view.sequence
    );
    assert_eq!(
        (view.state, view.sequence),
        (userstate::UserState::Active, last.sequence),
        "the read model shows the last write"
    );
    println!("\naudit history of user {alice}:");
    for e in engine.history(&admin, &alice).await? {
        println!(
            "  #{} pos={} {} {:<18} by {}",
            e.sequence,
            e.position,
            e.created_at
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            e.event_type,
            e.metadata.creator
        );
    }
    Ok(())
}
