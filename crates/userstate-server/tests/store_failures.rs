//! The error kinds only a failing store produces: Unavailable (503, code 14), Aborted after
//! the engine's retries (409, code 10) and Internal (500, code 13, details kept in the log).

mod common;

use std::sync::Arc;

use async_trait::async_trait;
use common::*;
use tokio::sync::watch;
use userstate::store::NewEvent;
use userstate::{EventStore, ExpectedVersion, MemoryStore, RecordedEvent, StoreError, StreamId};

/// How the store's appends fail (reads work).
#[derive(Clone, Copy)]
enum Failure {
    Unavailable,
    Conflict,
    Corrupt,
}

struct FailingStore {
    inner: MemoryStore,
    failure: Failure,
}

#[async_trait]
impl EventStore for FailingStore {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        _events: Vec<NewEvent>,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        Err(match self.failure {
            Failure::Unavailable => StoreError::Unavailable {
                message: "database restarting".into(),
                source: None,
            },
            Failure::Conflict => StoreError::Conflict {
                stream: stream.clone(),
                expected,
                actual: 99,
            },
            Failure::Corrupt => StoreError::Corrupt {
                location: "/secret/path/segment-1.log offset 42".into(),
                reason: "bad checksum".into(),
            },
        })
    }

    async fn read_stream(&self, s: &StreamId, from: u64) -> Result<Vec<RecordedEvent>, StoreError> {
        self.inner.read_stream(s, from).await
    }

    async fn read_all(&self, from: u64, limit: usize) -> Result<Vec<RecordedEvent>, StoreError> {
        self.inner.read_all(from, limit).await
    }

    async fn head_position(&self) -> Result<u64, StoreError> {
        self.inner.head_position().await
    }

    fn watch_head(&self) -> watch::Receiver<u64> {
        self.inner.watch_head()
    }
}

async fn server(failure: Failure) -> TestServer {
    TestServer::start(Arc::new(FailingStore {
        inner: MemoryStore::new(),
        failure,
    }))
    .await
}

#[tokio::test]
async fn store_unavailable_is_503_code_14() {
    let s = server(Failure::Unavailable).await;
    let r = s.add(ADMIN, "u1", "acme").await;
    assert_error(&r, 503, 14, "STORE-unavailable", "Errors.Store.Unavailable");
    s.stop().await;
}

#[tokio::test]
async fn conflicts_through_every_retry_are_409_code_10() {
    let s = server(Failure::Conflict).await;
    let r = s.add(ADMIN, "u1", "acme").await;
    assert_error(
        &r,
        409,
        10,
        "COMMAND-concurrent-change",
        "Errors.ConcurrentChange",
    );
    s.stop().await;
}

#[tokio::test]
async fn internal_failures_are_500_code_13_without_details() {
    let s = server(Failure::Corrupt).await;
    let r = s.add(ADMIN, "u1", "acme").await;
    assert_error(&r, 500, 13, "STORE-corrupt", "Errors.Internal");
    assert!(!r.text.contains("/secret/path"), "{}", r.text);
    s.stop().await;
}
