//! Keeps a working `kurrentdb` client, replacing it when it has died.
//!
//! The client gives up for good once it cannot reach the server when it (re)selects a node:
//! from then on every call answers `ConnectionClosed` (or a `GrpcConnectionError`), even after
//! the server is back. [`Connection`] notices those errors, drops that client, and builds a new
//! one on a later call, after a backoff that starts at `reconnect_min` and doubles up to
//! `reconnect_max`. Until then callers get [`StoreError::Unavailable`] at once. A client whose
//! node merely refuses or drops requests is kept: it reconnects by itself on the next call.

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use kurrentdb::{Client, ClientSettings};
use userstate::StoreError;

use crate::EsdbConfig;

/// A client and the generation it belongs to (so a late failure report about an old client
/// does not throw away its replacement).
#[derive(Clone)]
pub struct Lease {
    /// The client to call.
    pub client: Client,
    generation: u64,
}

struct State {
    client: Option<Client>,
    generation: u64,
    failures: u32,
    next_attempt: Instant,
}

/// The reconnecting client holder.
pub struct Connection {
    settings: ClientSettings,
    min: Duration,
    max: Duration,
    state: Mutex<State>,
}

impl Connection {
    /// A holder for `config`; the first client is built on first use.
    pub fn new(config: &EsdbConfig) -> Result<Self, StoreError> {
        let settings = config
            .connection_string()
            .parse::<ClientSettings>()
            .map_err(|e| {
                StoreError::InvalidArgument(format!("invalid KurrentDB connection string: {e}"))
            })?;
        Ok(Self {
            settings,
            min: config.reconnect_min(),
            max: config.reconnect_max(),
            state: Mutex::new(State {
                client: None,
                generation: 0,
                failures: 0,
                next_attempt: Instant::now(),
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The current client, building one if there is none and the backoff has passed.
    pub fn lease(&self) -> Result<Lease, StoreError> {
        let mut state = self.lock();
        if let Some(client) = &state.client {
            return Ok(Lease {
                client: client.clone(),
                generation: state.generation,
            });
        }
        let now = Instant::now();
        if now < state.next_attempt {
            return Err(StoreError::Unavailable {
                message: format!(
                    "KurrentDB is unreachable; reconnecting in {} ms",
                    (state.next_attempt - now).as_millis()
                ),
                source: None,
            });
        }
        let client = Client::new(self.settings.clone()).map_err(|e| {
            StoreError::backend("could not build the KurrentDB client", e.to_string())
        })?;
        state.generation += 1;
        tracing::info!(
            generation = state.generation,
            "built a new KurrentDB client"
        );
        state.client = Some(client.clone());
        Ok(Lease {
            client,
            generation: state.generation,
        })
    }

    /// Converts a client error, dropping the lease's client if the error says it is dead.
    pub fn fail(&self, lease: &Lease, error: kurrentdb::Error) -> StoreError {
        if is_dead(&error) {
            let mut state = self.lock();
            if state.generation == lease.generation && state.client.is_some() {
                state.client = None;
                state.failures = state.failures.saturating_add(1);
                let delay = self.backoff(state.failures);
                state.next_attempt = Instant::now() + delay;
                tracing::warn!(%error, delay_ms = delay.as_millis() as u64,
                    "KurrentDB client is dead; a new one will be built");
            }
        }
        map_error(error)
    }

    /// Records that a call through `lease` worked: the backoff starts over.
    pub fn succeeded(&self, lease: &Lease) {
        let mut state = self.lock();
        if state.generation == lease.generation {
            state.failures = 0;
        }
    }

    /// The delay before the next client after `failures` dead ones in a row.
    pub fn backoff(&self, failures: u32) -> Duration {
        let factor = 1u32 << failures.saturating_sub(1).min(16);
        self.min.saturating_mul(factor).min(self.max)
    }
}

/// Errors after which the client never works again.
fn is_dead(error: &kurrentdb::Error) -> bool {
    matches!(
        error,
        kurrentdb::Error::ConnectionClosed | kurrentdb::Error::GrpcConnectionError(_)
    )
}

/// Our error for a client error. Conflicts, missing and deleted streams are handled where they
/// can occur; here they are reported as backend failures.
fn map_error(error: kurrentdb::Error) -> StoreError {
    use kurrentdb::Error as E;
    match error {
        E::ConnectionClosed
        | E::GrpcConnectionError(_)
        | E::ServerError(_)
        | E::DeadlineExceeded
        | E::NotLeaderException(_) => {
            StoreError::unavailable("KurrentDB is unavailable", error.to_string())
        }
        E::Grpc {
            code: tonic::Code::Unavailable | tonic::Code::Cancelled | tonic::Code::ResourceExhausted,
            ..
        } => StoreError::unavailable("KurrentDB is unavailable", error.to_string()),
        E::AccessDenied => StoreError::backend(
            "KurrentDB denied access (check the connection string's credentials and the ACLs)",
            error.to_string(),
        ),
        other => StoreError::backend("KurrentDB call failed", other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_maximum() {
        let config = EsdbConfig::from_url("esdb://127.0.0.1:1?tls=false")
            .unwrap()
            .with_reconnect_backoff(Duration::from_millis(100), Duration::from_secs(1));
        let c = Connection::new(&config).unwrap();
        let ms: Vec<u128> = (1..=6).map(|f| c.backoff(f).as_millis()).collect();
        assert_eq!(ms, [100, 200, 400, 800, 1000, 1000]);
    }

    #[test]
    fn dead_client_errors_are_unavailable() {
        use userstate::{Classified, ErrorKind};
        for e in [
            kurrentdb::Error::ConnectionClosed,
            kurrentdb::Error::ServerError("gone".into()),
        ] {
            assert_eq!(map_error(e).kind(), ErrorKind::Unavailable);
        }
    }
}
