//! The JSON bodies of SPEC.md: proto3 JSON names of ZITADEL's `zitadel.user.v2` messages,
//! 64-bit integers as strings, times as RFC 3339 UTC with milliseconds. Unknown request fields
//! are ignored, as grpc-gateway does.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use userstate::{AuditState, Details, Email, Profile, RecordedEvent, UserList, UserView};
use utoipa::ToSchema;

/// The `@type` of every error detail.
pub const ERROR_DETAIL_TYPE: &str = "type.googleapis.com/zitadel.v1.ErrorDetail";

/// A time in the wire form: `2025-03-05T21:29:22.038Z`.
pub fn timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// `details` of v2 answers (with `creationDate`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DetailsV2 {
    /// On a command: sequence of the last event appended; on a read: of the last event reduced.
    #[schema(example = "2")]
    pub sequence: String,
    /// `createdAt` of that event.
    #[schema(example = "2025-03-05T21:29:22.038Z")]
    pub change_date: String,
    /// The user's organisation.
    #[schema(example = "69629023906488334")]
    pub resource_owner: String,
    /// On a command: the same as `changeDate`; on a read: `createdAt` of the user's first event.
    #[schema(example = "2025-03-05T21:29:22.038Z")]
    pub creation_date: String,
}

impl From<&Details> for DetailsV2 {
    fn from(d: &Details) -> Self {
        let change_date = timestamp(d.change_date);
        // A command's details have both dates equal: formatted once.
        let creation_date = match d.creation_date == d.change_date {
            true => change_date.clone(),
            false => timestamp(d.creation_date),
        };
        Self {
            sequence: d.sequence.to_string(),
            change_date,
            resource_owner: d.resource_owner.to_string(),
            creation_date,
        }
    }
}

/// `details` of v3alpha answers (no `creationDate`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DetailsV3 {
    /// On a command: sequence of the last event appended; on a read: of the last event reduced.
    #[schema(example = "2")]
    pub sequence: String,
    /// `createdAt` of that event.
    #[schema(example = "2024-06-25T13:35:39.148Z")]
    pub change_date: String,
    /// The user's organisation.
    #[schema(example = "69629023906488334")]
    pub resource_owner: String,
}

impl From<&Details> for DetailsV3 {
    fn from(d: &Details) -> Self {
        Self {
            sequence: d.sequence.to_string(),
            change_date: timestamp(d.change_date),
            resource_owner: d.resource_owner.to_string(),
        }
    }
}

/// The organisation a new user belongs to.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Organization {
    /// The organisation's id (required; `orgDomain` is not supported).
    pub org_id: Option<String>,
}

/// A profile on the wire.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProfileJson {
    /// Given (first) name.
    #[serde(default)]
    pub given_name: String,
    /// Family (last) name.
    #[serde(default)]
    pub family_name: String,
}

impl From<ProfileJson> for Profile {
    fn from(p: ProfileJson) -> Self {
        Profile {
            given_name: p.given_name,
            family_name: p.family_name,
        }
    }
}

impl From<&Profile> for ProfileJson {
    fn from(p: &Profile) -> Self {
        Self {
            given_name: p.given_name.clone(),
            family_name: p.family_name.clone(),
        }
    }
}

/// An email address on the wire.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EmailJson {
    /// The address.
    #[serde(default)]
    pub email: String,
    /// Whether it was verified when given.
    #[serde(default)]
    pub is_verified: bool,
}

impl From<EmailJson> for Email {
    fn from(e: EmailJson) -> Self {
        Email {
            email: e.email,
            is_verified: e.is_verified,
        }
    }
}

impl From<&Email> for EmailJson {
    fn from(e: &Email) -> Self {
        Self {
            email: e.email.clone(),
            is_verified: e.is_verified,
        }
    }
}

/// Body of `POST /v2/users/human`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AddHumanUserRequest {
    /// The new user's id; generated (a decimal string) when absent.
    #[serde(default)]
    pub user_id: Option<String>,
    /// Login name, unique per instance.
    #[serde(default)]
    pub username: String,
    /// The owning organisation.
    #[serde(default)]
    pub organization: Option<Organization>,
    /// Optional profile.
    #[serde(default)]
    pub profile: Option<ProfileJson>,
    /// Optional email.
    #[serde(default)]
    pub email: Option<EmailJson>,
    /// (ours) Start in `USER_STATE_INITIAL` instead of active.
    #[serde(default)]
    pub initial: Option<bool>,
}

/// Answer of `POST /v2/users/human` (201).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AddHumanUserResponse {
    /// The user's id.
    pub user_id: String,
    /// Manipulation details.
    pub details: DetailsV2,
}

/// Answer of a v2 command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DetailsResponseV2 {
    /// Manipulation details.
    pub details: DetailsV2,
}

/// Answer of a v3alpha command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DetailsResponseV3 {
    /// Manipulation details (no `creationDate`).
    pub details: DetailsV3,
}

/// A human user's data.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct HumanJson {
    /// Profile, when given on add.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile: Option<ProfileJson>,
    /// Email, when given on add.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<EmailJson>,
}

/// A user as read from the read model; `D` is [`DetailsV2`] or [`DetailsV3`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserJson<D> {
    /// The user's id.
    pub user_id: String,
    /// Read details.
    pub details: D,
    /// `USER_STATE_INITIAL`, `_ACTIVE`, `_INACTIVE` or `_LOCKED`.
    #[schema(example = "USER_STATE_ACTIVE")]
    pub state: String,
    /// Login name.
    pub username: String,
    /// Human data.
    pub human: HumanJson,
    /// Failed password and OTP checks in a row (ours; SPEC.md "Lockout policy and timed locks").
    #[serde(default)]
    #[schema(example = 0)]
    pub failed_attempts: u32,
    /// When the lock ends by itself (ours; only while locked with a duration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "2025-03-05T21:44:22.038Z")]
    pub locked_until: Option<String>,
}

/// Answer of `GET /v2/users/{userId}` and `GET /v3alpha/users/{userId}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct GetUserResponse<D> {
    /// Read details.
    pub details: D,
    /// The user.
    pub user: UserJson<D>,
}

impl<D: for<'a> From<&'a Details>> UserJson<D> {
    /// One user of the read model.
    pub fn of(view: &UserView) -> Self {
        UserJson {
            user_id: view.user_id.to_string(),
            details: D::from(&view.details()),
            state: view.state.wire_name().to_owned(),
            username: view.username.clone(),
            human: HumanJson {
                profile: view.profile.as_ref().map(ProfileJson::from),
                email: view.email.as_ref().map(EmailJson::from),
            },
            failed_attempts: view.failed_attempts(),
            locked_until: view.locked_until.map(timestamp),
        }
    }
}

impl<D: for<'a> From<&'a Details>> GetUserResponse<D> {
    /// The answer for one user of the read model.
    pub fn of(view: &UserView) -> Self {
        Self {
            details: D::from(&view.details()),
            user: UserJson::of(view),
        }
    }
}

/// Paging and direction of `POST /v2/users` (`zitadel.object.v2.ListQuery`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ListQueryJson {
    /// How many matches to skip (a 64-bit integer: a string or a number).
    #[schema(value_type = String, example = "0")]
    pub offset: Option<serde_json::Value>,
    /// The page size: 0 or absent for 100, at most 1000.
    #[schema(example = 100)]
    pub limit: Option<u32>,
    /// Ascending (default false: descending).
    pub asc: Option<bool>,
}

/// Body of `POST /v2/users`: ZITADEL's `ListUsersRequest` in its proto3 JSON form (parsed as
/// that message: enum names or numbers, unknown fields ignored).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ListUsersRequest {
    /// Paging and direction.
    pub query: Option<ListQueryJson>,
    /// `USER_FIELD_NAME_USER_NAME`, `USER_FIELD_NAME_CREATION_DATE` (also when unspecified) or
    /// `USER_FIELD_NAME_STATE`.
    #[schema(example = "USER_FIELD_NAME_USER_NAME")]
    pub sorting_column: Option<String>,
    /// Conditions that must all hold, each one of `{"stateQuery": {"state": "USER_STATE_LOCKED"}}`,
    /// `{"organizationIdQuery": {"organizationId": "…"}}`,
    /// `{"userNameQuery": {"userName": "al", "method": "TEXT_QUERY_METHOD_STARTS_WITH_IGNORE_CASE"}}`,
    /// `{"inUserIdsQuery": {"userIds": ["…"]}}`, `{"orQuery": {"queries": […]}}`,
    /// `{"andQuery": {"queries": […]}}`, `{"notQuery": {"query": {…}}}`.
    #[schema(value_type = Vec<Object>)]
    pub queries: Option<Vec<serde_json::Value>>,
}

/// `details` of a list (`zitadel.object.v2.ListDetails`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ListDetailsJson {
    /// How many users match in all (of the organisations the caller may read).
    #[schema(example = "12")]
    pub total_result: String,
    /// The read model's position when it answered.
    #[schema(example = "456")]
    pub processed_sequence: String,
    /// `createdAt` of the last event the read model applied.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
}

/// Answer of `POST /v2/users`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ListUsersResponse {
    /// Totals and position.
    pub details: ListDetailsJson,
    /// The request's sort column.
    #[schema(example = "USER_FIELD_NAME_USER_NAME")]
    pub sorting_column: String,
    /// The page, each user as in `GET /v2/users/{userId}`.
    pub result: Vec<UserJson<DetailsV2>>,
}

impl ListUsersResponse {
    /// The answer for a page; `sorting_column` is the request's (a proto enum name).
    pub fn of(list: &UserList, sorting_column: &str) -> Self {
        Self {
            details: ListDetailsJson {
                total_result: list.total.to_string(),
                processed_sequence: list.position.to_string(),
                timestamp: list.timestamp.map(timestamp),
            },
            sorting_column: sorting_column.to_owned(),
            result: list.users.iter().map(UserJson::of).collect(),
        }
    }
}

/// One event of a user's history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventJson {
    /// Sequence in the user's stream (1, 2, …).
    #[schema(example = "2")]
    pub sequence: String,
    /// Global position in the store.
    #[schema(example = "456")]
    pub position: String,
    /// Event type, e.g. `user.locked`.
    #[serde(rename = "type")]
    #[schema(example = "user.locked")]
    pub event_type: String,
    /// The commit's time.
    pub created_at: String,
    /// The principal that caused it.
    pub creator: String,
    /// The request it came from, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    /// The event's data.
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
}

impl From<&RecordedEvent> for EventJson {
    fn from(e: &RecordedEvent) -> Self {
        Self {
            sequence: e.sequence.to_string(),
            position: e.position.to_string(),
            event_type: e.event_type.clone(),
            created_at: timestamp(e.created_at),
            creator: e.metadata.creator.clone(),
            correlation_id: e.metadata.correlation_id.clone(),
            payload: e.payload.clone(),
        }
    }
}

/// A user's state at a point of its history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StateJson {
    /// `USER_STATE_…` (`USER_STATE_DELETED` once removed).
    #[schema(example = "USER_STATE_LOCKED")]
    pub state: String,
    /// Read-form details as the read model would have answered then.
    pub details: DetailsV2,
}

impl From<&AuditState> for StateJson {
    fn from(s: &AuditState) -> Self {
        Self {
            state: s.state.wire_name().to_owned(),
            details: DetailsV2::from(&s.details),
        }
    }
}

/// Answer of `GET /v2/users/{userId}/history`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct HistoryResponse {
    /// The page of events, oldest first.
    pub events: Vec<EventJson>,
    /// The user's state after its last event.
    pub state: StateJson,
}

/// Answer of `GET /v2/users/{userId}/state`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StateResponse {
    /// The user.
    pub user_id: String,
    /// Its state then.
    #[serde(flatten)]
    pub state: StateJson,
}

/// One `zitadel.v1.ErrorDetail`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// Always `type.googleapis.com/zitadel.v1.ErrorDetail`.
    #[serde(rename = "@type")]
    pub type_url: String,
    /// Stable error id, e.g. `COMMAND-olb9vb0oca`.
    pub id: String,
    /// Message key, e.g. `Errors.User.NotLocked`.
    pub message: String,
}

/// Every error's body (`google.rpc.Status` JSON form).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// gRPC code.
    #[schema(example = 9)]
    pub code: i32,
    /// Human message.
    pub message: String,
    /// Exactly one `ErrorDetail`.
    pub details: Vec<ErrorDetail>,
}

/// Body of a command route: an empty object (or no body at all); unknown fields are ignored.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct EmptyRequest {}

/// Body of `LockUser`: no body, an empty object, or a duration after which the service unlocks
/// the user by itself (ours).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LockUserRequest {
    /// A proto3 JSON duration; absent or `"0s"`: until unlocked by hand.
    #[schema(example = "3600s")]
    pub duration: Option<String>,
}

/// Body of `POST /v2/users/{userId}/authentication/failed` and `…/succeeded` (ours).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AuthenticationRequest {
    /// `password` (also when absent) or `otp`.
    #[schema(example = "password")]
    pub method: Option<String>,
}

/// A lockout policy (ours): the body of `PUT /v2/policies/lockout` (absent fields are 0, that
/// is off) and part of the answer of `GET`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LockoutPolicyJson {
    /// Failed password checks in a row that lock the user (0: never).
    #[schema(example = 3)]
    pub max_password_attempts: u32,
    /// Failed OTP checks in a row that lock the user (0: never).
    #[schema(example = 5)]
    pub max_otp_attempts: u32,
    /// How long a lock by the policy lasts (`"0s"`: until unlocked by hand).
    #[schema(example = "900s")]
    pub lock_duration: String,
    /// A failure this long after the previous one of its method counts from 1 again (`"0s"`:
    /// never).
    #[schema(example = "3600s")]
    pub failure_reset_after: String,
}

impl From<&userstate::LockoutPolicy> for LockoutPolicyJson {
    fn from(p: &userstate::LockoutPolicy) -> Self {
        use userstate::domain::format_duration;
        Self {
            max_password_attempts: p.max_password_attempts,
            max_otp_attempts: p.max_otp_attempts,
            lock_duration: format_duration(p.lock_duration),
            failure_reset_after: format_duration(p.failure_reset_after),
        }
    }
}

/// `details` of a lockout policy as read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyDetailsJson {
    /// Sequence of the policy stream's last event (`"0"` for the default).
    #[schema(example = "1")]
    pub sequence: String,
    /// When the policy was set (absent for the default).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "2025-03-05T21:29:22.038Z")]
    pub change_date: Option<String>,
    /// The organisation, or the instance for the instance's policy and the default.
    #[schema(example = "69629023906488334")]
    pub resource_owner: String,
}

/// Answer of `GET /v2/policies/lockout` (ours).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LockoutPolicyResponse {
    /// Where the policy comes from.
    pub details: PolicyDetailsJson,
    /// The policy in force.
    pub policy: LockoutPolicyJson,
    /// `organization` (its own), `instance` (the instance's) or `default` (none set: all off).
    #[schema(example = "instance")]
    pub source: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn times_have_milliseconds_and_z() {
        let t = Utc.timestamp_millis_opt(1_741_210_162_038).unwrap();
        assert_eq!(timestamp(t), "2025-03-05T21:29:22.038Z");
        let whole = Utc.timestamp_opt(1_741_210_162, 0).unwrap();
        assert_eq!(timestamp(whole), "2025-03-05T21:29:22.000Z");
    }
}
