//! Authentication: a bearer token becomes a [`Principal`]. Independent of any HTTP or gRPC
//! library: a front end hands over the `Authorization` value (header or metadata).
//!
//! Only SHA-256 hashes of tokens are kept (see [`tokens`](crate::tokens)); a presented token is
//! hashed and looked up. The token itself is never logged or stored.

use std::collections::HashMap;
use std::sync::Arc;

use sha2::{Digest, Sha256};
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

/// Turns bearer tokens into principals.
#[derive(Clone, Debug, Default)]
pub struct Authenticator {
    by_hash: HashMap<[u8; 32], Arc<Principal>>,
}

impl Authenticator {
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

    /// The principal of an `Authorization` value (`Bearer <token>`, scheme case-insensitive).
    pub fn authenticate(
        &self,
        authorization: Option<&str>,
    ) -> Result<Arc<Principal>, RequestError> {
        let value = authorization.ok_or(RequestError::MissingToken)?.trim();
        let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
        let token = token.trim();
        if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
            return Err(RequestError::MissingToken);
        }
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        self.by_hash
            .get(&digest)
            .cloned()
            .ok_or(RequestError::UnknownToken)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use userstate::InstanceId;

    fn auth_with(token: &str) -> Authenticator {
        let p = Principal::system("admin", InstanceId::new("default").unwrap());
        Authenticator::new([(hash_token(token), p)]).unwrap()
    }

    #[test]
    fn known_token_gives_its_principal() {
        let a = auth_with("secret");
        let p = a.authenticate(Some("Bearer secret")).unwrap();
        assert_eq!(p.subject, "admin");
        assert!(a.authenticate(Some("bearer  secret ")).is_ok());
    }

    #[test]
    fn missing_wrong_or_unknown_tokens_are_refused() {
        let a = auth_with("secret");
        for value in [
            None,
            Some(""),
            Some("Bearer "),
            Some("Basic secret"),
            Some("secret"),
        ] {
            assert!(matches!(
                a.authenticate(value),
                Err(RequestError::MissingToken)
            ));
        }
        for value in [Some("Bearer other"), Some("Bearer secret2")] {
            assert!(matches!(
                a.authenticate(value),
                Err(RequestError::UnknownToken)
            ));
        }
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
        assert!(Authenticator::new([("zz".to_owned(), p)]).is_err());
    }
}
