//! File store benchmarks (criterion): the disk's fsync floor, durable appends/s and engine
//! commands/s with 1, 8 and 64 concurrent callers, and cold open time.
//!
//! `cargo bench -p userstate --bench file_store` (set `USERSTATE_BENCH_DIR` to choose the
//! directory, default the system temp dir; `USERSTATE_BENCH_OPEN_EVENTS=10000000` to change the
//! size of the cold-open log, default 1M). Figures go to docs/PERFORMANCE.md.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tokio::runtime::Runtime;
use userstate::store::{EventMetadata, NewEvent};
use userstate::{
    AddUser, Context, Engine, EventStore, ExpectedVersion, FileStore, InstanceId, OrgId, Principal,
    StreamId, UserCommand, UserId,
};

const USERS: usize = 10_000;
const CALLERS: [usize; 3] = [1, 8, 64];

fn bench_dir() -> tempfile::TempDir {
    match std::env::var_os("USERSTATE_BENCH_DIR") {
        Some(dir) => tempfile::tempdir_in(PathBuf::from(dir)),
        None => tempfile::tempdir(),
    }
    .expect("benchmark directory")
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// An event of about 200 bytes once framed, like a user lifecycle event.
fn event(n: u64) -> NewEvent {
    NewEvent::new(
        "user.locked",
        1,
        serde_json::json!({ "n": n }),
        EventMetadata {
            instance: "bench".into(),
            resource_owner: "org-1".into(),
            creator: "bench-admin".into(),
            correlation_id: Some(format!("corr-{n:012}")),
            idempotency_key: None,
        },
    )
}

/// What the disk allows: write + fdatasync of one 200-byte record, and of 64 at once, both
/// appended (`records_per_sync`) and written in place over zeros written beforehand
/// (`in_place_records_per_sync`, how the store writes; ADR 0007).
fn fsync_floor(c: &mut Criterion) {
    const IN_PLACE_FILE: u64 = 16 << 20;
    let dir = bench_dir();
    let mut group = c.benchmark_group("fsync_floor");
    for records in [1usize, 64] {
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.path().join(format!("floor-{records}")))
            .expect("floor file");
        let buf = vec![0xA5u8; 200 * records];
        group.throughput(Throughput::Elements(records as u64));
        group.bench_function(BenchmarkId::new("records_per_sync", records), |b| {
            b.iter(|| {
                file.write_all(&buf).expect("write");
                file.sync_data().expect("fdatasync");
            })
        });
        let zeroed = OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(dir.path().join(format!("floor-in-place-{records}")))
            .expect("floor file");
        (&zeroed)
            .write_all(&vec![0u8; IN_PLACE_FILE as usize])
            .expect("zeros");
        zeroed.sync_all().expect("fsync");
        let mut at = 0u64;
        group.bench_function(
            BenchmarkId::new("in_place_records_per_sync", records),
            |b| {
                b.iter(|| {
                    if at + buf.len() as u64 > IN_PLACE_FILE {
                        at = 0;
                    }
                    zeroed.write_all_at(&buf, at).expect("write");
                    zeroed.sync_data().expect("fdatasync");
                    at += buf.len() as u64;
                })
            },
        );
    }
    group.finish();
}

/// Durable single-event appends (`Any`), `callers` tasks at once over 10k streams.
fn durable_appends(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("durable_appends");
    group.throughput(Throughput::Elements(1));
    for callers in CALLERS {
        let dir = bench_dir();
        let store = Arc::new(FileStore::open(dir.path()).expect("open"));
        let streams: Arc<Vec<StreamId>> = Arc::new(
            (0..USERS)
                .map(|i| StreamId::new(format!("user:bench:u{i}")).expect("stream"))
                .collect(),
        );
        group.bench_function(BenchmarkId::new("callers", callers), |b| {
            b.iter_custom(|iters| {
                let (store, streams) = (store.clone(), streams.clone());
                rt.block_on(async move {
                    let started = Instant::now();
                    let tasks: Vec<_> = (0..callers)
                        .map(|t| {
                            let (store, streams) = (store.clone(), streams.clone());
                            let n = iters / callers as u64
                                + u64::from((t as u64) < iters % callers as u64);
                            tokio::spawn(async move {
                                for k in 0..n {
                                    let s = &streams[(t + k as usize * callers) % USERS];
                                    store
                                        .append(s, ExpectedVersion::Any, vec![event(k)])
                                        .await
                                        .expect("append");
                                }
                            })
                        })
                        .collect();
                    for t in tasks {
                        t.await.expect("caller");
                    }
                    started.elapsed()
                })
            })
        });
    }
    group.finish();
}

/// Full `Engine::execute` lock/unlock commands on 10k users (the `lock-unlock` workload of
/// BENCH.md): load (cached fold + tail read), decide, durable append.
fn commands(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("commands_lock_unlock");
    group.throughput(Throughput::Elements(1));
    let instance = InstanceId::new("bench").expect("instance");
    let ctx = Arc::new(Context::new(Principal::system("bench-admin", instance)));
    for callers in CALLERS {
        let dir = bench_dir();
        let engine = Arc::new(Engine::new(Arc::new(
            FileStore::open(dir.path()).expect("open"),
        )));
        let users: Arc<Vec<UserId>> = Arc::new(
            (0..USERS)
                .map(|i| UserId::new(format!("u{i}")).expect("user id"))
                .collect(),
        );
        rt.block_on(add_users(&engine, &ctx, &users));
        let locked: Arc<Vec<AtomicBool>> =
            Arc::new((0..USERS).map(|_| AtomicBool::new(false)).collect());
        let cursors: Arc<Vec<AtomicUsize>> =
            Arc::new((0..callers).map(|_| AtomicUsize::new(0)).collect());
        group.bench_function(BenchmarkId::new("callers", callers), |b| {
            b.iter_custom(|iters| {
                let (engine, ctx, users) = (engine.clone(), ctx.clone(), users.clone());
                let (locked, cursors) = (locked.clone(), cursors.clone());
                rt.block_on(async move {
                    let started = Instant::now();
                    let tasks: Vec<_> = (0..callers)
                        .map(|t| {
                            let (engine, ctx, users) = (engine.clone(), ctx.clone(), users.clone());
                            let (locked, cursors) = (locked.clone(), cursors.clone());
                            let n = iters / callers as u64
                                + u64::from((t as u64) < iters % callers as u64);
                            tokio::spawn(async move {
                                // Task t owns users t, t + callers, …; each user's
                                // locked flag survives between criterion iterations.
                                for _ in 0..n {
                                    let step = cursors[t].fetch_add(1, Relaxed);
                                    let owned = (USERS - t).div_ceil(callers);
                                    let u = t + (step % owned) * callers;
                                    let user = users[u].clone();
                                    let command = if locked[u].fetch_xor(true, Relaxed) {
                                        UserCommand::Unlock(user)
                                    } else {
                                        UserCommand::Lock(user)
                                    };
                                    engine.execute(&ctx, command).await.expect("command");
                                }
                            })
                        })
                        .collect();
                    for t in tasks {
                        t.await.expect("caller");
                    }
                    started.elapsed()
                })
            })
        });
    }
    group.finish();
}

async fn add_users(engine: &Arc<Engine>, ctx: &Arc<Context>, users: &Arc<Vec<UserId>>) {
    let tasks: Vec<_> = (0..64)
        .map(|t| {
            let (engine, ctx, users) = (engine.clone(), ctx.clone(), users.clone());
            tokio::spawn(async move {
                for (i, id) in users.iter().enumerate().skip(t).step_by(64) {
                    let add = AddUser {
                        user_id: id.clone(),
                        username: format!("user{i}"),
                        organization: OrgId::new("org-1").expect("org"),
                        profile: None,
                        email: None,
                        initial: false,
                    };
                    engine
                        .execute(&ctx, UserCommand::Add(add))
                        .await
                        .expect("add");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("adder");
    }
}

/// `read_stream` as the engine calls it: the empty tail after a cached version (the common
/// case) and a whole 10-event stream (a cache miss), from a store holding 100k events.
fn reads(c: &mut Criterion) {
    let rt = runtime();
    let dir = bench_dir();
    let store = Arc::new(FileStore::open(dir.path()).expect("open"));
    let streams: Arc<Vec<StreamId>> = Arc::new(
        (0..USERS)
            .map(|i| StreamId::new(format!("user:bench:u{i}")).expect("stream"))
            .collect(),
    );
    rt.block_on(async {
        let tasks: Vec<_> = (0..64)
            .map(|t| {
                let (store, streams) = (store.clone(), streams.clone());
                tokio::spawn(async move {
                    for round in 0..10 {
                        for s in streams.iter().skip(t).step_by(64) {
                            let e = vec![event(round)];
                            store
                                .append(s, ExpectedVersion::Any, e)
                                .await
                                .expect("append");
                        }
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("filler");
        }
    });
    let mut group = c.benchmark_group("read_stream");
    group.throughput(Throughput::Elements(1));
    let mut i = 0;
    group.bench_function("empty_tail", |b| {
        b.iter(|| {
            i = (i + 7919) % streams.len();
            rt.block_on(store.read_stream(&streams[i], 11))
                .expect("read")
        })
    });
    group.bench_function("whole_stream_10_events", |b| {
        b.iter(|| {
            i = (i + 7919) % streams.len();
            rt.block_on(store.read_stream(&streams[i], 1))
                .expect("read")
        })
    });
    group.finish();
}

/// Opening (lock, scan, index rebuild) a log of 1M events (or `USERSTATE_BENCH_OPEN_EVENTS`).
fn cold_open(c: &mut Criterion) {
    let events: u64 = std::env::var("USERSTATE_BENCH_OPEN_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    // USERSTATE_BENCH_OPEN_DIR keeps the filled log between runs (filled only when empty).
    let kept = std::env::var_os("USERSTATE_BENCH_OPEN_DIR").map(PathBuf::from);
    let temp = bench_dir();
    let dir = kept.unwrap_or_else(|| temp.path().to_path_buf());
    let rt = runtime();
    let existing = FileStore::open(&dir).expect("open").head();
    if existing == 0 {
        let prepared = Instant::now();
        rt.block_on(fill(dir.clone(), events));
        eprintln!(
            "cold_open: wrote {events} events in {:?}",
            prepared.elapsed()
        );
    }
    let events = FileStore::open(&dir).expect("open").head();
    let mut group = c.benchmark_group("cold_open");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));
    group.throughput(Throughput::Elements(events));
    group.bench_function(BenchmarkId::new("events", events), |b| {
        b.iter(|| FileStore::open(&dir).expect("open"))
    });
    group.finish();
}

/// Writes `events` events over 10k streams, 100 per append, from 8 tasks.
async fn fill(dir: PathBuf, events: u64) {
    let store = Arc::new(FileStore::open(&dir).expect("open"));
    let per_task = events / 8;
    let tasks: Vec<_> = (0..8u64)
        .map(|t| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut done = 0;
                let mut k = t;
                while done < per_task {
                    let n = 100.min(per_task - done);
                    let s =
                        StreamId::new(format!("user:bench:u{}", k % USERS as u64)).expect("stream");
                    let batch = (0..n).map(|i| event(done + i)).collect();
                    store
                        .append(&s, ExpectedVersion::Any, batch)
                        .await
                        .expect("append");
                    done += n;
                    k += 8;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("filler");
    }
}

criterion_group!(
    benches,
    fsync_floor,
    durable_appends,
    commands,
    reads,
    cold_open
);
criterion_main!(benches);
