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

use std::sync::atomic::{AtomicBool, Ordering};

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use opentelemetry::Context;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The W3C trace context header, read on requests and written on answers.
pub const TRACEPARENT_HEADER: &str = "traceparent";

/// [`TRACEPARENT_HEADER`] as a header name: used as such, it is neither parsed nor copied.
pub(crate) static TRACEPARENT: HeaderName = HeaderName::from_static(TRACEPARENT_HEADER);

/// The span field that holds the trace id (32 lowercase hex digits). Declare it on a request's
/// span as `trace_id = tracing::field::Empty`; [`continue_trace`] records it.
pub const TRACE_ID_FIELD: &str = "trace_id";

/// The caller's span, from `headers`' `traceparent`; `None` when absent or malformed (the W3C
/// rule: then the request starts a new trace). Parsed as W3C Trace Context level 1 says:
/// lowercase hex fields of fixed widths, ids not all zeros, version `ff` invalid, exactly four
/// fields in version 00 and at least four in later ones; of the flags only `sampled` is
/// known, the others are ignored. (OpenTelemetry's propagator takes shorter ids and refuses
/// unknown flags.)
pub fn remote_parent(headers: &HeaderMap) -> Option<Context> {
    let value = headers.get(&TRACEPARENT)?.to_str().ok()?.trim();
    let fields: Vec<&str> = value.split('-').collect();
    let hex = |field: &str, len: usize| {
        field.len() == len
            && field
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    let version = *fields.first()?;
    if !hex(version, 2) || version == "ff" || fields.len() < 4 {
        return None;
    }
    if version == "00" && fields.len() != 4 {
        return None;
    }
    let (trace, parent, flags) = (fields[1], fields[2], fields[3]);
    if !hex(trace, 32) || !hex(parent, 16) || !hex(flags, 2) {
        return None;
    }
    let trace_id = TraceId::from_hex(trace).ok()?;
    let span_id = SpanId::from_hex(parent).ok()?;
    let flags = u8::from_str_radix(flags, 16).ok()? & TraceFlags::SAMPLED.to_u8();
    let remote = SpanContext::new(
        trace_id,
        span_id,
        TraceFlags::new(flags),
        true,
        TraceState::default(),
    );
    remote
        .is_valid()
        .then(|| Context::new().with_remote_span_context(remote))
}

/// Whether an OpenTelemetry layer exports the spans (see [`set_exporting`]).
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Tells the request layers that the subscriber has an OpenTelemetry layer (`userstate serve
/// --otlp-endpoint` calls it; an embedder that installs its own calls it too). Then a request
/// without a `traceparent` takes the trace id the OpenTelemetry SDK gives its span, so the log
/// lines and the exported span agree; otherwise the id is drawn here, before the span exists.
pub fn set_exporting(exporting: bool) {
    EXPORTING.store(exporting, Ordering::Relaxed);
}

/// The trace a request joins, read from its headers before its span is made.
pub struct RequestTrace {
    parent: Option<Context>,
    remote: SpanContext,
    /// The trace id, when it is known before the span exists (always, unless an OpenTelemetry
    /// layer starts a new trace for the span).
    known: Option<TraceId>,
}

impl RequestTrace {
    /// The trace of a request with `headers`: the caller's (a valid `traceparent`), or a new one.
    pub fn of(headers: &HeaderMap) -> Self {
        let parent = remote_parent(headers);
        let remote = parent
            .as_ref()
            .map(|cx| cx.span().span_context().clone())
            .unwrap_or_else(SpanContext::empty_context);
        let known = if remote.is_valid() {
            Some(remote.trace_id())
        } else if EXPORTING.load(Ordering::Relaxed) {
            None
        } else {
            Some(new_trace_id())
        };
        Self {
            parent,
            remote,
            known,
        }
    }

    /// The span's [`TRACE_ID_FIELD`] value at creation: `trace_id = trace.field()`. Given when
    /// the span is made, so the subscriber formats the span's fields once (recording a field
    /// later costs a JSON subscriber a parse and a re-serialisation of all of them).
    pub fn field(&self) -> Option<tracing::field::DisplayValue<TraceIdText>> {
        self.known
            .map(|id| tracing::field::display(TraceIdText(id)))
    }

    /// Joins `span` (made with [`field`](Self::field)) to the trace and answers the
    /// `traceparent` for the response.
    pub fn attach(self, span: &tracing::Span) -> HeaderValue {
        if let Some(parent) = self.parent {
            span.set_parent(parent);
        }
        // With an OpenTelemetry layer: the exported span's ids (its trace id is the parent's,
        // or the SDK's new one, recorded now).
        let own = match self.known.is_none() || EXPORTING.load(Ordering::Relaxed) {
            true if !span.is_disabled() => span.context().span().span_context().clone(),
            _ => SpanContext::empty_context(),
        };
        if own.is_valid() {
            if self.known.is_none() {
                span.record(TRACE_ID_FIELD, tracing::field::display(own.trace_id()));
            }
            return traceparent(own.trace_id(), own.span_id(), own.trace_flags());
        }
        let trace_id = match self.known {
            Some(id) => id,
            // Exporting, but the span is disabled: a trace id of our own.
            None => new_trace_id(),
        };
        let flags = match self.remote.is_valid() {
            true => self.remote.trace_flags(),
            false => TraceFlags::default(),
        };
        traceparent(trace_id, new_span_id(), flags)
    }
}

/// A trace id as its 32 lowercase hex digits, as `TraceId`'s `Display` writes it but in one
/// write: the span's fields are formatted for every request, and `TraceId` goes through
/// `u128`'s generic hex formatting.
#[derive(Clone, Copy, Debug)]
pub struct TraceIdText(pub TraceId);

impl std::fmt::Display for TraceIdText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut text = [0u8; 32];
        hex_into(&mut text, &self.0.to_bytes());
        // Hex digits only: always UTF-8.
        f.write_str(std::str::from_utf8(&text).map_err(|_| std::fmt::Error)?)
    }
}

/// Joins `span` (a request's span, with an empty [`TRACE_ID_FIELD`]) to the trace `headers`
/// name, records its trace id, and answers the `traceparent` for the response. (The request
/// layers use [`RequestTrace`], which gives the field when the span is made.)
pub fn continue_trace(headers: &HeaderMap, span: &tracing::Span) -> HeaderValue {
    let trace = RequestTrace::of(headers);
    if let Some(id) = trace.known {
        span.record(TRACE_ID_FIELD, tracing::field::display(id));
    }
    trace.attach(span)
}

/// A `traceparent` value (version 00): `00-{trace id}-{span id}-{flags}` in lowercase hex,
/// written into a buffer of its fixed length (a `format!` was a tenth of the request layer).
fn traceparent(trace_id: TraceId, span_id: SpanId, flags: TraceFlags) -> HeaderValue {
    let mut text = [b'-'; 55];
    text[..2].copy_from_slice(b"00");
    hex_into(&mut text[3..35], &trace_id.to_bytes());
    hex_into(&mut text[36..52], &span_id.to_bytes());
    hex_into(&mut text[53..], &[flags.to_u8()]);
    // Hex digits and dashes only: always a valid header value.
    HeaderValue::from_bytes(&text).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

/// Writes `bytes` as lowercase hex into `out` (twice their length).
fn hex_into(out: &mut [u8], bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = DIGITS[usize::from(b >> 4)];
        pair[1] = DIGITS[usize::from(b & 0xf)];
    }
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
    fn a_trace_id_reads_as_opentelemetry_writes_it() {
        for id in [1u128, 0x4bf92f3577b34da6a3ce929d0e0e4736, u128::MAX] {
            let id = TraceId::from_bytes(id.to_be_bytes());
            assert_eq!(TraceIdText(id).to_string(), id.to_string());
        }
    }

    #[test]
    fn a_later_version_is_read_as_far_as_version_00_goes() {
        let later = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03-more";
        let cx = remote_parent(&headers(later)).expect("parsed");
        let remote = cx.span().span_context().clone();
        assert_eq!(
            remote.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(
            remote.trace_flags(),
            TraceFlags::SAMPLED,
            "unknown flags ignored"
        );
    }

    #[test]
    fn a_malformed_or_missing_traceparent_starts_a_new_trace() {
        let span = tracing::Span::none();
        for bad in [
            "garbage",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e47-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
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

    proptest::proptest! {
        /// Whatever a client sends, the answer is a well-formed `traceparent`; a well-formed
        /// one keeps its trace id and flags.
        #[test]
        fn any_traceparent_is_answered_with_a_valid_one(
            header in "[ -~]{0,80}",
            trace in 1u128..,
            parent in 1u64..,
            flags in proptest::prelude::any::<u8>(),
        ) {
            let span = tracing::Span::none();
            for (sent, kept) in [
                (header.clone(), None),
                (format!("00-{trace:032x}-{parent:016x}-{flags:02x}"), Some(trace)),
            ] {
                let mut headers = HeaderMap::new();
                let Ok(value) = HeaderValue::from_str(&sent) else { continue };
                headers.insert(TRACEPARENT_HEADER, value);
                let answer = continue_trace(&headers, &span);
                let answer = answer.to_str().unwrap();
                let parts: Vec<&str> = answer.split('-').collect();
                proptest::prop_assert_eq!(parts.len(), 4, "{}", answer);
                proptest::prop_assert_eq!(parts[0], "00");
                proptest::prop_assert_eq!(parts[1].len(), 32);
                proptest::prop_assert_eq!(parts[2].len(), 16);
                proptest::prop_assert!(parts[1] != "0".repeat(32));
                proptest::prop_assert!(parts[2] != "0".repeat(16));
                if let Some(trace) = kept {
                    proptest::prop_assert_eq!(parts[1], format!("{trace:032x}"));
                    proptest::prop_assert_eq!(parts[3], format!("{:02x}", flags & 1));
                }
            }
        }
    }
}
