//! Graceful shutdown: a request in flight when the shutdown starts still gets its answer, and
//! the server then stops.

mod common;

use std::sync::Arc;

use async_trait::async_trait;
use common::*;
use tokio::sync::{mpsc, watch, Mutex};
use userstate::store::{NewEvent, StoreWrapper};
use userstate::{EventStore, ExpectedVersion, MemoryStore, RecordedEvent, StoreError, StreamId};

/// A memory store whose appends to user streams wait until the test opens the gate.
struct GateStore {
    inner: MemoryStore,
    entered: mpsc::UnboundedSender<()>,
    gate: Mutex<watch::Receiver<bool>>,
}

#[async_trait]
impl StoreWrapper for GateStore {
    fn inner(&self) -> &dyn EventStore {
        &self.inner
    }

    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        if stream.as_str().starts_with("user:") && events[0].event_type == "user.locked" {
            let _ = self.entered.send(());
            let mut gate = self.gate.lock().await.clone();
            let _ = gate.wait_for(|open| *open).await;
        }
        self.inner.append(stream, expected, events).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_requests_finish_after_shutdown_starts() {
    let (entered_tx, mut entered) = mpsc::unbounded_channel();
    let (open, gate) = watch::channel(false);
    let store = Arc::new(GateStore {
        inner: MemoryStore::new(),
        entered: entered_tx,
        gate: Mutex::new(gate),
    });
    let mut s = TestServer::start(store).await;
    assert_eq!(s.add(ADMIN, "u1", "acme").await.status, 201);
    let lock = tokio::spawn(TestServer::answer(
        s.client.post(s.url("/v2/users/u1/lock")).bearer_auth(ADMIN),
    ));
    entered.recv().await.expect("the lock reached the store");
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
    open.send_replace(true);
    let answer = lock.await.unwrap();
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(answer.body["details"]["sequence"], "2");
    s.stop().await;
}
