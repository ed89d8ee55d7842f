//! Quickstart: add a user, lock, unlock, deactivate, reactivate; print each `details` and the
//! audit history. Runs on the embedded durable file store.
//!
//! Run with `cargo run --example quickstart [DATA_DIR]` (default `./userstate-quickstart`);
//! every run adds a new user to the same log, so the history grows across runs.

use std::sync::Arc;

use userstate::{
    AddUser, Context, Details, Engine, FileStore, InstanceId, OrgId, Principal, UserCommand, UserId,
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
    let engine = Engine::new(Arc::new(FileStore::open(&dir)?));
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
    for (name, cmd) in [
        ("locked", UserCommand::Lock(alice.clone())),
        ("unlocked", UserCommand::Unlock(alice.clone())),
        ("deactivated", UserCommand::Deactivate(alice.clone())),
        ("reactivated", UserCommand::Reactivate(alice.clone())),
    ] {
        show(name, &engine.execute(&ctx, cmd).await?);
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
