//! Which events a feed reader sees: [`is_public`] (the feed carries users and lockout
//! policies, never bookkeeping) and [`Filter`] (instance, types, organisations, grants).

use std::collections::HashSet;

use crate::domain::{StreamKind, StreamName};
use crate::engine::{Permission, Principal};
use crate::store::RecordedEvent;

/// Whether `event` belongs to the feed: the events of users and of lockout policies. Username
/// reservations, idempotency records, delivery checkpoints and streams of other writers are
/// bookkeeping and are never delivered.
pub fn is_public(event: &RecordedEvent) -> bool {
    matches!(
        StreamKind::of(event.stream.as_str()),
        Some(StreamKind::User | StreamKind::LockoutPolicy)
    )
}

/// The organisation an event of the feed concerns: a user's resource owner, a policy's
/// organisation (`None`: the instance's own policy, or an event outside the feed).
pub fn organisation_of(event: &RecordedEvent) -> Option<&str> {
    match StreamName::parse(event.stream.as_str())? {
        StreamName::User { .. } => Some(event.metadata.resource_owner.as_str()),
        StreamName::LockoutPolicy { org, .. } => org,
        _ => None,
    }
}

/// What a [`Subscription`](super::Subscription) hands out. [`Filter::all`] accepts every
/// event; [`Filter::public`] only the feed's ([`is_public`]), narrowed further by instance,
/// event types and organisations (an event concerning no organisation, the instance's
/// lockout policy, passes an organisation filter never).
///
/// ```
/// use userstate::feed::Filter;
/// use userstate::{InstanceId, OrgId, Permission, Principal};
///
/// let reader = Principal::for_orgs("siem", InstanceId::new("default").unwrap(),
///     [OrgId::new("acme").unwrap()], &[Permission::UserRead]);
/// // Asking for two organisations, granted one: sees that one.
/// let filter = Filter::public().with_orgs(["acme", "other"]).visible_to(&reader);
/// assert_eq!(filter.orgs().unwrap().len(), 1);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    public_only: bool,
    instance: Option<String>,
    types: Option<HashSet<String>>,
    orgs: Option<HashSet<String>>,
}

impl Filter {
    /// Every event, bookkeeping included (an embedder's own consumer).
    pub fn all() -> Self {
        Self::default()
    }

    /// The feed's events ([`is_public`]) of every instance, type and organisation.
    pub fn public() -> Self {
        Self {
            public_only: true,
            ..Self::default()
        }
    }

    /// Only events of `instance`.
    pub fn with_instance(mut self, instance: impl Into<String>) -> Self {
        self.instance = Some(instance.into());
        self
    }

    /// Only events of these types.
    pub fn with_types<S: Into<String>>(mut self, types: impl IntoIterator<Item = S>) -> Self {
        self.types = Some(types.into_iter().map(Into::into).collect());
        self
    }

    /// Only events concerning these organisations (narrowing any earlier organisation filter).
    pub fn with_orgs<S: Into<String>>(mut self, orgs: impl IntoIterator<Item = S>) -> Self {
        let asked: HashSet<String> = orgs.into_iter().map(Into::into).collect();
        self.orgs = Some(match self.orgs.take() {
            Some(before) => before.intersection(&asked).cloned().collect(),
            None => asked,
        });
        self
    }

    /// Narrowed to what `principal` may read (`user.read`): its instance, and unless it holds
    /// `user.read` on the whole instance, the organisations it holds it on.
    pub fn visible_to(mut self, principal: &Principal) -> Self {
        self.instance = Some(principal.instance.as_str().to_owned());
        if principal.instance_grants.contains(&Permission::UserRead) {
            return self;
        }
        let granted = principal
            .org_grants
            .iter()
            .filter(|(_, p)| p.contains(&Permission::UserRead))
            .map(|(o, _)| o.as_str().to_owned());
        self.with_orgs(granted)
    }

    /// The organisations it is limited to (`None`: any).
    pub fn orgs(&self) -> Option<&HashSet<String>> {
        self.orgs.as_ref()
    }

    /// Whether a reader with this filter gets `event`.
    pub fn accepts(&self, event: &RecordedEvent) -> bool {
        if self.public_only && !is_public(event) {
            return false;
        }
        if let Some(instance) = &self.instance {
            let name = event.stream.as_str();
            let of_event = match StreamName::parse(name) {
                Some(parsed) => parsed.instance(),
                None => event.metadata.instance.as_str(),
            };
            if of_event != instance {
                return false;
            }
        }
        if let Some(types) = &self.types {
            if !types.contains(&event.event_type) {
                return false;
            }
        }
        if let Some(orgs) = &self.orgs {
            match organisation_of(event) {
                Some(org) if orgs.contains(org) => {}
                _ => return false,
            }
        }
        true
    }
}
