//! The delivery file (`serve --delivery FILE`, SPEC.md "Operator interface"): TOML with
//! `[[webhook]]` and `[[nats]]` targets. Validated whole before use, so a bad file changes
//! nothing (a reload keeps the targets it had).

use std::collections::HashSet;
use std::fmt;
use std::path::Path;

use base64::Engine as _;
use serde::Deserialize;
use thiserror::Error;

/// How many attempts an event gets before it is dead-lettered, unless the target says.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 20;
/// How many requests a webhook target has in flight at once, unless it says (docs/PERFORMANCE.md,
/// "Issue 26": enough to keep up with 10k events/s on loopback).
pub const DEFAULT_WEBHOOK_CONCURRENCY: usize = 64;
/// The most requests in flight a webhook target may ask for.
pub const MAX_WEBHOOK_CONCURRENCY: usize = 1024;

/// Why a delivery file was refused.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// Not TOML of the expected shape.
    #[error("{path} is not a valid delivery file: {message}")]
    Parse {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// A target is not acceptable.
    #[error("target {name:?}: {reason}")]
    Target {
        /// The target.
        name: String,
        /// What is wrong.
        reason: String,
    },
}

/// A webhook secret (`whsec_<base64>`), decoded. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// Decodes `whsec_<base64>` (Standard Webhooks).
    pub fn parse(text: &str) -> Result<Self, String> {
        let encoded = text
            .strip_prefix("whsec_")
            .ok_or("the secret must start with whsec_")?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|_| "the secret after whsec_ is not base64".to_owned())?;
        if bytes.len() < 16 {
            return Err("the secret must be at least 16 bytes (24 base64 characters)".into());
        }
        Ok(Self(bytes))
    }

    /// The key bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("whsec_<redacted>")
    }
}

/// A `[[webhook]]` target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookTarget {
    /// Its name (its checkpoint's key).
    pub name: String,
    /// Where events are POSTed.
    pub url: String,
    /// The signing secret.
    pub secret: Secret,
    /// Only these event types (`None`: all).
    pub types: Option<Vec<String>>,
    /// Attempts per event before it is dead-lettered.
    pub max_attempts: u32,
    /// Requests in flight at once (events of different users; one user's are sent one after
    /// the other, in order). 1 sends every event in position order.
    pub concurrency: usize,
}

/// A `[[nats]]` target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NatsTarget {
    /// Its name (its checkpoint's key).
    pub name: String,
    /// The server, `nats://host:port`.
    pub url: String,
    /// The subject events are published on.
    pub subject: String,
    /// The JetStream stream capturing the subject, created when missing (default: found by
    /// subject, else `USERSTATE_<NAME>`).
    pub stream: Option<String>,
    /// Only these event types (`None`: all).
    pub types: Option<Vec<String>>,
    /// Attempts per event before it is dead-lettered.
    pub max_attempts: u32,
}

/// One delivery target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A webhook.
    Webhook(WebhookTarget),
    /// NATS JetStream.
    Nats(NatsTarget),
}

impl Target {
    /// Its name.
    pub fn name(&self) -> &str {
        match self {
            Target::Webhook(t) => &t.name,
            Target::Nats(t) => &t.name,
        }
    }

    /// Its event types (`None`: all).
    pub fn types(&self) -> Option<&[String]> {
        match self {
            Target::Webhook(t) => t.types.as_deref(),
            Target::Nats(t) => t.types.as_deref(),
        }
    }

    /// Attempts per event before it is dead-lettered.
    pub fn max_attempts(&self) -> u32 {
        match self {
            Target::Webhook(t) => t.max_attempts,
            Target::Nats(t) => t.max_attempts,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    webhook: Vec<RawWebhook>,
    #[serde(default)]
    nats: Vec<RawNats>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWebhook {
    name: String,
    url: String,
    secret: String,
    types: Option<Vec<String>>,
    max_attempts: Option<u32>,
    concurrency: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNats {
    name: String,
    url: String,
    subject: String,
    stream: Option<String>,
    types: Option<Vec<String>>,
    max_attempts: Option<u32>,
}

/// Reads and validates a delivery file.
pub fn load(path: &Path) -> Result<Vec<Target>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.display().to_string(),
        source,
    })?;
    parse(&text).map_err(|e| match e {
        ConfigError::Parse { message, .. } => ConfigError::Parse {
            path: path.display().to_string(),
            message,
        },
        other => other,
    })
}

/// Parses and validates the text of a delivery file.
pub fn parse(text: &str) -> Result<Vec<Target>, ConfigError> {
    let file: File = toml::from_str(text).map_err(|e| ConfigError::Parse {
        path: String::new(),
        message: e.message().to_owned(),
    })?;
    let mut targets = Vec::new();
    for w in file.webhook {
        let bad = |reason: String| ConfigError::Target {
            name: w.name.clone(),
            reason,
        };
        let parsed = reqwest::Url::parse(&w.url).map_err(|e| bad(format!("url: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(bad("url must be http:// or https://".into()));
        }
        let secret = Secret::parse(&w.secret).map_err(|e| bad(e.to_owned()))?;
        let concurrency = w.concurrency.unwrap_or(DEFAULT_WEBHOOK_CONCURRENCY);
        if !(1..=MAX_WEBHOOK_CONCURRENCY).contains(&concurrency) {
            return Err(bad(format!(
                "concurrency must be 1 to {MAX_WEBHOOK_CONCURRENCY}"
            )));
        }
        targets.push(Target::Webhook(WebhookTarget {
            name: w.name.clone(),
            url: w.url,
            secret,
            types: w.types,
            max_attempts: w.max_attempts.unwrap_or(DEFAULT_MAX_ATTEMPTS).max(1),
            concurrency,
        }));
    }
    for n in file.nats {
        let bad = |reason: &str| ConfigError::Target {
            name: n.name.clone(),
            reason: reason.to_owned(),
        };
        if !n.url.starts_with("nats://") && !n.url.starts_with("tls://") {
            return Err(bad("url must be nats://host:port"));
        }
        if n.subject.is_empty()
            || n.subject.contains(['*', '>', ' '])
            || n.subject.starts_with('.')
            || n.subject.ends_with('.')
        {
            return Err(bad("subject must be a literal NATS subject (no wildcards)"));
        }
        targets.push(Target::Nats(NatsTarget {
            name: n.name.clone(),
            url: n.url,
            subject: n.subject,
            stream: n.stream,
            types: n.types,
            max_attempts: n.max_attempts.unwrap_or(DEFAULT_MAX_ATTEMPTS).max(1),
        }));
    }
    let mut names = HashSet::new();
    for t in &targets {
        let name = t.name();
        let valid = !name.is_empty()
            && name.len() <= 100
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
        if !valid {
            return Err(ConfigError::Target {
                name: name.to_owned(),
                reason: "a name is 1 to 100 characters of A-Z, a-z, 0-9, _ . -".into(),
            });
        }
        if !names.insert(name.to_owned()) {
            return Err(ConfigError::Target {
                name: name.to_owned(),
                reason: "two targets have this name".into(),
            });
        }
    }
    Ok(targets)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spec_example_parses_and_bad_files_say_why() {
        let targets = parse(
            r#"
            [[webhook]]
            name = "sink"
            url = "http://127.0.0.1:9000/hook"
            secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
            types = ["user.locked"]
            concurrency = 8

            [[nats]]
            name = "bus"
            url = "nats://127.0.0.1:4222"
            subject = "userstate.events"
            "#,
        )
        .unwrap();
        assert_eq!(targets.len(), 2);
        assert_eq!(targets[0].types(), Some(&["user.locked".to_owned()][..]));
        assert_eq!(targets[1].max_attempts(), DEFAULT_MAX_ATTEMPTS);
        assert!(matches!(&targets[0], Target::Webhook(w) if w.concurrency == 8));
        let debug = format!("{targets:?}");
        assert!(
            !debug.contains("MfKQ9r8"),
            "the secret is never printed: {debug}"
        );

        for (bad, says) in [
            ("[[webhook]]\nname = \"a\"\nurl = \"http://x\"\nsecret = \"nope\"", "whsec_"),
            ("[[webhook]]\nname = \"a\"\nurl = \"ftp://x\"\nsecret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"", "http"),
            ("[[webhook]]\nname = \"a\"\nurl = \"http://x\"\nsecret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\nconcurrency = 0", "concurrency must be 1 to 1024"),
            ("[[nats]]\nname = \"a b\"\nurl = \"nats://x:1\"\nsubject = \"s\"", "name"),
            ("[[nats]]\nname = \"a\"\nurl = \"nats://x:1\"\nsubject = \"s.*\"", "wildcards"),
            ("[[nats]]\nname = \"a\"\nurl = \"nats://x:1\"\nsubject = \"s\"\n[[nats]]\nname = \"a\"\nurl = \"nats://x:1\"\nsubject = \"t\"", "two targets"),
            ("[[kafka]]\nname = \"a\"", "unknown field"),
        ] {
            let e = parse(bad).unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
