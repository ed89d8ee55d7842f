//! Layers around every route: request ids, metrics and tracing spans.

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use tower_http::classify::{ServerErrorsAsFailures, SharedClassifier};
use tower_http::trace::{
    DefaultOnBodyChunk, DefaultOnEos, DefaultOnRequest, DefaultOnResponse, TraceLayer,
};
use tracing::{Level, Span};

use super::extract::MAX_HEADER_VALUE_LEN;
use super::AppState;

/// The request id header: taken from the client when it is sane, generated otherwise, echoed
/// on the response and stored as the events' correlation id.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The request id of the current request (a request extension).
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

fn sane(value: &HeaderValue) -> Option<String> {
    let text = value.to_str().ok()?.trim();
    let ok = !text.is_empty()
        && text.len() <= MAX_HEADER_VALUE_LEN
        && text.bytes().all(|b| b.is_ascii_graphic());
    ok.then(|| text.to_owned())
}

/// Assigns the request id, records the request's metrics and logs unsuccessful requests.
///
/// Requests that succeed are logged only at `debug` (the [`trace`] layer): at tens of
/// thousands of requests per second one formatted line each cost about a fifth of the server's
/// CPU, and a command's events already carry the request id as their correlation id. A request
/// answered 4xx or 5xx is logged at `info` with its request id, so refusals and failures stay
/// visible at the default level.
pub async fn track(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(sane)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let header = HeaderValue::from_str(&id).unwrap_or_else(|_| HeaderValue::from_static("invalid"));
    req.headers_mut().insert(REQUEST_ID_HEADER, header.clone());
    req.extensions_mut().insert(RequestId(id));
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |m| m.as_str())
        .to_owned();
    let method = req.method().as_str().to_owned();
    let start = Instant::now();
    let mut response = next.run(req).await;
    let status = response.status().as_u16();
    let latency = start.elapsed();
    log_unsuccessful(status, &method, &route, &header, latency);
    response.headers_mut().insert(REQUEST_ID_HEADER, header);
    state
        .metrics()
        .observe_request(&route, &method, status, latency);
    response
}

/// Logs a request answered 4xx or 5xx at `info`, with its request id; never headers or
/// bodies. (A 5xx also has an `error` line with its cause, written where the error becomes a
/// response.)
pub(crate) fn log_unsuccessful(
    status: u16,
    method: &str,
    route: &str,
    request_id: &HeaderValue,
    latency: Duration,
) {
    if status >= 400 {
        let request_id = request_id.to_str().unwrap_or("-");
        let latency_us = latency.as_micros() as u64;
        tracing::info!(
            status,
            method,
            route,
            request_id,
            latency_us,
            "request not successful"
        );
    }
}

/// A `debug` tracing span per request with method, path and request id, and a `debug` line
/// per response (never headers or bodies, so tokens stay out of the logs). Enable them with
/// `RUST_LOG=info,userstate_server=debug,tower_http=debug`.
pub fn trace() -> TraceLayer<
    SharedClassifier<ServerErrorsAsFailures>,
    impl Fn(&Request<Body>) -> Span + Clone,
    DefaultOnRequest,
    DefaultOnResponse,
    DefaultOnBodyChunk,
    DefaultOnEos,
    (),
> {
    TraceLayer::new_for_http()
        .make_span_with(|req: &Request<Body>| {
            let id = req
                .headers()
                .get(REQUEST_ID_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-");
            tracing::debug_span!("request", method = %req.method(), path = %req.uri().path(),
                request_id = %id)
        })
        .on_response(DefaultOnResponse::new().level(Level::DEBUG))
        // `track` logs 5xx answers with their request id; not twice.
        .on_failure(())
}
