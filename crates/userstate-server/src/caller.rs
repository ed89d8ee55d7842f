//! The caller of a request, for every front end: one [`Caller`] built by one function from the
//! request's headers (HTTP [`HeaderMap`]) or metadata (gRPC [`MetadataMap`]), so a token, an
//! idempotency key or a minimum position is read and refused the same way whatever the
//! protocol. Connect authenticates with [`authenticate`] before it reads a body.
//!
//! Not here: where the correlation id comes from. Each protocol keeps its own source (REST: the
//! request-id layer; gRPC: `x-request-id` or a generated one) and passes it in.

use std::sync::Arc;

use axum::http::HeaderMap;
use tonic::metadata::MetadataMap;
use userstate::Principal;

use crate::auth::Authenticator;
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
    /// The caller of a request with `headers`: `principal` when the protocol already
    /// authenticated it (the gRPC interceptor), otherwise the principal of `authorization`;
    /// `idempotency-key` and `x-userstate-min-position` checked; `correlation_id` as the
    /// protocol found it.
    pub fn from_headers(
        auth: &Authenticator,
        headers: &impl Headers,
        principal: Option<Arc<Principal>>,
        correlation_id: Option<String>,
    ) -> Result<Self, ApiError> {
        let principal = match principal {
            Some(principal) => principal,
            None => authenticate(auth, headers)?,
        };
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

/// The principal of `authorization: Bearer …`; a value that is not visible ASCII is an
/// unknown token, no value a missing one.
pub fn authenticate(
    auth: &Authenticator,
    headers: &impl Headers,
) -> Result<Arc<Principal>, ApiError> {
    let authorization = match headers.raw("authorization") {
        None => None,
        Some(raw) => Some(visible_ascii(raw).ok_or(RequestError::UnknownToken)?),
    };
    Ok(auth.authenticate(authorization)?)
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
