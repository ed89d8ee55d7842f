//! Binding, serving and shutting down: graceful on SIGTERM or ctrl-c (new connections are
//! refused, in-flight requests finish, then the state — projection and store — is dropped).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio::net::TcpListener;
use tracing::info;
use userstate::{EventStore, StoreError};

use crate::auth::Authenticator;
use crate::http::{router, AppState, LagLimit};
use crate::service::DEFAULT_READ_TIMEOUT;

/// Everything a server needs.
pub struct ServerConfig {
    /// Address to listen on (port 0: any free port).
    pub listen: SocketAddr,
    /// The event store.
    pub store: Arc<dyn EventStore>,
    /// Who may call.
    pub authenticator: Authenticator,
    /// How long reads wait for the read model.
    pub read_timeout: Duration,
    /// How far the read model may trail the store head before `/readyz` says not ready.
    pub lag_limit: LagLimit,
}

impl ServerConfig {
    /// A config with the default read timeout.
    pub fn new(
        listen: SocketAddr,
        store: Arc<dyn EventStore>,
        authenticator: Authenticator,
    ) -> Self {
        Self {
            listen,
            store,
            authenticator,
            read_timeout: DEFAULT_READ_TIMEOUT,
            lag_limit: LagLimit::default(),
        }
    }
}

/// Why the server could not start or stopped with an error.
#[derive(Debug, Error)]
pub enum ServeError {
    /// Binding or accepting failed.
    #[error("cannot serve on {addr}: {source}")]
    Io {
        /// The address.
        addr: SocketAddr,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// The store did not answer at startup.
    #[error("the store does not answer: {0}")]
    Store(#[from] StoreError),
}

/// A bound server, not yet serving.
pub struct Server {
    listener: TcpListener,
    state: AppState,
    addr: SocketAddr,
}

impl Server {
    /// Binds the listener and builds the state (starts the projection).
    pub async fn bind(config: ServerConfig) -> Result<Self, ServeError> {
        let io = |source| ServeError::Io {
            addr: config.listen,
            source,
        };
        let listener = TcpListener::bind(config.listen).await.map_err(io)?;
        let addr = listener.local_addr().map_err(io)?;
        let state = AppState::with_lag_limit(
            config.store,
            config.authenticator,
            config.read_timeout,
            config.lag_limit,
        )
        .await?;
        Ok(Self {
            listener,
            state,
            addr,
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The shared state (for tests and other front ends on the same process).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` completes, then lets in-flight requests finish.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let addr = self.addr;
        info!(%addr, "serving");
        let app = crate::grpc::with_grpc(router(self.state.clone()), self.state.clone()).await;
        axum::serve(self.listener, app)
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(|source| ServeError::Io { addr, source })?;
        info!("stopped accepting; in-flight requests finished");
        drop(self.state);
        Ok(())
    }
}

/// Binds `config.listen` and serves until SIGTERM or ctrl-c.
pub async fn serve(config: ServerConfig) -> Result<(), ServeError> {
    Server::bind(config).await?.run(shutdown_signal()).await
}

/// A future that completes on ctrl-c or (on Unix) SIGTERM.
///
/// On Unix the handlers are installed when this is called, not when the future is first polled:
/// call it before telling anyone the server is up. A SIGTERM that came after the "listening" line
/// but before the serving task first polled its shutdown future used to find no handler and
/// kill the process outright (seen once in `userstate-cli/tests/serve.rs`). Must be called
/// inside a Tokio runtime.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, Signal, SignalKind};
        // A signal whose handler cannot be installed never fires (the other still can).
        async fn received(signal: std::io::Result<Signal>) {
            match signal {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        }
        let interrupt = received(signal(SignalKind::interrupt()));
        let terminate = received(signal(SignalKind::terminate()));
        async move {
            tokio::select! {
                _ = interrupt => info!("ctrl-c received; shutting down"),
                _ = terminate => info!("SIGTERM received; shutting down"),
            }
        }
    }
    #[cfg(not(unix))]
    {
        let ctrl_c = tokio::signal::ctrl_c();
        async move {
            let _ = ctrl_c.await;
            info!("ctrl-c received; shutting down");
        }
    }
}
