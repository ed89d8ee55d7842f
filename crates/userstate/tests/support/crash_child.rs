//! The `kill -9` harness the crash tests share: runs one test of the current test binary as a
//! child process, reads what it acknowledged from its stdout, and kills it at a chosen moment.
//!
//! The child prints `READY` once its stores are open, then one line per acknowledged write;
//! `parse` turns such a line into an acknowledgement (other lines are ignored).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// The child's side: when this process was started by [`run_and_kill`] (`env` is set), runs
/// `child` with the directory it names on a two-worker runtime; otherwise (the test run by the
/// test harness itself) does nothing.
pub fn as_child<F: std::future::Future<Output = ()>>(env: &str, child: impl FnOnce(String) -> F) {
    let Ok(dir) = std::env::var(env) else {
        return;
    };
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(child(dir));
}

/// Kills the child if the test panics before it does.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs the test `child_test` of this binary with `env` = `dir`, kills it with SIGKILL `delay`
/// after it printed `READY`, and returns every acknowledgement it printed before that.
pub fn run_and_kill<T: Send + 'static>(
    child_test: &str,
    env: &str,
    dir: &Path,
    delay: Duration,
    parse: fn(&str) -> Option<T>,
) -> Vec<T> {
    let mut child = KillOnDrop(
        Command::new(std::env::current_exe().expect("test binary"))
            .args(["--exact", child_test, "--nocapture", "--test-threads=1"])
            .env(env, dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn child"),
    );
    let stdout = child.0.stdout.take().expect("piped stdout");
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut acks = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            // libtest prints "test NAME ... " without a newline before the child's output.
            if line.ends_with("READY") {
                let _ = ready_tx.send(());
            } else if let Some(ack) = parse(&line) {
                acks.push(ack);
            }
        }
        acks
    });
    ready_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("child opened its stores");
    std::thread::sleep(delay);
    child.0.kill().expect("kill -9");
    child.0.wait().expect("reap child");
    reader.join().expect("reader thread")
}
