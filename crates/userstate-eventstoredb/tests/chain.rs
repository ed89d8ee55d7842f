//! The hash chain on KurrentDB (ADR 0020), against the protocol test server: KurrentDB records
//! no chain (it orders events itself, with no lock a client could link under), so `verify`
//! computes it over `$all` as read, and a signed checkpoint proves the log up to it — a
//! payload changed on the server afterwards fails it.

#[allow(dead_code)]
mod support;

use support::server::TestServer;
use userstate::chain::{self, Checkpoint};
use userstate::store::{EventMetadata, NewEvent};
use userstate::verify::{verify_store, verify_store_against};
use userstate::{EventStore, ExpectedVersion, StreamId};
use userstate_eventstoredb::EsdbStore;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_proves_the_log_and_a_changed_payload_fails_it() {
    let server = TestServer::start();
    let store = EsdbStore::connect(&server.url()).await.unwrap();
    assert!(!store.stores_chain());
    for (i, s) in ["s-a", "s-b", "s-a", "s-c"].iter().enumerate() {
        let event = NewEvent::new(
            "test.happened",
            1,
            serde_json::json!({"n": i, "who": "alice"}),
            EventMetadata::default(),
        );
        store
            .append(
                &StreamId::new(*s).unwrap(),
                ExpectedVersion::Any,
                vec![event],
            )
            .await
            .unwrap();
    }
    let clean = verify_store(&store, |_| {}).await.unwrap();
    assert!(
        clean.is_clean() && !clean.chain_stored,
        "{:?}",
        clean.findings
    );
    assert_eq!(clean.events, 4);
    let key = chain::generate_key().unwrap();
    let checkpoint = Checkpoint::sign(&key, clean.head_position, clean.head_hash);
    let report = verify_store_against(&store, Some(&checkpoint), |_| {})
        .await
        .unwrap();
    assert!(report.checkpoint_proven, "{:?}", report.findings);

    // One byte of the second event's payload, changed on the server.
    server
        .log()
        .tamper_data(1, br#"{"n":1,"who":"alicf"}"#.to_vec());
    let report = verify_store_against(&store, Some(&checkpoint), |_| {})
        .await
        .unwrap();
    assert!(!report.checkpoint_proven);
    assert_eq!(report.findings.len(), 1, "{:?}", report.findings);
    assert_eq!(report.findings[0].position, Some(checkpoint.position));
    assert!(report.findings[0].problem.contains("checkpoint"));
}
