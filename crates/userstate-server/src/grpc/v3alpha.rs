//! `zitadel.user.v3alpha.UserService` (seed 003's service) over gRPC: a skin over the operation
//! table ([`crate::operations`]), as v2 is; only the read's answer differs.

use tonic::{Request, Response, Status};

use super::convert::user_v3;
use super::metadata::{read_user, status_of, user_service, with_position};
use super::pb::zitadel::object::v2beta::Details;
use super::pb::zitadel::user::v3alpha::user_service_server::UserService;
use super::pb::zitadel::user::v3alpha::*;
use crate::http::AppState;
use crate::operations::V3Alpha;
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

    async fn get(
        &self,
        request: Request<GetUserByIdRequest>,
    ) -> Result<Response<GetUserByIdResponse>, ApiError> {
        let view = read_user(&self.state, request).await?;
        Ok(with_position(
            GetUserByIdResponse {
                user: Some(user_v3(&view)),
            },
            view.position,
        ))
    }
}

user_service!(UsersV3Alpha, V3Alpha, Details, {
    async fn get_user_by_id(
        &self,
        request: Request<GetUserByIdRequest>,
    ) -> Result<Response<GetUserByIdResponse>, Status> {
        self.get(request).await.map_err(|e| status_of(&e))
    }
});
