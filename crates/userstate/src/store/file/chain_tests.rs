//! Tamper evidence on the file store: an attacker with write access to the segment rewrites
//! records with valid framing (fresh CRCs), and `verify` names the position (ADR 0020).

use std::path::{Path, PathBuf};

use super::record::{self, Decoded, Marks};
use super::segment::SEGMENT_HEADER_LEN;
use super::FileStore;
use crate::chain::{self, Checkpoint, EventHash};
use crate::store::{EventMetadata, EventStore, ExpectedVersion, NewEvent, RecordedEvent, StreamId};
use crate::verify::{verify_store, verify_store_against, Report};

/// Six single-event appends over three streams; positions 1..=6.
async fn seeded() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let store = FileStore::open(&path).unwrap();
    for (i, s) in ["s-a", "s-b", "s-a", "s-c", "s-b", "s-a"]
        .iter()
        .enumerate()
    {
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
    drop(store);
    (dir, path)
}

fn segment(dir: &Path) -> PathBuf {
    dir.join(super::segment::file_name(1))
}

/// The records of the first segment, decoded.
fn records(dir: &Path) -> Vec<RecordedEvent> {
    let bytes = std::fs::read(segment(dir)).unwrap();
    let mut at = SEGMENT_HEADER_LEN as usize;
    let mut out = Vec::new();
    while let Decoded::Record { record, len } = record::decode(&bytes[at..]) {
        out.push(record.to_event().unwrap());
        at += len;
    }
    out
}

/// Writes `events` back as the segment's records, with valid framing, zeros after them.
fn write_back(dir: &Path, events: &[RecordedEvent]) {
    let path = segment(dir);
    let old_len = std::fs::metadata(&path).unwrap().len() as usize;
    let mut bytes = std::fs::read(&path).unwrap()[..SEGMENT_HEADER_LEN as usize].to_vec();
    for (i, e) in events.iter().enumerate() {
        let marks = Marks {
            ends_append: true,
            starts_batch: i == 0,
        };
        record::encode(e, marks, &mut bytes).unwrap();
    }
    bytes.resize(old_len.max(bytes.len()), 0);
    std::fs::write(&path, bytes).unwrap();
}

/// What a careful attacker does after removing or inserting: positions and sequences made
/// gapless again, so the framing and the store's own open-time checks pass.
fn renumber(events: &mut [RecordedEvent]) {
    let mut versions = std::collections::HashMap::new();
    for (i, e) in events.iter_mut().enumerate() {
        e.position = i as u64 + 1;
        let v = versions.entry(e.stream.clone()).or_insert(0u64);
        *v += 1;
        e.sequence = *v;
    }
}

/// What an attacker who knows the chain does: every hash recomputed.
fn rechain(events: &mut [RecordedEvent]) {
    let mut previous = EventHash::ZERO;
    for e in events {
        e.hash = e.chain_hash(&previous);
        previous = e.hash;
    }
}

async fn verify(dir: &Path) -> Report {
    let store = FileStore::open_read_only(dir).unwrap();
    verify_store(&store, |_| {}).await.unwrap()
}

fn chain_positions(report: &Report) -> Vec<u64> {
    report
        .findings
        .iter()
        .filter(|f| f.problem.contains("hash"))
        .filter_map(|f| f.position)
        .collect()
}

#[tokio::test]
async fn a_clean_store_verifies_and_its_hashes_chain_from_zero() {
    let (_tmp, dir) = seeded().await;
    let report = verify(&dir).await;
    assert!(report.is_clean(), "{:?}", report.findings);
    assert_eq!(report.head_position, 6);
    let events = records(&dir);
    let mut previous = EventHash::ZERO;
    for e in &events {
        assert_eq!(e.hash, e.chain_hash(&previous), "position {}", e.position);
        previous = e.hash;
    }
    assert_eq!(report.head_hash, previous);
    // A reopened store chains on from the head it reads back.
    let store = FileStore::open(&dir).unwrap();
    let more = NewEvent::new(
        "test.happened",
        1,
        serde_json::json!({}),
        EventMetadata::default(),
    );
    let appended = store
        .append(
            &StreamId::new("s-d").unwrap(),
            ExpectedVersion::Any,
            vec![more],
        )
        .await
        .unwrap();
    assert_eq!(appended[0].hash, appended[0].chain_hash(&previous));
    drop(store);
    assert!(verify(&dir).await.is_clean());
}

#[tokio::test]
async fn a_changed_payload_with_fixed_up_framing_is_named_by_position() {
    let (_tmp, dir) = seeded().await;
    let mut events = records(&dir);
    events[2].payload = serde_json::json!({"n": 2, "who": "mallory"});
    write_back(&dir, &events);
    let report = verify(&dir).await;
    assert_eq!(chain_positions(&report), vec![3], "{:?}", report.findings);
    assert!(report.findings[0].to_string().contains("(position 3)"));
}

#[tokio::test]
async fn a_removed_event_is_named_where_the_chain_breaks() {
    let (_tmp, dir) = seeded().await;
    let mut events = records(&dir);
    events.remove(2);
    // Left as it is, the gap fails the store's own open with the position.
    write_back(&dir, &events);
    let err = FileStore::open_read_only(&dir)
        .err()
        .expect("a gap is refused");
    assert!(err.to_string().contains("expected position 3"), "{err}");
    // Renumbered, the framing is consistent again, but the chain is not.
    renumber(&mut events);
    write_back(&dir, &events);
    let report = verify(&dir).await;
    assert_eq!(
        chain_positions(&report).first(),
        Some(&3),
        "{:?}",
        report.findings
    );
}

#[tokio::test]
async fn an_inserted_event_is_named_by_position() {
    let (_tmp, dir) = seeded().await;
    let mut events = records(&dir);
    let mut forged = events[1].clone();
    forged.event_id = uuid::Uuid::new_v4();
    forged.payload = serde_json::json!({"forged": true});
    events.insert(2, forged);
    renumber(&mut events);
    // The forger even chains the new event to the one before it.
    events[2].hash = events[2].chain_hash(&events[1].hash);
    write_back(&dir, &events);
    let report = verify(&dir).await;
    // The forged event chains; the one it displaced (now position 4) no longer does.
    assert_eq!(
        chain_positions(&report).first(),
        Some(&4),
        "{:?}",
        report.findings
    );
    assert!(report.findings[0].problem.contains("position 3"));
}

#[tokio::test]
async fn two_swapped_events_are_named_by_position() {
    let (_tmp, dir) = seeded().await;
    let mut events = records(&dir);
    events.swap(2, 3);
    renumber(&mut events);
    write_back(&dir, &events);
    let report = verify(&dir).await;
    // 3 and 4 moved; 5 chained to the event that was at 4.
    assert_eq!(
        chain_positions(&report),
        vec![3, 4, 5],
        "{:?}",
        report.findings
    );
}

#[tokio::test]
async fn a_signed_checkpoint_proves_the_log_and_one_changed_byte_fails_it() {
    let (_tmp, dir) = seeded().await;
    let key = chain::generate_key().unwrap();
    let clean = verify(&dir).await;
    let checkpoint = Checkpoint::sign(&key, clean.head_position, clean.head_hash);
    checkpoint.check_signature(&key.verifying_key()).unwrap();
    let store = FileStore::open_read_only(&dir).unwrap();
    let report = verify_store_against(&store, Some(&checkpoint), |_| {})
        .await
        .unwrap();
    assert!(
        report.checkpoint_proven && report.is_clean(),
        "{:?}",
        report.findings
    );
    drop(store);

    // One byte of a payload before the checkpoint, framing fixed, the whole chain recomputed:
    // the chain alone verifies, the checkpoint does not.
    let mut events = records(&dir);
    events[1].payload = serde_json::json!({"n": 1, "who": "alicf"});
    rechain(&mut events);
    write_back(&dir, &events);
    assert!(verify(&dir).await.is_clean());
    let store = FileStore::open_read_only(&dir).unwrap();
    let report = verify_store_against(&store, Some(&checkpoint), |_| {})
        .await
        .unwrap();
    assert!(!report.checkpoint_proven);
    assert_eq!(report.findings.len(), 1, "{:?}", report.findings);
    assert_eq!(report.findings[0].position, Some(6));
    assert!(report.findings[0].problem.contains("checkpoint"));
}

#[tokio::test]
async fn a_checkpoint_past_the_end_of_a_truncated_log_fails() {
    let (_tmp, dir) = seeded().await;
    let clean = verify(&dir).await;
    let key = chain::generate_key().unwrap();
    let checkpoint = Checkpoint::sign(&key, clean.head_position, clean.head_hash);
    let mut events = records(&dir);
    events.truncate(4);
    let path = segment(&dir);
    let len = std::fs::metadata(&path).unwrap().len();
    write_back(&dir, &events);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), len);
    let store = FileStore::open_read_only(&dir).unwrap();
    let report = verify_store_against(&store, Some(&checkpoint), |_| {})
        .await
        .unwrap();
    assert!(!report.checkpoint_proven);
    assert!(
        report
            .findings
            .iter()
            .any(|f| f.problem.contains("not in the log")),
        "{:?}",
        report.findings
    );
}
