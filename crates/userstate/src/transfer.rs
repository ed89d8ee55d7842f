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
mod tests;
