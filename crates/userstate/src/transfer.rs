//! Export and import: a store's whole log as JSON Lines of [`RecordedEvent`]s, one event per
//! line in position order. This is how a deployment moves from the embedded store to PostgreSQL
//! or KurrentDB: sequences, event ids and `createdAt` are kept; positions are assigned anew by
//! the target store, in the same order.
//!
//! Import reads its file twice: first it validates every line (JSON, gapless sequences per
//! stream, increasing positions, and the hash chain) and writes nothing if any line is bad;
//! then it appends.
//!
//! The hash chain (ADR 0016): every exported line carries its event's `hash`. Import checks
//! the file's chain link by link, from the first line, as the source store wrote it (a line
//! changed, removed, inserted or moved in the file is refused with its line and position);
//! the target store then chains the events anew, because the chain covers positions, which
//! the target assigns. An export written before the chain (no `hash` on any line) is
//! imported unchecked; one with some lines hashed and some not is refused.

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Write};
use std::path::Path;

use thiserror::Error;

use crate::chain::EventHash;
use crate::store::{EventStore, ExpectedVersion, NewEvent, RecordedEvent, StoreError, StreamId};

const PAGE: usize = 4096;
/// Events appended per call when consecutive lines belong to one stream.
const MAX_BATCH: usize = 512;

/// Why an export or import failed.
#[derive(Debug, Error)]
pub enum TransferError {
    /// Reading or writing the file failed.
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
    /// A line of the import file is not acceptable; nothing was written.
    #[error("line {line}: {reason}")]
    Line {
        /// 1-based line number.
        line: u64,
        /// What is wrong.
        reason: String,
    },
    /// The target store already has events and the caller did not allow that.
    #[error(
        "the target store is not empty (head position {0}); pass the override to import anyway"
    )]
    NotEmpty(u64),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Writes every event of `store` to `out`, one JSON object per line. Returns the count.
pub async fn export_jsonl(
    store: &dyn EventStore,
    mut out: impl Write,
    mut progress: impl FnMut(u64),
) -> Result<u64, TransferError> {
    let mut count = 0;
    let mut next = 1;
    // A store that records no chain (KurrentDB) exports the chain computed over its log.
    let compute = !store.stores_chain();
    let mut previous = EventHash::ZERO;
    loop {
        let mut page = store.read_all(next, PAGE).await?;
        let Some(last) = page.last() else { break };
        next = last.position + 1;
        for event in &mut page {
            if compute {
                event.hash = event.chain_hash(&previous);
                previous = event.hash;
            }
            serde_json::to_writer(&mut out, &*event).map_err(io::Error::from)?;
            out.write_all(b"\n")?;
        }
        count += page.len() as u64;
        progress(count);
    }
    out.flush()?;
    Ok(count)
}

fn lines(path: &Path) -> Result<impl Iterator<Item = (u64, io::Result<String>)>, TransferError> {
    let file = std::fs::File::open(path)?;
    Ok(BufReader::new(file)
        .lines()
        .enumerate()
        .map(|(i, l)| (i as u64 + 1, l))
        .filter(|(_, l)| l.as_ref().map_or(true, |l| !l.trim().is_empty())))
}

/// Checks every line of an export file without writing anything; returns the event count.
pub fn validate_jsonl(path: &Path) -> Result<u64, TransferError> {
    let mut last_sequence: HashMap<StreamId, u64> = HashMap::new();
    let mut last_position = 0;
    let mut count = 0;
    // Whether the file carries the chain (decided by its first line), and the last hash.
    let mut chained: Option<bool> = None;
    let mut previous_hash = EventHash::ZERO;
    for (line, text) in lines(path)? {
        let event: RecordedEvent =
            serde_json::from_str(&text?).map_err(|e| TransferError::Line {
                line,
                reason: format!("not a recorded event: {e}"),
            })?;
        let expected = last_sequence.get(&event.stream).copied().unwrap_or(0) + 1;
        if event.sequence != expected {
            return Err(TransferError::Line {
                line,
                reason: format!(
                    "stream {} has sequence {} where {expected} was expected",
                    event.stream, event.sequence
                ),
            });
        }
        if event.position <= last_position {
            return Err(TransferError::Line {
                line,
                reason: format!(
                    "position {} does not increase (after {last_position})",
                    event.position
                ),
            });
        }
        let has_hash = event.hash != EventHash::ZERO;
        if *chained.get_or_insert(has_hash) != has_hash {
            return Err(TransferError::Line {
                line,
                reason: "some lines carry a hash and some do not: not one export".into(),
            });
        }
        if has_hash && event.hash != event.chain_hash(&previous_hash) {
            return Err(TransferError::Line {
                line,
                reason: format!(
                    "hash chain broken at position {}: the event does not match its hash \
                     chained to the line before it (changed, inserted, moved, or a line \
                     before it was removed)",
                    event.position
                ),
            });
        }
        previous_hash = event.hash;
        last_sequence.insert(event.stream.clone(), event.sequence);
        last_position = event.position;
        count += 1;
    }
    Ok(count)
}

/// Validates `path` entirely, then appends its events to `store` in order, stream by stream
/// with exact expected versions. Refuses a non-empty store unless `allow_non_empty`.
pub async fn import_jsonl(
    store: &dyn EventStore,
    path: &Path,
    allow_non_empty: bool,
    mut progress: impl FnMut(u64, u64),
) -> Result<u64, TransferError> {
    let total = validate_jsonl(path)?;
    let head = store.head_position().await?;
    if head > 0 && !allow_non_empty {
        return Err(TransferError::NotEmpty(head));
    }
    let mut written = 0;
    let mut batch: Vec<RecordedEvent> = Vec::new();
    for (line, text) in lines(path)? {
        let event: RecordedEvent =
            serde_json::from_str(&text?).map_err(|e| TransferError::Line {
                line,
                reason: e.to_string(),
            })?;
        let same_stream = batch.last().is_some_and(|b| b.stream == event.stream);
        if !batch.is_empty() && (!same_stream || batch.len() >= MAX_BATCH) {
            written += flush(store, &mut batch).await?;
            progress(written, total);
        }
        batch.push(event);
    }
    written += flush(store, &mut batch).await?;
    progress(written, total);
    Ok(written)
}

async fn flush(
    store: &dyn EventStore,
    batch: &mut Vec<RecordedEvent>,
) -> Result<u64, TransferError> {
    let Some(first) = batch.first() else {
        return Ok(0);
    };
    let stream = first.stream.clone();
    let expected = ExpectedVersion::Exact(first.sequence - 1);
    let events: Vec<NewEvent> = batch.drain(..).map(NewEvent::from_recorded).collect();
    let n = events.len() as u64;
    store.append(&stream, expected, events).await?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;
    use crate::testkit_events as ev;

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
}
