//! Tokens kept in the store through the engine: who may manage them, instances kept apart,
//! and that the token stream is never taken for a user (read model, list, verify, lock ends).

use std::collections::BTreeMap;

use chrono::Utc;

use super::*;
use crate::domain::{TokenCreated, TokenId, TokenStatus};

fn sha256_hex(text: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn token(id: &str, subject: &str, instance: &str) -> TokenCreated {
    TokenCreated {
        id: TokenId::new(id).unwrap(),
        sha256: sha256_hex(id),
        subject: subject.into(),
        instance: inst(instance),
        instance_grants: vec![Permission::UserRead],
        org_grants: BTreeMap::new(),
        expires_at: None,
    }
}

#[tokio::test]
async fn tokens_are_created_listed_and_revoked_per_instance() {
    let engine = engine();
    let created = engine
        .create_token(&admin(), &token("tok_a", "ci", "i1"))
        .await
        .unwrap();
    assert_eq!(created.status(Utc::now()), TokenStatus::Active);
    engine
        .create_token(&admin(), &token("tok_b", "ci", "i1"))
        .await
        .unwrap();
    let other = Context::new(Principal::system("admin", inst("i2")));
    engine
        .create_token(&other, &token("tok_c", "ci", "i2"))
        .await
        .unwrap();
    // Another instance's token is neither created nor seen nor revoked from i1.
    let err = engine
        .create_token(&admin(), &token("tok_d", "ci", "i2"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied);
    let listed = engine.list_tokens(&admin().principal).await.unwrap();
    let ids: Vec<&str> = listed.iter().map(|r| r.token.id.as_str()).collect();
    assert_eq!(ids, ["tok_a", "tok_b"]);
    let err = engine.revoke_tokens(&admin(), "tok_c").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    // By subject: both of i1, none of i2.
    let revoked = engine.revoke_tokens(&admin(), "ci").await.unwrap();
    assert_eq!(revoked.len(), 2);
    assert!(revoked
        .iter()
        .all(|r| r.status(Utc::now()) == TokenStatus::Revoked));
    let err = engine.revoke_tokens(&admin(), "tok_a").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition);
    let left = engine.list_tokens(&other.principal).await.unwrap();
    assert_eq!(left[0].status(Utc::now()), TokenStatus::Active);
}

#[tokio::test]
async fn only_an_instance_wide_administrator_manages_tokens() {
    let engine = engine();
    let reader = Context::new(Principal {
        instance_grants: [Permission::UserRead, Permission::UserWrite].into(),
        ..Principal::system("op", inst("i1"))
    });
    let org_admin = Context::new(Principal::for_orgs(
        "op",
        inst("i1"),
        [org("o1")],
        &Permission::ALL,
    ));
    for ctx in [reader, org_admin] {
        let err = engine
            .create_token(&ctx, &token("tok_a", "ci", "i1"))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::PermissionDenied);
        let err = engine.list_tokens(&ctx.principal).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::PermissionDenied);
        let err = engine.revoke_tokens(&ctx, "ci").await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::PermissionDenied);
    }
}

#[tokio::test]
async fn the_token_stream_is_no_user_anywhere() {
    let store = Arc::new(MemoryStore::new());
    let engine = Engine::new(store.clone());
    engine
        .execute(&admin(), add("u1", "alice", "o1"))
        .await
        .unwrap();
    engine
        .create_token(&admin(), &token("tok_a", "ci", "i1"))
        .await
        .unwrap();
    engine.revoke_tokens(&admin(), "tok_a").await.unwrap();
    let model = ReadModel::rebuild(store.as_ref()).await.unwrap();
    assert_eq!(model.len(), 1);
    assert_eq!(model.position(), 4);
    assert_eq!(model.next_lock_end(), None);
    let list = model
        .list(&admin().principal, &ListRequest::default())
        .unwrap();
    assert_eq!(list.total, 1);
    let report = crate::verify::verify_store(store.as_ref(), |_| {})
        .await
        .unwrap();
    assert!(report.is_clean(), "{:?}", report.findings);
    assert_eq!((report.users, report.streams), (1, 3));
    // A user id that looks like the stream's parts is still just a user.
    let err = engine.load(&inst("i1"), &uid("tok_a")).await;
    assert!(err.is_ok_and(|l| l.user.data().is_none()));
}
