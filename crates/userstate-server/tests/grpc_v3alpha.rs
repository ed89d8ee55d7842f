//! `zitadel.resources.user.v3alpha.ZITADELUsers` over gRPC against a real server: every method,
//! the v3alpha details (no creation date) and the error codes.

mod common;
mod grpc_support;

use std::sync::Arc;

use common::*;
use grpc_support::*;
use userstate::MemoryStore;
use userstate_server::grpc::pb::zitadel::resources::user::v3alpha::*;
use userstate_server::grpc::pb::zitadel::user::v2::UserState;

#[tokio::test]
async fn every_method_and_its_errors() {
    let s = TestServer::start(Arc::new(MemoryStore::new())).await;
    assert_eq!(s.add(ADMIN, "u1", "acme").await.status, 201);
    let mut c = v3(s.addr).await;
    let id = || "u1".to_owned();
    let reader = c.clone();
    let get = |token: &'static str| {
        let mut c = reader.clone();
        async move {
            c.get_user(as_(token, GetUserRequest { id: "u1".into() }))
                .await
        }
    };
    let read = get(ACME_READER).await.unwrap().into_inner();
    let user = read.user.unwrap();
    assert_eq!((user.id.as_str(), user.username.as_str()), ("u1", "u1"));
    assert_eq!(user.state, UserState::Active as i32);
    assert_eq!(user.details, read.details);
    assert_eq!(read.details.unwrap().sequence, 1);

    let locked = c
        .lock_user(as_(ACME, LockUserRequest { id: id() }))
        .await
        .unwrap();
    let p1 = position(&locked);
    let d = locked.into_inner().details.unwrap();
    assert_eq!((d.sequence, d.resource_owner.as_str()), (2, "acme"));
    assert!(d.change_date.is_some());
    assert_eq!(
        get(ADMIN).await.unwrap().into_inner().user.unwrap().state,
        UserState::Locked as i32
    );
    let unlocked = c
        .unlock_user(as_(ACME, UnlockUserRequest { id: id() }))
        .await
        .unwrap();
    assert!(position(&unlocked) > p1);
    assert_eq!(unlocked.into_inner().details.unwrap().sequence, 3);
    let deactivated = c
        .deactivate_user(as_(ACME, DeactivateUserRequest { id: id() }))
        .await
        .unwrap();
    assert_eq!(deactivated.into_inner().details.unwrap().sequence, 4);
    assert_eq!(
        get(ADMIN).await.unwrap().into_inner().user.unwrap().state,
        UserState::Inactive as i32
    );
    let activated = c
        .activate_user(as_(ACME, ActivateUserRequest { id: id() }))
        .await
        .unwrap();
    assert_eq!(activated.into_inner().details.unwrap().sequence, 5);

    assert_status(
        c.unlock_user(as_(ACME, UnlockUserRequest { id: id() }))
            .await,
        9,
        "COMMAND-olb9vb0oca",
        "Errors.User.NotLocked",
    );
    assert_status(
        c.activate_user(as_(ACME, ActivateUserRequest { id: id() }))
            .await,
        9,
        "COMMAND-s5qqcz97hf",
        "Errors.User.NotInactive",
    );
    assert_status(
        c.lock_user(req(None, LockUserRequest { id: id() })).await,
        16,
        "AUTH-missing-token",
        "Errors.Token.Invalid",
    );
    assert_status(
        c.lock_user(as_(GLOBEX, LockUserRequest { id: id() })).await,
        7,
        "AUTH-permission-denied",
        "Errors.PermissionDenied",
    );
    assert_status(
        c.delete_user(as_(ACME_WRITER, DeleteUserRequest { id: id() }))
            .await,
        7,
        "AUTH-permission-denied",
        "Errors.PermissionDenied",
    );
    assert_status(
        c.lock_user(as_(OTHER_INSTANCE, LockUserRequest { id: id() }))
            .await,
        5,
        "COMMAND-450yxuqrh1",
        "Errors.User.NotFound",
    );
    assert_status(
        get(OTHER_INSTANCE).await,
        5,
        "COMMAND-450yxuqrh1",
        "Errors.User.NotFound",
    );
    assert_status(
        c.lock_user(as_(
            ACME,
            LockUserRequest {
                id: "bad id".into(),
            },
        ))
        .await,
        3,
        "USERSTATE-invalid-id",
        "Errors.Invalid.Id",
    );

    let deleted = c
        .delete_user(as_(ACME, DeleteUserRequest { id: id() }))
        .await
        .unwrap();
    assert_eq!(deleted.into_inner().details.unwrap().sequence, 6);
    assert_status(
        get(ADMIN).await,
        5,
        "COMMAND-450yxuqrh1",
        "Errors.User.NotFound",
    );
    assert_status(
        c.activate_user(as_(ADMIN, ActivateUserRequest { id: id() }))
            .await,
        5,
        "COMMAND-450yxuqrh1",
        "Errors.User.NotFound",
    );
    s.stop().await;
}
