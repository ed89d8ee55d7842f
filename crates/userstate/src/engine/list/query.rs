//! What a list request means (SPEC.md "Listing users"): the query types and their meaning on
//! one user ([`UserQuery::matches`]), the text comparisons, the sort orders, the page. The
//! indexes that answer a request without looking at every user are the parent module's.

use std::cmp::Ordering;

use chrono::{DateTime, Utc};

use crate::domain::UserState;
use crate::engine::read_model::UserView;

/// The page size when a request asks for none (`limit: 0`).
pub const DEFAULT_LIMIT: u32 = 100;
/// The largest page a request may ask for.
pub const MAX_LIMIT: u32 = 1000;

/// How a text query compares (ZITADEL's `zitadel.object.v2.TextQueryMethod`). "Ignore case"
/// compares the texts lower-cased character by character ([`char::to_lowercase`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TextMethod {
    /// The whole text.
    Equals,
    /// The whole text, ignoring case.
    EqualsIgnoreCase,
    /// A prefix.
    StartsWith,
    /// A prefix, ignoring case.
    StartsWithIgnoreCase,
    /// A substring.
    Contains,
    /// A substring, ignoring case.
    ContainsIgnoreCase,
    /// A suffix.
    EndsWith,
    /// A suffix, ignoring case.
    EndsWithIgnoreCase,
}

impl TextMethod {
    /// Every method, in the order of ZITADEL's enum numbers (0 to 7).
    pub const ALL: [TextMethod; 8] = [
        TextMethod::Equals,
        TextMethod::EqualsIgnoreCase,
        TextMethod::StartsWith,
        TextMethod::StartsWithIgnoreCase,
        TextMethod::Contains,
        TextMethod::ContainsIgnoreCase,
        TextMethod::EndsWith,
        TextMethod::EndsWithIgnoreCase,
    ];

    /// Whether `value` matches the query text `text`.
    pub fn matches(self, value: &str, text: &str) -> bool {
        let ignore = || (fold(value), fold(text));
        match self {
            TextMethod::Equals => value == text,
            TextMethod::StartsWith => value.starts_with(text),
            TextMethod::Contains => value.contains(text),
            TextMethod::EndsWith => value.ends_with(text),
            TextMethod::EqualsIgnoreCase => {
                let (v, t) = ignore();
                v == t
            }
            TextMethod::StartsWithIgnoreCase => {
                let (v, t) = ignore();
                v.starts_with(&t)
            }
            TextMethod::ContainsIgnoreCase => {
                let (v, t) = ignore();
                v.contains(&t)
            }
            TextMethod::EndsWithIgnoreCase => {
                let (v, t) = ignore();
                v.ends_with(&t)
            }
        }
    }

    /// Whether every match starts with the text lower-cased (so the user-name index can find
    /// the candidates by a range).
    pub(super) fn is_prefix(self) -> bool {
        matches!(
            self,
            TextMethod::Equals
                | TextMethod::EqualsIgnoreCase
                | TextMethod::StartsWith
                | TextMethod::StartsWithIgnoreCase
        )
    }

    /// Whether the range of [`is_prefix`](Self::is_prefix) holds exactly the matches.
    pub(super) fn range_is_exact(self) -> bool {
        self == TextMethod::StartsWithIgnoreCase
    }
}

/// `text` lower-cased character by character (no context rules, so the fold of a prefix is a
/// prefix of the fold).
pub fn fold(text: &str) -> String {
    text.chars().flat_map(char::to_lowercase).collect()
}

/// Compares two texts by their folds without building them.
pub(super) fn fold_cmp(a: &str, b: &str) -> Ordering {
    if a.is_ascii() && b.is_ascii() {
        // The same order as the general path for ASCII, without decoding chars.
        return a
            .bytes()
            .map(|c| c.to_ascii_lowercase())
            .cmp(b.bytes().map(|c| c.to_ascii_lowercase()));
    }
    a.chars()
        .flat_map(char::to_lowercase)
        .cmp(b.chars().flat_map(char::to_lowercase))
}

/// One condition on a user (ZITADEL's `zitadel.user.v2.SearchQuery`, the parts userstate
/// serves). Ids are kept as given: an id that is not well formed matches no user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UserQuery {
    /// The user is in this state.
    State(UserState),
    /// The user belongs to this organisation.
    Organization(String),
    /// The user name matches.
    UserName {
        /// The text compared with.
        text: String,
        /// How.
        method: TextMethod,
    },
    /// The user's id is one of these.
    InUserIds(Vec<String>),
    /// At least one holds (none: false).
    Or(Vec<UserQuery>),
    /// Every one holds (none: true).
    And(Vec<UserQuery>),
    /// The query does not hold.
    Not(Box<UserQuery>),
}

/// What a user is matched on.
#[derive(Clone, Copy, Debug)]
pub struct Candidate<'a> {
    /// The user's id.
    pub user_id: &'a str,
    /// Its user name (display form).
    pub username: &'a str,
    /// Its organisation.
    pub org: &'a str,
    /// Its state.
    pub state: UserState,
}

impl UserQuery {
    /// Whether `user` satisfies the query.
    pub fn matches(&self, user: &Candidate<'_>) -> bool {
        match self {
            UserQuery::State(s) => user.state == *s,
            UserQuery::Organization(o) => user.org == o,
            UserQuery::UserName { text, method } => method.matches(user.username, text),
            UserQuery::InUserIds(ids) => ids.iter().any(|id| id == user.user_id),
            UserQuery::Or(qs) => qs.iter().any(|q| q.matches(user)),
            UserQuery::And(qs) => qs.iter().all(|q| q.matches(user)),
            UserQuery::Not(q) => !q.matches(user),
        }
    }
}

/// The column a list is sorted by (ZITADEL's `UserFieldName`, the columns userstate serves).
/// Ties are broken by the user id, so every order is total.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum SortColumn {
    /// The creation date (also when a request names no column).
    #[default]
    CreationDate,
    /// The user name, compared lower-cased ([`fold`]), then as given.
    UserName,
    /// The state's number (`USER_STATE_ACTIVE` 1 … `USER_STATE_INITIAL` 5), then the creation
    /// date.
    State,
}

impl SortColumn {
    /// The ascending order of two users by this column.
    pub fn cmp(self, a: &UserView, b: &UserView) -> Ordering {
        let by = match self {
            SortColumn::UserName => name_cmp(&a.username, &b.username),
            SortColumn::CreationDate => a.creation_date.cmp(&b.creation_date),
            SortColumn::State => a
                .state
                .wire_number()
                .cmp(&b.state.wire_number())
                .then(a.creation_date.cmp(&b.creation_date)),
        };
        by.then_with(|| a.user_id.as_str().cmp(b.user_id.as_str()))
    }
}

/// The user-name order: lower-cased, then as given.
pub(super) fn name_cmp(a: &str, b: &str) -> Ordering {
    fold_cmp(a, b).then_with(|| a.cmp(b))
}

/// A request for one page of users (ZITADEL's `ListUsersRequest`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListRequest {
    /// How many matches to skip.
    pub offset: u64,
    /// The page size: 0 for [`DEFAULT_LIMIT`], at most [`MAX_LIMIT`].
    pub limit: u32,
    /// Ascending (else descending).
    pub asc: bool,
    /// The sort column.
    pub sort: SortColumn,
    /// Conditions that must all hold.
    pub queries: Vec<UserQuery>,
}

impl ListRequest {
    /// The page size this request stands for, or why it is refused.
    pub fn page_size(&self) -> Result<usize, crate::domain::DomainError> {
        match self.limit {
            0 => Ok(DEFAULT_LIMIT as usize),
            n if n <= MAX_LIMIT => Ok(n as usize),
            n => Err(crate::domain::DomainError::InvalidArgument {
                field: "query.limit",
                reason: format!("is {n}, at most {MAX_LIMIT} is allowed"),
            }),
        }
    }
}

/// One page of users (ZITADEL's `ListUsersResponse` without the wire forms).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserList {
    /// How many users match in all (only of the organisations the caller may read).
    pub total: u64,
    /// The page.
    pub users: Vec<UserView>,
    /// The read model's position when it answered (`processedSequence`).
    pub position: u64,
    /// `createdAt` of the last event the read model applied (`timestamp`).
    pub timestamp: Option<DateTime<Utc>>,
}
