//! The hash chain on KurrentDB (ADR 0020), against the protocol test server. Every event's
//! custom metadata carries its link to the event before it **in its stream**, made at append
//! (the expected version fixes that event), so `verify` names the position of a changed,
//! removed, inserted or swapped event of a stream — with the revisions fixed up, as someone
//! with access to the server's files would. The global order (a whole stream cut out of the
//! server's files, events of different streams reordered) is covered by a signed checkpoint
//! over the chain computed over `$all`, which names the checkpoint's position; a stream
//! deleted or truncated through KurrentDB's API is named by its record (`tests/removals.rs`).

#[allow(dead_code)]
mod support;

use support::log::Log;
use support::server::TestServer;
use userstate::chain::{self, Checkpoint, EventHash};
use userstate::store::{EventMetadata, NewEvent};
use userstate::verify::{verify_store, verify_store_against, Report};
use userstate::{EventStore, ExpectedVersion, StreamId};
use userstate_eventstoredb::EsdbStore;

/// The streams of the events written, in log order (record index = position in this list).
const STREAMS: [&str; 6] = ["s-a", "s-b", "s-a", "s-c", "s-a", "s-b"];

/// A server with the six events of [`STREAMS`] (appended with exact expected versions, one
/// with `Any`), their positions, and a checkpoint signed over them.
async fn written() -> (TestServer, EsdbStore, Vec<u64>, Checkpoint) {
    let server = TestServer::start();
    let store = EsdbStore::connect(&server.url()).await.unwrap();
    let mut positions = Vec::new();
    for (i, s) in STREAMS.iter().enumerate() {
        let stream = StreamId::new(*s).unwrap();
        let version = STREAMS[..i].iter().filter(|x| *x == s).count() as u64;
        let expected = if i == 4 {
            ExpectedVersion::Any
        } else {
            ExpectedVersion::Exact(version)
        };
        let event = NewEvent::new(
            "test.happened",
            1,
            serde_json::json!({"n": i, "who": "alice"}),
            EventMetadata::default(),
        );
        let recorded = store.append(&stream, expected, vec![event]).await.unwrap();
        assert_eq!(recorded[0].sequence, version + 1);
        assert_ne!(recorded[0].hash, EventHash::ZERO, "the link is stored");
        positions.push(recorded[0].position);
    }
    let clean = verify_store(&store, |_| {}).await.unwrap();
    assert!(clean.is_clean(), "{:?}", clean.findings);
    assert_eq!((clean.events, clean.chain_breaks), (6, 0));
    let key = chain::generate_key().unwrap();
    let checkpoint = Checkpoint::sign(&key, clean.head_position, clean.head_hash);
    (server, store, positions, checkpoint)
}

/// Verifies after `tamper`, with and without the checkpoint (which must never be proven).
async fn tampered(tamper: impl FnOnce(&Log, &[u64])) -> (Vec<u64>, Report, u64) {
    let (server, store, positions, checkpoint) = written().await;
    tamper(&server.log(), &positions);
    let report = verify_store(&store, |_| {}).await.unwrap();
    let against = verify_store_against(&store, Some(&checkpoint), |_| {})
        .await
        .unwrap();
    assert!(!against.checkpoint_proven, "{:?}", against.findings);
    (positions, report, checkpoint.position)
}

/// The positions of the chain breaks found.
fn breaks(report: &Report) -> Vec<u64> {
    report
        .findings
        .iter()
        .filter(|f| f.problem.starts_with("hash chain broken"))
        .filter_map(|f| f.position)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_store_verifies_and_proves_its_checkpoint() {
    let (_server, store, _, checkpoint) = written().await;
    assert!(!store.stores_chain() && store.stores_stream_chain());
    let report = verify_store_against(&store, Some(&checkpoint), |_| {})
        .await
        .unwrap();
    assert!(report.checkpoint_proven, "{:?}", report.findings);
    assert!(!report.chain_stored);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_payload_is_named_by_its_position() {
    let (positions, report, _) = tampered(|log, _| {
        // One byte of s-a's second event.
        log.tamper_data(2, br#"{"n":2,"who":"alicf"}"#.to_vec());
    })
    .await;
    assert_eq!(breaks(&report), [positions[2]], "{:?}", report.findings);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_event_is_named_by_the_position_after_the_gap() {
    let (positions, report, _) = tampered(|log, _| log.tamper_remove(2)).await;
    // s-a's third event no longer links to the one before it (its sequence was fixed up).
    assert_eq!(breaks(&report), [positions[4]], "{:?}", report.findings);
    let problem = &report.findings[0].problem;
    assert!(
        problem.contains(&format!("position {}", positions[0])),
        "{problem}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inserted_event_is_named_by_its_position() {
    let (positions, report, _) =
        tampered(|log, _| log.tamper_insert(2, br#"{"n":9,"who":"mallory"}"#.to_vec())).await;
    let inserted = positions[1] + 1;
    let found = breaks(&report);
    assert_eq!(found.first(), Some(&inserted), "{:?}", report.findings);
    // The event it pushed down (renumbered) breaks too.
    assert!(found.contains(&positions[2]), "{:?}", report.findings);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_swapped_events_of_a_stream_are_named_by_position() {
    let (positions, report, _) = tampered(|log, _| log.tamper_swap(0, 2)).await;
    let found = breaks(&report);
    assert_eq!(found.first(), Some(&positions[0]), "{:?}", report.findings);
    assert!(found.contains(&positions[2]), "{:?}", report.findings);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_of_two_streams_swapped_show_against_the_checkpoint() {
    // s-b's first and s-c's first trade places in $all: each stream's own order holds, so
    // only the global order — the signed checkpoint — tells (at the checkpoint's position).
    let (_, report, _) = tampered(|log, _| log.tamper_swap(1, 3)).await;
    assert!(report.is_clean(), "{:?}", report.findings);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_link_is_reported() {
    let (positions, report, _) = tampered(|log, _| {
        log.tamper_custom_metadata(4, |meta| {
            meta.as_object_mut().unwrap().remove("chain");
        })
    })
    .await;
    assert_eq!(breaks(&report), [positions[4]], "{:?}", report.findings);
    assert!(report.findings[0].problem.contains("no link"));
}
