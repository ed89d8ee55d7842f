//! Shared by the PostgreSQL tests: the server URL from `USERSTATE_TEST_POSTGRES_URL` (skip when
//! unset, fail under `CI=true`), and a fresh schema per test, dropped when the guard drops.

#![allow(dead_code)] // each test binary uses a different part

use std::time::Duration;

use userstate_postgres::{PostgresStore, PostgresStoreBuilder};

/// The variable naming the test server.
pub const URL_VAR: &str = "USERSTATE_TEST_POSTGRES_URL";

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// The server URL, or `None` (with a message) when the tests should skip.
pub fn url() -> Option<String> {
    match std::env::var(URL_VAR) {
        Ok(url) if !url.is_empty() => Some(url),
        _ if in_ci() => panic!("{URL_VAR} must be set when CI=true"),
        _ => {
            eprintln!(
                "skipped: {URL_VAR} is not set (e.g. postgres://postgres@127.0.0.1:5432/test)"
            );
            None
        }
    }
}

/// Drops its schema (and everything in it) when dropped.
pub struct SchemaGuard {
    /// The server.
    pub url: String,
    /// The schema's name.
    pub schema: String,
}

impl Drop for SchemaGuard {
    fn drop(&mut self) {
        let (url, schema) = (self.url.clone(), self.schema.clone());
        // Drop runs inside the test's runtime: do the async work on a thread of its own.
        let cleanup = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                let Ok((client, connection)) =
                    tokio_postgres::connect(&url, tokio_postgres::NoTls).await
                else {
                    return;
                };
                tokio::spawn(connection);
                let sql =
                    format!("SET lock_timeout = '10s'; DROP SCHEMA IF EXISTS {schema} CASCADE");
                if let Err(e) = client.batch_execute(&sql).await {
                    eprintln!("could not drop test schema {schema}: {e}");
                }
            });
        });
        let _ = cleanup.join();
    }
}

/// A unique schema name for one test.
pub fn unique_schema(label: &str) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("t_{label}_{}", &id[..12])
}

/// A builder on the test server for a new unique schema, with short timeouts.
pub fn builder(url: &str, schema: &str) -> PostgresStoreBuilder {
    PostgresStore::builder(url)
        .schema(schema)
        .pool_size(16)
        .connect_timeout(Duration::from_secs(3))
        .operation_timeout(Duration::from_secs(5))
}

/// Connects `builder`: `None` (skip) when the server does not answer, a failure under CI.
pub async fn connect(builder: PostgresStoreBuilder) -> Option<PostgresStore> {
    match builder.connect().await {
        Ok(store) => Some(store),
        Err(e) if in_ci() => panic!("PostgreSQL from {URL_VAR} is unreachable under CI: {e}"),
        Err(e @ userstate::StoreError::Unavailable { .. }) => {
            eprintln!("skipped: PostgreSQL from {URL_VAR} is unreachable: {e}");
            None
        }
        Err(e) => panic!("connecting to the test PostgreSQL failed: {e}"),
    }
}

/// A store on a fresh schema of its own, and the guard that drops the schema.
pub async fn fresh(label: &str) -> Option<(PostgresStore, SchemaGuard)> {
    fresh_with(label, |b| b).await
}

/// [`fresh`], with settings changed by `tune`.
pub async fn fresh_with(
    label: &str,
    tune: impl FnOnce(PostgresStoreBuilder) -> PostgresStoreBuilder,
) -> Option<(PostgresStore, SchemaGuard)> {
    let url = url()?;
    let schema = unique_schema(label);
    let guard = SchemaGuard {
        url: url.clone(),
        schema: schema.clone(),
    };
    let store = connect(tune(builder(&url, &schema))).await?;
    Some((store, guard))
}
