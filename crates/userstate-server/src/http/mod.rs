//! The axum router: SPEC.md's routes (v2 and v3alpha), operations endpoints, and the layers
//! every request passes (request id, tracing span, metrics, panic safety net). Handlers only parse
//! and format; [`UserService`](crate::service::UserService) does the work.

pub mod events;
mod extract;
mod lag;
mod layers;
mod ops;
mod response;
pub mod routes;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use userstate::{EventStore, StoreError};

use crate::auth::Authenticator;
use crate::metrics::Metrics;
use crate::service::UserService;

pub use crate::caller::Caller;
pub use extract::{MAX_BODY_BYTES, MAX_HEADER_VALUE_LEN};
pub use lag::{Lag, LagLimit, DEFAULT_MAX_LAG, DEFAULT_MAX_LAG_EVENTS};
pub use layers::REQUEST_ID_HEADER;
pub(crate) use layers::{assign_request_id, log_request, Who, REQUEST_ID};
pub use response::{MIN_POSITION_HEADER, POSITION_HEADER};

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    service: UserService,
    auth: Arc<dyn Authenticator>,
    metrics: Metrics,
    startup_head: u64,
    lag_limit: LagLimit,
    feed_max_lag: AtomicU64,
    /// Turns true when the server drains: open event feeds end.
    closing: tokio::sync::watch::Sender<bool>,
}

impl AppState {
    /// State for a server on `store` whose callers `auth` authenticates (any
    /// [`Authenticator`]: userstate's, an embedder's own, a [`Chain`](crate::Chain)): starts
    /// the projection, wraps the store with metrics and
    /// notes the head position readiness waits for. Readiness allows the default
    /// [`LagLimit`]; see [`with_lag_limit`](Self::with_lag_limit).
    pub async fn new(
        store: Arc<dyn EventStore>,
        auth: impl Into<Arc<dyn Authenticator>>,
        read_timeout: Duration,
    ) -> Result<Self, StoreError> {
        Self::with_lag_limit(store, auth.into(), read_timeout, LagLimit::default()).await
    }

    /// Like [`new`](Self::new), with the lag beyond which `/readyz` reports not ready.
    pub async fn with_lag_limit(
        store: Arc<dyn EventStore>,
        auth: Arc<dyn Authenticator>,
        read_timeout: Duration,
        lag_limit: LagLimit,
    ) -> Result<Self, StoreError> {
        let metrics = Metrics::new();
        let store = metrics.metered(store);
        let startup_head = store.head_position().await?;
        let service = UserService::new(store)
            .with_read_timeout(read_timeout)
            .with_command_counters(metrics.commands().clone());
        Ok(Self {
            inner: Arc::new(Inner {
                service,
                auth,
                metrics,
                startup_head,
                lag_limit,
                feed_max_lag: AtomicU64::new(crate::feed::DEFAULT_FEED_MAX_LAG),
                closing: tokio::sync::watch::Sender::new(false),
            }),
        })
    }

    /// The service behind the routes.
    pub fn service(&self) -> &UserService {
        &self.inner.service
    }

    /// The authenticator.
    pub fn authenticator(&self) -> &dyn Authenticator {
        &*self.inner.auth
    }

    /// The metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// The store head when the state was built.
    pub fn startup_head(&self) -> u64 {
        self.inner.startup_head
    }

    /// The lag beyond which the node reports not ready.
    pub fn lag_limit(&self) -> LagLimit {
        self.inner.lag_limit
    }

    /// How far behind the head (in events) an event feed reader may fall.
    pub fn feed_max_lag(&self) -> u64 {
        self.inner.feed_max_lag.load(Ordering::Relaxed)
    }

    /// Sets how far behind the head an event feed reader may fall (for feeds opened later).
    pub fn set_feed_max_lag(&self, max_lag: u64) {
        self.inner.feed_max_lag.store(max_lag, Ordering::Relaxed);
    }

    /// Ends every open event feed (the server drains).
    pub fn close_feeds(&self) {
        self.inner.closing.send_replace(true);
    }

    /// Turns true when the server drains.
    pub fn closing(&self) -> tokio::sync::watch::Receiver<bool> {
        self.inner.closing.subscribe()
    }
}

/// The whole HTTP API.
pub fn router(state: AppState) -> Router {
    let mut router = Router::new();
    for operation in crate::operations::OPERATIONS {
        for (api, rest) in operation.bindings() {
            for route in rest {
                let handler = routes::handler(operation.kind, api, route);
                router = router.route(route.path, handler);
            }
        }
    }
    router
        .route("/v2/events", get(events::events))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/openapi.json", get(ops::openapi))
        .fallback(ops::route_not_found)
        .method_not_allowed_fallback(ops::method_not_allowed)
        .layer(layers::TrackLayer(state.clone()))
        .with_state(state)
}
