//! Export and import: a store's whole log as JSON Lines of [`RecordedEvent`]s, one event per
//! line in position order. This is how a deployment moves from the embedded store to PostgreSQL
//! or KurrentDB: sequences, event ids and `createdAt` are kept; positions are assigned anew by
//! the target store, in the same order.
//!
//! Import reads its file twice: first it validates every line (JSON, gapless sequences per
//! stream, increasing positions) and writes nothing if any line is bad; then it appends. The
//! second pass parses on a thread of its own and hands the store chunks of appends (one per
//! run of consecutive lines of one stream) through [`EventStore::append_batch`], in file
//! order: the file store queues a whole chunk before it waits, so its group commit writes
//! thousands of appends per `fdatasync` however the streams interleave.

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::store::{
    Append, BatchError, EventStore, ExpectedVersion, NewEvent, RecordedEvent, StoreError, StreamId,
};

const PAGE: usize = 4096;
/// Events appended per call when consecutive lines belong to one stream.
const MAX_BATCH: usize = 512;
/// Events handed to the store per [`EventStore::append_batch`] (about 2–8 MiB encoded).
const CHUNK_EVENTS: usize = 8192;
/// Chunks parsed ahead of the store.
const CHUNKS_AHEAD: usize = 2;

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
    /// The store refused or failed the append of the event on this line (and everything
    /// after it); the lines before it were imported.
    #[error("line {line}: {source}")]
    Append {
        /// 1-based number of the append's first line.
        line: u64,
        /// Why.
        source: StoreError,
    },
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
    loop {
        let page = store.read_all(next, PAGE).await?;
        let Some(last) = page.last() else { break };
        next = last.position + 1;
        for event in &page {
            serde_json::to_writer(&mut out, event).map_err(io::Error::from)?;
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
        last_sequence.insert(event.stream.clone(), event.sequence);
        last_position = event.position;
        count += 1;
    }
    Ok(count)
}

/// Validates `path` entirely, then appends its events to `store` in order, stream by stream
/// with exact expected versions. Refuses a non-empty store unless `allow_non_empty`.
/// `progress` gets the events written and the total.
pub async fn import_jsonl(
    store: &dyn EventStore,
    path: &Path,
    allow_non_empty: bool,
    progress: impl FnMut(u64, u64),
) -> Result<u64, TransferError> {
    let total = validate_jsonl(path)?;
    import_validated(store, path, total, allow_non_empty, progress).await
}

/// The second half of [`import_jsonl`], for a caller that ran [`validate_jsonl`] on `path`
/// itself (before it opened the store, so that a refused file leaves nothing behind) and got
/// `total`.
pub async fn import_validated(
    store: &dyn EventStore,
    path: &Path,
    total: u64,
    allow_non_empty: bool,
    mut progress: impl FnMut(u64, u64),
) -> Result<u64, TransferError> {
    let head = store.head_position().await?;
    if head > 0 && !allow_non_empty {
        return Err(TransferError::NotEmpty(head));
    }
    let (tx, mut rx) = tokio::sync::mpsc::channel(CHUNKS_AHEAD);
    let reader = {
        let path = path.to_owned();
        std::thread::Builder::new()
            .name("userstate-import-reader".into())
            .spawn(move || read_chunks(path, tx))?
    };
    let mut written = 0;
    let mut failed = None;
    while let Some(chunk) = rx.recv().await {
        let chunk: Chunk = match chunk {
            Ok(chunk) => chunk,
            Err(e) => {
                failed = Some(e);
                break;
            }
        };
        match store.append_batch(chunk.appends).await {
            Ok(n) => written += n,
            Err(BatchError { index, error }) => {
                failed = Some(TransferError::Append {
                    line: chunk.lines[index],
                    source: error,
                });
                break;
            }
        }
        progress(written, total);
    }
    // Dropping the receiver stops the reader at its next chunk.
    drop(rx);
    let _ = reader.join();
    match failed {
        Some(e) => Err(e),
        None => {
            progress(written, total);
            Ok(written)
        }
    }
}

/// Appends of consecutive lines, and the line each starts on.
struct Chunk {
    appends: Vec<Append>,
    lines: Vec<u64>,
}

/// The import's reader thread: parses `path` into chunks of appends (consecutive lines of one
/// stream, up to [`MAX_BATCH`] events, make one append expecting the version before its first
/// event) and sends them in order; stops when the receiver is gone.
fn read_chunks(path: PathBuf, tx: tokio::sync::mpsc::Sender<Result<Chunk, TransferError>>) {
    let mut chunk = Chunk {
        appends: Vec::new(),
        lines: Vec::new(),
    };
    let mut events_in_chunk = 0;
    let lines = match lines(&path) {
        Ok(lines) => lines,
        Err(e) => {
            let _ = tx.blocking_send(Err(e));
            return;
        }
    };
    for (line, text) in lines {
        let parsed = text.map_err(TransferError::from).and_then(|text| {
            serde_json::from_str::<RecordedEvent>(&text).map_err(|e| TransferError::Line {
                line,
                reason: e.to_string(),
            })
        });
        let event = match parsed {
            Ok(event) => event,
            Err(e) => {
                let _ = tx.blocking_send(Err(e));
                return;
            }
        };
        let joins = chunk
            .appends
            .last()
            .is_some_and(|a| a.stream == event.stream && a.events.len() < MAX_BATCH);
        if !joins && events_in_chunk >= CHUNK_EVENTS {
            let full = std::mem::replace(
                &mut chunk,
                Chunk {
                    appends: Vec::new(),
                    lines: Vec::new(),
                },
            );
            if tx.blocking_send(Ok(full)).is_err() {
                return;
            }
            events_in_chunk = 0;
        }
        events_in_chunk += 1;
        match chunk.appends.last_mut() {
            Some(append) if joins => append.events.push(NewEvent::from_recorded(event)),
            _ => {
                chunk.appends.push(Append {
                    stream: event.stream.clone(),
                    expected: ExpectedVersion::Exact(event.sequence - 1),
                    events: vec![NewEvent::from_recorded(event)],
                });
                chunk.lines.push(line);
            }
        }
    }
    if !chunk.appends.is_empty() {
        let _ = tx.blocking_send(Ok(chunk));
    }
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
}
