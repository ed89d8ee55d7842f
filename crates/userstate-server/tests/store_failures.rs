//! The error kinds only a failing store produces: Unavailable (503, code 14), Aborted after
//! the engine's retries (409, code 10) and Internal (500, code 13, details kept in the log).

mod common;

use std::sync::Arc;

use common::failing_store::{FailingStore, Failure};
use common::*;
use userstate::MemoryStore;

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
