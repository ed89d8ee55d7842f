//! Engine answers -> protobuf messages (the proto counterparts of [`wire`](crate::wire)).

use chrono::{DateTime, Utc};
use prost_types::Timestamp;
use userstate::{
    Details, DomainError, ListRequest, SortColumn, TextMethod, UserList, UserQuery, UserState,
    UserView,
};

use crate::operations::{ApiVersion, V3Alpha, V2};

use super::pb::zitadel::object::v2 as object;
use super::pb::zitadel::object::v2beta as object_beta;
use super::pb::zitadel::user::v2 as user;
use super::pb::zitadel::user::v3alpha as v3;

/// A time as `google.protobuf.Timestamp`.
pub(crate) fn timestamp(t: DateTime<Utc>) -> Timestamp {
    Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    }
}

/// v2 `Details` (with `creation_date`).
pub(crate) fn details_v2(d: &Details) -> object::Details {
    object::Details {
        sequence: d.sequence,
        change_date: Some(timestamp(d.change_date)),
        resource_owner: d.resource_owner.to_string(),
        creation_date: Some(timestamp(d.creation_date)),
    }
}

/// v3alpha `Details` (`zitadel.object.v2beta.Details`: no `creation_date`).
pub(crate) fn details_v3(d: &Details) -> object_beta::Details {
    object_beta::Details {
        sequence: d.sequence,
        change_date: Some(timestamp(d.change_date)),
        resource_owner: d.resource_owner.to_string(),
    }
}

/// The human data of a user.
pub(crate) fn human(view: &UserView) -> user::HumanUser {
    user::HumanUser {
        profile: view.profile.as_ref().map(|p| user::HumanProfile {
            given_name: p.given_name.clone(),
            family_name: p.family_name.clone(),
        }),
        email: view.email.as_ref().map(|e| user::HumanEmail {
            email: e.email.clone(),
            is_verified: e.is_verified,
        }),
    }
}

/// A v2 `User` of the read model.
pub(crate) fn user_v2(view: &UserView) -> user::User {
    user::User {
        user_id: view.user_id.to_string(),
        details: Some(details_v2(&view.details())),
        state: view.state.wire_number(),
        username: view.username.clone(),
        r#type: Some(user::user::Type::Human(human(view))),
    }
}

/// A v3alpha `User` of the read model: id, details, state and contact email (ZITADEL's v3alpha
/// user has no username or profile; its schema data is not served). An initial user's state is
/// 5, v2's `USER_STATE_INITIAL` (v3alpha's `State` has no such value).
pub(crate) fn user_v3(view: &UserView) -> v3::User {
    v3::User {
        user_id: view.user_id.to_string(),
        details: Some(details_v3(&view.details())),
        contact: Some(v3::Contact {
            email: view.email.as_ref().map(|e| v3::Email {
                address: e.email.clone(),
                is_verified: e.is_verified,
            }),
        }),
        state: view.state.wire_number(),
    }
}

/// An API version's `details` in protobuf: the gRPC counterpart of
/// [`ApiVersion::JsonDetails`].
pub(crate) trait ProtoForm: ApiVersion {
    /// The message.
    type Details: Send + 'static;

    /// `details` in this form.
    fn details(details: &Details) -> Self::Details;
}

impl ProtoForm for V2 {
    type Details = object::Details;

    fn details(details: &Details) -> object::Details {
        details_v2(details)
    }
}

impl ProtoForm for V3Alpha {
    type Details = object_beta::Details;

    fn details(details: &Details) -> object_beta::Details {
        details_v3(details)
    }
}

/// The engine's list request of a `ListUsersRequest` (over gRPC, Connect, or REST through its
/// proto3 JSON form). Sort columns and queries userstate does not serve, a query with nothing
/// set and an unknown state or method are InvalidArgument.
pub(crate) fn list_request(request: user::ListUsersRequest) -> Result<ListRequest, DomainError> {
    let query = request.query.unwrap_or_default();
    let sort = match user::UserFieldName::try_from(request.sorting_column) {
        Ok(user::UserFieldName::Unspecified | user::UserFieldName::CreationDate) => {
            SortColumn::CreationDate
        }
        Ok(user::UserFieldName::UserName) => SortColumn::UserName,
        Ok(user::UserFieldName::State) => SortColumn::State,
        _ => {
            return Err(invalid(
                "sortingColumn",
                format!(
                    "{} is not served (USER_NAME, CREATION_DATE or STATE)",
                    request.sorting_column
                ),
            ))
        }
    };
    Ok(ListRequest {
        offset: query.offset,
        limit: query.limit,
        asc: query.asc,
        sort,
        queries: request
            .queries
            .into_iter()
            .map(search_query)
            .collect::<Result<_, _>>()?,
    })
}

fn invalid(field: &'static str, reason: String) -> DomainError {
    DomainError::InvalidArgument { field, reason }
}

/// One `SearchQuery`.
fn search_query(query: user::SearchQuery) -> Result<UserQuery, DomainError> {
    use user::search_query::Query;
    let Some(query) = query.query else {
        return Err(invalid(
            "queries",
            "holds a query with no condition set".into(),
        ));
    };
    Ok(match query {
        Query::UserNameQuery(q) => {
            let method = usize::try_from(q.method)
                .ok()
                .and_then(|m| TextMethod::ALL.get(m).copied())
                .ok_or_else(|| {
                    invalid("userNameQuery.method", format!("{} is unknown", q.method))
                })?;
            UserQuery::UserName {
                text: q.user_name,
                method,
            }
        }
        Query::StateQuery(q) => {
            let state = [
                UserState::Active,
                UserState::Inactive,
                UserState::Deleted,
                UserState::Locked,
                UserState::Initial,
            ]
            .into_iter()
            .find(|s| s.wire_number() == q.state)
            .ok_or_else(|| {
                invalid(
                    "stateQuery.state",
                    format!("{} is not a user state", q.state),
                )
            })?;
            UserQuery::State(state)
        }
        Query::InUserIdsQuery(q) => UserQuery::InUserIds(q.user_ids),
        Query::OrganizationIdQuery(q) => UserQuery::Organization(q.organization_id),
        Query::OrQuery(q) => UserQuery::Or(
            q.queries
                .into_iter()
                .map(search_query)
                .collect::<Result<_, _>>()?,
        ),
        Query::AndQuery(q) => UserQuery::And(
            q.queries
                .into_iter()
                .map(search_query)
                .collect::<Result<_, _>>()?,
        ),
        Query::NotQuery(q) => {
            let inner = q
                .query
                .ok_or_else(|| invalid("notQuery.query", "is required".into()))?;
            UserQuery::Not(Box::new(search_query(*inner)?))
        }
    })
}

/// The `ListUsersResponse` of a page (echoing the request's sort column).
pub(crate) fn list_response(list: &UserList, sorting_column: i32) -> user::ListUsersResponse {
    user::ListUsersResponse {
        details: Some(object::ListDetails {
            total_result: list.total,
            processed_sequence: list.position,
            timestamp: list.timestamp.map(timestamp),
        }),
        sorting_column,
        result: list.users.iter().map(user_v2).collect(),
    }
}
