//! `userstate audit …`: a user's full history, and its state as of any event or time.

use std::io::Write;
use std::process::ExitCode;

use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};
use userstate::{AsOf, Engine, RecordedEvent, UserId};
use userstate_server::wire::{timestamp, DetailsV2};

use crate::args::{ActorArgs, Format, StoreArgs};
use crate::exit;

/// Options of `userstate audit`.
#[derive(Debug, Args)]
pub struct AuditArgs {
    #[command(flatten)]
    store: StoreArgs,
    #[command(flatten)]
    actor: ActorArgs,
    /// Output format: `table`, `json` (JSON Lines for history) or `csv`.
    #[arg(long, value_enum, default_value_t = Format::Table, global = true)]
    format: Format,
    /// Shorthand for `--format json`.
    #[arg(long, global = true)]
    json: bool,
    /// Shorthand for `--format csv`.
    #[arg(long, global = true)]
    csv: bool,
    #[command(subcommand)]
    action: Action,
}

#[derive(Debug, Subcommand)]
enum Action {
    /// Every event of a user: sequence, position, time, type, creator, payload.
    History {
        /// User id.
        user: String,
    },
    /// The user's state and details as of an event or a time (the fold of that prefix).
    State {
        /// User id.
        user: String,
        /// After the event with this sequence.
        #[arg(long, conflicts_with = "at_time", required_unless_present = "at_time")]
        at_sequence: Option<u64>,
        /// After every event created at or before this RFC 3339 time.
        #[arg(long)]
        at_time: Option<DateTime<Utc>>,
    },
}

/// Runs `userstate audit …`.
pub async fn run(args: AuditArgs) -> anyhow::Result<ExitCode> {
    let format = match (args.json, args.csv) {
        (true, _) => Format::Json,
        (_, true) => Format::Csv,
        _ => args.format,
    };
    let principal = args.actor.principal()?;
    // Audits only read: the file store read-only, so they work beside a running `serve`.
    let engine = Engine::new(args.store.open_read_only().await?);
    match args.action {
        Action::History { user } => {
            let user = UserId::new(user)?;
            match engine.history(&principal, &user).await {
                Ok(events) => {
                    print_history(format, &events)?;
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => Ok(exit::report(&e)),
            }
        }
        Action::State {
            user,
            at_sequence,
            at_time,
        } => {
            let user = UserId::new(user)?;
            let at = match (at_sequence, at_time) {
                (Some(n), _) => AsOf::Sequence(n),
                (None, Some(t)) => AsOf::Time(t),
                (None, None) => anyhow::bail!("give --at-sequence or --at-time"),
            };
            match engine.state_as_of(&principal, &user, at).await {
                Ok(Some(state)) => {
                    if format == Format::Csv {
                        let details = &state.details;
                        print_state_csv([
                            user.as_str(),
                            state.state.wire_name(),
                            &details.sequence.to_string(),
                            &timestamp(details.change_date),
                            &timestamp(details.creation_date),
                            details.resource_owner.as_str(),
                        ])?;
                    } else if format == Format::Json {
                        let body = serde_json::json!({
                            "userId": user.as_str(),
                            "state": state.state.wire_name(),
                            "details": DetailsV2::from(&state.details),
                        });
                        println!("{body}");
                    } else {
                        println!("user {user} as of {}:", describe(at));
                        println!("state          {}", state.state.wire_name());
                        println!("sequence       {}", state.details.sequence);
                        println!("changeDate     {}", timestamp(state.details.change_date));
                        println!("creationDate   {}", timestamp(state.details.creation_date));
                        println!("resourceOwner  {}", state.details.resource_owner);
                    }
                    Ok(ExitCode::SUCCESS)
                }
                Ok(None) => {
                    if format == Format::Csv {
                        print_state_csv([user.as_str(), "", "", "", "", ""])?;
                    } else if format == Format::Json {
                        println!(
                            "{}",
                            serde_json::json!({ "userId": user.as_str(), "state": null })
                        );
                    } else {
                        println!("user {user} did not exist yet as of {}", describe(at));
                    }
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => Ok(exit::report(&e)),
            }
        }
    }
}

/// `audit state --format csv`: a header and one row (empty fields before the user existed).
fn print_state_csv(row: [&str; 6]) -> anyhow::Result<()> {
    let mut w = csv::Writer::from_writer(std::io::stdout().lock());
    w.write_record([
        "userId",
        "state",
        "sequence",
        "changeDate",
        "creationDate",
        "resourceOwner",
    ])?;
    w.write_record(row)?;
    w.flush()?;
    Ok(())
}

fn describe(at: AsOf) -> String {
    match at {
        AsOf::Sequence(n) => format!("sequence {n}"),
        AsOf::Time(t) => timestamp(t),
    }
}

fn print_history(format: Format, events: &[RecordedEvent]) -> anyhow::Result<()> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match format {
        Format::Json => {
            for e in events {
                serde_json::to_writer(&mut out, e)?;
                writeln!(out)?;
            }
        }
        Format::Csv => {
            let mut w = csv::Writer::from_writer(out);
            w.write_record([
                "sequence",
                "position",
                "createdAt",
                "type",
                "creator",
                "payload",
            ])?;
            for e in events {
                w.write_record([
                    e.sequence.to_string(),
                    e.position.to_string(),
                    timestamp(e.created_at),
                    e.event_type.clone(),
                    e.metadata.creator.clone(),
                    e.payload.to_string(),
                ])?;
            }
            w.flush()?;
        }
        Format::Table => {
            writeln!(
                out,
                "{:>4} {:>9}  {:<24}  {:<18}  {:<12}  payload",
                "seq", "position", "createdAt", "type", "creator"
            )?;
            for e in events {
                writeln!(
                    out,
                    "{:>4} {:>9}  {:<24}  {:<18}  {:<12}  {}",
                    e.sequence,
                    e.position,
                    timestamp(e.created_at),
                    e.event_type,
                    e.metadata.creator,
                    e.payload
                )?;
            }
        }
    }
    Ok(())
}
