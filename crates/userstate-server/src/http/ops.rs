//! Operations endpoints and the answers for requests no route takes.

use std::any::Any;

use axum::extract::State;
use axum::http::{header, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::AppState;
use crate::openapi::openapi_json;
use crate::status::{ApiError, RequestError};

/// Liveness: the process answers.
pub async fn healthz() -> Response {
    Json(json!({ "status": "ok" })).into_response()
}

/// Readiness: the store answers and the read model has caught up with the store as it was at
/// startup. 503 in the error shape otherwise.
pub async fn readyz(State(state): State<AppState>) -> Response {
    if state.service().ready(state.startup_head()).await {
        Json(json!({ "status": "ready" })).into_response()
    } else {
        ApiError::of(&RequestError::NotReady).into_response()
    }
}

/// Prometheus text exposition.
pub async fn metrics(State(state): State<AppState>) -> Response {
    let service = state.service();
    let projected = service.projection().position();
    let head = service.store().head_position().await.unwrap_or(projected);
    state.metrics().set_positions(head, projected);
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
