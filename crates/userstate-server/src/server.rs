//! Binding, serving and shutting down, with the limits of SPEC.md ("Shutdown and limits"):
//! - at most [`ServerConfig::max_connections`] connections are served at once; past it the
//!   server stops accepting (new clients wait in the kernel's backlog, and are refused once it
//!   is full) while established clients keep being served. A failed accept (e.g. out of file
//!   descriptors) is logged and retried shortly; it never ends the server;
//! - each connection must send a complete request head within
//!   [`ServerConfig::header_timeout`] and is closed after [`ServerConfig::idle_timeout`] with no
//!   request in flight (the `connection` module);
//! - on SIGTERM or ctrl-c (or whatever `shutdown` future [`Server::run`] is given) the listener
//!   is closed, gRPC health turns `NOT_SERVING`, every connection is shut down gracefully
//!   (HTTP/1.1: closed once its request in flight is answered; HTTP/2: GOAWAY), and the drain
//!   waits at most [`ServerConfig::shutdown_grace`]; what is left is then closed, and the state
//!   — projection and store — is dropped.

mod connection;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tracing::{debug, error, info, warn};
use userstate::{EventStore, StoreError};

use crate::auth::Authenticator;
use crate::http::{router, AppState, LagLimit};
use crate::service::DEFAULT_READ_TIMEOUT;
use connection::Timeouts;

/// How long the drain waits for connections by default (SPEC.md).
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// How many connections are served at once by default (SPEC.md).
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// How long a request head may take to arrive by default (SPEC.md).
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a connection may stay idle by default (SPEC.md).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// How long the accept loop pauses after an accept failed for a reason other than the one
/// connection (out of file descriptors or memory), so it does not spin.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// Everything a server needs.
pub struct ServerConfig {
    /// Address to listen on (port 0: any free port).
    pub listen: SocketAddr,
    /// The event store.
    pub store: Arc<dyn EventStore>,
    /// Who may call: the tokens file, JWTs, an embedder's own scheme, or a
    /// [`Chain`](crate::auth::Chain) of several.
    pub authenticator: Arc<dyn Authenticator>,
    /// How long reads wait for the read model.
    pub read_timeout: Duration,
    /// How far the read model may trail the store head before `/readyz` says not ready.
    pub lag_limit: LagLimit,
    /// After the shutdown signal, how long in-flight requests may take before their
    /// connections are closed.
    pub shutdown_grace: Duration,
    /// Connections served at once; more wait to be accepted (at least 1).
    pub max_connections: usize,
    /// A request head must be complete within this, counted from the accept or, on a
    /// keep-alive connection, from its first byte (more than zero).
    pub header_timeout: Duration,
    /// A connection with no request in flight for this long is closed (HTTP/2: GOAWAY; also
    /// the interval of HTTP/2 keep-alive pings). More than zero.
    pub idle_timeout: Duration,
    /// How far behind the store head (in events) a reader of the event feed may fall before
    /// it gets an error and its stream ends.
    pub feed_max_lag: u64,
}

impl ServerConfig {
    /// A config with the default read timeout, lag limit, and SPEC.md's limits.
    /// `authenticator`: a [`StaticTokens`](crate::StaticTokens), a [`Chain`](crate::Chain), or
    /// any `Arc<dyn Authenticator>`.
    pub fn new(
        listen: SocketAddr,
        store: Arc<dyn EventStore>,
        authenticator: impl Into<Arc<dyn Authenticator>>,
    ) -> Self {
        Self {
            listen,
            store,
            authenticator: authenticator.into(),
            read_timeout: DEFAULT_READ_TIMEOUT,
            lag_limit: LagLimit::default(),
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            feed_max_lag: crate::feed::DEFAULT_FEED_MAX_LAG,
        }
    }
}

/// Why the server could not start or stopped with an error.
#[derive(Debug, Error)]
pub enum ServeError {
    /// Binding failed.
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

/// The limits a running server holds its connections to.
#[derive(Clone, Copy, Debug)]
struct Limits {
    shutdown_grace: Duration,
    max_connections: usize,
    timeouts: Timeouts,
}

/// A bound server, not yet serving.
pub struct Server {
    listener: TcpListener,
    state: AppState,
    addr: SocketAddr,
    limits: Limits,
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
        let limits = Limits {
            shutdown_grace: config.shutdown_grace,
            max_connections: config.max_connections.max(1),
            timeouts: Timeouts {
                header: config.header_timeout,
                idle: config.idle_timeout,
            },
        };
        let state = AppState::with_lag_limit(
            config.store,
            config.authenticator,
            config.read_timeout,
            config.lag_limit,
        )
        .await?;
        state.set_feed_max_lag(config.feed_max_lag);
        Ok(Self {
            listener,
            state,
            addr,
            limits,
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

    /// Serves until `shutdown` completes, then drains (module docs) and drops the state.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let Self {
            listener,
            state,
            addr,
            limits,
        } = self;
        info!(%addr, "serving");
        let (app, mut health) = crate::grpc::with_grpc(router(state.clone()), state.clone()).await;
        let builder = Arc::new(connection::builder(limits.timeouts));
        let permits = Arc::new(Semaphore::new(limits.max_connections));
        let (drain, drained) = watch::channel(false);
        let mut connections = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                Some(ended) = connections.join_next() => {
                    if let Err(e) = ended {
                        error!(error = %e, "a connection task failed");
                    }
                }
                accepted = accept(&listener, &permits) => match accepted {
                    Ok((stream, permit)) => {
                        let (app, builder, drained) = (app.clone(), builder.clone(), drained.clone());
                        connections.spawn(async move {
                            connection::serve(&builder, stream, app, limits.timeouts, drained).await;
                            drop(permit);
                        });
                    }
                    Err(e) if is_connection_error(&e) => debug!(error = %e, "a connection failed before it was accepted"),
                    Err(e) => {
                        error!(error = %e, retry_in_ms = ACCEPT_RETRY.as_millis() as u64, "cannot accept connections (out of file descriptors?)");
                        tokio::time::sleep(ACCEPT_RETRY).await;
                    }
                },
            }
        }
        drop(listener);
        info!(
            connections = connections.len(),
            grace_ms = limits.shutdown_grace.as_millis() as u64,
            "stopped accepting; draining"
        );
        let _ = drain.send(true);
        // Open event feeds end now: they would hold the drain until the grace runs out.
        state.close_feeds();
        health.draining().await;
        let all_ended = async { while connections.join_next().await.is_some() {} };
        if tokio::time::timeout(limits.shutdown_grace, all_ended)
            .await
            .is_ok()
        {
            info!("drained; in-flight requests finished");
        } else {
            warn!(
                connections = connections.len(),
                "shutdown grace elapsed; closing the connections left"
            );
            connections.shutdown().await;
        }
        drop(app);
        drop(state);
        Ok(())
    }
}

/// The next connection, once a connection permit is free.
async fn accept(
    listener: &TcpListener,
    permits: &Arc<Semaphore>,
) -> std::io::Result<(tokio::net::TcpStream, tokio::sync::OwnedSemaphorePermit)> {
    let permit = permits
        .clone()
        .acquire_owned()
        .await
        .expect("the connection semaphore is never closed");
    let (stream, _) = listener.accept().await?;
    // Answers go out as soon as they are written: with Nagle's algorithm a response written in
    // two parts waits for the client's ACK of the first, which a client delays up to 40 ms.
    // A socket that refuses the option is still served.
    let _ = stream.set_nodelay(true);
    Ok((stream, permit))
}

/// A failure of the one connection being accepted (the next accept may well work).
fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    )
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
