//! The key store of crypto-shredding (ADR 0021) in KurrentDB itself, shared by every node on
//! the server: one stream per key, `{namespace}.keys-{instance}:{user}`, holding one event
//! (`userstate.key`, data `{"key": base64}`), and the username secret in
//! `{namespace}.keys-secret` (its last event is the current secret).
//!
//! Destroying a key tombstones (hard-deletes) its stream: the key is unreadable at once
//! through the server, and the stream can never be written again, so the key is never made
//! again (like PostgreSQL's row set to NULL). KurrentDB removes a tombstoned stream's events
//! from its chunk files only when it scavenges: until the operator runs a scavenge (and until
//! older backups expire), the key's bytes are still on the server's disk
//! (docs/EVENTSTOREDB.md, docs/OPERATIONS.md).
//!
//! The key streams are outside every namespace's `$all` filter (`{namespace}-`): the name's
//! part before its first `-` is `{namespace}.keys`, which [`crate::EsdbConfig`] refuses as a
//! namespace. Every node caches what it read; a node forgets a key when it reads the user's
//! `user.erased` (the store wrapper calls [`KeyStore::forget`]), as with PostgreSQL.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use kurrentdb::{
    AppendToStreamOptions, EventData, Position, ReadAllOptions, ReadStreamOptions, StreamPosition,
    StreamState, SubscriptionFilter, TombstoneStreamOptions,
};
use serde::{Deserialize, Serialize};
use userstate::crypto::{destroyed, other_secret, KeyExport, KeyStore, UserKey};
use userstate::StoreError;

use crate::store::Shared;

/// The event type of a key (and of the username secret).
const KEY_EVENT: &str = "userstate.key";
/// The suffix of the key stream's "category" (before its first `-`).
pub(crate) const KEYS_SUFFIX: &str = ".keys";
/// The key stream id of the username secret (user key ids always hold a `:`).
const SECRET_ID: &str = "secret";
/// Events read per `$all` page when listing the key streams.
const PAGE: u64 = 512;

#[derive(Serialize, Deserialize)]
struct KeyData {
    key: String,
}

/// What a key stream holds.
enum Stored {
    /// No stream: never made.
    Absent,
    /// Tombstoned: destroyed.
    Deleted,
    /// The (last) key.
    Present(UserKey),
}

/// How an append of a key went.
enum Appended {
    Written,
    Exists,
    Deleted,
}

/// Keys in KurrentDB: get one from [`EsdbStore::key_store`](crate::EsdbStore::key_store).
pub struct EsdbKeyStore {
    shared: Arc<Shared>,
    prefix: String,
    secret: RwLock<[u8; 32]>,
    /// Id -> key, `None` for a key known absent (destroyed or never made).
    cache: RwLock<HashMap<String, Option<UserKey>>>,
}

impl EsdbKeyStore {
    /// Opens the key store of `namespace`, making the username secret when there is none.
    pub(crate) async fn open(shared: Arc<Shared>, namespace: &str) -> Result<Self, StoreError> {
        let store = Self {
            shared,
            prefix: format!("{namespace}{KEYS_SUFFIX}-"),
            secret: RwLock::new([0; 32]),
            cache: RwLock::default(),
        };
        let name = store.stream(SECRET_ID);
        let secret = loop {
            match store.read(&name).await? {
                Stored::Present(key) => break key,
                Stored::Deleted => {
                    return Err(StoreError::Corrupt {
                        location: format!("KurrentDB stream {name}"),
                        reason: "the username secret's stream was deleted".into(),
                    })
                }
                Stored::Absent => {
                    let candidate = UserKey::generate();
                    store
                        .append(&name, &candidate, StreamState::NoStream)
                        .await?;
                }
            }
        };
        *store.secret.write().unwrap_or_else(|e| e.into_inner()) = secret.0;
        Ok(store)
    }

    /// The KurrentDB stream of the key `id`.
    pub fn stream(&self, id: &str) -> String {
        format!("{}{id}", self.prefix)
    }

    fn remember(&self, id: &str, key: Option<UserKey>) {
        let mut cache = self.cache.write().unwrap_or_else(|e| e.into_inner());
        cache.insert(id.to_owned(), key);
    }

    async fn read(&self, name: &str) -> Result<Stored, StoreError> {
        let s = &self.shared;
        let lease = s.connection.lease()?;
        let options = ReadStreamOptions::default()
            .backwards()
            .position(StreamPosition::End)
            .max_count(1);
        let result = async {
            let mut read = lease.client.read_stream(name, &options).await?;
            read.next().await
        }
        .await;
        let event = match result {
            Ok(event) => event,
            Err(kurrentdb::Error::ResourceNotFound) => None,
            Err(kurrentdb::Error::ResourceDeleted) => {
                s.connection.succeeded(&lease);
                return Ok(Stored::Deleted);
            }
            Err(e) => return Err(s.connection.fail(&lease, e)),
        };
        s.connection.succeeded(&lease);
        let Some(event) = event else {
            return Ok(Stored::Absent);
        };
        let event = event.get_original_event();
        // A tombstone read back as an event (some servers, before the stream read says
        // deleted) is a destroyed key.
        if event.event_type.starts_with('$') {
            return Ok(Stored::Deleted);
        }
        let corrupt = |reason: &str| StoreError::Corrupt {
            location: format!("KurrentDB stream {name}"),
            reason: reason.to_owned(),
        };
        let data: KeyData =
            serde_json::from_slice(&event.data).map_err(|_| corrupt("not a userstate key"))?;
        let bytes: [u8; 32] = B64
            .decode(data.key)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| corrupt("the key is not 32 bytes of base64"))?;
        Ok(Stored::Present(UserKey(bytes)))
    }

    async fn append(
        &self,
        name: &str,
        key: &UserKey,
        state: StreamState,
    ) -> Result<Appended, StoreError> {
        let s = &self.shared;
        let data = EventData::json(
            KEY_EVENT,
            &KeyData {
                key: B64.encode(key.0),
            },
        )
        .map_err(|e| StoreError::InvalidArgument(format!("key not encodable: {e}")))?;
        let options = AppendToStreamOptions::default().stream_state(state);
        let lease = s.connection.lease()?;
        let outcome = match lease.client.append_to_stream(name, &options, data).await {
            Ok(_) => Appended::Written,
            Err(kurrentdb::Error::WrongExpectedVersion { .. }) => Appended::Exists,
            Err(kurrentdb::Error::ResourceDeleted) => Appended::Deleted,
            Err(e) => return Err(s.connection.fail(&lease, e)),
        };
        s.connection.succeeded(&lease);
        Ok(outcome)
    }

    /// The ids of every key stream seen in `$all` (destroyed ones included: their tombstones
    /// stay).
    async fn key_ids(&self) -> Result<BTreeSet<String>, StoreError> {
        let s = &self.shared;
        let mut ids = BTreeSet::new();
        let mut start: StreamPosition<Position> = StreamPosition::Start;
        let mut after: Option<Position> = None;
        loop {
            let lease = s.connection.lease()?;
            let options = ReadAllOptions::default()
                .forwards()
                .position(start)
                .filter(SubscriptionFilter::on_stream_name().add_prefix(&self.prefix))
                .max_count(PAGE as usize);
            let mut names = Vec::new();
            let result = async {
                let mut read = lease.client.read_all(&options).await?;
                while let Some(e) = read.next().await? {
                    let event = e.get_original_event();
                    names.push((event.position, event.stream_id().to_owned()));
                }
                Ok::<_, kurrentdb::Error>(())
            }
            .await;
            if let Err(e) = result {
                return Err(s.connection.fail(&lease, e));
            }
            s.connection.succeeded(&lease);
            let seen = names.len();
            let mut last = None;
            for (position, name) in names {
                if Some(position) == after {
                    continue; // the inclusive start of this page, already handled
                }
                if let Some(id) = name.strip_prefix(&self.prefix) {
                    if id != SECRET_ID {
                        ids.insert(id.to_owned());
                    }
                }
                last = Some(position);
            }
            match last {
                Some(position) if seen as u64 == PAGE => {
                    start = StreamPosition::Position(position);
                    after = Some(position);
                }
                _ => return Ok(ids),
            }
        }
    }
}

#[async_trait]
impl KeyStore for EsdbKeyStore {
    fn username_secret(&self) -> [u8; 32] {
        *self.secret.read().unwrap_or_else(|e| e.into_inner())
    }

    fn cached(&self, id: &str) -> Option<Option<UserKey>> {
        let cache = self.cache.read().unwrap_or_else(|e| e.into_inner());
        cache.get(id).cloned()
    }

    async fn load(&self, id: &str) -> Result<Option<UserKey>, StoreError> {
        let key = match self.read(&self.stream(id)).await? {
            Stored::Present(key) => Some(key),
            Stored::Absent | Stored::Deleted => None,
        };
        self.remember(id, key.clone());
        Ok(key)
    }

    async fn create(&self, id: &str) -> Result<UserKey, StoreError> {
        if let Some(Some(key)) = self.cached(id) {
            return Ok(key);
        }
        let name = self.stream(id);
        let candidate = UserKey::generate();
        let key = match self
            .append(&name, &candidate, StreamState::NoStream)
            .await?
        {
            Appended::Written => candidate,
            Appended::Deleted => return Err(destroyed(id)),
            // Made by another node (or an earlier try): that one is the key.
            Appended::Exists => match self.read(&name).await? {
                Stored::Present(key) => key,
                Stored::Deleted => return Err(destroyed(id)),
                Stored::Absent => {
                    return Err(StoreError::Backend {
                        message: format!("the key stream {name} exists but reads empty"),
                        source: None,
                    })
                }
            },
        };
        self.remember(id, Some(key.clone()));
        Ok(key)
    }

    async fn destroy(&self, id: &str) -> Result<(), StoreError> {
        let s = &self.shared;
        let name = self.stream(id);
        let options = TombstoneStreamOptions::default().stream_state(StreamState::Any);
        let lease = s.connection.lease()?;
        match lease.client.tombstone_stream(name.as_str(), &options).await {
            // Already destroyed: nothing left to do.
            Ok(_) | Err(kurrentdb::Error::ResourceDeleted) => s.connection.succeeded(&lease),
            Err(e) => return Err(s.connection.fail(&lease, e)),
        }
        self.remember(id, None);
        Ok(())
    }

    fn forget(&self, id: &str) {
        let mut cache = self.cache.write().unwrap_or_else(|e| e.into_inner());
        cache.remove(id);
    }

    async fn export(&self) -> Result<KeyExport, StoreError> {
        let mut keys = Vec::new();
        for id in self.key_ids().await? {
            if let Stored::Present(key) = self.read(&self.stream(&id)).await? {
                keys.push((id, key));
            }
        }
        Ok(KeyExport::encode(&self.username_secret(), keys))
    }

    async fn import(&self, export: &KeyExport) -> Result<(), StoreError> {
        let (secret, keys) = export.decode()?;
        if secret != self.username_secret() {
            if !self.key_ids().await?.is_empty() {
                return Err(other_secret());
            }
            let name = self.stream(SECRET_ID);
            self.append(&name, &UserKey(secret), StreamState::StreamExists)
                .await?;
            *self.secret.write().unwrap_or_else(|e| e.into_inner()) = secret;
        }
        for (id, key) in &keys {
            // A key made or destroyed here already stays as it is.
            self.append(&self.stream(id), key, StreamState::NoStream)
                .await?;
        }
        self.cache
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        Ok(())
    }
}
