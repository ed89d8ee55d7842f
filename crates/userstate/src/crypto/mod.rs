//! Crypto-shredding (SPEC.md "Erasure and tamper evidence", ADR 0021): personal data is stored
//! sealed under a per-user key kept in a [`KeyStore`] apart from the log, and erasing a user
//! destroys the key.
//!
//! [`CryptoStore`] wraps any [`EventStore`]. On append it seals the personal fields of the
//! events that carry them — `username`, `profile` and `email` of `user.human.added`, `username`
//! of `username.reserved`, the `fingerprint` of an idempotency key's claim (a hash of the
//! first request's parameters) — into one `sealed` field (ChaCha20-Poly1305, base64 of nonce and
//! ciphertext, the key id and event type as associated data), and names a username's
//! reservation stream by a keyed hash of the canonical name instead of the name
//! (`username:{instance}:h-{hex HMAC-SHA256}`, the key store's username secret). On read it
//! opens the sealed fields again; without the key (erased) the fields stay empty and the
//! payload says `"erased": true`. Appending `user.erased` destroys the user's key first.
//!
//! Everything below the wrapper — the store's files or tables, its hash chain, `export` —
//! holds only the sealed form.

mod file_keys;
mod key_file;
mod keys;

pub use file_keys::{FileKeyStore, KEY_FILE};
pub use keys::{destroyed, other_secret, KeyExport, KeyFile, KeyStore, MemoryKeyStore, UserKey};

use std::sync::Arc;

use async_trait::async_trait;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::ChaCha20Poly1305;
use hmac::{Hmac, Mac};
use serde_json::{Map, Value};
use sha2::Sha256;

use crate::domain::{KeyClaimed, StreamKind, StreamName, UsernameEvent};
use crate::store::{
    EventRef, EventStore, ExpectedVersion, NewEvent, PayloadRef, RecordedEvent, StoreError,
    StoreWrapper, StreamId,
};

/// The field that holds the sealed personal fields in a stored payload.
pub const SEALED: &str = "sealed";
/// The field a read sets on a payload whose sealed fields cannot be opened any more.
pub const ERASED: &str = "erased";
/// The type of the event that erases a user.
pub const USER_ERASED: &str = "user.erased";
const USER_ADDED: &str = "user.human.added";
const NONCE_LEN: usize = 12;

/// The personal fields of an event type, `None` for types without any.
fn personal_fields(event_type: &str) -> Option<&'static [&'static str]> {
    match event_type {
        USER_ADDED => Some(&["username", "profile", "email"]),
        UsernameEvent::RESERVED => Some(&["username"]),
        // A hash of the first request's parameters (an add's user name, profile and email):
        // one guess of them all could be confirmed against it once the user is erased.
        KeyClaimed::TYPE => Some(&["fingerprint"]),
        _ => None,
    }
}

/// Whether an event of `event_type` holds personal fields in clear in `payload`: written
/// before crypto-shredding. Import seals such events; erasure refuses a user who has one (destroying a key would not erase it).
pub fn holds_clear_personal_data(event_type: &str, payload: &Value) -> bool {
    personal_fields(event_type).is_some_and(|fields| {
        payload.as_object().is_some_and(|object| {
            !object.contains_key(SEALED) && fields.iter().any(|f| object.contains_key(*f))
        })
    })
}

/// The id of the key an event of `stream` with `payload` is sealed with: `{instance}:{user}`
/// of the user it is about (for a reservation, its holder; for an idempotency key's claim,
/// the user of the request it binds).
fn key_id(stream: &str, event_type: &str, payload: &Value) -> Option<String> {
    match StreamName::parse(stream)? {
        StreamName::User { instance, user } => Some(format!("{instance}:{user}")),
        StreamName::Username { instance, .. } if event_type == UsernameEvent::RESERVED => {
            let user = payload.get("userId")?.as_str()?;
            Some(format!("{instance}:{user}"))
        }
        StreamName::IdempotencyKey { instance, .. } if event_type == KeyClaimed::TYPE => {
            let user = payload.get("userId")?.as_str()?;
            Some(format!("{instance}:{user}"))
        }
        _ => None,
    }
}

/// The id of the key `payload` is sealed with, when it is a sealed payload of an event type
/// with personal fields.
fn sealed_key_id(stream: &str, event_type: &str, payload: &Value) -> Option<String> {
    personal_fields(event_type)?;
    payload.get(SEALED)?;
    key_id(stream, event_type, payload)
}

/// The user key id of a user stream (`user.erased` destroys it).
fn user_key_id(stream: &str) -> Option<String> {
    match StreamName::parse(stream)? {
        StreamName::User { instance, user } => Some(format!("{instance}:{user}")),
        _ => None,
    }
}

fn aad(id: &str, event_type: &str) -> Vec<u8> {
    [id.as_bytes(), b"\0", event_type.as_bytes()].concat()
}

/// Moves the personal fields of `payload` into its `sealed` field and returns them (to give the
/// caller its plaintext back without a copy of the whole payload); `None` when there was
/// nothing to seal (already sealed, or no personal field present).
///
/// The nonce is 96 random bits from the thread's CSPRNG (`rand::rng()`: ChaCha12, seeded from
/// the OS and reseeded every 64 KiB), not a system call per seal. A key seals only its user's
/// add and username reservations, a handful of messages, far below the 2^32 messages per key
/// up to which random 96-bit nonces are considered safe (NIST SP 800-38D); ADR 0021.
fn seal(
    payload: &mut Value,
    fields: &[&str],
    key: &UserKey,
    aad: &[u8],
) -> Option<Map<String, Value>> {
    let object = payload.as_object_mut()?;
    if object.contains_key(SEALED) {
        return None;
    }
    let mut personal = Map::new();
    for field in fields {
        if let Some(value) = object.remove(*field) {
            personal.insert((*field).to_owned(), value);
        }
    }
    let plain = serde_json::to_vec(&personal).expect("a JSON map serializes");
    let cipher = ChaCha20Poly1305::new(&key.0.into());
    let mut nonce = [0u8; NONCE_LEN];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut nonce);
    let sealed = cipher
        .encrypt(&nonce.into(), Payload { msg: &plain, aad })
        .expect("ChaCha20-Poly1305 encrypts any message under 256 GiB");
    let mut bytes = Vec::with_capacity(NONCE_LEN + sealed.len());
    bytes.extend_from_slice(&nonce);
    bytes.extend_from_slice(&sealed);
    object.insert(SEALED.to_owned(), Value::String(B64.encode(bytes)));
    Some(personal)
}

/// Puts the fields [`seal`] returned back into the stored (sealed) `payload`: the payload as
/// the caller gave it.
fn unseal_in_place(payload: &mut Value, personal: Map<String, Value>) {
    if let Some(object) = payload.as_object_mut() {
        object.remove(SEALED);
        object.extend(personal);
    }
}

/// Opens the `sealed` field of `payload` back into its fields with `key`; without a key (or a
/// sealed field that does not open under it) the fields stay absent and `erased` is set.
fn open(payload: &mut Value, key: Option<&UserKey>, aad: &[u8]) {
    let Some(object) = payload.as_object_mut() else {
        return;
    };
    let Some(Value::String(sealed)) = object.remove(SEALED) else {
        return;
    };
    let opened = key.and_then(|key| {
        let bytes = B64.decode(sealed).ok()?;
        if bytes.len() < NONCE_LEN {
            return None;
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
        let plain = ChaCha20Poly1305::new(&key.0.into())
            .decrypt(
                nonce.into(),
                Payload {
                    msg: ciphertext,
                    aad,
                },
            )
            .ok()?;
        serde_json::from_slice::<Map<String, Value>>(&plain).ok()
    });
    match opened {
        Some(fields) => object.extend(fields),
        None => {
            object.insert(ERASED.to_owned(), Value::Bool(true));
        }
    }
}

/// An [`EventStore`] that seals personal data under per-user keys (see the module docs).
pub struct CryptoStore {
    inner: Arc<dyn EventStore>,
    keys: Arc<dyn KeyStore>,
    /// HMAC-SHA256 keyed with the username secret, its key schedule done once: each
    /// reservation name clones it instead of hashing the key again.
    name_mac: Hmac<Sha256>,
}

impl CryptoStore {
    /// Wraps `inner`, sealing with the keys of `keys`.
    pub fn new(inner: Arc<dyn EventStore>, keys: Arc<dyn KeyStore>) -> Self {
        let name_mac = <Hmac<Sha256> as Mac>::new_from_slice(&keys.username_secret())
            .expect("HMAC takes a key of any length");
        Self {
            inner,
            keys,
            name_mac,
        }
    }

    /// The key store.
    pub fn keys(&self) -> &Arc<dyn KeyStore> {
        &self.keys
    }

    /// The stream name the store keeps for `stream`: a username reservation stream is named
    /// by a keyed hash of its canonical name; every other name is kept as is.
    pub fn stored_name(&self, stream: &StreamId) -> StreamId {
        self.hashed_name(stream).unwrap_or_else(|| stream.clone())
    }

    /// The keyed-hash name of a username reservation stream; `None` for every other stream
    /// (stored under its own name, which then needs no copy).
    fn hashed_name(&self, stream: &StreamId) -> Option<StreamId> {
        // The prefix first: every command appends to and reads its user's stream.
        if StreamKind::of(stream.as_str()) != Some(StreamKind::Username) {
            return None;
        }
        let Some(StreamName::Username {
            instance,
            canonical,
        }) = StreamName::parse(stream.as_str())
        else {
            return None;
        };
        let mut mac = self.name_mac.clone();
        mac.update(instance.as_bytes());
        mac.update(b"\0");
        mac.update(canonical.as_bytes());
        let digest = hex::encode(mac.finalize().into_bytes());
        Some(
            StreamId::new(format!("username:{instance}:h-{digest}"))
                .expect("a hashed name is a valid stream name"),
        )
    }

    async fn key(&self, id: &str) -> Result<Option<UserKey>, StoreError> {
        match self.keys.cached(id) {
            Some(key) => Ok(key),
            None => self.keys.load(id).await,
        }
    }

    /// Drops from the key store's cache the keys of the users `events` erase (another node
    /// may have erased them), before any event of the page is opened.
    fn forget_erased(&self, events: &[RecordedEvent]) {
        for event in events.iter().filter(|e| e.event_type == USER_ERASED) {
            if let Some(id) = user_key_id(event.stream.as_str()) {
                self.keys.forget(&id);
            }
        }
    }

    /// Refuses the erasure of the user of `stream` when its stored events hold personal data
    /// in clear (written before crypto-shredding): destroying its key would erase nothing, and
    /// erasure never pretends. The way out is to export the store and import it into a new
    /// one, which seals it (docs/OPERATIONS.md, "Upgrading").
    async fn refuse_clear_erasure(&self, stream: &StreamId) -> Result<(), StoreError> {
        let stored = self.inner.read_stream(stream, 1).await?;
        if stored
            .iter()
            .any(|e| holds_clear_personal_data(&e.event_type, &e.payload))
        {
            return Err(StoreError::InvalidArgument(format!(
                "the personal data of {stream} was stored in clear, before crypto-shredding: \
                 destroying its key would not erase it. Export the store and import it into a \
                 new one (the import seals it), then erase there; see docs/OPERATIONS.md, \
                 \"Upgrading\""
            )));
        }
        Ok(())
    }

    /// Opens the sealed fields of `event` (in place).
    async fn open_event(&self, event: &mut RecordedEvent) -> Result<(), StoreError> {
        let Some(id) = sealed_key_id(event.stream.as_str(), &event.event_type, &event.payload)
        else {
            return Ok(());
        };
        let key = self.key(&id).await?;
        open(
            &mut event.payload,
            key.as_ref(),
            &aad(&id, &event.event_type),
        );
        Ok(())
    }
}

#[async_trait]
impl StoreWrapper for CryptoStore {
    fn inner(&self) -> &dyn EventStore {
        &*self.inner
    }

    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        mut events: Vec<NewEvent>,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        // The personal fields each sealed event gave up, by index: no allocation for the
        // events that carry none (locks, unlocks, …), which are most commands.
        let mut plain = Vec::new();
        for (i, event) in events.iter_mut().enumerate() {
            if event.event_type == USER_ERASED {
                if let Some(id) = user_key_id(stream.as_str()) {
                    self.refuse_clear_erasure(stream).await?;
                    self.keys.destroy(&id).await?;
                }
            }
            let fields = personal_fields(&event.event_type);
            let id =
                fields.and_then(|_| key_id(stream.as_str(), &event.event_type, &event.payload));
            if let (Some(fields), Some(id)) = (fields, id) {
                // A reservation lost in a crash loses nothing (the add's user event waits for
                // the key to be durable), so its key's sync may run beside it. (With the file
                // store tied to the file key store, both return once the key is written: the
                // store's syncer syncs it before their batches.)
                let key = if event.event_type == UsernameEvent::RESERVED {
                    self.keys.create_soon(&id).await?
                } else {
                    self.keys.create(&id).await?
                };
                let aad = aad(&id, &event.event_type);
                if let Some(fields) = seal(&mut event.payload, fields, &key, &aad) {
                    plain.push((i, fields));
                }
            }
        }
        let hashed = self.hashed_name(stream);
        let mut recorded = self
            .inner
            .append(hashed.as_ref().unwrap_or(stream), expected, events)
            .await?;
        if hashed.is_some() {
            for event in &mut recorded {
                event.stream = stream.clone();
            }
        }
        for (i, fields) in plain {
            if let Some(event) = recorded.get_mut(i) {
                unseal_in_place(&mut event.payload, fields);
            }
        }
        Ok(recorded)
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        from_sequence: u64,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let hashed = self.hashed_name(stream);
        let mut events = (self.inner)
            .read_stream(hashed.as_ref().unwrap_or(stream), from_sequence)
            .await?;
        self.forget_erased(&events);
        for event in &mut events {
            if hashed.is_some() {
                event.stream = stream.clone();
            }
            self.open_event(event).await?;
        }
        Ok(events)
    }

    async fn read_all(
        &self,
        from_position: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let mut events = self.inner.read_all(from_position, limit).await?;
        self.forget_erased(&events);
        let mut missing: Vec<String> = events
            .iter()
            .filter_map(|e| sealed_key_id(e.stream.as_str(), &e.event_type, &e.payload))
            .filter(|id| self.keys.cached(id).is_none())
            .collect();
        // A user's add and reservation name one key: load it once, as the visit does.
        missing.sort_unstable();
        missing.dedup();
        if !missing.is_empty() {
            self.keys.load_many(&missing).await?;
        }
        for event in &mut events {
            self.open_event(event).await?;
        }
        Ok(events)
    }

    /// The inner store's visit, with the sealed events opened on the way. A key the key
    /// store cannot answer without I/O ends the page before its event; the rest of the page
    /// is only looked through for the other keys it lacks, all of them are loaded at once
    /// ([`KeyStore::load_many`]), and the visit goes on from that event. (Loading one key per
    /// read of the page made a node's start-up on PostgreSQL read each page once per new user
    /// in it: thousands of events a second.)
    async fn visit_all(
        &self,
        from_position: u64,
        limit: usize,
        visit: &mut (dyn for<'e> FnMut(EventRef<'e>) + Send),
    ) -> Result<usize, StoreError> {
        loop {
            let mut visited = 0;
            // The keys the page lacks, in the order met; the visit stops at the first.
            let mut missing: Vec<String> = Vec::new();
            self.inner
                .visit_all(from_position, limit, &mut |event: EventRef<'_>| {
                    if !missing.is_empty() {
                        if let Some(id) = lacking_key(&*self.keys, &event) {
                            if !missing.contains(&id) {
                                missing.push(id);
                            }
                        }
                        return;
                    }
                    if event.event_type == USER_ERASED {
                        if let Some(id) = user_key_id(event.stream) {
                            self.keys.forget(&id);
                        }
                    }
                    if personal_fields(event.event_type).is_none() {
                        visited += 1;
                        return visit(event);
                    }
                    // An undecodable payload goes to the fold as it is, which reports it.
                    let Ok(mut payload) = event.payload.deserialize::<Value>() else {
                        visited += 1;
                        return visit(event);
                    };
                    if payload.get(SEALED).is_none() {
                        visited += 1;
                        return visit(EventRef {
                            payload: PayloadRef::Value(&payload),
                            ..event
                        });
                    }
                    let Some(id) = key_id(event.stream, event.event_type, &payload) else {
                        visited += 1;
                        return visit(event);
                    };
                    let Some(key) = self.keys.cached(&id) else {
                        missing.push(id);
                        return;
                    };
                    open(&mut payload, key.as_ref(), &aad(&id, event.event_type));
                    visited += 1;
                    visit(EventRef {
                        payload: PayloadRef::Value(&payload),
                        ..event
                    });
                })
                .await?;
            let Some(first) = missing.first() else {
                return Ok(visited);
            };
            // Into the key store's cache (or known absent), for the next try.
            self.keys.load_many(&missing).await?;
            if self.keys.cached(first).is_none() {
                return Err(StoreError::Backend {
                    message: format!("the key store cannot answer for key {first}"),
                    source: None,
                });
            }
            if visited > 0 {
                return Ok(visited);
            }
        }
    }
}

/// The id of the key `event` is sealed with, when `keys` cannot answer for it without I/O.
fn lacking_key(keys: &dyn KeyStore, event: &EventRef<'_>) -> Option<String> {
    personal_fields(event.event_type)?;
    let payload = event.payload.deserialize::<Value>().ok()?;
    let id = sealed_key_id(event.stream, event.event_type, &payload)?;
    keys.cached(&id).is_none().then_some(id)
}

#[cfg(test)]
mod tests;
