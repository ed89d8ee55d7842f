//! Crypto-shredding end to end (SPEC.md "Erasure and tamper evidence", ADR 0021), on the
//! binary with the file store: personal data is never in clear in any file of the data
//! directory; `POST /v2/users/{id}/erase` on a removed user destroys its key, after which its
//! personal data is nowhere — API answers, history, export, raw files — while its lifecycle
//! history stays and verifies; export/import with `--keys` moves the store with its keys.

mod cluster;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use cluster::raw::{contains_any, found_in_files};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_userstate");

/// The erased user's personal strings (and its username's canonical, lower-case form).
const ERASED: [&str; 5] = [
    "Zelda.Quixote-7F3",
    "zelda.quixote-7f3",
    "Gwendolyn-Q7x",
    "Fitzwilliam-K2p",
    "gwen.q7x@example.org",
];
/// The kept user's.
const KEPT: [&str; 4] = [
    "Bartholomew.R5t",
    "Ottoline-M4z",
    "Pemberton-W8c",
    "otto.m4z@example.org",
];

struct Running {
    child: Child,
    base: String,
    token: String,
}

fn start(data: &Path) -> Running {
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(data)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(data.with_extension("log")).unwrap())
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
    let mut addr = None;
    while addr.is_none() && Instant::now() < deadline {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
            if let Some(rest) = line.strip_prefix("userstate listening on http://") {
                addr = rest.split_whitespace().next().map(str::to_owned);
            }
        } else if let Some(status) = child.try_wait().unwrap() {
            let log = std::fs::read_to_string(data.with_extension("log")).unwrap_or_default();
            panic!("userstate exited early with {status}: {log}");
        }
    }
    let token = std::fs::read_to_string(data.join("admin-token"))
        .unwrap()
        .trim()
        .to_owned();
    Running {
        child,
        base: format!("http://{}", addr.expect("listening line")),
        token,
    }
}

fn stop(mut running: Running) {
    let status = Command::new("kill")
        .args(["-TERM", &running.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    while running.child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "no exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Running {
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = reqwest::Client::new()
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    async fn add(&self, id: &str, p: [&str; 4]) -> (u16, Value) {
        self.call(
            reqwest::Method::POST,
            "/v2/users/human",
            Some(json!({
                "userId": id, "username": p[0], "organization": {"orgId": "acme"},
                "profile": {"givenName": p[1], "familyName": p[2]},
                "email": {"email": p[3]},
            })),
        )
        .await
    }
}

fn cli(args: &[&str], data: &Path) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .arg("--data")
        .arg(data)
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasure_forgets_personal_data_everywhere_and_keeps_the_lifecycle() {
    use reqwest::Method;
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let s = start(&data);
    let erased = [ERASED[0], ERASED[2], ERASED[3], ERASED[4]];
    assert_eq!(s.add("u1", erased).await.0, 201);
    assert_eq!(s.add("u2", KEPT).await.0, 201);
    assert_eq!(s.call(Method::POST, "/v2/users/u2/lock", None).await.0, 200);

    // Before erasure: answered in clear, stored nowhere in clear.
    let (status, body) = s.call(Method::GET, "/v2/users/u1", None).await;
    assert_eq!(status, 200);
    assert_eq!(body["user"]["username"], ERASED[0]);
    assert_eq!(body["user"]["human"]["email"]["email"], ERASED[4]);
    let all: Vec<&str> = ERASED.iter().chain(KEPT.iter()).copied().collect();
    assert_eq!(
        found_in_files(&data, &all),
        vec![],
        "personal data in clear"
    );

    // Erase refuses a user that is not removed, and an unknown one, with SPEC's bodies.
    let (status, body) = s.call(Method::POST, "/v2/users/u1/erase", None).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["code"], 9);
    assert_eq!(body["details"][0]["id"], "USERSTATE-not-removed");
    let (status, body) = s.call(Method::POST, "/v2/users/nobody/erase", None).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["code"], 5);

    assert_eq!(s.call(Method::DELETE, "/v2/users/u1", None).await.0, 200);
    let (status, body) = s.call(Method::POST, "/v2/users/u1/erase", None).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["details"]["sequence"].is_string(), "{body}");
    // Again: idempotent.
    assert_eq!(
        s.call(Method::POST, "/v2/users/u1/erase", None).await.0,
        200
    );

    // After: the history keeps every lifecycle event, with the personal data erased.
    let (status, history) = s.call(Method::GET, "/v2/users/u1/history", None).await;
    assert_eq!(status, 200);
    let types: Vec<&str> = history["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "user.human.added",
            "user.removed",
            "user.erased",
            "user.erased"
        ]
    );
    let added = &history["events"][0]["payload"];
    assert_eq!(added["erased"], true, "{added}");
    assert_eq!(added["resourceOwner"], "acme");
    assert!(added.get("username").is_none() && added.get("profile").is_none());
    assert_eq!(history["state"]["state"], "USER_STATE_DELETED");
    assert_eq!(
        contains_any(&history.to_string(), &ERASED),
        Vec::<String>::new()
    );
    let (status, state) = s.call(Method::GET, "/v2/users/u1/state", None).await;
    assert_eq!(status, 200);
    assert_eq!(
        contains_any(&state.to_string(), &ERASED),
        Vec::<String>::new()
    );
    assert_eq!(s.call(Method::GET, "/v2/users/u1", None).await.0, 404);
    let (status, list) = s.call(Method::POST, "/v2/users", Some(json!({}))).await;
    assert_eq!(status, 200);
    assert_eq!(
        contains_any(&list.to_string(), &ERASED),
        Vec::<String>::new()
    );
    // The other user is untouched.
    let (_, other) = s.call(Method::GET, "/v2/users/u2", None).await;
    assert_eq!(other["user"]["username"], KEPT[0]);
    assert_eq!(other["user"]["human"]["profile"]["givenName"], KEPT[1]);
    assert_eq!(other["user"]["state"], "USER_STATE_LOCKED");

    // The erased user's name was freed with its removal: a new user may take it.
    assert_eq!(
        s.add("u3", ["zelda.QUIXOTE-7f3", "A", "B", "c@example.org"])
            .await
            .0,
        201
    );
    // A taken name stays taken, though stored only as a keyed hash.
    assert_eq!(s.add("u4", KEPT).await.0, 409);
    stop(s);

    // Raw storage: nothing of the erased user, nothing in clear of anyone; its key is gone.
    assert_eq!(found_in_files(&data, &all), vec![]);
    let keys = std::fs::read_to_string(data.join("keys")).unwrap();
    assert!(
        !keys.contains("default:u1 "),
        "the erased user's key is kept"
    );
    assert!(keys.contains("default:u2 "));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(data.join("keys"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    // verify passes after erasure.
    let out = cli(&["verify"], &data);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // Export writes the sealed events, `--keys` the keys; neither holds the erased data.
    let export = tmp.path().join("export.jsonl");
    let key_file = tmp.path().join("keys.json");
    let out = cli(
        &[
            "export",
            "-o",
            export.to_str().unwrap(),
            "--keys",
            key_file.to_str().unwrap(),
        ],
        &data,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let exported = std::fs::read_to_string(&export).unwrap();
    assert_eq!(contains_any(&exported, &all), Vec::<String>::new());
    assert!(exported.contains("user.erased"));
    let exported_keys = std::fs::read_to_string(&key_file).unwrap();
    assert!(!exported_keys.contains("default:u1\""));

    // A migration: import both into a new data directory; the kept user reads in clear, the
    // erased one stays erased.
    let moved = tmp.path().join("moved");
    let out = cli(
        &[
            "import",
            export.to_str().unwrap(),
            "--keys",
            key_file.to_str().unwrap(),
        ],
        &moved,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for file in ["tokens.toml", "admin-token"] {
        std::fs::copy(data.join(file), moved.join(file)).unwrap();
    }
    let s = start(&moved);
    let (status, other) = s.call(Method::GET, "/v2/users/u2", None).await;
    assert_eq!(status, 200, "{other}");
    assert_eq!(other["user"]["username"], KEPT[0]);
    assert_eq!(other["user"]["human"]["email"]["email"], KEPT[3]);
    let (_, history) = s.call(Method::GET, "/v2/users/u1/history", None).await;
    assert_eq!(history["events"][0]["payload"]["erased"], true);
    assert_eq!(
        contains_any(&history.to_string(), &ERASED),
        Vec::<String>::new()
    );
    // The username secret moved too: a taken name is still taken.
    assert_eq!(s.add("u5", KEPT).await.0, 409);
    stop(s);
}
