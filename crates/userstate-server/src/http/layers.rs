//! The layer around every route: request id, trace context, tracing span, metrics and the log
//! line of an unsuccessful request.

use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

use super::extract::MAX_HEADER_VALUE_LEN;
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

/// Assigns the request id, runs the request in a `request` span (method, route, request id,
/// trace id; never headers or bodies, so tokens stay out of the logs), records its metrics and
/// logs it. The span continues the caller's W3C trace ([`RequestTrace`]): every line logged
/// while the request runs carries its trace id, and the answer a `traceparent`.
///
/// A request that succeeds is logged only at `debug` (`RUST_LOG=info,userstate_server=debug`
/// shows the spans and one line per request): at tens of thousands of requests per second a
/// formatted line each cost about a fifth of the server's CPU, and a command's events already
/// carry the request id as their correlation id. A request answered 4xx or 5xx is logged at
/// `info` with its request id, so refusals and failures stay visible at the default level.
pub async fn track(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let header = assign_request_id(req.headers_mut());
    let id = header.to_str().unwrap_or("-");
    let route = req.extensions().get::<MatchedPath>().cloned();
    let route = route.as_ref().map_or("unmatched", |m| m.as_str());
    let method = req.method().clone();
    let trace = RequestTrace::of(req.headers());
    let span = tracing::info_span!("request", %method, route, request_id = %id,
        trace_id = trace.field());
    let traceparent = trace.attach(&span);
    let who = Who::of(&mut req);
    let start = Instant::now();
    let mut response = next.run(req).instrument(span.clone()).await;
    let status = response.status().as_u16();
    let latency = start.elapsed();
    span.in_scope(|| log_request(status, method.as_str(), route, &header, latency, &who));
    response.headers_mut().insert(REQUEST_ID.clone(), header);
    response
        .headers_mut()
        .insert(TRACEPARENT.clone(), traceparent);
    state
        .metrics()
        .observe_request(route, method.as_str(), status, latency);
    response
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
