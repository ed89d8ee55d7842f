//! Operator commands over a whole store: `rebuild`, `verify`, `export` and `import`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context as _;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use userstate::store::PendingRepair;
use userstate::transfer::{export_jsonl, import_jsonl};
use userstate::verify::verify_store;
use userstate::{EventStore, FileStore, ReadModel};

use crate::store::file_store_dir;
use crate::args::StoreArgs;

/// Opens the file store in the data directory `data` read-only (nothing in it is created or
/// changed), with what it would repair on a writable open.
async fn open_file_store_read_only(
    data: &std::path::Path,
) -> anyhow::Result<(std::sync::Arc<dyn EventStore>, Vec<PendingRepair>)> {
    let dir = file_store_dir(data);
    let store = tokio::task::spawn_blocking(move || FileStore::open_read_only(dir))
        .await?
        .with_context(|| {
            format!(
                "cannot open the file store in {} read-only",
                file_store_dir(data).display()
            )
        })?;
    let pending = store.pending_repairs().to_vec();
    Ok((std::sync::Arc::new(store), pending))
}

fn bar(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{what} {{bar:40}} {{pos}}/{{len}} events ({{per_sec}}, eta {{eta}})"
        ))
        .expect("valid static template"),
    );
    bar
}

/// Options of `userstate rebuild`.
#[derive(Debug, Args)]
pub struct RebuildArgs {
    #[command(flatten)]
    store: StoreArgs,
}

/// Rebuilds the read model from position 1 and prints what it holds.
pub async fn rebuild(args: RebuildArgs) -> anyhow::Result<ExitCode> {
    let store = args.store.open().await?;
    let head = store.head_position().await?;
    let bar = bar(head, "rebuilding");
    let started = Instant::now();
    let model = ReadModel::rebuild_with_progress(&*store, |p| bar.set_position(p)).await?;
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    println!(
        "read model rebuilt: {} users, position {} ({} events in {:.2} s, {:.0} events/s)",
        model.len(),
        model.position(),
        head,
        secs,
        head as f64 / secs.max(1e-9)
    );
    for (state, n) in model.count_by_state() {
        println!("  {:<20} {n}", state.wire_name());
    }
    Ok(ExitCode::SUCCESS)
}

/// Options of `userstate verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    store: StoreArgs,
}

/// Scans the whole store; exits 1 on any finding. The file store is opened read-only: verify
/// changes nothing in the directory (a torn tail is reported, not truncated).
pub async fn verify(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let opened = if args.store.store == "file" {
        open_file_store_read_only(&args.store.data).await
    } else {
        args.store.open().await.map(|store| (store, Vec::new()))
    };
    let (store, pending) = match opened {
        Ok(opened) => opened,
        Err(e) => {
            // The file store checks every frame and checksum on open and names the damage.
            println!("FINDING: the store cannot be opened: {e:#}");
            println!("verify: 1 finding");
            return Ok(ExitCode::from(1));
        }
    };
    // Left by a crash and repaired by the next writable open: no acknowledged event is lost.
    for repair in &pending {
        println!("REPAIR PENDING: {repair}");
    }
    let head = store.head_position().await?;
    let bar = bar(head, "verifying");
    let report = verify_store(&*store, |n| bar.set_position(n)).await?;
    bar.finish_and_clear();
    for finding in &report.findings {
        println!("FINDING: {finding}");
    }
    // Left by an add that crashed between its two writes; the next add of the name reclaims it.
    for orphan in &report.orphans {
        println!("ORPHAN: {orphan}");
    }
    println!(
        "verify: {} events, {} streams ({} users) scanned; {} finding(s), {} repair(s) pending, \
         {} orphaned reservation(s)",
        report.events,
        report.streams,
        report.users,
        report.findings.len(),
        pending.len(),
        report.orphans.len()
    );
    Ok(if report.is_clean() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Options of `userstate export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Write to this file instead of standard output.
    #[arg(long, short)]
    output: Option<PathBuf>,
}

/// Writes every event as JSON Lines.
pub async fn export(args: ExportArgs) -> anyhow::Result<ExitCode> {
    let store = args.store.open().await?;
    let bar = bar(store.head_position().await?, "exporting");
    let progress = |n| bar.set_position(n);
    let count = match &args.output {
        Some(path) => {
            let file = std::io::BufWriter::new(std::fs::File::create(path)?);
            export_jsonl(&*store, file, progress).await?
        }
        None => export_jsonl(&*store, std::io::stdout().lock(), progress).await?,
    };
    bar.finish_and_clear();
    eprintln!("exported {count} events");
    Ok(ExitCode::SUCCESS)
}

/// Options of `userstate import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// A file written by `userstate export`.
    file: PathBuf,
    /// Import even when the target store already has events.
    #[arg(long)]
    allow_non_empty: bool,
}

/// Validates the whole file, then appends its events.
pub async fn import(args: ImportArgs) -> anyhow::Result<ExitCode> {
    let store = args.store.open().await?;
    let bar = bar(0, "importing");
    let count = import_jsonl(&*store, &args.file, args.allow_non_empty, |n, total| {
        bar.set_length(total);
        bar.set_position(n);
    })
    .await?;
    bar.finish_and_clear();
    println!("imported {count} events");
    Ok(ExitCode::SUCCESS)
}
