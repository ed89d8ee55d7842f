//! The event feed through the real server (issue 26, SPEC.md "Event feed"): `GET /v2/events`
//! as Server-Sent Events read by a real HTTP client, and `userstate.events.v1.EventService`
//! over real gRPC (over Connect: `tests/connect_stream*.rs`). History then live, `id:` =
//! position, `data:` = the export line, `Last-Event-ID` over `afterPosition`, grants,
//! filters, a reader too far behind, a stalled reader that does not slow commands, and the
//! drain ending open streams.

mod common;
mod grpc_support;

use std::sync::Arc;
use std::time::Duration;

use common::revocable::*;
use common::*;
use grpc_support::*;
use reqwest::Method;
use serde_json::Value;
use tokio_stream::StreamExt;
use userstate::store::{EventMetadata, NewEvent};
use userstate::{EventStore, ExpectedVersion, MemoryStore, RecordedEvent, StreamId};
use userstate_server::grpc::pb::userstate::events::v1::event_service_client::EventServiceClient;
use userstate_server::grpc::pb::userstate::events::v1::SubscribeEventsRequest;

/// One Server-Sent Event.
#[derive(Debug, Default, Clone)]
struct Sse {
    id: Option<String>,
    event: Option<String>,
    data: String,
}

/// An open `text/event-stream` response, parsed as it arrives.
struct SseReader {
    body: std::pin::Pin<Box<dyn tokio_stream::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buffer: String,
}

impl SseReader {
    async fn open(s: &TestServer, query: &str, token: &str, last_event_id: Option<&str>) -> Self {
        let mut req = s
            .client
            .get(s.url(&format!("/v2/events{query}")))
            .bearer_auth(token);
        if let Some(id) = last_event_id {
            req = req.header("Last-Event-ID", id);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(
            resp.headers().get("content-type").unwrap(),
            "text/event-stream"
        );
        Self {
            body: Box::pin(resp.bytes_stream()),
            buffer: String::new(),
        }
    }

    /// The next event (comments skipped), `None` when the stream ended, waiting at most 10 s.
    async fn next(&mut self) -> Option<Sse> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut sse = Sse::default();
                let mut any = false;
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        sse.id = Some(v.trim_start().to_owned());
                        any = true;
                    } else if let Some(v) = line.strip_prefix("event:") {
                        sse.event = Some(v.trim_start().to_owned());
                        any = true;
                    } else if let Some(v) = line.strip_prefix("data:") {
                        if !sse.data.is_empty() {
                            sse.data.push('\n');
                        }
                        sse.data.push_str(v.strip_prefix(' ').unwrap_or(v));
                        any = true;
                    }
                }
                if any {
                    return Some(sse);
                }
                continue;
            }
            match tokio::time::timeout(Duration::from_secs(10), self.body.next())
                .await
                .expect("an event within 10 s")
            {
                Some(chunk) => self
                    .buffer
                    .push_str(std::str::from_utf8(&chunk.unwrap()).unwrap()),
                None => return None,
            }
        }
    }

    /// Whether nothing arrives within `wait` (keep-alive comments aside).
    async fn quiet_for(&mut self, wait: Duration) -> bool {
        tokio::time::timeout(wait, self.next()).await.is_err()
    }
}

/// The export line of every event of the public feed in the store, after `after`.
async fn export_lines(store: &dyn EventStore, after: u64) -> Vec<(u64, String)> {
    store
        .read_all(after + 1, 100_000)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.stream.as_str().starts_with("user:"))
        .map(|e| (e.position, serde_json::to_string(&e).unwrap()))
        .collect()
}

#[tokio::test]
async fn sse_sends_history_then_live_events_as_export_lines() {
    let store: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
    let s = TestServer::start(store.clone()).await;
    assert_eq!(s.add(ADMIN, "u1", "acme").await.status, 201);
    assert_eq!(s.post("/v2/users/u1/lock", ADMIN).await.status, 200);
    assert_eq!(s.add(ADMIN, "u2", "globex").await.status, 201);

    let mut feed = SseReader::open(&s, "?afterPosition=0", ADMIN, None).await;
    let history = export_lines(&*store, 0).await;
    assert_eq!(
        history.len(),
        3,
        "three user events (username streams excluded)"
    );
    for (position, line) in &history {
        let sse = feed.next().await.unwrap();
        assert_eq!(sse.id.as_deref(), Some(position.to_string().as_str()));
        assert_eq!(sse.event, None, "a plain message event");
        assert_eq!(&sse.data, line, "data is the export line, byte for byte");
        let event: RecordedEvent = serde_json::from_str(&sse.data).unwrap();
        assert_eq!(event.position, *position);
    }
    // Live: a command's event arrives once committed.
    let unlocked = s.post("/v2/users/u1/unlock", ADMIN).await;
    assert_eq!(unlocked.status, 200);
    let sse = feed.next().await.unwrap();
    assert_eq!(sse.id, Some(unlocked.position().to_string()));
    let event: Value = serde_json::from_str(&sse.data).unwrap();
    assert_eq!(event["type"], "user.unlocked", "{event}");
    assert_eq!(event["stream"], "user:i1:u1");
    assert!(
        feed.quiet_for(Duration::from_millis(300)).await,
        "nothing twice"
    );
    s.stop().await;
}

#[tokio::test]
async fn last_event_id_wins_over_after_position() {
    let store: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
    let s = TestServer::start(store.clone()).await;
    for id in ["u1", "u2", "u3"] {
        assert_eq!(s.add(ADMIN, id, "acme").await.status, 201);
    }
    let history = export_lines(&*store, 0).await;
    let (second, _) = history[1];
    let mut feed = SseReader::open(&s, "?afterPosition=0", ADMIN, Some(&second.to_string())).await;
    let sse = feed.next().await.unwrap();
    assert_eq!(sse.id, Some(history[2].0.to_string()));
    assert!(feed.quiet_for(Duration::from_millis(300)).await);
    // Without the header, afterPosition counts.
    let mut feed = SseReader::open(&s, &format!("?afterPosition={second}"), ADMIN, None).await;
    assert_eq!(
        feed.next().await.unwrap().id,
        Some(history[2].0.to_string())
    );
    s.stop().await;
}

/// A reader sees its instance and the organisations it may read only; asking for others
/// filters them out (as ListUsers does); types and orgs narrow further.
#[tokio::test]
async fn readers_see_only_what_their_token_grants() {
    let store: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
    let s = TestServer::start(store.clone()).await;
    assert_eq!(s.add(ADMIN, "a1", "acme").await.status, 201);
    assert_eq!(s.add(ADMIN, "g1", "globex").await.status, 201);
    assert_eq!(s.add(OTHER_INSTANCE, "x1", "acme").await.status, 201);
    assert_eq!(s.post("/v2/users/a1/lock", ADMIN).await.status, 200);
    assert_eq!(s.post("/v2/users/g1/lock", ADMIN).await.status, 200);
    // The last event: every reader below must have received what it may see before it.
    let last = s.add(ADMIN, "a2", "acme").await.position();

    async fn streams(s: &TestServer, query: &str, token: &str, last: u64) -> Vec<(String, String)> {
        let mut feed = SseReader::open(s, query, token, None).await;
        let mut seen = Vec::new();
        loop {
            // Readers that cannot see the last event stop at quiet.
            let Ok(Some(sse)) = tokio::time::timeout(Duration::from_millis(500), feed.next()).await
            else {
                return seen;
            };
            let e: Value = serde_json::from_str(&sse.data).unwrap();
            seen.push((
                e["stream"].as_str().unwrap().to_owned(),
                e["type"].as_str().unwrap().to_owned(),
            ));
            if sse.id == Some(last.to_string()) {
                return seen;
            }
        }
    }
    let acme = streams(&s, "", ACME_READER, last).await;
    let names: Vec<&str> = acme.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(
        names,
        ["user:i1:a1", "user:i1:a1", "user:i1:a2"],
        "{acme:?}"
    );
    let asked_other = streams(&s, "?orgs=globex", ACME_READER, last).await;
    assert!(asked_other.is_empty(), "{asked_other:?}");
    let admin_globex = streams(&s, "?orgs=globex", ADMIN, last).await;
    assert!(admin_globex.iter().all(|(s, _)| s == "user:i1:g1"));
    assert_eq!(admin_globex.len(), 2);
    let locks = streams(&s, "?types=user.locked,user.unlocked", ADMIN, last).await;
    assert_eq!(
        locks,
        [
            ("user:i1:a1".to_owned(), "user.locked".to_owned()),
            ("user:i1:g1".to_owned(), "user.locked".to_owned())
        ]
    );
    let other = streams(&s, "", OTHER_INSTANCE, last).await;
    let names: Vec<&str> = other.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(names, ["user:i2:x1"]);
    s.stop().await;
}

#[tokio::test]
async fn bad_requests_get_the_spec_error_body() {
    let s = TestServer::start(Arc::new(MemoryStore::new())).await;
    let no_token = s.call(Method::GET, "/v2/events", None, None).await;
    assert_error(
        &no_token,
        401,
        16,
        "AUTH-missing-token",
        "Errors.Token.Invalid",
    );
    let bad = s.get("/v2/events?afterPosition=-1", ADMIN).await;
    assert_eq!(bad.status, 400, "{}", bad.text);
    assert_eq!(bad.body["code"], 3);
    let bad_header = s
        .client
        .get(s.url("/v2/events"))
        .bearer_auth(ADMIN)
        .header("Last-Event-ID", "abc")
        .send()
        .await
        .unwrap();
    assert_eq!(bad_header.status(), 400);
    let too_many = (0..101)
        .map(|i| format!("t{i}"))
        .collect::<Vec<_>>()
        .join(",");
    let bad = s.get(&format!("/v2/events?types={too_many}"), ADMIN).await;
    assert_eq!(bad.status, 400, "{}", bad.text);
    s.stop().await;
}

fn test_events(n: usize) -> Vec<NewEvent> {
    (0..n)
        .map(|_| {
            NewEvent::new(
                "user.locked",
                1,
                serde_json::json!({}),
                EventMetadata {
                    instance: "i1".into(),
                    resource_owner: "acme".into(),
                    creator: "t".into(),
                    ..EventMetadata::default()
                },
            )
        })
        .collect()
}

/// A reader that falls too far behind gets one `error` event (ResourceExhausted, the SPEC
/// body) and its stream ends; it resumes from its last id and loses nothing.
#[tokio::test]
async fn a_reader_too_far_behind_gets_an_error_event_and_the_stream_ends() {
    let store: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
    let s = TestServer::start_config(store.clone(), |c| c.feed_max_lag = 5).await;
    let first = s.add(ADMIN, "u1", "acme").await.position();
    let mut feed = SseReader::open(&s, "", ADMIN, None).await;
    assert_eq!(feed.next().await.unwrap().id, Some(first.to_string()));
    // 50 events in one append: the head jumps past the limit at once.
    let stream = StreamId::new("user:i1:bulk").unwrap();
    store
        .append(&stream, ExpectedVersion::Any, test_events(50))
        .await
        .unwrap();
    let error = feed.next().await.unwrap();
    assert_eq!(error.event.as_deref(), Some("error"), "{error:?}");
    let body: Value = serde_json::from_str(&error.data).unwrap();
    assert_eq!(body["code"], 8, "{body}");
    assert_eq!(body["details"][0]["id"], "FEED-too-far-behind");
    assert!(feed.next().await.is_none(), "the stream ends");
    // Resuming from the last id it got (reading as it goes) gets everything.
    let mut again = SseReader::open(&s, "", ADMIN, Some(&first.to_string())).await;
    for _ in 0..50 {
        assert!(again.next().await.unwrap().event.is_none());
    }
    s.stop().await;
}

/// A stalled reader (it never reads its response) does not slow commands, and the drain ends
/// open streams instead of waiting out the grace.
#[tokio::test]
async fn a_stalled_reader_never_slows_commands_and_the_drain_ends_streams() {
    let store: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
    let s = TestServer::start(store.clone()).await;
    let stalled = s
        .client
        .get(s.url("/v2/events"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(stalled.status(), 200);
    let mut live = SseReader::open(&s, "", ADMIN, None).await;
    let started = std::time::Instant::now();
    for i in 0..300 {
        let id = format!("u{i}");
        assert_eq!(s.add(ADMIN, &id, "acme").await.status, 201);
    }
    let took = started.elapsed();
    assert!(took < Duration::from_secs(20), "300 adds took {took:?}");
    for _ in 0..300 {
        assert!(live.next().await.is_some());
    }
    let stopping = std::time::Instant::now();
    s.stop().await;
    assert!(
        stopping.elapsed() < Duration::from_secs(10),
        "the drain waited {:?} for open feeds",
        stopping.elapsed()
    );
    assert!(live.next().await.is_none(), "the stream ended");
    drop(stalled);
}

#[tokio::test]
async fn grpc_streams_the_same_events() {
    let store: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
    let s = TestServer::start(store.clone()).await;
    assert_eq!(s.add(ADMIN, "a1", "acme").await.status, 201);
    assert_eq!(s.add(ADMIN, "g1", "globex").await.status, 201);
    let mut client = EventServiceClient::new(channel(s.addr).await);
    let mut stream = client
        .subscribe_events(as_(
            ACME_READER,
            SubscribeEventsRequest {
                after_position: 0,
                types: vec![],
                orgs: vec![],
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    let history = export_lines(&*store, 0).await;
    assert_eq!((first.position, first.event.clone()), history[0].clone());
    let locked = s.post("/v2/users/a1/lock", ADMIN).await.position();
    let next = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(next.position, locked, "globex's user is not shown to acme");
    let event: Value = serde_json::from_str(&next.event).unwrap();
    assert_eq!(event["type"], "user.locked");

    // No token: Unauthenticated.
    let refused = client
        .subscribe_events(req(None, SubscribeEventsRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    drop(stream);
    s.stop().await;
}

/// A stream does not outlive its credentials: once the token is revoked, an open SSE stream and
/// an open gRPC stream get no further event: an Unauthenticated error, then the end.
#[tokio::test]
async fn a_revoked_token_ends_its_open_streams() {
    let store: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
    let (chain, revocable) = with_revocable();
    let s = TestServer::start_config(store.clone(), |config| {
        config.authenticator = Arc::new(chain)
    })
    .await;
    assert_eq!(s.add(ADMIN, "r1", "acme").await.status, 201);
    let mut sse = SseReader::open(&s, "?afterPosition=0", REVOCABLE, None).await;
    assert!(
        sse.next().await.unwrap().event.is_none(),
        "an event while valid"
    );
    let mut client = EventServiceClient::new(channel(s.addr).await);
    let mut grpc = client
        .subscribe_events(as_(REVOCABLE, SubscribeEventsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert!(
        grpc.message().await.unwrap().is_some(),
        "a message while valid"
    );

    revocable.set_revoked(true);
    tokio::time::sleep(userstate_server::feed::RECHECK + Duration::from_millis(200)).await;
    assert_eq!(s.post("/v2/users/r1/lock", ADMIN).await.status, 200);

    let refused = sse.next().await.expect("an error event, not the lock");
    assert_eq!(refused.event.as_deref(), Some("error"), "{refused:?}");
    let body: Value = serde_json::from_str(&refused.data).unwrap();
    assert_eq!(body["code"], 16, "Unauthenticated: {body}");
    assert!(sse.next().await.is_none(), "then the stream ends");

    let status = tokio::time::timeout(Duration::from_secs(10), grpc.message())
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    s.stop().await;
}
