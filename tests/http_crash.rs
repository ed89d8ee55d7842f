//! End to end through HTTP: a real `userstate-server` on the file store, in a child process,
//! takes lock/unlock commands from many clients and is killed with SIGKILL at random moments.
//! After each restart on the same data directory, every acknowledged command is visible: each
//! user is in its last acknowledged state, or one step further (a command that became durable
//! but whose answer the kill swallowed), never behind.
//!
//! The child is this test binary re-executed with `USERSTATE_HTTP_CHILD_DIR` set.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use userstate::{FileStore, InstanceId, Principal};
use userstate_server::auth::hash_token;
use userstate_server::{Server, ServerConfig, StaticTokens};

const CHILD_ENV: &str = "USERSTATE_HTTP_CHILD_DIR";
const TOKEN: &str = "scenario-token";
const CLIENTS: usize = 8;
const USERS_PER_CLIENT: usize = 4;
const CYCLES: usize = 6;

/// The child role: serve until killed. Without the variable this test only checks that the
/// server can be built, and returns.
#[test]
fn child_server() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async move {
        let store = Arc::new(FileStore::open(&dir).expect("open the file store"));
        let admin = Principal::system("scenario", InstanceId::new("default").unwrap());
        let auth = StaticTokens::new([(hash_token(TOKEN), admin)]).unwrap();
        let config = ServerConfig::new("127.0.0.1:0".parse().unwrap(), store, auth);
        let server = Server::bind(config).await.expect("bind");
        println!("LISTENING {}", server.local_addr());
        server.run(std::future::pending()).await.expect("serve");
    });
}

struct Node {
    child: Child,
    base: String,
}

fn start(dir: &std::path::Path) -> Node {
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", "child_server", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the server child");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(stdout).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("child printed its address")
            .expect("readable stdout");
        // libtest prints "test child_server ... " before the child's own output.
        if let Some((_, addr)) = line.split_once("LISTENING ") {
            break addr.trim().to_owned();
        }
    };
    // Keep draining stdout so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Node {
        child,
        base: format!("http://{addr}"),
    }
}

/// What a client last heard the server acknowledge for one user.
#[derive(Clone, Copy, Debug, Default)]
struct Acked {
    locked: bool,
    sequence: u64,
    position: u64,
}

async fn post(client: &reqwest::Client, url: String) -> Option<(u64, u64)> {
    let r = client
        .post(url)
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({}))
        .send()
        .await
        .ok()?;
    let position = r
        .headers()
        .get("x-userstate-position")?
        .to_str()
        .ok()?
        .parse()
        .ok()?;
    let body: serde_json::Value = r.json().await.ok()?;
    let sequence = body["details"]["sequence"].as_str()?.parse().ok()?;
    Some((sequence, position))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_command_survives_kill_9() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let ids: Vec<String> = (0..CLIENTS * USERS_PER_CLIENT)
        .map(|i| format!("s{i}"))
        .collect();
    let mut acked = vec![Acked::default(); ids.len()];

    let node = start(dir.path());
    for (i, id) in ids.iter().enumerate() {
        let r = client
            .post(format!("{}/v2/users/human", node.base))
            .bearer_auth(TOKEN)
            .json(
                &serde_json::json!({"userId": id, "username": format!("user-{id}"),
                "organization": {"orgId": "acme"}}),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        acked[i].sequence = 1;
    }
    let mut node = Some(node);
    let mut total_acked = 0u64;
    for cycle in 0..CYCLES {
        let running = node.take().unwrap_or_else(|| start(dir.path()));
        let base = running.base.clone();
        // Check everything acknowledged so far, then continue from what the server says.
        for (i, id) in ids.iter().enumerate() {
            let r = client
                .get(format!("{base}/v2/users/{id}"))
                .bearer_auth(TOKEN)
                .header("x-userstate-min-position", acked[i].position.to_string())
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "cycle {cycle}: user {id}");
            let body: serde_json::Value = r.json().await.unwrap();
            let sequence: u64 = body["details"]["sequence"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap();
            let locked = body["user"]["state"] == "USER_STATE_LOCKED";
            let a = acked[i];
            assert!(
                sequence == a.sequence || sequence == a.sequence + 1,
                "cycle {cycle}: user {id} at sequence {sequence}, acknowledged {}",
                a.sequence
            );
            if sequence == a.sequence {
                assert_eq!(locked, a.locked, "cycle {cycle}: user {id} lost its state");
            }
            acked[i] = Acked {
                locked,
                sequence,
                position: a.position,
            };
        }
        // Load from every client, then a kill at a random moment.
        let tasks: Vec<_> = (0..CLIENTS)
            .map(|c| {
                let (client, base) = (client.clone(), base.clone());
                let mine: Vec<(usize, String, Acked)> = (0..USERS_PER_CLIENT)
                    .map(|k| c * USERS_PER_CLIENT + k)
                    .map(|i| (i, ids[i].clone(), acked[i]))
                    .collect();
                tokio::spawn(async move {
                    let mut state = mine;
                    let mut n = 0;
                    'outer: loop {
                        for (_, id, a) in state.iter_mut() {
                            let verb = if a.locked { "unlock" } else { "lock" };
                            match post(&client, format!("{base}/v2/users/{id}/{verb}")).await {
                                Some((sequence, position)) => {
                                    *a = Acked {
                                        locked: !a.locked,
                                        sequence,
                                        position,
                                    };
                                    n += 1;
                                }
                                None => break 'outer,
                            }
                        }
                    }
                    (state, n)
                })
            })
            .collect();
        let delay = 150 + (rand_ms(cycle) % 500);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        let mut running = running;
        running.child.kill().expect("SIGKILL the server");
        running.child.wait().expect("reap the server");
        for t in tasks {
            let (state, n) = t.await.unwrap();
            total_acked += n;
            for (i, _, a) in state {
                acked[i] = a;
            }
        }
    }
    eprintln!("{total_acked} commands acknowledged over {CYCLES} kills");
    assert!(total_acked > 0, "the clients got answers before the kills");
}

/// A cheap varying delay without a random-number dependency.
fn rand_ms(seed: usize) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    nanos
        .wrapping_mul(2654435761)
        .wrapping_add(seed as u64 * 7919)
}
