//! A real ZITADEL client against a real server: the crates.io `zitadel` crate's generated
//! `zitadel.user.v2.UserService` client (tonic 0.14, ZITADEL's own messages) calls every v2
//! method userstate serves over gRPC; and seed 003's `zitadel.user.v3alpha.UserService/UnlockUser`
//! is called with messages written here from ZITADEL's field numbers, not from our `proto/`.

mod common;
mod grpc_support;

use std::net::SocketAddr;
use std::sync::Arc;

use common::*;
use grpc_support::raw_unary;
use prost::Message;
use tonic14::transport::Channel;
use tonic14::{Code, Request, Status};
use userstate::MemoryStore;
use userstate_server::grpc::pb::google::rpc::Status as RpcStatus;
use userstate_server::grpc::pb::zitadel::v1::ErrorDetail;
use zitadel::api::zitadel::object::v2::{organization::Org, Organization};
use zitadel::api::zitadel::user::v2::user_service_client::UserServiceClient;
use zitadel::api::zitadel::user::v2::*;

async fn client(addr: SocketAddr) -> UserServiceClient<Channel> {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .expect("valid uri")
        .connect()
        .await
        .expect("connect");
    UserServiceClient::new(channel)
}

/// A request with `authorization: Bearer <token>` (none when `token` is `None`).
fn req<T>(token: Option<&str>, message: T) -> Request<T> {
    let mut request = Request::new(message);
    if let Some(t) = token {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    request
}

fn as_<T>(token: &str, message: T) -> Request<T> {
    req(Some(token), message)
}

/// The status carries `code` and, in its details, one `zitadel.v1.ErrorDetail` (`id`, `key`).
fn assert_status<T: std::fmt::Debug>(result: Result<T, Status>, code: Code, id: &str, key: &str) {
    let status = result.expect_err("the call must fail");
    assert_eq!(status.code(), code, "{status:?}");
    let rpc = RpcStatus::decode(status.details()).expect("details are a google.rpc.Status");
    assert_eq!(rpc.code, code as i32);
    assert_eq!(rpc.details.len(), 1, "{rpc:?}");
    assert_eq!(
        rpc.details[0].type_url,
        "type.googleapis.com/zitadel.v1.ErrorDetail"
    );
    let detail = ErrorDetail::decode(rpc.details[0].value.as_slice()).unwrap();
    assert_eq!((detail.id.as_str(), detail.message.as_str()), (id, key));
}

#[tokio::test]
async fn zitadels_generated_client_calls_every_v2_method() {
    let s = TestServer::start(Arc::new(MemoryStore::new())).await;
    let mut c = client(s.addr).await;
    let added = c
        .add_human_user(as_(
            ADMIN,
            AddHumanUserRequest {
                user_id: Some("69629023906488334".into()),
                username: Some("alice".into()),
                organization: Some(Organization {
                    org: Some(Org::OrgId("acme".into())),
                }),
                profile: Some(SetHumanProfile {
                    given_name: "Alice".into(),
                    family_name: "Doe".into(),
                    // Not implemented by userstate: accepted and ignored.
                    nick_name: Some("Al".into()),
                    ..Default::default()
                }),
                email: Some(SetHumanEmail {
                    email: "alice@example.com".into(),
                    verification: Some(set_human_email::Verification::IsVerified(true)),
                }),
                ..Default::default()
            },
        ))
        .await
        .expect("AddHumanUser")
        .into_inner();
    assert_eq!(added.user_id, "69629023906488334");
    let d = added.details.expect("details");
    assert_eq!((d.sequence, d.resource_owner.as_str()), (1, "acme"));
    assert!(d.change_date.is_some());
    assert_eq!(d.change_date, d.creation_date);

    let reader = c.clone();
    let get = |token: &'static str| {
        let mut c = reader.clone();
        async move {
            c.get_user_by_id(as_(
                token,
                GetUserByIdRequest {
                    user_id: "69629023906488334".into(),
                },
            ))
            .await
        }
    };
    let got = get(ACME_READER).await.expect("GetUserByID").into_inner();
    let user = got.user.expect("user");
    assert_eq!(user.user_id, "69629023906488334");
    assert_eq!(user.username, "alice");
    assert_eq!(user.state(), UserState::Active);
    assert_eq!(user.details, got.details);
    let details = user.details.clone().unwrap();
    assert_eq!(
        (details.sequence, details.resource_owner.as_str()),
        (1, "acme")
    );
    assert_eq!(details.creation_date, d.creation_date);
    let Some(user::Type::Human(human)) = user.r#type else {
        panic!("a human user: {user:?}")
    };
    let profile = human.profile.expect("profile");
    assert_eq!(
        (profile.given_name.as_str(), profile.family_name.as_str()),
        ("Alice", "Doe")
    );
    let email = human.email.expect("email");
    assert_eq!(
        (email.email.as_str(), email.is_verified),
        ("alice@example.com", true)
    );

    let id = || "69629023906488334".to_owned();
    let deactivated = c
        .deactivate_user(as_(ACME, DeactivateUserRequest { user_id: id() }))
        .await
        .expect("DeactivateUser")
        .into_inner();
    assert_eq!(deactivated.details.unwrap().sequence, 2);
    assert_eq!(
        get(ADMIN).await.unwrap().into_inner().user.unwrap().state(),
        UserState::Inactive
    );
    let reactivated = c
        .reactivate_user(as_(ACME, ReactivateUserRequest { user_id: id() }))
        .await
        .expect("ReactivateUser")
        .into_inner();
    assert_eq!(reactivated.details.unwrap().sequence, 3);
    let locked = c
        .lock_user(as_(ACME, LockUserRequest { user_id: id() }))
        .await
        .expect("LockUser")
        .into_inner();
    let locked = locked.details.unwrap();
    assert_eq!(
        (locked.sequence, locked.resource_owner.as_str()),
        (4, "acme")
    );
    assert_eq!(locked.change_date, locked.creation_date);
    assert_eq!(
        get(ADMIN).await.unwrap().into_inner().user.unwrap().state(),
        UserState::Locked
    );
    let unlocked = c
        .unlock_user(as_(ACME, UnlockUserRequest { user_id: id() }))
        .await
        .expect("UnlockUser")
        .into_inner();
    assert_eq!(unlocked.details.unwrap().sequence, 5);

    // Errors, with ZITADEL's codes and error ids.
    assert_status(
        c.unlock_user(as_(ACME, UnlockUserRequest { user_id: id() }))
            .await,
        Code::FailedPrecondition,
        "COMMAND-olb9vb0oca",
        "Errors.User.NotLocked",
    );
    assert_status(
        c.reactivate_user(as_(ACME, ReactivateUserRequest { user_id: id() }))
            .await,
        Code::FailedPrecondition,
        "COMMAND-s5qqcz97hf",
        "Errors.User.NotInactive",
    );
    assert_status(
        c.lock_user(req(None, LockUserRequest { user_id: id() }))
            .await,
        Code::Unauthenticated,
        "AUTH-missing-token",
        "Errors.Token.Invalid",
    );
    assert_status(
        c.lock_user(as_(GLOBEX, LockUserRequest { user_id: id() }))
            .await,
        Code::PermissionDenied,
        "AUTH-permission-denied",
        "Errors.PermissionDenied",
    );
    assert_status(
        c.lock_user(as_(
            ACME,
            LockUserRequest {
                user_id: "bad id".into(),
            },
        ))
        .await,
        Code::InvalidArgument,
        "USERSTATE-invalid-id",
        "Errors.Invalid.Id",
    );
    assert_status(
        c.add_human_user(as_(
            ADMIN,
            AddHumanUserRequest {
                user_id: Some(id()),
                username: Some("alice2".into()),
                organization: Some(Organization {
                    org: Some(Org::OrgId("acme".into())),
                }),
                ..Default::default()
            },
        ))
        .await,
        Code::AlreadyExists,
        "COMMAND-7yiox1isql",
        "Errors.User.AlreadyExisting",
    );

    let deleted = c
        .delete_user(as_(ACME, DeleteUserRequest { user_id: id() }))
        .await
        .expect("DeleteUser")
        .into_inner();
    assert_eq!(deleted.details.unwrap().sequence, 6);
    assert_status(
        get(ADMIN).await,
        Code::NotFound,
        "COMMAND-450yxuqrh1",
        "Errors.User.NotFound",
    );
    // A method of ZITADEL's service that userstate does not serve.
    let unserved = c
        .set_email(as_(ADMIN, SetEmailRequest::default()))
        .await
        .expect_err("SetEmail is not served");
    assert_eq!(unserved.code(), Code::Unimplemented);
    s.stop().await;
}

/// ZITADEL 2.5x's `zitadel.user.v3alpha.UnlockUserRequest`, written here from ZITADEL's numbers.
#[derive(Clone, PartialEq, prost::Message)]
struct ZitadelUnlockUserRequest {
    #[prost(string, tag = "1")]
    user_id: String,
}

/// ZITADEL 2.5x's `zitadel.user.v3alpha.UnlockUserResponse`.
#[derive(Clone, PartialEq, prost::Message)]
struct ZitadelUnlockUserResponse {
    #[prost(message, optional, tag = "1")]
    details: Option<ZitadelV2betaDetails>,
}

/// ZITADEL's `zitadel.object.v2beta.Details`.
#[derive(Clone, PartialEq, prost::Message)]
struct ZitadelV2betaDetails {
    #[prost(uint64, tag = "1")]
    sequence: u64,
    #[prost(message, optional, tag = "2")]
    change_date: Option<prost_types::Timestamp>,
    #[prost(string, tag = "3")]
    resource_owner: String,
}

#[tokio::test]
async fn seed_003_unlock_over_grpc_with_zitadels_field_numbers() {
    let s = TestServer::start(Arc::new(MemoryStore::new())).await;
    assert_eq!(s.add(ADMIN, "69629026806489455", "acme").await.status, 201);
    assert_eq!(
        s.post("/v2/users/69629026806489455/lock", ADMIN)
            .await
            .status,
        200
    );
    let path = "/zitadel.user.v3alpha.UserService/UnlockUser";
    let request = ZitadelUnlockUserRequest {
        user_id: "69629026806489455".into(),
    };
    // Exactly the bytes a ZITADEL client sends: field 1, length-delimited.
    let bytes = request.encode_to_vec();
    assert_eq!(&bytes[..2], &[0x0a, 17]);
    let answer = raw_unary(s.addr, path, Some(ACME), bytes.clone())
        .await
        .expect("UnlockUser");
    let details = ZitadelUnlockUserResponse::decode(answer.into_inner().as_slice())
        .unwrap()
        .details
        .expect("details = 1");
    assert_eq!(details.sequence, 3);
    assert_eq!(details.resource_owner, "acme");
    let change_date = details.change_date.expect("change_date = 2");
    // The same details the JSON API reads back.
    let read = s.get("/v3alpha/users/69629026806489455", ADMIN).await;
    assert_eq!(read.body["details"]["sequence"], "3");
    assert_eq!(
        read.body["details"]["changeDate"],
        grpc_support::json_time(&change_date)
    );
    assert_eq!(read.body["user"]["state"], "USER_STATE_ACTIVE");
    // Unlocking again: FailedPrecondition, as in ZITADEL.
    let again = raw_unary(s.addr, path, Some(ACME), bytes).await;
    let status = again.expect_err("not locked any more");
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    s.stop().await;
}

/// ZITADEL's own `ListUsersRequest` (its generated types and client) decodes on our side, and
/// our answer decodes into its `ListUsersResponse`.
#[tokio::test]
async fn zitadel_client_lists_users() {
    use zitadel::api::zitadel::object::v2::{ListQuery, TextQueryMethod};
    let s = TestServer::start(Arc::new(MemoryStore::new())).await;
    for (id, org) in [("zl1", "acme"), ("zl2", "globex"), ("zl3", "acme")] {
        assert_eq!(s.add(ADMIN, id, org).await.status, 201);
    }
    let mut c = client(s.addr).await;
    let request = ListUsersRequest {
        query: Some(ListQuery {
            offset: 0,
            limit: 10,
            asc: false,
        }),
        sorting_column: UserFieldName::UserName as i32,
        queries: vec![SearchQuery {
            query: Some(search_query::Query::UserNameQuery(UserNameQuery {
                user_name: "ZL".to_owned(),
                method: TextQueryMethod::StartsWithIgnoreCase as i32,
            })),
        }],
    };
    let answer = c.list_users(as_(ACME, request)).await.unwrap().into_inner();
    let got: Vec<&str> = answer.result.iter().map(|u| u.user_id.as_str()).collect();
    assert_eq!(got, ["zl3", "zl1"]);
    assert_eq!(answer.details.unwrap().total_result, 2);
    assert_eq!(answer.result[0].state, UserState::Active as i32);
}
