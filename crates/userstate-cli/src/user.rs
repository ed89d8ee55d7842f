//! `userstate user …`: run the engine's commands on a store and print SPEC.md's `details`.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use userstate::{
    AddUser, AsOf, Context, Details, DomainError, Email, Engine, OrgId, Profile, ReadModel,
    UserCommand, UserId, UserState,
};
use userstate_server::wire::{timestamp, DetailsV2};

use crate::args::{ActorArgs, Format, StoreArgs};
use crate::exit;

/// Options of `userstate user`.
#[derive(Debug, Args)]
pub struct UserArgs {
    #[command(flatten)]
    store: StoreArgs,
    #[command(flatten)]
    actor: ActorArgs,
    /// Output format: `table`, `json` or `csv` (a header line and one row; a row per user for
    /// `list`).
    #[arg(long, value_enum, default_value_t = Format::Table, global = true)]
    format: Format,
    /// Shorthand for `--format json`.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    action: Action,
}

#[derive(Debug, Subcommand)]
enum Action {
    /// Add a human user (active, or initial with --initial).
    Add {
        /// Login name, unique per instance.
        username: String,
        /// Owning organisation.
        #[arg(long)]
        org: String,
        /// User id (default: a generated 18-digit id).
        #[arg(long)]
        id: Option<String>,
        /// Start in the initial state.
        #[arg(long)]
        initial: bool,
        /// Given name.
        #[arg(long)]
        given_name: Option<String>,
        /// Family name.
        #[arg(long)]
        family_name: Option<String>,
        /// Email address.
        #[arg(long)]
        email: Option<String>,
    },
    /// Show a user's state and read-form details (folded from its stream).
    Get {
        /// User id.
        id: String,
    },
    /// Lock an active or initial user.
    Lock {
        /// User id.
        id: String,
    },
    /// Unlock a locked user.
    Unlock {
        /// User id.
        id: String,
    },
    /// Deactivate an active or locked user.
    Deactivate {
        /// User id.
        id: String,
    },
    /// Reactivate an inactive user.
    Reactivate {
        /// User id.
        id: String,
    },
    /// Remove a user (terminal).
    Remove {
        /// User id.
        id: String,
    },
    /// List users (removed ones never), with filters, order and page.
    List(crate::user_list::ListArgs),
}

enum Request {
    Get(UserId),
    Command(UserCommand),
}

/// Turns the parsed arguments into a request; malformed ids are InvalidArgument (exit 6).
fn request(action: Action) -> Result<Request, DomainError> {
    Ok(Request::Command(match action {
        Action::Get { id } => return Ok(Request::Get(UserId::new(id)?)),
        Action::Add {
            username,
            org,
            id,
            initial,
            given_name,
            family_name,
            email,
        } => {
            let profile = (given_name.is_some() || family_name.is_some()).then(|| Profile {
                given_name: given_name.unwrap_or_default(),
                family_name: family_name.unwrap_or_default(),
            });
            UserCommand::Add(AddUser {
                user_id: id
                    .map(UserId::new)
                    .transpose()?
                    .unwrap_or_else(UserId::generate),
                username,
                organization: OrgId::new(org)?,
                profile,
                email: email.map(|email| Email {
                    email,
                    is_verified: false,
                }),
                initial,
            })
        }
        Action::Lock { id } => UserCommand::Lock(UserId::new(id)?),
        Action::Unlock { id } => UserCommand::Unlock(UserId::new(id)?),
        Action::Deactivate { id } => UserCommand::Deactivate(UserId::new(id)?),
        Action::Reactivate { id } => UserCommand::Reactivate(UserId::new(id)?),
        Action::Remove { id } => UserCommand::Remove(UserId::new(id)?),
        // `run` answers `list` before it builds a request.
        Action::List(_) => {
            return Err(DomainError::InvalidArgument {
                field: "list",
                reason: "is a read, not a command".to_owned(),
            })
        }
    }))
}

/// Runs `userstate user …`.
pub async fn run(args: UserArgs) -> anyhow::Result<ExitCode> {
    let format = if args.json { Format::Json } else { args.format };
    let principal = args.actor.principal()?;
    if let Action::List(list) = &args.action {
        let model = ReadModel::rebuild(&*args.store.open_read_only().await?).await?;
        return Ok(match crate::user_list::list(&model, &principal, list) {
            Ok(page) => {
                crate::user_list::print(format, list, &page)?;
                ExitCode::SUCCESS
            }
            Err(e) => exit::report(&e),
        });
    }
    let request = match request(args.action) {
        Ok(r) => r,
        Err(e) => return Ok(exit::report(&e.into())),
    };
    // `get` only reads: the file store read-only, so it works beside a running `serve`.
    let store = if matches!(request, Request::Get(_)) {
        args.store.open_read_only().await?
    } else {
        args.store.open().await?
    };
    let engine = Engine::new(store);
    let command = match request {
        Request::Get(id) => {
            return Ok(
                match engine
                    .state_as_of(&principal, &id, AsOf::Sequence(u64::MAX))
                    .await
                {
                    Ok(Some(s)) if s.state != UserState::Deleted => {
                        print_details(format, Some(&id), Some(s.state), &s.details)?;
                        ExitCode::SUCCESS
                    }
                    Ok(_) => exit::report(&DomainError::NotFound(id).into()),
                    Err(e) => exit::report(&e),
                },
            );
        }
        Request::Command(command) => command,
    };
    let user = command.user_id().clone();
    let added = matches!(command, UserCommand::Add(_));
    match engine.execute(&Context::new(principal), command).await {
        Ok(details) => {
            print_details(format, added.then_some(&user), None, &details)?;
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => Ok(exit::report(&e)),
    }
}

/// The JSON answer: SPEC.md's shape (`userId` on add, `state` on get, `details` always).
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Answer<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    user_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    state: Option<&'static str>,
    details: DetailsV2,
}

fn print_details(
    format: Format,
    user: Option<&UserId>,
    state: Option<UserState>,
    details: &Details,
) -> anyhow::Result<()> {
    if format == Format::Csv {
        return print_details_csv(user, state, details);
    }
    if format == Format::Json {
        let body = Answer {
            user_id: user.map(UserId::as_str),
            state: state.map(UserState::wire_name),
            details: DetailsV2::from(details),
        };
        println!(
            "{}",
            serde_json::to_string(&body).expect("plain strings serialise")
        );
        return Ok(());
    }
    if let Some(user) = user {
        println!("userId         {user}");
    }
    if let Some(state) = state {
        println!("state          {}", state.wire_name());
    }
    println!("sequence       {}", details.sequence);
    println!("changeDate     {}", timestamp(details.change_date));
    println!("resourceOwner  {}", details.resource_owner);
    println!("creationDate   {}", timestamp(details.creation_date));
    println!("position       {}", details.position);
    Ok(())
}

/// The table's fields as CSV: a header line and one row.
fn print_details_csv(
    user: Option<&UserId>,
    state: Option<UserState>,
    details: &Details,
) -> anyhow::Result<()> {
    let mut header = Vec::new();
    let mut row = Vec::new();
    if let Some(user) = user {
        header.push("userId");
        row.push(user.to_string());
    }
    if let Some(state) = state {
        header.push("state");
        row.push(state.wire_name().to_owned());
    }
    header.extend([
        "sequence",
        "changeDate",
        "resourceOwner",
        "creationDate",
        "position",
    ]);
    row.extend([
        details.sequence.to_string(),
        timestamp(details.change_date),
        details.resource_owner.to_string(),
        timestamp(details.creation_date),
        details.position.to_string(),
    ]);
    let mut w = csv::Writer::from_writer(std::io::stdout().lock());
    w.write_record(header)?;
    w.write_record(row)?;
    w.flush()?;
    Ok(())
}
