//! Scale-out benchmark (not a test): commands/s with one, two and three `userstate serve`
//! processes on one PostgreSQL database. For each node count it creates a fresh database on the
//! server of `--url`, starts that many nodes of the release binary next to this example, runs
//! `--clients` callers for `--seconds` (each adds its own user, then locks and unlocks it,
//! sending request k of caller c to node (c + k) mod N), prints one line and drops the database.
//! Loopback only, bounded in time.
//!
//! ```sh
//! cargo build --release -p userstate-cli
//! cargo run --release -p userstate-cli --example scale_out_bench -- \
//!     --url postgres://postgres@127.0.0.1:5432/test --nodes 1,2,3 --clients 64 --seconds 10
//! ```

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::json;

const TOKEN: &str = "us_scale_out_bench_token";

#[derive(Parser)]
struct Args {
    /// PostgreSQL server; a fresh database is created per node count and dropped after.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/test")]
    url: String,
    /// Node counts to measure.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 2, 3])]
    nodes: Vec<usize>,
    /// Concurrent callers.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Seconds of load per node count.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// The `userstate` binary (default: next to this example's directory).
    #[arg(long)]
    bin: Option<PathBuf>,
}

struct Node(Child);

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_node(
    bin: &PathBuf,
    store: &str,
    tokens: &std::path::Path,
    data: PathBuf,
) -> (Node, String) {
    std::fs::create_dir_all(&data).expect("data dir");
    let mut child = Command::new(bin)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--store",
            store,
            "--tokens",
        ])
        .arg(tokens)
        .arg("--data")
        .arg(&data)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start userstate");
    let stdout = child.stdout.take().expect("stdout");
    let node = Node(child);
    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
        if let Some(rest) = line.strip_prefix("userstate listening on http://") {
            let addr = rest.split_whitespace().next().unwrap_or_default();
            return (node, format!("http://{addr}"));
        }
    }
    panic!("userstate exited without a listening line");
}

async fn admin(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect to PostgreSQL");
    tokio::spawn(connection);
    client
}

fn with_database(url: &str, db: &str) -> String {
    let after = url.find("://").map_or(0, |i| i + 3);
    let (base, query) = url.split_once('?').map_or((url, ""), |(b, q)| (b, q));
    let host = base[after..].find('/').map_or(base, |i| &base[..after + i]);
    match query {
        "" => format!("{host}/{db}"),
        q => format!("{host}/{db}?{q}"),
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

async fn run(bases: Vec<String>, clients: usize, seconds: u64) -> (usize, usize, Vec<Duration>) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..clients {
        let (http, bases) = (http.clone(), bases.clone());
        tasks.spawn(async move {
            let n = bases.len();
            let add = http
                .post(format!("{}/v2/users/human", bases[c % n]))
                .bearer_auth(TOKEN)
                .json(&json!({ "username": format!("bench{c}"), "organization": { "orgId": "acme" } }))
                .send()
                .await
                .expect("add");
            let body: serde_json::Value = add.json().await.expect("add body");
            let id = body["userId"].as_str().expect("userId").to_owned();
            let (mut ok, mut failed, mut lat) = (0usize, 0usize, Vec::new());
            let mut k = 0usize;
            while Instant::now() < deadline {
                let action = if k.is_multiple_of(2) { "lock" } else { "unlock" };
                let url = format!("{}/v2/users/{id}/{action}", bases[(c + k) % n]);
                let t = Instant::now();
                let answer = http.post(url).bearer_auth(TOKEN).json(&json!({})).send().await;
                match answer {
                    Ok(r) if r.status().is_success() => {
                        ok += 1;
                        lat.push(t.elapsed());
                        k += 1;
                    }
                    _ => failed += 1,
                }
            }
            (ok, failed, lat)
        });
    }
    let (mut ok, mut failed, mut lat) = (0, 0, Vec::new());
    while let Some(result) = tasks.join_next().await {
        let (o, f, l) = result.expect("caller");
        ok += o;
        failed += f;
        lat.extend(l);
    }
    lat.sort();
    (ok, failed, lat)
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let bin = args.bin.clone().unwrap_or_else(|| {
        let exe = std::env::current_exe().expect("current exe");
        exe.parent()
            .and_then(|p| p.parent())
            .expect("target dir")
            .join("userstate")
    });
    let dir = tempfile::tempdir().expect("temp dir");
    let tokens = dir.path().join("tokens.toml");
    std::fs::write(
        &tokens,
        format!(
            "[[token]]\nsha256 = \"{}\"\nsubject = \"bench\"\ninstance = \"default\"\n\
             instance_grants = [\"user.read\", \"user.write\", \"user.delete\"]\n",
            userstate_server::auth::hash_token(TOKEN)
        ),
    )
    .expect("tokens file");
    let server = admin(&args.url).await;
    for &count in &args.nodes {
        let db = format!(
            "us_bench_{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        server
            .batch_execute(&format!("CREATE DATABASE {db}"))
            .await
            .expect("create database");
        let store = with_database(&args.url, &db);
        let nodes: Vec<(Node, String)> = (0..count)
            .map(|i| start_node(&bin, &store, &tokens, dir.path().join(format!("{db}-{i}"))))
            .collect();
        let bases = nodes.iter().map(|(_, b)| b.clone()).collect();
        let (ok, failed, lat) = run(bases, args.clients, args.seconds).await;
        println!(
            "nodes={count} clients={} seconds={} commands/s={:.0} p50={:.1}ms p99={:.1}ms failed={failed}",
            args.clients,
            args.seconds,
            ok as f64 / args.seconds as f64,
            percentile(&lat, 0.50).as_secs_f64() * 1e3,
            percentile(&lat, 0.99).as_secs_f64() * 1e3,
        );
        drop(nodes);
        let drop_db = format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)");
        if let Err(e) = server.batch_execute(&drop_db).await {
            eprintln!("could not drop {db}: {e}");
        }
    }
}
