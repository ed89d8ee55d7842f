//! userstate's own `userstate.lockout.v1.LockoutService` through the real server (issue 24):
//! the identity backend's authentication reports over gRPC, Connect and gRPC-web lock the user
//! per the lockout policy, a success resets the count, and a bad method is an InvalidArgument.

mod common;
mod grpc_support;

use std::sync::Arc;

use common::*;
use grpc_support::*;
use prost::Message;
use reqwest::Method;
use serde_json::{json, Value};
use tonic::transport::Channel;
use userstate::MemoryStore;
use userstate_server::grpc::pb::userstate::lockout::v1::lockout_service_client::LockoutServiceClient;
use userstate_server::grpc::pb::userstate::lockout::v1::*;

const SERVICE: &str = "/userstate.lockout.v1.LockoutService";

async fn client(s: &TestServer) -> LockoutServiceClient<Channel> {
    LockoutServiceClient::new(channel(s.addr).await)
}

async fn put_policy(s: &TestServer, policy: Value) {
    let set = s
        .call(
            Method::PUT,
            "/v2/policies/lockout",
            Some(ADMIN),
            Some(policy),
        )
        .await;
    assert_eq!(set.status, 200, "{}", set.text);
}

/// The user's state and failed attempts, read over REST.
async fn state_of(s: &TestServer, id: &str) -> (String, Value) {
    let got = s.get(&format!("/v2/users/{id}"), ADMIN).await;
    assert_eq!(got.status, 200, "{}", got.text);
    (
        got.body["user"]["state"].as_str().unwrap().to_owned(),
        got.body["user"]["failedAttempts"].clone(),
    )
}

fn failed(id: &str, method: AuthenticationMethod) -> ReportAuthenticationFailedRequest {
    ReportAuthenticationFailedRequest {
        user_id: id.into(),
        method: method as i32,
    }
}

#[tokio::test]
async fn grpc_failures_lock_the_user_per_policy_and_a_success_resets_the_count() {
    let s = TestServer::start(Arc::new(MemoryStore::new())).await;
    put_policy(
        &s,
        json!({"maxPasswordAttempts": 2, "maxOtpAttempts": 2, "lockDuration": "60s"}),
    )
    .await;
    assert_eq!(s.add(ADMIN, "u1", "acme").await.status, 201);
    let mut c = client(&s).await;

    let first = c
        .report_authentication_failed(as_(ADMIN, failed("u1", AuthenticationMethod::Password)))
        .await
        .unwrap();
    assert!(position(&first) > 0);
    let details = first.into_inner().details.expect("details");
    assert_eq!(details.sequence, 2);
    assert_eq!(details.resource_owner, "acme");
    assert_eq!(
        state_of(&s, "u1").await,
        ("USER_STATE_ACTIVE".into(), json!(1))
    );

    // A success forgets the failure: the next failure is the first again.
    let ok = c
        .report_authentication_succeeded(as_(
            ADMIN,
            ReportAuthenticationSucceededRequest {
                user_id: "u1".into(),
                method: AuthenticationMethod::Unspecified as i32,
            },
        ))
        .await
        .unwrap();
    assert!(ok.into_inner().details.is_some());
    c.report_authentication_failed(as_(ADMIN, failed("u1", AuthenticationMethod::Password)))
        .await
        .unwrap();
    // OTP counts apart from password.
    c.report_authentication_failed(as_(ADMIN, failed("u1", AuthenticationMethod::Otp)))
        .await
        .unwrap();
    assert_eq!(state_of(&s, "u1").await.0, "USER_STATE_ACTIVE");
    // The second password failure in a row reaches the maximum: locked.
    c.report_authentication_failed(as_(ADMIN, failed("u1", AuthenticationMethod::Password)))
        .await
        .unwrap();
    assert_eq!(state_of(&s, "u1").await.0, "USER_STATE_LOCKED");
    s.stop().await;
}

#[tokio::test]
async fn grpc_bad_reports_are_refused() {
    let s = TestServer::start(Arc::new(MemoryStore::new())).await;
    assert_eq!(s.add(ADMIN, "u1", "acme").await.status, 201);
    let mut c = client(&s).await;
    let bad_method = ReportAuthenticationFailedRequest {
        user_id: "u1".into(),
        method: 7,
    };
    assert_status(
        c.report_authentication_failed(as_(ADMIN, bad_method)).await,
        3,
        "USERSTATE-invalid-argument",
        "Errors.Invalid.Argument",
    );
    let unauthenticated = c
        .report_authentication_failed(req(None, failed("u1", AuthenticationMethod::Password)))
        .await
        .expect_err("no token");
    assert_eq!(unauthenticated.code(), tonic::Code::Unauthenticated);
    // Nothing was recorded.
    assert_eq!(
        state_of(&s, "u1").await,
        ("USER_STATE_ACTIVE".into(), json!(0))
    );
    s.stop().await;
}

/// A Connect unary call with a JSON body: (HTTP status, body).
async fn connect(s: &TestServer, method: &str, body: Value) -> (u16, Value) {
    let response = s
        .client
        .post(s.url(&format!("{SERVICE}/{method}")))
        .header("content-type", "application/json")
        .header("connect-protocol-version", "1")
        .bearer_auth(ADMIN)
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

#[tokio::test]
async fn connect_failures_lock_the_user_and_a_bad_method_is_400() {
    let s = TestServer::start(Arc::new(MemoryStore::new())).await;
    put_policy(&s, json!({"maxOtpAttempts": 2, "lockDuration": "60s"})).await;
    assert_eq!(s.add(ADMIN, "u1", "acme").await.status, 201);
    let otp = json!({"userId": "u1", "method": "AUTHENTICATION_METHOD_OTP"});
    let (status, body) = connect(&s, "ReportAuthenticationFailed", otp.clone()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["details"]["sequence"], "2", "{body}");
    assert_eq!(body["details"]["resourceOwner"], "acme", "{body}");
    let (status, body) = connect(&s, "ReportAuthenticationSucceeded", otp.clone()).await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = connect(&s, "ReportAuthenticationFailed", otp.clone()).await;
    assert_eq!(status, 200);
    assert_eq!(state_of(&s, "u1").await.0, "USER_STATE_ACTIVE");
    let (status, _) = connect(&s, "ReportAuthenticationFailed", otp).await;
    assert_eq!(status, 200);
    assert_eq!(state_of(&s, "u1").await.0, "USER_STATE_LOCKED");

    for method in [json!("AUTHENTICATION_METHOD_SMS"), json!(7)] {
        let (status, body) = connect(
            &s,
            "ReportAuthenticationFailed",
            json!({"userId": "u1", "method": method}),
        )
        .await;
        assert_eq!(status, 400, "{method}: {body}");
        assert_eq!(body["code"], "invalid_argument", "{method}: {body}");
    }
    s.stop().await;
}

#[tokio::test]
async fn grpc_web_reports_a_failure() {
    let s = TestServer::start(Arc::new(MemoryStore::new())).await;
    assert_eq!(s.add(ADMIN, "u1", "acme").await.status, 201);
    let message = failed("u1", AuthenticationMethod::Password).encode_to_vec();
    let mut body = vec![0];
    body.extend_from_slice(&(message.len() as u32).to_be_bytes());
    body.extend_from_slice(&message);
    let response = s
        .client
        .post(s.url(&format!("{SERVICE}/ReportAuthenticationFailed")))
        .header("content-type", "application/grpc-web+proto")
        .header("x-grpc-web", "1")
        .bearer_auth(ADMIN)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let bytes = response.bytes().await.unwrap();
    assert_eq!(bytes[0], 0, "a message frame first");
    let len = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]) as usize;
    let answer = ReportAuthenticationFailedResponse::decode(&bytes[5..5 + len]).unwrap();
    assert_eq!(answer.details.unwrap().sequence, 2);
    let trailers = String::from_utf8_lossy(&bytes[5 + len..]).to_ascii_lowercase();
    assert!(trailers.contains("grpc-status:0"), "{trailers}");
    assert_eq!(state_of(&s, "u1").await.1, json!(1));
    s.stop().await;
}
