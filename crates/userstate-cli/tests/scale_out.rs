//! Several `userstate serve` processes on one PostgreSQL database (issue 12): commands go
//! round-robin over three nodes; concurrent unlocks of one user over all nodes succeed exactly
//! once; a read on node B with the consistency token of a write on node A sees the write; a read
//! without it may be older, never newer; a node killed with SIGKILL mid-load loses no
//! acknowledged command and, restarted, catches up and becomes ready.

mod cluster;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cluster::pg::Database;
use cluster::{seq_state, write_tokens, Client, Node};

const ACTIVE: &str = "USER_STATE_ACTIVE";
const LOCKED: &str = "USER_STATE_LOCKED";

fn start_nodes(db: &Database, dir: &std::path::Path, extra: &[&str]) -> Vec<Node> {
    let tokens = write_tokens(dir);
    (0..3)
        .map(|i| Node::start(&db.url, &tokens, &dir.join(format!("node{i}")), extra))
        .collect()
}

/// Adds a user on `node` and returns its id with the (sequence, state) a token read sees.
async fn add_user(client: &Client, node: &str, name: &str) -> String {
    let added = client.add(node, name).await.expect("add");
    assert_eq!(added.status, 201, "{}", added.body);
    added.body["userId"].as_str().expect("userId").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_on_one_postgres_agree_and_read_their_writes() {
    let Some(db) = Database::create("scale").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let nodes = start_nodes(&db, dir.path(), &[]);
    let bases: Vec<String> = nodes.iter().map(|n| n.base.clone()).collect();
    let client = Client::new();
    for base in &bases {
        client.wait_ready(base, Duration::from_secs(20)).await;
    }

    // Round-robin: add on node i, read with the token on node i+1.
    for i in 0..30 {
        let (a, b) = (&bases[i % 3], &bases[(i + 1) % 3]);
        let added = client.add(a, &format!("rr{i}")).await.unwrap();
        assert_eq!(added.status, 201, "{}", added.body);
        let position = added.position.expect("x-userstate-position on a command");
        let id = added.body["userId"].as_str().unwrap();
        let read = client.get(b, id, Some(position)).await.unwrap();
        assert_eq!(read.status, 200, "read on another node: {}", read.body);
        assert_eq!(read.body["user"]["username"], format!("rr{i}"));
    }

    // 64 concurrent unlocks of one locked user over the three nodes: exactly one succeeds.
    let contended = add_user(&client, &bases[0], "contended").await;
    for round in 0..3 {
        let locked = client.act(&bases[round % 3], &contended, "lock").await;
        assert_eq!(locked.unwrap().status, 200);
        let tasks: Vec<_> = (0..64)
            .map(|i| {
                let (client, node, id) = (client.clone(), bases[i % 3].clone(), contended.clone());
                tokio::spawn(async move { client.act(&node, &id, "unlock").await })
            })
            .collect();
        let mut winners = Vec::new();
        for task in tasks {
            let answer = task.await.unwrap().expect("unlock answered");
            match answer.status {
                200 => winners.push(answer.position.expect("position")),
                400 => assert_eq!(answer.code(), Some(9), "{}", answer.body),
                other => panic!("unlock answered {other}: {}", answer.body),
            }
        }
        assert_eq!(
            winners.len(),
            1,
            "round {round}: exactly one unlock succeeds"
        );
        let read = client.get(&bases[2], &contended, Some(winners[0])).await;
        assert_eq!(seq_state(&read.unwrap()).1, ACTIVE);
    }

    // Read-your-writes under load: background writers toggle their own users on every node
    // while checkers write on node A, read with the token on node B and without on node C.
    let stop = Arc::new(AtomicBool::new(false));
    let load_writes = Arc::new(AtomicUsize::new(0));
    let mut loaders = Vec::new();
    for t in 0..4 {
        let id = add_user(&client, &bases[t % 3], &format!("load{t}")).await;
        let (client, bases, stop, count) = (
            client.clone(),
            bases.clone(),
            stop.clone(),
            load_writes.clone(),
        );
        loaders.push(tokio::spawn(async move {
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let action = if n.is_multiple_of(2) {
                    "lock"
                } else {
                    "unlock"
                };
                let answer = client.act(&bases[(n + t) % 3], &id, action).await.unwrap();
                assert_eq!(answer.status, 200, "load {action}: {}", answer.body);
                count.fetch_add(1, Ordering::Relaxed);
                n += 1;
            }
        }));
    }
    let mut checkers = Vec::new();
    for c in 0..3 {
        let (client, bases) = (client.clone(), bases.clone());
        let id = add_user(&client, &bases[c], &format!("ryw{c}")).await;
        checkers.push(tokio::spawn(async move {
            let first = client.get(&bases[c], &id, None).await.unwrap();
            let (mut seq, mut state) = seq_state(&first);
            let mut history = HashMap::from([(seq, state.clone())]);
            let mut stale = 0usize;
            for i in 0..80 {
                let (a, b, other) = (
                    &bases[(i + c) % 3],
                    &bases[(i + c + 1) % 3],
                    &bases[(i + c + 2) % 3],
                );
                let action = if state == ACTIVE { "lock" } else { "unlock" };
                let written = client.act(a, &id, action).await.unwrap();
                assert_eq!(written.status, 200, "{action}: {}", written.body);
                let position = written.position.expect("position");
                state = if state == ACTIVE { LOCKED } else { ACTIVE }.to_owned();
                seq = written.body["details"]["sequence"]
                    .as_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                history.insert(seq, state.clone());
                let read = client.get(b, &id, Some(position)).await.unwrap();
                assert_eq!(read.status, 200, "token read on node B: {}", read.body);
                assert_eq!(
                    seq_state(&read),
                    (seq, state.clone()),
                    "token read sees the write"
                );
                let plain = client.get(other, &id, None).await.unwrap();
                assert_eq!(plain.status, 200, "{}", plain.body);
                let (seen_seq, seen_state) = seq_state(&plain);
                assert!(seen_seq <= seq, "a read is never newer than the store");
                assert_eq!(
                    history.get(&seen_seq),
                    Some(&seen_state),
                    "a state the user had"
                );
                stale += usize::from(seen_seq < seq);
            }
            stale
        }));
    }
    let mut stale = 0;
    for checker in checkers {
        stale += checker.await.unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    for loader in loaders {
        loader.await.unwrap();
    }
    eprintln!(
        "240 token reads saw their write; {stale} plain reads were older; {} load writes",
        load_writes.load(Ordering::Relaxed)
    );

    for base in &bases {
        let text = client.metrics(base).await;
        assert!(text.contains("userstate_projection_lag_events"), "{text}");
        assert!(text.contains("userstate_projection_lag_seconds"), "{text}");
        client.wait_ready(base, Duration::from_secs(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_node_loses_no_acknowledged_command_and_catches_up() {
    let Some(db) = Database::create("kill").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = start_nodes(&db, dir.path(), &["--max-lag-events", "50"]);
    let bases: Vec<String> = nodes.iter().map(|n| n.base.clone()).collect();
    let client = Client::new();
    for base in &bases {
        client.wait_ready(base, Duration::from_secs(20)).await;
    }

    let acked: Arc<Mutex<Vec<(String, u64, usize)>>> = Arc::default();
    let failed = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..6)
        .map(|t| {
            let (client, bases, acked, failed, stop) = (
                client.clone(),
                bases.clone(),
                acked.clone(),
                failed.clone(),
                stop.clone(),
            );
            tokio::spawn(async move {
                let mut n = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    let node = (n + t) % 3;
                    match client.add(&bases[node], &format!("k{t}x{n}")).await {
                        Ok(a) if a.status == 201 => {
                            let id = a.body["userId"].as_str().unwrap().to_owned();
                            acked.lock().unwrap().push((id, a.position.unwrap(), node));
                        }
                        Ok(a) => panic!("add answered {}: {}", a.status, a.body),
                        // The killed node: refused or cut off; not acknowledged.
                        Err(_) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                    }
                    n += 1;
                }
            })
        })
        .collect();
    let count = || acked.lock().unwrap().len();
    let wait_for = |target: usize| async move {
        let deadline = Instant::now() + Duration::from_secs(20);
        while count() < target {
            assert!(Instant::now() < deadline, "load stalled at {}", count());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    wait_for(60).await;
    nodes[2].kill();
    let at_kill = count();
    // The two others keep serving.
    wait_for(at_kill + 120).await;
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();

    nodes[2].restart();
    let restarted = nodes[2].base.clone();
    client.wait_ready(&restarted, Duration::from_secs(30)).await;
    let newest = acked.iter().map(|(_, p, _)| *p).max().unwrap();
    for (i, (id, _, _)) in acked.iter().enumerate() {
        let on = if i % 2 == 0 {
            &restarted
        } else {
            &bases[i % 2]
        };
        let read = client.get(on, id, Some(newest)).await.unwrap();
        assert_eq!(
            read.status, 200,
            "acknowledged user {id} on {on}: {}",
            read.body
        );
    }
    eprintln!(
        "{} adds acknowledged ({} after the kill), {} refused by the dead node",
        acked.len(),
        acked.len() - at_kill,
        failed.load(Ordering::Relaxed)
    );
}
