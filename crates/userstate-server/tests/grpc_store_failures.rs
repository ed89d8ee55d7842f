//! Over gRPC, the error kinds only a failing store produces: Unavailable (14), Aborted after the
//! engine's retries (10) and Internal (13, details kept in the log) — the same codes and
//! `ErrorDetail`s as the JSON API (tests/store_failures.rs).

mod common;
mod grpc_support;

use std::sync::Arc;

use async_trait::async_trait;
use common::*;
use grpc_support::*;
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

async fn add_with(failure: Failure) -> Result<(), tonic::Status> {
    let s = TestServer::start(Arc::new(FailingStore {
        inner: MemoryStore::new(),
        failure,
    }))
    .await;
    let result = v2(s.addr)
        .await
        .add_human_user(as_(ADMIN, add_request(Some("u1"), "u1", "acme")))
        .await
        .map(drop);
    s.stop().await;
    result
}

#[tokio::test]
async fn store_unavailable_is_code_14() {
    assert_status(
        add_with(Failure::Unavailable).await,
        14,
        "STORE-unavailable",
        "Errors.Store.Unavailable",
    );
}

#[tokio::test]
async fn conflicts_through_every_retry_are_code_10() {
    assert_status(
        add_with(Failure::Conflict).await,
        10,
        "COMMAND-concurrent-change",
        "Errors.ConcurrentChange",
    );
}

#[tokio::test]
async fn internal_failures_are_code_13_without_details() {
    let result = add_with(Failure::Corrupt).await;
    let status = result.clone().expect_err("fails");
    assert!(!status.message().contains("/secret/path"), "{status:?}");
    assert!(!String::from_utf8_lossy(status.details()).contains("/secret/path"));
    assert_status(result, 13, "STORE-corrupt", "Errors.Internal");
}
