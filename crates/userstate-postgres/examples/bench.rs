//! Commands per second through `userstate::Engine::execute` on PostgreSQL: the `lock-unlock`
//! workload of shared/docs/BENCH.md (N users added first, untimed; then C tasks, task t owning
//! the users with i % C == t, alternate lock and unlock for S seconds; every command is a full
//! load -> decide -> append, answered only once committed).
//!
//! ```text
//! cargo run --release -p userstate-postgres --example bench -- \
//!     --url postgres://postgres@127.0.0.1:5432/test --users 10000 --concurrency 1,8,64 --seconds 5 --json
//! ```
//!
//! It works in a fresh schema `bench_…`, dropped at the end.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use userstate::{AddUser, Context, Engine, InstanceId, OrgId, Principal, UserCommand, UserId};
use userstate_postgres::PostgresStore;

struct Args {
    url: String,
    users: usize,
    concurrency: Vec<usize>,
    seconds: f64,
    pool: usize,
    in_flight: usize,
    json: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        url: std::env::var("USERSTATE_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into()),
        users: 10_000,
        concurrency: vec![1, 8, 64],
        seconds: 5.0,
        pool: 32,
        in_flight: 1,
        json: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--url" => args.url = value()?,
            "--users" => args.users = value()?.parse().map_err(|e| format!("--users: {e}"))?,
            "--seconds" => {
                args.seconds = value()?.parse().map_err(|e| format!("--seconds: {e}"))?
            }
            "--pool" => args.pool = value()?.parse().map_err(|e| format!("--pool: {e}"))?,
            "--concurrency" => {
                args.concurrency = value()?
                    .split(',')
                    .map(|c| c.trim().parse().map_err(|e| format!("--concurrency: {e}")))
                    .collect::<Result<_, _>>()?
            }
            "--in-flight" => {
                args.in_flight = value()?.parse().map_err(|e| format!("--in-flight: {e}"))?
            }
            "--json" => args.json = true,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(args)
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args()?;
    let schema = format!("bench_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let store = PostgresStore::builder(&args.url)
        .schema(&schema)
        .pool_size(args.pool)
        .batches_in_flight(args.in_flight)
        .application_name("userstate-bench")
        .connect()
        .await?;
    let store = Arc::new(store);
    let engine = Engine::new(store.clone());
    let instance = InstanceId::new("bench")?;
    let ctx = Arc::new(Context::new(Principal::system("bench", instance)));
    let org = OrgId::new("bench-org")?;
    let ids: Arc<Vec<UserId>> = Arc::new(
        (0..args.users)
            .map(|i| UserId::new(format!("u{i}")))
            .collect::<Result<_, _>>()?,
    );

    let started = Instant::now();
    let adders: Vec<_> = (0..64)
        .map(|t| {
            let (engine, ctx, ids, org) = (engine.clone(), ctx.clone(), ids.clone(), org.clone());
            tokio::spawn(async move {
                for (i, id) in ids.iter().enumerate().filter(|(i, _)| i % 64 == t) {
                    let add = AddUser {
                        user_id: id.clone(),
                        username: format!("user{i}"),
                        organization: org.clone(),
                        profile: None,
                        email: None,
                        initial: false,
                    };
                    engine.execute(&ctx, UserCommand::Add(add)).await?;
                }
                Ok::<_, userstate::Error>(())
            })
        })
        .collect();
    for adder in adders {
        adder.await??;
    }
    if !args.json {
        println!(
            "added {} users in {:.1} s (schema {schema})",
            args.users,
            started.elapsed().as_secs_f64()
        );
        println!(
            "{:>6} {:>10} {:>12} {:>9} {:>9} {:>9} {:>7} {:>9} {:>9}",
            "conc",
            "commands",
            "commands/s",
            "p50 µs",
            "p99 µs",
            "p999 µs",
            "errors",
            "req/commit",
            "batch µs"
        );
    }

    let locked: Arc<Vec<AtomicBool>> =
        Arc::new((0..args.users).map(|_| AtomicBool::new(false)).collect());
    for &c in &args.concurrency {
        let until = Instant::now() + Duration::from_secs_f64(args.seconds);
        let began = Instant::now();
        let stats_before = store.writer_stats();
        let tasks: Vec<_> = (0..c)
            .map(|t| {
                let (engine, ctx, ids, locked) =
                    (engine.clone(), ctx.clone(), ids.clone(), locked.clone());
                tokio::spawn(async move {
                    let mine: Vec<usize> = (0..ids.len()).filter(|i| i % c == t).collect();
                    let (mut latencies, mut errors) = (Vec::new(), 0u64);
                    let mut k = 0;
                    while !mine.is_empty() && Instant::now() < until {
                        let i = mine[k % mine.len()];
                        k += 1;
                        let was_locked = locked[i].load(Ordering::Relaxed);
                        let command = if was_locked {
                            UserCommand::Unlock(ids[i].clone())
                        } else {
                            UserCommand::Lock(ids[i].clone())
                        };
                        let t0 = Instant::now();
                        match engine.execute(&ctx, command).await {
                            Ok(_) => {
                                latencies.push(t0.elapsed().as_micros() as u64);
                                locked[i].store(!was_locked, Ordering::Relaxed);
                            }
                            Err(e) => {
                                errors += 1;
                                eprintln!("command failed: {e}");
                            }
                        }
                    }
                    (latencies, errors)
                })
            })
            .collect();
        let (mut latencies, mut errors) = (Vec::new(), 0);
        for task in tasks {
            let (l, e) = task.await?;
            latencies.extend(l);
            errors += e;
        }
        let elapsed = began.elapsed().as_secs_f64();
        let stats = store.writer_stats();
        let commits = stats.commits - stats_before.commits;
        let requests_per_commit =
            (stats.requests - stats_before.requests) as f64 / commits.max(1) as f64;
        let batch_us = (stats.busy_us - stats_before.busy_us) as f64 / commits.max(1) as f64;
        latencies.sort_unstable();
        let commands = latencies.len();
        let per_s = commands as f64 / elapsed;
        let (p50, p99, p999) = (
            percentile(&latencies, 0.50),
            percentile(&latencies, 0.99),
            percentile(&latencies, 0.999),
        );
        if args.json {
            println!(
                "{}",
                serde_json::json!({
                    "store": "postgres", "workload": "lock-unlock", "users": args.users,
                    "concurrency": c, "seconds": elapsed, "commands": commands,
                    "commands_per_s": per_s, "p50_us": p50, "p99_us": p99, "p999_us": p999,
                    "errors": errors, "durable": true, "commits": commits,
                    "requests_per_commit": requests_per_commit, "batch_us": batch_us,
                })
            );
        } else {
            println!("{c:>6} {commands:>10} {per_s:>12.0} {p50:>9.0} {p99:>9.0} {p999:>9.0} {errors:>7} {requests_per_commit:>9.1} {batch_us:>9.0}");
        }
    }
    drop(engine);
    drop(store);

    // The floor: one client committing one-row transactions back to back, in the same run.
    let (client, connection) = tokio_postgres::connect(&args.url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    client
        .batch_execute(&format!("CREATE TABLE {schema}.floor (n bigint)"))
        .await?;
    let insert = client
        .prepare(&format!("INSERT INTO {schema}.floor VALUES ($1)"))
        .await?;
    let (began, mut commits) = (Instant::now(), 0u64);
    while began.elapsed() < Duration::from_secs(2) {
        client.batch_execute("BEGIN").await?;
        client.execute(&insert, &[&(commits as i64)]).await?;
        client.batch_execute("COMMIT").await?;
        commits += 1;
    }
    let floor = commits as f64 / began.elapsed().as_secs_f64();
    if args.json {
        println!(
            "{}",
            serde_json::json!({"store": "postgres-commit-floor", "clients": 1, "commits_per_s": floor})
        );
    } else {
        println!("commit floor: {floor:.0} one-row transactions/s from one client");
    }

    let (client, connection) = tokio_postgres::connect(&args.url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    client
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await?;
    Ok(())
}
