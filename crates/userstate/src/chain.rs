//! The hash chain over the log and its signed checkpoints (docs/adr/0020-hash-chain.md).
//!
//! Every recorded event carries [`RecordedEvent::hash`]: SHA-256 over a fixed, store-independent
//! encoding of the event and the hash of the event before it in global position order (the
//! first event chains from [`EventHash::ZERO`]). It is computed in two steps, so that only a
//! small, fixed-size hash runs where a store assigns positions:
//!
//! ```text
//! content = SHA-256( [stream_len u16 LE][stream][type_len u16 LE][type]
//!                    [metadata_len u32 LE][metadata JSON][payload_len u32 LE][payload JSON] )
//! hash    = SHA-256( "userstate-chain-v1" || previous hash (32)
//!                    || position u64 BE || sequence u64 BE || created_at µs i64 BE
//!                    || event_id (16) || revision u16 BE || content (32) )
//! ```
//!
//! The JSON is serde_json's compact form of the value (object keys sorted: serde_json's map is
//! ordered), which is also exactly what the file store writes, so the `content` part is the
//! file record's tail as stored. `content` is computed by the appending caller, outside any
//! lock; `hash` inside the store's commit critical section, where the position is assigned.
//!
//! Nothing in the hash is secret: whoever can write the log can recompute a consistent chain.
//! A [`Checkpoint`] — the head's position and hash, signed with an Ed25519 key kept away from
//! the log — pins the log up to it: a copy that verifies against a published checkpoint is
//! the log that was signed, up to that position.

use std::fmt;

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::store::{EventMetadata, RecordedEvent};

/// The domain separation tag at the start of every link.
const LINK_TAG: &[u8] = b"userstate-chain-v1";
/// The domain separation tag of a link in a stream's chain (KurrentDB, [`stream_link`]).
const STREAM_LINK_TAG: &[u8] = b"userstate-stream-chain-v1";
/// What a checkpoint's signature covers, before its position and hash.
const CHECKPOINT_TAG: &str = "userstate-checkpoint-v1";

/// A SHA-256 value of the chain, shown and serialized as 64 lowercase hex digits.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct EventHash(pub [u8; 32]);

impl EventHash {
    /// What the first event chains from.
    pub const ZERO: EventHash = EventHash([0; 32]);

    /// Parses 64 hex digits.
    pub fn from_hex(text: &str) -> Result<Self, String> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(text.trim(), &mut out)
            .map_err(|e| format!("not a hash of 64 hex digits: {e}"))?;
        Ok(EventHash(out))
    }

    /// The bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for EventHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for EventHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EventHash({self})")
    }
}

impl Serialize for EventHash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for EventHash {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        EventHash::from_hex(&text).map_err(serde::de::Error::custom)
    }
}

/// The `content` digest of an event from its encoded parts (`metadata` and `payload` as
/// compact JSON).
pub fn content_digest_raw(
    stream: &str,
    event_type: &str,
    metadata: &[u8],
    payload: &[u8],
) -> EventHash {
    let mut h = Sha256::new();
    // Lengths saturate: a store refuses fields this long before it hashes them.
    h.update(
        u16::try_from(stream.len())
            .unwrap_or(u16::MAX)
            .to_le_bytes(),
    );
    h.update(stream.as_bytes());
    h.update(
        u16::try_from(event_type.len())
            .unwrap_or(u16::MAX)
            .to_le_bytes(),
    );
    h.update(event_type.as_bytes());
    h.update(
        u32::try_from(metadata.len())
            .unwrap_or(u32::MAX)
            .to_le_bytes(),
    );
    h.update(metadata);
    h.update(
        u32::try_from(payload.len())
            .unwrap_or(u32::MAX)
            .to_le_bytes(),
    );
    h.update(payload);
    EventHash(h.finalize().into())
}

/// The `content` digest of the file store's record tail (the same bytes, already framed).
pub fn content_digest_of_tail(tail: &[u8]) -> EventHash {
    EventHash(Sha256::digest(tail).into())
}

/// The `content` digest of an event from its values.
pub fn content_digest(
    stream: &str,
    event_type: &str,
    metadata: &EventMetadata,
    payload: &serde_json::Value,
) -> EventHash {
    // One buffer per thread, reused: the memory store encodes every appended event only to
    // hash it (it keeps values, not JSON), and two allocations per event are not needed.
    thread_local! {
        static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    SCRATCH.with(|scratch| {
        let Ok(mut buf) = scratch.try_borrow_mut() else {
            // Not reentrant in practice; a fresh buffer keeps it correct if it ever were.
            return encode_and_digest(&mut Vec::new(), stream, event_type, metadata, payload);
        };
        let digest = encode_and_digest(&mut buf, stream, event_type, metadata, payload);
        if buf.capacity() > 64 << 10 {
            // An exceptionally large event does not pin its buffer for the thread's life.
            *buf = Vec::new();
        }
        digest
    })
}

fn encode_and_digest(
    buf: &mut Vec<u8>,
    stream: &str,
    event_type: &str,
    metadata: &EventMetadata,
    payload: &serde_json::Value,
) -> EventHash {
    buf.clear();
    // Serializing a `Value` or the metadata struct cannot fail (string keys only).
    let _ = serde_json::to_writer(&mut *buf, metadata);
    let split = buf.len();
    let _ = serde_json::to_writer(&mut *buf, payload);
    let (metadata, payload) = buf.split_at(split);
    content_digest_raw(stream, event_type, metadata, payload)
}

/// The coordinates a store assigns, which the link covers besides the content.
#[derive(Clone, Copy, Debug)]
pub struct Coordinates {
    /// Global position.
    pub position: u64,
    /// Sequence in the stream.
    pub sequence: u64,
    /// Commit time, µs since the Unix epoch.
    pub created_at_micros: i64,
    /// The event's id.
    pub event_id: uuid::Uuid,
    /// Payload schema revision.
    pub revision: u16,
}

/// The chain hash of an event at `at` with `content`, following `previous`.
pub fn link(previous: &EventHash, at: &Coordinates, content: &EventHash) -> EventHash {
    link_with(LINK_TAG, previous, Some(at.position), at, content)
}

/// The link of an event in its **stream's** chain, for a store that cannot link in global
/// order where it assigns positions (KurrentDB, ADR 0020): like [`link`] without the position
/// (the server assigns it at commit), chaining to the stored link of the event before it in
/// its stream (`previous`; [`EventHash::ZERO`] for a stream's first event).
pub fn stream_link(previous: &EventHash, at: &Coordinates, content: &EventHash) -> EventHash {
    link_with(STREAM_LINK_TAG, previous, None, at, content)
}

/// The one hash both chains use: `tag`, the previous link, the position when the chain has
/// one, then the coordinates every link covers and the content digest.
fn link_with(
    tag: &[u8],
    previous: &EventHash,
    position: Option<u64>,
    at: &Coordinates,
    content: &EventHash,
) -> EventHash {
    let mut h = Sha256::new();
    h.update(tag);
    h.update(previous.0);
    if let Some(position) = position {
        h.update(position.to_be_bytes());
    }
    h.update(at.sequence.to_be_bytes());
    h.update(at.created_at_micros.to_be_bytes());
    h.update(at.event_id.as_bytes());
    h.update(at.revision.to_be_bytes());
    h.update(content.0);
    EventHash(h.finalize().into())
}

impl RecordedEvent {
    /// The coordinates this event's link covers.
    pub fn coordinates(&self) -> Coordinates {
        Coordinates {
            position: self.position,
            sequence: self.sequence,
            created_at_micros: self.created_at.timestamp_micros(),
            event_id: self.event_id,
            revision: self.revision,
        }
    }

    /// This event's `content` digest.
    pub fn content_digest(&self) -> EventHash {
        content_digest(
            self.stream.as_str(),
            &self.event_type,
            &self.metadata,
            &self.payload,
        )
    }

    /// The hash this event must carry when it follows `previous`.
    pub fn chain_hash(&self, previous: &EventHash) -> EventHash {
        link(previous, &self.coordinates(), &self.content_digest())
    }

    /// The link this event must carry in its stream's chain after `previous` ([`stream_link`]).
    pub fn stream_chain_hash(&self, previous: &EventHash) -> EventHash {
        stream_link(previous, &self.coordinates(), &self.content_digest())
    }
}

/// A signed statement that the log's event at `position` has `hash` (and so, through the
/// chain, that everything up to it is what it was when signed). Stored as JSON.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Checkpoint {
    /// The head's position when signed (0: the empty log).
    pub position: u64,
    /// The hash of the event at `position`.
    pub hash: EventHash,
    /// When it was signed (informative; not covered by the signature).
    pub signed_at: chrono::DateTime<chrono::Utc>,
    /// Ed25519 signature over `userstate-checkpoint-v1\n{position}\n{hash}`, hex.
    pub signature: String,
}

impl Checkpoint {
    fn message(position: u64, hash: &EventHash) -> String {
        format!("{CHECKPOINT_TAG}\n{position}\n{hash}")
    }

    /// Signs the head `position`/`hash` with `key`.
    pub fn sign(key: &SigningKey, position: u64, hash: EventHash) -> Self {
        let signature = key.sign(Self::message(position, &hash).as_bytes());
        Checkpoint {
            position,
            hash,
            signed_at: chrono::Utc::now(),
            signature: hex::encode(signature.to_bytes()),
        }
    }

    /// Checks the signature against `key`.
    pub fn check_signature(&self, key: &VerifyingKey) -> Result<(), String> {
        let mut bytes = [0u8; 64];
        hex::decode_to_slice(self.signature.trim(), &mut bytes)
            .map_err(|e| format!("the checkpoint's signature is not 128 hex digits: {e}"))?;
        key.verify(
            Self::message(self.position, &self.hash).as_bytes(),
            &Signature::from_bytes(&bytes),
        )
        .map_err(|_| "the checkpoint's signature does not match the public key".to_owned())
    }
}

/// A new Ed25519 key pair from the operating system's random source.
pub fn generate_key() -> Result<SigningKey, String> {
    let mut seed = [0u8; 32];
    getrandom::getrandom(&mut seed).map_err(|e| format!("no random source: {e}"))?;
    Ok(SigningKey::from_bytes(&seed))
}

/// A signing key file's text: the 32-byte seed, hex.
pub fn signing_key_text(key: &SigningKey) -> String {
    format!("{}\n", hex::encode(key.to_bytes()))
}

/// A public key file's text: the 32-byte key, hex.
pub fn verifying_key_text(key: &VerifyingKey) -> String {
    format!("{}\n", hex::encode(key.to_bytes()))
}

/// Parses a signing key file's text.
pub fn parse_signing_key(text: &str) -> Result<SigningKey, String> {
    let mut seed = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut seed)
        .map_err(|_| "a signing key file holds 64 hex digits".to_owned())?;
    Ok(SigningKey::from_bytes(&seed))
}

/// Parses a public key file's text.
pub fn parse_verifying_key(text: &str) -> Result<VerifyingKey, String> {
    let mut bytes = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut bytes)
        .map_err(|_| "a public key file holds 64 hex digits".to_owned())?;
    VerifyingKey::from_bytes(&bytes).map_err(|e| format!("not an Ed25519 public key: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{NewEvent, StreamId};

    /// Pins both link functions to their byte layout (computed independently, with Python's
    /// hashlib over the documented field order): a change here would make every stored chain
    /// fail `verify`.
    #[test]
    fn links_keep_their_byte_layout() {
        let mut previous = [0u8; 32];
        let mut content = [0u8; 32];
        let mut id = [0u8; 16];
        for i in 0..32u8 {
            previous[usize::from(i)] = i;
            content[usize::from(i)] = 100 + i;
        }
        for i in 0..16u8 {
            id[usize::from(i)] = 200 + i;
        }
        let at = Coordinates {
            position: 42,
            sequence: 7,
            created_at_micros: 1_700_000_000_000_001,
            event_id: uuid::Uuid::from_bytes(id),
            revision: 2,
        };
        let (previous, content) = (EventHash(previous), EventHash(content));
        assert_eq!(
            link(&previous, &at, &content).to_string(),
            "b9a7708662f87a065cc5a14dc8b7ce7b0beee0059b509da71efe8abb29beede9"
        );
        assert_eq!(
            stream_link(&previous, &at, &content).to_string(),
            "b9ced8be10434068287ee33f2c5b56d1b5a9bf072affa76abfb46be16ce4575a"
        );
    }

    fn event(position: u64, payload: serde_json::Value) -> RecordedEvent {
        let at = chrono::DateTime::from_timestamp_micros(1_700_000_000_000_001).unwrap();
        RecordedEvent::record(
            StreamId::new("user:i:u").unwrap(),
            position,
            position,
            at,
            NewEvent::new("user.locked", 1, payload, EventMetadata::default()),
        )
    }

    #[test]
    fn every_field_and_the_predecessor_change_the_hash() {
        let e = event(3, serde_json::json!({"a": 1}));
        let h = e.chain_hash(&EventHash::ZERO);
        assert_ne!(h, e.chain_hash(&EventHash([1; 32])));
        let mut other = e.clone();
        other.payload = serde_json::json!({"a": 2});
        assert_ne!(h, other.chain_hash(&EventHash::ZERO));
        let mut other = e.clone();
        other.position = 4;
        assert_ne!(h, other.chain_hash(&EventHash::ZERO));
        let mut other = e.clone();
        other.metadata.creator = "x".into();
        assert_ne!(h, other.chain_hash(&EventHash::ZERO));
        assert_eq!(EventHash::from_hex(&h.to_string()).unwrap(), h);
    }

    #[test]
    fn a_checkpoint_verifies_only_with_its_key_and_values() {
        let key = generate_key().unwrap();
        let cp = Checkpoint::sign(&key, 7, EventHash([9; 32]));
        cp.check_signature(&key.verifying_key()).unwrap();
        let mut moved = cp.clone();
        moved.position = 8;
        assert!(moved.check_signature(&key.verifying_key()).is_err());
        let other = generate_key().unwrap();
        assert!(cp.check_signature(&other.verifying_key()).is_err());
        let text = signing_key_text(&key);
        assert_eq!(parse_signing_key(&text).unwrap().to_bytes(), key.to_bytes());
    }
}
