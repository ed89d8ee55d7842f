//! Graceful shutdown: a request in flight when the shutdown starts still gets its answer, and
//! the server then stops.

mod common;

use std::sync::Arc;

use common::*;
use userstate::store::NewEvent;
use userstate::testkit::GatedStore;
use userstate::{MemoryStore, StreamId};

/// A lock's append (the request in flight) waits at the gate while it is closed.
fn a_lock(stream: &StreamId, events: &[NewEvent]) -> bool {
    stream.as_str().starts_with("user:") && events[0].event_type == "user.locked"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_requests_finish_after_shutdown_starts() {
    let store = Arc::new(GatedStore::new(Arc::new(MemoryStore::new()), a_lock));
    store.close();
    let mut s = TestServer::start(store.clone()).await;
    assert_eq!(s.add(ADMIN, "u1", "acme").await.status, 201);
    let lock = tokio::spawn(TestServer::answer(
        s.client.post(s.url("/v2/users/u1/lock")).bearer_auth(ADMIN),
    ));
    store.entered().await;
    s.begin_shutdown();
    // The server stops accepting new connections while the lock is still waiting.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut refused = false;
    while std::time::Instant::now() < deadline {
        let fresh = reqwest::Client::new();
        if fresh.get(s.url("/healthz")).send().await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(
        refused,
        "new connections are still accepted after shutdown began"
    );
    assert!(
        !lock.is_finished(),
        "the lock finished before the gate opened"
    );
    store.open();
    let answer = lock.await.unwrap();
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(answer.body["details"]["sequence"], "2");
    s.stop().await;
}
