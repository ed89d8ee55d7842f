//! Authentication (401, code 16) and authorisation across organisations (403, code 7) and
//! instances (404, code 5), in SPEC.md's error shape.

mod common;

use std::sync::Arc;

use common::*;
use reqwest::Method;
use serde_json::json;
use userstate::MemoryStore;

async fn server() -> TestServer {
    TestServer::start(Arc::new(MemoryStore::new())).await
}

#[tokio::test]
async fn missing_or_unknown_tokens_are_401_code_16() {
    let s = server().await;
    s.add(ADMIN, "u1", "acme").await;
    for path in ["/v2/users/u1", "/v3alpha/users/u1"] {
        let none = s.call(Method::GET, path, None, None).await;
        assert_error(&none, 401, 16, "AUTH-missing-token", "Errors.Token.Invalid");
        assert!(none.headers.get("www-authenticate").is_some());
        let unknown = s.get(path, "not-a-token").await;
        assert_error(
            &unknown,
            401,
            16,
            "AUTH-unknown-token",
            "Errors.Token.Invalid",
        );
    }
    let basic = TestServer::answer(
        s.client
            .post(s.url("/v2/users/u1/lock"))
            .basic_auth("admin", Some("x")),
    )
    .await;
    assert_error(
        &basic,
        401,
        16,
        "AUTH-missing-token",
        "Errors.Token.Invalid",
    );
    // Authentication comes first: a bad body without a token is still 401.
    let add = s
        .call(
            Method::POST,
            "/v2/users/human",
            None,
            Some(json!("garbage")),
        )
        .await;
    assert_eq!(add.status, 401);
    s.stop().await;
}

#[tokio::test]
async fn other_organisation_is_403_code_7() {
    let s = server().await;
    assert_eq!(s.add(ACME, "a1", "acme").await.status, 201);
    assert_eq!(s.add(GLOBEX, "g1", "globex").await.status, 201);
    let add_elsewhere = s.add(ACME, "a2", "globex").await;
    assert_error(
        &add_elsewhere,
        403,
        7,
        "AUTH-permission-denied",
        "Errors.PermissionDenied",
    );
    for path in [
        "/v2/users/g1/lock",
        "/v2/users/g1/deactivate",
        "/v3alpha/users/g1/lock",
        "/v3alpha/users/g1/unlock",
    ] {
        let r = s.post(path, ACME).await;
        assert_error(
            &r,
            403,
            7,
            "AUTH-permission-denied",
            "Errors.PermissionDenied",
        );
    }
    for path in ["/v2/users/g1", "/v3alpha/users/g1"] {
        let read = s.get(path, ACME).await;
        assert_error(
            &read,
            403,
            7,
            "AUTH-permission-denied",
            "Errors.PermissionDenied",
        );
        let remove = s.delete(path, ACME).await;
        assert_error(
            &remove,
            403,
            7,
            "AUTH-permission-denied",
            "Errors.PermissionDenied",
        );
    }
    // The globex user is untouched.
    let g1 = s.get("/v2/users/g1", GLOBEX).await;
    assert_eq!(g1.body["user"]["state"], "USER_STATE_ACTIVE");
    assert_eq!(g1.body["details"]["sequence"], "1");
    s.stop().await;
}

#[tokio::test]
async fn missing_permissions_are_403() {
    let s = server().await;
    s.add(ADMIN, "a1", "acme").await;
    let reader_lock = s.post("/v2/users/a1/lock", ACME_READER).await;
    assert_error(
        &reader_lock,
        403,
        7,
        "AUTH-permission-denied",
        "Errors.PermissionDenied",
    );
    let reader_get = s.get("/v2/users/a1", ACME_READER).await;
    assert_eq!(reader_get.status, 200, "{}", reader_get.text);
    let writer_lock = s.post("/v2/users/a1/lock", ACME_WRITER).await;
    assert_eq!(writer_lock.status, 200);
    let writer_delete = s.delete("/v2/users/a1", ACME_WRITER).await;
    assert_error(
        &writer_delete,
        403,
        7,
        "AUTH-permission-denied",
        "Errors.PermissionDenied",
    );
    let deleter = s.delete("/v2/users/a1", ACME).await;
    assert_eq!(deleter.status, 200);
    s.stop().await;
}

#[tokio::test]
async fn other_instance_is_404_code_5() {
    let s = server().await;
    s.add(ADMIN, "u1", "acme").await;
    for r in [
        s.get("/v2/users/u1", OTHER_INSTANCE).await,
        s.get("/v3alpha/users/u1", OTHER_INSTANCE).await,
        s.post("/v2/users/u1/lock", OTHER_INSTANCE).await,
        s.post("/v3alpha/users/u1/unlock", OTHER_INSTANCE).await,
        s.delete("/v2/users/u1", OTHER_INSTANCE).await,
    ] {
        assert_error(&r, 404, 5, "COMMAND-450yxuqrh1", "Errors.User.NotFound");
    }
    // The same id is free in the other instance.
    assert_eq!(s.add(OTHER_INSTANCE, "u1", "acme").await.status, 201);
    let mine = s.get("/v2/users/u1", ADMIN).await;
    assert_eq!(mine.body["details"]["sequence"], "1");
    s.stop().await;
}

#[tokio::test]
async fn a_principal_may_not_lock_itself() {
    let s = server().await;
    // The admin token's subject is "admin".
    s.add(ADMIN, "admin", "acme").await;
    let r = s.post("/v2/users/admin/lock", ADMIN).await;
    assert_error(
        &r,
        403,
        7,
        "AUTH-self-action",
        "Errors.User.NotAllowedOnSelf",
    );
    s.stop().await;
}
