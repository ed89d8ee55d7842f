//! Errors of `zitadel.user.v2.UserService` over gRPC against a real server, called with the
//! generated tonic client: every code with its `ErrorDetail` in the status details, and the
//! gRPC request metrics.

mod common;
mod grpc_support;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use grpc_support::*;
use userstate::MemoryStore;
use userstate_server::grpc::pb::zitadel::user::v2::*;

async fn server() -> TestServer {
    TestServer::start(Arc::new(MemoryStore::new())).await
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
async fn a_malformed_message_is_invalid_argument() {
    let s = server().await;
    let paths = [
        "/zitadel.user.v2.UserService/LockUser",
        "/zitadel.user.v2.UserService/AddHumanUser",
        "/zitadel.user.v3alpha.UserService/LockUser",
    ];
    // A field cut short, and field number 0: malformed whatever the message.
    for payload in [vec![0x0a, 0x05, b'u'], vec![0x00, 0x01]] {
        for path in paths {
            assert_status(
                raw_unary(s.addr, path, Some(ADMIN), payload.clone()).await,
                3,
                "GRPC-malformed-message",
                "Errors.Invalid.Body",
            );
        }
    }
    // `user_id` (field 1, a string) sent as a varint.
    assert_status(
        raw_unary(s.addr, paths[0], Some(ADMIN), vec![0x08, 0x01]).await,
        3,
        "GRPC-malformed-message",
        "Errors.Invalid.Body",
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
