//! JWT bearer tokens (SPEC.md "Operator interface"): `serve --jwt-issuer ISS --jwt-audience AUD
//! --jwks FILE|URL` accepts JWTs signed by a key of that JWKS.
//!
//! - Algorithms: RS256, ES256 (P-256) and EdDSA (Ed25519). Each key's algorithm is bound to the
//!   key itself (`kty`/`crv`, and `alg` when the JWK names one): a token is verified only with
//!   the algorithm of the key its `kid` names, so `alg: none`, an HMAC token "signed" with a
//!   public key, or any algorithm other than the key's is refused. Symmetric (`oct`) keys,
//!   encryption keys and other curves in the JWKS are skipped.
//! - Claims: `exp`, `iss`, `aud` and `sub` are required, `exp`, `nbf`, `iss` and `aud` enforced
//!   (60 s of clock leeway); `sub` is the subject and `urn:userstate:grants` =
//!   `{"instance": "default", "instanceGrants": […], "orgGrants": {"acme": […]}}` the grants,
//!   mapped to a [`Principal`] as the tokens file maps its entries.
//! - A JWKS URL is fetched at start, again when the cached set is older than
//!   [`RefreshPolicy::max_age`], and when a token names an unknown `kid` (key rotation) — at
//!   most once per [`RefreshPolicy::min_interval`], so unknown `kid`s cannot make the server
//!   hammer the identity provider. A failed refresh keeps the keys it had.
//!
//! A bearer value that is not shaped like a JWT (three dot-separated parts) is
//! [`AuthError::Unknown`], so a [`Chain`](crate::Chain) goes on to the static tokens.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use base64::Engine as _;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use thiserror::Error;
use tracing::{debug, info, warn};
use userstate::{InstanceId, OrgId, Permission, Principal};

use crate::auth::{AuthError, Authenticator, Credentials};

/// The claim holding a JWT's grants.
pub const GRANTS_CLAIM: &str = "urn:userstate:grants";

/// Where the JWKS comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JwksSource {
    /// A file holding the JWKS (read once, at start).
    File(PathBuf),
    /// An `http://` or `https://` URL, fetched and refreshed ([`RefreshPolicy`]).
    Url(String),
}

impl JwksSource {
    /// `--jwks FILE|URL`: a value starting with `http://` or `https://` is a URL, anything else
    /// a file.
    pub fn parse(value: &str) -> Self {
        let lower = value.to_ascii_lowercase();
        if lower.starts_with("http://") || lower.starts_with("https://") {
            Self::Url(value.to_owned())
        } else {
            Self::File(PathBuf::from(value))
        }
    }
}

impl std::fmt::Display for JwksSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::File(path) => write!(f, "{}", path.display()),
            Self::Url(url) => f.write_str(url),
        }
    }
}

/// When a URL JWKS is fetched again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RefreshPolicy {
    /// A set older than this is fetched again before it is used.
    pub max_age: Duration,
    /// Two fetches are at least this far apart, however many unknown `kid`s arrive.
    pub min_interval: Duration,
    /// How long one fetch may take.
    pub timeout: Duration,
}

impl Default for RefreshPolicy {
    fn default() -> Self {
        Self {
            max_age: Duration::from_secs(300),
            min_interval: Duration::from_secs(10),
            timeout: Duration::from_secs(10),
        }
    }
}

/// What `serve --jwt-issuer --jwt-audience --jwks` configures.
#[derive(Clone, Debug)]
pub struct JwtConfig {
    /// The required `iss`.
    pub issuer: String,
    /// The required `aud` (one of the token's audiences).
    pub audience: String,
    /// The keys.
    pub jwks: JwksSource,
    /// When a URL JWKS is fetched again.
    pub refresh: RefreshPolicy,
}

/// Why the JWT authenticator cannot start.
#[derive(Debug, Error)]
pub enum JwtError {
    /// The JWKS file cannot be read.
    #[error("JWKS file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// The JWKS URL cannot be fetched.
    #[error("JWKS {url}: {reason}")]
    Fetch {
        /// The URL.
        url: String,
        /// What failed.
        reason: String,
    },
    /// The JWKS is not a JSON object with a `keys` array.
    #[error("JWKS {source_name} is invalid: {reason}")]
    Invalid {
        /// The file or URL.
        source_name: String,
        /// What is wrong.
        reason: String,
    },
    /// The JWKS has no key this server can verify with.
    #[error("JWKS {0} has no RS256, ES256 or EdDSA signing key")]
    NoUsableKey(String),
}

/// One verification key: its algorithm is the key's, never the token's.
#[derive(Clone)]
struct VerifyingKey {
    kid: Option<String>,
    algorithm: Algorithm,
    key: DecodingKey,
}

/// The keys of one JWKS, when they were fetched.
#[derive(Clone)]
struct KeySet {
    keys: Vec<VerifyingKey>,
    fetched: Instant,
}

impl KeySet {
    fn by_kid(&self, kid: &str) -> Option<&VerifyingKey> {
        self.keys.iter().find(|k| k.kid.as_deref() == Some(kid))
    }
}

/// The algorithm a JWK may verify, bound to its type and curve (and its `alg`, when given);
/// `None` for keys this server does not verify with.
fn algorithm_of(jwk: &Jwk) -> Option<Algorithm> {
    if jwk
        .common
        .public_key_use
        .as_ref()
        .is_some_and(|u| *u != PublicKeyUse::Signature)
    {
        return None;
    }
    let (algorithm, named) = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => (Algorithm::RS256, KeyAlgorithm::RS256),
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => {
            (Algorithm::ES256, KeyAlgorithm::ES256)
        }
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
            (Algorithm::EdDSA, KeyAlgorithm::EdDSA)
        }
        _ => return None,
    };
    match jwk.common.key_algorithm {
        Some(alg) if alg != named => None,
        _ => Some(algorithm),
    }
}

/// The usable keys of a JWKS document (`{"keys": [...]}`); a key that does not parse or
/// is not a signing key of a supported algorithm is skipped.
fn parse_jwks(source_name: &str, text: &[u8]) -> Result<Vec<VerifyingKey>, JwtError> {
    #[derive(Deserialize)]
    struct Document {
        keys: Vec<serde_json::Value>,
    }
    let document: Document = serde_json::from_slice(text).map_err(|e| JwtError::Invalid {
        source_name: source_name.to_owned(),
        reason: e.to_string(),
    })?;
    let mut keys = Vec::new();
    for value in document.keys {
        let Ok(jwk) = serde_json::from_value::<Jwk>(value) else {
            debug!(jwks = source_name, "skipping a JWK that does not parse");
            continue;
        };
        let kid = jwk.common.key_id.clone();
        let Some(algorithm) = algorithm_of(&jwk) else {
            debug!(
                jwks = source_name,
                kid, "skipping a JWK that is not an RS256, ES256 or EdDSA signing key"
            );
            continue;
        };
        match DecodingKey::from_jwk(&jwk) {
            Ok(key) => keys.push(VerifyingKey {
                kid,
                algorithm,
                key,
            }),
            Err(e) => debug!(jwks = source_name, kid, error = %e, "skipping an invalid JWK"),
        }
    }
    if keys.is_empty() {
        return Err(JwtError::NoUsableKey(source_name.to_owned()));
    }
    Ok(keys)
}

/// The grants claim.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GrantsClaim {
    instance: InstanceId,
    #[serde(default)]
    instance_grants: Vec<Permission>,
    #[serde(default)]
    org_grants: BTreeMap<OrgId, Vec<Permission>>,
}

/// The claims read (the registered ones are checked by the validation).
#[derive(Deserialize)]
struct Claims {
    sub: String,
    #[serde(rename = "urn:userstate:grants")]
    grants: Option<GrantsClaim>,
}

impl Claims {
    fn principal(self) -> Result<Principal, AuthError> {
        let Some(grants) = self.grants else {
            return Err(AuthError::rejected(
                Some(self.sub),
                format!("no {GRANTS_CLAIM} claim"),
            ));
        };
        Ok(Principal {
            subject: self.sub,
            instance: grants.instance,
            instance_grants: grants.instance_grants.into_iter().collect(),
            org_grants: grants
                .org_grants
                .into_iter()
                .map(|(org, perms)| (org, perms.into_iter().collect()))
                .collect(),
        })
    }
}

/// The `sub` of a token's payload, unverified: only for the log line of a token whose
/// signature was good but whose claims were refused.
fn claimed_subject(token: &str) -> Option<String> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    let value: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let sub = value.get("sub")?.as_str()?;
    // A subject is short printable text; anything else is not worth a log field.
    (sub.len() <= 256 && !sub.chars().any(char::is_control)).then(|| sub.to_owned())
}

/// Whether a bearer value is shaped like a compact JWS (three base64url parts).
fn looks_like_jwt(token: &str) -> bool {
    let parts: Vec<&str> = token.split('.').collect();
    parts.len() == 3
        && !parts[0].is_empty()
        && !parts[1].is_empty()
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'='))
}

/// Verifies JWT bearer tokens against a JWKS (module docs).
pub struct JwtAuthenticator {
    issuer: String,
    audience: String,
    source: JwksSource,
    refresh: RefreshPolicy,
    client: reqwest::Client,
    keys: RwLock<Arc<KeySet>>,
    /// Held while fetching; the instant of the last fetch attempt.
    fetching: tokio::sync::Mutex<Option<Instant>>,
}

impl std::fmt::Debug for JwtAuthenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtAuthenticator")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("jwks", &self.source)
            .finish_non_exhaustive()
    }
}

impl JwtAuthenticator {
    /// Loads the JWKS (reads the file or fetches the URL): an error when it cannot be had or
    /// holds no usable key, so a misconfigured server does not start.
    pub async fn load(config: JwtConfig) -> Result<Self, JwtError> {
        let client = reqwest::Client::builder()
            .timeout(config.refresh.timeout)
            .build()
            .map_err(|e| JwtError::Fetch {
                url: config.jwks.to_string(),
                reason: e.to_string(),
            })?;
        let keys = fetch(&client, &config.jwks).await?;
        info!(jwks = %config.jwks, keys = keys.len(), issuer = %config.issuer, "JWT bearer tokens accepted");
        Ok(Self {
            issuer: config.issuer,
            audience: config.audience,
            source: config.jwks,
            refresh: config.refresh,
            client,
            keys: RwLock::new(Arc::new(KeySet {
                keys,
                fetched: Instant::now(),
            })),
            fetching: tokio::sync::Mutex::new(Some(Instant::now())),
        })
    }

    fn current(&self) -> Arc<KeySet> {
        self.keys
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Fetches the URL JWKS again, unless the last attempt was less than
    /// [`RefreshPolicy::min_interval`] ago or another request refreshed while this one waited;
    /// the keys afterwards.
    async fn refreshed(&self, seen: &Arc<KeySet>) -> Arc<KeySet> {
        if !matches!(self.source, JwksSource::Url(_)) {
            return self.current();
        }
        let mut last = self.fetching.lock().await;
        let current = self.current();
        if !Arc::ptr_eq(&current, seen) {
            return current;
        }
        if last.is_some_and(|at| at.elapsed() < self.refresh.min_interval) {
            return current;
        }
        *last = Some(Instant::now());
        match fetch(&self.client, &self.source).await {
            Ok(keys) => {
                info!(jwks = %self.source, keys = keys.len(), "JWKS refreshed");
                let set = Arc::new(KeySet {
                    keys,
                    fetched: Instant::now(),
                });
                *self
                    .keys
                    .write()
                    .unwrap_or_else(|poisoned| poisoned.into_inner()) = set.clone();
                set
            }
            Err(e) => {
                warn!(error = %e, "JWKS refresh failed; keeping the keys already known");
                current
            }
        }
    }

    /// The key for a token whose header names `kid` (or none) and `alg`.
    async fn key_for(&self, kid: Option<&str>, alg: Algorithm) -> Result<VerifyingKey, AuthError> {
        let mut set = self.current();
        if set.fetched.elapsed() > self.refresh.max_age {
            set = self.refreshed(&set).await;
        }
        let pick = |set: &KeySet| -> Option<VerifyingKey> {
            match kid {
                Some(kid) => set.by_kid(kid).cloned(),
                // No `kid`: the only key of the token's algorithm, if there is exactly one.
                None => {
                    let mut of_alg = set.keys.iter().filter(|k| k.algorithm == alg);
                    match (of_alg.next(), of_alg.next()) {
                        (Some(key), None) => Some(key.clone()),
                        _ => None,
                    }
                }
            }
        };
        if let Some(key) = pick(&set) {
            return Ok(key);
        }
        if kid.is_some() {
            set = self.refreshed(&set).await;
            if let Some(key) = pick(&set) {
                return Ok(key);
            }
        }
        Err(AuthError::rejected(None, "unknown signing key"))
    }

    /// The principal of a JWT.
    pub async fn verify(&self, token: &str) -> Result<Arc<Principal>, AuthError> {
        if !looks_like_jwt(token) {
            return Err(AuthError::Unknown);
        }
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| AuthError::rejected(None, "unsupported or malformed JWT header"))?;
        let key = self.key_for(header.kid.as_deref(), header.alg).await?;
        if header.alg != key.algorithm {
            return Err(AuthError::rejected(
                None,
                "the token's algorithm is not its key's",
            ));
        }
        let mut validation = Validation::new(key.algorithm);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.validate_exp = true;
        validation.validate_nbf = true;
        let data = jsonwebtoken::decode::<Claims>(token, &key.key, &validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind as K;
            let (signed, reason) = match e.kind() {
                K::ExpiredSignature => (true, "expired".to_owned()),
                K::ImmatureSignature => (true, "not yet valid (nbf)".to_owned()),
                K::InvalidIssuer => (true, "wrong issuer".to_owned()),
                K::InvalidAudience => (true, "wrong audience".to_owned()),
                K::MissingRequiredClaim(claim) => (true, format!("missing claim {claim}")),
                K::Json(_) => (true, "invalid claims".to_owned()),
                K::InvalidSignature => (false, "bad signature".to_owned()),
                _ => (false, "invalid JWT".to_owned()),
            };
            let subject = signed.then(|| claimed_subject(token)).flatten();
            AuthError::rejected(subject, reason)
        })?;
        Ok(Arc::new(data.claims.principal()?))
    }
}

#[async_trait]
impl Authenticator for JwtAuthenticator {
    async fn authenticate(
        &self,
        credentials: Credentials<'_>,
    ) -> Result<Arc<Principal>, AuthError> {
        self.verify(credentials.bearer()?).await
    }
}

/// The usable keys of `source`.
async fn fetch(
    client: &reqwest::Client,
    source: &JwksSource,
) -> Result<Vec<VerifyingKey>, JwtError> {
    match source {
        JwksSource::File(path) => {
            let text = tokio::fs::read(path).await.map_err(|source| JwtError::Io {
                path: path.clone(),
                source,
            })?;
            parse_jwks(&path.display().to_string(), &text)
        }
        JwksSource::Url(url) => {
            let failed = |reason: String| JwtError::Fetch {
                url: url.clone(),
                reason,
            };
            let response = client
                .get(url)
                .header("accept", "application/json")
                .send()
                .await
                .map_err(|e| failed(e.to_string()))?;
            if !response.status().is_success() {
                return Err(failed(format!("HTTP {}", response.status())));
            }
            let body = response.bytes().await.map_err(|e| failed(e.to_string()))?;
            parse_jwks(url, &body)
        }
    }
}

impl JwtAuthenticator {
    /// The `kid`s of the keys currently known (`""` for a key without one), sorted.
    pub fn key_ids(&self) -> Vec<String> {
        let ids: BTreeSet<String> = self
            .current()
            .keys
            .iter()
            .map(|k| k.kid.clone().unwrap_or_default())
            .collect();
        ids.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jwks_sources_by_scheme() {
        assert_eq!(
            JwksSource::parse("https://idp/jwks"),
            JwksSource::Url("https://idp/jwks".into())
        );
        assert_eq!(
            JwksSource::parse("HTTP://idp/jwks"),
            JwksSource::Url("HTTP://idp/jwks".into())
        );
        assert_eq!(
            JwksSource::parse("/etc/jwks.json"),
            JwksSource::File("/etc/jwks.json".into())
        );
    }

    #[test]
    fn keys_are_bound_to_their_algorithm_and_symmetric_keys_skipped() {
        let jwks = br#"{"keys":[
            {"kty":"oct","kid":"h","k":"c2VjcmV0"},
            {"kty":"OKP","crv":"Ed25519","kid":"ed","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
            {"kty":"OKP","crv":"Ed25519","kid":"ed-hs","alg":"HS256","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
            {"kty":"OKP","crv":"Ed25519","kid":"ed-enc","use":"enc","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
            {"kty":"weird","kid":"w"}
        ]}"#;
        let keys = parse_jwks("test", jwks).unwrap();
        let kids: Vec<_> = keys.iter().map(|k| k.kid.clone().unwrap()).collect();
        assert_eq!(kids, ["ed"]);
        assert_eq!(keys[0].algorithm, Algorithm::EdDSA);
        assert!(matches!(
            parse_jwks("test", br#"{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}"#),
            Err(JwtError::NoUsableKey(_))
        ));
        assert!(parse_jwks("test", b"[]").is_err());
    }

    #[test]
    fn only_jwt_shaped_values_are_taken_as_jwts() {
        assert!(looks_like_jwt("eyJh.eyJi.c2ln"));
        assert!(looks_like_jwt("eyJh.eyJi."));
        assert!(!looks_like_jwt("us_0123abcd"));
        assert!(!looks_like_jwt("a.b"));
        assert!(!looks_like_jwt("a.b.c d"));
    }
}
