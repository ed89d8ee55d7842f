//! Request extractors that fail with [`ApiError`] (and so with SPEC.md's error shape), never
//! with axum's plain-text rejections.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use serde::de::DeserializeOwned;
use userstate::{Principal, UserId};

use super::layers::RequestId;
use super::response::MIN_POSITION_HEADER;
use super::AppState;
use crate::service::RequestMeta;
use crate::status::{ApiError, RequestError};

/// The largest request body accepted, in bytes; larger ones are ResourceExhausted (429).
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// The longest idempotency key or request id accepted, in bytes.
pub const MAX_HEADER_VALUE_LEN: usize = 128;

/// The authenticated caller and what its request carries besides the payload.
pub struct Caller {
    /// Who is asking.
    pub principal: Arc<Principal>,
    /// Correlation id, idempotency key, minimum read position.
    pub meta: RequestMeta,
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let authorization = match parts.headers.get(header::AUTHORIZATION) {
            None => None,
            Some(v) => Some(v.to_str().map_err(|_| RequestError::UnknownToken)?),
        };
        let principal = state.authenticator().authenticate(authorization)?;
        let idempotency_key = header_text(&parts.headers, "idempotency-key")?;
        let min_position = match header_text(&parts.headers, MIN_POSITION_HEADER)? {
            None => None,
            Some(v) => Some(v.parse::<u64>().map_err(|_| RequestError::InvalidHeader {
                name: MIN_POSITION_HEADER,
                reason: "must be a non-negative integer",
            })?),
        };
        let correlation_id = parts.extensions.get::<RequestId>().map(|r| r.0.clone());
        Ok(Caller {
            principal,
            meta: RequestMeta {
                correlation_id,
                idempotency_key,
                min_position,
            },
        })
    }
}

/// A header's value as visible ASCII of at most [`MAX_HEADER_VALUE_LEN`] bytes.
fn header_text(headers: &HeaderMap, name: &'static str) -> Result<Option<String>, ApiError> {
    value_text(name, headers.get(name).map(|v| v.as_bytes()))
}

/// Checks a request header's (or gRPC metadata entry's) raw value: visible ASCII, not empty
/// after trimming, at most [`MAX_HEADER_VALUE_LEN`] bytes. Shared by both front ends.
pub(crate) fn value_text(
    name: &'static str,
    value: Option<&[u8]>,
) -> Result<Option<String>, ApiError> {
    let Some(bytes) = value else {
        return Ok(None);
    };
    let invalid = |reason| RequestError::InvalidHeader { name, reason };
    let visible = bytes
        .iter()
        .all(|&b| b == b'\t' || (0x20..0x7f).contains(&b));
    let text = std::str::from_utf8(bytes)
        .ok()
        .filter(|_| visible)
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

/// The `{userId}` path segment, validated as a [`UserId`].
pub struct UserIdPath(pub UserId);

impl<S: Send + Sync> FromRequestParts<S> for UserIdPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| RequestError::InvalidPath(e.body_text()))?;
        Ok(UserIdPath(UserId::new(raw)?))
    }
}

/// A JSON body of type `T`, or `None` when the body is empty. A non-empty body must be
/// `application/json` (or `…+json`) and at most [`MAX_BODY_BYTES`] long.
pub struct JsonBody<T>(pub Option<T>);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, ApiError> {
        let (parts, body) = req.into_parts();
        let too_large = RequestError::BodyTooLarge {
            limit: MAX_BODY_BYTES,
        };
        let declared = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
            return Err(too_large.into());
        }
        let bytes: Bytes = axum::body::to_bytes(body, MAX_BODY_BYTES)
            .await
            .map_err(|e| match is_length_limit(&e) {
                true => RequestError::BodyTooLarge {
                    limit: MAX_BODY_BYTES,
                },
                false => RequestError::BodyUnreadable(e.to_string()),
            })?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(JsonBody(None));
        }
        let content_type = parts
            .headers
            .get(header::CONTENT_TYPE)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .unwrap_or_default();
        if !is_json(&content_type) {
            let mut shown = content_type;
            shown.truncate(MAX_HEADER_VALUE_LEN);
            return Err(RequestError::UnsupportedContentType(shown).into());
        }
        serde_json::from_slice(&bytes)
            .map(|v| JsonBody(Some(v)))
            .map_err(|e| RequestError::MalformedJson(e.to_string()).into())
    }
}

/// The body of a command route: nothing, or any JSON object (fields are ignored).
pub struct CommandBody;

impl<S: Send + Sync> FromRequest<S> for CommandBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match JsonBody::<serde_json::Value>::from_request(req, state).await? {
            JsonBody(None) | JsonBody(Some(serde_json::Value::Object(_))) => Ok(CommandBody),
            JsonBody(Some(_)) => {
                Err(RequestError::MalformedJson("expected a JSON object".into()).into())
            }
        }
    }
}

fn is_json(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

fn is_length_limit(error: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if e.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_content_types() {
        assert!(is_json("application/json"));
        assert!(is_json("Application/JSON; charset=utf-8"));
        assert!(is_json("application/merge-patch+json"));
        assert!(!is_json("text/plain"));
        assert!(!is_json("application/x-www-form-urlencoded"));
        assert!(!is_json(""));
    }
}
