//! The one operation table: every user operation of SPEC.md declared once — its name, the
//! permission it needs, its REST route(s) per API version and its RPC name, how a parsed request
//! becomes a [`UserCommand`] (or the read), and which `details` form its answer carries — and
//! the one way to run it ([`StateCommand::run`], [`add_human_user`], [`get_user`],
//! [`list_users`], [`history`], [`state_as_of`]).
//!
//! The front ends are skins over it: REST builds its router from [`OPERATIONS`]
//! (`http::router`) and answers through one generic handler per kind; gRPC (v2 and v3alpha, and
//! through the same tonic services gRPC-web, `+json` and Connect) runs every state command
//! through one generic method. Each skin only parses its wire form into the arguments here and
//! renders the answer or the [`ApiError`] in its own form, in one place.
//!
//! Not here: authorisation (the engine checks the permission against the user's organisation;
//! [`Operation::permission`] documents it) and wire shapes ([`crate::wire`], `grpc::convert`).

use serde::Serialize;
use userstate::{
    AsOf, AuditState, AuthMethod, AuthOutcome, Details, DomainError, ListRequest, LockFor,
    LockoutPolicy, OrgId, PolicyDetails, PolicyView, RecordedEvent, UserCommand, UserId, UserList,
    UserView,
};

use crate::caller::Caller;
use crate::service::{NewHumanUser, UserService};
use crate::status::ApiError;
use crate::wire::{DetailsResponseV2, DetailsResponseV3, DetailsV2, DetailsV3};

/// The API versions: a family of REST routes, a gRPC service and a `details` form.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Api {
    /// `/v2/users…`, `zitadel.user.v2.UserService`, details with `creationDate`.
    V2,
    /// `/v3alpha/users…`, `zitadel.user.v3alpha.UserService`, `zitadel.object.v2beta.Details`
    /// (no `creationDate`).
    V3Alpha,
}

impl Api {
    /// The gRPC (and Connect) service of this version.
    pub fn service(self) -> &'static str {
        match self {
            Api::V2 => "zitadel.user.v2.UserService",
            Api::V3Alpha => "zitadel.user.v3alpha.UserService",
        }
    }

    /// The request path of `rpc` in this version's service (`/zitadel.user.v2.UserService/LockUser`).
    pub fn rpc_path(self, rpc: &str) -> String {
        format!("/{}/{rpc}", self.service())
    }
}

/// A command that takes nothing but a user id and answers `details`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StateCommand {
    /// Active or locked -> inactive.
    Deactivate,
    /// Inactive -> active.
    Reactivate,
    /// Active or initial -> locked.
    Lock,
    /// Locked -> active.
    Unlock,
    /// Any -> deleted (terminal).
    Remove,
    /// A removed user's personal data erased (ours, REST v2 only; SPEC.md "Erasure and
    /// tamper evidence").
    Erase,
}

impl StateCommand {
    /// The engine command for `user`.
    pub fn command(self, user: UserId) -> UserCommand {
        match self {
            StateCommand::Deactivate => UserCommand::Deactivate(user),
            StateCommand::Reactivate => UserCommand::Reactivate(user),
            StateCommand::Lock => UserCommand::Lock(user),
            StateCommand::Unlock => UserCommand::Unlock(user),
            StateCommand::Remove => UserCommand::Remove(user),
            StateCommand::Erase => UserCommand::Erase(user),
        }
    }

    /// Runs the command on `user` as `caller`: what every protocol's state command does.
    pub async fn run(
        self,
        service: &UserService,
        caller: &Caller,
        user: UserId,
    ) -> Result<Details, ApiError> {
        service
            .execute(&caller.principal, &caller.meta, self.command(user))
            .await
    }
}

/// Reads `LockUser`'s optional `duration` (a proto3 JSON duration, `"3600s"`).
pub fn lock_duration(value: &serde_json::Value) -> Result<std::time::Duration, ApiError> {
    let invalid = |reason: String| DomainError::InvalidArgument {
        field: "duration",
        reason,
    };
    let text = value
        .as_str()
        .ok_or_else(|| invalid("must be a string like \"3600s\"".to_owned()))?;
    let duration = userstate::domain::parse_duration(text).map_err(invalid)?;
    userstate::domain::check_duration("duration", duration)?;
    Ok(duration)
}

/// Locks `user` for `duration` as `caller` (zero: until unlocked by hand); the service
/// unlocks it when the duration has passed.
pub async fn lock_for(
    service: &UserService,
    caller: &Caller,
    user: UserId,
    duration: std::time::Duration,
) -> Result<Details, ApiError> {
    let command = UserCommand::LockFor(LockFor {
        user_id: user,
        duration,
        now: chrono::Utc::now(),
    });
    service
        .execute(&caller.principal, &caller.meta, command)
        .await
}

/// Reads the `method` of an authentication report: `"password"` (also when absent) or `"otp"`.
pub fn auth_method(value: Option<&serde_json::Value>) -> Result<AuthMethod, ApiError> {
    match value {
        None | Some(serde_json::Value::Null) => Ok(AuthMethod::Password),
        Some(serde_json::Value::String(m)) if m == "password" => Ok(AuthMethod::Password),
        Some(serde_json::Value::String(m)) if m == "otp" => Ok(AuthMethod::Otp),
        Some(other) => Err(DomainError::InvalidArgument {
            field: "method",
            reason: format!("is {other}, expected \"password\" or \"otp\""),
        }
        .into()),
    }
}

/// Records the identity backend's check of `user` by `method` as `caller`: a failure
/// (`failed`; the one that reaches the lockout policy's maximum also locks the user) or a
/// success (the method's failures forgotten).
pub async fn report_authentication(
    service: &UserService,
    caller: &Caller,
    user: UserId,
    method: AuthMethod,
    failed: bool,
) -> Result<Details, ApiError> {
    let outcome = AuthOutcome {
        user_id: user,
        method,
        now: chrono::Utc::now(),
    };
    let command = match failed {
        true => UserCommand::AuthFailed(outcome),
        false => UserCommand::AuthSucceeded(outcome),
    };
    service
        .execute(&caller.principal, &caller.meta, command)
        .await
}

/// The lockout policy in force for `org` (the instance's when `None`) as `caller` reads it.
pub async fn get_lockout_policy(
    service: &UserService,
    caller: &Caller,
    org: Option<&OrgId>,
) -> Result<PolicyView, ApiError> {
    service.get_lockout_policy(&caller.principal, org).await
}

/// Sets the lockout policy of `org` (the instance's when `None`) as `caller`.
pub async fn set_lockout_policy(
    service: &UserService,
    caller: &Caller,
    org: Option<&OrgId>,
    policy: LockoutPolicy,
) -> Result<PolicyDetails, ApiError> {
    service
        .set_lockout_policy(&caller.principal, &caller.meta, org, policy)
        .await
}

/// Adds a human user as `caller` (the id is generated or derived when absent, see
/// [`UserService::add_human_user`]).
pub async fn add_human_user(
    service: &UserService,
    caller: &Caller,
    new: NewHumanUser,
) -> Result<(UserId, Details), ApiError> {
    service
        .add_human_user(&caller.principal, &caller.meta, new)
        .await
}

/// Reads `user` as `caller`, after the caller's own writes.
pub async fn get_user(
    service: &UserService,
    caller: &Caller,
    user: &UserId,
) -> Result<UserView, ApiError> {
    service
        .get_user(&caller.principal, &caller.meta, user)
        .await
}

/// Lists the users `caller` may read that match `request`, after the caller's own writes.
pub async fn list_users(
    service: &UserService,
    caller: &Caller,
    request: &ListRequest,
) -> Result<UserList, ApiError> {
    service
        .list_users(&caller.principal, &caller.meta, request)
        .await
}

/// A page of `user`'s history after sequence `after`, and its state now.
pub async fn history(
    service: &UserService,
    caller: &Caller,
    user: &UserId,
    after: u64,
    limit: usize,
) -> Result<(Vec<RecordedEvent>, AuditState), ApiError> {
    service.history(&caller.principal, user, after, limit).await
}

/// `user`'s state as of `at`.
pub async fn state_as_of(
    service: &UserService,
    caller: &Caller,
    user: &UserId,
    at: AsOf,
) -> Result<AuditState, ApiError> {
    service.state_as_of(&caller.principal, user, at).await
}

/// What an operation does, and so how its request is parsed and its answer built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Add a human user (REST answers 201).
    AddHumanUser,
    /// Read one user.
    GetUser,
    /// List users (SPEC.md "Listing users").
    ListUsers,
    /// A user's history (ours, REST only; SPEC.md "Audit").
    History,
    /// A user's state as of a sequence or time (ours, REST only; SPEC.md "Audit").
    StateAsOf,
    /// One of the state commands.
    State(StateCommand),
    /// The identity backend reports a failed check (ours: REST and [`LOCKOUT_SERVICE`]; SPEC.md
    /// "Lockout policy and timed locks").
    AuthFailed,
    /// The identity backend reports a successful check (ours: REST and [`LOCKOUT_SERVICE`]).
    AuthSucceeded,
    /// Read the lockout policy in force (ours, REST only).
    GetLockoutPolicy,
    /// Set the instance's or an organisation's lockout policy (ours, REST only).
    SetLockoutPolicy,
}

/// An HTTP method of a REST route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verb {
    /// `GET`.
    Get,
    /// `POST`.
    Post,
    /// `DELETE`.
    Delete,
    /// `PUT`.
    Put,
}

/// One REST route of an operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route {
    /// The method.
    pub verb: Verb,
    /// The path, with `{userId}`.
    pub path: &'static str,
    /// An alias kept for earlier clients: routed, not in the OpenAPI document.
    pub alias: bool,
}

/// One user operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Operation {
    /// What it does.
    pub kind: Kind,
    /// Its name in SPEC.md's table.
    pub name: &'static str,
    /// The permission the principal needs on the user's organisation (checked by the engine).
    pub permission: &'static str,
    /// The RPC name, the same in every version's service (also the Connect path's last
    /// segment); `None` for an operation offered over REST only.
    pub rpc: Option<&'static str>,
    /// The userstate-own gRPC service that offers `rpc` (e.g. [`LOCKOUT_SERVICE`]) when it is
    /// not each version's ZITADEL user service; `None` for ZITADEL's RPCs.
    pub rpc_service: Option<&'static str>,
    /// The v2 REST routes, or `None` when v2 does not offer it.
    pub v2: Option<&'static [Route]>,
    /// The v3alpha REST routes, or `None` when v3alpha does not offer it.
    pub v3alpha: Option<&'static [Route]>,
}

/// userstate's own gRPC service of the authentication reports (ZITADEL has none; its messages
/// are left as they are): `proto/userstate/lockout/v1/lockout_service.proto`.
pub const LOCKOUT_SERVICE: &str = "userstate.lockout.v1.LockoutService";

impl Operation {
    /// The gRPC (and Connect) request paths of the operation: `rpc` in each version's user
    /// service, or once in its own [`rpc_service`](Self::rpc_service); none over REST only.
    pub fn rpc_paths(&self) -> Vec<String> {
        let Some(rpc) = self.rpc else {
            return Vec::new();
        };
        match self.rpc_service {
            Some(service) => vec![format!("/{service}/{rpc}")],
            None => self.bindings().map(|(api, _)| api.rpc_path(rpc)).collect(),
        }
    }

    /// The versions that offer the operation, with their REST routes.
    pub fn bindings(&self) -> impl Iterator<Item = (Api, &'static [Route])> {
        [(Api::V2, self.v2), (Api::V3Alpha, self.v3alpha)]
            .into_iter()
            .filter_map(|(api, routes)| Some((api, routes?)))
    }
}

const fn post(path: &'static str) -> Route {
    Route {
        verb: Verb::Post,
        path,
        alias: false,
    }
}

/// A state command, offered in both versions.
const fn state(
    command: StateCommand,
    name: &'static str,
    permission: &'static str,
    rpc: &'static str,
    v2: &'static [Route],
    v3alpha: &'static [Route],
) -> Operation {
    Operation {
        kind: Kind::State(command),
        name,
        permission,
        rpc: Some(rpc),
        rpc_service: None,
        v2: Some(v2),
        v3alpha: Some(v3alpha),
    }
}

/// Every user operation of SPEC.md.
pub const OPERATIONS: &[Operation] = &[
    Operation {
        kind: Kind::AddHumanUser,
        name: "add",
        permission: "user.write",
        rpc: Some("AddHumanUser"),
        rpc_service: None,
        v2: Some(&[post("/v2/users/human")]),
        v3alpha: None,
    },
    Operation {
        kind: Kind::GetUser,
        name: "get",
        permission: "user.read",
        rpc: Some("GetUserByID"),
        rpc_service: None,
        v2: Some(&[Route {
            verb: Verb::Get,
            path: "/v2/users/{userId}",
            alias: false,
        }]),
        v3alpha: Some(&[Route {
            verb: Verb::Get,
            path: "/v3alpha/users/{userId}",
            alias: false,
        }]),
    },
    Operation {
        kind: Kind::ListUsers,
        name: "list",
        permission: "user.read",
        rpc: Some("ListUsers"),
        rpc_service: None,
        v2: Some(&[post("/v2/users")]),
        v3alpha: None,
    },
    Operation {
        kind: Kind::History,
        name: "history",
        permission: "user.read",
        rpc: None,
        rpc_service: None,
        v2: Some(&[Route {
            verb: Verb::Get,
            path: "/v2/users/{userId}/history",
            alias: false,
        }]),
        v3alpha: None,
    },
    Operation {
        kind: Kind::StateAsOf,
        name: "state",
        permission: "user.read",
        rpc: None,
        rpc_service: None,
        v2: Some(&[Route {
            verb: Verb::Get,
            path: "/v2/users/{userId}/state",
            alias: false,
        }]),
        v3alpha: None,
    },
    Operation {
        kind: Kind::AuthFailed,
        name: "authentication failed",
        permission: "user.write",
        rpc: Some("ReportAuthenticationFailed"),
        rpc_service: Some(LOCKOUT_SERVICE),
        v2: Some(&[post("/v2/users/{userId}/authentication/failed")]),
        v3alpha: None,
    },
    Operation {
        kind: Kind::AuthSucceeded,
        name: "authentication succeeded",
        permission: "user.write",
        rpc: Some("ReportAuthenticationSucceeded"),
        rpc_service: Some(LOCKOUT_SERVICE),
        v2: Some(&[post("/v2/users/{userId}/authentication/succeeded")]),
        v3alpha: None,
    },
    Operation {
        kind: Kind::GetLockoutPolicy,
        name: "get lockout policy",
        permission: "user.read",
        rpc: None,
        rpc_service: None,
        v2: Some(&[Route {
            verb: Verb::Get,
            path: "/v2/policies/lockout",
            alias: false,
        }]),
        v3alpha: None,
    },
    Operation {
        kind: Kind::SetLockoutPolicy,
        name: "set lockout policy",
        permission: "user.write",
        rpc: None,
        rpc_service: None,
        v2: Some(&[Route {
            verb: Verb::Put,
            path: "/v2/policies/lockout",
            alias: false,
        }]),
        v3alpha: None,
    },
    state(
        StateCommand::Deactivate,
        "deactivate",
        "user.write",
        "DeactivateUser",
        &[post("/v2/users/{userId}/deactivate")],
        &[post("/v3alpha/users/{userId}/deactivate")],
    ),
    state(
        StateCommand::Reactivate,
        "reactivate",
        "user.write",
        "ReactivateUser",
        &[post("/v2/users/{userId}/reactivate")],
        &[
            post("/v3alpha/users/{userId}/reactivate"),
            // The name of earlier userstate releases.
            Route {
                verb: Verb::Post,
                path: "/v3alpha/users/{userId}/activate",
                alias: true,
            },
        ],
    ),
    state(
        StateCommand::Lock,
        "lock",
        "user.write",
        "LockUser",
        &[post("/v2/users/{userId}/lock")],
        &[post("/v3alpha/users/{userId}/lock")],
    ),
    state(
        StateCommand::Unlock,
        "unlock",
        "user.write",
        "UnlockUser",
        &[post("/v2/users/{userId}/unlock")],
        &[post("/v3alpha/users/{userId}/unlock")],
    ),
    state(
        StateCommand::Remove,
        "remove",
        "user.delete",
        "DeleteUser",
        &[Route {
            verb: Verb::Delete,
            path: "/v2/users/{userId}",
            alias: false,
        }],
        &[Route {
            verb: Verb::Delete,
            path: "/v3alpha/users/{userId}",
            alias: false,
        }],
    ),
    Operation {
        kind: Kind::State(StateCommand::Erase),
        name: "erase",
        permission: "user.delete",
        rpc: None,
        rpc_service: None,
        v2: Some(&[post("/v2/users/{userId}/erase")]),
        v3alpha: None,
    },
];

/// An API version as a type, so a skin can be generic over it: the `details` form of its
/// answers in JSON ([`crate::wire`]; the protobuf form is `grpc::convert`'s `ProtoForm`).
pub trait ApiVersion: Send + Sync + 'static {
    /// The version.
    const API: Api;
    /// `details` in JSON.
    type JsonDetails: for<'a> From<&'a Details> + Serialize + Send;
    /// The JSON answer of a state command.
    type JsonCommandAnswer: Serialize + Send;

    /// The JSON answer of a state command that produced `details`.
    fn json_command_answer(details: &Details) -> Self::JsonCommandAnswer;
}

/// `zitadel.user.v2`.
#[derive(Clone, Copy, Debug)]
pub struct V2;

/// `zitadel.user.v3alpha`.
#[derive(Clone, Copy, Debug)]
pub struct V3Alpha;

impl ApiVersion for V2 {
    const API: Api = Api::V2;
    type JsonDetails = DetailsV2;
    type JsonCommandAnswer = DetailsResponseV2;

    fn json_command_answer(details: &Details) -> DetailsResponseV2 {
        DetailsResponseV2 {
            details: DetailsV2::from(details),
        }
    }
}

impl ApiVersion for V3Alpha {
    const API: Api = Api::V3Alpha;
    type JsonDetails = DetailsV3;
    type JsonCommandAnswer = DetailsResponseV3;

    fn json_command_answer(details: &Details) -> DetailsResponseV3 {
        DetailsResponseV3 {
            details: DetailsV3::from(details),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_command_is_offered_in_both_versions() {
        for op in OPERATIONS {
            // Erase is ours, REST v2 only.
            if let Kind::State(command) = op.kind {
                if command == StateCommand::Erase {
                    continue;
                }
                let apis: Vec<Api> = op.bindings().map(|(api, _)| api).collect();
                assert_eq!(apis, [Api::V2, Api::V3Alpha], "{}", op.name);
            }
        }
    }

    #[test]
    fn rpc_paths_name_the_service() {
        assert_eq!(
            Api::V3Alpha.rpc_path("UnlockUser"),
            "/zitadel.user.v3alpha.UserService/UnlockUser"
        );
    }
}
