//! `userstate token create|list|revoke` against real `userstate serve` processes (issue 25):
//! on the embedded file store through the running server's admin socket, and on one PostgreSQL
//! store shared by two nodes. A created token works at once; a revoked one is refused (401)
//! within 5 s without a restart; an expired one is refused; the secret is printed once and
//! appears in no file of the data directory and in no log.

mod cluster;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use cluster::pg::Database;
use cluster::{write_tokens, Client, Node};
use serde_json::{json, Value};

/// Runs `userstate ARGS`.
fn cli(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_userstate"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run userstate")
}

/// Runs `userstate token …` that must succeed; its stdout.
fn token_cli(args: &[&str]) -> String {
    let mut all = vec!["token"];
    all.extend(args);
    let out = cli(&all);
    assert!(
        out.status.success(),
        "userstate {all:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// `token create …`: the secret printed on stdout, and the token's id (from `--format json`).
fn create(store: &[&str], grants: &[&str]) -> (String, String) {
    let mut args = store.to_vec();
    args.extend(["create", "--format", "json"]);
    args.extend(grants);
    let line = token_cli(&args);
    let created: Value = serde_json::from_str(line.trim()).expect("one JSON line");
    let secret = created["token"].as_str().expect("token").to_owned();
    assert!(secret.starts_with("us_") && secret.len() == 67, "{secret}");
    assert!(created.get("sha256").is_none(), "{created}");
    (secret, created["id"].as_str().expect("id").to_owned())
}

/// `GET /v2/users/{id}` with `token`: the status and the body.
async fn get_user(node: &str, id: &str, token: &str) -> (u16, Value) {
    let response = reqwest::Client::new()
        .get(format!("{node}/v2/users/{id}"))
        .bearer_auth(token)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Waits (at most `within`) until `GET` with `token` answers `status` on `node`; how long it
/// took.
async fn until_status(
    node: &str,
    id: &str,
    token: &str,
    status: u16,
    within: Duration,
) -> Duration {
    let start = Instant::now();
    loop {
        let (got, body) = get_user(node, id, token).await;
        if got == status {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "{node}: still {got} {body} after {within:?} (waiting for {status})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut dirs = vec![dir.to_owned()];
    while let Some(d) = dirs.pop() {
        for entry in std::fs::read_dir(&d)
            .expect("read dir")
            .map_while(Result::ok)
        {
            let path = entry.path();
            let kind = entry.file_type().expect("file type");
            if kind.is_dir() {
                dirs.push(path);
            } else if kind.is_file() {
                files.push(path);
            }
        }
    }
    files
}

/// Asserts that no file under `dir` holds any of `secrets` (as bytes, anywhere in the file).
fn assert_nowhere_on_disk(dir: &Path, secrets: &[&str]) {
    let files = files_under(dir);
    assert!(!files.is_empty());
    for file in files {
        let bytes = std::fs::read(&file).expect("read file");
        for secret in secrets {
            let found = bytes.windows(secret.len()).any(|w| w == secret.as_bytes());
            assert!(!found, "a token's secret is in {}", file.display());
        }
    }
}

/// Adds user `id` in `acme` with the scale-out token.
async fn add_user(node: &str, id: &str) {
    let body = json!({ "userId": id, "username": id, "organization": { "orgId": "acme" } });
    let answer = Client::new()
        .json(node, reqwest::Method::POST, "/v2/users/human", &body)
        .await
        .expect("add");
    assert_eq!(answer.status, 201, "{:?}", answer.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_commands_work_beside_a_running_file_store_server() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = write_tokens(dir.path());
    let data = dir.path().join("data");
    let data_arg = data.display().to_string();
    let store = ["--data", data_arg.as_str()];
    // No store yet: refused, rather than creating one `serve` would then not bootstrap.
    let out = cli(&["token", "list", "--data", &data_arg]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("start `userstate serve"));
    assert!(!data.exists());
    let node = Node::start_logging("file", &tokens, &data, &[], "debug");
    add_user(&node.base, "u1").await;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let socket = data.join("admin.sock");
        let mode = std::fs::metadata(&socket).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "admin socket mode");
    }

    // Created while serving: accepted at once (the server refreshes after its own change).
    let (secret, id) = create(
        &store,
        &[
            "--subject",
            "ci",
            "--instance-grant",
            "user.read",
            "user.write",
        ],
    );
    let (status, body) = get_user(&node.base, "u1", &secret).await;
    assert_eq!(status, 200, "{body}");
    // The table form prints the secret alone on stdout.
    let mut args = store.to_vec();
    args.extend([
        "create",
        "--subject",
        "ops",
        "--org-grant",
        "acme=user.read",
    ]);
    let mut all = vec!["token"];
    all.extend(&args);
    let out = cli(&all);
    assert!(out.status.success());
    let printed = String::from_utf8(out.stdout).unwrap();
    let org_secret = printed.trim().to_owned();
    assert_eq!(printed.lines().count(), 1);
    let told = String::from_utf8(out.stderr).unwrap();
    assert!(
        told.contains("created token tok_") && told.contains("acme=user.read"),
        "{told}"
    );
    assert!(!told.contains(&org_secret), "{told}");
    assert_eq!(get_user(&node.base, "u1", &org_secret).await.0, 200);

    // Expiry: accepted until it ends, then 401.
    let (short, _) = create(
        &store,
        &[
            "--subject",
            "short",
            "--instance-grant",
            "user.read",
            "--expires-in",
            "3s",
        ],
    );
    assert_eq!(get_user(&node.base, "u1", &short).await.0, 200);
    until_status(&node.base, "u1", &short, 401, Duration::from_secs(8)).await;
    let (_, body) = get_user(&node.base, "u1", &short).await;
    assert_eq!(body["message"], "invalid bearer token: token expired");

    // List: subject, grants, expiry, id, status; never a secret or its hash.
    let mut args = store.to_vec();
    args.extend(["list", "--format", "json"]);
    let listed = token_cli(&args);
    let rows: Vec<Value> = listed
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 3, "{listed}");
    let ci = rows
        .iter()
        .find(|r| r["id"] == id.as_str())
        .expect("ci listed");
    assert_eq!(ci["subject"], "ci");
    assert_eq!(ci["instanceGrants"], json!(["user.read", "user.write"]));
    assert_eq!(ci["status"], "active");
    assert!(ci["expiresAt"].is_null());
    let expired = rows.iter().find(|r| r["subject"] == "short").unwrap();
    assert_eq!(expired["status"], "expired");
    let mut args = store.to_vec();
    args.push("list");
    let table = token_cli(&args);
    assert!(
        table.contains(&id) && table.contains("acme=user.read"),
        "{table}"
    );
    for secret in [&secret, &org_secret, &short] {
        assert!(!listed.contains(secret.as_str()) && !table.contains(secret.as_str()));
        let hash = userstate_server::auth::hash_token(secret);
        assert!(!listed.contains(&hash) && !table.contains(&hash));
    }

    // Revoked while serving: refused within 5 s (here at once: through the socket).
    let mut args = store.to_vec();
    args.extend(["revoke", id.as_str()]);
    let revoked = token_cli(&args);
    assert!(revoked.contains(&id), "{revoked}");
    let took = until_status(&node.base, "u1", &secret, 401, Duration::from_secs(5)).await;
    println!("file store: a revoked token was refused after {took:?}");
    let (_, body) = get_user(&node.base, "u1", &secret).await;
    assert_eq!(body["message"], "invalid bearer token: token revoked");
    // Revoking it again: FailedPrecondition (exit 3); an unknown target: NotFound (exit 4).
    let mut args = vec!["token"];
    args.extend(store);
    args.extend(["revoke", id.as_str()]);
    assert_eq!(cli(&args).status.code(), Some(3));
    let mut args = vec!["token"];
    args.extend(store);
    args.extend(["revoke", "nobody"]);
    let out = cli(&args);
    assert_eq!(out.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&out.stderr).contains("USERSTATE-token-not-found"));

    // Counted as refusals of a recognised token.
    let metrics = reqwest::get(format!("{}/metrics", node.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let invalid = metrics
        .lines()
        .find_map(|l| l.strip_prefix("userstate_auth_failures_total{reason=\"invalid\"} "))
        .and_then(|n| n.trim().parse::<f64>().ok());
    assert!(invalid.is_some_and(|n| n >= 2.0), "{metrics}");

    // The secrets are in no file of the data directory, its log included.
    let log = std::fs::read_to_string(&node.log).unwrap();
    assert!(log.contains("authentication failed"), "{log}");
    assert!(log.contains("subject=\"ci\""), "{log}");
    assert_nowhere_on_disk(&data, &[&secret, &org_secret, &short]);

    // Killed: the socket is left behind, and the commands open the store themselves.
    drop(node);
    assert!(data.join("admin.sock").exists());
    let mut args = store.to_vec();
    args.extend(["revoke", "ops"]);
    token_cli(&args);
    let mut args = store.to_vec();
    args.extend(["list", "--format", "json"]);
    let listed = token_cli(&args);
    assert_eq!(
        listed.matches("\"status\":\"revoked\"").count(),
        2,
        "{listed}"
    );
    // A restarted server knows the revocation from the store.
    let node = Node::start("file", &tokens, &data, &[]);
    assert_eq!(get_user(&node.base, "u1", &org_secret).await.0, 401);
    assert_eq!(get_user(&node.base, "u1", &secret).await.0, 401);
    // verify and the user list see one user: the token stream is not one.
    drop(node);
    let out = cli(&["verify", "--data", &data_arg, "--format", "json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let summary: Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(summary["kind"], "summary", "{text}");
    assert_eq!(summary["users"], 1, "{text}");
    assert_eq!(summary["clean"], true, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_on_one_postgres_honour_created_and_revoked_tokens() {
    let Some(db) = Database::create("tokens").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let tokens = write_tokens(dir.path());
    let nodes: Vec<Node> = (0..2)
        .map(|i| {
            let data = dir.path().join(format!("node{i}"));
            Node::start_logging(&db.url, &tokens, &data, &[], "debug")
        })
        .collect();
    add_user(&nodes[0].base, "u1").await;
    let store = ["--store", db.url.as_str()];
    // Created on the store directly (no server involved): both nodes accept it within 5 s.
    let (secret, id) = create(
        &store,
        &["--subject", "pg-ci", "--org-grant", "acme=user.read"],
    );
    for node in &nodes {
        let took = until_status(&node.base, "u1", &secret, 200, Duration::from_secs(5)).await;
        println!(
            "postgres: {} accepted a new token after {took:?}",
            node.base
        );
    }
    let mut args = store.to_vec();
    args.extend(["revoke", id.as_str()]);
    token_cli(&args);
    for node in &nodes {
        let took = until_status(&node.base, "u1", &secret, 401, Duration::from_secs(5)).await;
        println!(
            "postgres: {} refused a revoked token after {took:?}",
            node.base
        );
    }
    // Neither node logged the secret.
    for node in &nodes {
        let log = std::fs::read_to_string(&node.log).unwrap();
        assert!(log.contains("store token revoked"), "{log}");
        assert!(!log.contains(&secret));
    }
    assert_nowhere_on_disk(dir.path(), &[&secret]);
}
