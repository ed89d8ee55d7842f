//! Validated identifiers: instances, organisations and users.
//!
//! Every id that enters userstate from outside passes through [`parse_id`], so the rest of the
//! code can assume ids are non-empty, at most [`MAX_ID_LEN`] bytes long, made of safe
//! characters (ASCII letters, digits, `-`, `_`, `.`, `@`) and neither `.` nor `..`. Those characters keep ids valid as file
//! names, SQL text, URL path segments and EventStoreDB stream names without escaping, and leave
//! `:` free as an unambiguous separator in stream names.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::error::DomainError;

/// The longest id accepted, in bytes (SPEC.md; ZITADEL's ids are 18-digit decimal strings).
pub const MAX_ID_LEN: usize = 200;

fn is_safe(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@')
}

/// Checks `value` as an id of kind `what` ("user id", "organisation id", …).
fn parse_id(what: &'static str, value: &str) -> Result<(), DomainError> {
    let reason = if value.is_empty() {
        "must not be empty"
    } else if value.len() > MAX_ID_LEN {
        "is longer than 200 bytes"
    } else if !value.chars().all(is_safe) {
        "may contain only ASCII letters, digits, '-', '_', '.' and '@'"
    } else if value == "." || value == ".." {
        // Path segments with a meaning of their own: a router or proxy may resolve them.
        "must not be \".\" or \"..\""
    } else {
        return Ok(());
    };
    Err(DomainError::InvalidId {
        what,
        value: truncate_for_message(value),
        reason,
    })
}

/// Keeps error messages bounded when a caller sends a huge id.
fn truncate_for_message(value: &str) -> String {
    const SHOWN: usize = 64;
    if value.len() <= SHOWN {
        return value.to_owned();
    }
    let mut end = SHOWN;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &value[..end])
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        ///
        /// Shared text: a clone is a reference count, not a copy (a command clones its ids
        /// several times: into the cache, its events' metadata and its answer).
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Arc<str>);

        impl $name {
            /// Validates and wraps an id; a bad one is an `InvalidArgument` error.
            pub fn new(value: impl Into<String>) -> Result<Self, DomainError> {
                let value = value.into();
                parse_id($what, &value)?;
                Ok(Self(value.into()))
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::str::FromStr for $name {
            type Err = DomainError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::new(s)
            }
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::new(s).map_err(serde::de::Error::custom)
            }
        }
    };
}

id_type!(
    /// An instance: a tenant of userstate. Instances never see each other's users.
    InstanceId,
    "instance id"
);
id_type!(
    /// An organisation inside an instance: the resource owner of its users.
    OrgId,
    "organisation id"
);
id_type!(
    /// A user inside an instance.
    UserId,
    "user id"
);
id_type!(
    /// A bearer token kept in the store (`tok_` and 16 hex digits when generated): what
    /// `token list` shows and `token revoke` names. Never the token's secret.
    TokenId,
    "token id"
);

impl TokenId {
    /// A fresh id: `tok_` and 16 random hex digits (64 bits).
    pub fn generate() -> Self {
        let n = uuid::Uuid::new_v4().as_u128() as u64;
        Self(format!("tok_{n:016x}").into())
    }
}

impl UserId {
    /// A fresh id in ZITADEL's style: a decimal string (here 18 digits from a random UUID).
    pub fn generate() -> Self {
        let n = uuid::Uuid::new_v4().as_u128() % 1_000_000_000_000_000_000;
        // Leading digit 1-9 keeps the length fixed and the id a plain positive decimal.
        Self(
            (100_000_000_000_000_000 + n % 900_000_000_000_000_000)
                .to_string()
                .into(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_zitadel_style_ids() {
        assert!(UserId::new("69629023906488334").is_ok());
        assert!(OrgId::new("org-1_a.b@c").is_ok());
    }

    #[test]
    fn rejects_empty_long_and_unsafe_ids() {
        assert!(UserId::new("").is_err());
        assert!(UserId::new("a".repeat(MAX_ID_LEN + 1)).is_err());
        assert!(UserId::new("a".repeat(MAX_ID_LEN)).is_ok());
        for bad in ["a b", "a/b", "a:b", "ü", "a\nb", "../x", "a%2F", ".", ".."] {
            let err = UserId::new(bad).unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::InvalidArgument, "{bad}");
        }
    }

    #[test]
    fn generated_ids_are_valid_18_digit_decimals() {
        for _ in 0..100 {
            let id = UserId::generate();
            assert_eq!(id.as_str().len(), 18);
            assert!(id.as_str().bytes().all(|b| b.is_ascii_digit()));
            assert!(UserId::new(id.as_str()).is_ok());
        }
    }

    proptest! {
        #[test]
        fn any_string_is_either_a_valid_id_or_an_error(s in ".{0,200}") {
            match UserId::new(s.clone()) {
                Ok(id) => {
                    prop_assert!(!s.is_empty() && s.len() <= MAX_ID_LEN);
                    prop_assert!(s != "." && s != "..");
                    prop_assert_eq!(id.as_str(), s.as_str());
                }
                Err(e) => prop_assert_eq!(e.kind(), crate::ErrorKind::InvalidArgument),
            }
        }

        #[test]
        fn deserialising_validates(s in "[a-z:/ ]{0,10}") {
            let json = serde_json::to_string(&s).unwrap();
            let parsed: Result<UserId, _> = serde_json::from_str(&json);
            prop_assert_eq!(parsed.is_ok(), UserId::new(s).is_ok());
        }
    }
}
