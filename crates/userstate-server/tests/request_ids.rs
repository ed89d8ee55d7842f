//! Every request gets a request id, whatever its protocol (docs/API.md): the client's
//! `x-request-id`, or one generated; it is echoed to the client and stored as the events'
//! correlation id. gRPC and Connect calls had none of their own (their log lines said
//! `request_id="-"`), and a generated correlation id differed from anything the client saw.

mod common;
mod grpc_support;

use std::sync::Arc;

use common::*;
use grpc_support::*;
use userstate::{EventStore, InstanceId, MemoryStore, StreamId, UserId};

/// The correlation id of the first event of user `id` (instance `i1`, the tokens' instance).
async fn correlation_id(store: &MemoryStore, id: &str) -> Option<String> {
    let stream = StreamId::user(&InstanceId::new("i1").unwrap(), &UserId::new(id).unwrap());
    let events = store.read_stream(&stream, 1).await.unwrap();
    events[0].metadata.correlation_id.clone()
}

#[tokio::test]
async fn grpc_calls_get_a_request_id_echoed_and_stored() {
    let store = Arc::new(MemoryStore::new());
    let s = TestServer::start(store.clone()).await;
    let mut c = v2(s.addr).await;

    // Without an id: one is generated, answered in the response metadata, and it is the one
    // the events carry.
    let added = c
        .add_human_user(as_(ADMIN, add_request(Some("g1"), "g1", "acme")))
        .await
        .unwrap();
    let generated = added
        .metadata()
        .get("x-request-id")
        .expect("a generated request id in the answer")
        .to_str()
        .unwrap()
        .to_owned();
    assert!(uuid::Uuid::parse_str(&generated).is_ok(), "{generated}");
    assert_eq!(correlation_id(&store, "g1").await, Some(generated.clone()));

    // With an id: the same id back, and on the events.
    let mut request = as_(ADMIN, add_request(Some("g2"), "g2", "acme"));
    request
        .metadata_mut()
        .insert("x-request-id", "grpc-req-9".parse().unwrap());
    let added = c.add_human_user(request).await.unwrap();
    assert_eq!(added.metadata().get("x-request-id").unwrap(), "grpc-req-9");
    assert_eq!(
        correlation_id(&store, "g2").await.as_deref(),
        Some("grpc-req-9")
    );

    // A refused call has one too (the id of its log line).
    let refused = c
        .add_human_user(as_("wrong", add_request(Some("g3"), "g3", "acme")))
        .await
        .unwrap_err();
    let id = refused.metadata().get("x-request-id");
    assert!(id.is_some(), "{refused:?}");
    assert_ne!(id.unwrap(), generated.as_str(), "a new id per call");
    s.stop().await;
}

#[tokio::test]
async fn connect_calls_get_a_request_id_echoed_and_stored() {
    let store = Arc::new(MemoryStore::new());
    let s = TestServer::start(store.clone()).await;
    let url = s.url("/zitadel.user.v2.UserService/AddHumanUser");
    let body = |id: &str| {
        serde_json::json!({"userId": id, "username": id, "organization": {"orgId": "acme"}})
            .to_string()
    };
    let answer = s
        .client
        .post(&url)
        .bearer_auth(ADMIN)
        .header("content-type", "application/json")
        .body(body("c1"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let generated = answer.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(uuid::Uuid::parse_str(&generated).is_ok(), "{generated}");
    assert_eq!(correlation_id(&store, "c1").await, Some(generated));

    let answer = s
        .client
        .post(&url)
        .bearer_auth(ADMIN)
        .header("content-type", "application/json")
        .header("x-request-id", "connect-req-4")
        .body(body("c2"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.headers()["x-request-id"], "connect-req-4");
    assert_eq!(
        correlation_id(&store, "c2").await.as_deref(),
        Some("connect-req-4")
    );
    s.stop().await;
}
