//! Request metadata -> caller, answers -> response metadata, [`ApiError`] -> [`tonic::Status`].

use std::sync::Arc;

use prost::Message;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Code, Request, Response, Status};
use tracing::{debug, error};
use userstate::{ErrorKind, Principal, UserId};

use super::pb::google::rpc::Status as RpcStatus;
use super::pb::zitadel::v1::ErrorDetail;
use crate::http::extract::value_text;
use crate::http::{AppState, MIN_POSITION_HEADER, REQUEST_ID_HEADER};
use crate::service::RequestMeta;
use crate::status::{ApiError, RequestError};

/// Response metadata with the global position of the answer's last event (as the HTTP header).
pub const POSITION_METADATA: &str = crate::http::POSITION_HEADER;

/// The status of a failure: the code from [`ErrorKind::grpc_code`], the same message as the
/// JSON body, and in `grpc-status-details-bin` a `google.rpc.Status` holding one
/// `zitadel.v1.ErrorDetail` (id, message key).
pub fn status_of(error: &ApiError) -> Status {
    match error.kind {
        ErrorKind::Internal | ErrorKind::Unavailable => {
            error!(id = error.id, kind = %error.kind, message = %error.message, "gRPC call failed")
        }
        _ => {
            debug!(id = error.id, kind = %error.kind, message = %error.message, "gRPC call refused")
        }
    }
    let body = error.body();
    let details = body
        .details
        .iter()
        .map(|d| prost_types::Any {
            type_url: d.type_url.clone(),
            value: ErrorDetail {
                id: d.id.clone(),
                message: d.message.clone(),
            }
            .encode_to_vec(),
        })
        .collect();
    let rpc = RpcStatus {
        code: body.code,
        message: body.message.clone(),
        details,
    };
    Status::with_details(
        Code::from_i32(body.code),
        body.message,
        rpc.encode_to_vec().into(),
    )
}

/// The authenticated caller of one call and what its metadata carries besides the payload.
pub(crate) struct GrpcCaller {
    pub principal: Arc<Principal>,
    pub meta: RequestMeta,
}

/// The principal [`Authenticate`] found, kept in the request's extensions for the method.
#[derive(Clone)]
struct Authenticated(Arc<Principal>);

/// Authenticates `authorization: Bearer …` before the message is decoded: a tonic interceptor
/// runs on the request's metadata before the generated server decodes the body, so a missing or
/// bad token is Unauthenticated (16) whatever the body holds, in every encoding (protobuf or
/// JSON, gRPC or gRPC-web). Each method then authorises its operation as before.
#[derive(Clone)]
pub(crate) struct Authenticate {
    state: AppState,
}

impl Authenticate {
    /// The interceptor on the server's state.
    pub(crate) fn new(state: AppState) -> Self {
        Self { state }
    }
}

impl tonic::service::Interceptor for Authenticate {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let principal = principal(&self.state, request.metadata()).map_err(|e| status_of(&e))?;
        request.extensions_mut().insert(Authenticated(principal));
        Ok(request)
    }
}

/// The principal of `authorization: Bearer …`.
fn principal(state: &AppState, metadata: &MetadataMap) -> Result<Arc<Principal>, ApiError> {
    let authorization = match metadata.get("authorization") {
        None => None,
        Some(v) => Some(v.to_str().map_err(|_| RequestError::UnknownToken)?),
    };
    Ok(state.authenticator().authenticate(authorization)?)
}

/// The caller of `request`: the principal [`Authenticate`] found (authenticated here when the
/// interceptor did not run), and `idempotency-key`, `x-userstate-min-position` and
/// `x-request-id` (the correlation id; generated when absent).
pub(crate) fn caller<T>(state: &AppState, request: &Request<T>) -> Result<GrpcCaller, ApiError> {
    let metadata = request.metadata();
    let principal = match request.extensions().get::<Authenticated>() {
        Some(Authenticated(principal)) => principal.clone(),
        None => principal(state, metadata)?,
    };
    let idempotency_key = text(metadata, "idempotency-key")?;
    let min_position = match text(metadata, MIN_POSITION_HEADER)? {
        None => None,
        Some(v) => Some(v.parse::<u64>().map_err(|_| RequestError::InvalidHeader {
            name: MIN_POSITION_HEADER,
            reason: "must be a non-negative integer",
        })?),
    };
    let correlation_id = text(metadata, REQUEST_ID_HEADER)
        .ok()
        .flatten()
        .filter(|t| t.bytes().all(|b| b.is_ascii_graphic()))
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    Ok(GrpcCaller {
        principal,
        meta: RequestMeta {
            correlation_id: Some(correlation_id),
            idempotency_key,
            min_position,
        },
    })
}

/// A metadata value, checked like an HTTP header ([`value_text`]).
fn text(metadata: &MetadataMap, name: &'static str) -> Result<Option<String>, ApiError> {
    value_text(name, metadata.get(name).map(|v| v.as_bytes()))
}

/// A user id from a request field.
pub(crate) fn user_id(raw: String) -> Result<UserId, ApiError> {
    Ok(UserId::new(raw)?)
}

/// An answer with the position metadata.
pub(crate) fn with_position<T>(message: T, position: u64) -> Response<T> {
    let mut response = Response::new(message);
    response
        .metadata_mut()
        .insert(POSITION_METADATA, MetadataValue::from(position));
    response
}

/// Runs one user command for a gRPC call: authenticate from the metadata, validate the id, run
/// it through the shared service. Both API versions answer with the resulting `Details`.
pub(crate) async fn execute_command<T>(
    state: &AppState,
    request: &Request<T>,
    id: String,
    command: fn(UserId) -> userstate::UserCommand,
) -> Result<userstate::Details, Status> {
    let run = async {
        let caller = caller(state, request)?;
        let id = user_id(id)?;
        state
            .service()
            .execute(&caller.principal, &caller.meta, command(id))
            .await
    };
    run.await.map_err(|e: ApiError| status_of(&e))
}
