//! The lockout routes (ours; SPEC.md "Lockout policy and timed locks"): the identity backend's
//! reports of a user's password or OTP checks, and the lockout policy of an organisation or of
//! the instance. Authenticated and answered as the parent module's routes are.

use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use userstate::{DomainError, LockoutPolicy, OrgId, PolicySource, UserId};

use super::query_params;
use crate::caller::Caller;
use crate::http::extract::{CommandBody, JsonBody, UserIdPath};
use crate::http::response::with_position;
use crate::http::AppState;
use crate::operations::{self, ApiVersion, V2};
use crate::status::{ApiError, RequestError};
use crate::wire::{
    timestamp, AuthenticationRequest, DetailsResponseV2, DetailsV2, ErrorBody, LockoutPolicyJson,
    LockoutPolicyResponse, PolicyDetailsJson,
};

/// Reports the identity backend's check of a user (ours; SPEC.md "Lockout policy and timed
/// locks"): answer 200 with the v2 `details` of the event(s) appended.
async fn report_authentication(
    state: &AppState,
    caller: &Caller,
    id: UserId,
    body: CommandBody,
    failed: bool,
) -> Result<Response, ApiError> {
    let method = operations::auth_method(body.0.get("method"))?;
    let details =
        operations::report_authentication(state.service(), caller, id, method, failed).await?;
    Ok(with_position(
        StatusCode::OK,
        V2::json_command_answer(&details),
        details.position,
    ))
}

/// The identity backend's password or OTP check of a user failed (ours). The failure that
/// reaches the lockout policy's maximum also locks the user (`lockedUntil` per the policy).
#[utoipa::path(post, path = "/v2/users/{userId}/authentication/failed", tag = "v2",
    params(("userId" = String, Path, description = "The user's id"),
        ("Idempotency-Key" = Option<String>, Header, description = "Retry key: a repeated request answers the first answer")),
    request_body(content = Option<AuthenticationRequest>, content_type = "application/json",
        description = "`{\"method\": \"password\"}` (also when absent) or `{\"method\": \"otp\"}`"),
    responses(
        (status = 200, description = "Recorded", body = DetailsResponseV2,
            headers(("x-userstate-position" = String, description = "Global position of the last event"))),
        (status = "default", description = "Error (google.rpc.Status)", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn authentication_failed(
    State(state): State<AppState>,
    caller: Caller,
    UserIdPath(id): UserIdPath,
    body: CommandBody,
) -> Result<Response, ApiError> {
    report_authentication(&state, &caller, id, body, true).await
}

/// The identity backend's password or OTP check of a user succeeded (ours): the method's
/// failures in a row are forgotten.
#[utoipa::path(post, path = "/v2/users/{userId}/authentication/succeeded", tag = "v2",
    params(("userId" = String, Path, description = "The user's id"),
        ("Idempotency-Key" = Option<String>, Header, description = "Retry key: a repeated request answers the first answer")),
    request_body(content = Option<AuthenticationRequest>, content_type = "application/json",
        description = "No body, `{\"method\": \"password\"}` (the default) or `{\"method\": \"otp\"}`"),
    responses(
        (status = 200, description = "Recorded", body = DetailsResponseV2,
            headers(("x-userstate-position" = String, description = "Global position of the last event"))),
        (status = "default", description = "Error (google.rpc.Status)", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn authentication_succeeded(
    State(state): State<AppState>,
    caller: Caller,
    UserIdPath(id): UserIdPath,
    body: CommandBody,
) -> Result<Response, ApiError> {
    report_authentication(&state, &caller, id, body, false).await
}

/// The `orgId` query parameter of a policy route, if any.
fn policy_org(uri: &Uri) -> Result<Option<OrgId>, ApiError> {
    let params = query_params(uri)?;
    Ok(params.get("orgId").cloned().map(OrgId::new).transpose()?)
}

/// The lockout policy in force for an organisation's users (`orgId`), or the instance's
/// (ours; SPEC.md "Lockout policy and timed locks"). Needs `user.read` on the organisation, or
/// instance-wide for the instance's.
#[utoipa::path(get, path = "/v2/policies/lockout", tag = "v2",
    params(("orgId" = Option<String>, Query, description = "The organisation (absent: the instance's policy)")),
    responses(
        (status = 200, description = "The policy in force", body = LockoutPolicyResponse),
        (status = "default", description = "Error (google.rpc.Status)", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn get_lockout_policy(
    State(state): State<AppState>,
    caller: Caller,
    uri: Uri,
) -> Result<Response, ApiError> {
    let org = policy_org(&uri)?;
    let view = operations::get_lockout_policy(state.service(), &caller, org.as_ref()).await?;
    let owner = match (view.source, &org) {
        (PolicySource::Organization, Some(org)) => org.to_string(),
        _ => caller.principal.instance.to_string(),
    };
    let source = match view.source {
        PolicySource::Organization => "organization",
        PolicySource::Instance => "instance",
        PolicySource::Default => "default",
    };
    let answer = LockoutPolicyResponse {
        details: PolicyDetailsJson {
            sequence: view.sequence.to_string(),
            change_date: view.change_date.map(timestamp),
            resource_owner: owner,
        },
        policy: LockoutPolicyJson::from(&view.policy),
        source: source.to_owned(),
    };
    Ok(axum::Json(answer).into_response())
}

/// Reads a policy body: counts as numbers (or decimal strings), durations as `"900s"`;
/// absent fields are 0.
fn lockout_policy_body(body: serde_json::Value) -> Result<LockoutPolicy, ApiError> {
    let serde_json::Value::Object(mut fields) = body else {
        return Err(RequestError::MalformedJson("expected a JSON object".into()).into());
    };
    for name in ["maxPasswordAttempts", "maxOtpAttempts"] {
        if let Some(serde_json::Value::String(n)) = fields.get(name) {
            let n = n.parse::<u32>().map_err(|_| DomainError::InvalidArgument {
                field: name,
                reason: format!("{n:?} is not a non-negative integer"),
            })?;
            fields.insert(name.to_owned(), n.into());
        }
    }
    serde_json::from_value(serde_json::Value::Object(fields)).map_err(|e| {
        DomainError::InvalidArgument {
            field: "policy",
            reason: e.to_string(),
        }
        .into()
    })
}

/// Sets the lockout policy of an organisation (`orgId`, overriding the instance's) or of the
/// instance (ours). Needs `user.write` on the organisation, or instance-wide for the
/// instance's. Every change is an event (`policy.lockout.set`).
#[utoipa::path(put, path = "/v2/policies/lockout", tag = "v2",
    params(("orgId" = Option<String>, Query, description = "The organisation (absent: the instance's policy)"),
        ("Idempotency-Key" = Option<String>, Header, description = "Retry key: a repeated request answers the first answer")),
    request_body(content = LockoutPolicyJson, content_type = "application/json"),
    responses(
        (status = 200, description = "Set", body = DetailsResponseV2,
            headers(("x-userstate-position" = String, description = "Global position of the event"))),
        (status = "default", description = "Error (google.rpc.Status)", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn set_lockout_policy(
    State(state): State<AppState>,
    caller: Caller,
    uri: Uri,
    JsonBody(body): JsonBody<serde_json::Value>,
) -> Result<Response, ApiError> {
    let org = policy_org(&uri)?;
    let policy = lockout_policy_body(body.ok_or(RequestError::MissingBody)?)?;
    let set =
        operations::set_lockout_policy(state.service(), &caller, org.as_ref(), policy).await?;
    let owner = match &org {
        Some(org) => org.to_string(),
        None => caller.principal.instance.to_string(),
    };
    let answer = DetailsResponseV2 {
        details: DetailsV2 {
            sequence: set.sequence.to_string(),
            change_date: timestamp(set.change_date),
            resource_owner: owner,
            creation_date: timestamp(set.change_date),
        },
    };
    Ok(with_position(StatusCode::OK, answer, set.position))
}
