//! `zitadel.user.v2.UserService` over gRPC: the same [`UserService`](crate::UserService) calls as
//! the `/v2` HTTP routes.

use tonic::{Request, Response, Status};
use userstate::{Email, OrgId, Profile, UserCommand};

use super::convert::{details_v2, user_v2};
use super::metadata::{caller, execute_command, status_of, user_id, with_position};
use super::pb::zitadel::object::v2::organization::Org;
use super::pb::zitadel::user::v2::set_human_email::Verification;
use super::pb::zitadel::user::v2::user_service_server::UserService;
use super::pb::zitadel::user::v2::*;
use crate::http::AppState;
use crate::service::NewHumanUser;
use crate::status::{ApiError, RequestError};

/// The v2 user service.
pub struct UserServiceV2 {
    state: AppState,
}

impl UserServiceV2 {
    /// The service on the server's state.
    pub fn new(state: AppState) -> Self {
        Self { state }
    }

    /// Authenticates, runs `command` on user `id` and answers `answer(details)` with the
    /// position metadata.
    async fn run<M, T>(
        &self,
        request: &Request<M>,
        id: String,
        command: fn(userstate::UserId) -> UserCommand,
        answer: fn(Option<super::pb::zitadel::object::v2::Details>) -> T,
    ) -> Result<Response<T>, Status> {
        let details = execute_command(&self.state, request, id, command).await?;
        Ok(with_position(
            answer(Some(details_v2(&details))),
            details.position,
        ))
    }

    async fn add(
        &self,
        request: Request<AddHumanUserRequest>,
    ) -> Result<Response<AddHumanUserResponse>, ApiError> {
        let caller = caller(&self.state, &request)?;
        let body = request.into_inner();
        let org = match body.organization.and_then(|o| o.org) {
            Some(Org::OrgId(id)) => OrgId::new(id)?,
            Some(Org::OrgDomain(_)) => {
                return Err(RequestError::MissingField(
                    "organization.org_id (org_domain is not supported)",
                )
                .into())
            }
            None => return Err(RequestError::MissingField("organization.org_id").into()),
        };
        let new = NewHumanUser {
            user_id: body.user_id.map(user_id).transpose()?,
            username: body.username.unwrap_or_default(),
            organization: org,
            profile: body.profile.map(|p| Profile {
                given_name: p.given_name,
                family_name: p.family_name,
            }),
            email: body.email.map(|e| Email {
                email: e.email,
                is_verified: matches!(e.verification, Some(Verification::IsVerified(true))),
            }),
            initial: body.initial.unwrap_or(false),
        };
        let (id, details) = self
            .state
            .service()
            .add_human_user(&caller.principal, &caller.meta, new)
            .await?;
        Ok(with_position(
            AddHumanUserResponse {
                user_id: id.to_string(),
                details: Some(details_v2(&details)),
            },
            details.position,
        ))
    }

    async fn get(
        &self,
        request: Request<GetUserByIdRequest>,
    ) -> Result<Response<GetUserByIdResponse>, ApiError> {
        let caller = caller(&self.state, &request)?;
        let id = user_id(request.into_inner().user_id)?;
        let view = self
            .state
            .service()
            .get_user(&caller.principal, &caller.meta, &id)
            .await?;
        Ok(with_position(
            GetUserByIdResponse {
                details: Some(details_v2(&view.details())),
                user: Some(user_v2(&view)),
            },
            view.position,
        ))
    }
}

#[tonic::async_trait]
impl UserService for UserServiceV2 {
    async fn add_human_user(
        &self,
        request: Request<AddHumanUserRequest>,
    ) -> Result<Response<AddHumanUserResponse>, Status> {
        self.add(request).await.map_err(|e| status_of(&e))
    }

    async fn get_user_by_id(
        &self,
        request: Request<GetUserByIdRequest>,
    ) -> Result<Response<GetUserByIdResponse>, Status> {
        self.get(request).await.map_err(|e| status_of(&e))
    }

    async fn deactivate_user(
        &self,
        request: Request<DeactivateUserRequest>,
    ) -> Result<Response<DeactivateUserResponse>, Status> {
        let id = request.get_ref().user_id.clone();
        self.run(&request, id, UserCommand::Deactivate, |details| {
            DeactivateUserResponse { details }
        })
        .await
    }

    async fn reactivate_user(
        &self,
        request: Request<ReactivateUserRequest>,
    ) -> Result<Response<ReactivateUserResponse>, Status> {
        let id = request.get_ref().user_id.clone();
        self.run(&request, id, UserCommand::Reactivate, |details| {
            ReactivateUserResponse { details }
        })
        .await
    }

    async fn lock_user(
        &self,
        request: Request<LockUserRequest>,
    ) -> Result<Response<LockUserResponse>, Status> {
        let id = request.get_ref().user_id.clone();
        self.run(&request, id, UserCommand::Lock, |details| {
            LockUserResponse { details }
        })
        .await
    }

    async fn unlock_user(
        &self,
        request: Request<UnlockUserRequest>,
    ) -> Result<Response<UnlockUserResponse>, Status> {
        let id = request.get_ref().user_id.clone();
        self.run(&request, id, UserCommand::Unlock, |details| {
            UnlockUserResponse { details }
        })
        .await
    }

    async fn delete_user(
        &self,
        request: Request<DeleteUserRequest>,
    ) -> Result<Response<DeleteUserResponse>, Status> {
        let id = request.get_ref().user_id.clone();
        self.run(&request, id, UserCommand::Remove, |details| {
            DeleteUserResponse { details }
        })
        .await
    }
}
