//! The layer around every route: request id, trace context, tracing span, metrics, the log
//! line of an unsuccessful request, and the panic safety net.

use std::convert::Infallible;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method};
use axum::response::Response;
use futures_util::FutureExt as _;
use tower::{Layer, Service};
use tracing::{Instrument, Span};

use super::extract::MAX_HEADER_VALUE_LEN;
use super::ops::panic_response;
use super::AppState;
use crate::caller::{ClientAddr, SubjectSlot};
use crate::trace::{RequestTrace, TRACEPARENT};

/// The request id header: taken from the client when it is sane, generated otherwise, echoed
/// on the response and stored as the events' correlation id.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// [`REQUEST_ID_HEADER`] as a header name: used as such, it is neither parsed nor copied.
pub(crate) static REQUEST_ID: HeaderName = HeaderName::from_static(REQUEST_ID_HEADER);

/// The client's request id, trimmed, when it is sane: visible ASCII, not empty, at most
/// [`MAX_HEADER_VALUE_LEN`] bytes.
fn sane(value: &HeaderValue) -> Option<&str> {
    let text = value.to_str().ok()?.trim();
    let ok = !text.is_empty()
        && text.len() <= MAX_HEADER_VALUE_LEN
        && text.bytes().all(|b| b.is_ascii_graphic());
    ok.then_some(text)
}

/// The request id of a request with `headers`, for every protocol (HTTP/JSON here, gRPC,
/// gRPC-web and Connect in `grpc::dispatch`): the client's `x-request-id` when it is sane, a
/// new UUID otherwise. It is written back into `headers`, so whatever reads the request later
/// (the correlation id of its events, [`request_id`]) sees the same id as the log line and the
/// answer.
pub(crate) fn assign_request_id(headers: &mut HeaderMap) -> HeaderValue {
    let client = headers.get(&REQUEST_ID);
    let header = match client.and_then(|v| sane(v).map(|text| (v, text))) {
        // Kept as the client sent it: shared, not copied.
        Some((value, text)) if text.len() == value.len() => value.clone(),
        // `sane` admits visible ASCII only: always a valid header value.
        Some((_, text)) => {
            HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
        }
        None => new_request_id(),
    };
    headers.insert(REQUEST_ID.clone(), header.clone());
    header
}

/// A new request id: a UUID v4, formatted without an intermediate `String`.
fn new_request_id() -> HeaderValue {
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    let id = uuid::Uuid::new_v4().hyphenated();
    HeaderValue::from_bytes(id.encode_lower(&mut buf).as_bytes())
        .unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

/// The request id [`assign_request_id`] wrote into `headers`, as text.
pub(crate) fn request_id(headers: &HeaderMap) -> Option<&str> {
    headers.get(&REQUEST_ID).and_then(|v| v.to_str().ok())
}

/// A request's tracking, begun before its route runs and ended with its answer ([`Track`]):
/// assigns the request id, runs the request in a `request` span (method, route, request id,
/// trace id; never headers or bodies, so tokens stay out of the logs), records its metrics and
/// logs it. The span continues the caller's W3C trace ([`RequestTrace`]): every line logged
/// while the request runs carries its trace id, and the answer a `traceparent`.
///
/// A request that succeeds is logged only at `debug` (`RUST_LOG=info,userstate_server=debug`
/// shows the spans and one line per request): at tens of thousands of requests per second a
/// formatted line each cost about a fifth of the server's CPU, and a command's events already
/// carry the request id as their correlation id. A request answered 4xx or 5xx is logged at
/// `info` with its request id, so refusals and failures stay visible at the default level.
struct Begun {
    request_id: HeaderValue,
    route: Option<MatchedPath>,
    method: Method,
    span: Span,
    traceparent: HeaderValue,
    who: Who,
    start: Instant,
}

impl Begun {
    /// Assigns `req`'s request id, opens its span and notes who sent it.
    fn of(req: &mut Request) -> Self {
        let request_id = assign_request_id(req.headers_mut());
        let route = req.extensions().get::<MatchedPath>().cloned();
        let method = req.method().clone();
        let trace = RequestTrace::of(req.headers());
        let span = tracing::info_span!("request", %method, route = route_label(&route),
            request_id = %request_id.to_str().unwrap_or("-"), trace_id = trace.field());
        let traceparent = trace.attach(&span);
        let who = Who::of(req);
        Self {
            request_id,
            route,
            method,
            span,
            traceparent,
            who,
            start: Instant::now(),
        }
    }

    /// Logs and counts the request answered with `response`, and adds the request id and the
    /// `traceparent` to it.
    fn end(self, state: &AppState, mut response: Response) -> Response {
        let status = response.status().as_u16();
        let latency = self.start.elapsed();
        let (route, method) = (route_label(&self.route), self.method.as_str());
        self.span
            .in_scope(|| log_request(status, method, route, &self.request_id, latency, &self.who));
        state
            .metrics()
            .observe_request(route, method, status, latency);
        let headers = response.headers_mut();
        headers.insert(REQUEST_ID.clone(), self.request_id);
        headers.insert(TRACEPARENT.clone(), self.traceparent);
        response
    }
}

/// The `route` of a request's span, log line and metrics: the route it matched.
fn route_label(route: &Option<MatchedPath>) -> &str {
    route.as_ref().map_or("unmatched", |m| m.as_str())
}

/// The layer around every route ([`router`](super::router)): [`Track`].
#[derive(Clone)]
pub(crate) struct TrackLayer(pub(crate) AppState);

impl<S> Layer<S> for TrackLayer {
    type Service = Track<S>;

    fn layer(&self, inner: S) -> Track<S> {
        Track {
            inner,
            state: self.0.clone(),
        }
    }
}

/// A route with what every request gets around it: the request id, the `request` span, the
/// metrics and the log line ([`track`]), and the panic safety net (a handler that panics is
/// answered 500 by [`panic_response`], and still counted and logged). One service, so a request
/// passes one layer with one boxed future: as axum's `from_fn` middleware plus tower-http's
/// `CatchPanicLayer` it passed two, each of which re-boxed and cloned the route per request.
#[derive(Clone)]
pub(crate) struct Track<S> {
    inner: S,
    state: AppState,
}

impl<S> Service<Request> for Track<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        let begun = Begun::of(&mut req);
        // The route is called here, not in the future: the future then holds the route's
        // future only, not a clone of the route.
        let answer = begun
            .span
            .in_scope(|| std::panic::catch_unwind(AssertUnwindSafe(|| self.inner.call(req))));
        let state = self.state.clone();
        Box::pin(async move {
            let response = match answer {
                Ok(future) => AssertUnwindSafe(future)
                    .catch_unwind()
                    .instrument(begun.span.clone())
                    .await
                    .unwrap_or_else(|panic| Ok(begun.span.in_scope(|| panic_response(panic)))),
                Err(panic) => Ok(begun.span.in_scope(|| panic_response(panic))),
            };
            let Ok(response) = response;
            Ok(begun.end(&state, response))
        })
    }
}

/// Who sent a request, for its log line: the client's address and the subject it
/// authenticated as (noted by [`authenticate`](crate::caller::authenticate) in the slot).
#[derive(Clone, Debug, Default)]
pub(crate) struct Who {
    client: Option<ClientAddr>,
    subject: SubjectSlot,
}

impl Who {
    /// Puts a fresh subject slot in `req`'s extensions and keeps a handle on it.
    pub(crate) fn of<B>(req: &mut axum::http::Request<B>) -> Self {
        let who = Self {
            client: req.extensions().get::<ClientAddr>().copied(),
            subject: SubjectSlot::default(),
        };
        req.extensions_mut().insert(who.subject.clone());
        who
    }

    /// The client address as log text.
    pub(crate) fn client(&self) -> Option<String> {
        self.client.map(|c| c.0.to_string())
    }

    /// The subject, when the request was authenticated or claimed one.
    pub(crate) fn subject(&self) -> Option<&str> {
        self.subject.get()
    }
}

/// Logs a finished request: 4xx or 5xx at `info` with its request id, client address and
/// subject (when known: a 403's always is), others at `debug`; never headers, tokens or
/// bodies. (A 5xx also has an `error` line with its cause, written where the error becomes a
/// response.)
pub(crate) fn log_request(
    status: u16,
    method: &str,
    route: &str,
    request_id: &HeaderValue,
    latency: Duration,
    who: &Who,
) {
    let request_id = request_id.to_str().unwrap_or("-");
    let latency_us = latency.as_micros() as u64;
    if status >= 400 {
        tracing::info!(
            status,
            method,
            route,
            request_id,
            subject = who.subject(),
            client = who.client(),
            latency_us,
            "request not successful"
        );
    } else {
        tracing::debug!(status, latency_us, "request answered");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use userstate::{EventStore, MemoryStore};

    async fn state() -> AppState {
        let store: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
        let auth = crate::auth::StaticTokens::default();
        AppState::new(store, auth, Duration::from_secs(1))
            .await
            .unwrap()
    }

    /// `Track` around a service that panics when called or when polled.
    #[tokio::test]
    async fn a_panicking_route_is_answered_500_with_the_request_id_and_counted() {
        use tower::ServiceExt as _;
        let state = state().await;
        let in_call =
            tower::service_fn(|_: Request| -> std::future::Ready<_> { panic!("in call") });
        let in_poll = tower::service_fn(|_: Request| async {
            if true {
                panic!("in poll");
            }
            Ok::<Response, Infallible>(Response::default())
        });
        let request = || {
            Request::builder()
                .header(REQUEST_ID_HEADER, "rid-1")
                .body(axum::body::Body::empty())
                .unwrap()
        };
        let answers = [
            TrackLayer(state.clone())
                .layer(in_call)
                .oneshot(request())
                .await,
            TrackLayer(state.clone())
                .layer(in_poll)
                .oneshot(request())
                .await,
        ];
        for answer in answers {
            let Ok(response) = answer;
            assert_eq!(response.status(), 500);
            assert_eq!(response.headers()[REQUEST_ID_HEADER], "rid-1");
            assert!(response.headers().contains_key(&TRACEPARENT));
        }
        let metrics = state.metrics().render();
        assert!(
            metrics.contains(
                r#"userstate_http_requests_total{method="GET",route="unmatched",status="500"} 2"#
            ),
            "{metrics}"
        );
    }
}
