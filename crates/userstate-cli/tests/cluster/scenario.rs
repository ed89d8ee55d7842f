//! The scenarios every store runs on three nodes: round-robin commands with token reads on the
//! next node, racing unlocks, and read-your-writes under load.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use super::{seq_state, Client};

/// The state names on the wire.
pub const ACTIVE: &str = "USER_STATE_ACTIVE";
/// The state names on the wire.
pub const LOCKED: &str = "USER_STATE_LOCKED";

/// Adds a user on `node` and returns its id.
pub async fn add_user(client: &Client, node: &str, name: &str) -> String {
    let added = client.add(node, name).await.expect("add");
    assert_eq!(added.status, 201, "{}", added.body);
    added.body["userId"].as_str().expect("userId").to_owned()
}

/// Adds `count` users round-robin (node i) and reads each with the token on node i + 1.
pub async fn round_robin(client: &Client, bases: &[String], count: usize) {
    // Round-robin: add on node i, read with the token on node i+1.
    for i in 0..count {
        let (a, b) = (&bases[i % 3], &bases[(i + 1) % 3]);
        let added = client.add(a, &format!("rr{i}")).await.unwrap();
        assert_eq!(added.status, 201, "{}", added.body);
        let position = added.position.expect("x-userstate-position on a command");
        let id = added.body["userId"].as_str().unwrap();
        let read = client.get(b, id, Some(position)).await.unwrap();
        assert_eq!(read.status, 200, "read on another node: {}", read.body);
        assert_eq!(read.body["user"]["username"], format!("rr{i}"));
    }
}

/// `rounds` times: lock one user, then 64 concurrent unlocks spread over the nodes; exactly one
/// succeeds, the others answer 400 code 9 (FailedPrecondition).
pub async fn racing_unlocks(client: &Client, bases: &[String], rounds: usize) {
    let contended = add_user(client, &bases[0], "contended").await;
    for round in 0..rounds {
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
}

/// Background writers toggle their own users on every node while three checkers write on node
/// A, read with the token on node B (must see the write) and without it on node C (may be
/// older, never newer: a (sequence, state) the user had, at most the acknowledged sequence).
pub async fn read_your_writes_under_load(client: &Client, bases: &[String], iterations: usize) {
    let stop = Arc::new(AtomicBool::new(false));
    let load_writes = Arc::new(AtomicUsize::new(0));
    let mut loaders = Vec::new();
    for t in 0..4 {
        let id = add_user(client, &bases[t % 3], &format!("load{t}")).await;
        let (client, bases, stop, count) = (
            client.clone(),
            bases.to_vec(),
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
        let (client, bases) = (client.clone(), bases.to_vec());
        let id = add_user(&client, &bases[c], &format!("ryw{c}")).await;
        checkers.push(tokio::spawn(async move {
            let first = client.get(&bases[c], &id, None).await.unwrap();
            let (mut seq, mut state) = seq_state(&first);
            let mut history = HashMap::from([(seq, state.clone())]);
            let mut stale = 0usize;
            for i in 0..iterations {
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
                if plain.status == 404 {
                    // Older than the user's creation: allowed without the token.
                    stale += 1;
                    continue;
                }
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
        "{} token reads saw their write; {stale} plain reads were older; {} load writes",
        3 * iterations,
        load_writes.load(Ordering::Relaxed)
    );
}
