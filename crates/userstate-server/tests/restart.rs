//! A server on the file store, stopped gracefully and started again on the same directory,
//! finds every user in the same state with the same details.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use reqwest::Method;
use serde_json::Value;
use userstate::{EventStore, FileStore, StoreError};

/// Opens the store, waiting (bounded) for the previous server's last handle to go: the
/// projection task is cancelled asynchronously after shutdown.
async fn open(dir: &Path) -> Arc<dyn EventStore> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match FileStore::open(dir) {
            Ok(store) => return Arc::new(store),
            Err(StoreError::Unavailable { .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("cannot open the file store: {e}"),
        }
    }
}

async fn read_all(s: &TestServer, ids: &[&str], min_position: u64) -> Vec<Value> {
    let mut out = Vec::new();
    for id in ids {
        let r = TestServer::answer(
            s.client
                .get(s.url(&format!("/v2/users/{id}")))
                .bearer_auth(ADMIN)
                .header("x-userstate-min-position", min_position.to_string()),
        )
        .await;
        out.push(serde_json::json!({"status": r.status.as_u16(), "body": r.body}));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_on_the_same_directory_keeps_every_user() {
    let dir = tempfile::tempdir().unwrap();
    let ids = [
        "active", "initial", "inactive", "locked", "removed", "relocked",
    ];
    let s = TestServer::start(open(dir.path()).await).await;
    for id in ids {
        assert_eq!(s.add(ADMIN, id, "acme").await.status, 201);
    }
    let initial = s
        .call(
            Method::POST,
            "/v2/users/human",
            Some(ADMIN),
            Some(serde_json::json!({"userId": "fresh", "username": "fresh",
                "organization": {"orgId": "globex"}, "initial": true})),
        )
        .await;
    assert_eq!(initial.status, 201);
    s.post("/v2/users/inactive/deactivate", ADMIN).await;
    s.post("/v2/users/locked/lock", ADMIN).await;
    s.post("/v2/users/relocked/lock", ADMIN).await;
    s.post("/v3alpha/users/relocked/unlock", ADMIN).await;
    s.post("/v3alpha/users/relocked/lock", ADMIN).await;
    let last = s.delete("/v2/users/removed", ADMIN).await;
    assert_eq!(last.status, 200);
    let head = last.position();
    let all: Vec<&str> = ids.iter().copied().chain(["fresh"]).collect();
    let before = read_all(&s, &all, head).await;
    s.stop().await;

    let s = TestServer::start(open(dir.path()).await).await;
    let after = read_all(&s, &all, head).await;
    assert_eq!(before, after);
    let states: Vec<Option<&str>> = after
        .iter()
        .map(|a| a["body"]["user"]["state"].as_str())
        .collect();
    assert_eq!(
        states,
        [
            Some("USER_STATE_ACTIVE"),
            Some("USER_STATE_ACTIVE"),
            Some("USER_STATE_INACTIVE"),
            Some("USER_STATE_LOCKED"),
            None,
            Some("USER_STATE_LOCKED"),
            Some("USER_STATE_INITIAL"),
        ]
    );
    assert_eq!(after[4]["status"], 404);
    // The restarted server keeps writing after the old log.
    let unlock = s.post("/v2/users/locked/unlock", ADMIN).await;
    assert_eq!(unlock.status, 200, "{}", unlock.text);
    assert!(unlock.position() > head);
    assert_eq!(unlock.body["details"]["sequence"], "3");
    s.stop().await;
}
