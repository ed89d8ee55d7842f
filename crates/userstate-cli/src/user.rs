//! `userstate user …`: run the engine's commands on a store and print SPEC.md's `details`.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use userstate::{AddUser, AsOf, Context, Details, Email, Engine, OrgId, Profile, UserCommand, UserId};
use userstate_server::wire::{timestamp, DetailsV2};

use crate::exit;
use crate::target::{ActorArgs, Format, StoreArgs};

/// Options of `userstate user`.
#[derive(Debug, Args)]
pub struct UserArgs {
    #[command(flatten)]
    store: StoreArgs,
    #[command(flatten)]
    actor: ActorArgs,
    /// Output format (`table` or `json`).
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
}

/// Runs `userstate user …`.
pub async fn run(args: UserArgs) -> anyhow::Result<ExitCode> {
    let json = args.json || args.format == Format::Json;
    let principal = args.actor.principal()?;
    let engine = Engine::new(args.store.open().await?);
    let parse = |id: &str| UserId::new(id);
    let command = match args.action {
        Action::Get { id } => {
            let id = parse(&id)?;
            return Ok(
                match engine.state_as_of(&principal, &id, AsOf::Sequence(u64::MAX)).await {
                    Ok(Some(s)) if s.state != userstate::UserState::Deleted => {
                        print_details(json, Some(&id), Some(s.state), &s.details);
                        ExitCode::SUCCESS
                    }
                    Ok(_) => exit::report(&userstate::DomainError::NotFound(id).into()),
                    Err(e) => exit::report(&e),
                },
            );
        }
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
                user_id: id.as_deref().map(parse).transpose()?.unwrap_or_else(UserId::generate),
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
        Action::Lock { id } => UserCommand::Lock(parse(&id)?),
        Action::Unlock { id } => UserCommand::Unlock(parse(&id)?),
        Action::Deactivate { id } => UserCommand::Deactivate(parse(&id)?),
        Action::Reactivate { id } => UserCommand::Reactivate(parse(&id)?),
        Action::Remove { id } => UserCommand::Remove(parse(&id)?),
    };
    let user = command.user_id().clone();
    let added = matches!(command, UserCommand::Add(_));
    match engine.execute(&Context::new(principal), command).await {
        Ok(details) => {
            print_details(json, added.then_some(&user), None, &details);
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => Ok(exit::report(&e)),
    }
}

fn print_details(
    json: bool,
    user: Option<&UserId>,
    state: Option<userstate::UserState>,
    details: &Details,
) {
    if json {
        let mut body = serde_json::json!({ "details": DetailsV2::from(details) });
        if let Some(user) = user {
            body["userId"] = user.as_str().into();
        }
        if let Some(state) = state {
            body["state"] = state.wire_name().into();
        }
        println!("{body}");
        return;
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
}
