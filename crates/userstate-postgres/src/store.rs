//! [`PostgresStore`]: the [`EventStore`] on PostgreSQL.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_postgres::{NoTls, Row};
use tracing::info;
use userstate::store::{EventRef, NewEvent, Watermark};
use userstate::{EventStore, ExpectedVersion, RecordedEvent, StoreError, StreamId};

use crate::batch::AppendRequest;
use crate::checkpoint::Checkpoints;
use crate::config::PostgresStoreBuilder;
use crate::error::{pool_error, store_error, timed_out};
use crate::migrate::migrate;
use crate::notify::{listen, poll};
use crate::rows::{decode_event, lend_event, stream_instance, to_i64};
use crate::sql::{HEAD_POSITION, READ_ALL, READ_STREAM, VISIT_ALL};
use crate::stats::{Counters, WriterStats};
use crate::writer::Writer;

/// How many appends may wait for the writer before callers wait to enqueue.
const QUEUE: usize = 8192;

/// An [`EventStore`] on a PostgreSQL server, shared safely by any number of processes.
///
/// - [`PostgresStore::connect`] (or [`PostgresStore::builder`]) connects, creates the schema and
///   runs the versioned migrations (idempotent; concurrent starts are serialised by an advisory
///   lock).
/// - Appends from concurrent callers are committed together by one writer task (group commit);
///   a conflict fails only its own caller, with [`StoreError::Conflict`] carrying the stream's
///   real version.
/// - `position` is assigned under a row lock inside the commit, so position order is commit
///   order and [`read_all`](EventStore::read_all) never skips an event
///   (docs/adr/0002-postgres-positions.md).
/// - When the server is unreachable, restarting or kills a session, operations answer
///   [`StoreError::Unavailable`] within the operation timeout and work again once it is back.
/// - [`watch_head`](EventStore::watch_head) follows every process's commits through
///   LISTEN/NOTIFY, with polling as a safety net.
/// - The table's `instance` column is derived from the stream name (`user:{instance}:{id}`),
///   see the crate docs.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use userstate::Engine;
/// use userstate_postgres::PostgresStore;
///
/// let store = PostgresStore::connect("postgres://postgres@127.0.0.1:5432/test").await?;
/// let engine = Engine::new(Arc::new(store));
/// # Ok(()) }
/// ```
pub struct PostgresStore {
    pool: Pool,
    requests: mpsc::Sender<AppendRequest>,
    head: Arc<Watermark>,
    followers: Vec<JoinHandle<()>>,
    timeout: Duration,
    schema: String,
    counters: Arc<Counters>,
}

impl PostgresStore {
    /// Connects with default settings (schema `userstate`), runs migrations and starts the
    /// writer. `url` is a libpq-style URL or key=value string, e.g.
    /// `postgres://user:password@host:5432/database`.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::builder(url).connect().await
    }

    /// A builder for non-default settings (schema, pool size, timeouts).
    pub fn builder(url: impl Into<String>) -> PostgresStoreBuilder {
        PostgresStoreBuilder::new(url)
    }

    pub(crate) async fn open(settings: PostgresStoreBuilder) -> Result<Self, StoreError> {
        let config = settings.pg_config()?;
        let timeout = settings.operation_timeout;
        let (mut client, connection) =
            tokio::time::timeout(settings.connect_timeout, config.connect(NoTls))
                .await
                .map_err(|_| timed_out("connecting to PostgreSQL", settings.connect_timeout))?
                .map_err(|e| store_error("connecting to PostgreSQL", e))?;
        let driver = tokio::spawn(connection);
        let migrated = tokio::time::timeout(timeout, migrate(&mut client, &settings.schema))
            .await
            .unwrap_or_else(|_| Err(timed_out("running migrations", timeout)));
        drop(client);
        driver.abort();
        migrated?;

        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(settings.pool_size)
            .wait_timeout(Some(timeout))
            .create_timeout(Some(settings.connect_timeout))
            .recycle_timeout(Some(settings.connect_timeout))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| StoreError::backend("building the connection pool", e))?;

        let store_head = read_head(&pool, timeout).await?;
        let head = Arc::new(Watermark::new(store_head));
        let (requests, queue) = mpsc::channel(QUEUE);
        let counters = Arc::new(Counters::default());
        let writer = Writer {
            pool: pool.clone(),
            channel: settings.channel(),
            head: head.clone(),
            counters: counters.clone(),
            max_batch: settings.max_batch,
            in_flight: settings.in_flight,
            timeout,
        };
        tokio::spawn(Arc::new(writer).run(queue));
        let followers = vec![
            tokio::spawn(listen(config, settings.channel(), head.clone())),
            tokio::spawn(poll(pool.clone(), settings.poll_interval, head.clone())),
        ];
        info!(
            schema = settings.schema,
            head = store_head,
            "PostgreSQL store open"
        );
        Ok(Self {
            pool,
            requests,
            head,
            followers,
            timeout,
            schema: settings.schema,
            counters,
        })
    }

    /// The key store of crypto-shredding in this store's schema (table `user_keys`), made
    /// with the username secret when it has none yet.
    pub async fn key_store(&self) -> Result<crate::PostgresKeyStore, StoreError> {
        crate::PostgresKeyStore::open(self.pool.clone(), self.timeout).await
    }

    /// The last position of a row written before crypto-shredding with personal data in
    /// clear (migration 0006; ADR 0021), or 0 when there is none. A store with such rows is
    /// upgraded by export and import into a new database, which seals them.
    pub async fn clear_until(&self) -> Result<u64, StoreError> {
        const WHAT: &str = "reading the rows in clear";
        let job = async {
            let client = self.pool.get().await.map_err(crate::error::pool_error)?;
            let row = client
                .query_one("SELECT clear_until FROM position_counter WHERE id = 1", &[])
                .await
                .map_err(|e| crate::error::store_error(WHAT, e))?;
            Ok::<_, StoreError>(u64::try_from(row.get::<_, i64>(0)).unwrap_or(0))
        };
        tokio::time::timeout(self.timeout, job)
            .await
            .unwrap_or_else(|_| Err(crate::error::timed_out(WHAT, self.timeout)))
    }

    /// Projection checkpoints stored in this store's schema.
    pub fn checkpoints(&self) -> Checkpoints {
        Checkpoints::new(self.pool.clone(), self.timeout)
    }

    /// What the group-commit writer has done so far (commits, requests, events).
    pub fn writer_stats(&self) -> WriterStats {
        self.counters.snapshot()
    }

    /// The schema holding the tables.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// The connection pool (sessions have the store's schema on their `search_path`), for
    /// projections that keep their read model in the same database.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// The rows of a page statement (`read_all.sql`, `visit_all.sql`): up to `limit` events
    /// from `from_position` on.
    async fn page(
        &self,
        sql: &str,
        from_position: u64,
        limit: usize,
    ) -> Result<Vec<Row>, StoreError> {
        let client = self.pool.get().await.map_err(pool_error)?;
        let err = |e| store_error("reading all events", e);
        let stmt = client.prepare_cached(sql).await.map_err(err)?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        client
            .query(&stmt, &[&to_i64(from_position), &limit])
            .await
            .map_err(err)
    }

    async fn timed<T>(
        &self,
        what: &str,
        work: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        tokio::time::timeout(self.timeout, work)
            .await
            .unwrap_or_else(|_| Err(timed_out(what, self.timeout)))
    }
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        // The writer stops by itself once `requests` is dropped, after its current batch.
        for task in &self.followers {
            task.abort();
        }
    }
}

async fn read_head(pool: &Pool, timeout: Duration) -> Result<u64, StoreError> {
    let work = async {
        let client = pool.get().await.map_err(pool_error)?;
        let err = |e| store_error("reading the head position", e);
        let stmt = client.prepare_cached(HEAD_POSITION).await.map_err(err)?;
        let row = client.query_one(&stmt, &[]).await.map_err(err)?;
        let head: i64 = row.try_get(0).map_err(err)?;
        Ok(u64::try_from(head).unwrap_or(0))
    };
    tokio::time::timeout(timeout, work)
        .await
        .unwrap_or_else(|_| Err(timed_out("reading the head position", timeout)))
}

#[async_trait]
impl EventStore for PostgresStore {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        userstate::store::ensure_events(&events)?;
        let (reply, answer) = oneshot::channel();
        let request = AppendRequest {
            stream: stream.clone(),
            expected,
            events,
            reply,
        };
        // The writer answers within its own deadline; this bound covers the queue in front.
        let wait = self.timeout * 2;
        let work = async {
            self.requests
                .send(request)
                .await
                .map_err(|_| writer_gone())?;
            answer.await.map_err(|_| writer_gone())?
        };
        tokio::time::timeout(wait, work)
            .await
            .unwrap_or_else(|_| Err(timed_out("append", wait)))
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        from_sequence: u64,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.timed("read_stream", async {
            let client = self.pool.get().await.map_err(pool_error)?;
            let err = |e| store_error("reading a stream", e);
            let stmt = client.prepare_cached(READ_STREAM).await.map_err(err)?;
            let rows = client
                .query(
                    &stmt,
                    &[
                        &stream_instance(stream),
                        &stream.as_str(),
                        &to_i64(from_sequence),
                    ],
                )
                .await
                .map_err(err)?;
            rows.iter().map(decode_event).collect()
        })
        .await
    }

    async fn read_all(
        &self,
        from_position: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        self.timed("read_all", async {
            let rows = self.page(READ_ALL, from_position, limit).await?;
            rows.iter().map(decode_event).collect()
        })
        .await
    }

    async fn visit_all(
        &self,
        from_position: u64,
        limit: usize,
        visit: &mut (dyn for<'e> FnMut(EventRef<'e>) + Send),
    ) -> Result<usize, StoreError> {
        if limit == 0 {
            return Ok(0);
        }
        self.timed("visit_all", async {
            let rows = self.page(VISIT_ALL, from_position, limit).await?;
            for row in &rows {
                visit(lend_event(row)?);
            }
            Ok(rows.len())
        })
        .await
    }

    async fn head_position(&self) -> Result<u64, StoreError> {
        read_head(&self.pool, self.timeout).await
    }

    fn watch_head(&self) -> Arc<Watermark> {
        self.head.clone()
    }
}

fn writer_gone() -> StoreError {
    StoreError::Unavailable {
        message: "the store's writer task has stopped".into(),
        source: None,
    }
}
