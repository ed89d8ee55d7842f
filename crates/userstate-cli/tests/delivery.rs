//! Delivery targets through the real `userstate serve` (issue 26): a real HTTP receiver (an
//! axum server in the test) that verifies every Standard Webhooks signature gets every event
//! once per position (a repeat only with the same id and body), in order per user — through a
//! receiver that fails for a while and through `kill -9` of the server mid-load (every
//! acknowledged command's event arrives); SIGHUP reloads the file (a bad one keeps the
//! targets); dead letters show in `/metrics` and `userstate delivery status`; two nodes on one
//! PostgreSQL store deliver a target from one node at a time, and the other takes over from
//! the checkpoint when that node is killed.

mod cluster;
mod receiver;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cluster::pg::Database;
use cluster::{write_tokens, Client, Node};
use receiver::{webhook_file, Receiver};
use serde_json::Value;

fn hangup(node: &Node) {
    let status = std::process::Command::new("kill")
        .args(["-HUP", &node.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// What the receiver got and the node says of its delivery (status, metrics, log): for a
/// failure's message.
async fn what_delivery_did(
    client: &Client,
    node: &Node,
    receiver: &Receiver,
    data: &std::path::Path,
    delivery_file: &str,
) -> String {
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_userstate"))
        .args([
            "delivery",
            "status",
            "--store",
            "file",
            "--delivery",
            delivery_file,
        ])
        .arg("--data")
        .arg(data)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_else(|e| e.to_string());
    let metrics = client.metrics(&node.base).await;
    let metrics: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("userstate_delivery"))
        .collect();
    let log = std::fs::read_to_string(&node.log).unwrap_or_default();
    format!(
        "the receiver accepted {}, the last {:?}; refused {}; bad signatures {}\n\
         delivery status: {status}\nmetrics:\n{}\nnode log:\n{log}",
        receiver.positions().len(),
        receiver.positions().last(),
        receiver.refused.load(Ordering::SeqCst),
        receiver.bad_signatures.load(Ordering::SeqCst),
        metrics.join("\n")
    )
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
    let mut node = Node::start_logging(
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
        "warn,userstate_server::delivery=debug",
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
    if let Err(missing) = receiver.wait_until(&wanted, Duration::from_secs(60)).await {
        let state = what_delivery_did(&client, &node, &receiver, &data, &file_arg).await;
        panic!("{missing}\n{state}");
    }
    let repeats = receiver.check();
    assert_eq!(receiver.senders(), ["n1"], "every delivery names its node");
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
    // Events of other users overtake a failing one (the window, ADR 0018): `four` can arrive
    // before the poisoned event's last attempt, so the dead letter is awaited.
    let dead_letter = "userstate_delivery_dead_letters_total{target=\"a\"} 1";
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let metrics = client.metrics(&node.base).await;
        if metrics.contains(dead_letter) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{metrics}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

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

/// Two nodes on one PostgreSQL store, under continuous load on both: every delivery names
/// the node that sent it, and over the whole run they come from one node only until it is
/// killed, then only from the other (never interleaved); every acknowledged event arrives, in
/// order per user.
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
    let names = ["n0", "n1"];
    let mut nodes: Vec<Node> = names
        .iter()
        .map(|name| {
            Node::start(
                &db.url,
                &tokens,
                &dir.path().join(name),
                // A lease long enough that a live node on a loaded machine keeps it.
                &[
                    "--delivery",
                    &file_arg,
                    "--delivery-lease",
                    "4s",
                    "--node-id",
                    name,
                ],
            )
        })
        .collect();
    let client = Client::new();
    for n in &nodes {
        client.wait_ready(&n.base, Duration::from_secs(20)).await;
    }
    // Load through both nodes at once, all along.
    let stop = Arc::new(AtomicBool::new(false));
    let acked: Arc<Mutex<Vec<u64>>> = Arc::default();
    let mut writers = Vec::new();
    for n in &nodes {
        let base = Arc::new(Mutex::new(n.base.clone()));
        writers.extend(load(&client, base, 2, stop.clone(), acked.clone()));
    }
    while receiver.positions().len() < 200 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Exactly one node holds the lease, observed a few times over a lease period.
    for _ in 0..4 {
        let held: Vec<bool> = leases(&client, &nodes).await;
        assert_eq!(held.iter().filter(|h| **h).count(), 1, "{held:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let senders = receiver.senders();
    assert_eq!(
        senders.len(),
        1,
        "one node delivers while both live: {senders:?}"
    );
    let holder = names.iter().position(|n| *n == senders[0]).unwrap();
    let other = 1 - holder;
    assert!(leased(&client.metrics(&nodes[holder].base).await));
    nodes[holder].kill();
    let before_kill = acked.lock().unwrap().len();
    // The dead node's writers fail from now on; the other's go on.
    while acked.lock().unwrap().len() < before_kill + 200 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    let wanted = acked.lock().unwrap().clone();
    receiver.wait_for(&wanted, Duration::from_secs(60)).await;
    assert_eq!(
        receiver.senders(),
        [names[holder], names[other]],
        "deliveries from the holder only, then only from the node that took over"
    );
    assert!(
        leased(&client.metrics(&nodes[other].base).await),
        "the other node took over"
    );
    let repeats = receiver.check();
    eprintln!(
        "{} acknowledged events delivered across a takeover; {repeats} repeats",
        wanted.len()
    );
}

async fn leases(client: &Client, nodes: &[Node]) -> Vec<bool> {
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
