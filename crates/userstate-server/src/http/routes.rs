//! The user routes of SPEC.md. Each handler authenticates (the [`Caller`] extractor runs
//! first, so a missing token is 401 whatever else is wrong), parses, calls
//! [`UserService`](crate::service::UserService) and formats the v2 or v3alpha answer.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use userstate::{OrgId, UserCommand, UserId};

use super::extract::{Caller, CommandBody, JsonBody, UserIdPath};
use super::response::with_position;
use super::AppState;
use crate::service::NewHumanUser;
use crate::status::{ApiError, RequestError};
use crate::wire::{
    AddHumanUserRequest, AddHumanUserResponse, DetailsResponseV2, DetailsResponseV3, DetailsV2,
    DetailsV3, ErrorBody, GetUserResponse,
};

/// Which API version formats the answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Version {
    V2,
    V3Alpha,
}

async fn run_command(
    state: &AppState,
    caller: &Caller,
    command: UserCommand,
    version: Version,
) -> Result<Response, ApiError> {
    let details = state
        .service()
        .execute(&caller.principal, &caller.meta, command)
        .await?;
    Ok(match version {
        Version::V2 => with_position(
            StatusCode::OK,
            DetailsResponseV2 {
                details: DetailsV2::from(&details),
            },
            details.position,
        ),
        Version::V3Alpha => with_position(
            StatusCode::OK,
            DetailsResponseV3 {
                details: DetailsV3::from(&details),
            },
            details.position,
        ),
    })
}

/// Add a human user (201).
///
/// Without `userId` one is generated; with an `Idempotency-Key` and no `userId` it is derived
/// from the key, so a retried add answers the first answer.
#[utoipa::path(post, path = "/v2/users/human", tag = "v2",
    request_body(content = AddHumanUserRequest, content_type = "application/json"),
    params(("Idempotency-Key" = Option<String>, Header, description = "Retry key: a repeated request answers the first answer")),
    responses(
        (status = 201, description = "User added", body = AddHumanUserResponse,
            headers(("x-userstate-position" = String, description = "Global position of the last event"))),
        (status = "default", description = "Error (google.rpc.Status)", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn add_human_user(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<AddHumanUserRequest>,
) -> Result<Response, ApiError> {
    let body = body.ok_or(RequestError::MissingBody)?;
    let org = body
        .organization
        .and_then(|o| o.org_id)
        .ok_or(RequestError::MissingField("organization.orgId"))?;
    let new = NewHumanUser {
        user_id: body.user_id.map(UserId::new).transpose()?,
        username: body.username,
        organization: OrgId::new(org)?,
        profile: body.profile.map(Into::into),
        email: body.email.map(Into::into),
        initial: body.initial.unwrap_or(false),
    };
    let (user_id, details) = state
        .service()
        .add_human_user(&caller.principal, &caller.meta, new)
        .await?;
    Ok(with_position(
        StatusCode::CREATED,
        AddHumanUserResponse {
            user_id: user_id.to_string(),
            details: DetailsV2::from(&details),
        },
        details.position,
    ))
}

async fn get_user<D>(state: &AppState, caller: &Caller, id: &UserId) -> Result<Response, ApiError>
where
    D: for<'a> From<&'a userstate::Details> + serde::Serialize,
{
    let view = state
        .service()
        .get_user(&caller.principal, &caller.meta, id)
        .await?;
    Ok(with_position(
        StatusCode::OK,
        GetUserResponse::<D>::of(&view),
        view.position,
    ))
}

/// Get a user by id from the read model (read-form details).
#[utoipa::path(get, path = "/v2/users/{userId}", tag = "v2",
    params(("userId" = String, Path, description = "The user's id"),
        ("x-userstate-min-position" = Option<String>, Header, description = "Wait until the read model reached this position")),
    responses(
        (status = 200, description = "The user", body = GetUserResponse<DetailsV2>),
        (status = "default", description = "Error (google.rpc.Status)", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn get_user_v2(
    State(state): State<AppState>,
    caller: Caller,
    UserIdPath(id): UserIdPath,
) -> Result<Response, ApiError> {
    get_user::<DetailsV2>(&state, &caller, &id).await
}

/// Get a user by id from the read model (read-form details, no `creationDate`).
#[utoipa::path(get, path = "/v3alpha/users/{userId}", tag = "v3alpha",
    params(("userId" = String, Path, description = "The user's id"),
        ("x-userstate-min-position" = Option<String>, Header, description = "Wait until the read model reached this position")),
    responses(
        (status = 200, description = "The user", body = GetUserResponse<DetailsV3>),
        (status = "default", description = "Error (google.rpc.Status)", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn get_user_v3(
    State(state): State<AppState>,
    caller: Caller,
    UserIdPath(id): UserIdPath,
) -> Result<Response, ApiError> {
    get_user::<DetailsV3>(&state, &caller, &id).await
}

macro_rules! command_route {
    ($summary:tt, $name:ident, $method:ident, $path:tt, $tag:tt, $variant:ident, $answer:ident,
     $version:expr) => {
        #[doc = $summary]
        #[utoipa::path($method, path = $path, tag = $tag,
            params(("userId" = String, Path, description = "The user's id"),
                ("Idempotency-Key" = Option<String>, Header, description = "Retry key: a repeated request answers the first answer")),
            request_body(content = Option<crate::wire::EmptyRequest>, content_type = "application/json",
                description = "An empty object, or no body"),
            responses(
                (status = 200, description = "Done", body = $answer,
                    headers(("x-userstate-position" = String, description = "Global position of the last event"))),
                (status = "default", description = "Error (google.rpc.Status)", body = ErrorBody)),
            security(("bearer" = [])))]
        pub async fn $name(
            State(state): State<AppState>,
            caller: Caller,
            UserIdPath(id): UserIdPath,
            _body: CommandBody,
        ) -> Result<Response, ApiError> {
            run_command(&state, &caller, UserCommand::$variant(id), $version).await
        }
    };
}

command_route!(
    "Deactivate a user (active or locked -> inactive).",
    deactivate_user_v2,
    post,
    "/v2/users/{userId}/deactivate",
    "v2",
    Deactivate,
    DetailsResponseV2,
    Version::V2
);
command_route!(
    "Reactivate a deactivated user (inactive -> active).",
    reactivate_user_v2,
    post,
    "/v2/users/{userId}/reactivate",
    "v2",
    Reactivate,
    DetailsResponseV2,
    Version::V2
);
command_route!(
    "Lock a user (active or initial -> locked).",
    lock_user_v2,
    post,
    "/v2/users/{userId}/lock",
    "v2",
    Lock,
    DetailsResponseV2,
    Version::V2
);
command_route!(
    "Unlock a locked user (locked -> active).",
    unlock_user_v2,
    post,
    "/v2/users/{userId}/unlock",
    "v2",
    Unlock,
    DetailsResponseV2,
    Version::V2
);
command_route!(
    "Remove a user (terminal; needs user.delete).",
    remove_user_v2,
    delete,
    "/v2/users/{userId}",
    "v2",
    Remove,
    DetailsResponseV2,
    Version::V2
);
command_route!(
    "Deactivate a user (active or locked -> inactive).",
    deactivate_user_v3,
    post,
    "/v3alpha/users/{userId}/deactivate",
    "v3alpha",
    Deactivate,
    DetailsResponseV3,
    Version::V3Alpha
);
command_route!(
    "Reactivate a deactivated user (inactive -> active). `POST /v3alpha/users/{userId}/activate` is an alias.",
    reactivate_user_v3,
    post,
    "/v3alpha/users/{userId}/reactivate",
    "v3alpha",
    Reactivate,
    DetailsResponseV3,
    Version::V3Alpha
);
command_route!(
    "Lock a user (active or initial -> locked).",
    lock_user_v3,
    post,
    "/v3alpha/users/{userId}/lock",
    "v3alpha",
    Lock,
    DetailsResponseV3,
    Version::V3Alpha
);
command_route!(
    "Unlock a locked user (locked -> active).",
    unlock_user_v3,
    post,
    "/v3alpha/users/{userId}/unlock",
    "v3alpha",
    Unlock,
    DetailsResponseV3,
    Version::V3Alpha
);
command_route!(
    "Remove a user (terminal; needs user.delete).",
    remove_user_v3,
    delete,
    "/v3alpha/users/{userId}",
    "v3alpha",
    Remove,
    DetailsResponseV3,
    Version::V3Alpha
);
