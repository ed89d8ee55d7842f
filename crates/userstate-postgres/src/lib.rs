//! # userstate-postgres
//!
//! A [`userstate::EventStore`] on PostgreSQL ([`PostgresStore`]), for deployments where several
//! userstate processes share one database.
//!
//! ```no_run
//! # async fn demo() -> Result<(), userstate::StoreError> {
//! use userstate_postgres::PostgresStore;
//!
//! // Default settings: schema `userstate`, 32 pooled connections, 10 s operation timeout.
//! let store = PostgresStore::connect("postgres://postgres@127.0.0.1:5432/test").await?;
//! // Or tuned:
//! let store = PostgresStore::builder("postgres://postgres@127.0.0.1:5432/test")
//!     .schema("userstate_eu")
//!     .pool_size(16)
//!     .connect()
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! ## Tables (schema chosen by [`PostgresStoreBuilder::schema`])
//! - `events (instance, stream, sequence, position, created_at, type, revision, payload jsonb,
//!   metadata jsonb, event_id)`, primary key `(instance, stream, sequence)`, unique `position`
//!   and `event_id`. `instance` is derived from the **stream name**: the middle part of
//!   `kind:instance:id` (userstate's `user:{instance}:{user}` and `username:{instance}:{name}`),
//!   empty for names with fewer than three parts. It is a function of the name, so the same
//!   stream never splits across instances; the metadata's `instance` is kept as given.
//! - `position_counter`: one row whose lock serialises position assignment (see
//!   docs/adr/0002-postgres-positions.md), with the chain's head hash and `clear_until`, the
//!   last position of a row written in clear before crypto-shredding (migration 0006,
//!   [`PostgresStore::clear_until`]).
//! - `checkpoints (name, position)`: see [`Checkpoints`].
//! - `schema_migrations`: which versioned migrations ran.
//!
//! ## What it is not
//! Not a queue or a pub/sub system: notifications only wake followers, who then read
//! `read_all`. Payloads are `jsonb`, which cannot hold the character `\u0000`; such an append is
//! refused as [`userstate::StoreError::InvalidArgument`].

#![deny(missing_docs)]

mod batch;
mod checkpoint;
mod config;
mod error;
mod keys;
mod migrate;
mod notify;
mod rows;
mod sql;
mod stats;
mod store;
mod writer;

pub use checkpoint::Checkpoints;
pub use config::{PostgresStoreBuilder, DEFAULT_SCHEMA};
pub use keys::PostgresKeyStore;
pub use stats::WriterStats;
pub use store::PostgresStore;
