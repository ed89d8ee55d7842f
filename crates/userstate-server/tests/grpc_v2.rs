//! `zitadel.user.v2.UserService` over gRPC against a real server, called with the generated tonic
//! client: every method, the exact details, and every error code with its `ErrorDetail`.

mod common;
mod grpc_support;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use grpc_support::*;
use userstate::MemoryStore;
use userstate_server::grpc::pb::zitadel::object::v2::{organization::Org, Organization};
use userstate_server::grpc::pb::zitadel::user::v2::set_human_email::Verification;
use userstate_server::grpc::pb::zitadel::user::v2::*;

async fn server() -> TestServer {
    TestServer::start(Arc::new(MemoryStore::new())).await
}

fn add_request(id: Option<&str>, username: &str, org: &str) -> AddHumanUserRequest {
    AddHumanUserRequest {
        user_id: id.map(str::to_owned),
        username: Some(username.to_owned()),
        organization: Some(Organization {
            org: Some(Org::OrgId(org.to_owned())),
        }),
        ..Default::default()
    }
}

#[tokio::test]
async fn every_method_succeeds_with_exact_details() {
    let s = server().await;
    let mut c = v2(s.addr).await;
    let mut add = add_request(Some("69629023906488334"), "alice", "acme");
    add.profile = Some(SetHumanProfile {
        given_name: "Alice".into(),
        family_name: "Doe".into(),
    });
    add.email = Some(SetHumanEmail {
        email: "alice@example.com".into(),
        verification: Some(Verification::IsVerified(true)),
    });
    let added = c.add_human_user(as_(ADMIN, add)).await.unwrap();
    let add_position = position(&added);
    let added = added.into_inner();
    assert_eq!(added.user_id, "69629023906488334");
    let d = added.details.unwrap();
    assert_eq!((d.sequence, d.resource_owner.as_str()), (1, "acme"));
    assert_eq!(d.change_date, d.creation_date);
    assert!(d.change_date.is_some());

    let get = |c: &mut user_service_client::UserServiceClient<_>| {
        let mut c = c.clone();
        async move {
            c.get_user_by_id(as_(
                ACME_READER,
                GetUserByIdRequest {
                    user_id: "69629023906488334".into(),
                },
            ))
            .await
            .unwrap()
        }
    };
    let got = get(&mut c).await;
    assert!(position(&got) >= add_position);
    let got = got.into_inner();
    let user = got.user.unwrap();
    assert_eq!(user.state, UserState::Active as i32);
    assert_eq!(user.username, "alice");
    assert_eq!(user.details, got.details);
    let Some(user::Type::Human(human)) = user.r#type else {
        panic!("a human user")
    };
    assert_eq!(human.profile.unwrap().given_name, "Alice");
    let email = human.email.unwrap();
    assert_eq!(
        (email.email.as_str(), email.is_verified),
        ("alice@example.com", true)
    );

    let id = || "69629023906488334".to_owned();
    let creation = d.creation_date;
    let mut last_position = add_position;
    let steps: [(u64, UserState); 4] = [
        (2, UserState::Inactive),
        (3, UserState::Active),
        (4, UserState::Locked),
        (5, UserState::Active),
    ];
    for (sequence, state) in steps {
        let answer = match sequence {
            2 => c
                .deactivate_user(as_(ACME, DeactivateUserRequest { user_id: id() }))
                .await
                .map(|r| (position(&r), r.into_inner().details)),
            3 => c
                .reactivate_user(as_(ACME, ReactivateUserRequest { user_id: id() }))
                .await
                .map(|r| (position(&r), r.into_inner().details)),
            4 => c
                .lock_user(as_(ACME, LockUserRequest { user_id: id() }))
                .await
                .map(|r| (position(&r), r.into_inner().details)),
            _ => c
                .unlock_user(as_(ACME, UnlockUserRequest { user_id: id() }))
                .await
                .map(|r| (position(&r), r.into_inner().details)),
        };
        let (pos, details) = answer.unwrap();
        let details = details.unwrap();
        assert!(pos > last_position);
        last_position = pos;
        assert_eq!(details.sequence, sequence);
        assert_eq!(details.resource_owner, "acme");
        assert_eq!(
            details.creation_date, details.change_date,
            "manipulation form"
        );
        let read = get(&mut c).await.into_inner();
        let user = read.user.unwrap();
        assert_eq!(user.state, state as i32);
        let rd = read.details.unwrap();
        assert_eq!(rd.sequence, sequence);
        assert_eq!(rd.change_date, details.change_date);
        assert_eq!(rd.creation_date, creation, "read form: first event's time");
    }
    let deleted = c
        .delete_user(as_(ACME, DeleteUserRequest { user_id: id() }))
        .await
        .unwrap();
    assert!(position(&deleted) > last_position);
    assert_eq!(deleted.into_inner().details.unwrap().sequence, 6);
    let gone = c
        .get_user_by_id(as_(ADMIN, GetUserByIdRequest { user_id: id() }))
        .await;
    assert_status(gone, 5, "COMMAND-450yxuqrh1", "Errors.User.NotFound");
    s.stop().await;
}

#[tokio::test]
async fn initial_users_and_generated_ids() {
    let s = server().await;
    let mut c = v2(s.addr).await;
    let mut add = add_request(None, "ivy", "acme");
    add.initial = Some(true);
    let added = c
        .add_human_user(as_(ADMIN, add))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(added.user_id.len(), 18, "{}", added.user_id);
    let got = c
        .get_user_by_id(as_(
            ADMIN,
            GetUserByIdRequest {
                user_id: added.user_id.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.user.unwrap().state, UserState::Initial as i32);
    let refused = c
        .deactivate_user(as_(
            ADMIN,
            DeactivateUserRequest {
                user_id: added.user_id,
            },
        ))
        .await;
    assert_status(
        refused,
        9,
        "COMMAND-gvx4kct9r2",
        "Errors.User.CantDeactivateInitial",
    );
    s.stop().await;
}

#[tokio::test]
async fn every_failed_precondition_is_code_9() {
    let s = server().await;
    let mut c = v2(s.addr).await;
    c.add_human_user(as_(ADMIN, add_request(Some("u1"), "u1", "acme")))
        .await
        .unwrap();
    let u = || "u1".to_owned();
    assert_status(
        c.unlock_user(as_(ADMIN, UnlockUserRequest { user_id: u() }))
            .await,
        9,
        "COMMAND-olb9vb0oca",
        "Errors.User.NotLocked",
    );
    assert_status(
        c.reactivate_user(as_(ADMIN, ReactivateUserRequest { user_id: u() }))
            .await,
        9,
        "COMMAND-s5qqcz97hf",
        "Errors.User.NotInactive",
    );
    c.deactivate_user(as_(ADMIN, DeactivateUserRequest { user_id: u() }))
        .await
        .unwrap();
    assert_status(
        c.deactivate_user(as_(ADMIN, DeactivateUserRequest { user_id: u() }))
            .await,
        9,
        "COMMAND-5gunjw0cd7",
        "Errors.User.AlreadyInactive",
    );
    assert_status(
        c.lock_user(as_(ADMIN, LockUserRequest { user_id: u() }))
            .await,
        9,
        "COMMAND-lgws8wtsqf",
        "Errors.User.ShouldBeActiveOrInitial",
    );
    // gRPC calls are counted per method and gRPC code.
    let metrics = s
        .client
        .get(s.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let counted = |route: &str, code: &str| {
        metrics.lines().any(|l| {
            l.starts_with("userstate_http_requests_total{")
                && l.contains(&format!("route=\"{route}\""))
                && l.contains("method=\"GRPC\"")
                && l.contains(&format!("status=\"{code}\""))
        })
    };
    assert!(
        counted("/zitadel.user.v2.UserService/LockUser", "9"),
        "{metrics}"
    );
    assert!(
        counted("/zitadel.user.v2.UserService/DeactivateUser", "0"),
        "{metrics}"
    );
    assert!(
        counted("/zitadel.user.v2.UserService/AddHumanUser", "0"),
        "{metrics}"
    );
    s.stop().await;
}

#[tokio::test]
async fn authentication_permissions_and_instances() {
    let s = server().await;
    let mut c = v2(s.addr).await;
    c.add_human_user(as_(ADMIN, add_request(Some("u1"), "u1", "acme")))
        .await
        .unwrap();
    let u = || "u1".to_owned();
    // 16: no token, unknown token, wrong scheme — before anything else is looked at.
    assert_status(
        c.lock_user(req(None, LockUserRequest { user_id: u() }))
            .await,
        16,
        "AUTH-missing-token",
        "Errors.Token.Invalid",
    );
    assert_status(
        c.get_user_by_id(as_(
            "nope",
            GetUserByIdRequest {
                user_id: "bad id".into(),
            },
        ))
        .await,
        16,
        "AUTH-unknown-token",
        "Errors.Token.Invalid",
    );
    let mut basic = tonic::Request::new(LockUserRequest { user_id: u() });
    basic
        .metadata_mut()
        .insert("authorization", "Basic abc".parse().unwrap());
    assert_status(
        c.lock_user(basic).await,
        16,
        "AUTH-missing-token",
        "Errors.Token.Invalid",
    );
    // 7: another organisation, or a missing permission.
    let denied = [
        c.lock_user(as_(GLOBEX, LockUserRequest { user_id: u() }))
            .await
            .map(drop),
        c.get_user_by_id(as_(GLOBEX, GetUserByIdRequest { user_id: u() }))
            .await
            .map(drop),
        c.lock_user(as_(ACME_READER, LockUserRequest { user_id: u() }))
            .await
            .map(drop),
        c.delete_user(as_(ACME_WRITER, DeleteUserRequest { user_id: u() }))
            .await
            .map(drop),
        c.add_human_user(as_(GLOBEX, add_request(Some("u2"), "u2", "acme")))
            .await
            .map(drop),
    ];
    for result in denied {
        let status = result.expect_err("denied");
        assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    }
    assert_status(
        c.lock_user(as_(GLOBEX, LockUserRequest { user_id: u() }))
            .await,
        7,
        "AUTH-permission-denied",
        "Errors.PermissionDenied",
    );
    // 5: another instance never sees the user; an unknown user is not found either.
    assert_status(
        c.lock_user(as_(OTHER_INSTANCE, LockUserRequest { user_id: u() }))
            .await,
        5,
        "COMMAND-450yxuqrh1",
        "Errors.User.NotFound",
    );
    assert_status(
        c.get_user_by_id(as_(OTHER_INSTANCE, GetUserByIdRequest { user_id: u() }))
            .await,
        5,
        "COMMAND-450yxuqrh1",
        "Errors.User.NotFound",
    );
    assert_status(
        c.unlock_user(as_(
            ADMIN,
            UnlockUserRequest {
                user_id: "ghost".into(),
            },
        ))
        .await,
        5,
        "COMMAND-450yxuqrh1",
        "Errors.User.NotFound",
    );
    // Nothing of the refused calls changed the user.
    let read = c
        .get_user_by_id(as_(ADMIN, GetUserByIdRequest { user_id: u() }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(read.details.unwrap().sequence, 1);
    s.stop().await;
}

#[tokio::test]
async fn invalid_arguments_conflicts_and_unavailable_reads() {
    let s = TestServer::start_with(Arc::new(MemoryStore::new()), Duration::from_millis(200)).await;
    let mut c = v2(s.addr).await;
    // 3
    assert_status(
        c.lock_user(as_(
            ADMIN,
            LockUserRequest {
                user_id: "bad id".into(),
            },
        ))
        .await,
        3,
        "USERSTATE-invalid-id",
        "Errors.Invalid.Id",
    );
    assert_status(
        c.add_human_user(as_(
            ADMIN,
            AddHumanUserRequest {
                username: Some("x".into()),
                ..Default::default()
            },
        ))
        .await,
        3,
        "HTTP-missing-field",
        "Errors.Invalid.Argument",
    );
    assert_status(
        c.add_human_user(as_(ADMIN, add_request(Some("u9"), " ", "acme")))
            .await,
        3,
        "USERSTATE-invalid-argument",
        "Errors.Invalid.Argument",
    );
    let mut bad_key = as_(
        ADMIN,
        LockUserRequest {
            user_id: "u1".into(),
        },
    );
    bad_key
        .metadata_mut()
        .insert("idempotency-key", "k".repeat(129).parse().unwrap());
    assert_status(
        c.lock_user(bad_key).await,
        3,
        "HTTP-invalid-header",
        "Errors.Invalid.Header",
    );
    // Messages over the HTTP body limit: tonic's own OutOfRange, before any handler runs.
    let huge = c
        .add_human_user(as_(
            ADMIN,
            add_request(Some("u8"), &"x".repeat(70_000), "acme"),
        ))
        .await
        .expect_err("too large");
    assert_eq!(huge.code(), tonic::Code::OutOfRange, "{huge:?}");
    // 6
    let added = c
        .add_human_user(as_(ADMIN, add_request(Some("u1"), "u1", "acme")))
        .await
        .unwrap();
    let pos = position(&added);
    assert_status(
        c.add_human_user(as_(ADMIN, add_request(Some("u1"), "other", "acme")))
            .await,
        6,
        "COMMAND-7yiox1isql",
        "Errors.User.AlreadyExisting",
    );
    // 14: a read that must reflect a position the store never reaches.
    let mut future = as_(
        ADMIN,
        GetUserByIdRequest {
            user_id: "u1".into(),
        },
    );
    future.metadata_mut().insert(
        "x-userstate-min-position",
        (pos + 1000).to_string().parse().unwrap(),
    );
    assert_status(
        c.get_user_by_id(future).await,
        14,
        "QUERY-not-caught-up",
        "Errors.Projection.NotCaughtUp",
    );
    s.stop().await;
}

#[tokio::test]
async fn idempotency_key_metadata_answers_the_first_answer() {
    let s = server().await;
    let mut c = v2(s.addr).await;
    let keyed = |key: &str, token: &str| {
        let mut r = as_(token, add_request(None, "kim", "acme"));
        r.metadata_mut()
            .insert("idempotency-key", key.parse().unwrap());
        r
    };
    let first = c.add_human_user(keyed("add-1", ADMIN)).await.unwrap();
    let again = c.add_human_user(keyed("add-1", ADMIN)).await.unwrap();
    assert_eq!(position(&first), position(&again));
    let (first, again) = (first.into_inner(), again.into_inner());
    assert_eq!(first, again);
    let user_id = again.user_id;
    let lock = |key: &str| {
        let mut r = as_(
            ADMIN,
            LockUserRequest {
                user_id: user_id.clone(),
            },
        );
        r.metadata_mut()
            .insert("idempotency-key", key.parse().unwrap());
        r
    };
    let locked = c.lock_user(lock("lock-1")).await.unwrap();
    let retried = c.lock_user(lock("lock-1")).await.unwrap();
    assert_eq!(position(&locked), position(&retried));
    assert_eq!(locked.into_inner(), retried.into_inner());
    // Without the key, a repeated lock is refused, and the retries appended nothing.
    assert_status(
        c.lock_user(as_(
            ADMIN,
            LockUserRequest {
                user_id: user_id.clone(),
            },
        ))
        .await,
        9,
        "COMMAND-lgws8wtsqf",
        "Errors.User.ShouldBeActiveOrInitial",
    );
    let read = c
        .get_user_by_id(as_(ADMIN, GetUserByIdRequest { user_id }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(read.details.unwrap().sequence, 2);
    s.stop().await;
}
