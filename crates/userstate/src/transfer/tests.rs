use super::*;
use crate::store::MemoryStore;
use crate::testkit_events as ev;
use std::path::PathBuf;

#[tokio::test]
async fn export_then_import_keeps_histories() {
    let source = MemoryStore::new();
    for (s, n) in [("a", 3), ("b", 2), ("a", 1)] {
        let stream = StreamId::new(format!("t:{s}")).unwrap();
        source
            .append(&stream, ExpectedVersion::Any, ev(n))
            .await
            .unwrap();
    }
    let dir = std::env::temp_dir().join(format!("userstate-transfer-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("export.jsonl");
    let n = export_jsonl(&source, std::fs::File::create(&path).unwrap(), |_| {})
        .await
        .unwrap();
    assert_eq!(n, 6);
    let target = MemoryStore::new();
    assert_eq!(
        import_jsonl(&target, &path, false, |_, _| {})
            .await
            .unwrap(),
        6
    );
    for s in ["t:a", "t:b"] {
        let stream = StreamId::new(s).unwrap();
        let (a, b) = (
            source.read_stream(&stream, 1).await.unwrap(),
            target.read_stream(&stream, 1).await.unwrap(),
        );
        let strip = |v: Vec<RecordedEvent>| -> Vec<_> {
            v.into_iter()
                .map(|e| (e.event_id, e.sequence, e.created_at, e.payload))
                .collect()
        };
        assert_eq!(strip(a), strip(b));
    }
    // A second import into the now non-empty store is refused, and nothing is written.
    assert!(matches!(
        import_jsonl(&target, &path, false, |_, _| {}).await,
        Err(TransferError::NotEmpty(_))
    ));
    // A bad line is reported by number and nothing is written.
    let bad = dir.join("bad.jsonl");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines[3] = "{\"not\": \"an event\"}";
    std::fs::write(&bad, lines.join("\n")).unwrap();
    let fresh = MemoryStore::new();
    match import_jsonl(&fresh, &bad, false, |_, _| {}).await {
        Err(TransferError::Line { line, .. }) => assert_eq!(line, 4),
        other => panic!("expected a line error, got {other:?}"),
    }
    assert_eq!(fresh.head_position().await.unwrap(), 0);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Writes `store`'s export to a file in `dir` and returns its path.
async fn export_to(store: &dyn EventStore, dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    export_jsonl(store, std::fs::File::create(&path).unwrap(), |_| {})
        .await
        .unwrap();
    path
}

/// Interleaved streams (as live traffic writes them), more appends than a chunk holds and
/// runs longer than one append: an import into an empty file store gives the same export
/// (ids, sequences, times, and positions, assigned anew in file order), and the file
/// store's batched appends match the one-by-one default of the memory store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interleaved_export_imports_in_order_into_the_file_store() {
    let dir = tempfile::tempdir().unwrap();
    let source = MemoryStore::new();
    let mut seed = 7u64;
    for i in 0..(CHUNK_EVENTS as u64 * 2 + 100) {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        // Mostly one event to one of 500 streams; now and then a long run to one stream.
        let (stream, n) = if i % 997 == 0 {
            (format!("t:long{i}"), MAX_BATCH as u64 + 3)
        } else {
            (format!("t:s{}", (seed >> 33) % 500), 1 + (seed >> 60) % 2)
        };
        let stream = StreamId::new(stream).unwrap();
        source
            .append(&stream, ExpectedVersion::Any, ev(n))
            .await
            .unwrap();
    }
    let path = export_to(&source, dir.path(), "source.jsonl").await;
    let target = crate::FileStore::open(dir.path().join("store")).unwrap();
    let mut seen = Vec::new();
    let n = import_jsonl(&target, &path, false, |done, total| {
        seen.push((done, total))
    })
    .await
    .unwrap();
    assert_eq!(n, source.head_position().await.unwrap());
    assert!(
        seen.windows(2).all(|w| w[0].0 <= w[1].0),
        "progress only grows"
    );
    assert_eq!(seen.last(), Some(&(n, n)));
    let copy = export_to(&target, dir.path(), "target.jsonl").await;
    // The file store keeps times in µs, the memory store in ns.
    let events = |path: &Path| -> Vec<_> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| {
                let e: RecordedEvent = serde_json::from_str(l).unwrap();
                let micros = e.created_at.timestamp_micros();
                (
                    e.event_id, e.stream, e.sequence, e.position, micros, e.payload,
                )
            })
            .collect()
    };
    let (want, got) = (events(&path), events(&copy));
    assert_eq!(want.len(), got.len());
    for (w, g) in want.iter().zip(&got) {
        assert_eq!(w, g, "the import holds the export, positions included");
    }
}

/// An append the store refuses (a stream already there, imported with the override) names
/// the line of its first event; the lines before it are imported, nothing after it.
#[tokio::test]
async fn a_refused_append_names_its_line_and_nothing_after_it_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let source = MemoryStore::new();
    for s in ["t:a", "t:b", "t:c", "t:d"] {
        let stream = StreamId::new(s).unwrap();
        source
            .append(&stream, ExpectedVersion::Any, ev(2))
            .await
            .unwrap();
    }
    let path = export_to(&source, dir.path(), "source.jsonl").await;
    let target = crate::FileStore::open(dir.path().join("store")).unwrap();
    target
        .append(&StreamId::new("t:c").unwrap(), ExpectedVersion::Any, ev(1))
        .await
        .unwrap();
    match import_jsonl(&target, &path, true, |_, _| {}).await {
        Err(TransferError::Append { line, source }) => {
            assert_eq!(line, 5, "t:c starts on line 5");
            assert!(matches!(source, StoreError::Conflict { .. }), "{source:?}");
        }
        other => panic!("expected an append error, got {other:?}"),
    }
    // One event of its own, then t:a and t:b: nothing of t:c or t:d.
    assert_eq!(target.head_position().await.unwrap(), 5);
    let d = target
        .read_stream(&StreamId::new("t:d").unwrap(), 1)
        .await
        .unwrap();
    assert!(d.is_empty());
}

/// An export holding personal data in clear (written before crypto-shredding) is sealed
/// by an import with a sealer: nothing personal is stored in clear, the reservation
/// stream is named by the keyed hash, and the sealer reads every event back as exported.
/// Lines already sealed are written as they are.
#[tokio::test]
async fn an_import_with_a_sealer_seals_lines_in_clear() {
    use crate::crypto::{KeyStore, MemoryKeyStore};
    use crate::store::EventMetadata;
    use serde_json::json;
    use std::sync::Arc;
    let event = |t: &str, payload| NewEvent::new(t, 1, payload, EventMetadata::default());
    let source = MemoryStore::new();
    let name = StreamId::new("username:i:alice.clear").unwrap();
    let user = StreamId::new("user:i:u").unwrap();
    let reserved = json!({"userId": "u", "username": "Alice.Clear"});
    let added = json!({"username": "Alice.Clear", "resourceOwner": "o",
        "email": {"email": "alice@clear.example"}});
    for (stream, e) in [
        (&name, event("username.reserved", reserved.clone())),
        (&user, event("user.human.added", added.clone())),
        (&user, event("user.locked", json!({}))),
        (&name, event("username.released", json!({"userId": "u"}))),
    ] {
        source
            .append(stream, ExpectedVersion::Any, vec![e])
            .await
            .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let path = export_to(&source, dir.path(), "clear.jsonl").await;

    let target = Arc::new(MemoryStore::new());
    let keys: Arc<dyn KeyStore> = Arc::new(MemoryKeyStore::new());
    let sealer = CryptoStore::new(target.clone(), keys);
    let total = validate_jsonl(&path).unwrap();
    let n = import_validated(&*target, Some(&sealer), &path, total, false, |_, _| {})
        .await
        .unwrap();
    assert_eq!(n, 4);
    let raw = target.read_all(1, 100).await.unwrap();
    let text = serde_json::to_string(&raw).unwrap();
    assert!(!text.to_lowercase().contains("alice"), "{text}");
    assert_eq!(raw[0].stream, sealer.stored_name(&name));
    assert_eq!(raw[3].stream, sealer.stored_name(&name));
    let report = crate::verify::verify_store(&*target, |_| {}).await.unwrap();
    assert!(report.is_clean(), "{:?}", report.findings);
    let opened = sealer.read_stream(&name, 1).await.unwrap();
    assert_eq!(opened[0].payload, reserved);
    assert_eq!(
        sealer.read_stream(&user, 1).await.unwrap()[0].payload,
        added
    );
    for (a, b) in source.read_all(1, 100).await.unwrap().iter().zip(&raw) {
        assert_eq!((a.event_id, a.sequence), (b.event_id, b.sequence));
    }

    // The sealed store's export goes through a sealer unchanged.
    let sealed = export_to(&*target, dir.path(), "sealed.jsonl").await;
    let again = Arc::new(MemoryStore::new());
    let sealer = CryptoStore::new(again.clone(), Arc::new(MemoryKeyStore::new()));
    let total = validate_jsonl(&sealed).unwrap();
    import_validated(&*again, Some(&sealer), &sealed, total, false, |_, _| {})
        .await
        .unwrap();
    let copy = again.read_all(1, 100).await.unwrap();
    let strip = |v: &[RecordedEvent]| -> Vec<_> {
        v.iter()
            .map(|e| (e.stream.clone(), e.payload.clone()))
            .collect()
    };
    assert_eq!(strip(&copy), strip(&raw));
}

/// Export lines carry the chain; import checks it (a changed line is refused by line and
/// position) and the target chains anew; an export without hashes is imported unchecked.
#[tokio::test]
async fn import_checks_the_exported_chain_and_the_target_chains_anew() {
    let source = MemoryStore::new();
    for s in ["a", "b", "a"] {
        let stream = StreamId::new(format!("t:{s}")).unwrap();
        source
            .append(&stream, ExpectedVersion::Any, ev(2))
            .await
            .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("export.jsonl");
    export_jsonl(&source, std::fs::File::create(&path).unwrap(), |_| {})
        .await
        .unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let mut events: Vec<RecordedEvent> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(events.iter().all(|e| e.hash != EventHash::ZERO));
    let write = |events: &[RecordedEvent]| {
        let lines: Vec<String> = events
            .iter()
            .map(|e| serde_json::to_string(e).unwrap())
            .collect();
        std::fs::write(&path, lines.join("\n")).unwrap();
    };

    let target = MemoryStore::new();
    import_jsonl(&target, &path, false, |_, _| {})
        .await
        .unwrap();
    let imported = target.read_all(1, 100).await.unwrap();
    let report = crate::verify::verify_store(&target, |_| {}).await.unwrap();
    assert!(report.is_clean(), "{:?}", report.findings);
    assert_eq!(report.head_hash, imported.last().unwrap().hash);

    events[3].payload = serde_json::json!({"changed": true});
    write(&events);
    match validate_jsonl(&path) {
        Err(TransferError::Line { line, reason }) => {
            assert_eq!(line, 4);
            assert!(reason.contains("position 4"), "{reason}");
        }
        other => panic!("expected a broken chain, got {other:?}"),
    }

    for e in &mut events {
        e.hash = EventHash::ZERO;
    }
    write(&events);
    assert_eq!(
        validate_jsonl(&path).unwrap(),
        6,
        "an export from before the chain"
    );
}
