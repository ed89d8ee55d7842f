//! The caller of a request, for every front end: one [`Caller`] built by one function from the
//! request's headers (HTTP [`HeaderMap`]) or metadata (gRPC [`MetadataMap`]), so a token, an
//! idempotency key or a minimum position is read and refused the same way whatever the
//! protocol. Every protocol authenticates with [`authenticate`] (the server's
//! [`Authenticator`](crate::auth::Authenticator)) before it reads a body.
//!
//! Not here: where the correlation id comes from. Each protocol keeps its own source (REST: the
//! request-id layer; gRPC: `x-request-id` or a generated one) and passes it in.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use axum::http::{Extensions, HeaderMap};
use tonic::metadata::MetadataMap;
use userstate::Principal;

use crate::auth::{AuthError, Credentials};
use crate::http::AppState;
use crate::service::RequestMeta;
use crate::status::{ApiError, RequestError};

/// The longest idempotency key or request id accepted, in bytes.
pub const MAX_HEADER_VALUE_LEN: usize = 128;
/// Request header (gRPC: metadata): a read must reflect at least this global position.
pub const MIN_POSITION_HEADER: &str = "x-userstate-min-position";
/// Request header (gRPC: metadata): the client's idempotency key.
pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";

/// Where a request's headers are read from: HTTP headers or gRPC (ASCII) metadata. Reads
/// borrow; nothing is copied until a value is kept.
pub trait Headers {
    /// The raw value of the header `name` (lower case), if present.
    fn raw(&self, name: &'static str) -> Option<&[u8]>;
}

impl Headers for HeaderMap {
    fn raw(&self, name: &'static str) -> Option<&[u8]> {
        self.get(name).map(|v| v.as_bytes())
    }
}

impl Headers for MetadataMap {
    fn raw(&self, name: &'static str) -> Option<&[u8]> {
        self.get(name).map(|v| v.as_bytes())
    }
}

/// The authenticated caller and what its request carries besides the payload.
#[derive(Clone, Debug)]
pub struct Caller {
    /// Who is asking.
    pub principal: Arc<Principal>,
    /// Correlation id, idempotency key, minimum read position.
    pub meta: RequestMeta,
}

impl Caller {
    /// The caller of a request with `headers`, authenticated as `principal` (by
    /// [`authenticate`]): `idempotency-key` and `x-userstate-min-position` checked;
    /// `correlation_id` as the protocol found it.
    pub fn from_headers(
        headers: &impl Headers,
        principal: Arc<Principal>,
        correlation_id: Option<String>,
    ) -> Result<Self, ApiError> {
        let idempotency_key = header_text(headers, IDEMPOTENCY_KEY_HEADER)?;
        let min_position = match header_text(headers, MIN_POSITION_HEADER)? {
            None => None,
            Some(v) => Some(v.parse::<u64>().map_err(|_| RequestError::InvalidHeader {
                name: MIN_POSITION_HEADER,
                reason: "must be a non-negative integer",
            })?),
        };
        Ok(Self {
            principal,
            meta: RequestMeta {
                correlation_id,
                idempotency_key,
                min_position,
            },
        })
    }
}

/// The address of the client a request came from (a request extension the server sets per
/// connection), for the log line of a refused request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientAddr(pub SocketAddr);

/// Who a request authenticated as (or, refused, claimed to be when that is known): a request
/// extension the request's log layer puts in and reads back for the log line of a 401 or 403.
#[derive(Clone, Debug, Default)]
pub struct SubjectSlot(Arc<OnceLock<String>>);

impl SubjectSlot {
    /// Notes the subject (the first note wins).
    pub fn set(&self, subject: &str) {
        let _ = self.0.set(subject.to_owned());
    }

    /// The subject noted, if any.
    pub fn get(&self) -> Option<&str> {
        self.0.get().map(String::as_str)
    }
}

/// The principal of a request with `headers` and `extensions`, as the server's authenticator
/// finds it; its refusal as the Unauthenticated [`ApiError`]. The one place every protocol
/// authenticates: a refusal is counted (`userstate_auth_failures_total`) and logged with its
/// reason, the subject when known, the client address and the request id — never the
/// credential. The subject is noted in the request's [`SubjectSlot`] for its log line.
pub async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    extensions: &Extensions,
) -> Result<Arc<Principal>, ApiError> {
    let slot = extensions.get::<SubjectSlot>();
    match state
        .authenticator()
        .authenticate(Credentials::new(headers))
        .await
    {
        Ok(principal) => {
            if let Some(slot) = slot {
                slot.set(&principal.subject);
            }
            Ok(principal)
        }
        Err(error) => {
            let reason = match &error {
                AuthError::Missing => "missing",
                AuthError::Unknown => "unknown",
                AuthError::Rejected { .. } => "invalid",
            };
            state.metrics().auth_failed(reason);
            let subject = error.subject();
            if let (Some(slot), Some(subject)) = (slot, subject) {
                slot.set(subject);
            }
            let client = extensions.get::<ClientAddr>().map(|c| c.0.to_string());
            let request_id = headers
                .get(&crate::http::REQUEST_ID)
                .and_then(|v| v.to_str().ok());
            tracing::info!(
                reason,
                error = %error,
                subject,
                client,
                request_id,
                "authentication failed"
            );
            Err(error.into())
        }
    }
}

/// A header's value as visible ASCII of at most [`MAX_HEADER_VALUE_LEN`] bytes (see
/// [`value_text`]).
pub fn header_text(headers: &impl Headers, name: &'static str) -> Result<Option<String>, ApiError> {
    value_text(name, headers.raw(name))
}

/// `bytes` as text when every byte is visible ASCII or a tab (what `HeaderValue::to_str`
/// accepts).
fn visible_ascii(bytes: &[u8]) -> Option<&str> {
    let visible = bytes
        .iter()
        .all(|&b| b == b'\t' || (0x20..0x7f).contains(&b));
    visible.then(|| std::str::from_utf8(bytes).ok()).flatten()
}

/// Checks a header's raw value: visible ASCII, not empty after trimming, at most
/// [`MAX_HEADER_VALUE_LEN`] bytes.
fn value_text(name: &'static str, value: Option<&[u8]>) -> Result<Option<String>, ApiError> {
    let Some(bytes) = value else {
        return Ok(None);
    };
    let invalid = |reason| RequestError::InvalidHeader { name, reason };
    let text = visible_ascii(bytes)
        .ok_or_else(|| invalid("must be visible ASCII"))?
        .trim();
    if text.is_empty() {
        return Err(invalid("must not be empty").into());
    }
    if text.len() > MAX_HEADER_VALUE_LEN {
        return Err(invalid("is longer than 128 bytes").into());
    }
    Ok(Some(text.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn header_values_are_checked_alike_in_both_sources() {
        let mut http = HeaderMap::new();
        http.insert("idempotency-key", HeaderValue::from_static("  k1 "));
        let metadata = MetadataMap::from_headers(http.clone());
        assert_eq!(
            header_text(&http, "idempotency-key").unwrap(),
            Some("k1".into())
        );
        assert_eq!(
            header_text(&metadata, "idempotency-key").unwrap(),
            Some("k1".into())
        );
        assert_eq!(header_text(&http, "x-absent").unwrap(), None);
        http.insert("idempotency-key", HeaderValue::from_static("   "));
        assert!(header_text(&http, "idempotency-key").is_err());
        http.insert(
            "idempotency-key",
            HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap(),
        );
        assert!(header_text(&http, "idempotency-key").is_err());
    }
}
