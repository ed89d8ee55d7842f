//! Key stores: where the per-user keys and the instance-wide username secret live, apart from
//! the log (ADR 0021). Destroying a user's key is the erasure of that user's personal data;
//! losing the whole key store is the erasure of everyone's.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::RwLock;

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

    pub(super) fn from_b64(text: &str) -> Option<Self> {
        B64.decode(text).ok()?.try_into().ok().map(Self)
    }

    pub(super) fn to_b64(&self) -> String {
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

    pub(super) fn parse(&self) -> Result<KeyFile, StoreError> {
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

    /// Loads the keys `ids` so that [`cached`](Self::cached) answers for each, for a read that
    /// needs many at once (a page of the log on a node's start-up). By default one
    /// [`load`](Self::load) after another; a store with round trips does it in one.
    async fn load_many(&self, ids: &[String]) -> Result<(), StoreError> {
        for id in ids {
            self.load(id).await?;
        }
        Ok(())
    }

    /// The key `id`, made (durably) when there is none yet. Refused for a key that was
    /// destroyed. "Durably" may also mean "durable before any event the caller then appends
    /// is": a [`FileKeyStore`](super::FileKeyStore) tied to the file store it seals for
    /// ([`sync_with`](super::FileKeyStore::sync_with)) returns once the key is written, and
    /// that store's syncer syncs it before the batch holding the event.
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

/// A username secret and keys by id.
pub type KeyFile = ([u8; 32], Vec<(String, UserKey)>);
