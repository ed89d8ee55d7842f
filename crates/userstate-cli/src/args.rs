//! Command-line options shared by several commands, each defined once: which store
//! (`--store`, `--data`; also `bench`'s), as whom (`--instance`, `--as`), and the output
//! formats.

use std::path::PathBuf;
use std::sync::Arc;

use clap::{Args, ValueEnum};
use userstate::{EventStore, InstanceId, Principal};

use crate::store::{describe_store, open_store, open_store_read_only};

/// Which store a command works on.
#[derive(Clone, Debug, Args)]
pub struct StoreArgs {
    /// Data directory of the embedded file store (`DATA/events`).
    #[arg(
        long,
        default_value = "./userstate-data",
        env = "USERSTATE_DATA",
        global = true
    )]
    pub data: PathBuf,
    /// Event store: `file` (default), `memory`, `postgres://…`, `esdb://…` or `kurrentdb://…`.
    #[arg(long, default_value = "file", env = "USERSTATE_STORE", global = true)]
    pub store: String,
}

impl StoreArgs {
    /// Opens the store.
    pub async fn open(&self) -> anyhow::Result<Arc<dyn EventStore>> {
        open_store(&self.store, &self.data).await
    }

    /// Opens the store to read it only: the file store read-only, beside a running `serve`
    /// (see [`open_store_read_only`]).
    pub async fn open_read_only(&self) -> anyhow::Result<Arc<dyn EventStore>> {
        open_store_read_only(&self.store, &self.data).await
    }

    /// The store for an error message: `the file store in DATA/events`, `the memory store`,
    /// or the server's URL without its password.
    pub fn describe(&self) -> String {
        describe_store(&self.store, &self.data)
    }
}

/// On whose behalf a command acts. The command line runs with every permission in the
/// instance: whoever can read the data directory or the database already has them.
#[derive(Clone, Debug, Args)]
pub struct ActorArgs {
    /// Instance (tenant) to act in.
    #[arg(
        long,
        default_value = "default",
        env = "USERSTATE_INSTANCE",
        global = true
    )]
    pub instance: String,
    /// Subject recorded as the creator of the events this command appends.
    #[arg(
        long = "as",
        default_value = "cli",
        env = "USERSTATE_SUBJECT",
        global = true
    )]
    pub subject: String,
}

impl ActorArgs {
    /// The principal to run as.
    pub fn principal(&self) -> anyhow::Result<Principal> {
        Ok(Principal::system(
            self.subject.clone(),
            InstanceId::new(&self.instance)?,
        ))
    }
}

/// Output formats of the commands that print users and events (`user`, `audit`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// An aligned table for people.
    #[default]
    Table,
    /// JSON (the SPEC.md wire form; JSON Lines for lists).
    Json,
    /// Comma-separated values: a header line, then one line per user or event.
    Csv,
}

/// Output formats of the commands that report on a whole store (`rebuild`, `verify`,
/// `import`): text for people, or JSON for scripts (schemas in docs/CLI.md). Anything else is
/// refused as a usage error (exit 2).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    /// Lines for people.
    #[default]
    Text,
    /// JSON: one object per line.
    Json,
}

/// `--format` of a reporting command, with `--json` as its shorthand.
#[derive(Clone, Copy, Debug, Args)]
pub struct ReportFormatArgs {
    /// Output format: `text`, or `json` (one object per line; docs/CLI.md).
    #[arg(long, value_enum, default_value_t = ReportFormat::Text)]
    format: ReportFormat,
    /// Shorthand for `--format json`.
    #[arg(long)]
    json: bool,
}

impl ReportFormatArgs {
    /// Whether to print JSON.
    pub fn json(&self) -> bool {
        self.json || self.format == ReportFormat::Json
    }
}
