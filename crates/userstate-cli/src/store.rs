//! Opening the event store a command works on, from a store spec and the data directory.
//!
//! Specs: `file` (default: the embedded durable store in `DATA/events`), `memory` (nothing
//! survives the process; for trying things out), `postgres://…` / `postgresql://…` (feature
//! `postgres`) and `esdb://…` / `kurrentdb://…` (feature `kurrentdb`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context as _};
use userstate::{EventStore, FileStore, MemoryStore};

/// The directory of the file store inside the data directory.
pub fn file_store_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("events")
}

/// Opens the store named by `spec` for the data directory `data_dir`.
pub async fn open_store(spec: &str, data_dir: &Path) -> anyhow::Result<Arc<dyn EventStore>> {
    match spec {
        "memory" => Ok(Arc::new(MemoryStore::new())),
        "file" => {
            let dir = file_store_dir(data_dir);
            let store = tokio::task::spawn_blocking(move || FileStore::open(&dir))
                .await
                .context("opening the file store")?
                .with_context(|| {
                    format!(
                        "cannot open the file store in {}",
                        file_store_dir(data_dir).display()
                    )
                })?;
            Ok(Arc::new(store))
        }
        #[cfg(feature = "postgres")]
        url if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            let store = userstate_postgres::PostgresStore::connect(url)
                .await
                .context("connecting to PostgreSQL")?;
            Ok(Arc::new(store))
        }
        #[cfg(feature = "kurrentdb")]
        url if matches!(
            url.split_once("://").map(|(scheme, _)| scheme),
            Some("esdb" | "esdb+discover" | "kurrentdb" | "kurrentdb+discover" | "kurrent" | "kdb")
        ) =>
        {
            let store = userstate_eventstoredb::EsdbStore::connect(url)
                .await
                .context("connecting to KurrentDB")?;
            Ok(Arc::new(store))
        }
        other => {
            bail!("unknown store {other:?}; use `file`, `memory`, `postgres://…` or `esdb://…`")
        }
    }
}
