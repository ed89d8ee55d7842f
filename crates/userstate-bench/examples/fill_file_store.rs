//! Fills a data directory's file store (`DATA/events`, as `userstate --data DATA` opens it) with
//! realistic user histories, for timing `userstate rebuild --data DATA` (open + projection
//! rebuild) and a server's start on a large log:
//! `cargo run --release -p userstate-bench --example fill_file_store -- DATA USERS EVENTS_PER_USER`
//! (default 1,000,000 users × 9 events, plus one username reservation each: 10M events).
//!
//! Every event goes through `Engine::execute`, as a server's would: each user is added, then
//! locked and unlocked in turn until it has `EVENTS_PER_USER` events. 64 tasks write at once,
//! so the file store's group commit batches them. Refuses a directory that already holds events.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use userstate::{
    AddUser, Context, Engine, EventStore, FileStore, InstanceId, OrgId, Principal, UserCommand,
    UserId,
};

/// Concurrent writers.
const TASKS: u64 = 64;

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(dir) = args.first() else {
        eprintln!("usage: fill_file_store DIR [USERS] [EVENTS_PER_USER]");
        return ExitCode::from(2);
    };
    let number =
        |i: usize, default: u64| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(default);
    let (users, per_user) = (number(1, 1_000_000), number(2, 9).max(1));
    let store = match FileStore::open(std::path::Path::new(dir).join("events")) {
        Ok(store) if store.head() == 0 => Arc::new(store),
        Ok(store) => {
            eprintln!(
                "{dir} already holds {} events; give an empty directory",
                store.head()
            );
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("cannot open {dir}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let engine = Engine::new(store.clone());
    let bar = ProgressBar::new(users * per_user);
    bar.set_style(
        ProgressStyle::with_template(
            "filling {bar:40} {pos}/{len} commands ({per_sec}, eta {eta})",
        )
        .expect("valid static template"),
    );
    let started = Instant::now();
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let (engine, bar) = (engine.clone(), bar.clone());
            tokio::spawn(async move { fill(&engine, &bar, t, users, per_user).await })
        })
        .collect();
    for task in tasks {
        if let Err(e) = task.await.expect("filler task does not panic") {
            eprintln!("a command failed: {e}");
            return ExitCode::FAILURE;
        }
    }
    bar.finish_and_clear();
    let events = store.head_position().await.unwrap_or_default();
    println!(
        "{dir}: {users} users, {events} events in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    ExitCode::SUCCESS
}

/// Task `t` writes the users `i` with `i % TASKS == t`, one whole history at a time.
async fn fill(
    engine: &Engine,
    bar: &ProgressBar,
    t: u64,
    users: u64,
    per_user: u64,
) -> Result<(), userstate::Error> {
    let instance = InstanceId::new("default").expect("valid literal id");
    let ctx = Context::new(Principal::system("filler", instance));
    for i in (t..users).step_by(TASKS as usize) {
        // 18-digit ids like ZITADEL's, one organisation per 1000 users.
        let id = UserId::new(format!("{}", 100_000_000_000_000_000 + i)).expect("valid id");
        engine
            .execute(
                &ctx,
                UserCommand::Add(AddUser {
                    user_id: id.clone(),
                    username: format!("user{i}@example.com"),
                    organization: OrgId::new(format!("org{}", i / 1000)).expect("valid id"),
                    profile: None,
                    email: None,
                    initial: false,
                }),
            )
            .await?;
        for k in 1..per_user {
            let command = if k % 2 == 1 {
                UserCommand::Lock(id.clone())
            } else {
                UserCommand::Unlock(id.clone())
            };
            engine.execute(&ctx, command).await?;
        }
        bar.inc(per_user);
    }
    Ok(())
}
