//! The embedded durable file store: an append-only, segmented log in one directory, written by
//! one syncer thread with group commit. The default backend.
//!
//! Format, write and read paths and the fault model are documented on [`FileStore`] (this
//! module is private; its public items are re-exported from [`crate::store`]). One file per
//! part: `record` (framing and codec), `segment` (files and their header), `manifest` (the
//! list of segments), `index` (the in-memory index), `writer` (the append queue, the syncer
//! and the publisher: group commit; `writer::resume`: repair after a failed write), `scan` and
//! `recovery` (open), `read` (positional reads), `lock` (the directory lock), `io` (the I/O
//! seam under the writer) and `faults` (its fault-injecting twin, feature `testkit`).

mod backup;
#[cfg(test)]
mod chain_tests;
#[cfg(feature = "testkit")]
pub mod faults;
mod index;
pub(crate) mod io;
mod lock;
mod manifest;
mod read;
pub mod record;
mod recovery;
mod scan;
mod segment;
mod writer;

pub use backup::BackupSummary;
pub use recovery::PendingRepair;

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicUsize;
use std::sync::mpsc;
use std::sync::{
    Arc, Condvar, Mutex, MutexGuard, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard,
};
use std::thread::JoinHandle;

use async_trait::async_trait;

use self::index::{Index, Span};
use self::io::{SegmentIo, StdIo};
use self::lock::DirLock;
use self::recovery::DIR_MODE;
use self::writer::{Queue, Syncer};
use super::{
    Append, BatchError, EventRef, EventStore, ExpectedVersion, NewEvent, RecordedEvent, StoreError,
    StreamId, Watermark,
};
use crate::chain::EventHash;

/// The default segment size: 128 MiB.
pub const DEFAULT_SEGMENT_SIZE: u64 = 128 << 20;
/// The largest segment size accepted: 1 GiB (offsets in the index are 32-bit).
pub const MAX_SEGMENT_SIZE: u64 = 1 << 30;

/// Options for opening a [`FileStore`].
#[derive(Clone, Debug)]
pub struct FileStoreOptions {
    segment_size: u64,
    io: Arc<dyn SegmentIo>,
}

impl Default for FileStoreOptions {
    fn default() -> Self {
        Self {
            segment_size: DEFAULT_SEGMENT_SIZE,
            io: Arc::new(StdIo),
        }
    }
}

impl FileStoreOptions {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// The size at which the log starts a new segment (clamped to 4 KiB ..= 1 GiB). A batch
    /// never spans segments, so a segment can exceed this by one batch.
    pub fn segment_size(mut self, bytes: u64) -> Self {
        self.segment_size = bytes.clamp(4096, MAX_SEGMENT_SIZE);
        self
    }

    /// Makes the store's writes and syncs go through `faults`, which can fail a chosen one
    /// (tests only: feature `testkit`).
    #[cfg(feature = "testkit")]
    pub fn fault_injector(mut self, faults: &crate::testkit::FaultInjector) -> Self {
        self.io = faults.io();
        self
    }

    /// Opens (or creates) the store in `dir` with these options. See [`FileStore::open`].
    pub fn open(self, dir: impl AsRef<Path>) -> Result<FileStore, StoreError> {
        FileStore::open_with(dir.as_ref(), self)
    }
}

/// A file written beside the log that must be durable before any batch that may depend on it
/// is: the file key store's `DATA/keys`, whose new keys seal the events of the next batches
/// (ADR 0021, "Keys in the log's group commit"). Attached with [`FileStore::attach_companion`],
/// it is synced by the store's syncer thread before each batch is written, so one group commit
/// makes both durable.
pub trait SyncCompanion: Send + Sync + 'static {
    /// Makes durable everything written to the companion before the call (no system call
    /// when nothing new was written). Called by the syncer before it writes each batch, and
    /// while it repairs after a failure. An error fails the batch as a failed write of the
    /// log does: nothing in it or queued behind it is acknowledged, appends stop, and they
    /// resume only once a later call (the syncer's repair retries it) succeeds.
    fn sync(&self) -> std::io::Result<()>;

    /// The syncer has stopped for good (the store closed, or it could not repair): no batch
    /// will sync the companion any more.
    fn detached(&self);
}

/// What the appenders, the syncer, the publisher and the readers share.
struct Shared {
    index: RwLock<Index>,
    head: Arc<Watermark>,
    /// Appends waiting for the disk (see `writer`).
    queue: Mutex<Queue>,
    /// Wakes the idle syncer when an append is queued.
    ready: Condvar,
    /// Synced batches handed to the publisher thread and not yet published.
    publishing: AtomicUsize,
    /// What the syncer syncs before each batch (see [`SyncCompanion`]).
    companion: OnceLock<Arc<dyn SyncCompanion>>,
}

impl Shared {
    fn new(index: Index) -> Result<Self, StoreError> {
        let head = index.head();
        let last_hash = head_hash(&index)?;
        Ok(Self {
            index: RwLock::new(index),
            head: Arc::new(Watermark::new(head)),
            queue: Mutex::new(Queue::new(head + 1, last_hash)),
            ready: Condvar::new(),
            publishing: AtomicUsize::new(0),
            companion: OnceLock::new(),
        })
    }

    fn lock_queue(&self) -> MutexGuard<'_, Queue> {
        writer::lock(&self.queue)
    }

    fn read_index(&self) -> RwLockReadGuard<'_, Index> {
        // The index is only changed by pushes that cannot panic half-way; a poisoned lock still
        // holds a consistent index.
        self.index.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write_index(&self) -> RwLockWriteGuard<'_, Index> {
        self.index.write().unwrap_or_else(|e| e.into_inner())
    }
}

/// The chain hash of the log's last durable event, read back from its record
/// ([`EventHash::ZERO`] for an empty log): what the next append chains from.
fn head_hash(index: &Index) -> Result<EventHash, StoreError> {
    let head = index.head();
    if head == 0 {
        return Ok(EventHash::ZERO);
    }
    let events = read::read_spans(&index.spans(&[head]))?;
    Ok(events.last().map_or(EventHash::ZERO, |e| e.hash))
}

/// The embedded durable file store: an append-only, segmented log in one directory, written by
/// one syncer thread with group commit. The default backend.
///
/// ```no_run
/// # async fn demo() -> Result<(), userstate::StoreError> {
/// use userstate::{EventStore, FileStore};
/// let store = FileStore::open("./userstate-data")?;
/// let head = store.head_position().await?;
/// # let _ = head; Ok(()) }
/// ```
///
/// # Layout
/// The directory holds `userstate.lock` (the OS lock keeping other writers out; read-only opens
/// take none, see [`FileStore::open_read_only`]), `manifest` (the list of segments) and segments
/// `segment-{first position:020}.log`. Each segment is a 16-byte header followed by record
/// frames (length, CRC32C of the length, CRC32C of the body, body; see
/// [`file_record`](crate::store::file_record)). The log
/// rotates to a new segment when a batch would take the current one past
/// [`FileStoreOptions::segment_size`]; sealed segments are cut to their last record and never
/// written again. The newest segment ends in zeros the writer wrote ahead of the log (up to
/// 256 KiB), which batches then overwrite in place: an `fdatasync` after an overwrite flushes data
/// only, while one after an append must also commit the file's new size (on the development
/// VM the in-place sync is about 1.6x faster; see docs/PERFORMANCE.md).
///
/// # Writes
/// Each append is checked against the stream's version (the index plus the appends queued
/// before it) and placed at the end of the open batch by its caller, under one short lock; a
/// conflict is answered at once. One syncer thread takes the whole open batch, writes it with
/// one `write` and calls `fdatasync` once, while the next batch fills; a publisher thread then
/// makes the batch visible to readers and the head watch and answers its callers. `Ok` means
/// durable; there is no relaxed mode. At most one batch is written and not yet synced at any
/// time, and the first record of each batch carries a batch-start mark.
///
/// # Reads
/// The index (in memory, rebuilt on open by one sequential scan) maps positions to offsets and
/// streams to positions. Reads copy what they need from it under a short lock and then read the
/// segment files with positional reads, so they never wait for the writer, and `read_all`
/// never loads more than the page it returns.
///
/// # Permissions
/// The directory is created with mode 0700 and every file in it with 0600 (events hold names
/// and email addresses); an open tightens a looser directory or file of the store.
///
/// # Fault model
/// What the store survives, what it detects and refuses, and what it cannot see (ADR 0011):
/// - **Survives: a crash at any moment** (process killed, power lost while the kernel wrote
///   any subset of the last batch's sectors). Acknowledged appends were synced before the
///   answer, so they are present after reopening. Only the batch being written when the crash
///   came can be damaged, and it was not acknowledged. In the last segment the log ends at the
///   first record that is cut short by the end of the file, or undecodable with a 512-byte
///   sector of it reading as zeros (a sector the torn write did not reach), *if no later batch
///   starts after it*: zeros from there on are space written ahead and kept; anything else is
///   the torn last batch and is truncated, together with the records of an append whose last
///   record is missing, so a multi-event append is all or nothing. The truncation is logged
///   (`warn`) with file and offset. A newest segment whose creation was cut short (header
///   incomplete, not yet in the manifest) is removed.
/// - **Survives: a failed write or sync while open** (a full disk, an I/O error). The callers
///   of the failed batch and of those queued behind it get an error (their events were not
///   acknowledged and never become visible); appends are refused and
///   [`EventStore::health`] reports it while the syncer repairs the segment without trusting
///   the page cache (truncated to the last synced batch, zeros ahead, fsynced, read back),
///   retrying with backoff; then appends resume at the next position.
/// - **Detects and refuses to open**: a whole record in the newest batch that fails its
///   checksum while every sector of it was written (damage, not a torn write); a damaged
///   record followed by the start of a later batch; a record cut short or damaged in a sealed
///   segment; positions out of order or sequences with a gap; a missing segment (listed in the
///   manifest and gone — the newest one included —, or the next one does not start where the
///   previous ended, or the first does not start at 1); a segment the manifest does not list
///   other than the newest; a damaged manifest; a file that is not a segment (bad magic); any
///   unexpected file in the directory. The error ([`StoreError::Corrupt`]) names the file and
///   the offset; the store never skips damage silently. Records are checksummed again on
///   every read.
/// - **Taken for a torn tail**, rarely: damage to the newest batch's first undecodable record
///   when the bytes from its start to the end of its 512-byte sector happen to be zero (it
///   starts within a few bytes of a sector's end with a length whose low bytes are zero). A
///   payload crafted to contain a whole frame with the batch-start mark could make a later
///   crash's torn tail be refused as corruption (an open that fails, never a silent loss).
/// - **Cannot see**: a change that keeps every checksum valid (a bit flip in a record with a
///   matching CRC32C collision, about 1 in 4 billion per damaged record); the newest segment
///   cut short at a record boundary or its last batches zeroed (a log that ended there); the
///   newest segment and the manifest lost together, or an older manifest copied over; a disk
///   or file system that acknowledges `fdatasync` without persisting (lying disks, some
///   virtualised storage); an operator copying an old directory over a newer one.
///
/// # What it is not
/// Not written by two processes (the lock refuses a second writer; any number of read-only
/// opens may read beside it), not replicated, and not compacted: the log only grows.
pub struct FileStore {
    dir: PathBuf,
    shared: Arc<Shared>,
    syncer: Option<JoinHandle<()>>,
    publisher: Option<JoinHandle<()>>,
    /// Opened by [`FileStore::open_read_only`]: no writer, nothing repaired.
    read_only: bool,
    /// What a read-only open left unrepaired.
    pending: Vec<PendingRepair>,
    /// A read-only open of a log of format 1, written before the hash chain: its events carry
    /// no hash, and [`EventStore::stores_chain`] is false (export computes the chain).
    unchained: bool,
    _lock: Option<DirLock>,
}

impl FileStore {
    /// Opens the store in `dir` with default options, creating the directory if needed.
    ///
    /// Takes the directory's lock (a second open, in this or another process, fails with
    /// [`StoreError::Unavailable`] naming the lock file), scans the log, truncates a torn tail,
    /// and refuses damaged logs with [`StoreError::Corrupt`] naming file and offset.
    pub fn open(dir: impl AsRef<Path>) -> Result<FileStore, StoreError> {
        FileStoreOptions::default().open(dir)
    }

    /// Options for a customised open.
    pub fn options() -> FileStoreOptions {
        FileStoreOptions::default()
    }

    /// Opens the store in `dir` to read it without changing anything in the directory: no
    /// file is created, written, truncated or removed (not even the lock file), and no lock is
    /// held. For `userstate verify`, `export`, `audit`, `backup` and the `user` reads, also
    /// while `serve` runs on the directory (ADR 0017).
    ///
    /// What it sees is a consistent prefix of the log, fixed at the open: every append
    /// acknowledged before the open started, and possibly later ones; never part of an append.
    /// Whether a writer holds the directory is asked first (a shared lock on the lock file,
    /// taken and released at once). If none does, the log is read as a crash left it and a torn
    /// tail is left as it is and reported by [`pending_repairs`](Self::pending_repairs). If one
    /// does, the newest segment's log ends at its last whole append: the batch the writer is
    /// writing is not looked into, nothing is reported, and an undecodable place is read again
    /// before it is called damage (it may be bytes being written). A writer can start while a
    /// read-only store is open.
    ///
    /// Appends fail with [`StoreError::Unavailable`]. Damage is refused with
    /// [`StoreError::Corrupt`], as by [`open`](Self::open).
    ///
    /// The snapshot does not follow the writer: [`head`](Self::head) stays where the open
    /// found it. One case reads differently from what the writer keeps: an append whose batch
    /// the writer had written but not yet synced when the open read it, and whose sync then
    /// failed (ADR 0011: the writer cuts it off and reuses its positions); such an append was
    /// never acknowledged.
    pub fn open_read_only(dir: impl AsRef<Path>) -> Result<FileStore, StoreError> {
        let dir = dir.as_ref();
        if !dir.is_dir() {
            return Err(StoreError::Io(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("no file store directory at {}", dir.display()),
            )));
        }
        let live = DirLock::writer_present(dir)?;
        let recovered = match recovery::recover(dir, None, live) {
            // A writer that started while this read saw the directory as a crash left it.
            Err(StoreError::Corrupt { .. }) if !live && DirLock::writer_present(dir)? => {
                recovery::recover(dir, None, true)?
            }
            other => other?,
        };
        let unchained = recovered.index.unchained == Some(true);
        Ok(FileStore {
            dir: dir.to_path_buf(),
            shared: Arc::new(Shared::new(recovered.index)?),
            syncer: None,
            publisher: None,
            read_only: true,
            pending: recovered.pending,
            unchained,
            _lock: None,
        })
    }

    /// What a read-only open found and left unrepaired (a torn tail, a segment whose creation
    /// was cut short, a missing manifest); the next writable open repairs them. Always empty
    /// for a store opened with [`open`](Self::open), which repairs them.
    pub fn pending_repairs(&self) -> &[PendingRepair] {
        &self.pending
    }

    fn open_with(dir: &Path, options: FileStoreOptions) -> Result<FileStore, StoreError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(dir)?;
        let lock = DirLock::acquire(dir)?;
        let recovered = recovery::recover(dir, Some(&*options.io), false)?;
        let shared = Arc::new(Shared::new(recovered.index)?);
        let last = recovered
            .last
            .expect("a writable open always leaves a segment to write");
        let syncer = Syncer::new(
            shared.clone(),
            dir.to_path_buf(),
            options.io.clone(),
            last,
            recovered.segments,
            options.segment_size,
        )?;
        let (synced_tx, synced_rx) = mpsc::channel();
        let publisher = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("userstate-file-publisher".into())
                .spawn(move || writer::publish(shared, synced_rx))?
        };
        let syncer = std::thread::Builder::new()
            .name("userstate-file-syncer".into())
            .spawn(move || syncer.run(synced_tx))?;
        Ok(FileStore {
            dir: dir.to_path_buf(),
            shared,
            syncer: Some(syncer),
            publisher: Some(publisher),
            read_only: false,
            pending: Vec::new(),
            unchained: false,
            _lock: Some(lock),
        })
    }

    /// The last durable position (what [`EventStore::head_position`] answers, without a
    /// runtime).
    pub fn head(&self) -> u64 {
        self.shared.read_index().head()
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Makes the syncer sync `companion` before every batch it writes from now on, and tells
    /// it when the syncer stops for good ([`SyncCompanion`]). Refused on a read-only store, on
    /// a store whose syncer has stopped, and when a companion is attached already.
    pub fn attach_companion(&self, companion: Arc<dyn SyncCompanion>) -> Result<(), StoreError> {
        if self.read_only {
            return Err(read_only(&self.dir));
        }
        writer::attach(&self.shared, companion)
    }

    /// Copies the log as this handle sees it (up to [`head`](Self::head), taken once when the
    /// copy starts) into `out`, which must not exist or be an empty directory: a store that
    /// [`open`](Self::open) opens as if it had been closed cleanly at that position. Changes
    /// nothing in this store's directory and takes no lock, so it works on a read-only handle
    /// while a writer appends (`userstate backup`, ADR 0017). Each copied file and the
    /// directory are fsynced; on failure what was created is removed. `progress` gets the
    /// bytes copied and the bytes to copy.
    pub fn backup(
        &self,
        out: impl AsRef<Path>,
        progress: impl FnMut(u64, u64),
    ) -> Result<BackupSummary, StoreError> {
        backup::backup(&self.shared, out.as_ref(), progress)
    }

    /// The spans of up to `limit` events from `from_position` on (none past the head).
    fn page(&self, from_position: u64, limit: usize) -> Vec<Span> {
        let from = from_position.max(1);
        let index = self.shared.read_index();
        let head = index.head();
        if from > head || limit == 0 {
            return Vec::new();
        }
        let last = head.min(from.saturating_add(limit as u64 - 1));
        let positions: Vec<u64> = (from..=last).collect();
        index.spans(&positions)
    }
}

impl Drop for FileStore {
    /// Lets the syncer write and sync what was queued (blocking the dropping thread that
    /// long) and the publisher answer it, then releases the lock, so the directory can be
    /// opened again as soon as `drop` returns.
    fn drop(&mut self) {
        writer::close(&self.shared);
        for handle in [self.syncer.take(), self.publisher.take()]
            .into_iter()
            .flatten()
        {
            let _ = handle.join();
        }
    }
}

#[async_trait]
impl EventStore for FileStore {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        if self.read_only {
            return Err(read_only(&self.dir));
        }
        let answer = writer::submit(&self.shared, stream, expected, events)?;
        answer.await.map_err(|_| writer::gone())?
    }

    /// Queues every append of the batch before it waits for any answer (each decided, and a
    /// conflict answered, as it is queued), so the syncer writes the batch with as few
    /// `fdatasync`s as its size allows; then waits for the answers in order. A failed append
    /// stops the queueing: nothing after it is queued, and since a failed write fails every
    /// batch queued behind it, nothing after it is committed.
    async fn append_batch(&self, appends: Vec<Append>) -> Result<u64, BatchError> {
        if self.read_only {
            return Err(BatchError {
                index: 0,
                error: read_only(&self.dir),
            });
        }
        let mut answers = Vec::with_capacity(appends.len());
        let mut refused = None;
        let mut count = 0;
        for (index, append) in appends.into_iter().enumerate() {
            count += append.events.len() as u64;
            match writer::submit(&self.shared, &append.stream, append.expected, append.events) {
                Ok(answer) => answers.push(answer),
                Err(error) => {
                    refused = Some(BatchError { index, error });
                    break;
                }
            }
        }
        for (index, answer) in answers.into_iter().enumerate() {
            let answered = answer.await.map_err(|_| writer::gone()).and_then(|a| a);
            if let Err(error) = answered {
                return Err(BatchError { index, error });
            }
        }
        match refused {
            Some(e) => Err(e),
            None => Ok(count),
        }
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        from_sequence: u64,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let spans = {
            let index = self.shared.read_index();
            let positions = index.stream_positions(stream.as_str(), from_sequence);
            if positions.is_empty() {
                return Ok(Vec::new());
            }
            index.spans(&positions)
        };
        read::read_spans(&spans)
    }

    async fn read_all(
        &self,
        from_position: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        read::read_spans(&self.page(from_position, limit))
    }

    async fn visit_all(
        &self,
        from_position: u64,
        limit: usize,
        visit: &mut (dyn for<'e> FnMut(EventRef<'e>) + Send),
    ) -> Result<usize, StoreError> {
        read::visit_spans(&self.page(from_position, limit), visit)
    }

    async fn head_position(&self) -> Result<u64, StoreError> {
        Ok(self.shared.read_index().head())
    }

    fn watch_head(&self) -> Arc<Watermark> {
        self.shared.head.clone()
    }

    /// `Err` while appends are refused: after a failed write or sync until the syncer has
    /// repaired the segment (ADR 0011), for good if it could not, and on a read-only store.
    /// False only for a read-only open of a log written before the hash chain (format 1).
    fn stores_chain(&self) -> bool {
        !self.unchained
    }

    fn health(&self) -> Result<(), StoreError> {
        if self.read_only {
            return Err(read_only(&self.dir));
        }
        writer::health(&self.shared)
    }
}

fn read_only(dir: &Path) -> StoreError {
    StoreError::Unavailable {
        message: format!("the file store in {} is open read-only", dir.display()),
        source: None,
    }
}
