//! `userstate delivery status`: each target of a delivery file as the store records it — its
//! checkpoint against the head, the node holding its lease, and its dead letters. Reads only
//! (the file store is opened read-only, so it works while `serve` runs).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use userstate::feed::StoreCheckpoint;
use userstate_server::delivery::{load, Target};

use crate::args::StoreArgs;

/// Options of `userstate delivery status`.
#[derive(Debug, Args)]
pub struct DeliveryArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// The delivery file (`serve --delivery`).
    #[arg(long, env = "USERSTATE_DELIVERY")]
    delivery: PathBuf,
    /// How many dead letters to list per target (the most recent).
    #[arg(long, default_value_t = 20)]
    dead_letters: usize,
}

/// Prints every target's status; exits 1 when a target has dead letters.
pub async fn status(args: DeliveryArgs) -> anyhow::Result<ExitCode> {
    let targets = load(&args.delivery)?;
    // Read-only on the file store: it works while `serve` runs on the same directory.
    let store = if args.store.store == "file" {
        crate::maintenance::open_file_store_read_only(&args.store.data)
            .await?
            .0
    } else {
        args.store.open().await?
    };
    let head = store
        .head_position()
        .await
        .with_context(|| format!("reading {}", args.store.describe()))?;
    let mut any_dead = false;
    for target in &targets {
        let kind = match target {
            Target::Webhook(_) => "webhook",
            Target::Nats(_) => "nats",
        };
        let checkpoint = StoreCheckpoint::new(store.clone(), target.name(), "status")?;
        let status = checkpoint.status().await?;
        let lease = match &status.holder {
            Some((node, until)) if *until > chrono::Utc::now() => {
                format!("leased to {node} until {}", until.to_rfc3339())
            }
            Some((node, until)) => format!("lease of {node} expired {}", until.to_rfc3339()),
            None => "no lease".to_owned(),
        };
        println!(
            "{name}\t{kind}\tcheckpoint {position} of {head}\t{lease}\tdead letters {dead}",
            name = target.name(),
            position = status.position,
            dead = status.dead_letters.len(),
        );
        let skip = status.dead_letters.len().saturating_sub(args.dead_letters);
        for letter in &status.dead_letters[skip..] {
            println!(
                "  dead letter: position {} ({}) after {} attempts at {} by {}: {}",
                letter.position,
                letter.event_type,
                letter.attempts,
                letter.at.to_rfc3339(),
                letter.node,
                letter.error
            );
        }
        any_dead |= !status.dead_letters.is_empty();
    }
    Ok(if any_dead {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
