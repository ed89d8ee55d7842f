//! `zitadel.user.v2.UserService` over gRPC against a real server, called with the generated tonic
//! client: every method, the exact details, generated and derived ids, idempotency metadata.

mod common;
mod grpc_support;

use std::sync::Arc;

use common::*;
use grpc_support::*;
use userstate::MemoryStore;
use userstate_server::grpc::pb::zitadel::user::v2::set_human_email::Verification;
use userstate_server::grpc::pb::zitadel::user::v2::*;

async fn server() -> TestServer {
    TestServer::start(Arc::new(MemoryStore::new())).await
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
