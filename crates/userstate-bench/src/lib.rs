//! The load generator behind `userstate bench` (interface: `docs/BENCH.md`).
//!
//! A run starts a live [`Projection`] told of the engine's appends ([`Projection::listener`]),
//! adds N users (not timed), then lets C tasks issue full [`Engine::execute`] commands for S
//! seconds. It reports commands/s,
//! latency percentiles, domain rejections, infrastructure errors and the projection lag
//! (commit -> visible in the read model, sampled). [`floor::fsync_floor`] measures what the
//! disk allows in the same run, so durable figures can be read as a ratio to it.

#![deny(missing_docs)]

pub mod floor;
pub mod report;
mod workload;

use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use thiserror::Error;
use userstate::{
    AddUser, Context, Engine, EventStore, InstanceId, OrgId, Principal, Projection, UserCommand,
    UserId,
};

pub use floor::{fsync_floor, FloorMode, FloorReport};
pub use report::print_table;

/// What the tasks do during the timed part of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    /// BENCH.md: task t owns users with i % C == t and alternates lock/unlock; all succeed.
    LockUnlock,
    /// Every command adds a new user (a user append plus a username reservation).
    Create,
    /// Task-owned users cycle lock -> unlock -> deactivate -> reactivate; all succeed.
    Mixed,
    /// All tasks pick users by a Zipf(1.0) law over N, so a few users are hot and tasks race on
    /// them; each pick tries lock, and unlock when the user is already locked.
    Zipf,
    /// `lock-unlock` writers plus as many readers calling `get_user` on the read model.
    ReadWhileWrite,
}

impl Workload {
    /// Every workload.
    pub const ALL: [Workload; 5] = [
        Workload::LockUnlock,
        Workload::Create,
        Workload::Mixed,
        Workload::Zipf,
        Workload::ReadWhileWrite,
    ];

    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Workload::LockUnlock => "lock-unlock",
            Workload::Create => "create",
            Workload::Mixed => "mixed",
            Workload::Zipf => "zipf",
            Workload::ReadWhileWrite => "read-while-write",
        }
    }
}

impl FromStr for Workload {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Workload::ALL
            .into_iter()
            .find(|w| w.name() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Workload::ALL.iter().map(|w| w.name()).collect();
                format!("unknown workload {s:?}; one of {}", names.join(", "))
            })
    }
}

/// One (store, workload, concurrency) run.
#[derive(Clone, Debug)]
pub struct RunSpec {
    /// How the store is named in the report (`memory`, `file`, `postgres`, …).
    pub store_name: String,
    /// Whether the store answers only after the events are durable.
    pub durable: bool,
    /// The workload.
    pub workload: Workload,
    /// Users added before the timed part.
    pub users: usize,
    /// Concurrent tasks issuing commands.
    pub concurrency: usize,
    /// Length of the timed part.
    pub duration: Duration,
    /// Draw progress bars (on stderr) for the setup.
    pub progress: bool,
    /// The instance the run's users live in: runs in distinct instances can share one store
    /// (a PostgreSQL database or a KurrentDB server) without their users colliding.
    pub instance: InstanceId,
}

/// The result of one run: BENCH.md's JSON line.
#[derive(Clone, Debug, Serialize)]
pub struct RunReport {
    /// Store name.
    pub store: String,
    /// Workload name.
    pub workload: &'static str,
    /// Users added before the timed part.
    pub users: usize,
    /// Concurrent tasks.
    pub concurrency: usize,
    /// Measured length of the timed part.
    pub seconds: f64,
    /// Commands completed (successes and domain rejections).
    pub commands: u64,
    /// `commands / seconds`.
    pub commands_per_s: f64,
    /// CPU time of the whole process (user + system, every thread) over the timed part, per
    /// command, microseconds: on a loaded machine a steadier figure than `commands_per_s`.
    pub cpu_us_per_command: f64,
    /// Command latency percentiles, microseconds.
    pub p50_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Infrastructure failures (store, decode, aborted after retries).
    pub errors: u64,
    /// Domain rejections (expected only in `zipf`, where tasks race).
    pub rejected: u64,
    /// Whether every answered command was durable.
    pub durable: bool,
    /// Reads of the read model (only `read-while-write`).
    pub reads: u64,
    /// Reads per second.
    pub reads_per_s: f64,
    /// Commit -> visible in the read model, sampled: median, microseconds. From the instant
    /// `execute` returned to an instant the follower took right after applying the event
    /// ([`Projection::visible_at`]): an upper bound of the true lag.
    pub projection_lag_p50_us: f64,
    /// Commit -> visible, 99th percentile, microseconds.
    pub projection_lag_p99_us: f64,
    /// Commit -> a task waiting in [`Projection::wait_for`] ran, median, microseconds: the
    /// projection lag plus that task's own scheduling delay.
    pub projection_observed_p50_us: f64,
    /// Commit -> a waiting task ran, 99th percentile, microseconds.
    pub projection_observed_p99_us: f64,
}

/// Why a run could not complete.
#[derive(Debug, Error)]
pub enum BenchError {
    /// The untimed setup failed.
    #[error("setup failed: {0}")]
    Setup(#[from] userstate::Error),
    /// The run's parameters make no sense.
    #[error("invalid bench parameters: {0}")]
    Invalid(String),
}

pub(crate) fn user_id(i: usize) -> UserId {
    UserId::new(format!("bench-u{i}")).expect("valid generated id")
}

pub(crate) fn context(instance: &InstanceId) -> Context {
    Context::new(Principal::system("bench", instance.clone()))
}

pub(crate) fn add_command(id: UserId, username: String) -> UserCommand {
    UserCommand::Add(AddUser {
        user_id: id,
        username,
        organization: OrgId::new("bench-org").expect("valid literal id"),
        profile: None,
        email: None,
        initial: false,
    })
}

/// Runs one (store, workload, concurrency) combination on `store`, which should be empty.
pub async fn run(store: Arc<dyn EventStore>, spec: &RunSpec) -> Result<RunReport, BenchError> {
    if spec.concurrency == 0 || (spec.users == 0 && spec.workload != Workload::Create) {
        return Err(BenchError::Invalid(
            "--users and --concurrency must be at least 1".into(),
        ));
    }
    // The engine tells the projection what it appends, as an embedder reading its own writes
    // would: its events reach the read model as the append returns.
    let projection = Arc::new(Projection::spawn(store.clone()));
    let engine = Engine::new(store.clone()).with_listener(projection.listener());
    workload::add_users(&engine, spec).await?;
    let head = store
        .head_position()
        .await
        .map_err(userstate::Error::from)?;
    projection
        .wait_for(head, Duration::from_secs(300))
        .await
        .map_err(BenchError::Setup)?;
    let started = Instant::now();
    let cpu_before = process_cpu_seconds();
    let totals = workload::drive(&engine, &projection, spec, started + spec.duration).await;
    let seconds = started.elapsed().as_secs_f64();
    let cpu = process_cpu_seconds() - cpu_before;
    Ok(totals.report(spec, seconds, cpu))
}

/// The CPU time this process used so far (user + system, every thread, from
/// `/proc/self/stat`, in the kernel's clock ticks of 10 ms; 0 where there is no `/proc`).
pub fn process_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    (f.get(11).copied().unwrap_or(0.0) + f.get(12).copied().unwrap_or(0.0)) / 100.0
}
