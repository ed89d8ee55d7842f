//! Connect server streaming of the event feed (issue 26) through plain HTTP that follows the
//! Connect protocol's "Streaming" rules, for what a client library would not send: the framing
//! byte by byte (one request envelope; answer envelopes; the end-of-stream envelope with flag
//! 0x02), JSON and binary answers, the lag limit and the drain in the end-of-stream message,
//! and every malformed request answered with a Connect error — never a 5xx. Connect's own client
//! drives the same stream in `tests/connect_stream_client.rs`.

mod common;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::{Buf, Bytes, BytesMut};
use prost::Message;
use serde_json::{json, Value};
use tokio_stream::StreamExt;
use userstate::store::{EventMetadata, NewEvent};
use userstate::{EventStore, ExpectedVersion, MemoryStore, StreamId};
use userstate_server::grpc::pb::userstate::events::v1::{
    SubscribeEventsRequest, SubscribeEventsResponse,
};
use userstate_server::grpc::pb::zitadel::v1::ErrorDetail;

use common::*;

const SUBSCRIBE: &str = "/userstate.events.v1.EventService/SubscribeEvents";
const JSON: &str = "application/connect+json";
const PROTO: &str = "application/connect+proto";

/// `message` in one envelope with `flags`.
fn envelope(flags: u8, message: &[u8]) -> Vec<u8> {
    let mut framed = vec![flags];
    framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
    framed.extend_from_slice(message);
    framed
}

/// An open Connect stream, read envelope by envelope.
struct Stream {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: std::pin::Pin<Box<dyn tokio_stream::Stream<Item = reqwest::Result<Bytes>> + Send>>,
    buffer: BytesMut,
}

impl Stream {
    async fn open(s: &TestServer, content_type: &str, token: Option<&str>, body: Vec<u8>) -> Self {
        Self::open_with(s, content_type, token, body, &[]).await
    }

    async fn open_with(
        s: &TestServer,
        content_type: &str,
        token: Option<&str>,
        body: Vec<u8>,
        headers: &[(&str, &str)],
    ) -> Self {
        let mut request = s
            .client
            .post(s.url(SUBSCRIBE))
            .header("content-type", content_type)
            .body(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.unwrap();
        Self {
            status: response.status().as_u16(),
            headers: response.headers().clone(),
            body: Box::pin(response.bytes_stream()),
            buffer: BytesMut::new(),
        }
    }

    /// The next envelope (flags, message), `None` at the end of the body; at most 10 s.
    async fn next(&mut self) -> Option<(u8, Bytes)> {
        loop {
            if self.buffer.len() >= 5 {
                let length = u32::from_be_bytes(self.buffer[1..5].try_into().unwrap()) as usize;
                if self.buffer.len() >= 5 + length {
                    let flags = self.buffer[0];
                    self.buffer.advance(5);
                    return Some((flags, self.buffer.split_to(length).freeze()));
                }
            }
            let chunk = tokio::time::timeout(Duration::from_secs(10), self.body.next())
                .await
                .expect("an envelope within 10 s");
            match chunk {
                Some(bytes) => self.buffer.extend_from_slice(&bytes.unwrap()),
                None => {
                    assert!(self.buffer.is_empty(), "the body ends inside an envelope");
                    return None;
                }
            }
        }
    }

    /// The next envelope, which must be a message (flags 0).
    async fn message(&mut self) -> Bytes {
        let (flags, message) = self.next().await.expect("a message, not the end");
        assert_eq!(flags, 0, "a message: {}", String::from_utf8_lossy(&message));
        message
    }

    /// The end-of-stream message (flags 0x02, JSON), after which the body ends.
    async fn end(&mut self) -> Value {
        let (flags, message) = self.next().await.expect("the end-of-stream envelope");
        assert_eq!(flags, 0x02, "{}", String::from_utf8_lossy(&message));
        assert!(
            self.next().await.is_none(),
            "nothing after the end of the stream"
        );
        serde_json::from_slice(&message).expect("the end of the stream is JSON")
    }

    /// The end of a stream refused before it started: 200, the streaming content type, the
    /// error with `code` and the one `zitadel.v1.ErrorDetail` with `id`.
    async fn refused(mut self, content_type: &str, code: &str, id: &str) {
        assert_eq!(self.status, 200, "errors are in the stream");
        assert_eq!(self.headers["content-type"], content_type);
        let end = self.end().await;
        assert_error(&end, code, id);
    }
}

/// The end-of-stream `error` has `code` and one `zitadel.v1.ErrorDetail` with `id`.
fn assert_error(end: &Value, code: &str, id: &str) {
    let error = &end["error"];
    assert_eq!(error["code"], code, "{end}");
    assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()));
    let detail = &error["details"][0];
    assert_eq!(detail["type"], "zitadel.v1.ErrorDetail", "{end}");
    let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(detail["value"].as_str().unwrap())
        .unwrap();
    assert_eq!(
        ErrorDetail::decode(bytes.as_slice()).unwrap().id,
        id,
        "{end}"
    );
}

fn json_request(request: Value) -> Vec<u8> {
    envelope(0, request.to_string().as_bytes())
}

fn proto_request(request: &SubscribeEventsRequest) -> Vec<u8> {
    envelope(0, &request.encode_to_vec())
}

/// The export line of the event at `position`.
async fn export_line(store: &dyn EventStore, position: u64) -> String {
    let events = store.read_all(position, 1).await.unwrap();
    serde_json::to_string(&events[0]).unwrap()
}

#[tokio::test]
async fn json_and_binary_streams_send_history_live_events_and_end_at_the_drain() {
    let store: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
    let s = TestServer::start(store.clone()).await;
    let a1 = s.add(ADMIN, "a1", "acme").await.position();
    assert_eq!(s.add(ADMIN, "g1", "globex").await.status, 201);

    let mut json = Stream::open(&s, JSON, Some(ACME_READER), json_request(json!({}))).await;
    assert_eq!(json.status, 200);
    assert_eq!(json.headers["content-type"], JSON);
    let first: Value = serde_json::from_slice(&json.message().await).unwrap();
    let line = export_line(&*store, a1).await;
    assert_eq!(first, json!({"position": a1.to_string(), "event": line}));

    let request = SubscribeEventsRequest {
        after_position: 0,
        types: vec![],
        orgs: vec!["acme".into()],
    };
    let mut proto = Stream::open(&s, PROTO, Some(ACME_READER), proto_request(&request)).await;
    assert_eq!(proto.headers["content-type"], PROTO);
    let first = SubscribeEventsResponse::decode(proto.message().await).unwrap();
    assert_eq!((first.position, first.event), (a1, line));

    // Live, and globex's user is not shown to acme.
    assert_eq!(s.post("/v2/users/g1/lock", ADMIN).await.status, 200);
    let locked = s.post("/v2/users/a1/lock", ADMIN).await.position();
    let live: Value = serde_json::from_slice(&json.message().await).unwrap();
    assert_eq!(live["position"], locked.to_string(), "{live}");
    let event: Value = serde_json::from_str(live["event"].as_str().unwrap()).unwrap();
    assert_eq!(event["type"], "user.locked");
    let live = SubscribeEventsResponse::decode(proto.message().await).unwrap();
    assert_eq!(live.position, locked);

    // Resume after the first event.
    let resumed = json!({"afterPosition": a1.to_string()});
    let mut resumed = Stream::open(&s, JSON, Some(ACME_READER), json_request(resumed)).await;
    let next: Value = serde_json::from_slice(&resumed.message().await).unwrap();
    assert_eq!(next["position"], locked.to_string());

    // The drain ends every stream well: an end-of-stream message without error.
    let stopping = std::time::Instant::now();
    s.stop().await;
    assert!(stopping.elapsed() < Duration::from_secs(10));
    for stream in [&mut json, &mut proto, &mut resumed] {
        assert_eq!(stream.end().await, json!({}));
    }
}

fn test_events(n: usize) -> Vec<NewEvent> {
    let metadata = EventMetadata {
        instance: "i1".into(),
        resource_owner: "acme".into(),
        creator: "t".into(),
        ..EventMetadata::default()
    };
    (0..n)
        .map(|_| NewEvent::new("user.locked", 1, json!({}), metadata.clone()))
        .collect()
}

/// A reader too far behind ends with resource_exhausted in the end-of-stream message; a
/// timeout ends an idle stream with deadline_exceeded.
#[tokio::test]
async fn the_lag_limit_and_the_timeout_end_the_stream_with_an_error() {
    let store: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
    let s = TestServer::start_config(store.clone(), |c| c.feed_max_lag = 5).await;
    let first = s.add(ADMIN, "u1", "acme").await.position();
    let mut feed = Stream::open(&s, JSON, Some(ADMIN), json_request(json!({}))).await;
    let message: Value = serde_json::from_slice(&feed.message().await).unwrap();
    assert_eq!(message["position"], first.to_string());
    let stream = StreamId::new("user:i1:bulk").unwrap();
    store
        .append(&stream, ExpectedVersion::Any, test_events(50))
        .await
        .unwrap();
    assert_error(
        &feed.end().await,
        "resource_exhausted",
        "FEED-too-far-behind",
    );

    let after = json!({"afterPosition": "1000000"});
    let started = std::time::Instant::now();
    let timeout = [("connect-timeout-ms", "300")];
    let mut idle = Stream::open_with(&s, JSON, Some(ADMIN), json_request(after), &timeout).await;
    let end = idle.end().await;
    assert_eq!(end["error"]["code"], "deadline_exceeded", "{end}");
    assert!(started.elapsed() >= Duration::from_millis(300));
    s.stop().await;
}

/// Everything wrong with a request, once a stream's content type is accepted, is a Connect
/// error in the end-of-stream message (HTTP 200): no 5xx, no hang.
#[tokio::test]
async fn malformed_requests_end_the_stream_with_a_connect_error() {
    let s = TestServer::start(Arc::new(MemoryStore::new())).await;
    let ok = json_request(json!({}));
    let no_token = Stream::open(&s, JSON, None, ok.clone()).await;
    no_token
        .refused(JSON, "unauthenticated", "AUTH-missing-token")
        .await;
    // Authentication comes before the body is read.
    let both = Stream::open(&s, PROTO, Some("nope"), vec![0xff; 3]).await;
    both.refused(PROTO, "unauthenticated", "AUTH-unknown-token")
        .await;

    let malformed = "GRPC-malformed-message";
    let mut two = ok.clone();
    two.extend_from_slice(&ok);
    let long = {
        let mut framed = ok.clone();
        framed[4] += 10;
        framed
    };
    for (what, body) in [
        ("no envelope", vec![]),
        ("a cut prefix", vec![0, 0, 0]),
        ("a compressed flag", envelope(1, b"{}")),
        ("an end-stream flag", envelope(2, b"{}")),
        ("a length past the body", long),
        ("two envelopes", two),
    ] {
        let answer = Stream::open(&s, JSON, Some(ADMIN), body).await;
        assert_eq!(answer.status, 200, "{what}");
        let mut answer = answer;
        let end = answer.end().await;
        assert_error(&end, "invalid_argument", malformed);
    }
    let bad_json = Stream::open(&s, JSON, Some(ADMIN), envelope(0, b"{\"afterPosition\": ")).await;
    bad_json
        .refused(JSON, "invalid_argument", "HTTP-malformed-json")
        .await;
    let bad_proto = Stream::open(&s, PROTO, Some(ADMIN), envelope(0, &[0xff, 0xff])).await;
    bad_proto
        .refused(PROTO, "invalid_argument", malformed)
        .await;
    let wrong_type = Stream::open(&s, JSON, Some(ADMIN), json_request(json!({"types": 3}))).await;
    wrong_type
        .refused(JSON, "invalid_argument", "HTTP-malformed-json")
        .await;
    let types: Vec<String> = (0..101).map(|i| format!("t{i}")).collect();
    let too_many = Stream::open(
        &s,
        JSON,
        Some(ADMIN),
        json_request(json!({ "types": types })),
    )
    .await;
    too_many
        .refused(JSON, "invalid_argument", "USERSTATE-invalid-argument")
        .await;

    let header = "HTTP-invalid-header";
    let version = Stream::open_with(
        &s,
        JSON,
        Some(ADMIN),
        ok.clone(),
        &[("connect-protocol-version", "2")],
    );
    version
        .await
        .refused(JSON, "invalid_argument", header)
        .await;
    let timeout = Stream::open_with(
        &s,
        JSON,
        Some(ADMIN),
        ok.clone(),
        &[("connect-timeout-ms", "soon")],
    );
    timeout
        .await
        .refused(JSON, "invalid_argument", header)
        .await;
    // Compression is not served: unimplemented, and the encodings that are.
    let gzip = [("connect-content-encoding", "gzip")];
    let mut compressed = Stream::open_with(&s, JSON, Some(ADMIN), ok.clone(), &gzip).await;
    assert_eq!(compressed.status, 200);
    assert_eq!(compressed.headers["connect-accept-encoding"], "identity");
    let end = compressed.end().await;
    assert_eq!(end["error"]["code"], "unimplemented", "{end}");
    s.stop().await;
}

/// HTTP errors only before a stream exists: a content type that is not Connect streaming
/// (415) and a method other than POST (405); a streaming content type on a unary method is 415.
#[tokio::test]
async fn wrong_content_types_and_methods_are_http_errors() {
    let s = TestServer::start(Arc::new(MemoryStore::new())).await;
    for content_type in ["application/json", "application/proto", "text/plain"] {
        let answer = s
            .client
            .post(s.url(SUBSCRIBE))
            .bearer_auth(ADMIN)
            .header("content-type", content_type)
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 415, "{content_type}");
        assert_eq!(answer.headers()["content-type"], "application/json");
        let body: Value = answer.json().await.unwrap();
        assert_eq!(body["code"], "invalid_argument", "{body}");
        assert!(body["message"].as_str().unwrap().contains(JSON), "{body}");
    }
    let get = s
        .client
        .get(s.url(SUBSCRIBE))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), 405);
    let unary = s
        .client
        .post(s.url("/zitadel.user.v2.UserService/LockUser"))
        .bearer_auth(ADMIN)
        .header("content-type", JSON)
        .body(json_request(json!({"userId": "u1"})))
        .send()
        .await
        .unwrap();
    assert_eq!(unary.status(), 415);
    s.stop().await;
}
