//! The tasks of a run: untimed setup, then the timed loops of each workload.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Zipf};
use userstate::{Engine, ErrorKind, Projection, UserCommand, UserId};

use crate::{add_command, context, user_id, BenchError, RunReport, RunSpec, Workload};

/// Every how many commands a task samples the projection lag.
const LAG_SAMPLE_EVERY: u64 = 64;

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid static histogram bounds")
}

/// Adds `spec.users` users with up to 64 tasks, drawing a progress bar if asked.
pub(crate) async fn add_users(engine: &Engine, spec: &RunSpec) -> Result<(), BenchError> {
    if spec.workload == Workload::Create {
        return Ok(());
    }
    let bar = if spec.progress {
        let bar = ProgressBar::new(spec.users as u64);
        bar.set_style(
            ProgressStyle::with_template(
                "adding users {bar:40} {pos}/{len} ({per_sec}, eta {eta})",
            )
            .expect("valid static template"),
        );
        bar
    } else {
        ProgressBar::hidden()
    };
    let tasks = spec.concurrency.clamp(1, 64);
    let mut handles = Vec::new();
    for t in 0..tasks {
        let (engine, bar, users) = (engine.clone(), bar.clone(), spec.users);
        let instance = spec.instance.clone();
        handles.push(tokio::spawn(async move {
            for i in (t..users).step_by(tasks) {
                engine
                    .execute(
                        &context(&instance),
                        add_command(user_id(i), format!("bench-user-{i}")),
                    )
                    .await?;
                bar.inc(1);
            }
            Ok::<_, userstate::Error>(())
        }));
    }
    for h in handles {
        h.await.expect("setup task does not panic")?;
    }
    bar.finish_and_clear();
    Ok(())
}

/// The projection lag samples (see [`Task::sample_lag`]).
#[derive(Default)]
pub(crate) struct Lag {
    /// Commit -> visible in the read model.
    visible: Option<Histogram<u64>>,
    /// Commit -> a task waiting for the position ran.
    observed: Option<Histogram<u64>>,
}

/// What the tasks counted.
#[derive(Default)]
pub(crate) struct Totals {
    latency: Option<Histogram<u64>>,
    lag: Arc<Mutex<Lag>>,
    commands: u64,
    errors: u64,
    rejected: u64,
    reads: u64,
}

impl Totals {
    fn merge(&mut self, other: TaskCount) {
        match &mut self.latency {
            Some(h) => h.add(&other.latency).expect("same bounds"),
            None => self.latency = Some(other.latency),
        }
        self.commands += other.commands;
        self.errors += other.errors;
        self.rejected += other.rejected;
        self.reads += other.reads;
    }

    pub(crate) fn report(&self, spec: &RunSpec, seconds: f64, cpu_seconds: f64) -> RunReport {
        let q = |h: &Option<Histogram<u64>>, q: f64| {
            h.as_ref()
                .filter(|h| !h.is_empty())
                .map_or(0.0, |h| h.value_at_quantile(q) as f64)
        };
        let (visible, observed) = self
            .lag
            .lock()
            .map(|l| (l.visible.clone(), l.observed.clone()))
            .unwrap_or_default();
        RunReport {
            store: spec.store_name.clone(),
            workload: spec.workload.name(),
            users: spec.users,
            concurrency: spec.concurrency,
            seconds,
            commands: self.commands,
            commands_per_s: self.commands as f64 / seconds,
            cpu_us_per_command: cpu_seconds * 1e6 / self.commands.max(1) as f64,
            p50_us: q(&self.latency, 0.5),
            p99_us: q(&self.latency, 0.99),
            p999_us: q(&self.latency, 0.999),
            errors: self.errors,
            rejected: self.rejected,
            durable: spec.durable,
            reads: self.reads,
            reads_per_s: self.reads as f64 / seconds,
            projection_lag_p50_us: q(&visible, 0.5),
            projection_lag_p99_us: q(&visible, 0.99),
            projection_observed_p50_us: q(&observed, 0.5),
            projection_observed_p99_us: q(&observed, 0.99),
        }
    }
}

struct TaskCount {
    latency: Histogram<u64>,
    commands: u64,
    errors: u64,
    rejected: u64,
    reads: u64,
}

struct Task {
    engine: Engine,
    /// Built once: a principal's permission set is not free to build per command.
    ctx: userstate::Context,
    projection: Arc<Projection>,
    lag: Arc<Mutex<Lag>>,
    count: TaskCount,
    deadline: Instant,
    /// When the task's last command returned (its start before the first).
    last_end: Instant,
}

impl Task {
    /// Runs one command, timing it; returns whether the domain accepted it.
    async fn command(&mut self, cmd: UserCommand) -> bool {
        // The memory store never suspends; without this a task would keep its worker thread
        // for the whole run and starve the projection and reader tasks.
        tokio::task::consume_budget().await;
        let start = Instant::now();
        let result = self.engine.execute(&self.ctx, cmd).await;
        let end = Instant::now();
        self.last_end = end;
        let micros = end.duration_since(start).as_micros().max(1) as u64;
        self.count.latency.saturating_record(micros);
        self.count.commands += 1;
        match result {
            Ok(details) => {
                if self.count.commands.is_multiple_of(LAG_SAMPLE_EVERY) {
                    self.sample_lag(details.position, end);
                }
                true
            }
            Err(e) if e.kind() == ErrorKind::FailedPrecondition => {
                self.count.rejected += 1;
                false
            }
            Err(_) => {
                self.count.errors += 1;
                false
            }
        }
    }

    /// Measures, off the command path, how long `position` takes to reach the read model.
    ///
    /// `committed` is taken after `execute` returned. The lag recorded is from `committed` to
    /// [`Projection::visible_at`]: an instant the follower takes right after applying the page
    /// with `position`, so it is never earlier than the moment a reader could first see the
    /// event (0 when the event was visible before the caller had its answer; the histogram
    /// floor makes that 1 µs). Should the follower have forgotten that page, the time this task
    /// woke is used, which is later still. The waiting task's own wake-up, which includes its
    /// scheduling delay among the busy command tasks, is recorded apart as `observed`.
    fn sample_lag(&self, position: u64, committed: Instant) {
        let (projection, lag) = (self.projection.clone(), self.lag.clone());
        tokio::spawn(async move {
            if projection
                .wait_for(position, Duration::from_secs(10))
                .await
                .is_ok()
            {
                let woke = Instant::now();
                let visible = projection.visible_at(position).unwrap_or(woke);
                let micros = |at: Instant| {
                    (at.saturating_duration_since(committed).as_micros() as u64).max(1)
                };
                if let Ok(mut l) = lag.lock() {
                    l.visible
                        .get_or_insert_with(histogram)
                        .saturating_record(micros(visible));
                    l.observed
                        .get_or_insert_with(histogram)
                        .saturating_record(micros(woke));
                }
            }
        });
    }

    /// Whether the run goes on: judged by the end of the last command (a clock read less per
    /// command; a reader task, which times nothing, reads the clock).
    fn running(&self) -> bool {
        self.last_end < self.deadline
    }
}

/// Runs the timed part until `deadline` and sums what every task counted.
pub(crate) async fn drive(
    engine: &Engine,
    projection: &Arc<Projection>,
    spec: &RunSpec,
    deadline: Instant,
) -> Totals {
    let mut totals = Totals::default();
    let mut handles = Vec::new();
    let writers = spec.concurrency;
    let readers = if spec.workload == Workload::ReadWhileWrite {
        spec.concurrency
    } else {
        0
    };
    for t in 0..writers + readers {
        let mut task = Task {
            engine: engine.clone(),
            ctx: context(&spec.instance),
            projection: projection.clone(),
            lag: totals.lag.clone(),
            count: TaskCount {
                latency: histogram(),
                commands: 0,
                errors: 0,
                rejected: 0,
                reads: 0,
            },
            deadline,
            last_end: Instant::now(),
        };
        let (workload, users) = (spec.workload, spec.users);
        handles.push(tokio::spawn(async move {
            match workload {
                _ if t >= writers => read_loop(&mut task, users).await,
                Workload::LockUnlock | Workload::ReadWhileWrite => {
                    owned_cycle(&mut task, t, writers, users, 2).await
                }
                Workload::Mixed => owned_cycle(&mut task, t, writers, users, 4).await,
                Workload::Create => create_loop(&mut task, t).await,
                Workload::Zipf => zipf_loop(&mut task, t, users).await,
            }
            task.count
        }));
    }
    for h in handles {
        totals.merge(h.await.expect("bench task does not panic"));
    }
    // Let the last lag samples land.
    tokio::time::sleep(Duration::from_millis(50)).await;
    totals
}

/// Task `t` of `c` walks its own users (i % c == t) round-robin; each visit moves the user one
/// step through a cycle of `steps` commands that always succeed.
async fn owned_cycle(task: &mut Task, t: usize, c: usize, users: usize, steps: usize) {
    // Ids made once: a command takes a clone (a reference count), as a server's would take
    // the id it parsed from the request.
    let mine: Vec<UserId> = (t..users).step_by(c).map(user_id).collect();
    if mine.is_empty() {
        return;
    }
    let mut step = vec![0usize; mine.len()];
    let mut k = 0;
    while task.running() {
        let slot = k % mine.len();
        let id = mine[slot].clone();
        let cmd = match step[slot] % steps {
            0 => UserCommand::Lock(id),
            1 => UserCommand::Unlock(id),
            2 => UserCommand::Deactivate(id),
            _ => UserCommand::Reactivate(id),
        };
        if task.command(cmd).await {
            step[slot] += 1;
        }
        k += 1;
    }
}

async fn create_loop(task: &mut Task, t: usize) {
    let mut k = 0;
    while task.running() {
        let id = userstate::UserId::new(format!("bench-c{t}-{k}")).expect("valid generated id");
        task.command(add_command(id, format!("bench-create-{t}-{k}")))
            .await;
        k += 1;
    }
}

async fn zipf_loop(task: &mut Task, t: usize, users: usize) {
    let zipf = Zipf::new(users as f64, 1.0).expect("users >= 1 and exponent 1.0 are valid");
    let mut rng = rand::rngs::StdRng::seed_from_u64(t as u64);
    while task.running() {
        let i = (zipf.sample(&mut rng) as usize)
            .saturating_sub(1)
            .min(users - 1);
        if !task.command(UserCommand::Lock(user_id(i))).await {
            task.command(UserCommand::Unlock(user_id(i))).await;
        }
    }
}

async fn read_loop(task: &mut Task, users: usize) {
    let principal = task.ctx.principal.clone();
    let mut rng = rand::rngs::StdRng::seed_from_u64(users as u64);
    while task.running() {
        let id = user_id(rng.random_range(0..users));
        if task.projection.get_user(&principal, &id).is_ok() {
            task.count.reads += 1;
        } else {
            task.count.errors += 1;
        }
        // Reads are synchronous; let writers on the same worker make progress.
        tokio::task::consume_budget().await;
        task.last_end = Instant::now();
    }
}
