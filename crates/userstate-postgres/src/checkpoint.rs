//! Projection checkpoints: how far each named projection has read `read_all`, stored beside
//! the events so a projection restarts where it stopped.

use std::time::Duration;

use deadpool_postgres::Pool;
use tokio_postgres::GenericClient;
use userstate::StoreError;

use crate::error::{pool_error, store_error, timed_out};
use crate::rows::to_i64;
use crate::sql::{CHECKPOINT_LOAD, CHECKPOINT_SAVE};

/// Saves and loads projection checkpoints (name -> position) in the store's schema.
///
/// Get one from [`PostgresStore::checkpoints`](crate::PostgresStore::checkpoints). A projection
/// that keeps its read model in the same database should save the checkpoint in the same
/// transaction as the model ([`Checkpoints::save_in`]), so both move together.
///
/// ```no_run
/// # async fn demo(store: &userstate_postgres::PostgresStore) -> Result<(), userstate::StoreError> {
/// let checkpoints = store.checkpoints();
/// let from = checkpoints.load("users-read-model").await?.unwrap_or(0) + 1;
/// // … apply read_all(from, …) up to position 42 …
/// checkpoints.save("users-read-model", 42).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Checkpoints {
    pool: Pool,
    timeout: Duration,
}

impl Checkpoints {
    pub(crate) fn new(pool: Pool, timeout: Duration) -> Self {
        Self { pool, timeout }
    }

    /// Records that projection `name` has applied every event up to `position`. Overwrites
    /// (a rebuild may move a checkpoint back).
    pub async fn save(&self, name: &str, position: u64) -> Result<(), StoreError> {
        let work = async {
            let client = self.pool.get().await.map_err(pool_error)?;
            Self::save_in(&**client, name, position).await
        };
        tokio::time::timeout(self.timeout, work)
            .await
            .unwrap_or_else(|_| Err(timed_out("saving a checkpoint", self.timeout)))
    }

    /// [`save`](Self::save) on a client or transaction of your own (same database, with the
    /// store's schema on its `search_path`).
    pub async fn save_in(
        client: &impl GenericClient,
        name: &str,
        position: u64,
    ) -> Result<(), StoreError> {
        client
            .execute(CHECKPOINT_SAVE, &[&name, &to_i64(position)])
            .await
            .map_err(|e| store_error("saving a checkpoint", e))?;
        Ok(())
    }

    /// The last position saved for projection `name`, or `None` if it never saved one.
    pub async fn load(&self, name: &str) -> Result<Option<u64>, StoreError> {
        let work = async {
            let client = self.pool.get().await.map_err(pool_error)?;
            let row = client
                .query_opt(CHECKPOINT_LOAD, &[&name])
                .await
                .map_err(|e| store_error("loading a checkpoint", e))?;
            let Some(row) = row else { return Ok(None) };
            let position: i64 = row
                .try_get(0)
                .map_err(|e| store_error("loading a checkpoint", e))?;
            Ok(Some(u64::try_from(position).unwrap_or(0)))
        };
        tokio::time::timeout(self.timeout, work)
            .await
            .unwrap_or_else(|_| Err(timed_out("loading a checkpoint", self.timeout)))
    }
}
