//! Running the real `userstate` binary on a data directory, for the command-line tests.

use std::path::Path;
use std::process::{Command, Output};

/// Runs `userstate ARGS --data DATA` (the store from the flags, never from the environment)
/// and waits for it.
pub fn userstate(data: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_userstate"))
        .args(args)
        .arg("--data")
        .arg(data)
        .env_remove("USERSTATE_STORE")
        .output()
        .expect("run the userstate binary")
}
