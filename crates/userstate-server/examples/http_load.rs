//! A bounded load run against an in-process server on 127.0.0.1: each client adds users and
//! runs lock, unlock and a GET on each. Prints throughput and latency percentiles per request.
//!
//! `cargo run --release -p userstate-server --example http_load -- [file|memory] [CLIENTS] [USERS_PER_CLIENT]`

use std::sync::Arc;
use std::time::{Duration, Instant};

use userstate::{EventStore, FileStore, InstanceId, MemoryStore, Principal};
use userstate_server::auth::hash_token;
use userstate_server::{Server, ServerConfig, StaticTokens};

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let kind = args.get(1).map_or("file", String::as_str).to_owned();
    let clients: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(16);
    let per_client: usize = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(200);
    let dir = tempfile::tempdir().expect("temp dir");
    let store: Arc<dyn EventStore> = match kind.as_str() {
        "memory" => Arc::new(MemoryStore::new()),
        _ => Arc::new(FileStore::open(dir.path()).expect("file store")),
    };
    let principal = Principal::system("load", InstanceId::new("default").expect("id"));
    let auth = StaticTokens::new([(hash_token("load-token"), principal)]).expect("auth");
    let config = ServerConfig::new("127.0.0.1:0".parse().expect("addr"), store, auth);
    let server = Server::bind(config).await.expect("bind");
    let base = format!("http://{}", server.local_addr());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));

    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..clients {
        let base = base.clone();
        tasks.spawn(async move {
            let client = reqwest::Client::new();
            let mut lat: Vec<(usize, Duration)> = Vec::with_capacity(per_client * 4);
            for u in 0..per_client {
                let id = format!("c{c}u{u}");
                let steps = [
                    (
                        0,
                        client
                            .post(format!("{base}/v2/users/human"))
                            .json(&serde_json::json!({
                        "userId": id, "username": id, "organization": {"orgId": "acme"}})),
                    ),
                    (1, client.post(format!("{base}/v2/users/{id}/lock"))),
                    (1, client.post(format!("{base}/v3alpha/users/{id}/unlock"))),
                    (2, client.get(format!("{base}/v2/users/{id}"))),
                ];
                for (kind, req) in steps {
                    let t = Instant::now();
                    let resp = req.bearer_auth("load-token").send().await.expect("request");
                    assert!(resp.status().is_success(), "{}", resp.status());
                    let _ = resp.bytes().await;
                    lat.push((kind, t.elapsed()));
                }
            }
            lat
        });
    }
    let mut all: Vec<Vec<Duration>> = vec![Vec::new(); 3];
    while let Some(r) = tasks.join_next().await {
        for (k, d) in r.expect("client task") {
            all[k].push(d);
        }
    }
    let elapsed = start.elapsed();
    let total: usize = all.iter().map(Vec::len).sum();
    println!(
        "store={kind} clients={clients} users={} requests={total} elapsed={:.2}s throughput={:.0} req/s",
        clients * per_client,
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64()
    );
    for (name, mut v) in ["add", "command", "get"].into_iter().zip(all) {
        v.sort();
        let p = |q: f64| v[((v.len() as f64 - 1.0) * q) as usize].as_secs_f64() * 1000.0;
        println!(
            "  {name:8} n={:6} p50={:.2}ms p90={:.2}ms p99={:.2}ms max={:.2}ms",
            v.len(),
            p(0.5),
            p(0.9),
            p(0.99),
            p(1.0)
        );
    }
    let _ = stop.send(());
    let _ = handle.await;
}
