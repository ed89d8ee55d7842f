//! Every flag from three places besides the command line, generically (no flag is named here,
//! so a flag added anywhere works without an edit):
//! - the environment: each flag `--some-flag` without an `env` attribute of its own gets
//!   `USERSTATE_SOME_FLAG` ([`with_env`]);
//! - a config file (`--config FILE` or `USERSTATE_CONFIG`, TOML): a top-level key names a flag
//!   by its long name (`max-connections = 4096`) for every command that has it; a table named
//!   after a command (`[serve]`, `[user]`, `[user.list]`) holds values for that command only,
//!   over the top-level ones ([`apply_file`]). The values become the flags' defaults.
//!
//! So the precedence is clap's own: flag > environment > file > built-in default.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use clap::{Arg, ArgAction, Command};

/// The environment variable of the config file (`--config` wins).
pub const CONFIG_ENV: &str = "USERSTATE_CONFIG";

/// `USERSTATE_` and the long name in capitals, dashes as underscores.
pub fn env_name(long: &str) -> String {
    format!("USERSTATE_{}", long.to_ascii_uppercase().replace('-', "_"))
}

/// Whether `arg` is a flag that takes part (not `--help`, `--version` or a positional).
fn is_setting(arg: &Arg) -> bool {
    arg.get_long().is_some()
        && !matches!(
            arg.get_action(),
            ArgAction::Help | ArgAction::HelpLong | ArgAction::HelpShort | ArgAction::Version
        )
}

/// `cmd` with an environment variable for every flag that has none yet, in every subcommand.
pub fn with_env(cmd: Command) -> Command {
    let cmd = cmd.mut_args(|arg| match arg.get_long() {
        Some(long) if is_setting(&arg) && arg.get_env().is_none() => {
            let name = env_name(long);
            arg.env(name)
        }
        _ => arg,
    });
    cmd.mut_subcommands(with_env)
}

/// The config file named on the command line (`--config FILE`, `--config=FILE`) or in
/// [`CONFIG_ENV`]. Read before clap parses anything, since the file changes what clap is given.
pub fn config_path(args: &[OsString]) -> Option<PathBuf> {
    let mut args = args.iter().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--" {
            break;
        }
        if arg == "--config" {
            return args.next().map(PathBuf::from);
        }
        if let Some(path) = arg.to_str().and_then(|a| a.strip_prefix("--config=")) {
            return Some(PathBuf::from(path));
        }
    }
    std::env::var_os(CONFIG_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// Reads the config file at `path` and makes its values the defaults of `cmd`'s flags.
pub fn apply_file(cmd: Command, path: &Path) -> anyhow::Result<Command> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the config file {}", path.display()))?;
    let table: toml::Table = text
        .parse()
        .with_context(|| format!("the config file {} is not valid TOML", path.display()))?;
    apply_table(cmd, &table).with_context(|| format!("in the config file {}", path.display()))
}

/// One flag's value(s) from the file, as clap reads them from a command line.
#[derive(Clone, Debug, PartialEq)]
enum Value {
    One(String),
    Many(Vec<String>),
}

fn value(key: &str, v: &toml::Value) -> anyhow::Result<Value> {
    let scalar = |v: &toml::Value| -> anyhow::Result<String> {
        Ok(match v {
            toml::Value::String(s) => s.clone(),
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            other => bail!("`{key}`: a {} cannot be a flag's value", other.type_str()),
        })
    };
    match v {
        toml::Value::Array(items) => Ok(Value::Many(
            items.iter().map(scalar).collect::<anyhow::Result<_>>()?,
        )),
        other => Ok(Value::One(scalar(other)?)),
    }
}

/// Applies `table` to `cmd`: refuses a key that is no flag of any command (a typo would be
/// ignored silently otherwise) and a table that names no subcommand.
pub fn apply_table(cmd: Command, table: &toml::Table) -> anyhow::Result<Command> {
    let mut longs = Vec::new();
    collect_longs(&cmd, &mut longs);
    apply_scope(cmd, &BTreeMap::new(), table, &longs, "")
}

fn collect_longs(cmd: &Command, out: &mut Vec<String>) {
    out.extend(
        cmd.get_arguments()
            .filter(|a| is_setting(a))
            .filter_map(|a| a.get_long().map(str::to_owned)),
    );
    for sub in cmd.get_subcommands() {
        collect_longs(sub, out);
    }
}

fn apply_scope(
    cmd: Command,
    inherited: &BTreeMap<String, Value>,
    table: &toml::Table,
    longs: &[String],
    scope: &str,
) -> anyhow::Result<Command> {
    let mut values = inherited.clone();
    let mut tables = BTreeMap::new();
    for (key, v) in table {
        if let toml::Value::Table(t) = v {
            if cmd.find_subcommand(key).is_none() {
                bail!("[{scope}{key}]: `{key}` is not a command");
            }
            tables.insert(key.clone(), t);
            continue;
        }
        if !longs.iter().any(|l| l == key) {
            bail!("`{key}` is not a flag (keys are long flag names without `--`, e.g. `max-connections`)");
        }
        if key == "config" {
            bail!("`config` cannot name another config file");
        }
        values.insert(key.clone(), value(key, v)?);
    }
    let cmd = cmd.mut_args(|arg| {
        let Some(v) = arg.get_long().and_then(|l| values.get(l)) else {
            return arg;
        };
        if !is_setting(&arg) {
            return arg;
        }
        match v.clone() {
            Value::One(s) => arg.default_value(s),
            Value::Many(items) => arg.default_values(items),
        }
    });
    let names: Vec<String> = cmd
        .get_subcommands()
        .map(|s| s.get_name().to_owned())
        .collect();
    let mut cmd = cmd;
    for name in names {
        let sub_table = tables.get(&name).map(|t| (*t).clone()).unwrap_or_default();
        let sub_scope = format!("{scope}{name}.");
        let sub = cmd
            .find_subcommand(&name)
            .cloned()
            .expect("listed just now");
        let sub = apply_scope(sub, &values, &sub_table, longs, &sub_scope)?;
        cmd = cmd.mut_subcommand(&name, |_| sub);
    }
    Ok(cmd)
}
