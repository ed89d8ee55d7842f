//! The tokens file: which bearer tokens exist, who they are and what they may do. It stores
//! only the SHA-256 of each token. TOML (any extension but `.json`) or JSON:
//!
//! ```toml
//! [[token]]
//! sha256 = "…64 hex digits…"      # printf %s "$TOKEN" | sha256sum
//! subject = "admin"
//! instance = "default"
//! instance_grants = ["user.read", "user.write", "user.delete"]
//!
//! [[token]]
//! sha256 = "…"
//! subject = "acme-operator"
//! instance = "default"
//! org_grants = { acme = ["user.read", "user.write"] }
//! ```
//!
//! On first start (no tokens file, empty data directory) [`bootstrap_admin`] creates one admin
//! token for instance `default`: the hash goes to the tokens file, the token itself to a file
//! readable only by its owner (mode 0600).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;
use userstate::{InstanceId, OrgId, Permission, Principal};

use crate::auth::{generate_token, hash_token, StaticTokens};

/// The default tokens file name inside the data directory.
pub const TOKENS_FILE: &str = "tokens.toml";
/// The file the first-start admin token is written to, inside the data directory.
pub const ADMIN_TOKEN_FILE: &str = "admin-token";
/// The instance the first-start admin token belongs to.
pub const DEFAULT_INSTANCE: &str = "default";

/// One token of the file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    /// SHA-256 of the token, hex.
    pub sha256: String,
    /// Who the token is (recorded as the creator of events).
    pub subject: String,
    /// The only instance the token sees.
    pub instance: InstanceId,
    /// Permissions on every organisation of the instance.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub instance_grants: Vec<Permission>,
    /// Permissions per organisation.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub org_grants: BTreeMap<OrgId, Vec<Permission>>,
}

impl TokenEntry {
    /// The principal this token authenticates as.
    pub fn principal(&self) -> Principal {
        Principal {
            subject: self.subject.clone(),
            instance: self.instance.clone(),
            instance_grants: self.instance_grants.iter().copied().collect(),
            org_grants: self
                .org_grants
                .iter()
                .map(|(org, perms)| (org.clone(), perms.iter().copied().collect()))
                .collect(),
        }
    }
}

/// The whole tokens file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokensFile {
    /// Every token.
    #[serde(default, rename = "token")]
    pub tokens: Vec<TokenEntry>,
}

/// Why the tokens file cannot be used.
#[derive(Debug, Error)]
pub enum TokensError {
    /// Reading or writing failed.
    #[error("tokens file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// The file's content is not a valid tokens file.
    #[error("tokens file {path} is invalid: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// No tokens file, and the data directory already holds data.
    #[error(
        "no tokens file at {tokens} and the data directory {data} is not empty; \
         pass --tokens FILE (an admin token is only created on an empty data directory)"
    )]
    NoTokensForExistingData {
        /// Where the tokens file was looked for.
        tokens: PathBuf,
        /// The data directory.
        data: PathBuf,
    },
}

impl TokensFile {
    /// Parses TOML, or JSON when `path` ends in `.json`.
    pub fn parse(path: &Path, text: &str) -> Result<Self, TokensError> {
        let invalid = |reason: String| TokensError::Invalid {
            path: path.to_owned(),
            reason,
        };
        if path.extension().is_some_and(|e| e == "json") {
            serde_json::from_str(text).map_err(|e| invalid(e.to_string()))
        } else {
            toml::from_str(text).map_err(|e| invalid(e.to_string()))
        }
    }

    /// Reads and parses a tokens file.
    pub fn load(path: &Path) -> Result<Self, TokensError> {
        let text = std::fs::read_to_string(path).map_err(|source| TokensError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// An authenticator for every token of the file.
    pub fn authenticator(&self, path: &Path) -> Result<StaticTokens, TokensError> {
        StaticTokens::new(
            self.tokens
                .iter()
                .map(|t| (t.sha256.clone(), t.principal())),
        )
        .map_err(|reason| TokensError::Invalid {
            path: path.to_owned(),
            reason,
        })
    }

    /// The file as TOML, with a header comment.
    pub fn to_toml(&self) -> Result<String, TokensError> {
        let body = toml::to_string_pretty(self).map_err(|e| TokensError::Invalid {
            path: PathBuf::from(TOKENS_FILE),
            reason: e.to_string(),
        })?;
        Ok(format!(
            "# userstate bearer tokens. Only SHA-256 hashes are stored: printf %s \"$TOKEN\" | sha256sum\n{body}"
        ))
    }
}

/// What [`bootstrap_admin`] or [`load_or_bootstrap`] did.
#[derive(Debug)]
pub struct TokensSetup {
    /// The authenticator to serve with.
    pub authenticator: StaticTokens,
    /// The tokens file in use.
    pub tokens_path: PathBuf,
    /// When a first-start admin token was created: the file holding it (mode 0600).
    pub created_admin_token: Option<PathBuf>,
}

/// Loads `tokens` (default: `DATA/tokens.toml`); when it is absent and `data_dir` is empty or
/// missing, creates the first-start admin token instead. An explicitly given tokens file must
/// exist.
pub fn load_or_bootstrap(
    data_dir: &Path,
    tokens: Option<&Path>,
) -> Result<TokensSetup, TokensError> {
    if let Some(path) = tokens {
        let file = TokensFile::load(path)?;
        return Ok(TokensSetup {
            authenticator: file.authenticator(path)?,
            tokens_path: path.to_owned(),
            created_admin_token: None,
        });
    }
    let path = data_dir.join(TOKENS_FILE);
    if path.exists() {
        return load_or_bootstrap(data_dir, Some(&path));
    }
    let io = |source| TokensError::Io {
        path: data_dir.to_owned(),
        source,
    };
    let empty = match std::fs::read_dir(data_dir) {
        Ok(mut entries) => entries.next().is_none(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
        Err(e) => return Err(io(e)),
    };
    if !empty {
        return Err(TokensError::NoTokensForExistingData {
            tokens: path,
            data: data_dir.to_owned(),
        });
    }
    bootstrap_admin(data_dir)
}

/// Creates `data_dir` if needed, a fresh admin token for instance `default` with every
/// permission, `DATA/tokens.toml` with its hash and `DATA/admin-token` (mode 0600) with the
/// token.
pub fn bootstrap_admin(data_dir: &Path) -> Result<TokensSetup, TokensError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| TokensError::Io { path, source }
    };
    create_private_dir(data_dir).map_err(io(data_dir))?;
    let token = generate_token();
    let instance = InstanceId::new(DEFAULT_INSTANCE).map_err(|e| TokensError::Invalid {
        path: data_dir.to_owned(),
        reason: e.to_string(),
    })?;
    let file = TokensFile {
        tokens: vec![TokenEntry {
            sha256: hash_token(&token),
            subject: "admin".to_owned(),
            instance,
            instance_grants: Permission::ALL.to_vec(),
            org_grants: BTreeMap::new(),
        }],
    };
    let token_path = data_dir.join(ADMIN_TOKEN_FILE);
    write_private(&token_path, format!("{token}\n").as_bytes()).map_err(io(&token_path))?;
    let tokens_path = data_dir.join(TOKENS_FILE);
    write_private(&tokens_path, file.to_toml()?.as_bytes()).map_err(io(&tokens_path))?;
    Ok(TokensSetup {
        authenticator: file.authenticator(&tokens_path)?,
        tokens_path,
        created_admin_token: Some(token_path),
    })
}

/// Creates `dir` and its missing parents readable by their owner only (mode 0700).
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

/// Writes a new file readable and writable by its owner only, and syncs it.
fn write_private(path: &Path, content: &[u8]) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(content)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_and_json_forms_parse_to_the_same_file() {
        let toml = r#"
            [[token]]
            sha256 = "00"
            subject = "op"
            instance = "i1"
            org_grants = { acme = ["user.read", "user.write"] }
        "#;
        let json = r#"{"token":[{"sha256":"00","subject":"op","instance":"i1",
            "org_grants":{"acme":["user.read","user.write"]}}]}"#;
        let a = TokensFile::parse(Path::new("t.toml"), toml).unwrap();
        let b = TokensFile::parse(Path::new("t.json"), json).unwrap();
        assert_eq!(a, b);
        let p = a.tokens[0].principal();
        assert!(p.may(Permission::UserWrite, &OrgId::new("acme").unwrap()));
        assert!(!p.may(Permission::UserDelete, &OrgId::new("acme").unwrap()));
    }

    #[test]
    fn typos_and_bad_permissions_are_refused() {
        for bad in [
            "[[token]]\nsha256='00'\nsubject='a'\ninstance='i'\ngrants=['user.read']",
            "[[token]]\nsha256='00'\nsubject='a'\ninstance='i'\ninstance_grants=['user.all']",
            "[[token]]\nsha256='00'\nsubject='a'\ninstance='bad id'",
        ] {
            assert!(
                TokensFile::parse(Path::new("t.toml"), bad).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn bootstrap_writes_hash_and_private_token_and_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let setup = load_or_bootstrap(&data, None).unwrap();
        let token_path = setup.created_admin_token.unwrap();
        let token = std::fs::read_to_string(&token_path).unwrap();
        let tokens_text = std::fs::read_to_string(&setup.tokens_path).unwrap();
        assert!(
            !tokens_text.contains(token.trim()),
            "plain token in tokens file"
        );
        assert!(tokens_text.contains(&hash_token(token.trim())));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&token_path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
            let dir_mode = std::fs::metadata(token_path.parent().unwrap()).unwrap();
            assert_eq!(dir_mode.permissions().mode() & 0o777, 0o700);
        }
        let again = load_or_bootstrap(&data, None).unwrap();
        assert!(again.created_admin_token.is_none());
        let header = format!("Bearer {}", token.trim());
        assert!(again
            .authenticator
            .authenticate_value(Some(&header))
            .is_ok());
    }

    #[test]
    fn non_empty_data_without_tokens_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("segment-1"), b"x").unwrap();
        assert!(matches!(
            load_or_bootstrap(dir.path(), None),
            Err(TokensError::NoTokensForExistingData { .. })
        ));
    }
}
