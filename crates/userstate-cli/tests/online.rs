//! Issue 27: online operations on the embedded store (SPEC.md "Operator interface"). While a
//! real `userstate serve` holds the data directory and a client keeps adding and locking users
//! over HTTP, `export`, `verify`, `audit`, `user get`/`user list` and `backup` run and each
//! sees every change acknowledged before it started; a backup opens under a second `serve`
//! and answers for those users. And none of them changes a file of the live directory: bytes,
//! sizes, inodes, mtimes and ctimes of every file are the same after them (any write,
//! truncation, chmod, rename or new file would show).

mod bin;

use bin::userstate;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

struct Server {
    child: Child,
    base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
    }
}

/// Starts `userstate serve` on `data` and waits for its listening line.
fn serve(data: &Path) -> Server {
    let log = std::fs::File::create(data.with_extension("log")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_userstate"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(data)
        .env_remove("USERSTATE_STORE")
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) else {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("userstate serve exited early with {status}");
            }
            continue;
        };
        if let Some(rest) = line.strip_prefix("userstate listening on http://") {
            let addr = rest.split_whitespace().next().unwrap().to_owned();
            return Server {
                child,
                base: format!("http://{addr}"),
            };
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("no listening line from userstate serve");
}

/// Waits until `/readyz` says ready: the read model has caught up with the store as it was
/// at startup (user reads answer from it).
async fn ready(base: &str) {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = client
            .get(format!("{base}/readyz"))
            .send()
            .await
            .map(|r| r.status().as_u16())
            .ok();
        if status == Some(200) {
            return;
        }
        assert!(Instant::now() < deadline, "not ready: {status:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn ok(data: &Path, args: &[&str]) -> String {
    let out = userstate(data, args);
    assert!(
        out.status.success(),
        "userstate {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn token(data: &Path) -> String {
    std::fs::read_to_string(data.join("admin-token"))
        .unwrap()
        .trim()
        .to_owned()
}

/// What the client was told: users added, and the highest position acknowledged.
#[derive(Default)]
struct Acked {
    users: Vec<String>,
    position: u64,
}

/// Adds users (and locks every third) over HTTP until `stop`, recording what was acknowledged.
async fn write_until(base: String, token: String, acked: Arc<Mutex<Acked>>, stop: Arc<AtomicBool>) {
    let client = reqwest::Client::new();
    let mut i = 0u64;
    while !stop.load(Ordering::SeqCst) {
        let id = format!("u{i}");
        let resp = client
            .post(format!("{base}/v2/users/human"))
            .bearer_auth(&token)
            .json(&json!({"userId": id, "username": format!("user{i}"),
                "organization": {"orgId": "acme"}}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 201);
        let mut position = resp
            .headers()
            .get("x-userstate-position")
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
            .expect("position header");
        if i.is_multiple_of(3) {
            let resp = client
                .post(format!("{base}/v2/users/{id}/lock"))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status().as_u16(), 200);
            position = resp
                .headers()
                .get("x-userstate-position")
                .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
                .expect("position header");
        }
        let mut a = acked.lock().unwrap();
        a.users.push(id);
        a.position = a.position.max(position);
        i += 1;
    }
}

/// The positions and streams of an export file.
fn exported(path: &Path) -> (Vec<u64>, BTreeSet<String>) {
    let text = std::fs::read_to_string(path).unwrap();
    let mut positions = Vec::new();
    let mut streams = BTreeSet::new();
    for line in text.lines() {
        let event: Value = serde_json::from_str(line).unwrap();
        positions.push(event["position"].as_u64().unwrap());
        streams.insert(event["stream"].as_str().unwrap().to_owned());
    }
    (positions, streams)
}

/// Checks an export against what was acknowledged before it started.
fn holds(path: &Path, users: &[String], position: u64, what: &str) {
    let (positions, streams) = exported(path);
    assert!(
        positions.iter().copied().eq(1..=positions.len() as u64),
        "{what}: positions gapless from 1"
    );
    assert!(
        positions.len() as u64 >= position,
        "{what}: {} events, {position} acknowledged before it started",
        positions.len()
    );
    for user in users {
        assert!(
            streams.iter().any(|s| s.ends_with(&format!(":{user}"))),
            "{what}: user {user} missing"
        );
    }
}

async fn run(args: Vec<String>, data: PathBuf) -> Output {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        userstate(&data, &args)
    })
    .await
    .unwrap()
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| (*s).to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn export_verify_audit_reads_and_backup_run_beside_a_writing_server() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let server = serve(&data);
    let token = token(&data);
    let acked = Arc::new(Mutex::new(Acked::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn(write_until(
        server.base.clone(),
        token.clone(),
        acked.clone(),
        stop.clone(),
    ));
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked.lock().unwrap().users.len() < 30 {
        assert!(Instant::now() < deadline, "the writer does not get going");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    for round in 0..3 {
        let snapshot = |acked: &Mutex<Acked>| {
            let a = acked.lock().unwrap();
            (a.users.clone(), a.position)
        };
        // export
        let (users, position) = snapshot(&acked);
        let file = tmp.path().join(format!("export-{round}.jsonl"));
        let out = run(
            strings(&["export", "-o", file.to_str().unwrap()]),
            data.clone(),
        )
        .await;
        assert!(
            out.status.success(),
            "export: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        holds(&file, &users, position, &format!("export {round}"));

        // verify
        let (_, position) = snapshot(&acked);
        let out = run(strings(&["verify", "--format", "json"]), data.clone()).await;
        let report = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "verify: {report} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let summary: Value = serde_json::from_str(report.lines().last().unwrap()).unwrap();
        assert_eq!(summary["kind"], "summary", "{report}");
        assert!(summary["events"].as_u64().unwrap() >= position, "{report}");
        assert_eq!(summary["repairsPending"], 0, "{report}");

        // audit, user get, user list: the last user acknowledged
        let (users, _) = snapshot(&acked);
        let last = users.last().unwrap().clone();
        let out = run(
            strings(&["audit", "history", &last, "--json"]),
            data.clone(),
        )
        .await;
        assert!(
            out.status.success(),
            "audit: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!out.stdout.is_empty(), "audit history of {last} is empty");
        let out = run(strings(&["user", "get", &last, "--json"]), data.clone()).await;
        assert!(
            out.status.success(),
            "user get {last}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = run(
            strings(&["user", "list", "--json", "--id", &last]),
            data.clone(),
        )
        .await;
        assert!(
            out.status.success(),
            "user list: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let listed = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            listed.contains(&format!("\"{last}\"")),
            "user list misses {last}"
        );

        // backup, then a second server on it
        let (users, position) = snapshot(&acked);
        let copy = tmp.path().join(format!("backup-{round}"));
        let out = run(
            strings(&["backup", copy.to_str().unwrap(), "--format", "json"]),
            data.clone(),
        )
        .await;
        assert!(
            out.status.success(),
            "backup: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let report: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(report["events"].as_u64().unwrap() >= position, "{report}");
        let file = tmp.path().join(format!("backup-{round}.jsonl"));
        ok(&copy, &["export", "-o", file.to_str().unwrap()]);
        holds(&file, &users, position, &format!("backup {round}"));
        let restored = serve(&copy);
        ready(&restored.base).await;
        let client = reqwest::Client::new();
        for user in [users.first().unwrap(), users.last().unwrap()] {
            let resp = client
                .get(format!("{}/v2/users/{user}", restored.base))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap();
            assert_eq!(
                resp.status().as_u16(),
                200,
                "the backup's server knows {user}"
            );
        }
        drop(restored);
    }
    stop.store(true, Ordering::SeqCst);
    writer.await.unwrap();
    drop(server);
}

/// Every file under `dir`: path -> (inode, size, mtime, ctime, bytes).
type Files = BTreeMap<PathBuf, (u64, u64, (i64, i64), (i64, i64), Vec<u8>)>;

fn files(dir: &Path) -> Files {
    let mut all = Files::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            let m = std::fs::metadata(&path).unwrap();
            if m.is_dir() {
                todo.push(path.clone());
            }
            let bytes = if m.is_file() {
                std::fs::read(&path).unwrap()
            } else {
                Vec::new()
            };
            all.insert(
                path,
                (
                    m.ino(),
                    m.size(),
                    (m.mtime(), m.mtime_nsec()),
                    (m.ctime(), m.ctime_nsec()),
                    bytes,
                ),
            );
        }
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_read_only_commands_change_no_file_of_a_live_store() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let server = serve(&data);
    let token = token(&data);
    let acked = Arc::new(Mutex::new(Acked::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn(write_until(
        server.base.clone(),
        token,
        acked.clone(),
        stop.clone(),
    ));
    while acked.lock().unwrap().users.len() < 20 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::SeqCst);
    writer.await.unwrap();
    // The server is idle but running: it holds the lock and writes nothing.
    let before = files(&data);
    assert!(before.keys().any(|p| p.ends_with("events/userstate.lock")));
    let export = tmp.path().join("export.jsonl");
    let copy = tmp.path().join("copy");
    for args in [
        vec!["export", "-o", export.to_str().unwrap()],
        vec!["verify"],
        vec!["verify", "--format", "json"],
        vec!["audit", "history", "u3"],
        vec!["audit", "state", "u3", "--at-sequence", "1"],
        vec!["user", "get", "u1"],
        vec!["user", "list"],
        vec!["rebuild"],
        vec!["backup", copy.to_str().unwrap()],
    ] {
        let out = userstate(&data, &args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(
        files(&data),
        before,
        "a read-only command changed the live data directory"
    );
    drop(server);
}
