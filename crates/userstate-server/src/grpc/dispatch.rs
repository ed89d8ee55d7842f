//! Dispatch by content type and path: one port for HTTP/JSON, gRPC, gRPC-web and Connect.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::Request;
use axum::http::header::CONTENT_TYPE;
use axum::http::HeaderValue;
use axum::response::Response;
use axum::Router;
use tonic_web::{GrpcWebLayer, GrpcWebService};
use tower::{Layer, Service, ServiceExt};
use tracing::Instrument;

use super::connect::Connect;
use super::json::{json_answer_type, protobuf_twin, JsonMessages, JsonTranscode};
use crate::http::{assign_request_id, Who, REQUEST_ID};
use crate::metrics::Metrics;
use crate::trace::{RequestTrace, TRACEPARENT};

/// The gRPC methods served, as request paths: the `route` label of their metrics. Any other
/// gRPC path is counted as `/grpc-other`, so clients cannot grow the label set.
pub const GRPC_METHODS: [&str; 21] = [
    "/zitadel.user.v2.UserService/AddHumanUser",
    "/zitadel.user.v2.UserService/GetUserByID",
    "/zitadel.user.v2.UserService/ListUsers",
    "/zitadel.user.v2.UserService/DeactivateUser",
    "/zitadel.user.v2.UserService/ReactivateUser",
    "/zitadel.user.v2.UserService/LockUser",
    "/zitadel.user.v2.UserService/UnlockUser",
    "/zitadel.user.v2.UserService/DeleteUser",
    "/zitadel.user.v3alpha.UserService/GetUserByID",
    "/zitadel.user.v3alpha.UserService/DeactivateUser",
    "/zitadel.user.v3alpha.UserService/ReactivateUser",
    "/zitadel.user.v3alpha.UserService/LockUser",
    "/zitadel.user.v3alpha.UserService/UnlockUser",
    "/zitadel.user.v3alpha.UserService/DeleteUser",
    "/userstate.lockout.v1.LockoutService/ReportAuthenticationFailed",
    "/userstate.lockout.v1.LockoutService/ReportAuthenticationSucceeded",
    "/userstate.events.v1.EventService/SubscribeEvents",
    "/grpc.health.v1.Health/Check",
    "/grpc.health.v1.Health/Watch",
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
];

/// The `route` label of a gRPC or Connect call to `path`: the method, or `/grpc-other`.
fn metrics_route(path: &str) -> &'static str {
    GRPC_METHODS
        .iter()
        .find(|m| **m == path)
        .copied()
        .unwrap_or("/grpc-other")
}

/// Whether a `content-type` is gRPC or gRPC-web (`application/grpc`, `application/grpc+proto`,
/// `application/grpc+json`, `application/grpc-web`, `application/grpc-web+proto`,
/// `application/grpc-web+json`, `application/grpc-web-text`, …).
pub fn is_grpc_content_type(content_type: &str) -> bool {
    content_type
        .get(..16)
        .is_some_and(|p| p.eq_ignore_ascii_case("application/grpc"))
}

/// Sends gRPC and gRPC-web requests to the tonic router (behind the gRPC-web translation),
/// every other request to the HTTP router. gRPC and Connect calls get a tracing span that
/// continues the caller's W3C trace (`traceparent` metadata; see [`crate::trace`]) and answer
/// a `traceparent`. gRPC calls are counted in
/// `metrics` with method `GRPC`, route = the gRPC path and status = the gRPC code (`0` when the
/// call succeeded: a failed unary call's `grpc-status` is in the response headers).
/// A Connect call (a `POST` to a served method's path that is not gRPC) goes to
/// [`Connect`], which calls the same tonic services; it is counted with method `CONNECT` and
/// its HTTP status.
#[derive(Clone)]
pub struct ByContentType {
    http: Router,
    grpc: GrpcWebService<JsonTranscode<Router>>,
    connect: Connect,
    metrics: Metrics,
}

impl ByContentType {
    /// Dispatches between `http`, `grpc` and Connect in front of `grpc`.
    pub fn new(http: Router, grpc: Router, connect: Connect, metrics: Metrics) -> Self {
        Self {
            http,
            grpc: GrpcWebLayer::new().layer(JsonTranscode::new(grpc)),
            connect,
            metrics,
        }
    }
}

/// The answer of [`ByContentType::dispatch`].
pub type DispatchFuture = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

impl Service<Request> for ByContentType {
    type Response = Response;
    type Error = Infallible;
    type Future = DispatchFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request) -> Self::Future {
        self.dispatch(req)
    }
}

impl ByContentType {
    /// Answers `req` (what [`Service::call`] does, without needing `&mut self`: the
    /// connection loop shares one value per connection).
    pub fn dispatch(&self, mut req: Request) -> DispatchFuture {
        let content_type = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        let grpc = content_type.is_some_and(is_grpc_content_type);
        // JSON messages: the services see their protobuf twin (grpc/json.rs).
        let json = content_type.and_then(protobuf_twin);
        if let Some(twin) = json {
            req.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static(twin));
            req.extensions_mut().insert(JsonMessages);
        }
        if grpc {
            let service = self.grpc.clone();
            let metrics = self.metrics.clone();
            let route = metrics_route(req.uri().path());
            // As for HTTP: the client's id or a new one, seen by the service (the events'
            // correlation id), the log line and the client (echoed in the answer's headers).
            let request_id = assign_request_id(req.headers_mut());
            let who = Who::of(&mut req);
            // As for HTTP (see `http::layers::track`): successful calls only at `debug`.
            let trace = RequestTrace::of(req.headers());
            let span = tracing::info_span!("grpc", path = %route,
                request_id = %request_id.to_str().unwrap_or("-"),
                trace_id = trace.field());
            let traceparent = trace.attach(&span);
            Box::pin(
                async move {
                    let start = Instant::now();
                    let mut response = service.oneshot(req).await?;
                    if json.is_some() {
                        let answer = json_answer_type(response.headers().get(CONTENT_TYPE));
                        response.headers_mut().insert(CONTENT_TYPE, answer);
                    }
                    let code = response
                        .headers()
                        .get("grpc-status")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<u16>().ok())
                        .unwrap_or(0);
                    response
                        .headers_mut()
                        .insert(REQUEST_ID.clone(), request_id.clone());
                    response
                        .headers_mut()
                        .insert(TRACEPARENT.clone(), traceparent);
                    let latency = start.elapsed();
                    tracing::debug!(code, "gRPC call answered");
                    log_unsuccessful(code, route, &request_id, latency, &who);
                    metrics.observe_request(route, "GRPC", code, latency);
                    Ok(response.map(Body::new))
                }
                .instrument(span),
            )
        } else if let Some(method) = self.connect.method(req.uri().path()) {
            let connect = self.connect.clone();
            let metrics = self.metrics.clone();
            let route = metrics_route(req.uri().path());
            let request_id = assign_request_id(req.headers_mut());
            let who = Who::of(&mut req);
            let trace = RequestTrace::of(req.headers());
            let span = tracing::info_span!("connect", path = %route,
                request_id = %request_id.to_str().unwrap_or("-"),
                trace_id = trace.field());
            let traceparent = trace.attach(&span);
            Box::pin(async move {
                let start = Instant::now();
                let mut response = connect.call(method, req).instrument(span.clone()).await;
                response
                    .headers_mut()
                    .insert(REQUEST_ID.clone(), request_id.clone());
                response
                    .headers_mut()
                    .insert(TRACEPARENT.clone(), traceparent);
                span.in_scope(|| {
                    crate::http::log_request(
                        response.status().as_u16(),
                        "CONNECT",
                        route,
                        &request_id,
                        start.elapsed(),
                        &who,
                    )
                });
                metrics.observe_request(
                    route,
                    "CONNECT",
                    response.status().as_u16(),
                    start.elapsed(),
                );
                Ok(response)
            })
        } else {
            Box::pin(self.http.clone().oneshot(req))
        }
    }
}

/// Logs a call answered with a non-OK status at `info`, with its request id, client address
/// and subject (when known); never metadata, tokens or bodies (as HTTP does, see
/// `http::layers::track`).
fn log_unsuccessful(
    code: u16,
    route: &str,
    request_id: &HeaderValue,
    latency: Duration,
    who: &Who,
) {
    if code != 0 {
        let request_id = request_id.to_str().unwrap_or("-");
        let latency_us = latency.as_micros() as u64;
        tracing::info!(
            code,
            route,
            request_id,
            subject = who.subject(),
            client = who.client(),
            latency_us,
            "gRPC call not successful"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rpc_of_the_operation_table_is_a_metrics_route() {
        for op in crate::operations::OPERATIONS {
            for path in op.rpc_paths() {
                assert!(GRPC_METHODS.contains(&path.as_str()), "{path}");
            }
        }
    }

    #[test]
    fn grpc_content_types() {
        for ct in [
            "application/grpc",
            "application/grpc+proto",
            "Application/GRPC-web+proto",
            "application/grpc-web-text",
        ] {
            assert!(is_grpc_content_type(ct), "{ct}");
        }
        for ct in ["application/json", "application/grp", "", "text/plain"] {
            assert!(!is_grpc_content_type(ct), "{ct}");
        }
    }
}
