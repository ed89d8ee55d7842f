//! What the read model costs a command: `lock-unlock` on the memory store (BENCH.md's workload,
//! without the lag samples) with the projection told of every append, as `userstate bench`
//! runs it, with a projection that follows the store by itself, and with no read model,
//! alternated in the same process.
//!
//! `cargo run --profile profiling -p userstate-bench --example command_path -- [USERS] [CALLERS] [SECONDS] [ROUNDS] [told|follows|none|all] [waves|random]`
//!
//! Prints one line per run: `read_model=told|follows|none … commands_per_s=… cpu_us_per_command=…`
//! (the CPU time of the whole process over the timed part, per command: on a loaded machine a
//! steadier figure than the rate).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use userstate::{
    AddUser, Context, Engine, EventStore, InstanceId, MemoryStore, OrgId, Principal, Projection,
    UserCommand, UserId,
};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn arg(n: usize, default: u64) -> u64 {
    std::env::args()
        .nth(n)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let (users, callers, seconds, rounds) = (arg(1, 10_000), arg(2, 64), arg(3, 4), arg(4, 3));
    let only = std::env::args().nth(5).filter(|o| o != "all");
    // `waves`: BENCH.md's lock-unlock (each task locks its users in turn, then unlocks them);
    // `random`: each task toggles a random user of its own, so about half are locked throughout.
    let random = std::env::args().nth(6).is_some_and(|p| p == "random");
    let pattern = if random { "random" } else { "waves" };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    for _ in 0..rounds {
        for mode in [Mode::Told, Mode::Follows, Mode::None] {
            let name = mode.name();
            if only.as_deref().is_some_and(|o| o != name) {
                continue;
            }
            let (rate, cpu) = runtime.block_on(run(mode, random, users, callers, seconds));
            println!(
                "read_model={name} pattern={pattern} users={users} callers={callers} \
                 commands_per_s={rate:.0} cpu_us_per_command={cpu:.2}"
            );
        }
    }
}

/// Where the read model is kept, if anywhere.
#[derive(Clone, Copy)]
enum Mode {
    /// A projection told of every append (as `userstate bench` and `serve` run).
    Told,
    /// A projection following the store by itself.
    Follows,
    /// No read model: the engine alone.
    None,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Told => "told",
            Mode::Follows => "follows",
            Mode::None => "none",
        }
    }
}

/// Commands per second and CPU microseconds per command.
async fn run(mode: Mode, random: bool, users: u64, callers: u64, seconds: u64) -> (f64, f64) {
    let store: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
    let mut engine = Engine::new(store.clone());
    let _projection = match mode {
        Mode::None => None,
        Mode::Follows => Some(Projection::spawn(store.clone())),
        Mode::Told => {
            let projection = Projection::spawn(store.clone());
            engine = engine.with_listener(projection.listener());
            Some(projection)
        }
    };
    let instance = InstanceId::new("default").expect("valid id");
    let ctx = Context::new(Principal::system("bench", instance));
    let id = |i: u64| UserId::new(format!("bench-u{i}")).expect("valid id");
    for i in 0..users {
        let add = UserCommand::Add(AddUser {
            user_id: id(i),
            username: format!("bench-user-{i}"),
            organization: OrgId::new("bench-org").expect("valid id"),
            profile: None,
            email: None,
            initial: false,
        });
        engine.execute(&ctx, add).await.expect("add");
    }
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let cpu_before = userstate_bench::process_cpu_seconds();
    let mut tasks = Vec::new();
    for t in 0..callers {
        let (engine, ctx, done) = (engine.clone(), ctx.clone(), done.clone());
        let mine: Vec<UserId> = (t..users).step_by(callers as usize).map(id).collect();
        tasks.push(tokio::spawn(async move {
            let mut step = vec![false; mine.len()];
            let mut k = 0usize;
            // xorshift: the random pattern needs no better generator.
            let mut seed = 0x9e37_79b9_7f4a_7c15u64 ^ t;
            while Instant::now() < deadline {
                tokio::task::consume_budget().await;
                let slot = if random {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    (seed % mine.len() as u64) as usize
                } else {
                    k % mine.len()
                };
                let cmd = if step[slot] {
                    UserCommand::Unlock(mine[slot].clone())
                } else {
                    UserCommand::Lock(mine[slot].clone())
                };
                if engine.execute(&ctx, cmd).await.is_ok() {
                    step[slot] = !step[slot];
                    done.fetch_add(1, Ordering::Relaxed);
                }
                k += 1;
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    let cpu = userstate_bench::process_cpu_seconds() - cpu_before;
    let commands = done.load(Ordering::Relaxed) as f64;
    (
        commands / started.elapsed().as_secs_f64(),
        cpu / commands * 1e6,
    )
}
