//! Token administration (`userstate token create|list|revoke`), and the local admin socket
//! that carries it to a running server (ADR 0016).
//!
//! [`execute`] runs an [`AdminRequest`] on an [`Engine`]: the command line calls it directly
//! when it can open the store itself (PostgreSQL, KurrentDB, or a file store no server holds),
//! and a server calls it for the requests of its [`AdminSocket`] — the embedded file store is
//! locked by the `serve` that opened it, so the command line asks that server instead.
//!
//! The socket is `DATA/admin.sock`, a Unix socket of mode 0600 whose peers must run as the
//! server's own user (checked by `SO_PEERCRED`): whoever may read the data directory may
//! already do anything to the store. One JSON line is a request, one JSON line its answer.
//! A token's secret never crosses it: the command line makes the secret and sends only its
//! hash.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};
use userstate::domain::{TokenCreated, TokenRecord, TokenStatus};
use userstate::{Classified, Context, Engine, ErrorKind, InstanceId, OrgId, Permission, Principal};

use crate::store_tokens::StoreTokens;

/// The admin socket's file name inside the data directory.
pub const ADMIN_SOCKET: &str = "admin.sock";

/// The longest request line the socket reads.
const MAX_REQUEST: u64 = 64 * 1024;
/// How long a connection may take to send its request and read its answer.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);

/// A token administration request, on behalf of `actor` in `instance` (the command line's
/// `--as` and `--instance`; it runs with every permission there).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "camelCase")]
pub enum AdminRequest {
    /// Create a token (its hash only).
    #[serde(rename_all = "camelCase")]
    CreateToken {
        /// The instance acted in.
        instance: InstanceId,
        /// Who acts.
        actor: String,
        /// The token.
        token: TokenCreated,
    },
    /// Every token of the instance.
    #[serde(rename_all = "camelCase")]
    ListTokens {
        /// The instance acted in.
        instance: InstanceId,
        /// Who acts.
        actor: String,
    },
    /// Revoke a token by id, or every live token of a subject.
    #[serde(rename_all = "camelCase")]
    RevokeTokens {
        /// The instance acted in.
        instance: InstanceId,
        /// Who acts.
        actor: String,
        /// A token id or a subject.
        target: String,
    },
}

impl AdminRequest {
    fn context(&self) -> Context {
        let (Self::CreateToken {
            instance, actor, ..
        }
        | Self::ListTokens { instance, actor }
        | Self::RevokeTokens {
            instance, actor, ..
        }) = self;
        Context::new(Principal::system(actor.clone(), instance.clone()))
    }

    /// Whether the request changes the store.
    pub fn changes(&self) -> bool {
        !matches!(self, Self::ListTokens { .. })
    }
}

/// A token as `token list` shows it: everything but the secret (and its hash).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenInfo {
    /// Its id.
    pub id: String,
    /// Whom it authenticates as.
    pub subject: String,
    /// Its instance.
    pub instance: InstanceId,
    /// Permissions on every organisation of the instance.
    pub instance_grants: Vec<Permission>,
    /// Permissions per organisation.
    pub org_grants: BTreeMap<OrgId, Vec<Permission>>,
    /// When it stops being accepted (`null`: never).
    pub expires_at: Option<DateTime<Utc>>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it was revoked (`null`: not revoked).
    pub revoked_at: Option<DateTime<Utc>>,
    /// `active`, `expired` or `revoked`, when answered.
    pub status: TokenStatus,
}

impl TokenInfo {
    /// The view of `record` at `now`.
    pub fn of(record: &TokenRecord, now: DateTime<Utc>) -> Self {
        let t = &record.token;
        Self {
            id: t.id.to_string(),
            subject: t.subject.clone(),
            instance: t.instance.clone(),
            instance_grants: t.instance_grants.clone(),
            org_grants: t.org_grants.clone(),
            expires_at: t.expires_at,
            created_at: record.created_at,
            revoked_at: record.revoked_at,
            status: record.status(now),
        }
    }
}

/// Runs `request` on `engine`: the tokens created, listed or revoked.
pub async fn execute(
    engine: &Engine,
    request: &AdminRequest,
) -> Result<Vec<TokenInfo>, userstate::Error> {
    let ctx = request.context();
    let records = match request {
        AdminRequest::CreateToken { token, .. } => vec![engine.create_token(&ctx, token).await?],
        AdminRequest::ListTokens { .. } => engine.list_tokens(&ctx.principal).await?,
        AdminRequest::RevokeTokens { target, .. } => engine.revoke_tokens(&ctx, target).await?,
    };
    let now = Utc::now();
    Ok(records.iter().map(|r| TokenInfo::of(r, now)).collect())
}

/// The socket's answer to one request.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "camelCase")]
enum AdminResponse {
    /// Done: the tokens concerned.
    Tokens { tokens: Vec<TokenInfo> },
    /// Refused or failed.
    Error(RemoteError),
}

/// A refusal or failure as the server answered it over the admin socket: the engine's
/// classification and message.
#[derive(Clone, Debug, Error, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[error("{message}")]
pub struct RemoteError {
    /// [`ErrorKind`]'s name (`NotFound`, …).
    pub kind: String,
    /// The stable error id.
    pub id: String,
    /// The message key.
    pub key: String,
    /// The human message.
    pub message: String,
}

impl RemoteError {
    fn of(e: &userstate::Error) -> Self {
        Self {
            kind: e.kind().to_string(),
            id: e.id().to_owned(),
            key: e.message_key().to_owned(),
            message: e.to_string(),
        }
    }

    /// The kind, when it is one this version knows.
    pub fn error_kind(&self) -> Option<ErrorKind> {
        ErrorKind::ALL
            .into_iter()
            .find(|k| k.to_string() == self.kind)
    }
}

/// Why a call over the admin socket did not get an answer.
#[derive(Debug, Error)]
pub enum CallError {
    /// No server listens on the socket (no file, or a stale one).
    #[error("no server listens on {0}")]
    NoServer(PathBuf),
    /// Talking to the server failed.
    #[error("admin socket {path}: {source}")]
    Io {
        /// The socket.
        path: PathBuf,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// The server answered something this version cannot read.
    #[error("admin socket {path}: unreadable answer: {reason}")]
    Protocol {
        /// The socket.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// The server refused the request or failed.
    #[error(transparent)]
    Remote(#[from] RemoteError),
}

/// Sends `request` to the server listening on `socket`; [`CallError::NoServer`] when none
/// does.
pub async fn call(socket: &Path, request: &AdminRequest) -> Result<Vec<TokenInfo>, CallError> {
    let io = |source| CallError::Io {
        path: socket.to_owned(),
        source,
    };
    let mut stream = match UnixStream::connect(socket).await {
        Ok(stream) => stream,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Err(CallError::NoServer(socket.to_owned()))
        }
        Err(e) => return Err(io(e)),
    };
    let mut line = serde_json::to_vec(request).expect("requests serialise");
    line.push(b'\n');
    let talk = async {
        stream.write_all(&line).await?;
        stream.shutdown().await?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await?;
        Ok(answer)
    };
    let answer = tokio::time::timeout(CONNECTION_TIMEOUT, talk)
        .await
        .map_err(|_| io(std::io::ErrorKind::TimedOut.into()))?
        .map_err(io)?;
    match serde_json::from_slice(&answer) {
        Ok(AdminResponse::Tokens { tokens }) => Ok(tokens),
        Ok(AdminResponse::Error(e)) => Err(CallError::Remote(e)),
        Err(e) => Err(CallError::Protocol {
            path: socket.to_owned(),
            reason: e.to_string(),
        }),
    }
}

/// A listening admin socket. Dropping it stops it and removes the socket file.
pub struct AdminSocket {
    path: PathBuf,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for AdminSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminSocket")
            .field("path", &self.path)
            .finish()
    }
}

impl AdminSocket {
    /// Listens on `DATA/admin.sock` (mode 0600), running requests on `engine` and refreshing
    /// `tokens` after each change. A socket file no server answers on is replaced; one a
    /// server answers on is an error (`AddrInUse`).
    pub async fn bind(
        data_dir: &Path,
        engine: Engine,
        tokens: StoreTokens,
    ) -> std::io::Result<Self> {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let path = data_dir.join(ADMIN_SOCKET);
        if path.exists() {
            if UnixStream::connect(&path).await.is_ok() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::AddrInUse,
                    format!("another server answers on {}", path.display()),
                ));
            }
            std::fs::remove_file(&path)?;
        }
        let listener = UnixListener::bind(&path)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        // The socket file is ours: its owner is the user this process runs as.
        let uid = std::fs::metadata(&path)?.uid();
        info!(socket = %path.display(), "admin socket listening");
        let state = Arc::new((engine, tokens));
        let task = tokio::spawn(async move {
            loop {
                let stream = match listener.accept().await {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        warn!(error = %e, "admin socket: accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let state = state.clone();
                tokio::spawn(async move {
                    let served = tokio::time::timeout(
                        CONNECTION_TIMEOUT,
                        serve(stream, uid, &state.0, &state.1),
                    );
                    match served.await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => debug!(error = %e, "admin socket: connection failed"),
                        Err(_) => debug!("admin socket: connection timed out"),
                    }
                });
            }
        });
        Ok(Self { path, task })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for AdminSocket {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

/// One connection: peer check, one request, one answer.
async fn serve(
    mut stream: UnixStream,
    uid: u32,
    engine: &Engine,
    tokens: &StoreTokens,
) -> std::io::Result<()> {
    let peer = stream.peer_cred()?.uid();
    if peer != uid {
        warn!(
            peer_uid = peer,
            "admin socket: refused a peer running as another user"
        );
        return Ok(());
    }
    let (read, mut write) = stream.split();
    let mut line = Vec::new();
    BufReader::new(read.take(MAX_REQUEST))
        .read_until(b'\n', &mut line)
        .await?;
    let response = match serde_json::from_slice::<AdminRequest>(&line) {
        Ok(request) => {
            let result = execute(engine, &request).await;
            if request.changes() {
                if let Err(e) = tokens.refresh().await {
                    warn!(error = %e, "admin socket: cannot refresh the store tokens");
                }
            }
            match result {
                Ok(tokens) => AdminResponse::Tokens { tokens },
                Err(e) => AdminResponse::Error(RemoteError::of(&e)),
            }
        }
        Err(e) => AdminResponse::Error(RemoteError {
            kind: ErrorKind::InvalidArgument.to_string(),
            id: "USERSTATE-invalid-argument".into(),
            key: "Errors.Invalid.Argument".into(),
            message: format!("not an admin request: {e}"),
        }),
    };
    let mut answer = serde_json::to_vec(&response).expect("answers serialise");
    answer.push(b'\n');
    write.write_all(&answer).await?;
    write.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use userstate::domain::TokenId;
    use userstate::{EventStore, MemoryStore};

    #[tokio::test]
    async fn requests_over_the_socket_answer_as_the_engine_does() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
        let tokens = StoreTokens::start(store.clone(), Duration::from_secs(3600))
            .await
            .unwrap();
        let socket = AdminSocket::bind(dir.path(), Engine::new(store), tokens.clone())
            .await
            .unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(socket.path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let instance = InstanceId::new("default").unwrap();
        let create = AdminRequest::CreateToken {
            instance: instance.clone(),
            actor: "cli".into(),
            token: TokenCreated {
                id: TokenId::new("tok_1").unwrap(),
                sha256: crate::auth::hash_token("secret"),
                subject: "ci".into(),
                instance: instance.clone(),
                instance_grants: vec![Permission::UserRead],
                org_grants: BTreeMap::new(),
                expires_at: None,
            },
        };
        let created = call(socket.path(), &create).await.unwrap();
        assert_eq!(created[0].status, TokenStatus::Active);
        // Refreshed by the socket: known at once.
        assert!(tokens.principal_of("secret", Utc::now()).is_ok());
        let again = call(socket.path(), &create).await.unwrap_err();
        let CallError::Remote(remote) = again else {
            panic!("{again:?}")
        };
        assert_eq!(remote.error_kind(), Some(ErrorKind::AlreadyExists));
        let revoke = AdminRequest::RevokeTokens {
            instance,
            actor: "cli".into(),
            target: "ci".into(),
        };
        assert_eq!(call(socket.path(), &revoke).await.unwrap().len(), 1);
        assert!(tokens.principal_of("secret", Utc::now()).is_err());
        // A second server on the same data directory is refused; a stale file is replaced.
        let store2: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
        let tokens2 = StoreTokens::start(store2.clone(), Duration::from_secs(3600))
            .await
            .unwrap();
        let busy =
            AdminSocket::bind(dir.path(), Engine::new(store2.clone()), tokens2.clone()).await;
        assert_eq!(busy.unwrap_err().kind(), std::io::ErrorKind::AddrInUse);
        let path = socket.path().to_owned();
        drop(socket);
        assert!(!path.exists());
        assert!(matches!(
            call(&path, &revoke).await,
            Err(CallError::NoServer(_))
        ));
        std::fs::write(&path, b"stale").unwrap();
        let again = AdminSocket::bind(dir.path(), Engine::new(store2.clone()), tokens2.clone())
            .await
            .unwrap();
        // A line that is no request: InvalidArgument, and the socket goes on serving.
        let mut raw = UnixStream::connect(again.path()).await.unwrap();
        raw.write_all(b"{\"op\":\"dropTables\"}\n").await.unwrap();
        let mut answer = String::new();
        raw.read_to_string(&mut answer).await.unwrap();
        let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
        assert_eq!(answer["result"], "error");
        assert_eq!(answer["kind"], "InvalidArgument");
        drop(again);
        let _again = AdminSocket::bind(dir.path(), Engine::new(store2), tokens2)
            .await
            .unwrap();
    }
}
