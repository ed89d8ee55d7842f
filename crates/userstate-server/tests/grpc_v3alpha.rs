//! `zitadel.user.v3alpha.UserService` (seed 003's service) over gRPC against a real server: every method,
//! the v3alpha details (no creation date) and the error codes.

mod common;
mod grpc_support;

use std::sync::Arc;

use common::*;
use grpc_support::*;
use userstate::MemoryStore;
use userstate_server::grpc::pb::zitadel::user::v3alpha::*;

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
            c.get_user_by_id(as_(
                token,
                GetUserByIdRequest {
                    user_id: "u1".into(),
                },
            ))
            .await
        }
    };
    let user = get(ACME_READER).await.unwrap().into_inner().user.unwrap();
    assert_eq!(user.user_id, "u1");
    assert_eq!(user.state, State::UserStateActive as i32);
    let details = user.details.unwrap();
    assert_eq!(
        (details.sequence, details.resource_owner.as_str()),
        (1, "acme")
    );
    assert!(details.change_date.is_some());

    let locked = c
        .lock_user(as_(ACME, LockUserRequest { user_id: id() }))
        .await
        .unwrap();
    let p1 = position(&locked);
    let d = locked.into_inner().details.unwrap();
    assert_eq!((d.sequence, d.resource_owner.as_str()), (2, "acme"));
    assert!(d.change_date.is_some());
    assert_eq!(
        get(ADMIN).await.unwrap().into_inner().user.unwrap().state,
        State::UserStateLocked as i32
    );
    let unlocked = c
        .unlock_user(as_(ACME, UnlockUserRequest { user_id: id() }))
        .await
        .unwrap();
    assert!(position(&unlocked) > p1);
    assert_eq!(unlocked.into_inner().details.unwrap().sequence, 3);
    let deactivated = c
        .deactivate_user(as_(ACME, DeactivateUserRequest { user_id: id() }))
        .await
        .unwrap();
    assert_eq!(deactivated.into_inner().details.unwrap().sequence, 4);
    assert_eq!(
        get(ADMIN).await.unwrap().into_inner().user.unwrap().state,
        State::UserStateInactive as i32
    );
    let activated = c
        .reactivate_user(as_(ACME, ReactivateUserRequest { user_id: id() }))
        .await
        .unwrap();
    assert_eq!(activated.into_inner().details.unwrap().sequence, 5);

    assert_status(
        c.unlock_user(as_(ACME, UnlockUserRequest { user_id: id() }))
            .await,
        9,
        "COMMAND-olb9vb0oca",
        "Errors.User.NotLocked",
    );
    assert_status(
        c.reactivate_user(as_(ACME, ReactivateUserRequest { user_id: id() }))
            .await,
        9,
        "COMMAND-s5qqcz97hf",
        "Errors.User.NotInactive",
    );
    assert_status(
        c.lock_user(req(None, LockUserRequest { user_id: id() }))
            .await,
        16,
        "AUTH-missing-token",
        "Errors.Token.Invalid",
    );
    assert_status(
        c.lock_user(as_(GLOBEX, LockUserRequest { user_id: id() }))
            .await,
        7,
        "AUTH-permission-denied",
        "Errors.PermissionDenied",
    );
    assert_status(
        c.delete_user(as_(ACME_WRITER, DeleteUserRequest { user_id: id() }))
            .await,
        7,
        "AUTH-permission-denied",
        "Errors.PermissionDenied",
    );
    assert_status(
        c.lock_user(as_(OTHER_INSTANCE, LockUserRequest { user_id: id() }))
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
                user_id: "bad id".into(),
            },
        ))
        .await,
        3,
        "USERSTATE-invalid-id",
        "Errors.Invalid.Id",
    );

    let deleted = c
        .delete_user(as_(ACME, DeleteUserRequest { user_id: id() }))
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
        c.reactivate_user(as_(ADMIN, ReactivateUserRequest { user_id: id() }))
            .await,
        5,
        "COMMAND-450yxuqrh1",
        "Errors.User.NotFound",
    );
    s.stop().await;
}
