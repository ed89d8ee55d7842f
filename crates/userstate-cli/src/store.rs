//! Opening the event store a command works on, from a store spec and the data directory.
//!
//! Specs: `file` (default: the embedded durable store in `DATA/events`), `memory` (nothing
//! survives the process; for trying things out), `postgres://…` / `postgresql://…` (feature
//! `postgres`) and `esdb://…` / `kurrentdb://…` (feature `kurrentdb`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context as _};
use userstate::crypto::KeyExport;
use userstate::{
    CryptoStore, EventStore, FileKeyStore, FileStore, KeyStore, MemoryKeyStore, MemoryStore,
};

/// The directory of the file store inside the data directory.
pub fn file_store_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("events")
}

/// The store named by `spec` for an error message: `the file store in DATA/events`, `the
/// memory store`, or the server's URL with its password (if any) replaced by `***`.
pub fn describe_store(spec: &str, data_dir: &Path) -> String {
    match spec {
        "file" => format!("the file store in {}", file_store_dir(data_dir).display()),
        "memory" => "the memory store".to_owned(),
        url => redact_password(url),
    }
}

/// `url` with the password of its `user:password@` part replaced by `***`.
fn redact_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((credentials, host)) => match credentials.split_once(':') {
            Some((user, _password)) => format!("{scheme}://{user}:***@{host}{path}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

/// Opens the store named by `spec` for the data directory `data_dir` to read it only. The file
/// store is opened read-only (docs/adr/0017): nothing in the directory is created or changed,
/// no lock is held, and it works while `serve` runs on the same directory, seeing every event
/// acknowledged before the open. Personal data is opened with a copy of the key store read
/// after the log (a user's key is written before its first event, so the copy holds the keys
/// of every user in the snapshot). A data directory without a file store reads as an empty
/// store (and is not created). Other stores open as for [`open_store`].
pub async fn open_store_read_only(
    spec: &str,
    data_dir: &Path,
) -> anyhow::Result<Arc<dyn EventStore>> {
    if spec != "file" {
        return open_store(spec, data_dir).await;
    }
    let raw = open_raw_store_read_only(spec, data_dir).await?;
    let keys = MemoryKeyStore::new();
    if let Some(export) = read_file_keys(data_dir).await? {
        keys.import(&export).await.with_context(|| {
            format!("reading the key store {}", data_dir.join("keys").display())
        })?;
    }
    Ok(Arc::new(CryptoStore::new(raw, Arc::new(keys))))
}

/// Opens the store named by `spec` as it is stored (see [`open_raw_store`]) to read it only:
/// the file store read-only, as [`open_store_read_only`] does.
pub async fn open_raw_store_read_only(
    spec: &str,
    data_dir: &Path,
) -> anyhow::Result<Arc<dyn EventStore>> {
    if spec != "file" {
        return open_raw_store(spec, data_dir).await;
    }
    if !file_store_dir(data_dir).exists() {
        return Ok(Arc::new(MemoryStore::new()));
    }
    Ok(Arc::new(open_file_store_read_only(data_dir).await?))
}

/// Opens the file store of the data directory `data_dir` read-only (see
/// [`FileStore::open_read_only`]).
pub async fn open_file_store_read_only(data_dir: &Path) -> anyhow::Result<FileStore> {
    let dir = file_store_dir(data_dir);
    tokio::task::spawn_blocking(move || FileStore::open_read_only(dir))
        .await?
        .with_context(|| {
            format!(
                "cannot open the file store in {} read-only",
                file_store_dir(data_dir).display()
            )
        })
}

/// The file key store of `data_dir` (`DATA/keys`), read without being opened for writing;
/// `None` when there is none yet.
async fn read_file_keys(data_dir: &Path) -> anyhow::Result<Option<KeyExport>> {
    let dir = data_dir.to_owned();
    tokio::task::spawn_blocking(move || FileKeyStore::read_export(&dir))
        .await?
        .with_context(|| {
            format!(
                "cannot read the key store {}",
                data_dir.join("keys").display()
            )
        })
}

/// Opens the store named by `spec` for the data directory `data_dir`, sealing personal data
/// with the keys of its key store ([`open_key_store`]; ADR 0021).
pub async fn open_store(spec: &str, data_dir: &Path) -> anyhow::Result<Arc<dyn EventStore>> {
    #[cfg(feature = "postgres")]
    if is_postgres(spec) {
        let store = connect_postgres(spec).await?;
        refuse_clear_rows(&store, spec).await?;
        let keys = postgres_keys(&store, spec).await?;
        return Ok(Arc::new(CryptoStore::new(Arc::new(store), keys)));
    }
    #[cfg(feature = "kurrentdb")]
    if is_kurrentdb(spec) {
        let store = connect_kurrentdb(spec).await?;
        let keys = kurrentdb_keys(&store, spec).await?;
        return Ok(Arc::new(CryptoStore::new(Arc::new(store), keys)));
    }
    let (store, keys) = open_raw_store_and_keys(spec, data_dir).await?;
    Ok(Arc::new(CryptoStore::new(store, keys)))
}

/// The store named by `spec` as it is stored ([`open_raw_store`]) and its key store
/// ([`open_key_store`]), for sealing with. The file store and the file key store are tied
/// together: the store's syncer syncs `DATA/keys` before each batch, so a new key becomes
/// durable in the log's group commit (ADR 0021, "Keys in the log's group commit").
pub async fn open_raw_store_and_keys(
    spec: &str,
    data_dir: &Path,
) -> anyhow::Result<(Arc<dyn EventStore>, Arc<dyn KeyStore>)> {
    if spec != "file" {
        let store = open_raw_store(spec, data_dir).await?;
        return Ok((store, open_key_store(spec, data_dir).await?));
    }
    let store = open_file_store(data_dir).await?;
    let keys = open_file_keys(data_dir).await?;
    keys.sync_with(&store).with_context(|| {
        format!(
            "tying the key store {} to the file store",
            data_dir.join("keys").display()
        )
    })?;
    Ok((Arc::new(store), Arc::new(keys)))
}

/// Whether `spec` names a KurrentDB store.
pub fn is_kurrentdb(spec: &str) -> bool {
    matches!(
        spec.split_once("://").map(|(scheme, _)| scheme),
        Some("esdb" | "esdb+discover" | "kurrentdb" | "kurrentdb+discover" | "kurrent" | "kdb")
    )
}

/// The key store of the store named by `spec`: `DATA/keys` for the file store, the table
/// `user_keys` in the store's schema for PostgreSQL, key streams in the server for KurrentDB
/// (`{namespace}.keys-…`, shared by every node), memory for the memory store.
pub async fn open_key_store(spec: &str, data_dir: &Path) -> anyhow::Result<Arc<dyn KeyStore>> {
    match spec {
        "memory" => Ok(Arc::new(MemoryKeyStore::new())),
        #[cfg(feature = "postgres")]
        url if is_postgres(url) => postgres_keys(&connect_postgres(url).await?, url).await,
        #[cfg(feature = "kurrentdb")]
        url if is_kurrentdb(url) => kurrentdb_keys(&connect_kurrentdb(url).await?, url).await,
        _ => Ok(Arc::new(open_file_keys(data_dir).await?)),
    }
}

/// Opens the file key store `DATA/keys` (see [`FileKeyStore::open`]).
async fn open_file_keys(data_dir: &Path) -> anyhow::Result<FileKeyStore> {
    let dir = data_dir.to_owned();
    tokio::task::spawn_blocking(move || FileKeyStore::open(&dir))
        .await?
        .with_context(|| {
            format!(
                "cannot open the key store {}",
                data_dir.join("keys").display()
            )
        })
}

/// Everything in the key store of the store named by `spec`, for `export --keys`. The file
/// key store is read without being opened for writing (`serve` may run on it).
pub async fn export_keys(spec: &str, data_dir: &Path) -> anyhow::Result<KeyExport> {
    let is_file = spec != "memory" && !is_postgres(spec) && !is_kurrentdb(spec);
    if is_file {
        let dir = data_dir.to_owned();
        return tokio::task::spawn_blocking(move || FileKeyStore::read_export(&dir))
            .await?
            .with_context(|| {
                format!(
                    "cannot read the key store {}",
                    data_dir.join("keys").display()
                )
            })?
            .with_context(|| format!("there is no key store {}", data_dir.join("keys").display()));
    }
    Ok(open_key_store(spec, data_dir).await?.export().await?)
}

fn is_postgres(spec: &str) -> bool {
    spec.starts_with("postgres://") || spec.starts_with("postgresql://")
}

#[cfg(feature = "postgres")]
async fn connect_postgres(url: &str) -> anyhow::Result<userstate_postgres::PostgresStore> {
    userstate_postgres::PostgresStore::connect(url)
        .await
        .with_context(|| format!("opening the store {}", redact_password(url)))
}

/// Refuses a PostgreSQL store holding rows written before crypto-shredding, with personal
/// data and username reservation names in clear (migration 0006, ADR 0021): its erasures could
/// not forget them and its hashed username lookup would not see them. `export` and `verify`
/// read it as stored; export and import into a new database seal it.
#[cfg(feature = "postgres")]
async fn refuse_clear_rows(
    store: &userstate_postgres::PostgresStore,
    url: &str,
) -> anyhow::Result<()> {
    let until = store
        .clear_until()
        .await
        .with_context(|| format!("opening the store {}", redact_password(url)))?;
    if until > 0 {
        bail!(
            "the store {} holds personal data in clear, written before crypto-shredding (up to \
             position {until}): it is not served until upgraded. Export it (`userstate export \
             --store URL -o FILE`) and import the file into a new, empty database (`userstate \
             import --store NEW-URL FILE`), which seals it; see docs/OPERATIONS.md, \"Upgrading\"",
            redact_password(url)
        );
    }
    Ok(())
}

#[cfg(feature = "postgres")]
async fn postgres_keys(
    store: &userstate_postgres::PostgresStore,
    url: &str,
) -> anyhow::Result<Arc<dyn KeyStore>> {
    let keys = store
        .key_store()
        .await
        .with_context(|| format!("opening the key store in {}", redact_password(url)))?;
    Ok(Arc::new(keys))
}

#[cfg(feature = "kurrentdb")]
async fn connect_kurrentdb(url: &str) -> anyhow::Result<userstate_eventstoredb::EsdbStore> {
    userstate_eventstoredb::EsdbStore::connect(url)
        .await
        .with_context(|| format!("opening the store {}", redact_password(url)))
}

#[cfg(feature = "kurrentdb")]
async fn kurrentdb_keys(
    store: &userstate_eventstoredb::EsdbStore,
    url: &str,
) -> anyhow::Result<Arc<dyn KeyStore>> {
    let keys = store
        .key_store()
        .await
        .with_context(|| format!("opening the key store in {}", redact_password(url)))?;
    Ok(Arc::new(keys))
}

/// Opens the store named by `spec` as it is stored: personal data sealed, username
/// reservation streams named by a hash (what `export` writes and `import` reads).
pub async fn open_raw_store(spec: &str, data_dir: &Path) -> anyhow::Result<Arc<dyn EventStore>> {
    match spec {
        "memory" => Ok(Arc::new(MemoryStore::new())),
        "file" => Ok(Arc::new(open_file_store(data_dir).await?)),
        #[cfg(feature = "postgres")]
        url if is_postgres(url) => Ok(Arc::new(connect_postgres(url).await?)),
        #[cfg(feature = "kurrentdb")]
        url if is_kurrentdb(url) => Ok(Arc::new(connect_kurrentdb(url).await?)),
        other => {
            bail!("unknown store {other:?}; use `file`, `memory`, `postgres://…` or `esdb://…`")
        }
    }
}

/// Opens the file store of the data directory `data_dir` (`DATA/events`) for writing.
async fn open_file_store(data_dir: &Path) -> anyhow::Result<FileStore> {
    let dir = file_store_dir(data_dir);
    tokio::task::spawn_blocking(move || FileStore::open(&dir))
        .await
        .with_context(|| {
            format!(
                "opening the file store in {}",
                file_store_dir(data_dir).display()
            )
        })?
        .with_context(|| {
            format!(
                "cannot open the file store in {}",
                file_store_dir(data_dir).display()
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_is_described_without_its_password() {
        let data = Path::new("/srv/us");
        assert_eq!(
            describe_store("file", data),
            "the file store in /srv/us/events"
        );
        assert_eq!(describe_store("memory", data), "the memory store");
        for (url, shown) in [
            (
                "postgres://app:s3cret@db:5432/us?sslmode=disable",
                "postgres://app:***@db:5432/us?sslmode=disable",
            ),
            ("postgres://app@db/us", "postgres://app@db/us"),
            (
                "esdb://admin:changeit@kdb:2113?tls=false",
                "esdb://admin:***@kdb:2113?tls=false",
            ),
            ("postgresql://db/us", "postgresql://db/us"),
        ] {
            assert_eq!(describe_store(url, data), shown);
        }
    }
}
