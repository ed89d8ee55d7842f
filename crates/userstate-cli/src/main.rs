//! `userstate`: the operator's command. `userstate serve` runs the HTTP API; other commands
//! (user, token, audit, rebuild, verify, export, import, backup, delivery, bench) live in their
//! own modules; every flag can also come from the environment or a config file (`config`);
//! `completions` and `man` print what shells and `man` read.

#![deny(missing_docs)]

mod args;
mod audit;
mod backup;
mod bench;
mod checkpoint;
mod config;
mod delivery;
mod exit;
mod maintenance;
mod serve;
mod span_fields;
mod store;
mod telemetry;
mod token;
mod user;
mod user_list;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};

/// Event-sourced user lifecycle state, ZITADEL-style.
#[derive(Debug, Parser)]
#[command(name = "userstate", version, about)]
struct Cli {
    /// Log format on stderr (filter with RUST_LOG, default `info`).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "USERSTATE_LOG_FORMAT")]
    log_format: LogFormat,
    /// Config file (TOML): each key a flag's long name, `[COMMAND]` tables for one command
    /// only; flags and environment variables win over it (docs/CLI.md "Settings").
    #[arg(long, global = true, value_name = "FILE", env = config::CONFIG_ENV)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
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
    /// Check the whole store: framing and checksums, the hash chain (and a signed checkpoint),
    /// sequences, positions, lifecycle rules.
    Verify(maintenance::VerifyArgs),
    /// Write every event as JSON Lines (to move a deployment between stores).
    Export(maintenance::ExportArgs),
    /// Append the events of an export file, validated first, to a store.
    Import(maintenance::ImportArgs),
    /// Copy a data directory consistently, also while `serve` runs on it.
    Backup(backup::BackupArgs),
    /// Measure commands/s and latency (docs/BENCH.md).
    Bench(bench::BenchArgs),
    /// Signed checkpoints of the hash chain: `keygen` makes an Ed25519 key pair, `sign`
    /// prints a checkpoint of the log's head (`verify --checkpoint` checks one).
    Checkpoint(checkpoint::CheckpointArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) on stdout.
    Completions(CompletionsArgs),
    /// Print the man page (roff) on stdout, or write one page per command into a directory.
    Man(ManArgs),
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

/// Options of `userstate completions`.
#[derive(Debug, Args)]
struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum)]
    shell: clap_complete::Shell,
}

/// Options of `userstate man`.
#[derive(Debug, Args)]
struct ManArgs {
    /// Write `userstate.1` and a page per command (`userstate-serve.1`, …) here instead.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

/// The command line's definition: clap's, with an environment variable for every flag
/// (`USERSTATE_<FLAG>`, config::with_env).
fn command() -> clap::Command {
    config::with_env(Cli::command())
}

/// Parses the command line: the config file's values (when one is named) become the flags'
/// defaults, so flag > environment > file > built-in default. Exits on a usage error (2).
fn parse() -> Cli {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let mut cmd = command();
    if let Some(path) = config::config_path(&args) {
        cmd = match config::apply_file(cmd, &path) {
            Ok(cmd) => cmd,
            Err(e) => {
                eprintln!("error: {e:#}");
                std::process::exit(2);
            }
        };
    }
    let matches = cmd.get_matches_from(args);
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

fn completions(args: &CompletionsArgs) -> anyhow::Result<ExitCode> {
    let mut cmd = command();
    clap_complete::generate(args.shell, &mut cmd, "userstate", &mut std::io::stdout());
    Ok(ExitCode::SUCCESS)
}

fn man(args: &ManArgs) -> anyhow::Result<ExitCode> {
    let cmd = command();
    match &args.dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            clap_mangen::generate_to(cmd, dir)?;
        }
        None => clap_mangen::Man::new(cmd).render(&mut std::io::stdout())?,
    }
    Ok(ExitCode::SUCCESS)
}

/// mimalloc instead of glibc malloc: commands allocate on the runtime's workers and free on the
/// file store's writer (and back); glibc's arena locks cost ~10 % of the CPU there. Built with
/// `no_thp`: mimalloc does not ask for transparent huge pages (see [`no_huge_pages`]).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Turns transparent huge pages off for this process, also where the system enables them for
/// every mapping (`always`). The first touch of a huge page zeroes 2 MiB at once; on the VMs
/// measured that stalled a runtime worker for 10–60 ms, about three times a second under load,
/// and every request queued on that worker waited (HTTP p99 23–65 ms instead of 4–5 ms,
/// docs/PERFORMANCE.md "Issue 29"). Small pages cost more faults, each far shorter.
fn no_huge_pages() {
    #[cfg(target_os = "linux")]
    if let Err(e) = rustix::thread::disable_transparent_huge_pages(true) {
        // Only a latency matter: say so and go on.
        eprintln!("note: could not turn transparent huge pages off: {e}");
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    no_huge_pages();
    let cli = parse();
    // The server logs its life; one-shot tools only speak up about problems.
    let default_level = match cli.command {
        Command::Serve(_) => "info",
        _ => "warn",
    };
    let otlp = match &cli.command {
        Command::Serve(args) => args.otlp_endpoint.as_deref(),
        _ => None,
    };
    let telemetry = match telemetry::init(cli.log_format == LogFormat::Json, default_level, otlp) {
        Ok(t) => t,
        Err(e) => return exit::fail(e.as_ref()),
    };
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
        Command::Checkpoint(args) => checkpoint::run(args).await,
        Command::Delivery(DeliveryCommand::Status(args)) => delivery::status(args).await,
        Command::Completions(args) => completions(&args),
        Command::Man(args) => man(&args),
    };
    telemetry.shutdown();
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// One row of docs/CLI.md's settings table: a flag, its environment variable, the
    /// commands that have it, its built-in default and what it sets.
    #[derive(Default)]
    struct Row {
        envs: Vec<String>,
        commands: Vec<String>,
        default: String,
        help: String,
    }

    fn rows(cmd: &clap::Command, path: &str, out: &mut BTreeMap<String, Row>) {
        for arg in cmd.get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            if matches!(
                arg.get_action(),
                clap::ArgAction::Help | clap::ArgAction::Version
            ) {
                continue;
            }
            let row = out.entry(long.to_owned()).or_default();
            let env = arg
                .get_env()
                .map(|e| e.to_string_lossy().into_owned())
                .unwrap_or_default();
            if !row.envs.contains(&env) {
                row.envs.push(env);
            }
            let command = if path.is_empty() { "(all)" } else { path };
            // A global flag shows up again in every subcommand: named once, where declared.
            if !row.commands.iter().any(|c| command.starts_with(c.as_str()))
                && !row.commands.iter().any(|c| c == "(all)")
            {
                row.commands.push(command.to_owned());
            }
            if row.default.is_empty() {
                row.default = arg
                    .get_default_values()
                    .iter()
                    .map(|v| v.to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join(",");
            }
            if row.help.is_empty() {
                row.help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
            }
        }
        for sub in cmd.get_subcommands() {
            let sub_path = if path.is_empty() {
                sub.get_name().to_owned()
            } else {
                format!("{path} {}", sub.get_name())
            };
            rows(sub, &sub_path, out);
        }
    }

    fn table() -> BTreeMap<String, Row> {
        let mut out = BTreeMap::new();
        let mut cmd = command();
        cmd.build();
        rows(&cmd, "", &mut out);
        out
    }

    /// Each flag has one variable, and no two flags share one (setting it would set both).
    #[test]
    fn every_flag_has_one_environment_variable_of_its_own() {
        let mut owners: BTreeMap<String, String> = BTreeMap::new();
        for (long, row) in table() {
            assert_eq!(row.envs.len(), 1, "--{long}: {:?}", row.envs);
            let env = &row.envs[0];
            assert!(env.starts_with("USERSTATE_"), "--{long}: {env}");
            if let Some(other) = owners.insert(env.clone(), long.clone()) {
                panic!("--{other} and --{long} both read {env}");
            }
        }
    }

    /// docs/CLI.md "Settings" lists every flag with its variable and commands; on a
    /// mismatch, the rows it should have are printed.
    #[test]
    fn the_settings_table_lists_every_flag() {
        let doc =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/CLI.md"))
                .unwrap();
        let mut expected = String::new();
        let mut missing = Vec::new();
        for (long, row) in table() {
            // Checked: the flag and its variable. The rest of the row is for people.
            let start = format!("| `--{long}` | `{}` |", row.envs[0]);
            let commands = row.commands.join(", ");
            let default = match row.default.as_str() {
                "" => String::new(),
                d => format!("`{d}`"),
            };
            expected.push_str(&format!(
                "{start} {commands} | {default} | {} |\n",
                row.help.replace('|', "\\|")
            ));
            if !doc.lines().any(|l| l.starts_with(&start)) {
                missing.push(start);
            }
        }
        assert!(
            missing.is_empty(),
            "docs/CLI.md lacks rows starting {missing:#?}\nthe whole table:\n{expected}"
        );
    }

    #[test]
    fn completions_and_man_page_name_every_command() {
        let cmd = command();
        let mut man = Vec::new();
        clap_mangen::Man::new(cmd.clone()).render(&mut man).unwrap();
        let man = String::from_utf8(man).unwrap();
        let mut bash = Vec::new();
        clap_complete::generate(
            clap_complete::Shell::Bash,
            &mut cmd.clone(),
            "userstate",
            &mut bash,
        );
        let bash = String::from_utf8(bash).unwrap();
        for sub in cmd.get_subcommands() {
            assert!(man.contains(sub.get_name()), "{}", sub.get_name());
            assert!(bash.contains(sub.get_name()), "{}", sub.get_name());
        }
        // A page per command, with its flags and their variables.
        let dir = tempfile::tempdir().unwrap();
        clap_mangen::generate_to(cmd, dir.path()).unwrap();
        let serve = std::fs::read_to_string(dir.path().join("userstate-serve.1")).unwrap();
        assert!(serve.contains("max\\-connections"), "{serve}");
        assert!(serve.contains("USERSTATE_MAX_CONNECTIONS"), "{serve}");
        assert!(dir.path().join("userstate-user-list.1").exists());
    }
}
