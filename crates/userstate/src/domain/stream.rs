//! The names of the streams userstate writes, owned by the domain (issue 22): built by
//! [`StreamName::write_to`] and read back by [`StreamName::parse`], nowhere else. Stores keep
//! names opaque ([`StreamId`](crate::store::StreamId)).
//!
//! Every name is `{kind}:{instance}:{key}`. Instance and user ids never contain `:`
//! ([`super::ids`]), so the first two `:` split a name unambiguously (a canonical username may
//! contain `:`; it is the last part).

/// What a stream holds, and its name's parts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamName<'a> {
    /// `user:{instance}:{user}`: one user's events.
    User {
        /// The instance id.
        instance: &'a str,
        /// The user id.
        user: &'a str,
    },
    /// `username:{instance}:{canonical}`: who holds a username (its canonical form).
    Username {
        /// The instance id.
        instance: &'a str,
        /// The canonical username ([`super::canonical_username`]).
        canonical: &'a str,
    },
    /// `idempotency:{instance}:{digest}`: the first request an idempotency key was used for.
    IdempotencyKey {
        /// The instance id.
        instance: &'a str,
        /// Hex SHA-256 of (subject, key).
        digest: &'a str,
    },
    /// `lockout-policy:{instance}:{org}` (`*` for the instance's own policy): the lockout
    /// policy's changes.
    LockoutPolicy {
        /// The instance id.
        instance: &'a str,
        /// The organisation overriding the instance's policy; `None` for the instance's.
        org: Option<&'a str>,
    },
    /// `tokens:*:*`: the bearer tokens kept in the store, of every instance (one stream for
    /// the whole store, so a server finds every token without knowing the instances; each
    /// token names its own instance). `*` is no instance id, so no instance's stream can be
    /// named so.
    Tokens,
    /// `delivery:*:{target}`: a delivery target's checkpoint and lease (issue 26). Of no
    /// instance (`*` is no instance id), never a user and never delivered itself.
    Delivery {
        /// The target's name.
        target: &'a str,
    },
}

/// The instance part of names that belong to no instance ([`StreamName::Tokens`],
/// [`StreamName::Delivery`]), and the key of the one token stream: `*` is no id.
const NO_INSTANCE: &str = "*";

/// The key of the instance's own lockout policy stream (`*` is no organisation id).
const INSTANCE_POLICY: &str = "*";

/// A stream name's kind, told by its prefix alone (no split; for hot paths that only filter).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamKind {
    /// [`StreamName::User`].
    User,
    /// [`StreamName::Username`].
    Username,
    /// [`StreamName::IdempotencyKey`].
    IdempotencyKey,
    /// [`StreamName::LockoutPolicy`].
    LockoutPolicy,
    /// [`StreamName::Tokens`].
    Tokens,
    /// [`StreamName::Delivery`].
    Delivery,
}

const USER: &str = "user:";
const USERNAME: &str = "username:";
const IDEMPOTENCY_KEY: &str = "idempotency:";
const LOCKOUT_POLICY: &str = "lockout-policy:";
const TOKENS: &str = "tokens:";
const DELIVERY: &str = "delivery:";

impl StreamKind {
    /// The kind of the stream named `name`, if it is one of ours.
    pub fn of(name: &str) -> Option<Self> {
        if name.starts_with(USER) {
            Some(Self::User)
        } else if name.starts_with(USERNAME) {
            Some(Self::Username)
        } else if name.starts_with(IDEMPOTENCY_KEY) {
            Some(Self::IdempotencyKey)
        } else if name.starts_with(LOCKOUT_POLICY) {
            Some(Self::LockoutPolicy)
        } else if name.starts_with(TOKENS) {
            Some(Self::Tokens)
        } else if name.starts_with(DELIVERY) {
            Some(Self::Delivery)
        } else {
            None
        }
    }

    fn prefix(self) -> &'static str {
        match self {
            Self::User => USER,
            Self::Username => USERNAME,
            Self::IdempotencyKey => IDEMPOTENCY_KEY,
            Self::LockoutPolicy => LOCKOUT_POLICY,
            Self::Tokens => TOKENS,
            Self::Delivery => DELIVERY,
        }
    }
}

impl<'a> StreamName<'a> {
    /// The parts of `name`, if it is one of our streams with both an instance and a key. The
    /// parts are not validated as ids here: a reader that needs them valid checks them.
    pub fn parse(name: &'a str) -> Option<Self> {
        let kind = StreamKind::of(name)?;
        let (instance, key) = name[kind.prefix().len()..].split_once(':')?;
        Some(match kind {
            StreamKind::User => Self::User {
                instance,
                user: key,
            },
            StreamKind::Username => Self::Username {
                instance,
                canonical: key,
            },
            StreamKind::IdempotencyKey => Self::IdempotencyKey {
                instance,
                digest: key,
            },
            StreamKind::LockoutPolicy => Self::LockoutPolicy {
                instance,
                org: (key != INSTANCE_POLICY).then_some(key),
            },
            StreamKind::Tokens if instance == NO_INSTANCE && key == NO_INSTANCE => Self::Tokens,
            StreamKind::Tokens => return None,
            StreamKind::Delivery if instance == NO_INSTANCE => Self::Delivery { target: key },
            StreamKind::Delivery => return None,
        })
    }

    /// Its kind.
    pub fn kind(&self) -> StreamKind {
        match self {
            Self::User { .. } => StreamKind::User,
            Self::Username { .. } => StreamKind::Username,
            Self::IdempotencyKey { .. } => StreamKind::IdempotencyKey,
            Self::LockoutPolicy { .. } => StreamKind::LockoutPolicy,
            Self::Tokens => StreamKind::Tokens,
            Self::Delivery { .. } => StreamKind::Delivery,
        }
    }

    /// The instance the stream belongs to (`*` for the store-wide token stream and for a
    /// delivery stream, of no instance).
    pub fn instance(&self) -> &'a str {
        match *self {
            Self::User { instance, .. }
            | Self::Username { instance, .. }
            | Self::IdempotencyKey { instance, .. }
            | Self::LockoutPolicy { instance, .. } => instance,
            Self::Tokens => NO_INSTANCE,
            Self::Delivery { .. } => NO_INSTANCE,
        }
    }

    fn key(&self) -> &'a str {
        match *self {
            Self::User { user: key, .. }
            | Self::Username { canonical: key, .. }
            | Self::IdempotencyKey { digest: key, .. }
            | Self::Delivery { target: key } => key,
            Self::LockoutPolicy { org, .. } => org.unwrap_or(INSTANCE_POLICY),
            Self::Tokens => NO_INSTANCE,
        }
    }

    /// The name's length in bytes.
    pub fn len(&self) -> usize {
        self.kind().prefix().len() + self.instance().len() + 1 + self.key().len()
    }

    /// Never: every name has a prefix.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Appends the name to `out` (built by hand: `format!` through `Display` cost ~900
    /// instructions a call, 7 % of a memory-store command, and every command builds one).
    pub fn write_to(&self, out: &mut String) {
        out.reserve(self.len());
        out.push_str(self.kind().prefix());
        out.push_str(self.instance());
        out.push(':');
        out.push_str(self.key());
    }

    /// The name.
    pub fn to_name(&self) -> String {
        let mut name = String::with_capacity(self.len());
        self.write_to(&mut name);
        name
    }
}

/// The instance part of any name of the form `{kind}:{instance}:{key}`, whatever its kind (`""`
/// for other names): what the PostgreSQL store keys rows by, for streams of ours and of others
/// alike.
pub fn instance_of(name: &str) -> &str {
    let mut parts = name.splitn(3, ':');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(_), Some(instance), Some(_)) => instance,
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn names_are_kind_instance_key() {
        let user = StreamName::User {
            instance: "i1",
            user: "u.1@x",
        };
        assert_eq!(user.to_name(), "user:i1:u.1@x");
        let username = StreamName::Username {
            instance: "i1",
            canonical: "a:b",
        };
        assert_eq!(username.to_name(), "username:i1:a:b");
        assert_eq!(StreamName::parse("username:i1:a:b"), Some(username));
        assert_eq!(StreamName::parse("user:i1"), None);
        assert_eq!(StreamName::parse("other:i1:x"), None);
        assert_eq!(StreamKind::of("usernames:x"), None);
        assert_eq!(StreamKind::of("username:i:x"), Some(StreamKind::Username));
        assert_eq!(StreamName::Tokens.to_name(), "tokens:*:*");
        assert_eq!(StreamName::parse("tokens:*:*"), Some(StreamName::Tokens));
        assert_eq!(StreamName::parse("tokens:i1:*"), None);
        assert_eq!(StreamKind::of("tokens:*:*"), Some(StreamKind::Tokens));
        assert_eq!(instance_of("tokens:*:*"), "*");
        let delivery = StreamName::Delivery { target: "sink" };
        assert_eq!(delivery.to_name(), "delivery:*:sink");
        assert_eq!(StreamName::parse("delivery:*:sink"), Some(delivery));
        assert_eq!(StreamName::parse("delivery:i1:sink"), None);
        assert_eq!(
            StreamKind::of("delivery:*:sink"),
            Some(StreamKind::Delivery)
        );
    }

    proptest! {
        /// Whatever the parts, a built name parses back to them (ids hold no `:`).
        #[test]
        fn built_names_parse_back(
            kind in 0..7u8,
            instance in "[A-Za-z0-9_.@-]{1,20}",
            key in "[^\\x00]{1,20}",
            org in "[A-Za-z0-9_.@-]{1,20}",
        ) {
            let name = match kind {
                0 => StreamName::User { instance: &instance, user: &key },
                1 => StreamName::Username { instance: &instance, canonical: &key },
                2 => StreamName::LockoutPolicy { instance: &instance, org: None },
                3 => StreamName::LockoutPolicy { instance: &instance, org: Some(&org) },
                4 => StreamName::Tokens,
                5 => StreamName::Delivery { target: &key },
                _ => StreamName::IdempotencyKey { instance: &instance, digest: &key },
            };
            let text = name.to_name();
            prop_assert_eq!(text.len(), name.len());
            prop_assert_eq!(StreamName::parse(&text), Some(name));
        }
    }
}
