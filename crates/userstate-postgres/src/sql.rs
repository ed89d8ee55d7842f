//! Every SQL statement the backend runs, loaded from the `.sql` files beside this module.
//!
//! Statements run with `search_path` set to the store's schema, so they name tables without a
//! schema.

/// Creates the migration bookkeeping table.
pub(crate) const MIGRATIONS_TABLE: &str = include_str!("sql/migrations_table.sql");
/// Waits for the position lock (resolving an interrupted commit).
pub(crate) const LOCK_POSITION: &str = include_str!("sql/lock_position.sql");
/// The current version of one stream.
pub(crate) const STREAM_VERSION: &str = include_str!("sql/stream_version.sql");
/// Appends a whole batch through the `append_batch` function.
pub(crate) const APPEND_BATCH: &str = include_str!("sql/append_batch.sql");
/// The events with the given ids (resolving an interrupted commit).
pub(crate) const EVENTS_BY_ID: &str = include_str!("sql/events_by_id.sql");
/// One stream from a sequence on.
pub(crate) const READ_STREAM: &str = include_str!("sql/read_stream.sql");
/// Every stream from a position on.
pub(crate) const READ_ALL: &str = include_str!("sql/read_all.sql");
/// Every stream from a position on, as a fold borrows it (no metadata, payload as text).
pub(crate) const VISIT_ALL: &str = include_str!("sql/visit_all.sql");
/// The committed head position.
pub(crate) const HEAD_POSITION: &str = include_str!("sql/head_position.sql");
/// Upserts a checkpoint.
pub(crate) const CHECKPOINT_SAVE: &str = include_str!("sql/checkpoint_save.sql");
/// Reads a checkpoint.
pub(crate) const CHECKPOINT_LOAD: &str = include_str!("sql/checkpoint_load.sql");

/// One versioned schema migration.
pub(crate) struct Migration {
    /// Applied in increasing order; never reused.
    pub(crate) version: i32,
    /// Human-readable name (the file name).
    pub(crate) name: &'static str,
    /// The statements.
    pub(crate) sql: &'static str,
}

/// Every migration, oldest first. Append new ones; never edit an applied one (its checksum
/// is verified on connect).
pub(crate) const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "0001_events",
        sql: include_str!("sql/migrations/0001_events.sql"),
    },
    Migration {
        version: 2,
        name: "0002_checkpoints",
        sql: include_str!("sql/migrations/0002_checkpoints.sql"),
    },
    Migration {
        version: 3,
        name: "0003_append_batch",
        sql: include_str!("sql/migrations/0003_append_batch.sql"),
    },
    Migration {
        version: 4,
        name: "0004_hash_chain",
        sql: include_str!("sql/migrations/0004_hash_chain.sql"),
    },
    Migration {
        version: 5,
        name: "0005_user_keys",
        sql: include_str!("sql/migrations/0005_user_keys.sql"),
    },
    Migration {
        version: 6,
        name: "0006_clear_rows",
        sql: include_str!("sql/migrations/0006_clear_rows.sql"),
    },
    Migration {
        version: 7,
        name: "0007_append_batch_slices",
        sql: include_str!("sql/migrations/0007_append_batch_slices.sql"),
    },
];
