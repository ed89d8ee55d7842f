//! `userstate backup --data DIR OUT`: a consistent copy of a data directory, also while
//! `serve` runs on it, that `serve --data OUT` opens (docs/adr/0017).

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context as _};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use userstate::FileStore;

use crate::args::{ReportFormatArgs, StoreArgs};
use crate::store::{file_store_dir, open_file_store_read_only};

/// Options of `userstate backup`.
#[derive(Debug, Args)]
pub struct BackupArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// The new data directory: must not exist, or be empty.
    out: PathBuf,
    #[command(flatten)]
    format: ReportFormatArgs,
}

/// `backup --format json`: one object (docs/CLI.md).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct BackupReport<'a> {
    out: &'a str,
    events: u64,
    segments: usize,
    bytes: u64,
    files: Vec<String>,
    seconds: f64,
}

/// Copies the data directory's own files and a consistent prefix of its file store into `out`.
pub async fn run(args: BackupArgs) -> anyhow::Result<ExitCode> {
    if args.store.store != "file" {
        bail!(
            "backup copies the embedded file store; {} is backed up with its own tools (or \
             `userstate export`)",
            args.store.describe()
        );
    }
    let out = args.out.clone();
    let created = prepare_out(&out)?;
    let started = Instant::now();
    let result = copy(&args, &out).await;
    let (summary, files) = match result {
        Ok(done) => done,
        Err(e) => {
            remove_partial(&out, created);
            return Err(e);
        }
    };
    let seconds = started.elapsed().as_secs_f64();
    let shown = out.display().to_string();
    if args.format.json() {
        let report = BackupReport {
            out: &shown,
            events: summary.head,
            segments: summary.segments,
            bytes: summary.bytes,
            files,
            seconds,
        };
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "backed up {} events ({} segments, {} bytes) and {} other file(s) from {} to {} in \
             {seconds:.2} s",
            summary.head,
            summary.segments,
            summary.bytes,
            files.len(),
            args.store.data.display(),
            shown
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Refuses a target that is not an empty directory; creates it (0700) when missing. Returns
/// whether it created it.
fn prepare_out(out: &Path) -> anyhow::Result<bool> {
    match fs::read_dir(out) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                bail!(
                    "the backup target {} is not empty; give a new or empty directory",
                    out.display()
                );
            }
            Ok(false)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(out)
                .with_context(|| format!("cannot create the backup directory {}", out.display()))?;
            Ok(true)
        }
        Err(e) => {
            Err(e).with_context(|| format!("cannot read the backup target {}", out.display()))
        }
    }
}

/// After a failure: the target as it was (gone if this created it, else empty again).
fn remove_partial(out: &Path, created: bool) {
    if created {
        let _ = fs::remove_dir_all(out);
        return;
    }
    if let Ok(entries) = fs::read_dir(out) {
        for entry in entries.flatten() {
            let path = entry.path();
            let _ = if path.is_dir() {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            };
        }
    }
}

async fn copy(
    args: &BackupArgs,
    out: &Path,
) -> anyhow::Result<(userstate::store::BackupSummary, Vec<String>)> {
    let data = &args.store.data;
    let store = open_file_store_read_only(data).await?;
    // The data directory's own files (tokens.toml, admin-token): small, copied whole.
    let files = copy_data_files(data, out)?;
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("backing up {bar:40} {bytes}/{total_bytes} ({bytes_per_sec})")
            .expect("valid static template"),
    );
    let target = file_store_dir(out);
    let during = format!(
        "backing up the file store in {} to {}",
        file_store_dir(data).display(),
        target.display()
    );
    let summary = {
        let bar = bar.clone();
        let target = target.clone();
        tokio::task::spawn_blocking(move || {
            store.backup(&target, |done, total| {
                bar.set_length(total);
                bar.set_position(done);
            })
        })
        .await?
        .context(during)?
    };
    bar.finish_and_clear();
    // The copy must open as a store holding exactly what was copied.
    let check = {
        let target = target.clone();
        tokio::task::spawn_blocking(move || FileStore::open_read_only(target)).await?
    }
    .with_context(|| format!("the backup in {} does not open", target.display()))?;
    if check.head() != summary.head || !check.pending_repairs().is_empty() {
        bail!(
            "the backup in {} holds {} events where {} were copied",
            target.display(),
            check.head(),
            summary.head
        );
    }
    fs::File::open(out)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing the backup directory {}", out.display()))?;
    Ok((summary, files))
}

/// Copies every regular file directly in `data` (not the `events` store, not directories) to
/// `out` with mode 0600, fsynced; returns their names.
fn copy_data_files(data: &Path, out: &Path) -> anyhow::Result<Vec<String>> {
    let mut names = Vec::new();
    let entries = fs::read_dir(data)
        .with_context(|| format!("cannot read the data directory {}", data.display()))?;
    for entry in entries {
        let entry = entry?;
        if !entry.file_type()?.is_file() {
            continue;
        }
        let from = entry.path();
        let to = out.join(entry.file_name());
        let bytes = fs::read(&from).with_context(|| format!("cannot read {}", from.display()))?;
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&to)
            .with_context(|| format!("cannot create {}", to.display()))?;
        file.write_all(&bytes)
            .and_then(|()| file.sync_all())
            .with_context(|| format!("cannot write {}", to.display()))?;
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    Ok(names)
}
