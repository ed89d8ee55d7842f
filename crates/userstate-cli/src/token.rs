//! `userstate token create|list|revoke`: bearer tokens kept in the store (SPEC.md "Operator
//! interface", Tokens; ADR 0016).
//!
//! The secret is made here, printed once, and never stored or sent anywhere: the store (and
//! the admin socket) get its SHA-256 only. On the embedded stores (`file`, `memory`) a running
//! `serve` holds the store, so a command goes through its admin socket (`DATA/admin.sock`)
//! when one answers, and opens the store itself otherwise; on PostgreSQL or KurrentDB it
//! always writes the store directly, and every node picks the change up within seconds.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context as _};
use chrono::Utc;
use clap::{ArgGroup, Args, Subcommand, ValueEnum};
use serde::Serialize;
use userstate::domain::{TokenCreated, TokenId};
use userstate::{Engine, InstanceId, OrgId, Permission};
use userstate_server::admin::{execute, AdminRequest, TokenInfo};
use userstate_server::auth::{generate_token, hash_token};
use userstate_server::wire::timestamp;

use crate::args::{ActorArgs, StoreArgs};

/// Options of `userstate token`.
#[derive(Debug, Args)]
pub struct TokenArgs {
    #[command(flatten)]
    store: StoreArgs,
    #[command(flatten)]
    actor: ActorArgs,
    /// Output format: `table` (for people; `create` prints only the token on stdout) or
    /// `json` (one object per line).
    #[arg(long, value_enum, default_value_t = TokenFormat::Table, global = true)]
    format: TokenFormat,
    #[command(subcommand)]
    action: Action,
}

/// Output formats of `userstate token`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum TokenFormat {
    /// For people.
    #[default]
    Table,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Subcommand)]
enum Action {
    /// Create a token and print it once (only its hash is kept).
    #[command(group(ArgGroup::new("grants").required(true).multiple(false)))]
    Create {
        /// Whom the token authenticates as (recorded as the creator of its events).
        #[arg(long, env = "USERSTATE_TOKEN_SUBJECT")]
        subject: String,
        /// Permissions on every organisation of the instance (`user.read`, `user.write`,
        /// `user.delete`; several, or comma-separated).
        #[arg(long, num_args = 1.., value_delimiter = ',', value_parser = parse_permission, group = "grants", env = "USERSTATE_INSTANCE_GRANT")]
        instance_grant: Vec<Permission>,
        /// Permissions on one organisation: `ORG=P,P` (repeat for several organisations).
        #[arg(long, value_parser = parse_org_grant, group = "grants", env = "USERSTATE_ORG_GRANT")]
        org_grant: Vec<(OrgId, Vec<Permission>)>,
        /// The token stops being accepted this long after its creation (`30m`, `1h`, `90d`;
        /// default: never).
        #[arg(long, value_parser = parse_expiry, env = "USERSTATE_EXPIRES_IN")]
        expires_in: Option<Duration>,
    },
    /// List the instance's tokens: id, subject, grants, expiry, status (never the secret).
    List,
    /// Revoke the token with this id, or every live token of this subject.
    Revoke {
        /// A token id (`tok_…`) or a subject.
        target: String,
    },
}

/// A permission by its name.
fn parse_permission(text: &str) -> Result<Permission, String> {
    Permission::ALL
        .into_iter()
        .find(|p| p.name() == text.trim())
        .ok_or_else(|| {
            format!("unknown permission {text:?} (user.read, user.write or user.delete)")
        })
}

/// `ORG=P,P`.
fn parse_org_grant(text: &str) -> Result<(OrgId, Vec<Permission>), String> {
    let (org, perms) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not ORG=PERMISSION,PERMISSION"))?;
    let org = OrgId::new(org.trim()).map_err(|e| e.to_string())?;
    let perms = perms
        .split(',')
        .map(parse_permission)
        .collect::<Result<Vec<_>, _>>()?;
    Ok((org, perms))
}

/// A positive duration with a unit: `s`, `m`, `h` or `d` (`90s`, `30m`, `1h`, `90d`).
fn parse_expiry(text: &str) -> Result<Duration, String> {
    let bad = || format!("{text:?} is not a duration like 30m, 1h or 90d");
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().map_err(|_| bad())?;
    let unit = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    let seconds = number
        .checked_mul(unit)
        .filter(|s| (1..=100 * 365 * 86_400).contains(s))
        .ok_or_else(|| format!("{text:?} must be between 1s and 100 years"))?;
    Ok(Duration::from_secs(seconds))
}

/// Runs `userstate token …`.
pub async fn run(args: TokenArgs) -> anyhow::Result<ExitCode> {
    let instance = InstanceId::new(&args.actor.instance)?;
    let actor = args.actor.subject.clone();
    let mut secret = None;
    let request = match args.action {
        Action::Create {
            subject,
            instance_grant,
            org_grant,
            expires_in,
        } => {
            let token = generate_token();
            let mut org_grants: BTreeMap<OrgId, Vec<Permission>> = BTreeMap::new();
            for (org, perms) in org_grant {
                org_grants.entry(org).or_default().extend(perms);
            }
            let expires_at = match expires_in {
                Some(d) => Some(Utc::now() + chrono::Duration::from_std(d)?),
                None => None,
            };
            let created = TokenCreated {
                id: TokenId::generate(),
                sha256: hash_token(&token),
                subject,
                instance: instance.clone(),
                instance_grants: dedup(instance_grant),
                org_grants: org_grants.into_iter().map(|(o, p)| (o, dedup(p))).collect(),
                expires_at,
            };
            secret = Some(token);
            AdminRequest::CreateToken {
                instance,
                actor,
                token: created,
            }
        }
        Action::List => AdminRequest::ListTokens { instance, actor },
        Action::Revoke { target } => AdminRequest::RevokeTokens {
            instance,
            actor,
            target,
        },
    };
    let tokens = send(&args.store, &request).await?;
    match (&request, secret) {
        (AdminRequest::CreateToken { .. }, Some(secret)) => {
            print_created(args.format, &tokens, &secret)?
        }
        (AdminRequest::RevokeTokens { .. }, _) if args.format == TokenFormat::Table => {
            for t in &tokens {
                println!("revoked {} (subject {})", t.id, t.subject);
            }
        }
        _ => print_tokens(args.format, &tokens)?,
    }
    Ok(ExitCode::SUCCESS)
}

fn dedup(mut perms: Vec<Permission>) -> Vec<Permission> {
    perms.sort_by_key(|p| p.name());
    perms.dedup();
    perms
}

/// Sends `request` to the server holding an embedded store, or runs it on the store.
async fn send(store: &StoreArgs, request: &AdminRequest) -> anyhow::Result<Vec<TokenInfo>> {
    #[cfg(unix)]
    if matches!(store.store.as_str(), "file" | "memory") {
        use userstate_server::admin::{call, CallError, ADMIN_SOCKET};
        match call(&store.data.join(ADMIN_SOCKET), request).await {
            Ok(tokens) => return Ok(tokens),
            Err(CallError::NoServer(_)) => {}
            // The remote error itself, so the exit code follows its kind.
            Err(CallError::Remote(e)) => return Err(e.into()),
            Err(e) => return Err(e.into()),
        }
    }
    if store.store == "file" && !crate::store::file_store_dir(&store.data).exists() {
        bail!(
            "no store in {}: start `userstate serve --data {}` once first (it creates the \
             store and the first admin token)",
            crate::store::file_store_dir(&store.data).display(),
            store.data.display()
        );
    }
    if store.store == "memory" {
        bail!(
            "no server listens on {}: the memory store lives only inside its `serve`",
            store.data.display()
        );
    }
    let engine = Engine::new(store.open().await?);
    let tokens = execute(&engine, request)
        .await
        .with_context(|| format!("on {}", store.describe()))?;
    Ok(tokens)
}

/// One line of `--format json`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Created<'a> {
    token: &'a str,
    #[serde(flatten)]
    info: &'a TokenInfo,
}

fn print_created(format: TokenFormat, tokens: &[TokenInfo], secret: &str) -> anyhow::Result<()> {
    let info = tokens.first().context("the server answered no token")?;
    let mut out = std::io::stdout().lock();
    match format {
        TokenFormat::Json => {
            let line = serde_json::to_string(&Created {
                token: secret,
                info,
            })?;
            writeln!(out, "{line}")?;
        }
        TokenFormat::Table => {
            writeln!(out, "{secret}")?;
            eprintln!(
                "created token {} for {:?} in instance {} ({}; {}); it is shown only once",
                info.id,
                info.subject,
                info.instance,
                grants(info),
                expiry(info)
            );
        }
    }
    out.flush()?;
    Ok(())
}

fn grants(t: &TokenInfo) -> String {
    let names = |perms: &[Permission]| perms.iter().map(|p| p.name()).collect::<Vec<_>>().join(",");
    let mut parts = Vec::new();
    if !t.instance_grants.is_empty() {
        parts.push(format!("instance={}", names(&t.instance_grants)));
    }
    for (org, perms) in &t.org_grants {
        parts.push(format!("{org}={}", names(perms)));
    }
    parts.join(" ")
}

fn expiry(t: &TokenInfo) -> String {
    match t.expires_at {
        Some(at) => format!("expires {}", timestamp(at)),
        None => "never expires".to_owned(),
    }
}

fn print_tokens(format: TokenFormat, tokens: &[TokenInfo]) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match format {
        TokenFormat::Json => {
            for t in tokens {
                writeln!(out, "{}", serde_json::to_string(t)?)?;
            }
        }
        TokenFormat::Table => {
            writeln!(
                out,
                "{:<20} {:<20} {:<8} {:<24} {:<24} GRANTS",
                "ID", "SUBJECT", "STATUS", "EXPIRES", "CREATED"
            )?;
            for t in tokens {
                let expires = t.expires_at.map(timestamp).unwrap_or_else(|| "-".into());
                writeln!(
                    out,
                    "{:<20} {:<20} {:<8} {:<24} {:<24} {}",
                    t.id,
                    t.subject,
                    t.status.name(),
                    expires,
                    timestamp(t.created_at),
                    grants(t)
                )?;
            }
        }
    }
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_and_expiries_parse() {
        assert_eq!(parse_permission("user.write"), Ok(Permission::UserWrite));
        assert!(parse_permission("user.all").is_err());
        let (org, perms) = parse_org_grant("acme=user.read,user.write").unwrap();
        assert_eq!(org.as_str(), "acme");
        assert_eq!(perms, [Permission::UserRead, Permission::UserWrite]);
        for bad in ["acme", "acme=", "bad org=user.read", "acme=user.read,nope"] {
            assert!(parse_org_grant(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_expiry("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_expiry("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_expiry("90d"), Ok(Duration::from_secs(90 * 86_400)));
        for bad in ["", "0s", "1", "h", "-1h", "1.5h", "1w", "99999999999d"] {
            assert!(parse_expiry(bad).is_err(), "{bad}");
        }
    }
}
