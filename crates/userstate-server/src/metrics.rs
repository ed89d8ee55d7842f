//! Prometheus metrics: HTTP requests by route, method and status; store append latency; the
//! projection's lag behind the store head, in events and in seconds (age of the oldest event
//! not applied yet). Served as text at `/metrics`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use prometheus::{
    Encoder, Gauge, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};
use userstate::store::{NewEvent, StoreWrapper};
use userstate::{EventStore, ExpectedVersion, RecordedEvent, StoreError, StreamId};

/// Every metric of the server, in its own registry.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    auth_failures: IntCounterVec,
    latency: HistogramVec,
    appends: HistogramVec,
    lag: IntGauge,
    lag_seconds: Gauge,
    head: IntGauge,
    projected: IntGauge,
}

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

impl Metrics {
    /// A fresh registry with every metric registered.
    pub fn new() -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "userstate_http_requests_total",
                "HTTP requests by route, method and status",
            ),
            &["route", "method", "status"],
        )
        .expect("static metric definition");
        let auth_failures = IntCounterVec::new(
            Opts::new(
                "userstate_auth_failures_total",
                "Requests refused as unauthenticated (401 / code 16), by reason: missing, \
                 unknown or invalid credential",
            ),
            &["reason"],
        )
        .expect("static metric definition");
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "userstate_http_request_duration_seconds",
                "HTTP request latency by route, method and status",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["route", "method", "status"],
        )
        .expect("static metric definition");
        let appends = HistogramVec::new(
            HistogramOpts::new(
                "userstate_store_append_duration_seconds",
                "Event store append latency by outcome",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["outcome"],
        )
        .expect("static metric definition");
        let lag = IntGauge::new(
            "userstate_projection_lag_events",
            "Store head position minus the projection's position",
        )
        .expect("static metric definition");
        let lag_seconds = Gauge::new(
            "userstate_projection_lag_seconds",
            "Age of the oldest event the projection has not applied yet (0 when caught up)",
        )
        .expect("static metric definition");
        let head = IntGauge::new("userstate_store_head_position", "Store head position")
            .expect("static metric definition");
        let projected = IntGauge::new(
            "userstate_projection_position",
            "Position of the last event the projection applied",
        )
        .expect("static metric definition");
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(auth_failures.clone()),
            Box::new(latency.clone()),
            Box::new(appends.clone()),
            Box::new(lag.clone()),
            Box::new(lag_seconds.clone()),
            Box::new(head.clone()),
            Box::new(projected.clone()),
        ] {
            registry.register(c).expect("metric names are unique");
        }
        Self {
            registry,
            requests,
            auth_failures,
            latency,
            appends,
            lag,
            lag_seconds,
            head,
            projected,
        }
    }

    /// The registry, for collectors of other parts of the server (delivery).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Counts one failed authentication (`reason`: `missing`, `unknown` or `invalid`).
    pub fn auth_failed(&self, reason: &str) {
        self.auth_failures.with_label_values(&[reason]).inc();
    }

    /// Records one finished HTTP request.
    pub fn observe_request(&self, route: &str, method: &str, status: u16, elapsed: Duration) {
        // HTTP statuses have static texts; gRPC codes (0..=16) are formatted.
        let (code, formatted);
        let status = match axum::http::StatusCode::from_u16(status) {
            Ok(c) => {
                code = c;
                code.as_str()
            }
            Err(_) => {
                formatted = status.to_string();
                formatted.as_str()
            }
        };
        let labels = [route, method, status];
        self.requests.with_label_values(&labels).inc();
        self.latency
            .with_label_values(&labels)
            .observe(elapsed.as_secs_f64());
    }

    /// Sets the store head and projection positions (and so the lag).
    pub fn set_positions(&self, head: u64, projected: u64) {
        let clamp = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.head.set(clamp(head));
        self.projected.set(clamp(projected));
        self.lag.set(clamp(head.saturating_sub(projected)));
    }

    /// Sets the positions (as [`set_positions`](Self::set_positions)) and the lag in seconds.
    pub fn set_lag(&self, head: u64, projected: u64, seconds: f64) {
        self.set_positions(head, projected);
        self.lag_seconds.set(seconds);
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // Encoding into a Vec only fails on invalid metric data, which the types rule out.
        if TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .is_err()
        {
            return String::new();
        }
        String::from_utf8(out).unwrap_or_default()
    }

    /// A store that records its append latency here.
    pub fn metered(&self, store: Arc<dyn EventStore>) -> Arc<dyn EventStore> {
        Arc::new(MeteredStore {
            inner: store,
            appends: self.appends.clone(),
        })
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Delegates to a store and times every append.
struct MeteredStore {
    inner: Arc<dyn EventStore>,
    appends: HistogramVec,
}

#[async_trait]
impl StoreWrapper for MeteredStore {
    fn inner(&self) -> &dyn EventStore {
        &*self.inner
    }

    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let start = Instant::now();
        let result = self.inner.append(stream, expected, events).await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(StoreError::Conflict { .. }) => "conflict",
            Err(_) => "error",
        };
        self.appends
            .with_label_values(&[outcome])
            .observe(start.elapsed().as_secs_f64());
        result
    }
}
