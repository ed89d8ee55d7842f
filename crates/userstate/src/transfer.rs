//! Export and import: a store's whole log as JSON Lines of [`RecordedEvent`]s, one event per
//! line in position order. This is how a deployment moves from the embedded store to PostgreSQL
//! or KurrentDB: sequences, event ids and `createdAt` are kept; positions are assigned anew by
//! the target store, in the same order.
//!
//! Import reads its file twice: first it validates every line (JSON, gapless sequences per
//! stream, increasing positions, and the hash chain) and writes nothing if any line is bad;
//! then it appends. The second pass parses on a thread of its own and hands the store chunks
//! of appends (one per run of consecutive lines of one stream) through
//! [`EventStore::append_batch`], in file order: the file store queues a whole chunk before it
//! waits, so its group commit writes thousands of appends per `fdatasync` however the streams
//! interleave.
//!
//! The hash chain (ADR 0020): every exported line carries its event's `hash`. Import checks
//! the file's chain link by link, from the first line, as the source store wrote it (a line
//! changed, removed, inserted or moved in the file is refused with its line and position);
//! the target store then chains the events anew, because the chain covers positions, which
//! the target assigns. An export written before the chain (no `hash` on any line) is
//! imported unchecked; one with some lines hashed and some not is refused.
//!
//! Personal data (ADR 0021): an export of a sealing store holds it sealed and is written as
//! it is. Lines that hold it in clear (an export written before crypto-shredding) are sealed on the way in when the caller passes a
//! [`CryptoStore`] over the target ([`import_validated`]): their appends go through it, which
//! seals them under new per-user keys and names their username reservation streams by the
//! keyed hash. A reservation stream is taken as named in clear when its first event held its
//! username in clear.

use std::collections::{HashMap, HashSet};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::chain::EventHash;
use crate::crypto::{holds_clear_personal_data, CryptoStore};
use crate::domain::StreamKind;
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
/// `progress` gets the events written and the total.
pub async fn import_jsonl(
    store: &dyn EventStore,
    path: &Path,
    allow_non_empty: bool,
    progress: impl FnMut(u64, u64),
) -> Result<u64, TransferError> {
    let total = validate_jsonl(path)?;
    import_validated(store, None, path, total, allow_non_empty, progress).await
}

/// The second half of [`import_jsonl`], for a caller that ran [`validate_jsonl`] on `path`
/// itself (before it opened the store, so that a refused file leaves nothing behind) and got
/// `total`. With `sealer` (a [`CryptoStore`] over `store`), the appends of lines holding
/// personal data in clear go through it and are sealed (see the module docs); the others are
/// written to `store` as they are.
pub async fn import_validated(
    store: &dyn EventStore,
    sealer: Option<&CryptoStore>,
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
    let mut clear = ClearStreams::default();
    while let Some(chunk) = rx.recv().await {
        let chunk: Chunk = match chunk {
            Ok(chunk) => chunk,
            Err(e) => {
                failed = Some(e);
                break;
            }
        };
        let appended = match sealer {
            Some(sealer) => append_sealing(store, sealer, chunk, &mut clear).await,
            None => flush_run(store, chunk.appends, &chunk.lines).await,
        };
        match appended {
            Ok(n) => written += n,
            Err(e) => {
                failed = Some(e);
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

/// The username reservation streams of the file seen named in clear (see the module docs).
#[derive(Default)]
struct ClearStreams(HashSet<StreamId>);

impl ClearStreams {
    /// Whether `append` holds personal data in clear, or goes to a reservation stream named
    /// in clear; remembers such a stream.
    fn holds(&mut self, append: &Append) -> bool {
        let clear = append
            .events
            .iter()
            .any(|e| holds_clear_personal_data(&e.event_type, &e.payload));
        if StreamKind::of(append.stream.as_str()) == Some(StreamKind::Username) {
            if clear {
                self.0.insert(append.stream.clone());
            }
            return self.0.contains(&append.stream);
        }
        clear
    }
}

/// Appends `chunk` in order: each run of appends without personal data in clear as one batch
/// to `store`, each other append through `sealer`. Returns the events written.
async fn append_sealing(
    store: &dyn EventStore,
    sealer: &CryptoStore,
    chunk: Chunk,
    clear: &mut ClearStreams,
) -> Result<u64, TransferError> {
    let mut written = 0;
    let mut run: Vec<Append> = Vec::new();
    let mut run_lines: Vec<u64> = Vec::new();
    for (append, line) in chunk.appends.into_iter().zip(chunk.lines) {
        if !clear.holds(&append) {
            run.push(append);
            run_lines.push(line);
            continue;
        }
        written += flush_run(store, std::mem::take(&mut run), &run_lines).await?;
        run_lines.clear();
        let n = append.events.len() as u64;
        sealer
            .append(&append.stream, append.expected, append.events)
            .await
            .map_err(|source| TransferError::Append { line, source })?;
        written += n;
    }
    written += flush_run(store, run, &run_lines).await?;
    Ok(written)
}

/// Appends `appends` (starting on the lines `lines`) to `store` in one batch.
async fn flush_run(
    store: &dyn EventStore,
    appends: Vec<Append>,
    lines: &[u64],
) -> Result<u64, TransferError> {
    if appends.is_empty() {
        return Ok(0);
    }
    store
        .append_batch(appends)
        .await
        .map_err(|BatchError { index, error }| TransferError::Append {
            line: lines[index],
            source: error,
        })
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
}
