//! How to reach PostgreSQL and how the store behaves: [`PostgresStoreBuilder`].

use std::str::FromStr;
use std::time::Duration;

use userstate::StoreError;

use crate::PostgresStore;

/// The schema used when none is given.
pub const DEFAULT_SCHEMA: &str = "userstate";

/// Builds a [`PostgresStore`]; start with [`PostgresStore::builder`].
///
/// ```no_run
/// # async fn demo() -> Result<(), userstate::StoreError> {
/// use std::time::Duration;
/// use userstate_postgres::PostgresStore;
///
/// let store = PostgresStore::builder("postgres://postgres@127.0.0.1:5432/test")
///     .schema("tenant_a")
///     .pool_size(32)
///     .operation_timeout(Duration::from_secs(5))
///     .connect()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct PostgresStoreBuilder {
    pub(crate) url: String,
    pub(crate) schema: String,
    pub(crate) pool_size: usize,
    pub(crate) max_batch: usize,
    pub(crate) in_flight: usize,
    pub(crate) connect_timeout: Duration,
    pub(crate) operation_timeout: Duration,
    pub(crate) poll_interval: Duration,
    pub(crate) application_name: Option<String>,
}

impl PostgresStoreBuilder {
    pub(crate) fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            schema: DEFAULT_SCHEMA.into(),
            pool_size: 32,
            max_batch: 1024,
            in_flight: 1,
            connect_timeout: Duration::from_secs(5),
            operation_timeout: Duration::from_secs(10),
            poll_interval: Duration::from_secs(1),
            application_name: None,
        }
    }

    /// The schema holding the store's tables (default `userstate`), created if missing. Letters,
    /// digits and `_`, starting with a letter or `_`, at most 48 bytes. Several stores may share a
    /// database in different schemas; processes sharing a schema share one store.
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }

    /// The most pooled connections for reads and the writer (default 32).
    pub fn pool_size(mut self, size: usize) -> Self {
        self.pool_size = size.max(2);
        self
    }

    /// The most append requests committed in one transaction (default 1024).
    pub fn max_batch(mut self, requests: usize) -> Self {
        self.max_batch = requests.max(1);
        self
    }

    /// How many batches may be committing at once (default 1). With 2 or more, the next batch
    /// waits for the position lock inside PostgreSQL while the previous one commits, so the lock
    /// passes on without a client round trip, at the price of smaller batches (more commits).
    /// It showed no gain on the loaded test machine (docs/PERFORMANCE.md).
    pub fn batches_in_flight(mut self, batches: usize) -> Self {
        self.in_flight = batches.max(1);
        self
    }

    /// How long to wait for a TCP connection and the server's greeting (default 5 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long any store operation may take, including waiting for a pooled connection,
    /// before it answers [`StoreError::Unavailable`] (default 10 s).
    pub fn operation_timeout(mut self, timeout: Duration) -> Self {
        self.operation_timeout = timeout;
        self
    }

    /// How often the head is polled as a safety net beside LISTEN/NOTIFY (default 1 s).
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval.max(Duration::from_millis(10));
        self
    }

    /// The `application_name` of every connection (default: the URL's, else `userstate`), visible in
    /// `pg_stat_activity`.
    pub fn application_name(mut self, name: impl Into<String>) -> Self {
        self.application_name = Some(name.into());
        self
    }

    /// Connects, runs the pending migrations and starts the writer and the head follower.
    pub async fn connect(self) -> Result<PostgresStore, StoreError> {
        PostgresStore::open(self).await
    }

    /// The connection settings for every session of this store: the URL's, plus the schema on
    /// the search path, timeouts and the application name.
    pub(crate) fn pg_config(&self) -> Result<tokio_postgres::Config, StoreError> {
        validate_schema(&self.schema)?;
        let mut config = tokio_postgres::Config::from_str(&self.url)
            .map_err(|e| StoreError::InvalidArgument(format!("invalid PostgreSQL URL: {e}")))?;
        let mut options = config.get_options().unwrap_or_default().to_string();
        // A session that dies inside a transaction must not keep the position lock for long.
        options.push_str(&format!(
            " -c search_path={} -c idle_in_transaction_session_timeout={}",
            self.schema,
            (self.operation_timeout * 3).as_millis().max(1000)
        ));
        match (&self.application_name, config.get_application_name()) {
            (Some(name), _) => config.application_name(name),
            (None, Some(_)) => &mut config,
            (None, None) => config.application_name("userstate"),
        };
        config
            .options(options.trim())
            .connect_timeout(self.connect_timeout)
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(30));
        Ok(config)
    }

    /// The LISTEN/NOTIFY channel of this store's schema.
    pub(crate) fn channel(&self) -> String {
        format!("userstate_events_{}", self.schema)
    }
}

/// Accepts plain lower-case identifiers only, so the schema can be spliced into
/// `search_path`, `CREATE SCHEMA` and `LISTEN` without quoting problems.
pub(crate) fn validate_schema(schema: &str) -> Result<(), StoreError> {
    let mut chars = schema.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if first_ok && rest_ok && schema.len() <= 48 {
        Ok(())
    } else {
        Err(StoreError::InvalidArgument(format!(
            "schema {schema:?} must be 1 to 48 of [a-z0-9_], not starting with a digit"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_are_plain_identifiers() {
        assert!(validate_schema("userstate").is_ok());
        assert!(validate_schema("_t1").is_ok());
        for bad in ["", "1a", "A", "a-b", "a;drop", "a b", &"x".repeat(49)] {
            assert!(validate_schema(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn options_carry_the_schema() {
        let b = PostgresStoreBuilder::new("postgres://u@localhost/db").schema("s1");
        let config = b.pg_config().expect("valid");
        assert!(config
            .get_options()
            .is_some_and(|o| o.contains("search_path=s1")));
        assert!(PostgresStoreBuilder::new("not a url ://")
            .pg_config()
            .is_err());
    }
}
