//! `userstate`: the operator's command. `userstate serve` runs the HTTP API; other commands
//! (user, token, audit, rebuild, verify, export, import, backup, bench) live in their own
//! modules.

#![deny(missing_docs)]

mod args;
mod audit;
mod backup;
mod bench;
mod delivery;
mod exit;
mod maintenance;
mod serve;
mod store;
mod token;
mod user;
mod user_list;

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use tracing_subscriber::EnvFilter;

/// Event-sourced user lifecycle state, ZITADEL-style.
#[derive(Debug, Parser)]
#[command(name = "userstate", version, about)]
struct Cli {
    /// Log format on stderr (filter with RUST_LOG, default `info`).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "USERSTATE_LOG_FORMAT")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the HTTP/JSON API (v2 and v3alpha user routes, /healthz, /readyz, /metrics).
    Serve(serve::ServeArgs),
    /// Create, list and revoke bearer tokens kept in the store (the secret is printed once).
    Token(token::TokenArgs),
    /// Run a user command (add, get, lock, unlock, deactivate, reactivate, remove) on a store.
    User(user::UserArgs),
    /// Audit a user: its full history, or its state as of an event or a time.
    Audit(audit::AuditArgs),
    /// Rebuild the read model from the first event and summarise it.
    Rebuild(maintenance::RebuildArgs),
    /// Check the whole store: framing and checksums, sequences, positions, lifecycle rules.
    Verify(maintenance::VerifyArgs),
    /// Write every event as JSON Lines (to move a deployment between stores).
    Export(maintenance::ExportArgs),
    /// Append the events of an export file, validated first, to a store.
    Import(maintenance::ImportArgs),
    /// Copy a data directory consistently, also while `serve` runs on it.
    Backup(backup::BackupArgs),
    /// Measure commands/s and latency (docs/BENCH.md).
    Bench(bench::BenchArgs),
    /// Delivery targets: `status` prints each target's checkpoint, lease and dead letters.
    #[command(subcommand)]
    Delivery(DeliveryCommand),
}

/// `userstate delivery …`.
#[derive(Debug, Subcommand)]
enum DeliveryCommand {
    /// Each target of a delivery file: checkpoint vs head, lease holder, dead letters (exit 1
    /// when there are dead letters).
    Status(delivery::DeliveryArgs),
}

fn init_logging(format: LogFormat, default_level: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// mimalloc instead of glibc malloc: commands allocate on the runtime's workers and free on the
/// file store's writer (and back); glibc's arena locks cost ~10 % of the CPU there.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // The server logs its life; one-shot tools only speak up about problems.
    let default_level = match cli.command {
        Command::Serve(_) => "info",
        _ => "warn",
    };
    init_logging(cli.log_format, default_level);
    let result = match cli.command {
        Command::Serve(args) => serve::run(args).await.map(|()| ExitCode::SUCCESS),
        Command::User(args) => user::run(args).await,
        Command::Token(args) => token::run(args).await,
        Command::Audit(args) => audit::run(args).await,
        Command::Rebuild(args) => maintenance::rebuild(args).await,
        Command::Verify(args) => maintenance::verify(args).await,
        Command::Export(args) => maintenance::export(args).await,
        Command::Import(args) => maintenance::import(args).await,
        Command::Backup(args) => backup::run(args).await,
        Command::Bench(args) => bench::run_bench(args).await,
        Command::Delivery(DeliveryCommand::Status(args)) => delivery::status(args).await,
    };
    result.unwrap_or_else(|e| {
        // `userstate audit history u1 | head` closes the pipe early: not a failure.
        let broken_pipe = e.chain().any(|c| {
            c.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
        });
        if broken_pipe {
            return ExitCode::SUCCESS;
        }
        exit::fail(e.as_ref())
    })
}
