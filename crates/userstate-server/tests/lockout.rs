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

async fn report(s: &TestServer, id: &str, outcome: &str, method: Option<&str>) -> Answer {
    let body = method.map(|m| json!({ "method": m }));
    s.call(
        Method::POST,
        &format!("/v2/users/{id}/authentication/{outcome}"),
        Some(ADMIN),
        body,
    )
    .await
}

async fn put_policy(s: &TestServer, query: &str, policy: serde_json::Value) -> Answer {
    s.call(
        Method::PUT,
        &format!("/v2/policies/lockout{query}"),
        Some(ADMIN),
        Some(policy),
    )
    .await
}

fn parse_time(t: &serde_json::Value) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339(t.as_str().expect("a time"))
        .expect("RFC 3339")
        .with_timezone(&chrono::Utc)
}

#[tokio::test]
async fn failures_over_rest_lock_the_user_until_the_policy_s_duration_and_it_unlocks_by_itself() {
    let store = Arc::new(MemoryStore::new());
    let s = TestServer::start(store.clone()).await;
    let set = put_policy(
        &s,
        "",
        json!({"maxPasswordAttempts": 2, "maxOtpAttempts": "3", "lockDuration": "2s",
               "failureResetAfter": "3600s"}),
    )
    .await;
    assert_eq!(set.status, 200, "{}", set.text);
    let (seq, date) = assert_details(&set.body["details"], true);
    assert_eq!(seq, 1);
    assert_eq!(set.body["details"]["resourceOwner"], "i1");
    assert_eq!(set.body["details"]["creationDate"], date);
    let got = s.get("/v2/policies/lockout", ADMIN).await;
    assert_eq!(got.status, 200, "{}", got.text);
    assert_eq!(
        got.body["policy"],
        json!({"maxPasswordAttempts": 2, "maxOtpAttempts": 3, "lockDuration": "2s",
               "failureResetAfter": "3600s"})
    );
    assert_eq!(got.body["source"], "instance");

    assert_eq!(s.add(ADMIN, "u1", "acme").await.status, 201);
    let first = report(&s, "u1", "failed", Some("password")).await;
    assert_eq!(first.status, 200, "{}", first.text);
    assert_eq!(first.body.as_object().unwrap().len(), 1, "{}", first.text);
    assert_details(&first.body["details"], true);
    let got = s.get("/v2/users/u1", ADMIN).await;
    assert_eq!(got.body["user"]["state"], "USER_STATE_ACTIVE");
    assert_eq!(got.body["user"]["failedAttempts"], 1);
    assert!(
        got.body["user"].get("lockedUntil").is_none(),
        "{}",
        got.text
    );

    let before = chrono::Utc::now();
    let second = report(&s, "u1", "failed", None).await;
    assert_eq!(second.status, 200, "{}", second.text);
    let got = s.get("/v2/users/u1", ADMIN).await;
    assert_eq!(
        got.body["user"]["state"], "USER_STATE_LOCKED",
        "{}",
        got.text
    );
    assert_eq!(got.body["user"]["failedAttempts"], 2);
    let until = parse_time(&got.body["user"]["lockedUntil"]);
    let ahead = until - before;
    assert!(
        ahead >= chrono::TimeDelta::milliseconds(1900) && ahead <= chrono::TimeDelta::seconds(3),
        "lockedUntil {until} is not 2 s after {before}"
    );
    wait_for_state(&s, "u1", "USER_STATE_ACTIVE").await;
    let got = s.get("/v2/users/u1", ADMIN).await;
    assert!(
        got.body["user"].get("lockedUntil").is_none(),
        "{}",
        got.text
    );
    assert_eq!(got.body["user"]["failedAttempts"], 0);
    assert_eq!(
        unlocks(&*store, "u1").await,
        [("system".to_owned(), json!({"reason": "lock-expired"}))]
    );
    s.stop().await;
}

#[tokio::test]
async fn an_organisation_s_policy_overrides_the_instance_s() {
    let s = TestServer::start(Arc::new(MemoryStore::new())).await;
    let instance = json!({"maxPasswordAttempts": 5, "lockDuration": "900s"});
    assert_eq!(put_policy(&s, "", instance).await.status, 200);
    let org = json!({"maxPasswordAttempts": 1, "lockDuration": "0s"});
    let set = put_policy(&s, "?orgId=acme", org).await;
    assert_eq!(set.status, 200, "{}", set.text);
    assert_eq!(set.body["details"]["resourceOwner"], "acme");
    let got = s.get("/v2/policies/lockout?orgId=acme", ADMIN).await;
    assert_eq!(got.body["source"], "organization", "{}", got.text);
    assert_eq!(got.body["policy"]["maxPasswordAttempts"], 1);
    let got = s.get("/v2/policies/lockout?orgId=globex", ADMIN).await;
    assert_eq!(got.body["source"], "instance", "{}", got.text);
    assert_eq!(got.body["policy"]["maxPasswordAttempts"], 5);

    assert_eq!(s.add(ADMIN, "a1", "acme").await.status, 201);
    assert_eq!(s.add(ADMIN, "g1", "globex").await.status, 201);
    assert_eq!(report(&s, "a1", "failed", None).await.status, 200);
    assert_eq!(report(&s, "g1", "failed", None).await.status, 200);
    let a1 = s.get("/v2/users/a1", ADMIN).await;
    assert_eq!(a1.body["user"]["state"], "USER_STATE_LOCKED");
    // A lock duration of 0: until unlocked by hand, so no lockedUntil.
    assert!(a1.body["user"].get("lockedUntil").is_none(), "{}", a1.text);
    let g1 = s.get("/v2/users/g1", ADMIN).await;
    assert_eq!(g1.body["user"]["state"], "USER_STATE_ACTIVE");
    assert_eq!(g1.body["user"]["failedAttempts"], 1);
    s.stop().await;
}

#[tokio::test]
async fn a_success_resets_the_count_and_otp_counts_apart_from_password() {
    let s = TestServer::start(Arc::new(MemoryStore::new())).await;
    let policy = json!({"maxPasswordAttempts": 2, "maxOtpAttempts": 2, "lockDuration": "60s"});
    assert_eq!(put_policy(&s, "", policy).await.status, 200);
    assert_eq!(s.add(ADMIN, "u1", "acme").await.status, 201);
    assert_eq!(
        report(&s, "u1", "failed", Some("password")).await.status,
        200
    );
    assert_eq!(report(&s, "u1", "succeeded", None).await.status, 200);
    assert_eq!(
        report(&s, "u1", "failed", Some("password")).await.status,
        200
    );
    let got = s.get("/v2/users/u1", ADMIN).await;
    assert_eq!(
        got.body["user"]["state"], "USER_STATE_ACTIVE",
        "{}",
        got.text
    );
    assert_eq!(got.body["user"]["failedAttempts"], 1);
    // One OTP failure next to one password failure locks nothing.
    assert_eq!(report(&s, "u1", "failed", Some("otp")).await.status, 200);
    let got = s.get("/v2/users/u1", ADMIN).await;
    assert_eq!(
        got.body["user"]["state"], "USER_STATE_ACTIVE",
        "{}",
        got.text
    );
    assert_eq!(got.body["user"]["failedAttempts"], 2);
    // An OTP success forgets the OTP failure only.
    let ok = s
        .call(
            Method::POST,
            "/v2/users/u1/authentication/succeeded",
            Some(ADMIN),
            Some(json!({"method": "otp"})),
        )
        .await;
    assert_eq!(ok.status, 200, "{}", ok.text);
    let got = s.get("/v2/users/u1", ADMIN).await;
    assert_eq!(got.body["user"]["failedAttempts"], 1);
    assert_eq!(report(&s, "u1", "failed", Some("otp")).await.status, 200);
    assert_eq!(report(&s, "u1", "failed", Some("otp")).await.status, 200);
    let got = s.get("/v2/users/u1", ADMIN).await;
    assert_eq!(
        got.body["user"]["state"], "USER_STATE_LOCKED",
        "{}",
        got.text
    );
    assert!(got.body["user"]["lockedUntil"].is_string(), "{}", got.text);
    s.stop().await;
}

#[tokio::test]
async fn bad_lockout_input_is_an_invalid_argument() {
    let s = TestServer::start(Arc::new(MemoryStore::new())).await;
    assert_eq!(s.add(ADMIN, "u1", "acme").await.status, 201);
    for method in [json!("sms"), json!(1)] {
        let answer = s
            .call(
                Method::POST,
                "/v2/users/u1/authentication/failed",
                Some(ADMIN),
                Some(json!({ "method": method })),
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
    for policy in [
        json!({"lockDuration": "soon"}),
        json!({"maxPasswordAttempts": -1}),
        json!({"maxOtpAttempts": "x"}),
        json!({"failureResetAfter": "99999999999999s"}),
        json!([]),
    ] {
        let answer = put_policy(&s, "", policy.clone()).await;
        assert_eq!(answer.status, 400, "{policy}: {}", answer.text);
        assert_eq!(answer.body["code"], 3, "{policy}: {}", answer.text);
    }
    let answer = s.get("/v2/policies/lockout?orgId=%20bad%20", ADMIN).await;
    assert_eq!(answer.status, 400, "{}", answer.text);
    let got = s.get("/v2/policies/lockout", ADMIN).await;
    assert_eq!(got.body["source"], "default", "{}", got.text);
    s.stop().await;
}
