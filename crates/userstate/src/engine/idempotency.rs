//! Idempotency keys (SPEC.md "Idempotency keys"; ADR 0005 as revised by issue 20).
//!
//! A key is scoped to (instance, subject, key). Two records keep it:
//! - the events a keyed command appended carry the key in their metadata, so a repeat of the
//!   same operation on the same user finds the first answer in the user's stream
//!   ([`previous_answer`]) — written in the same append as the events, so no crash separates
//!   the two;
//! - a claim stream per key (`idempotency:{instance}:{sha256(subject, key)}`) binds the key to
//!   its first request — operation, user and parameters — so the key reused for anything else
//!   is refused ([`claim`]) instead of running a second command under it.
//!
//! Neither is consulted before the caller is authorised: a repeat is authorised again against
//! the user it names, and only then answered (see [`super::Engine::execute`]).
//!
//! A claim's fingerprint hashes personal data (an add's user name, profile and email), so a
//! crypto-shredding store seals it under its user's key (ADR 0021, amendment of session 14):
//! once the user is erased, no claim is written for it, and a claim about it is compared on
//! its operation and user alone.

use serde_json::json;
use sha2::{Digest, Sha256};

use super::command::{Command, Decision, Folded, Load};
use super::{Context, Details, Engine, Error};
use crate::domain::{KeyClaim, KeyClaimed, OrgId, StreamName, UserCommand};
use crate::store::{RecordedEvent, StreamId};

/// Type of the event that binds an idempotency key to its first request.
pub const CLAIMED: &str = KeyClaimed::TYPE;

/// The claim stream of `key` for the context's principal.
fn stream(ctx: &Context, key: &str) -> StreamId {
    let mut hasher = Sha256::new();
    for part in [ctx.principal.subject.as_bytes(), key.as_bytes()] {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part);
    }
    let digest = hex(&hasher.finalize());
    let name = StreamName::IdempotencyKey {
        instance: ctx.principal.instance.as_str(),
        digest: &digest,
    };
    StreamId::new(name.to_name()).expect("an id and 64 hex digits make a valid stream name")
}

/// What a request is, for comparing a key's uses: the operation, the user and (for an add) every
/// parameter, hashed (Stripe's rule: the same key with other parameters is an error). The JSON
/// text is canonical: `serde_json` writes object keys sorted.
fn fingerprint(command: &UserCommand) -> String {
    let parameters = match command {
        UserCommand::Add(add) => json!({
            "username": add.username,
            "organization": add.organization,
            "profile": add.profile,
            "email": add.email,
            "initial": add.initial,
        }),
        UserCommand::LockFor(lock) => json!({ "duration": lock.duration.as_nanos().to_string() }),
        UserCommand::AuthFailed(outcome) | UserCommand::AuthSucceeded(outcome) => {
            json!({ "method": outcome.method })
        }
        _ => serde_json::Value::Null,
    };
    let request = json!([command.name(), command.user_id(), parameters]);
    hex(&Sha256::digest(request.to_string().as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Binds `key` to `command` on its first use; a later use for another operation, user or
/// parameters is [`Error::IdempotencyKeyReused`]. The caller must be authorised first, on the
/// user's organisation `resource_owner`.
///
/// On an `erased` user nothing is bound (the claim would be sealed under the user's destroyed
/// key), and a claim about it has lost its fingerprint with the user: the key is compared on
/// its operation and user alone.
pub(super) async fn claim(
    engine: &Engine,
    ctx: &Context,
    key: &str,
    command: &UserCommand,
    resource_owner: &OrgId,
    erased: bool,
) -> Result<(), Error> {
    let stream = stream(ctx, key);
    let fingerprint = fingerprint(command);
    let mut claim = Claim {
        command,
        fingerprint,
        resource_owner,
        erased,
    };
    // Two attempts: a lost race to claim leaves the winner's claim to compare with.
    let user = command.user_id();
    engine
        .run(ctx, &stream, Load::whole(), 2, user, &mut claim)
        .await?;
    Ok(())
}

/// The claim of a key for one request, as [`Engine::run`] decides it.
struct Claim<'a> {
    command: &'a UserCommand,
    fingerprint: String,
    resource_owner: &'a OrgId,
    /// The command's user was erased (see [`claim`]).
    erased: bool,
}

impl Command<KeyClaim> for Claim<'_> {
    type Answer = ();

    async fn decide(
        &mut self,
        claim: &Folded<KeyClaim>,
    ) -> Result<Decision<KeyClaimed, ()>, Error> {
        match claim.aggregate.first() {
            Some(first) if first.fingerprint == self.fingerprint => Ok(Decision::Answer(())),
            Some(first)
                if self.erased
                    && first.operation == self.command.name()
                    && first.user_id == self.command.user_id().as_str() =>
            {
                Ok(Decision::Answer(()))
            }
            Some(first) => Err(Error::IdempotencyKeyReused {
                operation: first.operation.clone(),
                user: first.user_id.clone(),
            }),
            None if self.erased => Ok(Decision::Answer(())),
            None => Ok(Decision::Append {
                events: vec![KeyClaimed {
                    operation: self.command.name().to_owned(),
                    user_id: self.command.user_id().to_string(),
                    fingerprint: self.fingerprint.clone(),
                }],
                resource_owner: self.resource_owner.clone(),
                answer: (),
            }),
        }
    }
}

/// When `key` already produced events of `command`'s operation on this user, sent by this
/// principal, the answer those events gave.
pub(super) fn previous_answer(
    ctx: &Context,
    key: &str,
    command: &UserCommand,
    events: &[RecordedEvent],
) -> Option<Details> {
    let event_type = command.event_type();
    let subject = ctx.principal.subject.as_str();
    // Every event of the first request carries the key (a failure that locks appends two);
    // the claim binds the key to one operation, so they are all that request's.
    let matching: Vec<RecordedEvent> = events
        .iter()
        .filter(|e| {
            e.metadata.idempotency_key.as_deref() == Some(key) && e.metadata.creator == subject
        })
        .cloned()
        .collect();
    if !matching.iter().any(|e| e.event_type == event_type) {
        return None;
    }
    let owner = OrgId::new(&matching.last()?.metadata.resource_owner).ok()?;
    Some(Details::of_command(&matching, owner))
}
