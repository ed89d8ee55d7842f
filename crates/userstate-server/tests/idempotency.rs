//! Idempotency keys through the real server (issue 20): a key is (instance, subject, key), every
//! use is authenticated and authorised, and a key reused for something else is 422 over HTTP
//! and InvalidArgument over gRPC. The first test failed on the code before: any principal
//! sending another's key got 200 and the user's details.

mod common;
mod grpc_support;

use std::sync::Arc;

use common::*;
use grpc_support::*;
use reqwest::Method;
use userstate::MemoryStore;
use userstate_server::grpc::pb::zitadel::user::v2::*;

async fn keyed(s: &TestServer, method: Method, path: &str, token: &str, key: &str) -> Answer {
    TestServer::answer(
        s.client
            .request(method, s.url(path))
            .bearer_auth(token)
            .header("idempotency-key", key),
    )
    .await
}

#[tokio::test]
async fn another_principals_key_answers_nothing_it_may_not_do() {
    let s = TestServer::start(Arc::new(MemoryStore::new())).await;
    s.add(ADMIN, "u1", "acme").await;
    let first = keyed(&s, Method::POST, "/v2/users/u1/lock", ADMIN, "k").await;
    assert_eq!(first.status, 200, "{}", first.text);
    // Another organisation, a read-only token: refused as if no key had been sent.
    for token in [GLOBEX, ACME_READER] {
        let r = keyed(&s, Method::POST, "/v2/users/u1/lock", token, "k").await;
        assert_error(
            &r,
            403,
            7,
            "AUTH-permission-denied",
            "Errors.PermissionDenied",
        );
    }
    // A DELETE with the key, by a writer without user.delete: refused, and nothing removed.
    let r = keyed(&s, Method::DELETE, "/v2/users/u1", ACME_WRITER, "k").await;
    assert_error(
        &r,
        403,
        7,
        "AUTH-permission-denied",
        "Errors.PermissionDenied",
    );
    // The same text under another subject is a key of its own: a fresh unlock, run.
    let unlocked = keyed(&s, Method::POST, "/v2/users/u1/unlock", ACME, "k").await;
    assert_eq!(unlocked.status, 200, "{}", unlocked.text);
    let got = s.get("/v2/users/u1", ADMIN).await;
    assert_eq!(
        got.body["user"]["state"], "USER_STATE_ACTIVE",
        "{}",
        got.text
    );
    assert_eq!(got.body["details"]["sequence"], "3", "{}", got.text);
    s.stop().await;
}

#[tokio::test]
async fn a_key_reused_for_another_request_is_422_and_changes_nothing() {
    let s = TestServer::start(Arc::new(MemoryStore::new())).await;
    s.add(ADMIN, "u1", "acme").await;
    s.add(ADMIN, "u2", "acme").await;
    let first = keyed(&s, Method::POST, "/v2/users/u1/lock", ADMIN, "k").await;
    assert_eq!(first.status, 200, "{}", first.text);
    for (method, path) in [
        (Method::POST, "/v2/users/u1/deactivate"),
        (Method::POST, "/v2/users/u2/lock"),
        (Method::DELETE, "/v2/users/u2"),
    ] {
        let r = keyed(&s, method, path, ADMIN, "k").await;
        assert_error(
            &r,
            422,
            3,
            "COMMAND-idempotency-key-reused",
            "Errors.IdempotencyKey.Reused",
        );
    }
    let again = keyed(&s, Method::POST, "/v2/users/u1/lock", ADMIN, "k").await;
    assert_eq!(again.status, 200, "{}", again.text);
    assert_eq!(again.body, first.body);
    let u2 = s.get("/v2/users/u2", ADMIN).await;
    assert_eq!(u2.body["user"]["state"], "USER_STATE_ACTIVE", "{}", u2.text);
    assert_eq!(u2.body["details"]["sequence"], "1");
    s.stop().await;
}

#[tokio::test]
async fn over_grpc_too() {
    let s = TestServer::start(Arc::new(MemoryStore::new())).await;
    s.add(ADMIN, "u1", "acme").await;
    let mut c = v2(s.addr).await;
    let lock = |token: &str, user: &str| {
        let mut r = as_(
            token,
            LockUserRequest {
                user_id: user.into(),
            },
        );
        r.metadata_mut()
            .insert("idempotency-key", "g".parse().unwrap());
        r
    };
    c.lock_user(lock(ADMIN, "u1")).await.unwrap();
    assert_status(
        c.lock_user(lock(GLOBEX, "u1")).await,
        7,
        "AUTH-permission-denied",
        "Errors.PermissionDenied",
    );
    s.add(ADMIN, "u2", "acme").await;
    assert_status(
        c.lock_user(lock(ADMIN, "u2")).await,
        3,
        "COMMAND-idempotency-key-reused",
        "Errors.IdempotencyKey.Reused",
    );
    s.stop().await;
}
