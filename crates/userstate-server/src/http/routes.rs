//! The REST skin over the operation table ([`operations`]): each handler authenticates (the
//! [`Caller`] extractor runs first, so a missing token is 401 whatever else is wrong), parses,
//! runs the operation and formats the v2 or v3alpha answer. One generic handler serves every
//! state command ([`state_command`]) and one every read; the named handlers exist for the
//! OpenAPI annotations (utoipa needs one function per documented path). The lockout routes
//! (authentication reports, the lockout policy) are [`lockout`]'s.

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::http::{StatusCode, Uri};
use axum::response::Response;
use axum::routing::{on, MethodFilter, MethodRouter};
use chrono::{DateTime, Utc};
use userstate::{AsOf, DomainError, OrgId, UserId, LIST_DEFAULT_LIMIT, LIST_MAX_LIMIT};

use super::extract::{CommandBody, JsonBody, UserIdPath};
use super::response::with_position;
use super::AppState;
use crate::caller::Caller;
use crate::grpc::convert::list_request;
use crate::grpc::pb::zitadel::user::v2 as pb;
use crate::operations::{self, Api, ApiVersion, Kind, Route, StateCommand, V3Alpha, Verb, V2};
use crate::service::NewHumanUser;
use crate::status::{ApiError, RequestError};
use crate::wire::{
    AddHumanUserRequest, AddHumanUserResponse, DetailsResponseV2, DetailsResponseV3, DetailsV2,
    DetailsV3, ErrorBody, EventJson, GetUserResponse, HistoryResponse, ListUsersRequest,
    ListUsersResponse, LockUserRequest, StateJson, StateResponse,
};

pub mod lockout;

use lockout::{
    authentication_failed, authentication_succeeded, get_lockout_policy, set_lockout_policy,
};

/// The handler of a route of the operation table ([`operations::OPERATIONS`]).
pub(super) fn handler(kind: Kind, api: Api, route: &Route) -> MethodRouter<AppState> {
    use StateCommand::*;
    let filter = match route.verb {
        Verb::Get => MethodFilter::GET,
        Verb::Post => MethodFilter::POST,
        Verb::Delete => MethodFilter::DELETE,
        Verb::Put => MethodFilter::PUT,
    };
    match (kind, api) {
        (Kind::AddHumanUser, _) => on(filter, add_human_user),
        (Kind::GetUser, Api::V2) => on(filter, get_user_v2),
        (Kind::GetUser, Api::V3Alpha) => on(filter, get_user_v3),
        (Kind::ListUsers, _) => on(filter, list_users),
        (Kind::History, _) => on(filter, user_history),
        (Kind::StateAsOf, _) => on(filter, user_state),
        (Kind::State(Erase), _) => on(filter, erase_user_v2),
        (Kind::State(Deactivate), Api::V2) => on(filter, deactivate_user_v2),
        (Kind::State(Reactivate), Api::V2) => on(filter, reactivate_user_v2),
        (Kind::State(Lock), Api::V2) => on(filter, lock_user_v2),
        (Kind::State(Unlock), Api::V2) => on(filter, unlock_user_v2),
        (Kind::State(Remove), Api::V2) => on(filter, remove_user_v2),
        (Kind::State(Deactivate), Api::V3Alpha) => on(filter, deactivate_user_v3),
        (Kind::State(Reactivate), Api::V3Alpha) => on(filter, reactivate_user_v3),
        (Kind::State(Lock), Api::V3Alpha) => on(filter, lock_user_v3),
        (Kind::State(Unlock), Api::V3Alpha) => on(filter, unlock_user_v3),
        (Kind::State(Remove), Api::V3Alpha) => on(filter, remove_user_v3),
        (Kind::AuthFailed, _) => on(filter, authentication_failed),
        (Kind::AuthSucceeded, _) => on(filter, authentication_succeeded),
        (Kind::GetLockoutPolicy, _) => on(filter, get_lockout_policy),
        (Kind::SetLockoutPolicy, _) => on(filter, set_lockout_policy),
    }
}

/// Every state command of every version: run it, answer 200 with `A`'s details form.
async fn state_command<A: ApiVersion>(
    state: &AppState,
    caller: &Caller,
    id: UserId,
    command: StateCommand,
    body: CommandBody,
) -> Result<Response, ApiError> {
    // `LockUser` may carry `{"duration": "3600s"}` (SPEC.md "Lockout policy and timed locks").
    let details = match (command, body.0.get("duration")) {
        (StateCommand::Lock, Some(duration)) => {
            let duration = operations::lock_duration(duration)?;
            operations::lock_for(state.service(), caller, id, duration).await?
        }
        _ => command.run(state.service(), caller, id).await?,
    };
    Ok(with_position(
        StatusCode::OK,
        A::json_command_answer(&details),
        details.position,
    ))
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
    let (user_id, details) = operations::add_human_user(state.service(), &caller, new).await?;
    Ok(with_position(
        StatusCode::CREATED,
        AddHumanUserResponse {
            user_id: user_id.to_string(),
            details: DetailsV2::from(&details),
        },
        details.position,
    ))
}

/// Every read of every version: answer 200 with `A`'s details form.
async fn get_user<A: ApiVersion>(
    state: &AppState,
    caller: &Caller,
    id: &UserId,
) -> Result<Response, ApiError> {
    let view = operations::get_user(state.service(), caller, id).await?;
    Ok(with_position(
        StatusCode::OK,
        GetUserResponse::<A::JsonDetails>::of(&view),
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
    get_user::<V2>(&state, &caller, &id).await
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
    get_user::<V3Alpha>(&state, &caller, &id).await
}

/// List the users the caller may read (ZITADEL's `ListUsers`; SPEC.md "Listing users").
///
/// Users of organisations the token is not granted are left out (not refused) and not counted
/// in `totalResult`; removed users are never listed. Waits for the caller's own writes and
/// `x-userstate-min-position` as a GET does.
#[utoipa::path(post, path = "/v2/users", tag = "v2",
    request_body(content = Option<ListUsersRequest>, content_type = "application/json",
        description = "ZITADEL's ListUsersRequest (an empty body lists the first 100 by creation date)"),
    params(("x-userstate-min-position" = Option<String>, Header, description = "Wait until the read model reached this position")),
    responses(
        (status = 200, description = "A page of users", body = ListUsersResponse,
            headers(("x-userstate-position" = String, description = "The read model's position"))),
        (status = "default", description = "Error (google.rpc.Status)", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list_users(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<serde_json::Value>,
) -> Result<Response, ApiError> {
    let body = body.unwrap_or_else(|| serde_json::json!({}));
    let path = Api::V2.rpc_path("ListUsers");
    let request: pb::ListUsersRequest = crate::grpc::json::request_from_json(&path, body)?;
    let column = pb::UserFieldName::try_from(request.sorting_column)
        .map(|c| c.as_str_name())
        .unwrap_or("USER_FIELD_NAME_UNSPECIFIED");
    let list = operations::list_users(state.service(), &caller, &list_request(request)?).await?;
    Ok(with_position(
        StatusCode::OK,
        ListUsersResponse::of(&list, column),
        list.position,
    ))
}

/// The query parameters of `uri`; a malformed query string is InvalidArgument.
fn query_params(uri: &Uri) -> Result<HashMap<String, String>, ApiError> {
    Query::<HashMap<String, String>>::try_from_uri(uri)
        .map(|Query(params)| params)
        .map_err(|e| RequestError::InvalidPath(e.body_text()).into())
}

/// Parameter `name` as a number, if present.
fn number_param(
    params: &HashMap<String, String>,
    name: &'static str,
) -> Result<Option<u64>, ApiError> {
    params
        .get(name)
        .map(|v| {
            v.parse::<u64>().map_err(|_| {
                ApiError::from(DomainError::InvalidArgument {
                    field: name,
                    reason: format!("{v:?} is not a non-negative integer"),
                })
            })
        })
        .transpose()
}

/// A user's history, oldest first (ours; SPEC.md "Audit"). Needs `user.read`; a removed user's
/// history stays readable. Read from the store, so always current.
#[utoipa::path(get, path = "/v2/users/{userId}/history", tag = "v2",
    params(("userId" = String, Path, description = "The user's id"),
        ("afterSequence" = Option<String>, Query, description = "Only events after this sequence (default 0)"),
        ("limit" = Option<u32>, Query, description = "At most this many events (default 100, at most 1000)")),
    responses(
        (status = 200, description = "The events and the user's state now", body = HistoryResponse),
        (status = "default", description = "Error (google.rpc.Status)", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn user_history(
    State(state): State<AppState>,
    caller: Caller,
    UserIdPath(id): UserIdPath,
    uri: Uri,
) -> Result<Response, ApiError> {
    let params = query_params(&uri)?;
    let after = number_param(&params, "afterSequence")?.unwrap_or(0);
    let limit = match number_param(&params, "limit")? {
        None | Some(0) => u64::from(LIST_DEFAULT_LIMIT),
        Some(n) if n <= u64::from(LIST_MAX_LIMIT) => n,
        Some(n) => {
            return Err(DomainError::InvalidArgument {
                field: "limit",
                reason: format!("is {n}, at most {LIST_MAX_LIMIT} is allowed"),
            }
            .into())
        }
    };
    let (events, now) =
        operations::history(state.service(), &caller, &id, after, limit as usize).await?;
    let answer = HistoryResponse {
        events: events.iter().map(EventJson::from).collect(),
        state: StateJson::from(&now),
    };
    Ok(with_position(StatusCode::OK, answer, now.details.position))
}

/// A user's state as of a sequence (`atSequence`) or a time (`atTime`, RFC 3339); with
/// neither, its state now (ours; SPEC.md "Audit"). Needs `user.read`; 404 when the user did
/// not exist yet then.
#[utoipa::path(get, path = "/v2/users/{userId}/state", tag = "v2",
    params(("userId" = String, Path, description = "The user's id"),
        ("atSequence" = Option<String>, Query, description = "After the event with this sequence"),
        ("atTime" = Option<String>, Query, description = "After every event created at or before this time (RFC 3339)")),
    responses(
        (status = 200, description = "The state then", body = StateResponse),
        (status = "default", description = "Error (google.rpc.Status)", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn user_state(
    State(state): State<AppState>,
    caller: Caller,
    UserIdPath(id): UserIdPath,
    uri: Uri,
) -> Result<Response, ApiError> {
    let params = query_params(&uri)?;
    let sequence = number_param(&params, "atSequence")?;
    let time = params
        .get("atTime")
        .map(|t| {
            DateTime::parse_from_rfc3339(t)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|e| DomainError::InvalidArgument {
                    field: "atTime",
                    reason: format!("{t:?} is not an RFC 3339 time: {e}"),
                })
        })
        .transpose()?;
    let at = match (sequence, time) {
        (Some(_), Some(_)) => {
            return Err(DomainError::InvalidArgument {
                field: "atSequence",
                reason: "and atTime cannot both be given".to_owned(),
            }
            .into())
        }
        (Some(n), None) => AsOf::Sequence(n),
        (None, Some(t)) => AsOf::Time(t),
        (None, None) => AsOf::Sequence(u64::MAX),
    };
    let then = operations::state_as_of(state.service(), &caller, &id, at).await?;
    let answer = StateResponse {
        user_id: id.to_string(),
        state: StateJson::from(&then),
    };
    Ok(with_position(StatusCode::OK, answer, then.details.position))
}

macro_rules! command_route {
    ($summary:tt, $name:ident, $method:ident, $path:tt, $tag:tt, $variant:ident, $answer:ident,
     $version:ty) => {
        command_route!($summary, $name, $method, $path, $tag, $variant, $answer, $version,
            crate::wire::EmptyRequest, "An empty object, or no body");
    };
    ($summary:tt, $name:ident, $method:ident, $path:tt, $tag:tt, $variant:ident, $answer:ident,
     $version:ty, $body:ty, $body_doc:tt) => {
        #[doc = $summary]
        #[utoipa::path($method, path = $path, tag = $tag,
            params(("userId" = String, Path, description = "The user's id"),
                ("Idempotency-Key" = Option<String>, Header, description = "Retry key: a repeated request answers the first answer")),
            request_body(content = Option<$body>, content_type = "application/json",
                description = $body_doc),
            responses(
                (status = 200, description = "Done", body = $answer,
                    headers(("x-userstate-position" = String, description = "Global position of the last event"))),
                (status = "default", description = "Error (google.rpc.Status)", body = ErrorBody)),
            security(("bearer" = [])))]
        pub async fn $name(
            State(state): State<AppState>,
            caller: Caller,
            UserIdPath(id): UserIdPath,
            body: CommandBody,
        ) -> Result<Response, ApiError> {
            state_command::<$version>(&state, &caller, id, StateCommand::$variant, body).await
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
    V2
);
command_route!(
    "Reactivate a deactivated user (inactive -> active).",
    reactivate_user_v2,
    post,
    "/v2/users/{userId}/reactivate",
    "v2",
    Reactivate,
    DetailsResponseV2,
    V2
);
command_route!(
    "Lock a user (active or initial -> locked), with a duration until the service unlocks it by itself (ours).",
    lock_user_v2,
    post,
    "/v2/users/{userId}/lock",
    "v2",
    Lock,
    DetailsResponseV2,
    V2,
    LockUserRequest,
    "No body, an empty object, or `{\"duration\": \"3600s\"}` (ours: a timed lock)"
);
command_route!(
    "Unlock a locked user (locked -> active).",
    unlock_user_v2,
    post,
    "/v2/users/{userId}/unlock",
    "v2",
    Unlock,
    DetailsResponseV2,
    V2
);
command_route!(
    "Erase a removed user's personal data (ours; needs user.delete): its key is destroyed, \
     the lifecycle history stays, username, profile and email read as erased.",
    erase_user_v2,
    post,
    "/v2/users/{userId}/erase",
    "v2",
    Erase,
    DetailsResponseV2,
    V2
);
command_route!(
    "Remove a user (terminal; needs user.delete).",
    remove_user_v2,
    delete,
    "/v2/users/{userId}",
    "v2",
    Remove,
    DetailsResponseV2,
    V2
);
command_route!(
    "Deactivate a user (active or locked -> inactive).",
    deactivate_user_v3,
    post,
    "/v3alpha/users/{userId}/deactivate",
    "v3alpha",
    Deactivate,
    DetailsResponseV3,
    V3Alpha
);
command_route!(
    "Reactivate a deactivated user (inactive -> active). `POST /v3alpha/users/{userId}/activate` is an alias.",
    reactivate_user_v3,
    post,
    "/v3alpha/users/{userId}/reactivate",
    "v3alpha",
    Reactivate,
    DetailsResponseV3,
    V3Alpha
);
command_route!(
    "Lock a user (active or initial -> locked), with a duration until the service unlocks it by itself (ours).",
    lock_user_v3,
    post,
    "/v3alpha/users/{userId}/lock",
    "v3alpha",
    Lock,
    DetailsResponseV3,
    V3Alpha,
    LockUserRequest,
    "No body, an empty object, or `{\"duration\": \"3600s\"}` (ours: a timed lock)"
);
command_route!(
    "Unlock a locked user (locked -> active).",
    unlock_user_v3,
    post,
    "/v3alpha/users/{userId}/unlock",
    "v3alpha",
    Unlock,
    DetailsResponseV3,
    V3Alpha
);
command_route!(
    "Remove a user (terminal; needs user.delete).",
    remove_user_v3,
    delete,
    "/v3alpha/users/{userId}",
    "v3alpha",
    Remove,
    DetailsResponseV3,
    V3Alpha
);
