//! Turning answers and errors into HTTP responses.

use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use tracing::{debug, error};
use userstate::ErrorKind;

use crate::status::ApiError;

/// Response header with the global position of the answer's last event.
pub const POSITION_HEADER: &str = "x-userstate-position";
/// [`POSITION_HEADER`] as a header name: used as such, it is neither parsed nor copied.
static POSITION: HeaderName = HeaderName::from_static(POSITION_HEADER);
pub use crate::caller::MIN_POSITION_HEADER;

/// A JSON answer with the position header.
pub fn with_position<T: Serialize>(status: StatusCode, body: T, position: u64) -> Response {
    let mut response = (status, Json(body)).into_response();
    response
        .headers_mut()
        .insert(POSITION.clone(), HeaderValue::from(position));
    response
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self.kind {
            ErrorKind::Internal | ErrorKind::Unavailable => {
                error!(id = self.id, kind = %self.kind, message = %self.message, "request failed")
            }
            _ => {
                debug!(id = self.id, kind = %self.kind, message = %self.message, "request refused")
            }
        }
        let status = StatusCode::from_u16(self.kind.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, Json(self.body())).into_response();
        if self.kind == ErrorKind::Unauthenticated {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"userstate\""),
            );
        }
        response
    }
}
