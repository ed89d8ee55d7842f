//! Over gRPC, the error kinds only a failing store produces: Unavailable (14), Aborted after the
//! engine's retries (10) and Internal (13, details kept in the log) — the same codes and
//! `ErrorDetail`s as the JSON API (tests/store_failures.rs).

mod common;
mod grpc_support;

use std::sync::Arc;

use common::failing_store::{FailingStore, Failure};
use common::*;
use grpc_support::*;
use userstate::MemoryStore;

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
