//! The lifecycle states of SPEC.md and their wire names.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Where a user is in its lifecycle. `USER_STATE_UNSPECIFIED` exists only on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UserState {
    /// Added without a verified login yet.
    Initial,
    /// Added, reactivated or unlocked.
    Active,
    /// Deactivated.
    Inactive,
    /// Locked.
    Locked,
    /// Removed: terminal; reads answer not found.
    Deleted,
}

impl UserState {
    /// The proto enum name used in JSON and gRPC, e.g. `USER_STATE_ACTIVE`.
    pub fn wire_name(self) -> &'static str {
        match self {
            UserState::Initial => "USER_STATE_INITIAL",
            UserState::Active => "USER_STATE_ACTIVE",
            UserState::Inactive => "USER_STATE_INACTIVE",
            UserState::Locked => "USER_STATE_LOCKED",
            UserState::Deleted => "USER_STATE_DELETED",
        }
    }

    /// The proto enum number (`zitadel.user.v2.UserState`).
    pub fn wire_number(self) -> i32 {
        match self {
            UserState::Active => 1,
            UserState::Inactive => 2,
            UserState::Deleted => 3,
            UserState::Locked => 4,
            UserState::Initial => 5,
        }
    }
}

impl fmt::Display for UserState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            UserState::Initial => "initial",
            UserState::Active => "active",
            UserState::Inactive => "inactive",
            UserState::Locked => "locked",
            UserState::Deleted => "deleted",
        })
    }
}
