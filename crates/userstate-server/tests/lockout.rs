//! Timed locks through the real server (SPEC.md "Lockout policy and timed locks"): `LockUser`
//! with a duration reads LOCKED until its end, then the server's own scheduler unlocks it
//! (reason `lock-expired`, creator `system`) without any request, once — also when the lock
//! was made before a restart.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use reqwest::Method;
use serde_json::json;
use userstate::{EventStore, InstanceId, MemoryStore, StreamId, UserId};

/// Polls the user until its state is `state`, for at most 10 s.
async fn wait_for_state(s: &TestServer, id: &str, state: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let got = s.get(&format!("/v2/users/{id}"), ADMIN).await;
        if got.body["user"]["state"] == state {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{id} never reached {state}: {}",
            got.text
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The user's unlock events, as (creator, payload).
async fn unlocks(store: &dyn EventStore, id: &str) -> Vec<(String, serde_json::Value)> {
    let stream = StreamId::user(&InstanceId::new("i1").unwrap(), &UserId::new(id).unwrap());
    let events = store.read_stream(&stream, 1).await.unwrap();
    events
        .into_iter()
        .filter(|e| e.event_type == "user.unlocked")
        .map(|e| (e.metadata.creator, e.payload))
        .collect()
}

async fn lock_for(s: &TestServer, id: &str, duration: &str) -> Answer {
    s.call(
        Method::POST,
        &format!("/v2/users/{id}/lock"),
        Some(ADMIN),
        Some(json!({"duration": duration})),
    )
    .await
}

#[tokio::test]
async fn a_timed_lock_is_unlocked_by_the_server_without_any_request() {
    let store = Arc::new(MemoryStore::new());
    let s = TestServer::start(store.clone()).await;
    assert_eq!(s.add(ADMIN, "u1", "acme").await.status, 201);
    let locked = lock_for(&s, "u1", "1s").await;
    assert_eq!(locked.status, 200, "{}", locked.text);
    let got = s.get("/v2/users/u1", ADMIN).await;
    assert_eq!(got.body["user"]["state"], "USER_STATE_LOCKED");
    wait_for_state(&s, "u1", "USER_STATE_ACTIVE").await;
    // A few more scheduler rounds: still one unlock.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        unlocks(&*store, "u1").await,
        [("system".to_owned(), json!({"reason": "lock-expired"}))]
    );
    s.stop().await;
}

#[tokio::test]
async fn a_lock_that_ended_while_no_server_ran_is_unlocked_after_the_restart() {
    let store = Arc::new(MemoryStore::new());
    let s = TestServer::start(store.clone()).await;
    assert_eq!(s.add(ADMIN, "u1", "acme").await.status, 201);
    assert_eq!(lock_for(&s, "u1", "0.5s").await.status, 200);
    // A manual unlock before the end: nothing is unlocked later.
    assert_eq!(s.add(ADMIN, "u2", "acme").await.status, 201);
    assert_eq!(lock_for(&s, "u2", "1s").await.status, 200);
    assert_eq!(s.post("/v2/users/u2/unlock", ADMIN).await.status, 200);
    s.stop().await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(unlocks(&*store, "u1").await.len(), 0, "no server ran");
    let s = TestServer::start(store.clone()).await;
    wait_for_state(&s, "u1", "USER_STATE_ACTIVE").await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(unlocks(&*store, "u1").await.len(), 1);
    assert_eq!(
        unlocks(&*store, "u2").await,
        [("admin".to_owned(), json!({}))]
    );
    s.stop().await;
}

#[tokio::test]
async fn a_bad_lock_duration_is_an_invalid_argument() {
    let s = TestServer::start(Arc::new(MemoryStore::new())).await;
    assert_eq!(s.add(ADMIN, "u1", "acme").await.status, 201);
    for bad in [
        json!("soon"),
        json!(5),
        json!("-1s"),
        json!("99999999999999s"),
    ] {
        let answer = s
            .call(
                Method::POST,
                "/v2/users/u1/lock",
                Some(ADMIN),
                Some(json!({"duration": bad})),
            )
            .await;
        assert_error(
            &answer,
            400,
            3,
            "USERSTATE-invalid-argument",
            "Errors.Invalid.Argument",
        );
    }
    let got = s.get("/v2/users/u1", ADMIN).await;
    assert_eq!(got.body["user"]["state"], "USER_STATE_ACTIVE");
    s.stop().await;
}
