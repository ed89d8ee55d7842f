//! W3C trace context (<https://www.w3.org/TR/trace-context/>) for every protocol: a request's
//! `traceparent` header (gRPC: metadata) makes its span continue the caller's trace; the trace
//! id is a field of the request's span, so every log line written while the request runs
//! carries it; the answer carries a `traceparent` naming this server's span.
//!
//! With an OpenTelemetry layer installed in the subscriber (`userstate serve --otlp-endpoint`),
//! the span is exported with the caller's span as its parent and the ids in the answer are the
//! exported span's. Without one, the trace id is still the caller's (or a new random one when
//! the caller sent none or a malformed one), and the span id in the answer is a new random id
//! for this request.

use axum::http::{HeaderMap, HeaderValue};
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId};
use opentelemetry::Context;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The W3C trace context header, read on requests and written on answers.
pub const TRACEPARENT_HEADER: &str = "traceparent";

/// The span field that holds the trace id (32 lowercase hex digits). Declare it on a request's
/// span as `trace_id = tracing::field::Empty`; [`continue_trace`] records it.
pub const TRACE_ID_FIELD: &str = "trace_id";

/// Reads headers for the propagator.
struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// The caller's span, from `headers`' `traceparent` (and `tracestate`); `None` when absent or
/// malformed (the W3C rule: then the request starts a new trace).
pub fn remote_parent(headers: &HeaderMap) -> Option<Context> {
    let value = headers.get(TRACEPARENT_HEADER)?.to_str().ok()?;
    // The propagator takes shorter ids; W3C's fields have fixed widths (version 00: exactly
    // four fields).
    let widths: Vec<usize> = value.trim().split('-').map(str::len).collect();
    if widths.len() < 4 || widths[..4] != [2, 32, 16, 2] {
        return None;
    }
    let cx = TraceContextPropagator::new().extract(&Headers(headers));
    cx.span().span_context().is_valid().then_some(cx)
}

/// Joins `span` (a request's span, with a [`TRACE_ID_FIELD`] field) to the trace `headers`
/// name, records its trace id, and answers the `traceparent` for the response.
pub fn continue_trace(headers: &HeaderMap, span: &tracing::Span) -> HeaderValue {
    let parent = remote_parent(headers);
    let remote = parent
        .as_ref()
        .map(|cx| cx.span().span_context().clone())
        .unwrap_or_else(SpanContext::empty_context);
    if let Some(parent) = parent {
        span.set_parent(parent);
    }
    // With an OpenTelemetry layer: the exported span's ids (its trace id is the parent's).
    let own = if span.is_disabled() {
        SpanContext::empty_context()
    } else {
        span.context().span().span_context().clone()
    };
    let (trace_id, span_id, flags) = if own.is_valid() {
        (own.trace_id(), own.span_id(), own.trace_flags())
    } else if remote.is_valid() {
        (remote.trace_id(), new_span_id(), remote.trace_flags())
    } else {
        (new_trace_id(), new_span_id(), TraceFlags::default())
    };
    span.record(TRACE_ID_FIELD, tracing::field::display(trace_id));
    traceparent(trace_id, span_id, flags)
}

/// A `traceparent` value (version 00).
fn traceparent(trace_id: TraceId, span_id: SpanId, flags: TraceFlags) -> HeaderValue {
    let text = format!("00-{trace_id}-{span_id}-{:02x}", flags.to_u8());
    // Hex digits and dashes only: always a valid header value.
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

fn random_u128() -> u128 {
    // uuid's v4 ids come from a fast thread-local generator already in use for request ids.
    uuid::Uuid::new_v4().as_u128()
}

fn new_trace_id() -> TraceId {
    loop {
        let id = TraceId::from_bytes(random_u128().to_be_bytes());
        if id != TraceId::INVALID {
            return id;
        }
    }
}

fn new_span_id() -> SpanId {
    loop {
        let id = SpanId::from_bytes((random_u128() as u64).to_be_bytes());
        if id != SpanId::INVALID {
            return id;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(traceparent: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            TRACEPARENT_HEADER,
            HeaderValue::from_str(traceparent).unwrap(),
        );
        h
    }

    #[test]
    fn the_callers_trace_id_is_kept() {
        let span = tracing::info_span!("request", trace_id = tracing::field::Empty);
        let answer = continue_trace(
            &headers("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            &span,
        );
        let answer = answer.to_str().unwrap();
        assert!(
            answer.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
            "{answer}"
        );
        assert!(answer.ends_with("-01"), "{answer}");
        assert_ne!(&answer[36..52], "00f067aa0ba902b7", "a span of our own");
    }

    #[test]
    fn a_malformed_or_missing_traceparent_starts_a_new_trace() {
        let span = tracing::Span::none();
        for bad in [
            "garbage",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e47-00f067aa0ba902b7-01",
        ] {
            assert!(remote_parent(&headers(bad)).is_none(), "{bad}");
            let answer = continue_trace(&headers(bad), &span);
            let answer = answer.to_str().unwrap();
            assert_eq!(answer.len(), 55, "{answer}");
            assert!(
                !answer.contains("4bf92f3577b34da6a3ce929d0e0e47"),
                "{answer}"
            );
        }
        let a = continue_trace(&HeaderMap::new(), &span);
        let b = continue_trace(&HeaderMap::new(), &span);
        assert_ne!(a, b, "a new trace per request");
    }
}
