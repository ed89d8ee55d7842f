//! Request metadata -> caller, answers -> response metadata, [`ApiError`] -> [`tonic::Status`].

use std::sync::Arc;

use prost::Message;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Code, Response, Status};
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

/// Authenticates `authorization: Bearer …` (first, so a missing token is Unauthenticated
/// whatever else is wrong) and reads `idempotency-key`, `x-userstate-min-position` and
/// `x-request-id` (the correlation id; generated when absent).
pub(crate) fn caller(state: &AppState, metadata: &MetadataMap) -> Result<GrpcCaller, ApiError> {
    let authorization = match metadata.get("authorization") {
        None => None,
        Some(v) => Some(v.to_str().map_err(|_| RequestError::UnknownToken)?),
    };
    let principal = state.authenticator().authenticate(authorization)?;
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
pub(crate) async fn execute_command(
    state: &AppState,
    metadata: &MetadataMap,
    id: String,
    command: fn(UserId) -> userstate::UserCommand,
) -> Result<userstate::Details, Status> {
    let run = async {
        let caller = caller(state, metadata)?;
        let id = user_id(id)?;
        state
            .service()
            .execute(&caller.principal, &caller.meta, command(id))
            .await
    };
    run.await.map_err(|e: ApiError| status_of(&e))
}
