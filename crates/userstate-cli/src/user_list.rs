//! `userstate user list`: the users of a store that match filters (the server's `ListUsers`,
//! SPEC.md "Listing users"), folded from the store into a read model first.

use std::io::Write;

use clap::{Args, ValueEnum};
use userstate::{
    DomainError, ListRequest, Principal, ReadModel, SortColumn, TextMethod, UserList, UserQuery,
    UserState,
};
use userstate_server::wire::{timestamp, ListUsersResponse};

use crate::args::Format;

/// Filters, order and page of `userstate user list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only users in this state.
    #[arg(long, value_enum)]
    state: Option<StateArg>,
    /// Only users of this organisation.
    #[arg(long)]
    org: Option<String>,
    /// Only users whose user name matches (see --match and --ignore-case).
    #[arg(long)]
    username: Option<String>,
    /// How --username compares.
    #[arg(long = "match", value_enum, default_value_t = MatchArg::StartsWith)]
    method: MatchArg,
    /// Compare --username ignoring case.
    #[arg(long)]
    ignore_case: bool,
    /// Only these user ids (repeatable).
    #[arg(long = "id")]
    ids: Vec<String>,
    /// Sort column.
    #[arg(long, value_enum, default_value_t = SortArg::CreationDate)]
    sort: SortArg,
    /// Descending order.
    #[arg(long)]
    desc: bool,
    /// Matches to skip.
    #[arg(long, default_value_t = 0)]
    offset: u64,
    /// Page size (at most 1000).
    #[arg(long, default_value_t = 100)]
    limit: u32,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum StateArg {
    Initial,
    Active,
    Inactive,
    Locked,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum MatchArg {
    Equals,
    StartsWith,
    Contains,
    EndsWith,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum SortArg {
    UserName,
    CreationDate,
    State,
}

impl ListArgs {
    /// The engine's request.
    pub fn request(&self) -> ListRequest {
        let mut queries = Vec::new();
        if let Some(state) = self.state {
            queries.push(UserQuery::State(match state {
                StateArg::Initial => UserState::Initial,
                StateArg::Active => UserState::Active,
                StateArg::Inactive => UserState::Inactive,
                StateArg::Locked => UserState::Locked,
            }));
        }
        if let Some(org) = &self.org {
            queries.push(UserQuery::Organization(org.clone()));
        }
        if let Some(text) = &self.username {
            let method = match (self.method, self.ignore_case) {
                (MatchArg::Equals, false) => TextMethod::Equals,
                (MatchArg::Equals, true) => TextMethod::EqualsIgnoreCase,
                (MatchArg::StartsWith, false) => TextMethod::StartsWith,
                (MatchArg::StartsWith, true) => TextMethod::StartsWithIgnoreCase,
                (MatchArg::Contains, false) => TextMethod::Contains,
                (MatchArg::Contains, true) => TextMethod::ContainsIgnoreCase,
                (MatchArg::EndsWith, false) => TextMethod::EndsWith,
                (MatchArg::EndsWith, true) => TextMethod::EndsWithIgnoreCase,
            };
            queries.push(UserQuery::UserName {
                text: text.clone(),
                method,
            });
        }
        if !self.ids.is_empty() {
            queries.push(UserQuery::InUserIds(self.ids.clone()));
        }
        ListRequest {
            offset: self.offset,
            limit: self.limit,
            asc: !self.desc,
            sort: self.sort_column(),
            queries,
        }
    }

    fn sort_column(&self) -> SortColumn {
        match self.sort {
            SortArg::UserName => SortColumn::UserName,
            SortArg::CreationDate => SortColumn::CreationDate,
            SortArg::State => SortColumn::State,
        }
    }

    fn sort_name(&self) -> &'static str {
        match self.sort {
            SortArg::UserName => "USER_FIELD_NAME_USER_NAME",
            SortArg::CreationDate => "USER_FIELD_NAME_CREATION_DATE",
            SortArg::State => "USER_FIELD_NAME_STATE",
        }
    }
}

/// Lists the users of `model` that `principal` may read and `args` selects.
pub fn list(
    model: &ReadModel,
    principal: &Principal,
    args: &ListArgs,
) -> Result<UserList, userstate::Error> {
    if args.limit > userstate::LIST_MAX_LIMIT {
        return Err(DomainError::InvalidArgument {
            field: "limit",
            reason: format!(
                "is {}, at most {} is allowed",
                args.limit,
                userstate::LIST_MAX_LIMIT
            ),
        }
        .into());
    }
    model.list(principal, &args.request())
}

/// Prints a page: a table, the JSON answer of `POST /v2/users`, or CSV.
pub fn print(format: Format, args: &ListArgs, list: &UserList) -> anyhow::Result<()> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match format {
        Format::Json => {
            serde_json::to_writer(&mut out, &ListUsersResponse::of(list, args.sort_name()))?;
            writeln!(out)?;
        }
        Format::Csv => {
            let mut w = csv::Writer::from_writer(out);
            w.write_record([
                "userId",
                "username",
                "state",
                "resourceOwner",
                "creationDate",
                "sequence",
            ])?;
            for u in &list.users {
                w.write_record([
                    u.user_id.to_string(),
                    u.username.clone(),
                    u.state.wire_name().to_owned(),
                    u.resource_owner.to_string(),
                    timestamp(u.creation_date),
                    u.sequence.to_string(),
                ])?;
            }
            w.flush()?;
        }
        Format::Table => {
            writeln!(
                out,
                "{:<20} {:<24} {:<20} {:<20} {:<24}",
                "userId", "username", "state", "resourceOwner", "creationDate"
            )?;
            for u in &list.users {
                writeln!(
                    out,
                    "{:<20} {:<24} {:<20} {:<20} {:<24}",
                    u.user_id,
                    u.username,
                    u.state.wire_name(),
                    u.resource_owner,
                    timestamp(u.creation_date)
                )?;
            }
            writeln!(out, "{} of {} users", list.users.len(), list.total)?;
        }
    }
    Ok(())
}
