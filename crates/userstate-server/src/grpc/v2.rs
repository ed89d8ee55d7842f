//! `zitadel.user.v2.UserService` over gRPC: a skin over the operation table
//! ([`crate::operations`]); the state commands go through the one generic
//! [`state_command`](super::metadata::state_command).

use tonic::{Request, Response, Status};
use userstate::{Email, OrgId, Profile, UserId};

use super::convert::{details_v2, list_request, list_response, user_v2};
use super::metadata::{caller, read_user, status_of, user_service, with_position};
use super::pb::zitadel::object::v2::organization::Org;
use super::pb::zitadel::object::v2::Details;
use super::pb::zitadel::user::v2::set_human_email::Verification;
use super::pb::zitadel::user::v2::user_service_server::UserService;
use super::pb::zitadel::user::v2::*;
use crate::http::AppState;
use crate::operations::{self, V2};
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

    async fn add(
        &self,
        request: Request<AddHumanUserRequest>,
    ) -> Result<Response<AddHumanUserResponse>, ApiError> {
        let caller = caller(&self.state, &request).await?;
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
            user_id: body.user_id.map(UserId::new).transpose()?,
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
        let (id, details) = operations::add_human_user(self.state.service(), &caller, new).await?;
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
        let view = read_user(&self.state, request).await?;
        Ok(with_position(
            GetUserByIdResponse {
                details: Some(details_v2(&view.details())),
                user: Some(user_v2(&view)),
            },
            view.position,
        ))
    }

    async fn list(
        &self,
        request: Request<ListUsersRequest>,
    ) -> Result<Response<ListUsersResponse>, ApiError> {
        let caller = caller(&self.state, &request).await?;
        let body = request.into_inner();
        let sorting_column = body.sorting_column;
        let list =
            operations::list_users(self.state.service(), &caller, &list_request(body)?).await?;
        Ok(with_position(
            list_response(&list, sorting_column),
            list.position,
        ))
    }
}

user_service!(UserServiceV2, V2, Details, {
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

    async fn list_users(
        &self,
        request: Request<ListUsersRequest>,
    ) -> Result<Response<ListUsersResponse>, Status> {
        self.list(request).await.map_err(|e| status_of(&e))
    }
});
