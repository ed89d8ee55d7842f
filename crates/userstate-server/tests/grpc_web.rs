//! gRPC-web over plain HTTP/1.1: a framed `application/grpc-web+proto` request posted with an
//! ordinary HTTP client to the same port as the JSON API; the answer's message frame and
//! trailer frame are decoded by hand.

mod common;
mod grpc_support;

use std::sync::Arc;

use common::*;
use prost::Message;
use userstate::MemoryStore;
use userstate_server::grpc::pb::google::rpc::Status as RpcStatus;
use userstate_server::grpc::pb::zitadel::object::v2::{organization::Org, Organization};
use userstate_server::grpc::pb::zitadel::user::v2::*;
use userstate_server::grpc::pb::zitadel::v1::ErrorDetail;

/// One gRPC-web frame: flag (0 = message, 0x80 = trailers), big-endian length, payload.
fn frame(flag: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![flag];
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// Splits a gRPC-web body into (message frames, trailers as lowercase name -> value).
fn unframe(mut body: &[u8]) -> (Vec<Vec<u8>>, Vec<(String, String)>) {
    let (mut messages, mut trailers) = (Vec::new(), Vec::new());
    while !body.is_empty() {
        assert!(body.len() >= 5, "truncated frame header");
        let flag = body[0];
        let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
        let payload = &body[5..5 + len];
        if flag & 0x80 == 0 {
            messages.push(payload.to_vec());
        } else {
            for line in String::from_utf8(payload.to_vec()).unwrap().split("\r\n") {
                if let Some((name, value)) = line.split_once(':') {
                    trailers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
                }
            }
        }
        body = &body[5 + len..];
    }
    (messages, trailers)
}

struct WebAnswer {
    status: u16,
    version: reqwest::Version,
    headers: reqwest::header::HeaderMap,
    messages: Vec<Vec<u8>>,
    trailers: Vec<(String, String)>,
}

impl WebAnswer {
    /// `grpc-status` and friends, from the trailer frame or (trailers-only answers) the headers.
    fn meta(&self, name: &str) -> Option<String> {
        self.trailers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .or_else(|| {
                self.headers
                    .get(name)
                    .map(|v| v.to_str().unwrap().to_owned())
            })
    }
}

async fn post(
    s: &TestServer,
    method: &str,
    token: Option<&str>,
    message: &impl Message,
) -> WebAnswer {
    post_bytes(s, method, token, &message.encode_to_vec()).await
}

/// Posts `payload` as the request message, whatever it holds.
async fn post_bytes(
    s: &TestServer,
    method: &str,
    token: Option<&str>,
    payload: &[u8],
) -> WebAnswer {
    let client = reqwest::Client::builder().http1_only().build().unwrap();
    let mut request = client
        .post(s.url(&format!("/zitadel.user.v2.UserService/{method}")))
        .header("content-type", "application/grpc-web+proto")
        .header("x-grpc-web", "1")
        .body(frame(0, payload));
    if let Some(t) = token {
        request = request.bearer_auth(t);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let version = response.version();
    let headers = response.headers().clone();
    let body = response.bytes().await.unwrap();
    let (messages, trailers) = unframe(&body);
    WebAnswer {
        status,
        version,
        headers,
        messages,
        trailers,
    }
}

#[tokio::test]
async fn grpc_web_add_get_and_errors_over_http1() {
    let s = TestServer::start(Arc::new(MemoryStore::new())).await;
    let add = AddHumanUserRequest {
        user_id: Some("w1".into()),
        username: Some("web".into()),
        organization: Some(Organization {
            org: Some(Org::OrgId("acme".into())),
        }),
        ..Default::default()
    };
    let added = post(&s, "AddHumanUser", Some(ADMIN), &add).await;
    assert_eq!(added.status, 200);
    assert_eq!(added.version, reqwest::Version::HTTP_11);
    assert_eq!(
        added.headers.get("content-type").unwrap(),
        "application/grpc-web+proto"
    );
    assert_eq!(
        added.trailers,
        [("grpc-status".to_owned(), "0".to_owned())],
        "the trailer frame"
    );
    let position: u64 = added
        .headers
        .get("x-userstate-position")
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(added.messages.len(), 1);
    let answer = AddHumanUserResponse::decode(added.messages[0].as_slice()).unwrap();
    assert_eq!(answer.user_id, "w1");
    let details = answer.details.unwrap();
    assert_eq!(
        (details.sequence, details.resource_owner.as_str()),
        (1, "acme")
    );

    let got = post(
        &s,
        "GetUserByID",
        Some(ACME_READER),
        &GetUserByIdRequest {
            user_id: "w1".into(),
        },
    )
    .await;
    assert_eq!(got.meta("grpc-status").as_deref(), Some("0"));
    let read = GetUserByIdResponse::decode(got.messages[0].as_slice()).unwrap();
    assert_eq!(read.user.unwrap().state, UserState::Active as i32);
    let read_position: u64 = got
        .headers
        .get("x-userstate-position")
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(read_position >= position);

    // Errors: code, message and the ErrorDetail in grpc-status-details-bin.
    let refused = post(
        &s,
        "UnlockUser",
        Some(ADMIN),
        &UnlockUserRequest {
            user_id: "w1".into(),
        },
    )
    .await;
    assert_eq!(refused.status, 200, "gRPC-web errors travel in grpc-status");
    assert!(refused.messages.is_empty());
    assert_eq!(refused.meta("grpc-status").as_deref(), Some("9"));
    assert!(refused.meta("grpc-message").is_some_and(|m| !m.is_empty()));
    let details_bin = refused
        .meta("grpc-status-details-bin")
        .expect("status details");
    let rpc = RpcStatus::decode(decode_base64(&details_bin).as_slice()).unwrap();
    assert_eq!(rpc.code, 9);
    let detail = ErrorDetail::decode(rpc.details[0].value.as_slice()).unwrap();
    assert_eq!(
        (detail.id.as_str(), detail.message.as_str()),
        ("COMMAND-olb9vb0oca", "Errors.User.NotLocked")
    );

    let anonymous = post(
        &s,
        "LockUser",
        None,
        &LockUserRequest {
            user_id: "w1".into(),
        },
    )
    .await;
    assert_eq!(anonymous.meta("grpc-status").as_deref(), Some("16"));

    // The JSON API still answers on the same port.
    let json = s.get("/v2/users/w1", ADMIN).await;
    assert_eq!(json.status, 200, "{}", json.text);
    s.stop().await;
}

#[tokio::test]
async fn a_malformed_message_is_invalid_argument_over_grpc_web() {
    let s = TestServer::start(Arc::new(MemoryStore::new())).await;
    // Field 1 (`user_id`, a string) sent as a varint: not a LockUserRequest.
    let answer = post_bytes(&s, "LockUser", Some(ADMIN), &[0x08, 0x01]).await;
    assert_eq!(answer.status, 200, "gRPC-web errors travel in grpc-status");
    assert_eq!(answer.meta("grpc-status").as_deref(), Some("3"));
    let details_bin = answer
        .meta("grpc-status-details-bin")
        .expect("status details");
    let rpc = RpcStatus::decode(decode_base64(&details_bin).as_slice()).unwrap();
    assert_eq!(rpc.code, 3);
    let detail = ErrorDetail::decode(rpc.details[0].value.as_slice()).unwrap();
    assert_eq!(
        (detail.id.as_str(), detail.message.as_str()),
        ("GRPC-malformed-message", "Errors.Invalid.Body")
    );
    s.stop().await;
}

/// Standard base64, padded or not (grpc-status-details-bin).
fn decode_base64(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let (mut buffer, mut bits) = (0u32, 0u32);
    for c in text.bytes().filter(|&c| c != b'=') {
        let value = ALPHABET.iter().position(|&a| a == c).expect("base64 digit") as u32;
        buffer = (buffer << 6) | value;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
            buffer &= (1 << bits) - 1;
        }
    }
    out
}
