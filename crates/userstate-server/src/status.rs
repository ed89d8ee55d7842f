//! The one error value of the front ends. Every failure — a domain rejection, a store failure,
//! a bad request — becomes an [`ApiError`] through [`Classified`]; its gRPC code and HTTP status
//! come from [`ErrorKind`] and nowhere else.

use thiserror::Error;
use userstate::{Classified, ErrorKind};

use crate::wire::{ErrorBody, ErrorDetail, ERROR_DETAIL_TYPE};

/// A failure as a client sees it: kind, stable id, message key and human message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    /// Fixes the gRPC code ([`ErrorKind::grpc_code`]) and HTTP status ([`ErrorKind::http_status`]).
    pub kind: ErrorKind,
    /// Stable id, e.g. `COMMAND-olb9vb0oca`.
    pub id: &'static str,
    /// Message key, e.g. `Errors.User.NotLocked`.
    pub message_key: &'static str,
    /// Human message, e.g. `user "u1" is not locked (state: active)`.
    pub message: String,
}

impl ApiError {
    /// The error of any classified failure.
    pub fn of<E: Classified + ?Sized>(error: &E) -> Self {
        Self {
            kind: error.kind(),
            id: error.id(),
            message_key: error.message_key(),
            message: error.to_string(),
        }
    }

    /// The `google.rpc.Status` JSON body. Internal failures keep their details out of the
    /// body (they are logged instead).
    pub fn body(&self) -> ErrorBody {
        let message = match self.kind {
            ErrorKind::Internal => "internal error; see the server log".to_owned(),
            _ => self.message.clone(),
        };
        ErrorBody {
            code: self.kind.grpc_code(),
            message,
            details: vec![ErrorDetail {
                type_url: ERROR_DETAIL_TYPE.to_owned(),
                id: self.id.to_owned(),
                message: self.message_key.to_owned(),
            }],
        }
    }
}

impl<E: Classified> From<E> for ApiError {
    fn from(error: E) -> Self {
        Self::of(&error)
    }
}

/// Failures of the request itself, found by the front end before the engine is asked.
#[derive(Debug, Error)]
pub enum RequestError {
    /// No `Authorization: Bearer …` header.
    #[error("missing bearer token (send `Authorization: Bearer <token>`)")]
    MissingToken,
    /// A token that is not in the tokens file.
    #[error("unknown or malformed bearer token")]
    UnknownToken,
    /// A recognised token that is refused (expired, not yet valid, bad signature, wrong issuer
    /// or audience, …): the reason, never the token.
    #[error("invalid bearer token: {0}")]
    InvalidToken(String),
    /// The body is not valid JSON for this route.
    #[error("malformed JSON body: {0}")]
    MalformedJson(String),
    /// A gRPC request message that is not valid protobuf for its method.
    #[error("malformed protobuf message: {0}")]
    MalformedMessage(String),
    /// A body with a content type other than JSON.
    #[error("unsupported content type {0:?}; send application/json")]
    UnsupportedContentType(String),
    /// The body exceeds the limit.
    #[error("request body exceeds {limit} bytes")]
    BodyTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The body could not be read.
    #[error("request body could not be read: {0}")]
    BodyUnreadable(String),
    /// A route that needs a body got none.
    #[error("this route needs a JSON body")]
    MissingBody,
    /// A required field is absent.
    #[error("{0} is required")]
    MissingField(&'static str),
    /// A header has a value that cannot be used.
    #[error("header {name} {reason}")]
    InvalidHeader {
        /// The header's name.
        name: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A path parameter that is not text.
    #[error("invalid path: {0}")]
    InvalidPath(String),
    /// No route has this path.
    #[error("no route {method} {path}")]
    RouteNotFound {
        /// The request's method.
        method: String,
        /// The request's path.
        path: String,
    },
    /// The path exists, but not with this method. (ours) Reported as NotFound: the table of
    /// SPEC.md has no "unimplemented" row, and the method+path pair is what does not exist.
    #[error("method {method} is not allowed on {path}")]
    MethodNotAllowed {
        /// The request's method.
        method: String,
        /// The request's path.
        path: String,
    },
    /// The handler panicked (a bug; the request gets a 500 and the server keeps running).
    #[error("the request handler failed unexpectedly")]
    Panicked,
    /// The store does not answer, or the read model has not caught up since startup.
    #[error("not ready: the store does not answer or the read model is still catching up")]
    NotReady,
}

impl Classified for RequestError {
    fn kind(&self) -> ErrorKind {
        match self {
            RequestError::MissingToken
            | RequestError::UnknownToken
            | RequestError::InvalidToken(_) => ErrorKind::Unauthenticated,
            RequestError::MalformedJson(_)
            | RequestError::MalformedMessage(_)
            | RequestError::UnsupportedContentType(_)
            | RequestError::BodyUnreadable(_)
            | RequestError::MissingBody
            | RequestError::MissingField(_)
            | RequestError::InvalidHeader { .. }
            | RequestError::InvalidPath(_) => ErrorKind::InvalidArgument,
            RequestError::BodyTooLarge { .. } => ErrorKind::ResourceExhausted,
            RequestError::RouteNotFound { .. } | RequestError::MethodNotAllowed { .. } => {
                ErrorKind::NotFound
            }
            RequestError::Panicked => ErrorKind::Internal,
            RequestError::NotReady => ErrorKind::Unavailable,
        }
    }

    fn id(&self) -> &'static str {
        match self {
            RequestError::MissingToken => "AUTH-missing-token",
            RequestError::UnknownToken => "AUTH-unknown-token",
            RequestError::InvalidToken(_) => "AUTH-invalid-token",
            RequestError::MalformedJson(_) => "HTTP-malformed-json",
            RequestError::MalformedMessage(_) => "GRPC-malformed-message",
            RequestError::UnsupportedContentType(_) => "HTTP-unsupported-content-type",
            RequestError::BodyTooLarge { .. } => "HTTP-body-too-large",
            RequestError::BodyUnreadable(_) => "HTTP-body-unreadable",
            RequestError::MissingBody => "HTTP-missing-body",
            RequestError::MissingField(_) => "HTTP-missing-field",
            RequestError::InvalidHeader { .. } => "HTTP-invalid-header",
            RequestError::InvalidPath(_) => "HTTP-invalid-path",
            RequestError::RouteNotFound { .. } => "HTTP-route-not-found",
            RequestError::MethodNotAllowed { .. } => "HTTP-method-not-allowed",
            RequestError::Panicked => "HTTP-internal",
            RequestError::NotReady => "SERVER-not-ready",
        }
    }

    fn message_key(&self) -> &'static str {
        match self {
            RequestError::MissingToken
            | RequestError::UnknownToken
            | RequestError::InvalidToken(_) => "Errors.Token.Invalid",
            RequestError::MalformedJson(_)
            | RequestError::MalformedMessage(_)
            | RequestError::BodyUnreadable(_)
            | RequestError::MissingBody => "Errors.Invalid.Body",
            RequestError::UnsupportedContentType(_) => "Errors.Invalid.ContentType",
            RequestError::BodyTooLarge { .. } => "Errors.Invalid.BodyTooLarge",
            RequestError::MissingField(_) => "Errors.Invalid.Argument",
            RequestError::InvalidHeader { .. } => "Errors.Invalid.Header",
            RequestError::InvalidPath(_) => "Errors.Invalid.Id",
            RequestError::RouteNotFound { .. } => "Errors.Route.NotFound",
            RequestError::MethodNotAllowed { .. } => "Errors.Route.MethodNotAllowed",
            RequestError::Panicked => "Errors.Internal",
            RequestError::NotReady => "Errors.Server.NotReady",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_has_the_grpc_gateway_shape() {
        let e = ApiError::of(&RequestError::UnknownToken);
        let json = serde_json::to_value(e.body()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "code": 16,
                "message": "unknown or malformed bearer token",
                "details": [{
                    "@type": "type.googleapis.com/zitadel.v1.ErrorDetail",
                    "id": "AUTH-unknown-token",
                    "message": "Errors.Token.Invalid"
                }]
            })
        );
    }

    #[test]
    fn internal_messages_stay_out_of_the_body() {
        let e = ApiError::of(&RequestError::Panicked);
        assert_eq!(e.body().code, 13);
        assert!(e.body().message.contains("server log"));
    }
}
