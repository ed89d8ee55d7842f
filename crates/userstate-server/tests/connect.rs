//! Connect unary on the server's one port (issue 21), through plain HTTP that follows the
//! Connect protocol (what ZITADEL's official SDKs send): JSON and binary bodies, success and each
//! error kind with its Connect code, HTTP status and `zitadel.v1.ErrorDetail`.

mod common;

use std::sync::Arc;

use base64::Engine as _;
use prost::Message;
use serde_json::{json, Value};
use userstate::MemoryStore;
use userstate_server::grpc::pb::zitadel::user::v2::{LockUserRequest, LockUserResponse};
use userstate_server::grpc::pb::zitadel::v1::ErrorDetail;

use common::*;

const V2: &str = "/zitadel.user.v2.UserService";

struct Answer {
    status: u16,
    content_type: String,
    body: Value,
    position: Option<String>,
}

async fn call(s: &TestServer, method: &str, token: Option<&str>, body: &str) -> Answer {
    call_service(s, V2, method, token, body).await
}

async fn call_service(
    s: &TestServer,
    service: &str,
    method: &str,
    token: Option<&str>,
    body: &str,
) -> Answer {
    let mut request = s
        .client
        .post(s.url(&format!("{service}/{method}")))
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    let position = response
        .headers()
        .get("x-userstate-position")
        .map(|v| v.to_str().unwrap().to_owned());
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Answer {
        status,
        content_type,
        body,
        position,
    }
}

/// A Connect error: status, code name, and the one `zitadel.v1.ErrorDetail` decoded.
fn assert_connect_error(a: &Answer, status: u16, code: &str, id: &str) {
    assert_eq!(a.status, status, "{}", a.body);
    assert_eq!(a.content_type, "application/json");
    assert_eq!(a.body["code"], code, "{}", a.body);
    let detail = &a.body["details"][0];
    assert_eq!(detail["type"], "zitadel.v1.ErrorDetail", "{}", a.body);
    let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(detail["value"].as_str().unwrap().trim_end_matches('='))
        .unwrap();
    let detail = ErrorDetail::decode(bytes.as_slice()).unwrap();
    assert_eq!(detail.id, id, "{}", a.body);
}

fn add_body(id: &str, username: &str) -> String {
    json!({"userId": id, "username": username, "organization": {"orgId": "acme"},
           "profile": {"givenName": "Alice", "familyName": "Doe"},
           "email": {"email": "alice@example.com", "isVerified": true}})
    .to_string()
}

#[tokio::test]
async fn json_calls_answer_zitadels_messages() {
    let s = TestServer::start(Arc::new(MemoryStore::new())).await;
    let added = call(&s, "AddHumanUser", Some(ADMIN), &add_body("u1", "alice")).await;
    assert_eq!(added.status, 200, "{}", added.body);
    assert_eq!(added.content_type, "application/json");
    assert_eq!(added.body["userId"], "u1");
    assert_eq!(added.body["details"]["sequence"], "1");
    assert_eq!(added.body["details"]["resourceOwner"], "acme");
    assert!(added.position.is_some(), "the position header comes along");
    for (method, sequence) in [
        ("DeactivateUser", "2"),
        ("ReactivateUser", "3"),
        ("LockUser", "4"),
    ] {
        let a = call(&s, method, Some(ADMIN), r#"{"userId": "u1"}"#).await;
        assert_eq!(a.status, 200, "{method}: {}", a.body);
        assert_eq!(a.body["details"]["sequence"], sequence, "{method}");
    }
    // Without Connect-Protocol-Version, with proto field names: both accepted.
    let unlocked = call(&s, "UnlockUser", Some(ADMIN), r#"{"user_id": "u1"}"#).await;
    assert_eq!(unlocked.status, 200, "{}", unlocked.body);
    let got = call(&s, "GetUserByID", Some(ADMIN), r#"{"userId": "u1"}"#).await;
    assert_eq!(got.status, 200, "{}", got.body);
    assert_eq!(
        got.body["user"]["state"], "USER_STATE_ACTIVE",
        "{}",
        got.body
    );
    assert_eq!(got.body["user"]["username"], "alice");
    assert_eq!(got.body["details"]["sequence"], "5");
    let removed = call(&s, "DeleteUser", Some(ADMIN), r#"{"userId": "u1"}"#).await;
    assert_eq!(removed.status, 200, "{}", removed.body);
    s.stop().await;
}

/// Seed 003 (`POST /v3alpha/users/{userId}/unlock`) and seed 000 (`…/reactivate`) by their RPC
/// paths, as a Connect client of ZITADEL's `zitadel.user.v3alpha.UserService` calls them.
#[tokio::test]
async fn the_seeds_by_their_rpc_paths() {
    let s = TestServer::start(Arc::new(MemoryStore::new())).await;
    call(&s, "AddHumanUser", Some(ADMIN), &add_body("u1", "alice")).await;
    let v3 = "/zitadel.user.v3alpha.UserService";
    let locked = call_service(&s, v3, "LockUser", Some(ADMIN), r#"{"userId": "u1"}"#).await;
    assert_eq!(locked.status, 200, "{}", locked.body);
    let unlocked = call_service(&s, v3, "UnlockUser", Some(ADMIN), r#"{"userId": "u1"}"#).await;
    assert_eq!(unlocked.status, 200, "{}", unlocked.body);
    let details = &unlocked.body["details"];
    assert_eq!(details["sequence"], "3", "{}", unlocked.body);
    assert_eq!(details["resourceOwner"], "acme");
    assert!(
        details.get("creationDate").is_none(),
        "v2beta Details has none"
    );
    let again = call_service(&s, v3, "UnlockUser", Some(ADMIN), r#"{"userId": "u1"}"#).await;
    assert_connect_error(&again, 400, "failed_precondition", "COMMAND-olb9vb0oca");
    call(&s, "DeactivateUser", Some(ADMIN), r#"{"userId": "u1"}"#).await;
    let reactivated = call(&s, "ReactivateUser", Some(ADMIN), r#"{"userId": "u1"}"#).await;
    assert_eq!(reactivated.status, 200, "{}", reactivated.body);
    assert_eq!(reactivated.body["details"]["sequence"], "5");
    assert!(reactivated.body["details"]["creationDate"].is_string());
    s.stop().await;
}

#[tokio::test]
async fn every_error_kind_has_connects_code_status_and_detail() {
    let s = TestServer::start(Arc::new(MemoryStore::new())).await;
    call(&s, "AddHumanUser", Some(ADMIN), &add_body("u1", "alice")).await;
    let unlock = |token| call(&s, "UnlockUser", token, r#"{"userId": "u1"}"#);
    assert_connect_error(
        &unlock(Some(ADMIN)).await,
        400,
        "failed_precondition",
        "COMMAND-olb9vb0oca",
    );
    assert_connect_error(
        &unlock(None).await,
        401,
        "unauthenticated",
        "AUTH-missing-token",
    );
    assert_connect_error(
        &unlock(Some("nope")).await,
        401,
        "unauthenticated",
        "AUTH-unknown-token",
    );
    assert_connect_error(
        &unlock(Some(GLOBEX)).await,
        403,
        "permission_denied",
        "AUTH-permission-denied",
    );
    let missing = call(&s, "LockUser", Some(ADMIN), r#"{"userId": "nobody"}"#).await;
    assert_connect_error(&missing, 404, "not_found", "COMMAND-450yxuqrh1");
    let again = call(&s, "AddHumanUser", Some(ADMIN), &add_body("u1", "other")).await;
    assert_connect_error(&again, 409, "already_exists", "COMMAND-7yiox1isql");
    let bad_id = call(&s, "LockUser", Some(ADMIN), r#"{"userId": "a b"}"#).await;
    assert_connect_error(&bad_id, 400, "invalid_argument", "USERSTATE-invalid-id");
    let bad_json = call(&s, "LockUser", Some(ADMIN), r#"{"userId": "#).await;
    assert_connect_error(&bad_json, 400, "invalid_argument", "HTTP-malformed-json");
    // Authentication comes before the body is decoded.
    let bad_both = call(&s, "LockUser", None, r#"{"userId": "#).await;
    assert_connect_error(&bad_both, 401, "unauthenticated", "AUTH-missing-token");
    s.stop().await;
}

#[tokio::test]
async fn binary_bodies_are_zitadels_protobuf() {
    let s = TestServer::start(Arc::new(MemoryStore::new())).await;
    call(&s, "AddHumanUser", Some(ADMIN), &add_body("u1", "alice")).await;
    let send = |body: Vec<u8>| {
        s.client
            .post(s.url(&format!("{V2}/LockUser")))
            .header("content-type", "application/proto")
            .header("connect-protocol-version", "1")
            .bearer_auth(ADMIN)
            .body(body)
            .send()
    };
    let request = LockUserRequest {
        user_id: "u1".into(),
    };
    let response = send(request.encode_to_vec()).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/proto");
    let answer = LockUserResponse::decode(response.bytes().await.unwrap()).unwrap();
    assert_eq!(answer.details.unwrap().sequence, 2);
    let garbage = send(vec![0xff, 0xff, 0xff]).await.unwrap();
    assert_eq!(garbage.status(), 400);
    let body: Value = garbage.json().await.unwrap();
    assert_eq!(body["code"], "invalid_argument", "{body}");
    s.stop().await;
}

#[tokio::test]
async fn other_content_types_and_methods_are_refused() {
    let s = TestServer::start(Arc::new(MemoryStore::new())).await;
    let path = s.url(&format!("{V2}/LockUser"));
    let text = s
        .client
        .post(&path)
        .bearer_auth(ADMIN)
        .header("content-type", "text/plain")
        .body("u1")
        .send()
        .await
        .unwrap();
    assert_eq!(text.status(), 415);
    let version = s
        .client
        .post(&path)
        .bearer_auth(ADMIN)
        .header("content-type", "application/json")
        .header("connect-protocol-version", "2")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(version.status(), 400);
    let get = s.client.get(&path).bearer_auth(ADMIN).send().await.unwrap();
    assert_eq!(get.status(), 405);
    s.stop().await;
}
