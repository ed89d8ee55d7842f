//! The gRPC skin's glue: metadata -> [`Caller`], answers -> response metadata, [`ApiError`] ->
//! [`tonic::Status`] (the one place), and the generic methods every state command and read of
//! both services go through.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use std::future::Future;
use std::pin::Pin;
use tonic::server::NamedService;

use prost::Message;
use tonic::metadata::MetadataValue;
use tonic::{Code, Request, Response, Status};
use tracing::{debug, error};
use userstate::{ErrorKind, Principal, UserId, UserView};

use super::convert::ProtoForm;
use super::pb::google::rpc::Status as RpcStatus;
use super::pb::zitadel::v1::ErrorDetail;
use crate::caller::{authenticate, header_text, Caller};
use crate::http::{AppState, REQUEST_ID_HEADER};
use crate::operations::{self, StateCommand};
use crate::status::ApiError;

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

/// The principal [`Authenticate`] found, kept in the request's extensions for the method.
/// Connect puts it there too when it authenticated the call before transcoding it (a client
/// cannot set an extension).
#[derive(Clone)]
pub(crate) struct Authenticated(pub(crate) Arc<Principal>);

/// Authenticates a gRPC call from its headers (metadata) before the message is decoded: it
/// wraps a generated service, so a missing or bad token is Unauthenticated (16) whatever the
/// body holds, in every encoding (protobuf or JSON, gRPC or gRPC-web). The server's
/// [`Authenticator`](crate::auth::Authenticator) may be asynchronous (a JWKS refresh, an
/// embedder's remote check). Each method then authorises its operation as before.
#[derive(Clone)]
pub(crate) struct Authenticate<S> {
    state: AppState,
    inner: S,
}

impl<S> Authenticate<S> {
    /// `inner` behind authentication on the server's state.
    pub(crate) fn new(state: AppState, inner: S) -> Self {
        Self { state, inner }
    }
}

impl<S: NamedService> NamedService for Authenticate<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> tower::Service<axum::http::Request<tonic::body::Body>> for Authenticate<S>
where
    S: tower::Service<
            axum::http::Request<tonic::body::Body>,
            Response = axum::http::Response<tonic::body::Body>,
            Error = Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = axum::http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: axum::http::Request<tonic::body::Body>) -> Self::Future {
        // The clone is ready (tower's usual swap): `self.inner` was polled ready.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let state = self.state.clone();
        Box::pin(async move {
            if request.extensions().get::<Authenticated>().is_none() {
                match authenticate(&state, request.headers(), request.extensions()).await {
                    Ok(principal) => {
                        request.extensions_mut().insert(Authenticated(principal));
                    }
                    Err(e) => return Ok(status_of(&e).into_http()),
                }
            }
            inner.call(request).await
        })
    }
}

/// The caller of `request` ([`Caller::from_headers`] on its metadata): the principal
/// [`Authenticate`] found (authenticated here when it did not run), and `x-request-id` as the
/// correlation id (generated when absent).
pub(crate) async fn caller<T>(state: &AppState, request: &Request<T>) -> Result<Caller, ApiError> {
    let metadata = request.metadata();
    let principal = match request.extensions().get::<Authenticated>() {
        Some(Authenticated(principal)) => principal.clone(),
        None => {
            let headers = metadata.clone().into_headers();
            authenticate(state, &headers, request.extensions()).await?
        }
    };
    let correlation_id = header_text(metadata, REQUEST_ID_HEADER)
        .ok()
        .flatten()
        .filter(|t| t.bytes().all(|b| b.is_ascii_graphic()))
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    Caller::from_headers(metadata, principal, Some(correlation_id))
}

/// An answer with the position metadata.
pub(crate) fn with_position<T>(message: T, position: u64) -> Response<T> {
    let mut response = Response::new(message);
    response
        .metadata_mut()
        .insert(POSITION_METADATA, MetadataValue::from(position));
    response
}

/// A request message that names one user (`user_id = 1` in every version).
pub(crate) trait UserIdRequest: Send + 'static {
    /// The raw user id.
    fn into_user_id(self) -> String;
}

/// The answer of a state command: `details = 1` and nothing else.
pub(crate) trait DetailsAnswer<D>: Send + 'static {
    /// The answer carrying `details`.
    fn of(details: D) -> Self;
}

/// The `UserService` impl of one API version's service: the user-id requests and
/// details-only answers of its messages, its state commands through [`state_command`] (one
/// line each, written here once for both versions), and `$other`, the methods that differ.
/// Names (`UserService`, the messages) resolve where it is invoked, next to the version's
/// generated module.
macro_rules! user_service {
    ($service:ty, $version:ty, $details:ty, { $($other:tt)* }) => {
        $crate::grpc::metadata::user_service!(@messages $details;
            DeactivateUserRequest => DeactivateUserResponse,
            ReactivateUserRequest => ReactivateUserResponse,
            LockUserRequest => LockUserResponse,
            UnlockUserRequest => UnlockUserResponse,
            DeleteUserRequest => DeleteUserResponse,
        );

        impl $crate::grpc::metadata::UserIdRequest for GetUserByIdRequest {
            fn into_user_id(self) -> String {
                self.user_id
            }
        }

        $crate::grpc::metadata::user_service!(@impl $service, $version, { $($other)* };
            deactivate_user(DeactivateUserRequest => DeactivateUserResponse) Deactivate,
            reactivate_user(ReactivateUserRequest => ReactivateUserResponse) Reactivate,
            lock_user(LockUserRequest => LockUserResponse) Lock,
            unlock_user(UnlockUserRequest => UnlockUserResponse) Unlock,
            delete_user(DeleteUserRequest => DeleteUserResponse) Remove,
        );
    };
    (@impl $service:ty, $version:ty, { $($other:tt)* };
     $($method:ident($request:ident => $answer:ident) $command:ident),+ $(,)?) => {
        #[tonic::async_trait]
        impl UserService for $service {
            $($other)*

            $(
                async fn $method(&self, request: tonic::Request<$request>)
                    -> Result<tonic::Response<$answer>, tonic::Status> {
                    $crate::grpc::metadata::state_command::<$version, _, _>(&self.state, request,
                        $crate::operations::StateCommand::$command).await
                }
            )+
        }
    };
    (@messages $details:ty; $($request:ident => $answer:ident),+ $(,)?) => {
        $(
            impl $crate::grpc::metadata::UserIdRequest for $request {
                fn into_user_id(self) -> String {
                    self.user_id
                }
            }
            impl $crate::grpc::metadata::DetailsAnswer<$details> for $answer {
                fn of(details: $details) -> Self {
                    Self { details: Some(details) }
                }
            }
        )+
    };
}
pub(crate) use user_service;

/// Every state command of both gRPC services: authenticate from the metadata, validate the
/// id, run the operation, answer `details` in `A`'s protobuf form with the position metadata.
pub(crate) async fn state_command<A, Req, Res>(
    state: &AppState,
    request: Request<Req>,
    command: StateCommand,
) -> Result<Response<Res>, Status>
where
    A: ProtoForm,
    Req: UserIdRequest,
    Res: DetailsAnswer<A::Details>,
{
    let run = async {
        let caller = caller(state, &request).await?;
        let id = UserId::new(request.into_inner().into_user_id())?;
        command.run(state.service(), &caller, id).await
    };
    let details = run.await.map_err(|e: ApiError| status_of(&e))?;
    Ok(with_position(
        Res::of(A::details(&details)),
        details.position,
    ))
}

/// The read of both gRPC services: the caller's view of the user `request` names.
pub(crate) async fn read_user<Req: UserIdRequest>(
    state: &AppState,
    request: Request<Req>,
) -> Result<UserView, ApiError> {
    let caller = caller(state, &request).await?;
    let id = UserId::new(request.into_inner().into_user_id())?;
    operations::get_user(state.service(), &caller, &id).await
}
