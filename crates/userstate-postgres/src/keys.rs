//! The key store of crypto-shredding (ADR 0021) in the store's schema: table `user_keys`.
//! Every node sharing the schema shares the keys; a node caches what it read, and forgets a
//! key when it reads the user's `user.erased` (the store wrapper calls
//! [`KeyStore::forget`]).

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::Pool;
use userstate::crypto::{destroyed, other_secret, KeyExport, KeyStore, UserKey};
use userstate::StoreError;

use crate::error::{pool_error, store_error, timed_out};

/// The id of the row holding the username secret (no user key id is empty).
const SECRET_ID: &str = "";

/// Keys in PostgreSQL: get one from [`PostgresStore::key_store`](crate::PostgresStore::key_store).
pub struct PostgresKeyStore {
    pool: Pool,
    timeout: Duration,
    secret: RwLock<[u8; 32]>,
    /// Id -> key, `None` for a key known absent (destroyed).
    cache: RwLock<HashMap<String, Option<UserKey>>>,
}

fn to_key(bytes: Option<Vec<u8>>) -> Option<UserKey> {
    bytes.and_then(|b| b.try_into().ok()).map(UserKey)
}

impl PostgresKeyStore {
    /// Opens the key store, making the username secret when there is none yet.
    pub(crate) async fn open(pool: Pool, timeout: Duration) -> Result<Self, StoreError> {
        let store = Self {
            pool,
            timeout,
            secret: RwLock::new([0; 32]),
            cache: RwLock::default(),
        };
        let secret = store
            .run("reading the username secret", |client| async move {
                let candidate = UserKey::generate().0.to_vec();
                client
                    .execute(
                        "INSERT INTO user_keys (id, key) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING",
                        &[&SECRET_ID, &candidate],
                    )
                    .await?;
                let row = client
                    .query_one("SELECT key FROM user_keys WHERE id = $1", &[&SECRET_ID])
                    .await?;
                Ok(row.get::<_, Option<Vec<u8>>>(0))
            })
            .await?;
        let secret = to_key(secret).ok_or_else(|| StoreError::Corrupt {
            location: "user_keys".into(),
            reason: "the username secret is not 32 bytes".into(),
        })?;
        *store.secret.write().expect("not poisoned") = secret.0;
        Ok(store)
    }

    async fn run<T, F, Fut>(&self, what: &str, work: F) -> Result<T, StoreError>
    where
        F: FnOnce(deadpool_postgres::Object) -> Fut,
        Fut: std::future::Future<Output = Result<T, tokio_postgres::Error>>,
    {
        let job = async {
            let client = self.pool.get().await.map_err(pool_error)?;
            work(client).await.map_err(|e| store_error(what, e))
        };
        tokio::time::timeout(self.timeout, job)
            .await
            .unwrap_or_else(|_| Err(timed_out(what, self.timeout)))
    }

    fn remember(&self, id: &str, key: Option<UserKey>) {
        self.cache
            .write()
            .expect("not poisoned")
            .insert(id.to_owned(), key);
    }
}

#[async_trait]
impl KeyStore for PostgresKeyStore {
    fn username_secret(&self) -> [u8; 32] {
        *self.secret.read().expect("not poisoned")
    }

    fn cached(&self, id: &str) -> Option<Option<UserKey>> {
        self.cache.read().expect("not poisoned").get(id).cloned()
    }

    async fn load(&self, id: &str) -> Result<Option<UserKey>, StoreError> {
        let owned = id.to_owned();
        let key = self
            .run("reading a key", |client| async move {
                let row = client
                    .query_opt("SELECT key FROM user_keys WHERE id = $1", &[&owned])
                    .await?;
                Ok(row.and_then(|r| r.get::<_, Option<Vec<u8>>>(0)))
            })
            .await?;
        let key = to_key(key);
        self.remember(id, key.clone());
        Ok(key)
    }

    /// One query for all of `ids`; an id without a row is remembered as absent.
    async fn load_many(&self, ids: &[String]) -> Result<(), StoreError> {
        let owned = ids.to_vec();
        let rows = self
            .run("reading keys", |client| async move {
                let rows = client
                    .query(
                        "SELECT id, key FROM user_keys WHERE id = ANY($1)",
                        &[&owned],
                    )
                    .await?;
                Ok(rows
                    .into_iter()
                    .map(|r| (r.get::<_, String>(0), r.get::<_, Option<Vec<u8>>>(1)))
                    .collect::<HashMap<_, _>>())
            })
            .await?;
        let mut cache = self.cache.write().expect("not poisoned");
        for id in ids {
            let key = rows.get(id).cloned().flatten();
            cache.insert(id.clone(), to_key(key));
        }
        Ok(())
    }

    async fn create(&self, id: &str) -> Result<UserKey, StoreError> {
        if let Some(Some(key)) = self.cached(id) {
            return Ok(key);
        }
        let owned = id.to_owned();
        let stored = self
            .run("making a key", |client| async move {
                let candidate = UserKey::generate().0.to_vec();
                client
                    .execute(
                        "INSERT INTO user_keys (id, key) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING",
                        &[&owned, &candidate],
                    )
                    .await?;
                let row = client
                    .query_one("SELECT key FROM user_keys WHERE id = $1", &[&owned])
                    .await?;
                Ok(row.get::<_, Option<Vec<u8>>>(0))
            })
            .await?;
        let key = to_key(stored).ok_or_else(|| destroyed(id))?;
        self.remember(id, Some(key.clone()));
        Ok(key)
    }

    async fn destroy(&self, id: &str) -> Result<(), StoreError> {
        let owned = id.to_owned();
        self.run("destroying a key", |client| async move {
            client
                .execute(
                    "INSERT INTO user_keys (id, key) VALUES ($1, NULL) \
                     ON CONFLICT (id) DO UPDATE SET key = NULL",
                    &[&owned],
                )
                .await?;
            // The old row version holds the key until vacuumed: vacuum now (best effort; it
            // cannot run inside a transaction, and a busy table may keep it for a while).
            let _ = client.batch_execute("VACUUM user_keys").await;
            Ok(())
        })
        .await?;
        self.remember(id, None);
        Ok(())
    }

    fn forget(&self, id: &str) {
        self.cache.write().expect("not poisoned").remove(id);
    }

    async fn export(&self) -> Result<KeyExport, StoreError> {
        let rows = self
            .run("reading the keys", |client| async move {
                client
                    .query(
                        "SELECT id, key FROM user_keys WHERE id <> '' AND key IS NOT NULL ORDER BY id",
                        &[],
                    )
                    .await
            })
            .await?;
        let keys = rows
            .into_iter()
            .filter_map(|r| Some((r.get::<_, String>(0), to_key(r.get(1))?)));
        Ok(KeyExport::encode(&self.username_secret(), keys))
    }

    async fn import(&self, export: &KeyExport) -> Result<(), StoreError> {
        let (secret, keys) = export.decode()?;
        let mine = self.username_secret();
        self.run("importing keys", |mut client| async move {
            let tx = client.transaction().await?;
            let has_keys = tx
                .query_one("SELECT count(*) FROM user_keys WHERE id <> ''", &[])
                .await?
                .get::<_, i64>(0)
                > 0;
            if has_keys && secret != mine {
                return Ok(Err(other_secret()));
            }
            tx.execute(
                "UPDATE user_keys SET key = $2 WHERE id = $1",
                &[&SECRET_ID, &secret.to_vec()],
            )
            .await?;
            for (id, key) in &keys {
                tx.execute(
                    "INSERT INTO user_keys (id, key) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING",
                    &[id, &key.0.to_vec()],
                )
                .await?;
            }
            tx.commit().await?;
            Ok(Ok(()))
        })
        .await??;
        *self.secret.write().expect("not poisoned") = secret;
        self.cache.write().expect("not poisoned").clear();
        Ok(())
    }
}
