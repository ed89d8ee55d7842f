//! The file key store of the embedded store: `DATA/keys` (ADR 0021), and how its new keys
//! become durable — by its own sync thread, or inside the file store's group commit when the
//! two are used together ([`FileKeyStore::sync_with`]).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use tokio::sync::watch;

use super::key_file::{open_in_place, read_key_file, write_key_file};
pub use super::key_file::{KEY_FILE, KEY_FILE_CHUNK};
use super::keys::{destroyed, other_secret, KeyExport, KeyStore, UserKey};
use crate::store::file::io::{write_all_at, SegmentFile, SegmentIo, StdIo};
use crate::store::{FileStore, StoreError, SyncCompanion};

/// The file key store of the embedded store: `DATA/keys`, mode 0600, one line per fact —
/// `secret B64` (first), `key ID B64` for every key made, then zeros. A new key is written in
/// place over the zeros and synced before any event sealed with it can be acknowledged; the
/// zeros are written [`KEY_FILE_CHUNK`] bytes at a time ahead of the lines, so most syncs do
/// not change the file's size (ADR 0007: an `fdatasync` that changes the size also writes the
/// inode; ADR 0021). Readers stop at the first NUL and drop a last line without its newline
/// (torn by a crash, or being written). A destroyed key is dropped by rewriting the file (a
/// new file, synced, renamed over the old one), so its bytes are in no file userstate keeps.
///
/// Who syncs a new key:
/// - alone (with any other store, or before [`sync_with`](Self::sync_with)): `create` waits
///   for a sync thread of the key store (one at a time; concurrent makers share its sync);
/// - with the file store it was attached to by [`sync_with`](Self::sync_with): that store's
///   syncer syncs the key file before it writes each batch, so `create` returns as soon as
///   the key's line is written, and the batch holding the event sealed with it makes the key
///   durable first (one group commit, no thread of the key store's own).
///
/// After a failed sync the file's page cache is not trusted (Linux may have dropped the
/// failed pages and marked them clean): the next sync rewrites the whole file from memory
/// instead, in a new epoch.
pub struct FileKeyStore {
    shared: Arc<Shared>,
}

struct Shared {
    path: PathBuf,
    /// The I/O of the file written in place (real, or fault-injecting in tests).
    io: Arc<dyn SegmentIo>,
    state: Mutex<FileState>,
    /// One sync or rewrite at a time (lock order: this, then `state`), and what only they
    /// change: whether the file must be rewritten before it can be trusted.
    sync_lock: Mutex<SyncState>,
    /// `(epoch, synced offset, error of the last sync)`: the one record of what is synced.
    /// A maker waits here rather than on a blocking thread of its own, so 64 makers cost one
    /// sync thread, not 64 threads taking turns at a mutex (the CPU of issue 28's create).
    progress: watch::Sender<Progress>,
    /// A sync thread runs (or is about to): makers only wait.
    syncing: AtomicBool,
    /// A file store's syncer syncs this file before each batch ([`FileKeyStore::sync_with`]):
    /// makers do not wait for a sync.
    partnered: AtomicBool,
}

/// What a maker waits for: the key file's epoch (a rewrite starts a new one, in which every
/// key is synced), the offset synced and the last sync's error.
#[derive(Clone, Default)]
struct Progress {
    epoch: u64,
    synced: u64,
    error: Option<Arc<str>>,
}

/// Behind `Shared::sync_lock`.
#[derive(Default)]
struct SyncState {
    /// The file does not hold what memory does and must be rewritten from memory: a sync of
    /// it failed (its pages may be lost and marked clean), or a rewrite failed (a destroyed
    /// key may still be in it).
    rewrite: bool,
}

struct FileState {
    secret: [u8; 32],
    keys: HashMap<String, (UserKey, u64)>,
    destroyed: HashSet<String>,
    /// Written with positional writes (not in append mode): lines go over the zeros.
    file: Arc<dyn SegmentFile>,
    /// Where the next line goes: the end of the lines.
    len: u64,
    /// How many times the file was rewritten (offsets of another epoch are synced).
    epoch: u64,
    /// The file's size: the end of the zeros written ahead.
    allocated: u64,
}

impl FileKeyStore {
    /// Opens (creating when missing, mode 0600) the key store `DIR/keys`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        Self::open_with(dir, Arc::new(StdIo))
    }

    /// Opens the key store `DIR/keys` with the file it writes in place going through
    /// `faults`, which can fail a chosen write or sync (tests only: feature `testkit`). The
    /// rewrite after a failed sync (and after a destroy) goes to the disk directly.
    #[cfg(feature = "testkit")]
    pub fn open_with_faults(
        dir: &Path,
        faults: &crate::testkit::FaultInjector,
    ) -> Result<Self, StoreError> {
        Self::open_with(dir, faults.io())
    }

    fn open_with(dir: &Path, io: Arc<dyn SegmentIo>) -> Result<Self, StoreError> {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(dir)?;
        let path = dir.join(KEY_FILE);
        let (secret, keys) = match read_key_file(&path)? {
            Some(read) => read,
            None => {
                let secret = UserKey::generate();
                write_key_file(&path, &secret.0, std::iter::empty())?;
                (secret.0, Vec::new())
            }
        };
        let (file, len, allocated) = open_in_place(&*io, &path)?;
        Ok(Self {
            shared: Arc::new(Shared {
                path,
                io,
                state: Mutex::new(FileState {
                    secret,
                    keys: keys.into_iter().map(|(id, k)| (id, (k, 0))).collect(),
                    destroyed: HashSet::new(),
                    file,
                    len,
                    epoch: 0,
                    allocated,
                }),
                sync_lock: Mutex::default(),
                progress: watch::Sender::new(Progress {
                    synced: len,
                    ..Progress::default()
                }),
                syncing: false.into(),
                partnered: false.into(),
            }),
        })
    }

    /// Makes `store`'s syncer sync this key file before each batch it writes (ADR 0021, "Keys
    /// in the log's group commit"); from then on `create` and `create_soon` return as soon as
    /// a new key's line is written, without a sync of their own, until that syncer stops.
    ///
    /// Sound only when every event sealed with a key of this store is appended to `store`
    /// (what `userstate` assembles: `DATA/events` and `DATA/keys`): the key's line is written
    /// before `create` returns, so before the sealed event is queued, and the sync before the
    /// batch holding the event covers it. Refused when `store` is read-only, has stopped, or
    /// has another companion.
    pub fn sync_with(&self, store: &FileStore) -> Result<(), StoreError> {
        store.attach_companion(self.shared.clone())?;
        self.shared.partnered.store(true, Ordering::Release);
        Ok(())
    }

    /// The key `id`, the epoch and the file offset its line ends at, appended (not synced)
    /// when new.
    fn append_key(&self, id: &str) -> Result<(UserKey, u64, u64), StoreError> {
        let mut state = lock(&self.shared.state);
        if let Some((key, offset)) = state.keys.get(id) {
            return Ok((key.clone(), state.epoch, *offset));
        }
        if state.destroyed.contains(id) {
            return Err(destroyed(id));
        }
        let key = UserKey::generate();
        let line = format!("key {id} {}\n", key.to_b64());
        let end = state.len + line.len() as u64;
        if end > state.allocated {
            // Zeros ahead, synced with the next key: that sync changes the size.
            let allocated = end.next_multiple_of(KEY_FILE_CHUNK);
            let zeros = vec![0; (allocated - state.allocated) as usize];
            write_all_at(&*state.file, &zeros, state.allocated)?;
            state.allocated = allocated;
        }
        write_all_at(&*state.file, line.as_bytes(), state.len)?;
        state.len = end;
        state.keys.insert(id.to_owned(), (key.clone(), end));
        Ok((key, state.epoch, end))
    }

    /// The content of the key store `DIR/keys` without opening it for writing (for `export
    /// --keys` while `serve` runs); `None` when there is no key file.
    pub fn read_export(dir: &Path) -> Result<Option<KeyExport>, StoreError> {
        Ok(
            read_key_file(&dir.join(KEY_FILE))?.map(|(secret, keys)| KeyExport {
                username_secret: B64.encode(secret),
                keys: keys.into_iter().map(|(id, k)| (id, k.to_b64())).collect(),
            }),
        )
    }
}

/// A lock whose data stays consistent when a holder panicked (nothing panics half-way
/// through a change).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    /// Makes every line written before the call durable: syncs the file up to its current
    /// end (one sync covers every key appended before it started), or rewrites it when it
    /// cannot be trusted, and tells the waiting makers. On failure the error is also theirs,
    /// and the next call rewrites the file.
    fn sync_now(&self) -> Result<(), Arc<str>> {
        let mut sync = lock(&self.sync_lock);
        if sync.rewrite {
            let mut state = lock(&self.state);
            let rewritten = self.rewrite(&mut sync, &mut state);
            return rewritten
                .map_err(|e| self.failed(format!("rewriting {}: {e}", self.path.display())));
        }
        let (file, len, epoch) = {
            let state = lock(&self.state);
            (state.file.clone(), state.len, state.epoch)
        };
        let synced = {
            let progress = self.progress.borrow();
            progress.epoch == epoch && progress.synced >= len
        };
        if synced {
            return Ok(());
        }
        match file.sync_data() {
            Ok(()) => {
                self.progress.send_replace(Progress {
                    epoch,
                    synced: len,
                    error: None,
                });
                Ok(())
            }
            Err(e) => {
                sync.rewrite = true;
                Err(self.failed(format!("syncing {}: {e}", self.path.display())))
            }
        }
    }

    /// Tells the waiting makers that a sync failed; the error, for the caller.
    fn failed(&self, error: String) -> Arc<str> {
        let error: Arc<str> = error.into();
        self.progress.send_modify(|p| p.error = Some(error.clone()));
        error
    }

    /// Rewrites the file from memory (every live key, synced, in a new epoch in which every
    /// key counts as synced); on failure the file stays to be rewritten.
    fn rewrite(&self, sync: &mut SyncState, state: &mut FileState) -> std::io::Result<()> {
        sync.rewrite = true;
        let keys: Vec<_> = state.keys.iter().map(|(i, (k, _))| (i, k)).collect();
        write_key_file(&self.path, &state.secret, keys.into_iter())?;
        (state.file, state.len, state.allocated) = open_in_place(&*self.io, &self.path)?;
        state.epoch += 1;
        for (_, offset) in state.keys.values_mut() {
            *offset = 0;
        }
        self.progress.send_replace(Progress {
            epoch: state.epoch,
            synced: state.len,
            error: None,
        });
        sync.rewrite = false;
        Ok(())
    }

    /// Whether the line ending at `offset` in `epoch` is known synced.
    fn covered(&self, epoch: u64, offset: u64) -> bool {
        let progress = self.progress.borrow();
        progress.epoch != epoch || progress.synced >= offset
    }

    /// Whether lines were written that are not known synced.
    fn unsynced(&self) -> bool {
        let (epoch, len) = {
            let state = lock(&self.state);
            (state.epoch, state.len)
        };
        !self.covered(epoch, len)
    }

    /// Starts a sync thread unless one runs; it syncs until nothing is left to sync.
    fn start_sync(self: &Arc<Self>) {
        if self.syncing.swap(true, Ordering::AcqRel) {
            return;
        }
        let shared = self.clone();
        tokio::task::spawn_blocking(move || loop {
            let ok = shared.sync_now().is_ok();
            shared.syncing.store(false, Ordering::Release);
            if !ok {
                // The waiters have the error; the next maker tries again.
                break;
            }
            // A key appended after that sync read the end, whose maker saw `syncing` set and
            // started no thread: go on for it.
            if !shared.unsynced() || shared.syncing.swap(true, Ordering::AcqRel) {
                break;
            }
        });
    }

    /// Returns once the key line ending at `offset` in `epoch` is synced.
    async fn synced(self: &Arc<Self>, epoch: u64, offset: u64) -> Result<(), StoreError> {
        let covered = |p: &Progress| p.epoch != epoch || p.synced >= offset;
        let mut progress = self.progress.subscribe();
        // What is there now answers only if it covers the key: the error of a sync that
        // ended before this call is not this key's (the sync started below may succeed).
        if covered(&progress.borrow_and_update()) {
            return Ok(());
        }
        self.start_sync();
        loop {
            progress
                .changed()
                .await
                .map_err(|e| backend("key store sync", e))?;
            let now = progress.borrow_and_update().clone();
            if covered(&now) {
                return Ok(());
            }
            if let Some(error) = now.error {
                return Err(backend(
                    "key store sync",
                    std::io::Error::other(error.to_string()),
                ));
            }
        }
    }
}

/// The file store's syncer syncs the key file before each batch (see
/// [`FileKeyStore::sync_with`]).
impl SyncCompanion for Shared {
    fn sync(&self) -> std::io::Result<()> {
        self.sync_now()
            .map_err(|e| std::io::Error::other(format!("the key store: {e}")))
    }

    fn detached(&self) {
        self.partnered.store(false, Ordering::Release);
    }
}

fn backend(message: &str, source: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::Backend {
        message: message.into(),
        source: Some(Box::new(source)),
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Backend {
            message: "key store task failed".into(),
            source: Some(Box::new(e)),
        })?
}

#[async_trait]
impl KeyStore for FileKeyStore {
    fn username_secret(&self) -> [u8; 32] {
        lock(&self.shared.state).secret
    }

    fn cached(&self, id: &str) -> Option<Option<UserKey>> {
        let state = lock(&self.shared.state);
        Some(state.keys.get(id).map(|(k, _)| k.clone()))
    }

    async fn load(&self, id: &str) -> Result<Option<UserKey>, StoreError> {
        Ok(self.cached(id).flatten())
    }

    /// Waits for the key's sync unless a file store's syncer makes it durable before the
    /// batch of the event sealed with it ([`FileKeyStore::sync_with`]).
    async fn create(&self, id: &str) -> Result<UserKey, StoreError> {
        let (key, epoch, offset) = self.append_key(id)?;
        if !self.shared.partnered.load(Ordering::Acquire) && !self.shared.covered(epoch, offset) {
            self.shared.synced(epoch, offset).await?;
        }
        Ok(key)
    }

    async fn create_soon(&self, id: &str) -> Result<UserKey, StoreError> {
        let (key, epoch, offset) = self.append_key(id)?;
        if !self.shared.partnered.load(Ordering::Acquire) && !self.shared.covered(epoch, offset) {
            // Errors show again on the `create` that waits for this sync.
            self.shared.start_sync();
        }
        Ok(key)
    }

    async fn destroy(&self, id: &str) -> Result<(), StoreError> {
        let shared = self.shared.clone();
        let id = id.to_owned();
        blocking(move || {
            let mut sync = lock(&shared.sync_lock);
            let mut state = lock(&shared.state);
            state.destroyed.insert(id.clone());
            // A rewrite that failed earlier may have left a destroyed key in the file.
            if state.keys.remove(&id).is_none() && !sync.rewrite {
                return Ok(());
            }
            Ok(shared.rewrite(&mut sync, &mut state)?)
        })
        .await
    }

    async fn export(&self) -> Result<KeyExport, StoreError> {
        let state = lock(&self.shared.state);
        Ok(KeyExport {
            username_secret: B64.encode(state.secret),
            keys: (state.keys.iter())
                .map(|(id, (k, _))| (id.clone(), k.to_b64()))
                .collect(),
        })
    }

    async fn import(&self, export: &KeyExport) -> Result<(), StoreError> {
        let (secret, imported) = export.parse()?;
        let shared = self.shared.clone();
        blocking(move || {
            let mut sync = lock(&shared.sync_lock);
            let mut state = lock(&shared.state);
            if !state.keys.is_empty() && secret != state.secret {
                return Err(other_secret());
            }
            state.secret = secret;
            for (id, key) in imported {
                state.keys.insert(id, (key, 0));
            }
            Ok(shared.rewrite(&mut sync, &mut state)?)
        })
        .await
    }
}

#[cfg(test)]
#[path = "file_keys_tests.rs"]
mod tests;
