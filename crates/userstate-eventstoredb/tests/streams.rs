//! Stream-level behaviour beyond the conformance suite: naming, missing and deleted streams,
//! conflicts carrying the current revision, checkpoints resumable by a new store.

#[allow(dead_code)]
mod support;

use support::server::TestServer;
use userstate::testkit::{event, stream};
use userstate::{EventStore, ExpectedVersion, StoreError, StreamId};
use userstate_eventstoredb::EsdbStore;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_land_in_namespaced_streams_with_our_ids_and_types() {
    let server = TestServer::start();
    let store = EsdbStore::connect(&server.url()).await.unwrap();
    let s = StreamId::new("user:default:u1").unwrap();
    let e = event("user.locked", 1);
    let id = e.event_id;
    store
        .append(&s, ExpectedVersion::NoStream, vec![e])
        .await
        .unwrap();
    let raw = server
        .log()
        .stream(b"userstate-user:default:u1")
        .expect("not deleted");
    assert_eq!(raw.len(), 1);
    assert_eq!(raw[0].id, id);
    assert_eq!(raw[0].revision, 0);
    assert_eq!(raw[0].metadata["type"], "user.locked");
    assert_eq!(raw[0].metadata["content-type"], "application/json");
    let meta: serde_json::Value = serde_json::from_slice(&raw[0].custom_metadata).unwrap();
    assert_eq!(meta["instance"], "inst");
    assert_eq!(meta["resourceOwner"], "org");
    assert_eq!(meta["creator"], "tester");
    assert_eq!(meta["correlationId"], "c-1");
    assert_eq!(meta["revision"], 1);
    assert_eq!(store.esdb_stream_name(&s), "userstate-user:default:u1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_stream_is_a_clear_error_and_a_missing_one_is_empty() {
    let server = TestServer::start();
    let store = EsdbStore::connect(&server.url()).await.unwrap();
    assert!(store
        .read_stream(&stream("never"), 1)
        .await
        .unwrap()
        .is_empty());
    let s = stream("gone");
    store
        .append(&s, ExpectedVersion::NoStream, vec![event("t", 1)])
        .await
        .unwrap();
    // Tombstone it with the real client, as an operator would.
    let client = kurrentdb::Client::new(server.url().parse().unwrap()).unwrap();
    client
        .tombstone_stream(store.esdb_stream_name(&s), &Default::default())
        .await
        .unwrap();
    match store.read_stream(&s, 1).await {
        Err(StoreError::Backend { message, .. }) => {
            assert!(message.contains("deleted"), "{message}")
        }
        other => panic!("a deleted stream must be a clear error, got {other:?}"),
    }
    match store
        .append(&s, ExpectedVersion::Any, vec![event("t", 2)])
        .await
    {
        Err(StoreError::Backend { message, .. }) => {
            assert!(message.contains("deleted"), "{message}")
        }
        other => panic!(
            "appending to a deleted stream must be a clear error, got {other:?} {:?}",
            other.as_ref().err().and_then(std::error::Error::source)
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_store_resumes_from_a_checkpoint() {
    let server = TestServer::start();
    let first = EsdbStore::connect(&server.url()).await.unwrap();
    for i in 0..10 {
        first
            .append(
                &stream(&format!("c{}", i % 3)),
                ExpectedVersion::Any,
                vec![event("t", i)],
            )
            .await
            .unwrap();
    }
    let all = first.read_all(1, 100).await.unwrap();
    let checkpoint = all[4].position;
    drop(first);
    // A restarted process knows nothing but its checkpoint.
    let second = EsdbStore::connect(&server.url()).await.unwrap();
    assert_eq!(
        second.read_all(checkpoint + 1, 100).await.unwrap(),
        all[5..].to_vec()
    );
    assert_eq!(second.head_position().await.unwrap(), all[9].position);
}
