//! Authentication: a request's credential becomes a [`Principal`]. Pluggable: the server asks
//! an [`Authenticator`] trait object, so the tokens file, the first-start admin token, JWT
//! bearer tokens ([`jwt`](crate::jwt)), an embedder's own scheme, or a [`Chain`] of several can
//! stand behind the same routes. Independent of any HTTP or gRPC library but for the
//! [`HeaderMap`] type: every front end hands over the request's headers (gRPC: its metadata)
//! before the body is read or decoded.
//!
//! [`StaticTokens`] keeps only SHA-256 hashes of tokens (see [`tokens`](crate::tokens)); a
//! presented token is hashed and looked up. No authenticator of this crate logs or stores a
//! token.

use std::collections::HashMap;
use std::sync::Arc;

/// The attribute [`Authenticator`] implementations are written with (re-exported, so an
/// embedder needs no dependency of its own): `#[userstate_server::auth::async_trait]`.
pub use async_trait::async_trait;
use axum::http::HeaderMap;
use sha2::{Digest, Sha256};
use thiserror::Error;
use userstate::Principal;

use crate::status::RequestError;

/// The SHA-256 of a token, lowercase hex: what the tokens file stores.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A fresh random token (`us_` and 64 hex digits: 256 bits from the OS's random source via
/// UUID v4s, 244 of them random).
pub fn generate_token() -> String {
    let a = uuid::Uuid::new_v4().simple().to_string();
    let b = uuid::Uuid::new_v4().simple().to_string();
    format!("us_{a}{b}")
}

/// What an [`Authenticator`] is shown of a request: its headers (HTTP headers, or gRPC
/// metadata as headers) and the bearer token of its `Authorization` header, if any.
#[derive(Clone, Copy, Debug)]
pub struct Credentials<'a> {
    headers: &'a HeaderMap,
}

impl<'a> Credentials<'a> {
    /// The credentials of a request with `headers`.
    pub fn new(headers: &'a HeaderMap) -> Self {
        Self { headers }
    }

    /// Every header of the request (for an authenticator that reads more than the bearer
    /// token: a client certificate header set by a proxy, a session cookie, …).
    pub fn headers(&self) -> &'a HeaderMap {
        self.headers
    }

    /// The token of `Authorization: Bearer <token>` (scheme case-insensitive, surrounding
    /// blanks trimmed). [`AuthError::Missing`] when there is no such header, another scheme
    /// or an empty token; [`AuthError::Unknown`] when the value is not visible ASCII.
    pub fn bearer(&self) -> Result<&'a str, AuthError> {
        let raw = self
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .ok_or(AuthError::Missing)?;
        let value = raw.to_str().map_err(|_| AuthError::Unknown)?.trim();
        let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
        let token = token.trim();
        if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
            return Err(AuthError::Missing);
        }
        Ok(token)
    }
}

/// Why a request is not authenticated: every variant is Unauthenticated (HTTP 401, gRPC 16)
/// with SPEC.md's error body. No variant carries the credential itself.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum AuthError {
    /// No credential (no `Authorization: Bearer …`).
    #[error("missing bearer token")]
    Missing,
    /// A credential this authenticator does not know (a [`Chain`] asks the next one).
    #[error("unknown or malformed bearer token")]
    Unknown,
    /// A credential this authenticator recognises but refuses: expired, not yet valid, bad
    /// signature, wrong issuer or audience, revoked, …
    #[error("invalid bearer token: {reason}")]
    Rejected {
        /// Whom the credential claims to be, when that is known (for the log line only).
        subject: Option<String>,
        /// Why, without the credential (shown to the client and logged).
        reason: String,
    },
}

impl AuthError {
    /// A refusal of a recognised credential.
    pub fn rejected(subject: Option<String>, reason: impl Into<String>) -> Self {
        Self::Rejected {
            subject,
            reason: reason.into(),
        }
    }

    /// Whom the refused credential claims to be, when known.
    pub fn subject(&self) -> Option<&str> {
        match self {
            Self::Rejected { subject, .. } => subject.as_deref(),
            _ => None,
        }
    }
}

impl From<AuthError> for RequestError {
    fn from(error: AuthError) -> Self {
        match error {
            AuthError::Missing => RequestError::MissingToken,
            AuthError::Unknown => RequestError::UnknownToken,
            AuthError::Rejected { reason, .. } => RequestError::InvalidToken(reason),
        }
    }
}

impl From<AuthError> for crate::status::ApiError {
    fn from(error: AuthError) -> Self {
        RequestError::from(error).into()
    }
}

/// Turns a request's credentials into the [`Principal`] it acts as. The server holds one as
/// `Arc<dyn Authenticator>` and asks it before a request's body is read or decoded, in every
/// protocol (REST, gRPC, gRPC-web, Connect); what it answers is then authorised per operation
/// (SPEC.md "Permissions"). An error is a 401 / Unauthenticated answer.
///
/// Implementations must not log or keep the credential.
#[async_trait]
pub trait Authenticator: Send + Sync + 'static {
    /// The principal of a request with `credentials`.
    async fn authenticate(&self, credentials: Credentials<'_>)
        -> Result<Arc<Principal>, AuthError>;
}

#[async_trait]
impl<A: Authenticator + ?Sized> Authenticator for Arc<A> {
    async fn authenticate(
        &self,
        credentials: Credentials<'_>,
    ) -> Result<Arc<Principal>, AuthError> {
        (**self).authenticate(credentials).await
    }
}

/// Several authenticators asked in order: the first principal found wins. When none accepts,
/// the most telling refusal is answered: a [`AuthError::Rejected`] (a recognised but invalid
/// credential) over [`AuthError::Unknown`] over [`AuthError::Missing`].
#[derive(Clone, Default)]
pub struct Chain {
    links: Vec<Arc<dyn Authenticator>>,
}

impl Chain {
    /// An empty chain (it refuses everything).
    pub fn new() -> Self {
        Self::default()
    }

    /// The chain with `authenticator` asked after the others.
    pub fn with(mut self, authenticator: Arc<dyn Authenticator>) -> Self {
        self.links.push(authenticator);
        self
    }

    /// How many authenticators the chain asks.
    pub fn len(&self) -> usize {
        self.links.len()
    }

    /// Whether the chain asks none.
    pub fn is_empty(&self) -> bool {
        self.links.is_empty()
    }
}

impl std::fmt::Debug for Chain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chain")
            .field("links", &self.links.len())
            .finish()
    }
}

#[async_trait]
impl Authenticator for Chain {
    async fn authenticate(
        &self,
        credentials: Credentials<'_>,
    ) -> Result<Arc<Principal>, AuthError> {
        let mut refusal = AuthError::Missing;
        for link in &self.links {
            match link.authenticate(credentials).await {
                Ok(principal) => return Ok(principal),
                Err(e @ AuthError::Rejected { .. }) => refusal = e,
                Err(AuthError::Unknown) if refusal == AuthError::Missing => {
                    refusal = AuthError::Unknown
                }
                Err(_) => {}
            }
        }
        Err(refusal)
    }
}

/// Bearer tokens known by their SHA-256 hash: the tokens file and the first-start admin token.
#[derive(Clone, Debug, Default)]
pub struct StaticTokens {
    by_hash: HashMap<[u8; 32], Arc<Principal>>,
}

impl StaticTokens {
    /// An authenticator that knows the given `(sha256 hex, principal)` pairs. A pair whose hash
    /// is not 64 hex digits is returned as an error message.
    pub fn new(entries: impl IntoIterator<Item = (String, Principal)>) -> Result<Self, String> {
        let mut by_hash = HashMap::new();
        for (hash, principal) in entries {
            let mut key = [0u8; 32];
            hex::decode_to_slice(hash.trim(), &mut key).map_err(|_| {
                format!(
                    "token of subject {:?}: sha256 must be 64 hex digits",
                    principal.subject
                )
            })?;
            if by_hash.insert(key, Arc::new(principal)).is_some() {
                return Err(format!("token hash {hash} appears twice"));
            }
        }
        Ok(Self { by_hash })
    }

    /// How many tokens are known.
    pub fn len(&self) -> usize {
        self.by_hash.len()
    }

    /// Whether no token is known.
    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }

    /// The principal of a bearer token.
    pub fn principal_of(&self, token: &str) -> Result<Arc<Principal>, AuthError> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        self.by_hash.get(&digest).cloned().ok_or(AuthError::Unknown)
    }

    /// The principal of an `Authorization` value (`Bearer <token>`, scheme case-insensitive).
    pub fn authenticate_value(
        &self,
        authorization: Option<&str>,
    ) -> Result<Arc<Principal>, AuthError> {
        let value = authorization.ok_or(AuthError::Missing)?.trim();
        let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
        let token = token.trim();
        if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
            return Err(AuthError::Missing);
        }
        self.principal_of(token)
    }

    /// This authenticator as the server's trait object.
    pub fn shared(self) -> Arc<dyn Authenticator> {
        Arc::new(self)
    }
}

impl From<StaticTokens> for Arc<dyn Authenticator> {
    fn from(tokens: StaticTokens) -> Self {
        Arc::new(tokens)
    }
}

impl From<Chain> for Arc<dyn Authenticator> {
    fn from(chain: Chain) -> Self {
        Arc::new(chain)
    }
}

#[async_trait]
impl Authenticator for StaticTokens {
    async fn authenticate(
        &self,
        credentials: Credentials<'_>,
    ) -> Result<Arc<Principal>, AuthError> {
        self.principal_of(credentials.bearer()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use userstate::InstanceId;

    fn auth_with(token: &str) -> StaticTokens {
        let p = Principal::system("admin", InstanceId::new("default").unwrap());
        StaticTokens::new([(hash_token(token), p)]).unwrap()
    }

    fn headers(value: Option<&[u8]>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(v) = value {
            h.insert("authorization", HeaderValue::from_bytes(v).unwrap());
        }
        h
    }

    #[tokio::test]
    async fn known_token_gives_its_principal() {
        let a = auth_with("secret");
        let h = headers(Some(b"Bearer secret"));
        let p = a.authenticate(Credentials::new(&h)).await.unwrap();
        assert_eq!(p.subject, "admin");
        let h = headers(Some(b"bearer  secret "));
        assert!(a.authenticate(Credentials::new(&h)).await.is_ok());
    }

    #[tokio::test]
    async fn missing_wrong_or_unknown_tokens_are_refused() {
        let a = auth_with("secret");
        for value in [
            None,
            Some(&b""[..]),
            Some(b"Bearer "),
            Some(b"Basic secret"),
            Some(b"secret"),
        ] {
            let h = headers(value);
            let got = a.authenticate(Credentials::new(&h)).await;
            assert_eq!(got.unwrap_err(), AuthError::Missing, "{value:?}");
        }
        for value in [
            &b"Bearer other"[..],
            b"Bearer secret2",
            b"Bearer caf\xc3\xa9",
        ] {
            let h = headers(Some(value));
            let got = a.authenticate(Credentials::new(&h)).await;
            assert_eq!(got.unwrap_err(), AuthError::Unknown);
        }
        assert_eq!(
            a.authenticate_value(Some("Basic x")).unwrap_err(),
            AuthError::Missing
        );
    }

    #[tokio::test]
    async fn a_chain_asks_in_order_and_answers_the_most_telling_refusal() {
        struct Refuses;
        #[async_trait]
        impl Authenticator for Refuses {
            async fn authenticate(&self, _: Credentials<'_>) -> Result<Arc<Principal>, AuthError> {
                Err(AuthError::rejected(Some("bob".into()), "expired"))
            }
        }
        let chain = Chain::new()
            .with(auth_with("one").shared())
            .with(auth_with("two").shared());
        let h = headers(Some(b"Bearer two"));
        assert!(chain.authenticate(Credentials::new(&h)).await.is_ok());
        let h = headers(Some(b"Bearer three"));
        assert_eq!(
            chain.authenticate(Credentials::new(&h)).await.unwrap_err(),
            AuthError::Unknown
        );
        let chain = chain.with(Arc::new(Refuses));
        let err = chain.authenticate(Credentials::new(&h)).await.unwrap_err();
        assert_eq!(err.subject(), Some("bob"));
        let h = headers(None);
        let chain = Chain::new().with(auth_with("one").shared());
        assert_eq!(
            chain.authenticate(Credentials::new(&h)).await.unwrap_err(),
            AuthError::Missing
        );
    }

    #[test]
    fn generated_tokens_differ_and_hash_to_hex() {
        let (a, b) = (generate_token(), generate_token());
        assert_ne!(a, b);
        assert_eq!(a.len(), 67);
        assert_eq!(hash_token(&a).len(), 64);
    }

    #[test]
    fn bad_hashes_are_refused() {
        let p = Principal::system("x", InstanceId::new("d").unwrap());
        assert!(StaticTokens::new([("zz".to_owned(), p)]).is_err());
    }
}
