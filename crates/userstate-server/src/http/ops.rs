//! Operations endpoints and the answers for requests no route takes.

use std::any::Any;

use axum::extract::State;
use axum::http::{header, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::{AppState, Lag};
use crate::openapi::openapi_json;
use crate::status::{ApiError, RequestError};

/// Liveness: the process answers.
pub async fn healthz() -> Response {
    Json(json!({ "status": "ok" })).into_response()
}

/// Readiness: the store answers, the read model has caught up with the store as it was at
/// startup, and it trails the store's head by no more than the configured [`LagLimit`]
/// (`--max-lag-events`, `--max-lag-seconds`). 503 in the error shape (code 14) otherwise, with
/// the reason in the message.
pub async fn readyz(State(state): State<AppState>) -> Response {
    let service = state.service();
    if !service.ready(state.startup_head()).await {
        return ApiError::of(&RequestError::NotReady).into_response();
    }
    let lag = match Lag::measure(service).await {
        Ok(lag) => lag,
        Err(e) => return not_ready(format!("not ready: the store does not answer: {e}")),
    };
    state
        .metrics()
        .set_lag(lag.head, lag.projected, lag.seconds);
    match lag.exceeds(&state.lag_limit()) {
        None => Json(json!({ "status": "ready" })).into_response(),
        Some(reason) => not_ready(format!("not ready: {reason}")),
    }
}

fn not_ready(message: String) -> Response {
    let mut error = ApiError::of(&RequestError::NotReady);
    error.message = message;
    error.into_response()
}

/// Prometheus text exposition. Measures the projection's lag and counts the users by state
/// first.
pub async fn metrics(State(state): State<AppState>) -> Response {
    let service = state.service();
    match Lag::measure(service).await {
        Ok(lag) => state
            .metrics()
            .set_lag(lag.head, lag.projected, lag.seconds),
        Err(e) => tracing::warn!(error = %e, "cannot measure the projection lag"),
    }
    state
        .metrics()
        .set_users_by_state(&service.projection().count_by_state());
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics().render(),
    )
        .into_response()
}

/// The OpenAPI document of the routes.
pub async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], openapi_json()).into_response()
}

fn shown(uri: &Uri) -> String {
    let mut path = uri.path().to_owned();
    if path.len() > 200 {
        let mut end = 200;
        while !path.is_char_boundary(end) {
            end -= 1;
        }
        path.truncate(end);
        path.push('…');
    }
    path
}

/// No route has this path.
pub async fn route_not_found(method: Method, uri: Uri) -> ApiError {
    RequestError::RouteNotFound {
        method: method.to_string(),
        path: shown(&uri),
    }
    .into()
}

/// The path exists, not with this method.
pub async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    RequestError::MethodNotAllowed {
        method: method.to_string(),
        path: shown(&uri),
    }
    .into()
}

/// The answer when a handler panicked: 500 in the error shape; the panic is logged.
pub fn panic_response(panic: Box<dyn Any + Send + 'static>) -> Response {
    let what = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("unknown panic");
    tracing::error!(panic = what, "handler panicked");
    let mut response = ApiError::of(&RequestError::Panicked).into_response();
    *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    response
}
