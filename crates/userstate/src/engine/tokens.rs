//! Bearer tokens kept in the store: creating, revoking and listing them through the one
//! command loop ([`Engine::run`]), on the store-wide token stream ([`tokens_stream`]).
//!
//! Who may: a principal with every permission instance-wide (an instance's administrator, or
//! the command line's system principal), and only for tokens of its own instance. Reading the
//! registry to authenticate requests is not here: a server follows the stream itself
//! (`userstate-server`'s `StoreTokens`), decoding it with [`TokenEvent::decode`].

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::command::{Aggregate, Command, Decision, Folded, Load};
use super::{Context, Engine, Error, Permission, Principal, SYSTEM_SUBJECT};
use crate::domain::{
    OrgId, StreamName, TokenCreated, TokenEvent, TokenRecord, TokenRegistry, UserId,
};
use crate::store::{RecordedEvent, StreamId};

/// The store-wide token stream, `tokens:*:*`.
pub fn tokens_stream() -> StreamId {
    StreamId::new(StreamName::Tokens.to_name()).expect("a valid stream name")
}

impl Aggregate for TokenRegistry {
    type Event = TokenEvent;

    fn decode(e: &RecordedEvent) -> Result<TokenEvent, Error> {
        TokenEvent::decode(&e.event_type, e.revision, &e.payload).map_err(|source| Error::Decode {
            stream: e.stream.as_str().to_owned(),
            sequence: e.sequence,
            source,
        })
    }

    fn encode(event: &TokenEvent) -> (&'static str, Value) {
        (event.event_type(), event.payload())
    }

    fn apply(&mut self, event: &TokenEvent, at: DateTime<Utc>) {
        TokenRegistry::apply(self, event, at)
    }

    fn version(&self) -> u64 {
        TokenRegistry::version(self)
    }
}

/// A token creation, as [`Engine::run`] decides it.
struct Create<'a> {
    token: &'a TokenCreated,
    owner: OrgId,
}

impl Command<TokenRegistry> for Create<'_> {
    type Answer = ();

    async fn decide(
        &mut self,
        folded: &Folded<TokenRegistry>,
    ) -> Result<Decision<TokenEvent, ()>, Error> {
        Ok(Decision::Append {
            events: vec![folded.aggregate.decide_create(self.token)?],
            resource_owner: self.owner.clone(),
            answer: (),
        })
    }
}

/// `token revoke TARGET`, as [`Engine::run`] decides it.
struct Revoke<'a> {
    principal: &'a Principal,
    target: &'a str,
    owner: OrgId,
}

impl Command<TokenRegistry> for Revoke<'_> {
    type Answer = ();

    async fn decide(
        &mut self,
        folded: &Folded<TokenRegistry>,
    ) -> Result<Decision<TokenEvent, ()>, Error> {
        let events = folded
            .aggregate
            .decide_revoke(&self.principal.instance, self.target)?;
        Ok(Decision::Append {
            events,
            resource_owner: self.owner.clone(),
            answer: (),
        })
    }
}

/// Refuses a principal without every permission instance-wide.
fn may_manage_tokens(principal: &Principal) -> Result<(), Error> {
    match Permission::ALL
        .into_iter()
        .find(|p| !principal.instance_grants.contains(p))
    {
        Some(permission) => Err(Error::PermissionDenied {
            subject: principal.subject.clone(),
            org: format!("{} (instance-wide, to manage tokens)", principal.instance),
            permission,
        }),
        None => Ok(()),
    }
}

/// The events' resource owner: the instance id (a valid organisation id too), as for the
/// instance's lockout policy.
fn owner(principal: &Principal) -> Result<OrgId, Error> {
    Ok(OrgId::new(principal.instance.as_str())?)
}

impl Engine {
    /// Creates `token` (`token.created`; its secret's hash only) in the principal's instance.
    /// Refused when the token names another instance, or the principal does not hold every
    /// permission instance-wide. Answers the token as recorded.
    pub async fn create_token(
        &self,
        ctx: &Context,
        token: &TokenCreated,
    ) -> Result<TokenRecord, Error> {
        let principal = &ctx.principal;
        may_manage_tokens(principal)?;
        if token.instance != principal.instance {
            return Err(Error::PermissionDenied {
                subject: principal.subject.clone(),
                org: format!("{} (another instance)", token.instance),
                permission: Permission::UserWrite,
            });
        }
        let mut create = Create {
            token,
            owner: owner(principal)?,
        };
        let outcome = self.run_tokens(ctx, &mut create).await?;
        let at = outcome.first().map(|e| e.created_at).unwrap_or_default();
        Ok(TokenRecord {
            token: token.clone(),
            created_at: at,
            revoked_at: None,
        })
    }

    /// Revokes the token of the principal's instance whose id is `target`, or else every not
    /// yet revoked token of that instance whose subject is `target` (`token.revoked` each).
    /// Answers the tokens revoked, as they are now.
    pub async fn revoke_tokens(
        &self,
        ctx: &Context,
        target: &str,
    ) -> Result<Vec<TokenRecord>, Error> {
        let principal = &ctx.principal;
        may_manage_tokens(principal)?;
        let mut revoke = Revoke {
            principal,
            target,
            owner: owner(principal)?,
        };
        let recorded = self.run_tokens(ctx, &mut revoke).await?;
        let mut registry = TokenRegistry::default();
        for e in self.store.read_stream(&tokens_stream(), 1).await? {
            registry.apply(&TokenRegistry::decode(&e)?, e.created_at);
        }
        let mut revoked = Vec::new();
        for e in &recorded {
            if let TokenEvent::Revoked { id } = TokenRegistry::decode(e)? {
                revoked.extend(registry.get(&id).cloned());
            }
        }
        Ok(revoked)
    }

    /// The tokens of the principal's instance, by id (revoked and expired ones too).
    pub async fn list_tokens(&self, principal: &Principal) -> Result<Vec<TokenRecord>, Error> {
        may_manage_tokens(principal)?;
        let (registry, _) = self.fold::<TokenRegistry>(&tokens_stream()).await?;
        Ok(registry.of_instance(&principal.instance).cloned().collect())
    }

    async fn run_tokens<C: Command<TokenRegistry, Answer = ()>>(
        &self,
        ctx: &Context,
        command: &mut C,
    ) -> Result<Vec<RecordedEvent>, Error> {
        let subject = UserId::new(SYSTEM_SUBJECT).expect("a valid id");
        let outcome = self
            .run(
                ctx,
                &tokens_stream(),
                Load::whole(),
                self.max_attempts,
                &subject,
                command,
            )
            .await?;
        Ok(outcome.recorded)
    }
}
