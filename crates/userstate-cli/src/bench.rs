//! `userstate bench`: the load generator of `docs/BENCH.md`.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use userstate_bench::{fsync_floor, print_table, run, FloorMode, RunSpec, Workload};

use crate::args::StoreArgs;
use crate::store::{open_raw_store, open_store};

/// Options of `userstate bench`.
///
/// `--store` and `--data` are the one definition of [`StoreArgs`], with what differs for a
/// load generator: `--data` is a scratch directory (its own default, emptied after), and
/// neither follows `USERSTATE_STORE` / `USERSTATE_DATA`, so a shell set up for operating a
/// deployment never benchmarks against its store by accident.
#[derive(Debug, Args)]
#[command(
    mut_arg("store", |a| a.env(None::<&str>)),
    mut_arg("data", |a| a
        .env(None::<&str>)
        .default_value(BENCH_DATA)
        .help("Scratch directory for the file store (each run uses a fresh subdirectory, removed after)")),
)]
pub struct BenchArgs {
    #[command(flatten)]
    store: StoreArgs,
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
    /// Store personal data unsealed, with no key store: what crypto-shredding costs is the
    /// difference to a run without it (docs/PERFORMANCE.md).
    #[arg(long, env = "USERSTATE_PLAIN")]
    plain: bool,
}

/// Where `bench` puts the file stores it measures unless told (`--data`).
const BENCH_DATA: &str = "./userstate-bench-data";

/// Runs every requested concurrency and prints the results: the file and memory stores are
/// fresh per run; a server-backed store is shared, each run in its own instance.
pub async fn run_bench(args: BenchArgs) -> anyhow::Result<ExitCode> {
    let durable = args.store.store != "memory";
    let store_name = match args.store.store.split_once("://") {
        Some((scheme, _)) => scheme.to_owned(),
        None => args.store.store.clone(),
    };
    let mut runs = Vec::new();
    for (i, &concurrency) in args.concurrency.iter().enumerate() {
        let scratch = args
            .store
            .data
            .join(format!("run-{}-{i}", std::process::id()));
        let store = if args.plain {
            open_raw_store(&args.store.store, &scratch).await?
        } else {
            open_store(&args.store.store, &scratch).await?
        };
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
        if args.store.store == "file" {
            // The store was dropped with the run; give its threads a moment to close.
            tokio::time::sleep(Duration::from_millis(100)).await;
            std::fs::remove_dir_all(&scratch).ok();
        }
    }
    let mut floors = Vec::new();
    if args.store.store == "file" {
        let dir = args.store.data.join("fsync-floor");
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
        std::fs::remove_dir(&args.store.data).ok();
    }
    if !args.json {
        print_table(&runs, &floors);
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        bench: BenchArgs,
    }

    /// docs/BENCH.md's interface: `--store` (default `file`) and `--data` (a scratch directory
    /// of its own), from the shared definition, without the operators' environment variables.
    #[test]
    fn store_and_data_keep_the_documented_interface() {
        let args = Cli::parse_from(["bench"]).bench;
        assert_eq!(args.store.store, "file");
        assert_eq!(args.store.data, std::path::PathBuf::from(BENCH_DATA));
        let args = Cli::parse_from(["bench", "--store", "memory", "--data", "/tmp/x", "--json"]);
        assert_eq!(args.bench.store.store, "memory");
        assert_eq!(args.bench.store.data, std::path::PathBuf::from("/tmp/x"));
        assert!(args.bench.json);
        let command = Cli::command();
        for name in ["store", "data"] {
            let arg = command
                .get_arguments()
                .find(|a| a.get_id() == name)
                .expect("the shared flag");
            assert_eq!(arg.get_env(), None, "--{name} follows no variable in bench");
        }
    }
}
