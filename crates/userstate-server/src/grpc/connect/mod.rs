//! The Connect protocol (<https://connectrpc.com/docs/protocol>): unary calls, `POST
//! /<service>/<Method>` with an `application/json` or `application/proto` body — what ZITADEL's
//! official SDKs speak (PyPI `zitadel-client`, npm `@zitadel/client`'s Connect transport) — and
//! server streaming (the event feed, `application/connect+json` or `application/connect+proto`
//! envelopes; [`stream`]).
//!
//! A skin over the gRPC services, not a third implementation: a Connect call is authenticated,
//! its body transcoded to the method's protobuf message (JSON as `application/grpc+json` is,
//! [`super::json`]), and sent as a gRPC call to the same tonic services the
//! gRPC and gRPC-web clients reach; the answer or status comes back transcoded. So each
//! operation is declared once, in its service, for gRPC, gRPC-web and Connect.
//!
//! Unary errors are Connect's: the HTTP status of the code, a JSON body
//! `{"code": "failed_precondition", "message": …, "details": [{"type": "zitadel.v1.ErrorDetail",
//! "value": <base64 of the detail>}]}` (a stream carries the same object in its end-of-stream
//! message). `Connect-Protocol-Version` is optional (`1` if sent).

mod stream;

use axum::body::Body;
use axum::extract::Request;
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::Response;
use axum::Router;
use base64::Engine as _;
use bytes::{BufMut, Bytes, BytesMut};
use http_body_util::BodyExt;
use prost::Message;
use prost_reflect::MethodDescriptor;
use tonic::{Code, Status};
use tower::ServiceExt;

use super::json;
use super::pb::google::rpc::Status as RpcStatus;
use super::status_of;
use crate::caller::authenticate;
use crate::http::{AppState, MAX_BODY_BYTES};
use crate::status::{ApiError, RequestError};

/// The body encodings of Connect unary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Encoding {
    Json,
    Proto,
}

impl Encoding {
    /// The encoding a `content-type` names (parameters such as `charset` ignored).
    fn of(content_type: &str) -> Option<Self> {
        let essence = content_type.split(';').next().unwrap_or("").trim();
        if essence.eq_ignore_ascii_case("application/json") {
            Some(Self::Json)
        } else if essence.eq_ignore_ascii_case("application/proto") {
            Some(Self::Proto)
        } else {
            None
        }
    }

    fn content_type(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            Self::Json => "application/json",
            Self::Proto => "application/proto",
        })
    }
}

/// Connect unary in front of the tonic services.
#[derive(Clone)]
pub struct Connect {
    grpc: Router,
    state: AppState,
}

impl Connect {
    /// Connect for the services of `grpc` (the plain tonic router, described by the
    /// server's file descriptor set).
    pub fn new(grpc: Router, state: AppState) -> Self {
        Self { grpc, state }
    }

    /// The method a request path names (`/zitadel.user.v2.UserService/LockUser`), if served.
    /// Every non-gRPC request asks, so the REST routes (`/v2/…`, `/healthz`, …) are told apart
    /// by a prefix check before any descriptor lookup: all our services are `zitadel.*` or
    /// userstate's own `userstate.*` (no REST route starts with either).
    pub fn method(&self, path: &str) -> Option<MethodDescriptor> {
        if !is_service_path(path) {
            return None;
        }
        json::method_at(path)
    }

    /// Answers one Connect unary call of `method`.
    pub async fn call(&self, method: MethodDescriptor, req: Request) -> Response {
        match self.transcode(method, req).await {
            Ok(response) | Err(response) => response,
        }
    }

    async fn transcode(
        &self,
        method: MethodDescriptor,
        req: Request,
    ) -> Result<Response, Response> {
        let (parts, body) = req.into_parts();
        if parts.method != Method::POST {
            let status = Status::unimplemented("Connect unary calls are POST requests");
            return Err(error_response(StatusCode::METHOD_NOT_ALLOWED, &status));
        }
        if method.is_client_streaming() {
            // None of our services has one.
            let status = Status::unimplemented("Connect client streaming is not served");
            return Err(error_response(StatusCode::NOT_IMPLEMENTED, &status));
        }
        if method.is_server_streaming() {
            return Ok(self.stream(method, parts, body).await);
        }
        let content_type = parts
            .headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let Some(encoding) = Encoding::of(content_type) else {
            let error = RequestError::UnsupportedContentType(content_type.to_owned());
            return Err(api_error(StatusCode::UNSUPPORTED_MEDIA_TYPE, error.into()));
        };
        if let Some(version) = parts.headers.get("connect-protocol-version") {
            if version.as_bytes() != b"1" {
                let status = Status::invalid_argument("connect-protocol-version must be 1");
                return Err(error_response(StatusCode::BAD_REQUEST, &status));
            }
        }
        // Authenticated before the body is read or decoded, as in every protocol (SPEC.md); the
        // gRPC service takes the principal found here (a request extension) and authorises.
        let principal = authenticate(&self.state, &parts.headers, &parts.extensions)
            .await
            .map_err(|e| connect_error(&status_of(&e)))?;
        let body = read_body(body)
            .await
            .map_err(|e| connect_error(&status_of(&e)))?;
        let message = match encoding {
            Encoding::Proto => body,
            Encoding::Json => json::json_to_protobuf(&method.input(), &body)
                .map_err(|e| connect_error(&e))?
                .into(),
        };
        let response = self
            .forward(&parts.uri, &parts.headers, &message, principal)
            .await;
        let (parts, body) = response.into_parts();
        let collected = body
            .collect()
            .await
            .map_err(|e| connect_error(&Status::internal(e.to_string())))?;
        let trailers = collected.trailers().cloned().unwrap_or_default();
        // A trailers-only answer (a failure) carries the status in its headers.
        let status_headers = if trailers.contains_key("grpc-status") {
            &trailers
        } else {
            &parts.headers
        };
        if let Some(status) = Status::from_header_map(status_headers) {
            if status.code() != Code::Ok {
                return Err(connect_error(&status));
            }
        }
        let framed = collected.to_bytes();
        let answer = framed.get(5..).unwrap_or_default();
        let body = match encoding {
            Encoding::Proto => Bytes::copy_from_slice(answer),
            Encoding::Json => json::protobuf_to_json(&method.output(), answer)
                .map_err(|e| connect_error(&e))?
                .into(),
        };
        let mut response = Response::new(Body::from(body));
        copy_headers(&parts.headers, response.headers_mut());
        response
            .headers_mut()
            .insert(CONTENT_TYPE, encoding.content_type());
        Ok(response)
    }
}

impl Connect {
    /// Sends `message` (protobuf) as a gRPC call to the tonic services, with the request's
    /// metadata headers and the principal the call was authenticated as.
    async fn forward(
        &self,
        uri: &axum::http::Uri,
        headers: &HeaderMap,
        message: &[u8],
        principal: std::sync::Arc<userstate::Principal>,
    ) -> Response {
        let mut grpc_request = grpc_request(uri, headers, message);
        grpc_request
            .extensions_mut()
            .insert(super::metadata::Authenticated(principal));
        self.grpc
            .clone()
            .oneshot(grpc_request)
            .await
            .unwrap_or_else(|never| match never {})
    }
}

/// The headers of a gRPC answer a Connect answer keeps (the position, the request id, …):
/// all but gRPC's own and the body's type and length.
fn copy_headers(from: &HeaderMap, to: &mut HeaderMap) {
    for (name, value) in from {
        let name_text = name.as_str();
        if !name_text.starts_with("grpc-") && name != CONTENT_TYPE && name != CONTENT_LENGTH {
            to.append(name, value.clone());
        }
    }
}

/// Whether `path` can name a method of our services (`/zitadel.…` or `/userstate.…`): the
/// cheap check before the descriptor lookup.
fn is_service_path(path: &str) -> bool {
    path.starts_with("/zitadel.") || path.starts_with("/userstate.")
}

/// The body, at most [`MAX_BODY_BYTES`].
async fn read_body(body: Body) -> Result<Bytes, ApiError> {
    let limited = http_body_util::Limited::new(body, MAX_BODY_BYTES);
    match limited.collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(RequestError::BodyTooLarge {
            limit: MAX_BODY_BYTES,
        }
        .into()),
        Err(e) => Err(RequestError::MalformedJson(e.to_string()).into()),
    }
}

/// The gRPC call a Connect call makes: the same path and metadata headers, the message framed.
fn grpc_request(uri: &axum::http::Uri, headers: &HeaderMap, message: &[u8]) -> Request {
    let mut framed = BytesMut::with_capacity(5 + message.len());
    framed.put_u8(0);
    framed.put_u32(message.len() as u32);
    framed.put_slice(message);
    let mut request = Request::new(Body::from(framed.freeze()));
    *request.method_mut() = Method::POST;
    *request.uri_mut() = uri.clone();
    *request.version_mut() = axum::http::Version::HTTP_2;
    for (name, value) in headers {
        let name_text = name.as_str();
        let skipped = name == CONTENT_TYPE
            || name == CONTENT_LENGTH
            || name_text.starts_with("connect-")
            || name_text == "accept-encoding"
            || name_text == "content-encoding";
        if !skipped {
            request.headers_mut().append(name, value.clone());
        }
    }
    let headers = request.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    headers.insert("te", HeaderValue::from_static("trailers"));
    request
}

/// A failure found before the call was transcoded, with the HTTP status Connect gives it.
fn api_error(http: StatusCode, error: ApiError) -> Response {
    error_response(http, &status_of(&error))
}

/// The Connect error answer of a gRPC status.
fn connect_error(status: &Status) -> Response {
    error_response(http_status(status.code()), status)
}

fn error_response(http: StatusCode, status: &Status) -> Response {
    let mut response = Response::new(Body::from(error_json(status).to_string()));
    *response.status_mut() = http;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// Connect's error object of a gRPC status: `{"code", "message", "details"}` (the message and
/// details when there are any), the body of a unary error and the `error` of a stream's end.
fn error_json(status: &Status) -> serde_json::Value {
    let details: Vec<serde_json::Value> = RpcStatus::decode(status.details())
        .map(|rpc| rpc.details)
        .unwrap_or_default()
        .into_iter()
        .map(|any| {
            let kind = any
                .type_url
                .rsplit_once('/')
                .map_or(any.type_url.as_str(), |(_, name)| name)
                .to_owned();
            let value = base64::engine::general_purpose::STANDARD_NO_PAD.encode(&any.value);
            serde_json::json!({ "type": kind, "value": value })
        })
        .collect();
    let mut body = serde_json::json!({ "code": code_name(status.code()) });
    if !status.message().is_empty() {
        body["message"] = status.message().into();
    }
    if !details.is_empty() {
        body["details"] = details.into();
    }
    body
}

/// Connect's name of a code.
fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "ok",
        Code::Cancelled => "canceled",
        Code::Unknown => "unknown",
        Code::InvalidArgument => "invalid_argument",
        Code::DeadlineExceeded => "deadline_exceeded",
        Code::NotFound => "not_found",
        Code::AlreadyExists => "already_exists",
        Code::PermissionDenied => "permission_denied",
        Code::ResourceExhausted => "resource_exhausted",
        Code::FailedPrecondition => "failed_precondition",
        Code::Aborted => "aborted",
        Code::OutOfRange => "out_of_range",
        Code::Unimplemented => "unimplemented",
        Code::Internal => "internal",
        Code::Unavailable => "unavailable",
        Code::DataLoss => "data_loss",
        Code::Unauthenticated => "unauthenticated",
    }
}

/// The HTTP status Connect gives a code.
fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::Cancelled => StatusCode::from_u16(499).expect("499 is a valid status"),
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
            StatusCode::BAD_REQUEST
        }
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_connects_name_and_status() {
        assert_eq!(code_name(Code::FailedPrecondition), "failed_precondition");
        assert_eq!(
            http_status(Code::FailedPrecondition),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(http_status(Code::Unauthenticated), StatusCode::UNAUTHORIZED);
        assert_eq!(http_status(Code::AlreadyExists), StatusCode::CONFLICT);
    }

    #[test]
    fn service_paths_are_told_from_rest_routes() {
        assert!(is_service_path("/zitadel.user.v2.UserService/LockUser"));
        assert!(is_service_path(
            "/userstate.lockout.v1.LockoutService/ReportAuthenticationFailed"
        ));
        for rest in [
            "/v2/users/u1",
            "/healthz",
            "/userstate",
            "/v2/policies/lockout",
            "/",
        ] {
            assert!(!is_service_path(rest), "{rest}");
        }
    }

    #[test]
    fn content_types() {
        assert_eq!(Encoding::of("application/json"), Some(Encoding::Json));
        assert_eq!(
            Encoding::of("Application/JSON; charset=utf-8"),
            Some(Encoding::Json)
        );
        assert_eq!(Encoding::of("application/proto"), Some(Encoding::Proto));
        assert_eq!(Encoding::of("text/plain"), None);
    }
}
