//! Key stores: where the per-user keys and the instance-wide username secret live, apart from
//! the log (ADR 0021). Destroying a user's key is the erasure of that user's personal data;
//! losing the whole key store is the erasure of everyone's.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use async_trait::async_trait;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use chacha20poly1305::aead::{KeyInit, OsRng};
use chacha20poly1305::ChaCha20Poly1305;
use serde::{Deserialize, Serialize};

use crate::store::StoreError;

/// A user's data key (ChaCha20-Poly1305, 256 bits). Its `Debug` never shows the bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct UserKey(pub [u8; 32]);

impl fmt::Debug for UserKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("UserKey(***)")
    }
}

impl UserKey {
    /// A new random key.
    pub fn generate() -> Self {
        Self(ChaCha20Poly1305::generate_key(&mut OsRng).into())
    }

    fn from_b64(text: &str) -> Option<Self> {
        B64.decode(text).ok()?.try_into().ok().map(Self)
    }

    fn to_b64(&self) -> String {
        B64.encode(self.0)
    }
}

/// A key store's whole content, as `userstate export --keys` writes it and `import --keys`
/// reads it: the username secret and every live key, base64, by key id (`{instance}:{user}`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyExport {
    /// The instance-wide secret the username reservation streams are named with.
    pub username_secret: String,
    /// Key id -> key.
    pub keys: BTreeMap<String, String>,
}

impl KeyExport {
    /// The export of `secret` and `keys`.
    pub fn encode(secret: &[u8; 32], keys: impl IntoIterator<Item = (String, UserKey)>) -> Self {
        Self {
            username_secret: B64.encode(secret),
            keys: keys.into_iter().map(|(id, k)| (id, k.to_b64())).collect(),
        }
    }

    /// The username secret and the keys, decoded.
    pub fn decode(&self) -> Result<KeyFile, StoreError> {
        self.parse()
    }

    fn parse(&self) -> Result<KeyFile, StoreError> {
        let bad = |what: &str| StoreError::InvalidArgument(format!("key export: {what}"));
        let secret = UserKey::from_b64(&self.username_secret)
            .ok_or_else(|| bad("usernameSecret is not 32 bytes of base64"))?;
        let keys = self
            .keys
            .iter()
            .map(|(id, key)| {
                UserKey::from_b64(key)
                    .map(|k| (id.clone(), k))
                    .ok_or_else(|| bad("a key is not 32 bytes of base64"))
            })
            .collect::<Result<_, _>>()?;
        Ok((secret.0, keys))
    }
}

/// Where the keys live. Every method but [`cached`](Self::cached) may do I/O.
#[async_trait]
pub trait KeyStore: Send + Sync + 'static {
    /// The instance-wide secret the username reservation streams are named with.
    fn username_secret(&self) -> [u8; 32];

    /// The key `id` if the store knows without I/O: `Some(Some(key))`, `Some(None)` (no such
    /// key: erased or never made), `None` (ask [`load`](Self::load)).
    fn cached(&self, id: &str) -> Option<Option<UserKey>>;

    /// The key `id`, `None` when there is none (erased, or never made).
    async fn load(&self, id: &str) -> Result<Option<UserKey>, StoreError>;

    /// The key `id`, made (durably) when there is none yet. Refused for a key that was
    /// destroyed.
    async fn create(&self, id: &str) -> Result<UserKey, StoreError>;

    /// Like [`create`](Self::create), but may return before the new key is durable (its
    /// sync already under way): for an event whose loss in a crash loses nothing — the
    /// username reservation an add makes before the user's event, which is sealed with the
    /// same key after a [`create`](Self::create) that waits for that sync.
    async fn create_soon(&self, id: &str) -> Result<UserKey, StoreError> {
        self.create(id).await
    }

    /// Destroys the key `id` for good (the erasure); no error when there is none.
    async fn destroy(&self, id: &str) -> Result<(), StoreError>;

    /// Drops `id` from a cache: another node may have destroyed it.
    fn forget(&self, _id: &str) {}

    /// Everything, for `export --keys`.
    async fn export(&self) -> Result<KeyExport, StoreError>;

    /// Takes the keys (and the username secret) of an export, for `import --keys`; refused
    /// when this store already has keys under another username secret.
    async fn import(&self, export: &KeyExport) -> Result<(), StoreError>;
}

/// Keys in memory (with [`MemoryStore`](crate::MemoryStore): both die with the process).
pub struct MemoryKeyStore {
    secret: RwLock<[u8; 32]>,
    keys: RwLock<HashMap<String, UserKey>>,
    destroyed: RwLock<std::collections::HashSet<String>>,
}

impl Default for MemoryKeyStore {
    fn default() -> Self {
        Self {
            secret: RwLock::new(UserKey::generate().0),
            keys: RwLock::default(),
            destroyed: RwLock::default(),
        }
    }
}

impl MemoryKeyStore {
    /// An empty key store with a new random username secret.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl KeyStore for MemoryKeyStore {
    fn username_secret(&self) -> [u8; 32] {
        *self.secret.read().expect("not poisoned")
    }

    fn cached(&self, id: &str) -> Option<Option<UserKey>> {
        Some(self.keys.read().expect("not poisoned").get(id).cloned())
    }

    async fn load(&self, id: &str) -> Result<Option<UserKey>, StoreError> {
        Ok(self.cached(id).flatten())
    }

    async fn create(&self, id: &str) -> Result<UserKey, StoreError> {
        if let Some(key) = self.keys.read().expect("not poisoned").get(id) {
            return Ok(key.clone());
        }
        if self.destroyed.read().expect("not poisoned").contains(id) {
            return Err(destroyed(id));
        }
        let mut keys = self.keys.write().expect("not poisoned");
        Ok(keys
            .entry(id.to_owned())
            .or_insert_with(UserKey::generate)
            .clone())
    }

    async fn destroy(&self, id: &str) -> Result<(), StoreError> {
        self.destroyed
            .write()
            .expect("not poisoned")
            .insert(id.to_owned());
        self.keys.write().expect("not poisoned").remove(id);
        Ok(())
    }

    async fn export(&self) -> Result<KeyExport, StoreError> {
        Ok(KeyExport {
            username_secret: B64.encode(self.username_secret()),
            keys: (self.keys.read().expect("not poisoned").iter())
                .map(|(id, k)| (id.clone(), k.to_b64()))
                .collect(),
        })
    }

    async fn import(&self, export: &KeyExport) -> Result<(), StoreError> {
        let (secret, imported) = export.parse()?;
        let mut keys = self.keys.write().expect("not poisoned");
        if !keys.is_empty() && secret != self.username_secret() {
            return Err(other_secret());
        }
        *self.secret.write().expect("not poisoned") = secret;
        keys.extend(imported);
        Ok(())
    }
}

/// The refusal to make again a key that was destroyed.
pub fn destroyed(id: &str) -> StoreError {
    StoreError::InvalidArgument(format!("the key of {id} was destroyed (erased user)"))
}

/// The refusal to import keys made under another username secret into a store with keys.
pub fn other_secret() -> StoreError {
    StoreError::InvalidArgument(
        "the key store already holds keys under another username secret; import the keys \
         into an empty store"
            .into(),
    )
}

/// The file key store of the embedded store: `DATA/keys`, mode 0600, one line per fact —
/// `secret B64` (first), `key ID B64` for every key made, then zeros. A new key is written in
/// place over the zeros and synced (one sync thread at a time; concurrent makers share its
/// sync) before the event sealed with it is appended; the zeros are written [`KEY_FILE_CHUNK`]
/// bytes at a time ahead of the lines, so most syncs do not change the file's size (ADR 0007:
/// an `fdatasync` that changes the size also writes the inode; ADR 0021). Readers stop at the
/// first NUL and drop a last line without its newline (torn by a crash, or being written). A
/// destroyed key is dropped by rewriting the file (a new file, synced, renamed over the old
/// one), so its bytes are in no file userstate keeps.
pub struct FileKeyStore {
    shared: Arc<Shared>,
}

struct Shared {
    path: PathBuf,
    state: Mutex<FileState>,
    /// The file offset known synced; held while syncing so concurrent makers share a sync
    /// (taken on blocking threads only).
    synced: Mutex<u64>,
    /// The same offset, for a check that never waits for a sync.
    synced_hint: std::sync::atomic::AtomicU64,
    /// `(epoch, synced offset, error of the last sync)`, for makers waiting for a sync: a
    /// maker waits here rather than on a blocking thread of its own, so 64 makers cost one
    /// sync thread, not 64 threads taking turns at `synced` (the CPU of issue 28's create).
    progress: tokio::sync::watch::Sender<Progress>,
    /// A sync thread runs (or is about to): makers only wait.
    syncing: std::sync::atomic::AtomicBool,
}

/// What a maker waits for: the key file's epoch (a rewrite starts a new one, in which every
/// key is synced), the offset synced and the last sync's error.
#[derive(Clone, Default)]
struct Progress {
    epoch: u64,
    synced: u64,
    error: Option<Arc<str>>,
}

struct FileState {
    secret: [u8; 32],
    keys: HashMap<String, (UserKey, u64)>,
    destroyed: std::collections::HashSet<String>,
    /// Written with `write_at` (not in append mode): lines go over the zeros.
    file: Arc<File>,
    /// Where the next line goes: the end of the lines.
    len: u64,
    /// How many times the file was rewritten (offsets of another epoch are synced).
    epoch: u64,
    /// The file's size: the end of the zeros written ahead.
    allocated: u64,
}

/// How many zeros the file key store writes ahead of its lines at a time (about 900 keys).
pub const KEY_FILE_CHUNK: u64 = 64 * 1024;

/// The file name of the key store in the data directory.
pub const KEY_FILE: &str = "keys";

impl FileKeyStore {
    /// Opens (creating when missing, mode 0600) the key store `DIR/keys`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
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
        let (file, len, allocated) = open_in_place(&path)?;
        Ok(Self {
            shared: Arc::new(Shared {
                path,
                state: Mutex::new(FileState {
                    secret,
                    keys: keys.into_iter().map(|(id, k)| (id, (k, 0))).collect(),
                    destroyed: Default::default(),
                    file,
                    len,
                    epoch: 0,
                    allocated,
                }),
                synced: Mutex::new(len),
                synced_hint: len.into(),
                progress: tokio::sync::watch::Sender::new(Progress {
                    synced: len,
                    ..Progress::default()
                }),
                syncing: false.into(),
            }),
        })
    }

    /// The key `id`, the epoch and the file offset its line ends at, appended (not synced)
    /// when new.
    fn append_key(&self, id: &str) -> Result<(UserKey, u64, u64), StoreError> {
        let mut state = self.shared.state.lock().expect("not poisoned");
        Ok({
            if let Some((key, offset)) = state.keys.get(id) {
                (key.clone(), state.epoch, *offset)
            } else if state.destroyed.contains(id) {
                return Err(destroyed(id));
            } else {
                let key = UserKey::generate();
                let line = format!("key {id} {}\n", key.to_b64());
                let end = state.len + line.len() as u64;
                if end > state.allocated {
                    // Zeros ahead, synced with the next key: that sync changes the size.
                    let allocated = end.next_multiple_of(KEY_FILE_CHUNK);
                    let zeros = vec![0; (allocated - state.allocated) as usize];
                    state.file.write_all_at(&zeros, state.allocated)?;
                    state.allocated = allocated;
                }
                state.file.write_all_at(line.as_bytes(), state.len)?;
                state.len = end;
                let offset = state.len;
                state.keys.insert(id.to_owned(), (key.clone(), offset));
                (key, state.epoch, offset)
            }
        })
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

/// Opens the key file for writing in place: the file, the end of its lines (a torn last line
/// zeroed and synced, so the next line does not run into it) and its size.
fn open_in_place(path: &Path) -> std::io::Result<(Arc<File>, u64, u64)> {
    let mut options = OpenOptions::new();
    options.read(true).write(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    let allocated = bytes.len() as u64;
    let len = lines_end(&bytes);
    let written = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    if written > len {
        file.write_all_at(&vec![0; written - len], len as u64)?;
        file.sync_data()?;
    }
    Ok((Arc::new(file), len as u64, allocated))
}

/// The end of the whole lines of a key file's bytes: after the last newline before the first
/// NUL.
fn lines_end(bytes: &[u8]) -> usize {
    let written = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    bytes[..written]
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1)
}

/// A username secret and keys by id.
pub type KeyFile = ([u8; 32], Vec<(String, UserKey)>);

fn read_key_file(path: &Path) -> Result<Option<KeyFile>, StoreError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    // A last line without its newline was torn by a crash (or is being written): its key's
    // event was never appended (the key is synced first).
    let text = String::from_utf8_lossy(&bytes[..lines_end(&bytes)]);
    let corrupt = |line: usize, reason: &str| StoreError::Corrupt {
        location: format!("{}:{line}", path.display()),
        reason: reason.to_owned(),
    };
    let mut secret = None;
    let mut keys = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let mut parts = line.split(' ');
        match (parts.next(), parts.next(), parts.next()) {
            (Some("secret"), Some(b64), None) if i == 0 => {
                secret = Some(UserKey::from_b64(b64).ok_or_else(|| corrupt(i + 1, "bad secret"))?)
            }
            (Some("key"), Some(id), Some(b64)) => keys.push((
                id.to_owned(),
                UserKey::from_b64(b64).ok_or_else(|| corrupt(i + 1, "bad key"))?,
            )),
            // An unknown line after the secret (a later version's fact): skipped.
            _ if i > 0 => {}
            _ => return Err(corrupt(i + 1, "the first line is not the secret")),
        }
    }
    let secret = secret.ok_or_else(|| corrupt(1, "empty key file"))?;
    Ok(Some((secret.0, keys)))
}

/// Writes a whole key file (its lines, then zeros up to a [`KEY_FILE_CHUNK`] boundary): a
/// temporary file, synced, renamed over `path`, directory synced.
fn write_key_file<'a>(
    path: &Path,
    secret: &[u8; 32],
    keys: impl Iterator<Item = (&'a String, &'a UserKey)>,
) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut text = format!("secret {}\n", B64.encode(secret));
    for (id, key) in keys {
        text.push_str(&format!("key {id} {}\n", key.to_b64()));
    }
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&tmp)?;
    let allocated = (text.len() as u64 + 1).next_multiple_of(KEY_FILE_CHUNK);
    let mut bytes = text.into_bytes();
    bytes.resize(allocated as usize, 0);
    file.write_all(&bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

impl Shared {
    /// Syncs the file up to its current end (one sync covers every key appended before it
    /// started) and tells the waiting makers; false when the sync failed.
    fn sync(&self) -> bool {
        let mut synced = self.synced.lock().expect("not poisoned");
        let (file, len, epoch) = {
            let state = self.state.lock().expect("not poisoned");
            (state.file.clone(), state.len, state.epoch)
        };
        if *synced >= len {
            return true;
        }
        let error = file.sync_data().err().map(|e| Arc::from(e.to_string()));
        let ok = error.is_none();
        if ok {
            *synced = len;
            self.synced_hint
                .store(len, std::sync::atomic::Ordering::Release);
        }
        self.progress.send_replace(Progress {
            epoch,
            synced: *synced,
            error,
        });
        ok
    }

    /// Starts a sync thread unless one runs; it syncs until nothing is left to sync.
    fn start_sync(self: &Arc<Self>) {
        use std::sync::atomic::Ordering;
        if self.syncing.swap(true, Ordering::AcqRel) {
            return;
        }
        let shared = self.clone();
        tokio::task::spawn_blocking(move || loop {
            let ok = shared.sync();
            shared.syncing.store(false, Ordering::Release);
            if !ok {
                // The waiters have the error; the next maker tries again.
                break;
            }
            // A key appended after that sync read the end, whose maker saw `syncing` set and
            // started no thread: go on for it.
            let len = shared.state.lock().expect("not poisoned").len;
            if shared.synced_hint.load(Ordering::Acquire) >= len
                || shared.syncing.swap(true, Ordering::AcqRel)
            {
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
        self.shared.state.lock().expect("not poisoned").secret
    }

    fn cached(&self, id: &str) -> Option<Option<UserKey>> {
        let state = self.shared.state.lock().expect("not poisoned");
        Some(state.keys.get(id).map(|(k, _)| k.clone()))
    }

    async fn load(&self, id: &str) -> Result<Option<UserKey>, StoreError> {
        Ok(self.cached(id).flatten())
    }

    async fn create(&self, id: &str) -> Result<UserKey, StoreError> {
        let (key, epoch, offset) = self.append_key(id)?;
        if self
            .shared
            .synced_hint
            .load(std::sync::atomic::Ordering::Acquire)
            < offset
        {
            self.shared.synced(epoch, offset).await?;
        }
        Ok(key)
    }

    async fn create_soon(&self, id: &str) -> Result<UserKey, StoreError> {
        let (key, _, offset) = self.append_key(id)?;
        if self
            .shared
            .synced_hint
            .load(std::sync::atomic::Ordering::Acquire)
            < offset
        {
            // Errors show again on the `create` that waits for this sync.
            self.shared.start_sync();
        }
        Ok(key)
    }

    async fn destroy(&self, id: &str) -> Result<(), StoreError> {
        let shared = self.shared.clone();
        let id = id.to_owned();
        blocking(move || {
            // The lock order of `sync_to`: `synced`, then `state`.
            let mut synced = shared.synced.lock().expect("not poisoned");
            let mut state = shared.state.lock().expect("not poisoned");
            state.destroyed.insert(id.clone());
            if state.keys.remove(&id).is_none() {
                return Ok(());
            }
            let keys: Vec<_> = state.keys.iter().map(|(i, (k, _))| (i, k)).collect();
            write_key_file(&shared.path, &state.secret, keys.into_iter())?;
            (state.file, state.len, state.allocated) = open_in_place(&shared.path)?;
            state.epoch += 1;
            *synced = state.len;
            shared.progress.send_replace(Progress {
                epoch: state.epoch,
                synced: state.len,
                error: None,
            });
            (shared.synced_hint).store(state.len, std::sync::atomic::Ordering::Release);
            for (_, offset) in state.keys.values_mut() {
                *offset = 0;
            }
            Ok(())
        })
        .await
    }

    async fn export(&self) -> Result<KeyExport, StoreError> {
        let state = self.shared.state.lock().expect("not poisoned");
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
            // The lock order of `sync_to`: `synced`, then `state`.
            let mut synced = shared.synced.lock().expect("not poisoned");
            let mut state = shared.state.lock().expect("not poisoned");
            if !state.keys.is_empty() && secret != state.secret {
                return Err(other_secret());
            }
            state.secret = secret;
            for (id, key) in imported {
                state.keys.insert(id, (key, 0));
            }
            let keys: Vec<_> = state.keys.iter().map(|(i, (k, _))| (i, k)).collect();
            write_key_file(&shared.path, &state.secret, keys.into_iter())?;
            (state.file, state.len, state.allocated) = open_in_place(&shared.path)?;
            state.epoch += 1;
            *synced = state.len;
            shared.progress.send_replace(Progress {
                epoch: state.epoch,
                synced: state.len,
                error: None,
            });
            (shared.synced_hint).store(state.len, std::sync::atomic::Ordering::Release);
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
#[path = "keys_tests.rs"]
mod tests;
