//! `zitadel.resources.user.v3alpha.ZITADELUsers` over gRPC: the same
//! [`UserService`](crate::UserService) calls as the `/v3alpha` HTTP routes.

use tonic::{Request, Response, Status};
use userstate::UserCommand;

use super::convert::{details_v3, user_v3};
use super::metadata::{caller, execute_command, status_of, user_id, with_position};
use super::pb::zitadel::resources::user::v3alpha::zitadel_users_server::ZitadelUsers;
use super::pb::zitadel::resources::user::v3alpha::*;
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

    /// Authenticates, runs `command` on user `id` and answers `answer(details)` with the
    /// position metadata.
    async fn run<T>(
        &self,
        metadata: &tonic::metadata::MetadataMap,
        id: String,
        command: fn(userstate::UserId) -> UserCommand,
        answer: fn(Option<Details>) -> T,
    ) -> Result<Response<T>, Status> {
        let details = execute_command(&self.state, metadata, id, command).await?;
        Ok(with_position(
            answer(Some(details_v3(&details))),
            details.position,
        ))
    }

    async fn get(
        &self,
        request: Request<GetUserRequest>,
    ) -> Result<Response<GetUserResponse>, ApiError> {
        let caller = caller(&self.state, request.metadata())?;
        let id = user_id(request.into_inner().id)?;
        let view = self
            .state
            .service()
            .get_user(&caller.principal, &caller.meta, &id)
            .await?;
        Ok(with_position(
            GetUserResponse {
                details: Some(details_v3(&view.details())),
                user: Some(user_v3(&view)),
            },
            view.position,
        ))
    }
}

#[tonic::async_trait]
impl ZitadelUsers for UsersV3Alpha {
    async fn get_user(
        &self,
        request: Request<GetUserRequest>,
    ) -> Result<Response<GetUserResponse>, Status> {
        self.get(request).await.map_err(|e| status_of(&e))
    }

    async fn deactivate_user(
        &self,
        request: Request<DeactivateUserRequest>,
    ) -> Result<Response<DeactivateUserResponse>, Status> {
        let id = request.get_ref().id.clone();
        self.run(request.metadata(), id, UserCommand::Deactivate, |details| {
            DeactivateUserResponse { details }
        })
        .await
    }

    async fn activate_user(
        &self,
        request: Request<ActivateUserRequest>,
    ) -> Result<Response<ActivateUserResponse>, Status> {
        let id = request.get_ref().id.clone();
        self.run(request.metadata(), id, UserCommand::Reactivate, |details| {
            ActivateUserResponse { details }
        })
        .await
    }

    async fn lock_user(
        &self,
        request: Request<LockUserRequest>,
    ) -> Result<Response<LockUserResponse>, Status> {
        let id = request.get_ref().id.clone();
        self.run(request.metadata(), id, UserCommand::Lock, |details| {
            LockUserResponse { details }
        })
        .await
    }

    async fn unlock_user(
        &self,
        request: Request<UnlockUserRequest>,
    ) -> Result<Response<UnlockUserResponse>, Status> {
        let id = request.get_ref().id.clone();
        self.run(request.metadata(), id, UserCommand::Unlock, |details| {
            UnlockUserResponse { details }
        })
        .await
    }

    async fn delete_user(
        &self,
        request: Request<DeleteUserRequest>,
    ) -> Result<Response<DeleteUserResponse>, Status> {
        let id = request.get_ref().id.clone();
        self.run(request.metadata(), id, UserCommand::Remove, |details| {
            DeleteUserResponse { details }
        })
        .await
    }
}
