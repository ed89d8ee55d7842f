//! # userstate-eventstoredb
//!
//! A userstate [`EventStore`](userstate::EventStore) on KurrentDB / EventStoreDB, through the
//! official Rust client [`kurrentdb`] (see `docs/adr/0003-kurrentdb-client.md` for why not the
//! older `eventstore` crate).
//!
//! ```no_run
//! # async fn demo() -> Result<(), userstate::StoreError> {
//! // `--store esdb://…` / `kurrentdb://…` map straight onto this:
//! let store = userstate_eventstoredb::EsdbStore::connect("esdb://localhost:2113?tls=false").await?;
//! # Ok(()) }
//! ```
//!
//! - One KurrentDB stream per userstate stream, named `{namespace}-{stream id}`
//!   (`src/naming.rs`).
//! - Events are JSON events with our type strings and ids; our metadata, schema revision and
//!   commit time go in the custom metadata (`src/codec.rs`).
//! - `ExpectedVersion` maps onto the client's `StreamState` (`Any`, `NoStream`,
//!   `StreamRevision(n - 1)`: KurrentDB revisions are 0-based); its wrong-expected-version
//!   becomes [`StoreError::Conflict`](userstate::StoreError::Conflict).
//! - Global positions are `$all` log positions plus one; `read_all` pages `$all` filtered to
//!   the namespace and the head is followed with a `$all` subscription.
//! - The per-user keys of crypto-shredding live in KurrentDB too, one stream per key outside
//!   the namespace's `$all` filter, destroyed by a tombstone (`src/keys.rs`).
//! - Each event's custom metadata carries its link in its stream's hash chain (`src/codec.rs`,
//!   ADR 0020).
//! - `verify` reads the records KurrentDB keeps of streams deleted or truncated through its
//!   API (tombstones, stream metadata) and reports them by position (`src/removals.rs`).
//! - A dead client is replaced with backoff; meanwhile calls answer
//!   [`StoreError::Unavailable`](userstate::StoreError::Unavailable) (`src/connection.rs`).
//!
//! `docs/EVENTSTOREDB.md` documents the mapping, the guarantees and what has been verified.

#![deny(missing_docs)]

mod codec;
mod config;
mod connection;
mod head;
mod keys;
mod naming;
mod positions;
mod removals;
mod store;

pub use config::{EsdbConfig, DEFAULT_NAMESPACE, MAX_NAMESPACE_LEN};
pub use keys::EsdbKeyStore;
pub use store::EsdbStore;

/// The protocol-level KurrentDB test server of `tests/support` (feature `test-server`): a tonic
/// server on 127.0.0.1 speaking the client's `Streams` protocol over an in-memory log, for tests
/// of other crates that need a KurrentDB without a real one. Not for production use.
#[cfg(feature = "test-server")]
#[allow(missing_docs, dead_code, clippy::all)]
#[path = "../tests/support/mod.rs"]
pub mod test_server;
