//! Audit from the Rust API: a user's history, its state as of an event and a time, a scan of
//! the whole log, and an export — what `userstate audit`, `verify` and `export` do.
//!
//! Run with `cargo run --example audit [DATA_DIR]` (default: a fresh temporary directory).

use std::sync::Arc;

use userstate::transfer::export_jsonl;
use userstate::verify::verify_store;
use userstate::{
    AddUser, AsOf, Context, Engine, FileStore, InstanceId, OrgId, Principal, UserCommand, UserId,
};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = match std::env::args().nth(1) {
        Some(dir) => std::path::PathBuf::from(dir),
        None => std::env::temp_dir().join(format!("userstate-audit-{}", std::process::id())),
    };
    let store = Arc::new(FileStore::open(&dir)?);
    let engine = Engine::new(store.clone());
    let auditor = Principal::system("auditor", InstanceId::new("default")?);
    let ctx = Context::new(auditor.clone());

    let bob = UserId::generate();
    engine
        .execute(
            &ctx,
            UserCommand::Add(AddUser {
                user_id: bob.clone(),
                username: format!("bob-{bob}"),
                organization: OrgId::new("acme")?,
                profile: None,
                email: None,
                initial: true,
            }),
        )
        .await?;
    let locked = engine.execute(&ctx, UserCommand::Lock(bob.clone())).await?;
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    engine
        .execute(&ctx, UserCommand::Unlock(bob.clone()))
        .await?;
    engine
        .execute(&ctx, UserCommand::Deactivate(bob.clone()))
        .await?;

    println!("history of {bob}:");
    for e in engine.history(&auditor, &bob).await? {
        println!(
            "  #{} {:<18} at {} by {}",
            e.sequence, e.event_type, e.created_at, e.metadata.creator
        );
    }
    for at in [
        AsOf::Sequence(1),
        AsOf::Sequence(2),
        AsOf::Time(locked.change_date),
        AsOf::Sequence(99),
    ] {
        match engine.state_as_of(&auditor, &bob, at).await? {
            Some(s) => println!(
                "as of {at:?}: {} (sequence {})",
                s.state, s.details.sequence
            ),
            None => println!("as of {at:?}: did not exist yet"),
        }
    }

    let report = verify_store(&*store, |_| {}).await?;
    println!(
        "verify: {} events in {} streams, {} finding(s)",
        report.events,
        report.streams,
        report.findings.len()
    );
    let mut exported = Vec::new();
    let n = export_jsonl(&*store, &mut exported, |_| {}).await?;
    println!("export: {n} events, {} bytes of JSON Lines", exported.len());
    Ok(())
}
