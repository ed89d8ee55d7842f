//! `userstate bench`: the load generator of `docs/BENCH.md`.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use userstate_bench::{fsync_floor, print_table, run, FloorMode, RunSpec, Workload};

use crate::store::open_store;

/// Options of `userstate bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Store: `memory`, `file`, `postgres://…`, `esdb://…`.
    #[arg(long, default_value = "file")]
    store: String,
    /// Scratch directory for the file store (each run uses a fresh subdirectory, removed after).
    #[arg(long, default_value = "./userstate-bench-data")]
    data: std::path::PathBuf,
    /// lock-unlock, create, mixed, zipf or read-while-write.
    #[arg(long, default_value = "lock-unlock")]
    workload: Workload,
    /// Users added before the timed part.
    #[arg(long, default_value_t = 10_000)]
    users: usize,
    /// Concurrent callers; a comma-separated list runs each in turn.
    #[arg(long, value_delimiter = ',', default_value = "1,8,64")]
    concurrency: Vec<usize>,
    /// Seconds per run.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// One JSON object per line instead of a table.
    #[arg(long)]
    json: bool,
}

/// Runs every requested concurrency and prints the results: the file and memory stores are
/// fresh per run; a server-backed store is shared, each run in its own instance.
pub async fn run_bench(args: BenchArgs) -> anyhow::Result<ExitCode> {
    let durable = args.store != "memory";
    let store_name = match args.store.split_once("://") {
        Some((scheme, _)) => scheme.to_owned(),
        None => args.store.clone(),
    };
    let mut runs = Vec::new();
    for (i, &concurrency) in args.concurrency.iter().enumerate() {
        let scratch = args.data.join(format!("run-{}-{i}", std::process::id()));
        let store = open_store(&args.store, &scratch).await?;
        let spec = RunSpec {
            store_name: store_name.clone(),
            durable,
            workload: args.workload,
            users: args.users,
            concurrency,
            duration: Duration::from_secs_f64(args.seconds),
            progress: !args.json,
            instance: userstate::InstanceId::new(format!("bench-{}-{i}", std::process::id()))?,
        };
        let report = run(store, &spec).await?;
        if args.json {
            println!("{}", serde_json::to_string(&report)?);
        }
        runs.push(report);
        if args.store == "file" {
            // The store was dropped with the run; give its threads a moment to close.
            tokio::time::sleep(Duration::from_millis(100)).await;
            std::fs::remove_dir_all(&scratch).ok();
        }
    }
    let mut floors = Vec::new();
    if args.store == "file" {
        let dir = args.data.join("fsync-floor");
        let modes = [FloorMode::Append, FloorMode::InPlace];
        for (mode, records) in modes.into_iter().flat_map(|m| [(m, 1), (m, 64)]) {
            let floor = tokio::task::spawn_blocking({
                let dir = dir.clone();
                move || fsync_floor(&dir, records, mode, Duration::from_secs(2))
            })
            .await??;
            if args.json {
                println!("{}", serde_json::to_string(&floor)?);
            }
            floors.push(floor);
        }
        // Only directories this command created, and only when empty.
        std::fs::remove_dir(&dir).ok();
        std::fs::remove_dir(&args.data).ok();
    }
    if !args.json {
        print_table(&runs, &floors);
    }
    Ok(ExitCode::SUCCESS)
}
