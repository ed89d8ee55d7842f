//! `userstate.lockout.v1.LockoutService` over gRPC (userstate's own service; ZITADEL has no such
//! RPCs): the identity backend's authentication reports, a skin over
//! [`operations::report_authentication`] as REST's `POST /v2/users/{userId}/authentication/…`.

use tonic::{Request, Response, Status};
use userstate::{AuthMethod, DomainError, UserId};

use super::convert::details_v2;
use super::metadata::{caller, status_of, with_position};
use super::pb::userstate::lockout::v1::lockout_service_server::LockoutService;
use super::pb::userstate::lockout::v1::*;
use super::pb::zitadel::object::v2::Details;
use crate::http::AppState;
use crate::operations;
use crate::status::ApiError;

/// The lockout service.
pub struct Lockout {
    state: AppState,
}

impl Lockout {
    /// The service on the server's state.
    pub fn new(state: AppState) -> Self {
        Self { state }
    }

    /// Records the outcome (`failed` or not) of `user`'s check by `method` (the raw enum value).
    async fn report<T>(
        &self,
        request: Request<T>,
        user: impl FnOnce(&T) -> (String, i32),
        failed: bool,
    ) -> Result<(Details, u64), ApiError> {
        let caller = caller(&self.state, &request).await?;
        let (user, method) = user(request.get_ref());
        let method = auth_method(method)?;
        let id = UserId::new(user)?;
        let details =
            operations::report_authentication(self.state.service(), &caller, id, method, failed)
                .await?;
        Ok((details_v2(&details), details.position))
    }
}

/// The engine's method of an `AuthenticationMethod` value (unspecified: password); an unknown
/// value is an InvalidArgument.
fn auth_method(value: i32) -> Result<AuthMethod, ApiError> {
    match AuthenticationMethod::try_from(value) {
        Ok(AuthenticationMethod::Unspecified | AuthenticationMethod::Password) => {
            Ok(AuthMethod::Password)
        }
        Ok(AuthenticationMethod::Otp) => Ok(AuthMethod::Otp),
        Err(_) => Err(DomainError::InvalidArgument {
            field: "method",
            reason: format!(
                "is {value}, expected AUTHENTICATION_METHOD_PASSWORD or AUTHENTICATION_METHOD_OTP"
            ),
        }
        .into()),
    }
}

#[tonic::async_trait]
impl LockoutService for Lockout {
    async fn report_authentication_failed(
        &self,
        request: Request<ReportAuthenticationFailedRequest>,
    ) -> Result<Response<ReportAuthenticationFailedResponse>, Status> {
        let (details, position) = self
            .report(request, |r| (r.user_id.clone(), r.method), true)
            .await
            .map_err(|e| status_of(&e))?;
        Ok(with_position(
            ReportAuthenticationFailedResponse {
                details: Some(details),
            },
            position,
        ))
    }

    async fn report_authentication_succeeded(
        &self,
        request: Request<ReportAuthenticationSucceededRequest>,
    ) -> Result<Response<ReportAuthenticationSucceededResponse>, Status> {
        let (details, position) = self
            .report(request, |r| (r.user_id.clone(), r.method), false)
            .await
            .map_err(|e| status_of(&e))?;
        Ok(with_position(
            ReportAuthenticationSucceededResponse {
                details: Some(details),
            },
            position,
        ))
    }
}
