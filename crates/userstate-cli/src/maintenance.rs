//! Operator commands over a whole store: `rebuild`, `verify`, `export` and `import`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context as _;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use userstate::store::PendingRepair;
use userstate::transfer::{export_jsonl, import_validated, validate_jsonl, TransferError};
use userstate::verify::{verify_store_against, Finding};
use userstate::{EventStore, ReadModel};

use crate::args::{ReportFormatArgs, StoreArgs};
use crate::exit;
use crate::store::{
    export_keys, open_raw_store, open_raw_store_and_keys, open_raw_store_read_only,
};

/// Opens the file store in the data directory `data` read-only (nothing in it is created or
/// changed; it works while `serve` runs), with what it would repair on a writable open.
pub(crate) async fn open_file_store_read_only(
    data: &std::path::Path,
) -> anyhow::Result<(std::sync::Arc<dyn EventStore>, Vec<PendingRepair>)> {
    let store = crate::store::open_file_store_read_only(data).await?;
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
    #[command(flatten)]
    format: ReportFormatArgs,
}

/// `rebuild --format json`: one object (docs/CLI.md).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RebuildSummary {
    users: usize,
    position: u64,
    events: u64,
    seconds: f64,
    events_per_second: f64,
    /// Users per state, by the state's wire name; every state, zeros included.
    states: BTreeMap<&'static str, usize>,
}

/// Rebuilds the read model from position 1 and prints what it holds.
pub async fn rebuild(args: RebuildArgs) -> anyhow::Result<ExitCode> {
    // Only reads: the file store read-only, so it works beside a running `serve`.
    let store = args.store.open_read_only().await?;
    let during = || format!("rebuilding the read model from {}", args.store.describe());
    let head = store.head_position().await.with_context(during)?;
    let bar = bar(head, "rebuilding");
    let started = Instant::now();
    let model = ReadModel::rebuild_with_progress(&*store, |p| bar.set_position(p))
        .await
        .with_context(during)?;
    bar.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    let summary = RebuildSummary {
        users: model.len(),
        position: model.position(),
        events: head,
        seconds,
        events_per_second: head as f64 / seconds.max(1e-9),
        states: model
            .count_by_state()
            .into_iter()
            .map(|(state, n)| (state.wire_name(), n))
            .collect(),
    };
    if args.format.json() {
        println!("{}", serde_json::to_string(&summary)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "read model rebuilt: {} users, position {} ({} events in {:.2} s, {:.0} events/s)",
        summary.users, summary.position, head, seconds, summary.events_per_second
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
    #[command(flatten)]
    format: ReportFormatArgs,
    /// A checkpoint written by `userstate checkpoint sign`: also prove the log up to it is
    /// the one that was signed (needs `--pubkey`).
    #[arg(long, env = "USERSTATE_CHECKPOINT", requires = "pubkey")]
    checkpoint: Option<PathBuf>,
    /// The public key of the checkpoint's signer (`userstate checkpoint keygen`).
    #[arg(long, env = "USERSTATE_PUBKEY", requires = "checkpoint")]
    pubkey: Option<PathBuf>,
}

/// One line of `verify --format json` (docs/CLI.md): a finding, a pending repair, an orphaned
/// reservation, and last the summary.
#[derive(Serialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
enum VerifyLine<'a> {
    /// Something wrong: verify exits 1.
    Finding(FindingJson<'a>),
    /// A torn tail or similar that the next writable open repairs.
    RepairPending { location: &'a str, repair: &'a str },
    /// A username reservation whose user never landed.
    Orphan(FindingJson<'a>),
    /// Counts; `events`, `streams` and `users` are `null` when the store could not be opened.
    #[serde(rename_all = "camelCase")]
    Summary {
        events: Option<u64>,
        streams: Option<u64>,
        users: Option<u64>,
        findings: usize,
        repairs_pending: usize,
        orphans: usize,
        clean: bool,
        /// The last event's position and chain hash (`null` when the store could not be
        /// opened).
        head_position: Option<u64>,
        head_hash: Option<String>,
        /// With `--checkpoint`: whether it was proven; absent without one.
        #[serde(skip_serializing_if = "Option::is_none")]
        checkpoint_proven: Option<bool>,
    },
}

#[derive(Serialize)]
struct FindingJson<'a> {
    stream: Option<String>,
    sequence: Option<u64>,
    position: Option<u64>,
    problem: &'a str,
}

impl<'a> From<&'a Finding> for FindingJson<'a> {
    fn from(f: &'a Finding) -> Self {
        Self {
            stream: f.stream.as_ref().map(ToString::to_string),
            sequence: f.sequence,
            position: f.position,
            problem: &f.problem,
        }
    }
}

fn print_json(line: &VerifyLine<'_>) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string(line)?);
    Ok(())
}

/// Opens the store for a whole-log scan as it is stored (the chain covers the stored bytes,
/// personal data sealed): the file store read-only (nothing in the directory changes).
pub async fn open_for_scan(store: &StoreArgs) -> anyhow::Result<std::sync::Arc<dyn EventStore>> {
    open_raw_store_read_only(&store.store, &store.data).await
}

/// Scans the whole store; exits 1 on any finding. The file store is opened read-only: verify
/// changes nothing in the directory (a torn tail is reported, not truncated).
pub async fn verify(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let json = args.format.json();
    // A checkpoint whose signature does not hold proves nothing: refused before the scan.
    let checkpoint = match (&args.checkpoint, &args.pubkey) {
        (Some(cp), Some(key)) => Some(crate::checkpoint::load_checked(cp, key)?),
        _ => None,
    };
    // As stored: the chain covers the sealed bytes (ADR 0020, 0021).
    let opened = if args.store.store == "file" {
        open_file_store_read_only(&args.store.data).await
    } else {
        open_raw_store(&args.store.store, &args.store.data)
            .await
            .map(|store| (store, Vec::new()))
    };
    let (store, pending) = match opened {
        Ok(opened) => opened,
        Err(e) => {
            // The file store checks every frame and checksum on open and names the damage.
            let problem = format!("the store cannot be opened: {}", exit::describe(e.as_ref()));
            if json {
                print_json(&VerifyLine::Finding(FindingJson {
                    stream: None,
                    sequence: None,
                    position: None,
                    problem: &problem,
                }))?;
                print_json(&VerifyLine::Summary {
                    events: None,
                    streams: None,
                    users: None,
                    findings: 1,
                    repairs_pending: 0,
                    orphans: 0,
                    clean: false,
                    head_position: None,
                    head_hash: None,
                    checkpoint_proven: None,
                })?;
            } else {
                println!("FINDING: {problem}");
                println!("verify: 1 finding");
            }
            return Ok(ExitCode::from(1));
        }
    };
    // A file store of format 1 (before the chain) has no chain to check: said, never passed.
    let unchained = args.store.store == "file" && !store.stores_chain();
    if unchained {
        let problem = "the log is of format 1, written before the hash chain (ADR 0020): it \
                       holds no chain to verify; upgrade it by `export` and `import` into a new \
                       data directory (docs/OPERATIONS.md, \"Upgrading\")";
        if json {
            print_json(&VerifyLine::Finding(FindingJson {
                stream: None,
                sequence: None,
                position: None,
                problem,
            }))?;
        } else {
            println!("FINDING: {problem}");
        }
    }
    // Left by a crash and repaired by the next writable open: no acknowledged event is lost.
    for repair in &pending {
        if json {
            print_json(&VerifyLine::RepairPending {
                location: &repair.location,
                repair: &repair.repair,
            })?;
        } else {
            println!("REPAIR PENDING: {repair}");
        }
    }
    let during = || format!("verifying {}", args.store.describe());
    let head = store.head_position().await.with_context(during)?;
    let bar = bar(head, "verifying");
    let report = verify_store_against(&*store, checkpoint.as_ref(), |n| bar.set_position(n))
        .await
        .with_context(during)?;
    bar.finish_and_clear();
    let proven = checkpoint.as_ref().map(|_| report.checkpoint_proven);
    for finding in &report.findings {
        if json {
            print_json(&VerifyLine::Finding(finding.into()))?;
        } else {
            println!("FINDING: {finding}");
        }
    }
    // Left by an add that crashed between its two writes; the next add of the name reclaims it.
    for orphan in &report.orphans {
        if json {
            print_json(&VerifyLine::Orphan(orphan.into()))?;
        } else {
            println!("ORPHAN: {orphan}");
        }
    }
    if json {
        print_json(&VerifyLine::Summary {
            events: Some(report.events),
            streams: Some(report.streams),
            users: Some(report.users),
            findings: report.findings.len() + usize::from(unchained),
            repairs_pending: pending.len(),
            orphans: report.orphans.len(),
            clean: report.is_clean() && !unchained,
            head_position: Some(report.head_position),
            head_hash: Some(report.head_hash.to_string()),
            checkpoint_proven: proven,
        })?;
    } else {
        if let (Some(cp), Some(proven)) = (&checkpoint, proven) {
            println!(
                "checkpoint at position {}: {}",
                cp.position,
                if proven { "proven" } else { "NOT proven" }
            );
        }
        println!(
            "verify: {} events, {} streams ({} users) scanned; {} finding(s), {} repair(s) \
             pending, {} orphaned reservation(s)",
            report.events,
            report.streams,
            report.users,
            report.findings.len() + usize::from(unchained),
            pending.len(),
            report.orphans.len()
        );
    }
    Ok(if report.is_clean() && !unchained {
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
    /// Also write the key store (every user's key and the username secret) to this file,
    /// mode 0600: the events are exported sealed, and only these keys open them.
    #[arg(long, env = "USERSTATE_KEYS")]
    keys: Option<PathBuf>,
}

/// Writes every event as JSON Lines, as stored (personal data sealed), and with `--keys` the
/// key store.
pub async fn export(args: ExportArgs) -> anyhow::Result<ExitCode> {
    let store = open_raw_store_read_only(&args.store.store, &args.store.data).await?;
    if let Some(path) = &args.keys {
        let keys = export_keys(&args.store.store, &args.store.data).await?;
        write_private(path, &serde_json::to_vec_pretty(&keys)?)
            .with_context(|| format!("cannot write the key file {}", path.display()))?;
        eprintln!("exported {} keys to {}", keys.keys.len(), path.display());
    }
    let during = || format!("exporting {}", args.store.describe());
    let bar = bar(
        store.head_position().await.with_context(during)?,
        "exporting",
    );
    let progress = |n| bar.set_position(n);
    let count = match &args.output {
        Some(path) => {
            let file = std::fs::File::create(path)
                .with_context(|| format!("cannot create the export file {}", path.display()))?;
            export_jsonl(&*store, std::io::BufWriter::new(file), progress)
                .await
                .with_context(|| format!("{} to {}", during(), path.display()))?
        }
        None => export_jsonl(&*store, std::io::stdout().lock(), progress)
            .await
            .with_context(during)?,
    };
    bar.finish_and_clear();
    eprintln!("exported {count} events");
    Ok(ExitCode::SUCCESS)
}

/// Writes `bytes` to a new file `path` that only its owner may read (0600).
fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Options of `userstate import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// A file written by `userstate export`, or `-` for standard input.
    file: PathBuf,
    /// The key file `export --keys` wrote: its keys go into the target's key store first
    /// (without it, the imported users' personal data reads as erased).
    #[arg(long, env = "USERSTATE_KEYS")]
    keys: Option<PathBuf>,
    /// Import even when the target store already has events.
    #[arg(long)]
    allow_non_empty: bool,
    #[command(flatten)]
    format: ReportFormatArgs,
}

/// `import --format json`: one object (docs/CLI.md).
#[derive(Serialize)]
struct ImportSummary<'a> {
    file: &'a str,
    imported: u64,
}

/// Copies standard input to a private temporary file (import reads its input twice: once to
/// validate, once to append), removed when dropped.
fn spool_stdin() -> anyhow::Result<tempfile::NamedTempFile> {
    let mut spool = tempfile::NamedTempFile::new()
        .context("cannot create a temporary file to hold standard input")?;
    std::io::copy(&mut std::io::stdin().lock(), spool.as_file_mut())
        .context("cannot read the import from standard input")?;
    Ok(spool)
}

/// Validates the whole input (a file, or `-`: standard input), then opens the store and
/// appends its events. Nothing is created or written when the input is refused.
pub async fn import(args: ImportArgs) -> anyhow::Result<ExitCode> {
    let from_stdin = args.file.as_os_str() == "-";
    let file = args.file.display().to_string();
    let name = if from_stdin {
        "standard input".to_owned()
    } else {
        file.clone()
    };
    let spool = if from_stdin {
        Some(spool_stdin()?)
    } else {
        None
    };
    let path = spool
        .as_ref()
        .map_or_else(|| args.file.clone(), |s| s.path().to_owned());
    // Before the store is opened, which creates a file store's directory: a file that cannot
    // be read or holds a bad line is named, and leaves nothing behind.
    let total = {
        let path = path.clone();
        tokio::task::spawn_blocking(move || validate_jsonl(&path)).await?
    };
    let total = match total {
        Ok(total) => total,
        Err(TransferError::Line { line, reason }) => anyhow::bail!(
            "import of {name} refused, nothing was written: {name} line {line}: {reason}"
        ),
        Err(e) => {
            return Err(anyhow::Error::new(e).context(format!("cannot read the import file {name}")))
        }
    };
    let keys = match &args.keys {
        Some(path) => {
            let text = std::fs::read(path)
                .with_context(|| format!("cannot read the key file {}", path.display()))?;
            let keys: userstate::crypto::KeyExport =
                serde_json::from_slice(&text).with_context(|| {
                    format!("{} is not a key file of `export --keys`", path.display())
                })?;
            Some(keys)
        }
        None => None,
    };
    // The events are written as exported: personal data sealed, under the keys imported here.
    // Lines holding it in clear (an export from before crypto-shredding) are sealed on the way
    // in, under new keys, through a `CryptoStore` over the target (ADR 0021).
    let (store, key_store) = open_raw_store_and_keys(&args.store.store, &args.store.data).await?;
    if let Some(keys) = &keys {
        key_store
            .import(keys)
            .await
            .with_context(|| format!("importing the keys into {}", args.store.describe()))?;
    }
    // Made after the keys' import, which may bring the username secret.
    let sealer = Some(userstate::CryptoStore::new(store.clone(), key_store));
    let bar = bar(total, "importing");
    let imported = import_validated(
        &*store,
        sealer.as_ref(),
        &path,
        total,
        args.allow_non_empty,
        |n, _| {
            bar.set_position(n);
        },
    )
    .await;
    bar.finish_and_clear();
    let count = match imported {
        Ok(count) => count,
        Err(TransferError::NotEmpty(head)) => anyhow::bail!(
            "import of {name} refused: {} already holds events (head position {head}); pass \
             --allow-non-empty to import into it anyway",
            args.store.describe()
        ),
        Err(TransferError::Append { line, source }) => {
            return Err(anyhow::Error::new(source).context(format!(
                "importing {name} into {}: the event on line {line} was not written (the \
                 lines before it were)",
                args.store.describe()
            )))
        }
        Err(e) => {
            return Err(anyhow::Error::new(e)
                .context(format!("importing {name} into {}", args.store.describe())))
        }
    };
    if args.format.json() {
        let summary = ImportSummary {
            file: &file,
            imported: count,
        };
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        println!("imported {count} events");
    }
    Ok(ExitCode::SUCCESS)
}
