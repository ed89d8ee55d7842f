//! `application/grpc+json` (HTTP/2) and `application/grpc-web+json` (HTTP/1.1): the same
//! services with proto3 JSON messages, success and errors; and authentication before the body is
//! decoded, in every encoding.

mod common;
mod grpc_support;

use std::net::SocketAddr;
use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use prost::Message;
use serde_json::{json, Value};
use userstate::MemoryStore;
use userstate_server::grpc::pb::google::rpc::Status as RpcStatus;
use userstate_server::grpc::pb::zitadel::v1::ErrorDetail;

use common::*;

/// One length-prefixed message frame.
fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0];
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// An answer: content type, the JSON messages, and the status fields (from the trailers, the
/// trailer frame or, for trailers-only answers, the headers).
#[derive(Debug)]
struct Answer {
    content_type: String,
    messages: Vec<Value>,
    meta: Vec<(String, String)>,
}

impl Answer {
    fn get(&self, name: &str) -> Option<&str> {
        self.meta
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn code(&self) -> &str {
        self.get("grpc-status").expect("grpc-status")
    }

    /// The one message of a successful call.
    fn message(&self) -> &Value {
        assert_eq!(self.code(), "0", "{self:?}");
        assert_eq!(self.messages.len(), 1, "{self:?}");
        &self.messages[0]
    }

    /// The `zitadel.v1.ErrorDetail` of `grpc-status-details-bin`.
    fn detail(&self) -> (String, String) {
        let raw = self.get("grpc-status-details-bin").expect("details");
        let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(raw.trim_end_matches('='))
            .unwrap();
        let rpc = RpcStatus::decode(bytes.as_slice()).unwrap();
        assert_eq!(rpc.code.to_string(), self.code());
        let d = ErrorDetail::decode(rpc.details[0].value.as_slice()).unwrap();
        (d.id, d.message)
    }
}

/// Splits length-prefixed frames: JSON messages, and the pairs of a gRPC-web trailer frame.
fn unframe(mut body: &[u8], meta: &mut Vec<(String, String)>) -> Vec<Value> {
    let mut messages = Vec::new();
    while !body.is_empty() {
        let flag = body[0];
        let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
        let payload = &body[5..5 + len];
        if flag & 0x80 == 0 {
            messages.push(serde_json::from_slice(payload).expect("a JSON message"));
        } else {
            for line in std::str::from_utf8(payload).unwrap().split("\r\n") {
                if let Some((n, v)) = line.split_once(':') {
                    meta.push((n.trim().to_ascii_lowercase(), v.trim().to_owned()));
                }
            }
        }
        body = &body[5 + len..];
    }
    messages
}

fn header_pairs(headers: &reqwest::header::HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .filter(|(n, _)| n.as_str().starts_with("grpc-"))
        .map(|(n, v)| (n.as_str().to_owned(), v.to_str().unwrap().to_owned()))
        .collect()
}

/// A unary `application/grpc+json` call over HTTP/2 whose message is `body` (as given).
async fn grpc_json(addr: SocketAddr, path: &str, token: Option<&str>, body: &[u8]) -> Answer {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    let mut request = hyper::Request::post(format!("http://{addr}{path}"))
        .header("content-type", "application/grpc+json")
        .header("te", "trailers");
    if let Some(t) = token {
        request = request.header("authorization", format!("Bearer {t}"));
    }
    let request = request.body(Full::new(Bytes::from(frame(body)))).unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    let mut meta = header_pairs(response.headers());
    let collected = response.into_body().collect().await.unwrap();
    if let Some(trailers) = collected.trailers() {
        meta.extend(header_pairs(trailers));
    }
    let messages = unframe(&collected.to_bytes(), &mut meta);
    Answer {
        content_type,
        messages,
        meta,
    }
}

/// A unary `application/grpc-web+json` call over HTTP/1.1 whose message is `body` (as given).
async fn grpc_web_json(s: &TestServer, path: &str, token: Option<&str>, body: &[u8]) -> Answer {
    let client = reqwest::Client::builder().http1_only().build().unwrap();
    let mut request = client
        .post(s.url(path))
        .header("content-type", "application/grpc-web+json")
        .header("x-grpc-web", "1")
        .body(frame(body));
    if let Some(t) = token {
        request = request.bearer_auth(t);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), reqwest::Version::HTTP_11);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    let mut meta = header_pairs(response.headers());
    let body = response.bytes().await.unwrap();
    let messages = unframe(&body, &mut meta);
    Answer {
        content_type,
        messages,
        meta,
    }
}

const V2: &str = "/zitadel.user.v2.UserService";
const V3: &str = "/zitadel.user.v3alpha.UserService";

fn json_bytes(v: Value) -> Vec<u8> {
    serde_json::to_vec(&v).unwrap()
}

#[tokio::test]
async fn grpc_json_messages_are_proto3_json() {
    let s = TestServer::start(Arc::new(MemoryStore::new())).await;
    let add = json!({
        "userId": "j1", "username": "jay", "organization": {"orgId": "acme"},
        "profile": {"givenName": "Jay", "familyName": "Doe"},
        "email": {"email": "jay@example.com", "isVerified": true},
        "notAZitadelField": 1
    });
    let added = grpc_json(
        s.addr,
        &format!("{V2}/AddHumanUser"),
        Some(ADMIN),
        &json_bytes(add),
    )
    .await;
    assert_eq!(added.content_type, "application/grpc+json");
    let m = added.message();
    assert_eq!(m["userId"], "j1");
    assert_eq!(m["details"]["sequence"], "1", "uint64 as a string: {m}");
    assert_eq!(m["details"]["resourceOwner"], "acme");
    assert_eq!(m["details"]["creationDate"], m["details"]["changeDate"]);
    // The same times as the JSON API writes, but for the digits of the fraction.
    let rest = s.get("/v2/users/j1", ADMIN).await;
    let change: chrono::DateTime<chrono::Utc> = m["details"]["changeDate"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let rest_change: chrono::DateTime<chrono::Utc> = rest.body["details"]["changeDate"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(change.timestamp_millis(), rest_change.timestamp_millis());

    let got = grpc_json(
        s.addr,
        &format!("{V2}/GetUserByID"),
        Some(ACME_READER),
        br#"{"userId": "j1"}"#,
    )
    .await;
    let user = &got.message()["user"];
    assert_eq!(user["state"], "USER_STATE_ACTIVE");
    assert_eq!(user["username"], "jay");
    assert_eq!(user["human"]["profile"]["givenName"], "Jay");
    assert_eq!(
        user["human"]["email"],
        json!({"email": "jay@example.com", "isVerified": true})
    );

    // Seed 003's service, v3alpha details (no creation date).
    let locked = grpc_json(
        s.addr,
        &format!("{V3}/LockUser"),
        Some(ACME),
        br#"{"userId": "j1"}"#,
    )
    .await;
    let d = &locked.message()["details"];
    assert_eq!(d["sequence"], "2");
    assert!(d.get("creationDate").is_none(), "{d}");
    let got3 = grpc_json(
        s.addr,
        &format!("{V3}/GetUserByID"),
        Some(ADMIN),
        br#"{"userId": "j1"}"#,
    )
    .await;
    let user3 = &got3.message()["user"];
    assert_eq!(user3["state"], "USER_STATE_LOCKED");
    assert_eq!(user3["contact"]["email"]["address"], "jay@example.com");

    // Errors: the code and the ErrorDetail, as over protobuf.
    let again = grpc_json(
        s.addr,
        &format!("{V2}/ReactivateUser"),
        Some(ACME),
        br#"{"userId": "j1"}"#,
    )
    .await;
    assert_eq!(again.code(), "9");
    assert!(again.messages.is_empty());
    assert_eq!(
        again.detail(),
        (
            "COMMAND-s5qqcz97hf".into(),
            "Errors.User.NotInactive".into()
        )
    );
    let denied = grpc_json(
        s.addr,
        &format!("{V3}/UnlockUser"),
        Some(GLOBEX),
        br#"{"userId": "j1"}"#,
    )
    .await;
    assert_eq!(denied.code(), "7");
    let malformed = grpc_json(
        s.addr,
        &format!("{V2}/LockUser"),
        Some(ACME),
        b"{\"userId\": ",
    )
    .await;
    assert_eq!(malformed.code(), "3");
    assert_eq!(malformed.detail().0, "HTTP-malformed-json");
    let wrong_type = grpc_json(
        s.addr,
        &format!("{V2}/LockUser"),
        Some(ACME),
        br#"{"userId": 7}"#,
    )
    .await;
    assert_eq!(wrong_type.code(), "3");
    let unserved = grpc_json(s.addr, &format!("{V2}/SetEmail"), Some(ADMIN), b"{}").await;
    assert_eq!(unserved.code(), "12");
    s.stop().await;
}

#[tokio::test]
async fn grpc_web_json_messages_over_http1() {
    let s = TestServer::start(Arc::new(MemoryStore::new())).await;
    assert_eq!(s.add(ADMIN, "w1", "acme").await.status, 201);
    let locked = grpc_web_json(
        &s,
        &format!("{V2}/LockUser"),
        Some(ACME),
        br#"{"userId": "w1"}"#,
    )
    .await;
    assert_eq!(locked.content_type, "application/grpc-web+json");
    let d = &locked.message()["details"];
    assert_eq!(
        (d["sequence"].as_str(), d["resourceOwner"].as_str()),
        (Some("2"), Some("acme"))
    );
    assert!(d["creationDate"].is_string());
    let unlocked = grpc_web_json(
        &s,
        &format!("{V3}/UnlockUser"),
        Some(ACME),
        br#"{"userId": "w1"}"#,
    )
    .await;
    assert_eq!(unlocked.message()["details"]["sequence"], "3");
    let again = grpc_web_json(
        &s,
        &format!("{V3}/UnlockUser"),
        Some(ACME),
        br#"{"userId": "w1"}"#,
    )
    .await;
    assert_eq!(again.code(), "9");
    assert_eq!(
        again.detail(),
        ("COMMAND-olb9vb0oca".into(), "Errors.User.NotLocked".into())
    );
    let gone = grpc_web_json(
        &s,
        &format!("{V2}/GetUserByID"),
        Some(ADMIN),
        br#"{"userId": "nobody"}"#,
    )
    .await;
    assert_eq!(gone.code(), "5");
    let malformed = grpc_web_json(&s, &format!("{V2}/LockUser"), Some(ACME), b"not json").await;
    assert_eq!(malformed.code(), "3");
    s.stop().await;
}

#[tokio::test]
async fn a_bad_token_with_a_malformed_body_is_unauthenticated_in_every_encoding() {
    let s = TestServer::start(Arc::new(MemoryStore::new())).await;
    for path in [
        "/zitadel.user.v2.UserService/LockUser",
        "/zitadel.user.v2.UserService/AddHumanUser",
        "/zitadel.user.v3alpha.UserService/UnlockUser",
    ] {
        for token in [None, Some("not-a-token")] {
            // Protobuf: a field cut short.
            let proto = grpc_support::raw_unary(s.addr, path, token, vec![0x0a, 0x05, b'u']).await;
            assert_eq!(
                proto.expect_err("refused").code(),
                tonic::Code::Unauthenticated,
                "{path} {token:?}"
            );
            let json = grpc_json(s.addr, path, token, b"{not json").await;
            assert_eq!(json.code(), "16", "{path} {token:?}: {json:?}");
            let web = grpc_web_json(&s, path, token, b"{not json").await;
            assert_eq!(web.code(), "16", "{path} {token:?}: {web:?}");
        }
    }
    s.stop().await;
}
