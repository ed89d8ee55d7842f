//! Request extractors that fail with [`ApiError`] (and so with SPEC.md's error shape), never
//! with axum's plain-text rejections.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::header;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use userstate::UserId;

use super::layers::request_id;
use super::AppState;
use crate::caller::{authenticate, Caller};
use crate::status::{ApiError, RequestError};

/// The largest request body accepted, in bytes; larger ones are ResourceExhausted (429).
pub const MAX_BODY_BYTES: usize = 64 * 1024;
pub use crate::caller::MAX_HEADER_VALUE_LEN;

/// The caller of an HTTP request ([`Caller::from_headers`]); the correlation id is the
/// request id the request-id layer assigned (and wrote into the headers).
impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let principal = authenticate(state, &parts.headers, &parts.extensions).await?;
        let correlation_id = request_id(&parts.headers).map(str::to_owned);
        Caller::from_headers(&parts.headers, principal, correlation_id)
    }
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
        // Borrowed, not copied, when it is UTF-8 (as it always is in practice).
        let content_type = parts
            .headers
            .get(header::CONTENT_TYPE)
            .map(|v| String::from_utf8_lossy(v.as_bytes()))
            .unwrap_or_default();
        if !is_json(&content_type) {
            let mut shown = content_type.into_owned();
            shown.truncate(MAX_HEADER_VALUE_LEN);
            return Err(RequestError::UnsupportedContentType(shown).into());
        }
        serde_json::from_slice(&bytes)
            .map(|v| JsonBody(Some(v)))
            .map_err(|e| RequestError::MalformedJson(e.to_string()).into())
    }
}

/// The body of a command route: nothing, or any JSON object (fields a command does not take
/// are ignored).
pub struct CommandBody(pub serde_json::Map<String, serde_json::Value>);

impl<S: Send + Sync> FromRequest<S> for CommandBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match JsonBody::<serde_json::Value>::from_request(req, state).await? {
            JsonBody(None) => Ok(CommandBody(serde_json::Map::new())),
            JsonBody(Some(serde_json::Value::Object(fields))) => Ok(CommandBody(fields)),
            JsonBody(Some(_)) => {
                Err(RequestError::MalformedJson("expected a JSON object".into()).into())
            }
        }
    }
}

/// Whether a `content-type` is JSON: `application/json` or `application/…+json`, ASCII case
/// ignored, parameters ignored. (Compared in place: no lowercase copy per request.)
fn is_json(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .as_bytes();
    let starts = |prefix: &[u8]| {
        essence
            .get(..prefix.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(prefix))
    };
    let ends = |suffix: &[u8]| {
        essence
            .len()
            .checked_sub(suffix.len())
            .is_some_and(|at| essence[at..].eq_ignore_ascii_case(suffix))
    };
    essence.eq_ignore_ascii_case(b"application/json") || (starts(b"application/") && ends(b"+json"))
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
        assert!(is_json(" application/json "));
        assert!(is_json("application/merge-patch+json"));
        assert!(is_json("APPLICATION/VND.API+JSON;x=1"));
        assert!(!is_json("text/plain"));
        assert!(!is_json("text/plain+json"));
        assert!(!is_json("application/x-www-form-urlencoded"));
        assert!(!is_json("application/+jso"));
        assert!(!is_json(""));
    }
}
