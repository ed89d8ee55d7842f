//! Bearer tokens kept in the store (`userstate token create|list|revoke`): the
//! [`StoreTokens`] authenticator follows the store-wide token stream
//! ([`tokens_stream`](userstate::engine::tokens_stream)) and answers from memory.
//!
//! It reads the stream once when it starts, then its tail (from the last version it folded)
//! every [`REFRESH_EVERY`] and whenever [`StoreTokens::refresh`] is called (the local admin
//! socket does so after each change it makes), so every node sharing a store honours a new or
//! revoked token within about a second, without a restart. It keeps only the SHA-256 of each
//! secret, as the store does; a presented token is hashed and looked up. A revoked or expired
//! token is refused as [`AuthError::Rejected`] (401, logged with its subject), an unknown one
//! as [`AuthError::Unknown`] so a [`Chain`](crate::Chain) asks the next authenticator.

use std::collections::HashMap;
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use tracing::{debug, info, warn};
use userstate::domain::{TokenEvent, TokenRegistry, TokenStatus};
use userstate::engine::tokens_stream;
use userstate::{EventStore, Principal, StreamId};

use crate::auth::{async_trait, AuthError, Authenticator, Credentials};

/// How often the token stream's tail is read.
pub const REFRESH_EVERY: Duration = Duration::from_secs(1);

/// One token as the authenticator keeps it.
struct Known {
    principal: Arc<Principal>,
    expires_at: Option<DateTime<Utc>>,
    revoked: bool,
}

#[derive(Default)]
struct State {
    registry: TokenRegistry,
    by_hash: HashMap<[u8; 32], Known>,
}

struct Inner {
    store: Arc<dyn EventStore>,
    stream: StreamId,
    state: RwLock<State>,
    /// One refresh at a time (the timer's and the admin socket's).
    refreshing: tokio::sync::Mutex<()>,
}

/// The authenticator of the tokens kept in the store (module docs). Cheap to clone; the
/// refresher it starts stops once every clone is dropped.
#[derive(Clone)]
pub struct StoreTokens {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for StoreTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreTokens")
            .field("tokens", &self.len())
            .finish()
    }
}

impl StoreTokens {
    /// Reads every token of `store`, and starts refreshing every `every` (at least 10 ms) in a
    /// task of the current runtime.
    pub async fn start(
        store: Arc<dyn EventStore>,
        every: Duration,
    ) -> Result<Self, userstate::Error> {
        let tokens = Self {
            inner: Arc::new(Inner {
                store,
                stream: tokens_stream(),
                state: RwLock::new(State::default()),
                refreshing: tokio::sync::Mutex::new(()),
            }),
        };
        tokens.refresh().await?;
        tokio::spawn(refresh_loop(
            Arc::downgrade(&tokens.inner),
            every.max(Duration::from_millis(10)),
        ));
        Ok(tokens)
    }

    /// How many tokens are known (revoked and expired ones included).
    pub fn len(&self) -> usize {
        self.read().by_hash.len()
    }

    /// Whether no token is known.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reads the token stream's events after the last one folded, and folds them. Answers how
    /// many there were.
    pub async fn refresh(&self) -> Result<usize, userstate::Error> {
        let inner = &self.inner;
        let _one = inner.refreshing.lock().await;
        let from = self.read().registry.version() + 1;
        let tail = inner.store.read_stream(&inner.stream, from).await?;
        if tail.is_empty() {
            return Ok(0);
        }
        let mut decoded = Vec::with_capacity(tail.len());
        for e in &tail {
            let event =
                TokenEvent::decode(&e.event_type, e.revision, &e.payload).map_err(|source| {
                    userstate::Error::Decode {
                        stream: e.stream.as_str().to_owned(),
                        sequence: e.sequence,
                        source,
                    }
                })?;
            decoded.push((event, e.created_at));
        }
        let mut state = inner.state.write().unwrap_or_else(|e| e.into_inner());
        // A tail that does not continue the fold (another refresh got there first) is dropped.
        if tail[0].sequence != state.registry.version() + 1 {
            return Ok(0);
        }
        for (event, at) in &decoded {
            state.registry.apply(event, *at);
            match event {
                TokenEvent::Created(created) => {
                    let mut key = [0u8; 32];
                    if hex::decode_to_slice(&created.sha256, &mut key).is_err() {
                        warn!(id = %created.id, "a stored token's hash is not hex; ignored");
                        continue;
                    }
                    debug!(id = %created.id, subject = %created.subject, instance = %created.instance, "store token known");
                    state.by_hash.insert(
                        key,
                        Known {
                            principal: Arc::new(created.principal()),
                            expires_at: created.expires_at,
                            revoked: false,
                        },
                    );
                }
                TokenEvent::Revoked { id } => {
                    let Some(record) = state.registry.get(id) else {
                        continue;
                    };
                    info!(%id, subject = %record.token.subject, "store token revoked");
                    let mut key = [0u8; 32];
                    if hex::decode_to_slice(&record.token.sha256, &mut key).is_ok() {
                        if let Some(known) = state.by_hash.get_mut(&key) {
                            known.revoked = true;
                        }
                    }
                }
            }
        }
        Ok(tail.len())
    }

    /// The principal of a bearer token, at `now`.
    pub fn principal_of(
        &self,
        token: &str,
        now: DateTime<Utc>,
    ) -> Result<Arc<Principal>, AuthError> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let state = self.read();
        let known = state.by_hash.get(&digest).ok_or(AuthError::Unknown)?;
        let status = if known.revoked {
            TokenStatus::Revoked
        } else if known.expires_at.is_some_and(|end| now >= end) {
            TokenStatus::Expired
        } else {
            return Ok(known.principal.clone());
        };
        Err(AuthError::rejected(
            Some(known.principal.subject.clone()),
            format!("token {}", status.name()),
        ))
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.inner.state.read().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl Authenticator for StoreTokens {
    async fn authenticate(
        &self,
        credentials: Credentials<'_>,
    ) -> Result<Arc<Principal>, AuthError> {
        self.principal_of(credentials.bearer()?, Utc::now())
    }
}

/// Refreshes every `every` while a [`StoreTokens`] is alive.
async fn refresh_loop(inner: Weak<Inner>, every: Duration) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    let mut failing = false;
    loop {
        ticks.tick().await;
        let Some(inner) = inner.upgrade() else {
            debug!("store tokens dropped; refresher stops");
            return;
        };
        match (StoreTokens { inner }).refresh().await {
            Ok(_) if failing => {
                info!("store tokens refreshed again");
                failing = false;
            }
            Ok(_) => {}
            Err(e) if !failing => {
                warn!(error = %e, "cannot refresh the store tokens; the last known are used");
                failing = true;
            }
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use userstate::domain::{TokenCreated, TokenId};
    use userstate::{Context, Engine, InstanceId, MemoryStore, Permission};

    use super::*;
    use crate::auth::hash_token;

    fn created(id: &str, secret: &str, expires_at: Option<DateTime<Utc>>) -> TokenCreated {
        TokenCreated {
            id: TokenId::new(id).unwrap(),
            sha256: hash_token(secret),
            subject: format!("sub-{id}"),
            instance: InstanceId::new("default").unwrap(),
            instance_grants: vec![Permission::UserRead],
            org_grants: BTreeMap::new(),
            expires_at,
        }
    }

    #[tokio::test]
    async fn tokens_are_known_after_a_refresh_and_refused_once_revoked_or_expired() {
        let store: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
        let engine = Engine::new(store.clone());
        let admin = Context::new(Principal::system(
            "admin",
            InstanceId::new("default").unwrap(),
        ));
        let tokens = StoreTokens::start(store, Duration::from_secs(3600))
            .await
            .unwrap();
        assert!(tokens.is_empty());
        let now = Utc::now();
        let soon = now + chrono::Duration::seconds(60);
        engine
            .create_token(&admin, &created("tok_1", "s1", None))
            .await
            .unwrap();
        engine
            .create_token(&admin, &created("tok_2", "s2", Some(soon)))
            .await
            .unwrap();
        assert_eq!(
            tokens.principal_of("s1", now).unwrap_err(),
            AuthError::Unknown
        );
        assert_eq!(tokens.refresh().await.unwrap(), 2);
        assert_eq!(tokens.principal_of("s1", now).unwrap().subject, "sub-tok_1");
        assert!(tokens.principal_of("s2", now).is_ok());
        let expired = tokens.principal_of("s2", soon).unwrap_err();
        assert_eq!(expired.subject(), Some("sub-tok_2"));
        assert_eq!(expired.to_string(), "invalid bearer token: token expired");
        engine.revoke_tokens(&admin, "tok_1").await.unwrap();
        assert_eq!(tokens.refresh().await.unwrap(), 1);
        let revoked = tokens.principal_of("s1", now).unwrap_err();
        assert_eq!(revoked.to_string(), "invalid bearer token: token revoked");
        assert_eq!(
            tokens.principal_of("other", now).unwrap_err(),
            AuthError::Unknown
        );
        assert_eq!(tokens.refresh().await.unwrap(), 0);
    }

    #[tokio::test]
    async fn the_refresher_picks_up_changes_by_itself() {
        let store: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
        let engine = Engine::new(store.clone());
        let admin = Context::new(Principal::system(
            "admin",
            InstanceId::new("default").unwrap(),
        ));
        let tokens = StoreTokens::start(store, Duration::from_millis(20))
            .await
            .unwrap();
        engine
            .create_token(&admin, &created("tok_1", "s1", None))
            .await
            .unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while tokens.principal_of("s1", Utc::now()).is_err() {
            assert!(tokio::time::Instant::now() < deadline, "not picked up");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
