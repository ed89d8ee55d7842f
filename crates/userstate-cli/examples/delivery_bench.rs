//! Delivery benchmark (not a test): events/s delivered to a local webhook receiver and to NATS
//! JetStream, and the lag from commit to delivered (p50/p99), while commands run at a fixed
//! rate. In one process: an engine on the memory store runs `--rate` adds per second for
//! `--seconds` (paced; the rate it reached is printed), the server's delivery machinery
//! (`userstate_server::delivery`) delivers them, and the receiver — an axum server on loopback
//! that checks every signature, or a JetStream consumer — measures, per `user.human.added`,
//! now − the event's `createdAt` (the commit's time; one clock). Loopback only, bounded.
//!
//! ```sh
//! cargo run --release -p userstate-cli --example delivery_bench -- --targets webhook,nats \
//!     --rate 10000 --seconds 10 --nats nats://127.0.0.1:4222
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use base64::Engine as _;
use clap::Parser;
use userstate::{
    AddUser, Context, Engine, EventStore, InstanceId, MemoryStore, OrgId, Principal, UserCommand,
    UserId,
};
use userstate_server::delivery::config::parse;
use userstate_server::delivery::{Delivery, DeliveryOptions};
use userstate_server::metrics::Metrics;

/// The server binary's allocator (`userstate`'s main.rs), so the figures are the server's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SECRET_B64: &str = "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

#[derive(Parser)]
struct Args {
    /// Targets to measure, one run each: webhook, nats.
    #[arg(long, value_delimiter = ',', default_values_t = ["webhook".to_owned(), "nats".to_owned()])]
    targets: Vec<String>,
    /// Commands per second offered.
    #[arg(long, default_value_t = 10_000)]
    rate: u64,
    /// Seconds of load per target.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// NATS server.
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    nats: String,
    /// The webhook target's `concurrency` (requests in flight; default: the server's).
    #[arg(long)]
    concurrency: Option<usize>,
}

/// Lags in microseconds, and when the last event arrived.
#[derive(Default)]
struct Seen {
    lags_us: Vec<u64>,
    events: u64,
    last: Option<Instant>,
}

fn record(seen: &Mutex<Seen>, body: &[u8]) {
    let Ok(event) = serde_json::from_slice::<serde_json::Value>(body) else {
        return;
    };
    let mut seen = seen.lock().unwrap();
    seen.events += 1;
    seen.last = Some(Instant::now());
    if event["type"] == "user.human.added" {
        if let Some(at) = event["createdAt"]
            .as_str()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        {
            let lag = chrono::Utc::now() - at.with_timezone(&chrono::Utc);
            seen.lags_us
                .push(lag.num_microseconds().unwrap_or(0).max(0) as u64);
        }
    }
}

#[derive(Clone)]
struct Hook {
    seen: Arc<Mutex<Seen>>,
    key: Arc<ring::hmac::Key>,
}

async fn hook(State(h): State<Hook>, headers: HeaderMap, body: axum::body::Bytes) -> StatusCode {
    let get = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or("");
    let signed = format!(
        "{}.{}.{}",
        get("webhook-id"),
        get("webhook-timestamp"),
        String::from_utf8_lossy(&body)
    );
    let valid = get("webhook-signature")
        .strip_prefix("v1,")
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .is_some_and(|tag| ring::hmac::verify(&h.key, signed.as_bytes(), &tag).is_ok());
    if !valid {
        return StatusCode::UNAUTHORIZED;
    }
    record(&h.seen, &body);
    StatusCode::NO_CONTENT
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

async fn run(kind: &str, args: &Args) {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let file = match kind {
        "webhook" => {
            let secret = base64::engine::general_purpose::STANDARD
                .decode(SECRET_B64)
                .unwrap();
            let state = Hook {
                seen: seen.clone(),
                key: Arc::new(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &secret)),
            };
            let app = axum::Router::new()
                .route("/hook", axum::routing::post(hook))
                .with_state(state);
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            tokio::spawn(async move { axum::serve(listener, app).await });
            let mut file = format!("[[webhook]]\nname = \"bench\"\nurl = \"http://{addr}/hook\"\nsecret = \"whsec_{SECRET_B64}\"\n");
            if let Some(n) = args.concurrency {
                file.push_str(&format!("concurrency = {n}\n"));
            }
            file
        }
        "nats" => {
            let id = uuid::Uuid::new_v4().simple().to_string();
            let subject = format!("userstate.bench.{id}");
            let client = async_nats::connect(args.nats.as_str())
                .await
                .expect("NATS reachable");
            let mut sub = client.subscribe(subject.clone()).await.unwrap();
            let seen = seen.clone();
            tokio::spawn(async move {
                use futures_util::StreamExt;
                while let Some(message) = sub.next().await {
                    record(&seen, &message.payload);
                }
            });
            format!(
                "[[nats]]\nname = \"bench\"\nurl = \"{}\"\nsubject = \"{subject}\"\nstream = \"USERSTATE_BENCH_{id}\"\n",
                args.nats
            )
        }
        other => panic!("unknown target {other}"),
    };
    let targets = parse(&file).unwrap();
    let store: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
    let engine = Engine::new(store.clone());
    let metrics = Metrics::new();
    let delivery = Delivery::new(store.clone(), &metrics, DeliveryOptions::default());
    delivery.apply(targets).await;

    let total = args.rate * args.seconds;
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let cpu_at_start = userstate_bench::process_cpu_seconds();
    let ctx = Context::new(Principal::system(
        "bench",
        InstanceId::new("default").unwrap(),
    ));
    let workers: Vec<_> = (0..64)
        .map(|_| {
            let (engine, next, ctx, rate) = (engine.clone(), next.clone(), ctx.clone(), args.rate);
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= total {
                        return;
                    }
                    let due = start + Duration::from_secs_f64(i as f64 / rate as f64);
                    tokio::time::sleep_until(due.into()).await;
                    let id = format!("b{i}");
                    engine
                        .execute(
                            &ctx,
                            UserCommand::Add(AddUser {
                                user_id: UserId::new(&id).unwrap(),
                                username: id,
                                organization: OrgId::new("acme").unwrap(),
                                profile: None,
                                email: None,
                                initial: false,
                            }),
                        )
                        .await
                        .expect("add");
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }
    let load = start.elapsed();
    // Wait until every add arrived (or 60 s of no progress).
    loop {
        let (events, last) = {
            let s = seen.lock().unwrap();
            (s.events, s.last)
        };
        if events >= total || last.is_some_and(|l| l.elapsed() > Duration::from_secs(60)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let cpu = userstate_bench::process_cpu_seconds() - cpu_at_start;
    delivery.stop().await;
    let s = seen.lock().unwrap();
    let delivered_in = s.last.map_or(load, |l| l - start);
    let mut lags = s.lags_us.clone();
    lags.sort_unstable();
    println!(
        "{kind}: {total} commands in {:.1} s ({:.0}/s offered {}); {} events delivered in {:.1} s = {:.0} events/s; commit->delivered lag p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; process CPU {:.0} us per event (commands, delivery and receiver)",
        load.as_secs_f64(),
        total as f64 / load.as_secs_f64(),
        args.rate,
        s.events,
        delivered_in.as_secs_f64(),
        s.events as f64 / delivered_in.as_secs_f64(),
        percentile(&lags, 0.5),
        percentile(&lags, 0.99),
        percentile(&lags, 1.0),
        cpu / s.events.max(1) as f64 * 1e6,
    );
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    for kind in &args.targets {
        run(kind, &args).await;
    }
}
