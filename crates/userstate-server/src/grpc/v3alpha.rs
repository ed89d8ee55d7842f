//! `zitadel.user.v3alpha.UserService` (seed 003's service) over gRPC: the same
//! [`UserService`](crate::UserService) calls as the `/v3alpha` HTTP routes.

use tonic::{Request, Response, Status};
use userstate::UserCommand;

use super::convert::{details_v3, user_v3};
use super::metadata::{caller, execute_command, status_of, user_id, with_position};
use super::pb::zitadel::object::v2beta::Details;
use super::pb::zitadel::user::v3alpha::user_service_server::UserService;
use super::pb::zitadel::user::v3alpha::*;
use crate::http::AppState;
use crate::status::ApiError;

/// The v3alpha user service.
pub struct UsersV3Alpha {
    state: AppState,
}

impl UsersV3Alpha {
    /// The service on the server's state.
    pub fn new(state: AppState) -> Self {
        Self { state }
    }

    /// Runs `command` on user `id` for `request`'s caller and answers `answer(details)` with
    /// the position metadata.
    async fn run<M, T>(
        &self,
        request: &Request<M>,
        id: String,
        command: fn(userstate::UserId) -> UserCommand,
        answer: fn(Option<Details>) -> T,
    ) -> Result<Response<T>, Status> {
        let details = execute_command(&self.state, request, id, command).await?;
        Ok(with_position(
            answer(Some(details_v3(&details))),
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
                user: Some(user_v3(&view)),
            },
            view.position,
        ))
    }
}

#[tonic::async_trait]
impl UserService for UsersV3Alpha {
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
