//! Who is calling, and what it may do: principals and their permissions. The engine's
//! authorisation check against a user's resource owner (`authorise`, `may_act`) is in
//! `engine/mod.rs`, beside the command loop that runs it.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::domain::{InstanceId, OrgId, UserId};

/// A permission a principal can hold (ZITADEL's names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Permission {
    /// `user.read`: read users.
    #[serde(rename = "user.read")]
    UserRead,
    /// `user.write`: add, deactivate, reactivate, lock and unlock users.
    #[serde(rename = "user.write")]
    UserWrite,
    /// `user.delete`: remove users.
    #[serde(rename = "user.delete")]
    UserDelete,
}

impl Permission {
    /// Every permission.
    pub const ALL: [Permission; 3] = [
        Permission::UserRead,
        Permission::UserWrite,
        Permission::UserDelete,
    ];

    /// The permission's name, e.g. `user.write`.
    pub fn name(self) -> &'static str {
        match self {
            Permission::UserRead => "user.read",
            Permission::UserWrite => "user.write",
            Permission::UserDelete => "user.delete",
        }
    }
}

/// An authenticated caller: a subject in one instance with permissions per organisation or for
/// the whole instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// Who it is (recorded as the creator of the events it causes).
    pub subject: String,
    /// The only instance it can see.
    pub instance: InstanceId,
    /// Permissions on every organisation of the instance.
    pub instance_grants: HashSet<Permission>,
    /// Permissions per organisation.
    pub org_grants: HashMap<OrgId, HashSet<Permission>>,
}

impl Principal {
    /// A principal with every permission in `instance` (for embedding, tools and tests).
    pub fn system(subject: impl Into<String>, instance: InstanceId) -> Self {
        Self {
            subject: subject.into(),
            instance,
            instance_grants: Permission::ALL.into_iter().collect(),
            org_grants: HashMap::new(),
        }
    }

    /// A principal holding `permissions` on the given organisations only.
    pub fn for_orgs(
        subject: impl Into<String>,
        instance: InstanceId,
        orgs: impl IntoIterator<Item = OrgId>,
        permissions: &[Permission],
    ) -> Self {
        let perms: HashSet<Permission> = permissions.iter().copied().collect();
        Self {
            subject: subject.into(),
            instance,
            instance_grants: HashSet::new(),
            org_grants: orgs.into_iter().map(|o| (o, perms.clone())).collect(),
        }
    }

    /// Whether it may use `permission` on users owned by `org` (of its own instance).
    pub fn may(&self, permission: Permission, org: &OrgId) -> bool {
        self.instance_grants.contains(&permission)
            || self
                .org_grants
                .get(org)
                .is_some_and(|p| p.contains(&permission))
    }

    /// Whether this principal is the user `user` itself.
    pub fn is_user(&self, user: &UserId) -> bool {
        self.subject == user.as_str()
    }
}
