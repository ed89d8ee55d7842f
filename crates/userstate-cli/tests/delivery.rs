//! Delivery targets through the real `userstate serve` (issue 26): a real HTTP receiver (an
//! axum server in the test) that verifies every Standard Webhooks signature gets every event
//! once per position (a repeat only with the same id and body), in order per user — through a
//! receiver that fails for a while and through `kill -9` of the server mid-load (every
//! acknowledged command's event arrives); SIGHUP reloads the file (a bad one keeps the
//! targets); dead letters show in `/metrics` and `userstate delivery status`; two nodes on one
//! PostgreSQL store deliver a target from one node at a time, and the other takes over from
//! the checkpoint when that node is killed.

mod cluster;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use base64::Engine as _;
use cluster::pg::Database;
use cluster::{write_tokens, Client, Node};
use serde_json::Value;

const SECRET_B64: &str = "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// A webhook receiver: verifies signatures, fails while told to, records what it accepted.
#[derive(Clone, Default)]
struct Receiver {
    /// (webhook-id, body) in arrival order.
    accepted: Arc<Mutex<Vec<(u64, String)>>>,
    bad_signatures: Arc<AtomicUsize>,
    refused: Arc<AtomicUsize>,
    failing_until: Arc<Mutex<Option<Instant>>>,
    /// Bodies containing this are refused forever (to be dead-lettered).
    poison: Arc<Mutex<Option<String>>>,
}

impl Receiver {
    async fn start(&self) -> String {
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(hook))
            .with_state(self.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}/hook")
    }

    fn fail_for(&self, d: Duration) {
        *self.failing_until.lock().unwrap() = Some(Instant::now() + d);
    }

    fn positions(&self) -> Vec<u64> {
        self.accepted
            .lock()
            .unwrap()
            .iter()
            .map(|(p, _)| *p)
            .collect()
    }

    /// Waits until every position of `wanted` was accepted.
    async fn wait_for(&self, wanted: &[u64], within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let got: std::collections::HashSet<u64> = self.positions().into_iter().collect();
            let missing: Vec<u64> = wanted
                .iter()
                .filter(|p| !got.contains(p))
                .copied()
                .collect();
            if missing.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} positions never delivered, e.g. {:?}",
                missing.len(),
                &missing[..missing.len().min(10)]
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Every position once, or again only with the same body; each user's events in order
    /// of sequence as first received; every event's own position is its id.
    fn check(&self) -> usize {
        let accepted = self.accepted.lock().unwrap().clone();
        let mut bodies: HashMap<u64, String> = HashMap::new();
        let mut last_sequence: HashMap<String, u64> = HashMap::new();
        let mut repeats = 0;
        for (id, body) in accepted {
            if let Some(before) = bodies.get(&id) {
                assert_eq!(
                    before, &body,
                    "position {id} delivered twice with different bodies"
                );
                repeats += 1;
                continue;
            }
            let event: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(event["position"], id, "webhook-id is the position");
            let stream = event["stream"].as_str().unwrap().to_owned();
            assert!(stream.starts_with("user:"), "only user events: {stream}");
            let sequence = event["sequence"].as_u64().unwrap();
            let last = last_sequence.entry(stream.clone()).or_default();
            assert!(
                sequence > *last,
                "{stream}: sequence {sequence} after {last}"
            );
            *last = sequence;
            bodies.insert(id, body);
        }
        assert_eq!(self.bad_signatures.load(Ordering::SeqCst), 0);
        repeats
    }
}

/// Verifies the Standard Webhooks headers with the secret, as a receiver must.
fn verify(headers: &HeaderMap, body: &str) -> Option<u64> {
    let get = |n: &str| headers.get(n)?.to_str().ok();
    let (id, ts, sigs) = (
        get("webhook-id")?,
        get("webhook-timestamp")?,
        get("webhook-signature")?,
    );
    let ts: i64 = ts.parse().ok()?;
    if (chrono::Utc::now().timestamp() - ts).abs() > 300 {
        return None;
    }
    let secret = base64::engine::general_purpose::STANDARD
        .decode(SECRET_B64)
        .unwrap();
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &secret);
    let ok = sigs.split(' ').any(|sig| {
        sig.strip_prefix("v1,")
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            .is_some_and(|tag| {
                ring::hmac::verify(&key, format!("{id}.{ts}.{body}").as_bytes(), &tag).is_ok()
            })
    });
    ok.then(|| id.parse().ok()).flatten()
}

async fn hook(State(r): State<Receiver>, headers: HeaderMap, body: String) -> StatusCode {
    let Some(id) = verify(&headers, &body) else {
        r.bad_signatures.fetch_add(1, Ordering::SeqCst);
        return StatusCode::UNAUTHORIZED;
    };
    let failing = r
        .failing_until
        .lock()
        .unwrap()
        .is_some_and(|t| Instant::now() < t);
    let poisoned = r
        .poison
        .lock()
        .unwrap()
        .as_ref()
        .is_some_and(|p| body.contains(p.as_str()));
    if failing || poisoned {
        r.refused.fetch_add(1, Ordering::SeqCst);
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    r.accepted.lock().unwrap().push((id, body));
    StatusCode::NO_CONTENT
}

fn webhook_file(dir: &Path, name: &str, targets: &[(&str, &str, Option<u32>)]) -> PathBuf {
    let path = dir.join(name);
    let mut text = String::new();
    for (target, url, attempts) in targets {
        text.push_str(&format!(
            "[[webhook]]\nname = \"{target}\"\nurl = \"{url}\"\nsecret = \"whsec_{SECRET_B64}\"\n"
        ));
        if let Some(n) = attempts {
            text.push_str(&format!("max_attempts = {n}\n"));
        }
    }
    std::fs::write(&path, text).unwrap();
    path
}

fn hangup(node: &Node) {
    let status = std::process::Command::new("kill")
        .args(["-HUP", &node.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Adds users (and locks every other one) from `writers` tasks until `stop`; records the
/// positions of the acknowledged commands.
fn load(
    client: &Client,
    base: Arc<Mutex<String>>,
    writers: usize,
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<u64>>>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..writers)
        .map(|w| {
            let (client, base, stop, acked) =
                (client.clone(), base.clone(), stop.clone(), acked.clone());
            tokio::spawn(async move {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let node = base.lock().unwrap().clone();
                    match client.add(&node, &format!("w{w}n{n}")).await {
                        Ok(a) if a.status == 201 => {
                            acked.lock().unwrap().push(a.position.unwrap());
                            let id = a.body["userId"].as_str().unwrap().to_owned();
                            if n % 2 == 0 {
                                if let Ok(l) = client.act(&node, &id, "lock").await {
                                    if l.status == 200 {
                                        acked.lock().unwrap().push(l.position.unwrap());
                                    }
                                }
                            }
                        }
                        _ => tokio::time::sleep(Duration::from_millis(50)).await,
                    }
                }
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_acknowledged_event_arrives_through_failures_and_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::default();
    let url = receiver.start().await;
    receiver.fail_for(Duration::from_millis(1500));
    let file = webhook_file(dir.path(), "delivery.toml", &[("sink", &url, None)]);
    let tokens = write_tokens(dir.path());
    let data = dir.path().join("data");
    let file_arg = file.display().to_string();
    let mut node = Node::start(
        "file",
        &tokens,
        &data,
        &[
            "--delivery",
            &file_arg,
            "--node-id",
            "n1",
            "--delivery-lease",
            "2s",
        ],
    );
    let client = Client::new();
    client.wait_ready(&node.base, Duration::from_secs(20)).await;

    let base = Arc::new(Mutex::new(node.base.clone()));
    let stop = Arc::new(AtomicBool::new(false));
    let acked: Arc<Mutex<Vec<u64>>> = Arc::default();
    let writers = load(&client, base.clone(), 4, stop.clone(), acked.clone());
    while acked.lock().unwrap().len() < 150 || receiver.positions().len() < 100 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Killed while delivering: what it delivered after its last checkpoint comes again.
    node.kill();
    let before_kill = acked.lock().unwrap().len();
    node.restart();
    *base.lock().unwrap() = node.base.clone();
    client.wait_ready(&node.base, Duration::from_secs(20)).await;
    receiver.fail_for(Duration::from_millis(800));
    while acked.lock().unwrap().len() < before_kill + 100 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    let wanted = acked.lock().unwrap().clone();
    receiver.wait_for(&wanted, Duration::from_secs(60)).await;
    let repeats = receiver.check();
    assert!(
        receiver.refused.load(Ordering::SeqCst) > 0,
        "the receiver did fail a while"
    );
    eprintln!(
        "{} acknowledged events delivered; {} repeats (same id and body); {} refusals retried",
        wanted.len(),
        repeats,
        receiver.refused.load(Ordering::SeqCst)
    );
    let metrics = client.metrics(&node.base).await;
    assert!(
        metrics.contains("userstate_delivery_delivered_total{target=\"sink\"}"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sighup_reloads_targets_and_dead_letters_are_visible() {
    let dir = tempfile::tempdir().unwrap();
    let (first, second) = (Receiver::default(), Receiver::default());
    let (url1, url2) = (first.start().await, second.start().await);
    let file = webhook_file(dir.path(), "delivery.toml", &[("a", &url1, Some(2))]);
    let tokens = write_tokens(dir.path());
    let data = dir.path().join("data");
    let file_arg = file.display().to_string();
    let mut node = Node::start("file", &tokens, &data, &["--delivery", &file_arg]);
    let client = Client::new();
    client.wait_ready(&node.base, Duration::from_secs(20)).await;

    let added = client.add(&node.base, "one").await.unwrap();
    first
        .wait_for(&[added.position.unwrap()], Duration::from_secs(10))
        .await;

    // A bad file: logged, the running target keeps delivering.
    std::fs::write(&file, "[[webhook]]\nname = \"a\"\nurl = \"nope\"\n").unwrap();
    hangup(&node);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let two = client
        .add(&node.base, "two")
        .await
        .unwrap()
        .position
        .unwrap();
    first.wait_for(&[two], Duration::from_secs(10)).await;
    let log = std::fs::read_to_string(&node.log).unwrap_or_default();
    assert!(log.contains("delivery file not reloaded"), "{log}");

    // A poisoned event is dead-lettered after 2 attempts; the next ones still arrive.
    *first.poison.lock().unwrap() = Some("poisoned-three".to_owned());
    let next = client
        .add(&node.base, "poisoned-three")
        .await
        .unwrap()
        .position
        .unwrap();
    let four = client
        .add(&node.base, "four")
        .await
        .unwrap()
        .position
        .unwrap();
    first.wait_for(&[four], Duration::from_secs(15)).await;
    assert!(
        !first.positions().contains(&next),
        "the poisoned event was refused"
    );
    let metrics = client.metrics(&node.base).await;
    assert!(
        metrics.contains("userstate_delivery_dead_letters_total{target=\"a\"} 1"),
        "{metrics}"
    );

    // A good new file: target b starts (from its own checkpoint: the whole history).
    webhook_file(
        dir.path(),
        "delivery.toml",
        &[("a", &url1, Some(2)), ("b", &url2, None)],
    );
    hangup(&node);
    let five = client
        .add(&node.base, "five")
        .await
        .unwrap()
        .position
        .unwrap();
    second
        .wait_for(
            &[added.position.unwrap(), two, next, four, five],
            Duration::from_secs(15),
        )
        .await;
    first.wait_for(&[five], Duration::from_secs(15)).await;
    first.check();
    second.check();

    // `userstate delivery status` reads the checkpoints (the file store of this branch is
    // locked while serve runs: stop it first).
    node.kill();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_userstate"))
        .args(["delivery", "status", "--delivery", &file_arg, "--data"])
        .arg(&data)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("a\twebhook\tcheckpoint"),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("b\twebhook\tcheckpoint"), "{text}");
    assert_eq!(out.status.code(), Some(1), "dead letters exit 1: {text}");
    assert!(
        text.contains(&format!("dead letter: position {next}")),
        "{text}"
    );
}

/// The value of `userstate_delivery_leased{target="sink"}` in a metrics text.
fn leased(metrics: &str) -> bool {
    metrics
        .lines()
        .any(|l| l.starts_with("userstate_delivery_leased{target=\"sink\"} 1"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_on_postgres_deliver_from_one_at_a_time_and_take_over() {
    let Some(db) = Database::create("delivery").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::default();
    let url = receiver.start().await;
    let file = webhook_file(dir.path(), "delivery.toml", &[("sink", &url, None)]);
    let file_arg = file.display().to_string();
    let tokens = write_tokens(dir.path());
    let mut nodes: Vec<Node> = (0..2)
        .map(|i| {
            Node::start(
                &db.url,
                &tokens,
                &dir.path().join(format!("node{i}")),
                &["--delivery", &file_arg, "--delivery-lease", "2s"],
            )
        })
        .collect();
    let client = Client::new();
    for n in &nodes {
        client.wait_ready(&n.base, Duration::from_secs(20)).await;
    }
    let mut wanted = Vec::new();
    for i in 0..40 {
        let a = client
            .add(&nodes[i % 2].base, &format!("pg{i}"))
            .await
            .unwrap();
        assert_eq!(a.status, 201);
        wanted.push(a.position.unwrap());
    }
    receiver.wait_for(&wanted, Duration::from_secs(20)).await;
    // Exactly one node holds the lease, observed a few times over a lease period.
    let mut holder = None;
    for _ in 0..5 {
        let held: Vec<bool> = futures_join(&client, &nodes).await;
        assert_eq!(
            held.iter().filter(|h| **h).count(),
            1,
            "one holder: {held:?}"
        );
        let h = held.iter().position(|h| *h);
        assert!(
            holder.is_none() || holder == h,
            "the lease does not wander while alive"
        );
        holder = h;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let a = client.add(&nodes[0].base, "again").await.unwrap();
        if a.status == 201 {
            wanted.push(a.position.unwrap());
        }
    }
    let holder = holder.unwrap();
    let other = 1 - holder;
    nodes[holder].kill();
    for i in 0..40 {
        let a = client
            .add(&nodes[other].base, &format!("after{i}"))
            .await
            .unwrap();
        assert_eq!(a.status, 201);
        wanted.push(a.position.unwrap());
    }
    receiver.wait_for(&wanted, Duration::from_secs(30)).await;
    assert!(
        leased(&client.metrics(&nodes[other].base).await),
        "the other node took over"
    );
    let repeats = receiver.check();
    eprintln!(
        "{} events delivered across a takeover; {repeats} repeats",
        wanted.len()
    );
}

async fn futures_join(client: &Client, nodes: &[Node]) -> Vec<bool> {
    let mut held = Vec::new();
    for n in nodes {
        held.push(leased(&client.metrics(&n.base).await));
    }
    held
}

/// The NATS server of `USERSTATE_TEST_NATS_URL`: `None` (printed reason) to skip when unset
/// or unreachable, a panic under `CI=true`.
async fn nats() -> Option<(String, async_nats::Client)> {
    let in_ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    let url = match std::env::var("USERSTATE_TEST_NATS_URL") {
        Ok(url) if !url.is_empty() => url,
        _ if in_ci => panic!("USERSTATE_TEST_NATS_URL must be set when CI=true"),
        _ => {
            eprintln!("skipped: USERSTATE_TEST_NATS_URL is not set (e.g. nats://127.0.0.1:4222)");
            return None;
        }
    };
    match async_nats::connect(url.as_str()).await {
        Ok(client) => Some((url, client)),
        Err(e) if in_ci => panic!("NATS at {url} is unreachable under CI: {e}"),
        Err(e) => {
            eprintln!("skipped: NATS at {url} is unreachable: {e}");
            None
        }
    }
}

/// Every acknowledged command's event reaches JetStream through `kill -9` of the server, once
/// per position (JetStream drops a republish with the same `Nats-Msg-Id`), in order per user;
/// the stream capturing the subject is created by the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_acknowledged_event_reaches_jetstream_once_through_kill_9() {
    let Some((url, client)) = nats().await else {
        return;
    };
    let id = uuid::Uuid::new_v4().simple().to_string();
    let subject = format!("userstate.test.{id}");
    let stream_name = format!("USERSTATE_TEST_{id}");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("delivery.toml");
    std::fs::write(
        &file,
        format!(
            "[[nats]]\nname = \"bus\"\nurl = \"{url}\"\nsubject = \"{subject}\"\nstream = \"{stream_name}\"\n"
        ),
    )
    .unwrap();
    let file_arg = file.display().to_string();
    let tokens = write_tokens(dir.path());
    let data = dir.path().join("data");
    let mut node = Node::start(
        "file",
        &tokens,
        &data,
        &[
            "--delivery",
            &file_arg,
            "--node-id",
            "n1",
            "--delivery-lease",
            "2s",
        ],
    );
    let http = Client::new();
    http.wait_ready(&node.base, Duration::from_secs(20)).await;
    let base = Arc::new(Mutex::new(node.base.clone()));
    let stop = Arc::new(AtomicBool::new(false));
    let acked: Arc<Mutex<Vec<u64>>> = Arc::default();
    let writers = load(&http, base.clone(), 4, stop.clone(), acked.clone());
    while acked.lock().unwrap().len() < 150 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    node.kill();
    let before_kill = acked.lock().unwrap().len();
    node.restart();
    *base.lock().unwrap() = node.base.clone();
    http.wait_ready(&node.base, Duration::from_secs(20)).await;
    while acked.lock().unwrap().len() < before_kill + 100 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    let wanted: std::collections::HashSet<u64> = acked.lock().unwrap().iter().copied().collect();

    let js = async_nats::jetstream::new(client);
    let deadline = Instant::now() + Duration::from_secs(60);
    let (positions, repeats) = loop {
        let mut stream = js
            .get_stream(&stream_name)
            .await
            .expect("the server created the stream");
        let state = stream.info().await.unwrap().state.clone();
        let mut positions = Vec::new();
        let mut last_sequence: HashMap<String, u64> = HashMap::new();
        for seq in state.first_sequence..=state.last_sequence {
            let Ok(message) = stream.get_raw_message(seq).await else {
                continue;
            };
            let msg_id: u64 = message
                .headers
                .get(async_nats::header::NATS_MESSAGE_ID)
                .unwrap_or_else(|| panic!("Nats-Msg-Id in {:?}", message.headers))
                .as_str()
                .parse()
                .unwrap();
            let event: Value = serde_json::from_slice(&message.payload).unwrap();
            assert_eq!(event["position"], msg_id);
            let user = event["stream"].as_str().unwrap().to_owned();
            let sequence = event["sequence"].as_u64().unwrap();
            let last = last_sequence.entry(user.clone()).or_default();
            assert!(sequence > *last, "{user}: sequence {sequence} after {last}");
            *last = sequence;
            positions.push(msg_id);
        }
        let unique: std::collections::HashSet<u64> = positions.iter().copied().collect();
        if wanted.is_subset(&unique) {
            break (positions.len(), positions.len() - unique.len());
        }
        assert!(
            Instant::now() < deadline,
            "{} acknowledged events not in JetStream",
            wanted.difference(&unique).count()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(repeats, 0, "JetStream de-duplicated every republish");
    eprintln!(
        "{positions} messages in JetStream for {} acknowledged events",
        wanted.len()
    );
    let _ = js.delete_stream(&stream_name).await;
}
