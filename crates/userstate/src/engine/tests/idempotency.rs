//! Idempotency keys (issue 20, SPEC.md "Idempotency keys"): scoped to (instance, subject, key),
//! authorised on every use, refused for another operation, user or parameters.

use super::*;

/// u1 in o1, locked; u2 in o2, active.
async fn two_users(engine: &Engine) {
    for command in [
        add("u1", "alice", "o1"),
        UserCommand::Lock(uid("u1")),
        add("u2", "bob", "o2"),
    ] {
        engine.execute(&admin(), command).await.unwrap();
    }
}

fn writer_of(subject: &str, organisation: &str, permissions: &[Permission]) -> Context {
    Context::new(Principal::for_orgs(
        subject,
        inst("i1"),
        [org(organisation)],
        permissions,
    ))
}

#[tokio::test]
async fn another_principal_with_the_same_key_gets_no_answer_it_may_not_see() {
    let store = Arc::new(MemoryStore::new());
    let engine = Engine::new(store.clone());
    two_users(&engine).await;
    let key = "shared-key";
    engine
        .execute(
            &admin().with_idempotency_key(key),
            UserCommand::Unlock(uid("u1")),
        )
        .await
        .unwrap();
    // Another organisation's writer, a read-only token: the key is not theirs, so the command
    // is authorised as any other and refused.
    for ctx in [
        writer_of("bob", "o2", &[Permission::UserWrite]),
        writer_of("reader", "o1", &[Permission::UserRead]),
    ] {
        let err = engine
            .execute(
                &ctx.with_idempotency_key(key),
                UserCommand::Unlock(uid("u1")),
            )
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
    }
    // The same key under another subject is a key of its own: a fresh command.
    let head = store.head_position().await.unwrap();
    let other = writer_of("carol", "o1", &[Permission::UserWrite]).with_idempotency_key(key);
    let err = engine
        .execute(&other, UserCommand::Unlock(uid("u1")))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition, "{err}");
    let lock = engine.execute(&other, UserCommand::Lock(uid("u1"))).await;
    assert_eq!(lock.unwrap_err().kind(), ErrorKind::KeyReused);
    assert!(
        store.head_position().await.unwrap() > head,
        "carol's claim is recorded"
    );
}

#[tokio::test]
async fn a_repeat_is_authorised_again() {
    let engine = engine();
    two_users(&engine).await;
    let both = Principal::for_orgs(
        "ops",
        inst("i1"),
        [org("o1")],
        &[Permission::UserWrite, Permission::UserDelete],
    );
    let ctx = Context::new(both).with_idempotency_key("k");
    let first = engine.execute(&ctx, UserCommand::Remove(uid("u1"))).await;
    let first = first.unwrap();
    // The same subject, its delete grant gone: the repeat is refused, not answered.
    let narrowed = writer_of("ops", "o1", &[Permission::UserWrite]).with_idempotency_key("k");
    let err = engine
        .execute(&narrowed, UserCommand::Remove(uid("u1")))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
    // With the grant, the repeat of the remove answers the first answer on the removed user.
    let again = engine.execute(&ctx, UserCommand::Remove(uid("u1"))).await;
    assert_eq!(again.unwrap(), first);
}

#[tokio::test]
async fn a_key_reused_for_another_operation_user_or_parameters_is_refused_and_appends_nothing() {
    let store = Arc::new(MemoryStore::new());
    let engine = Engine::new(store.clone());
    two_users(&engine).await;
    let keyed = admin().with_idempotency_key("k-1");
    engine
        .execute(&keyed, UserCommand::Unlock(uid("u1")))
        .await
        .unwrap();
    let head = store.head_position().await.unwrap();
    for command in [
        UserCommand::Lock(uid("u1")),
        UserCommand::Lock(uid("u2")),
        UserCommand::Remove(uid("u2")),
    ] {
        let err = engine.execute(&keyed, command).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::KeyReused, "{err}");
        assert_eq!(err.id(), "COMMAND-idempotency-key-reused");
    }
    // An add with the same key and id but another username is another request too.
    let keyed_add = admin().with_idempotency_key("add-1");
    engine
        .execute(&keyed_add, add("u3", "carol", "o1"))
        .await
        .unwrap();
    let head = head.max(store.head_position().await.unwrap());
    let err = engine
        .execute(&keyed_add, add("u3", "dave", "o1"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::KeyReused, "{err}");
    assert_eq!(store.head_position().await.unwrap(), head);
    assert_eq!(
        engine
            .load(&inst("i1"), &uid("u2"))
            .await
            .unwrap()
            .user
            .version(),
        1
    );
}

#[tokio::test]
async fn concurrent_repeats_of_one_keyed_command_all_answer_the_first_answer() {
    let store = Arc::new(MemoryStore::new());
    let engine = Engine::new(store.clone());
    two_users(&engine).await;
    let keyed = admin().with_idempotency_key("k");
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let (engine, keyed) = (engine.clone(), keyed.clone());
            tokio::spawn(
                async move { engine.execute(&keyed, UserCommand::Unlock(uid("u1"))).await },
            )
        })
        .collect();
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.unwrap().unwrap());
    }
    assert!(answers.windows(2).all(|w| w[0] == w[1]), "{answers:?}");
    let history = engine.load(&inst("i1"), &uid("u1")).await.unwrap();
    assert_eq!(history.user.version(), 3, "one unlock appended");
}

/// A key's claim holds a hash of the first request's parameters — for an add, the user name,
/// profile and email. In a crypto-shredding store it is sealed under the user's key like the
/// add itself, so erasing the user leaves nothing to check a guess of those fields against.
#[tokio::test]
async fn a_claims_fingerprint_is_sealed_under_the_users_key_and_erased_with_it() {
    use crate::crypto::{CryptoStore, KeyStore, MemoryKeyStore, ERASED, SEALED};
    use crate::domain::KeyClaimed;

    let inner = Arc::new(MemoryStore::new());
    let keys: Arc<dyn KeyStore> = Arc::new(MemoryKeyStore::new());
    let store: Arc<dyn EventStore> = Arc::new(CryptoStore::new(inner.clone(), keys));
    let engine = Engine::new(store.clone());
    let keyed = admin().with_idempotency_key("k");
    let first = engine
        .execute(&keyed, add("u1", "alice", "o1"))
        .await
        .unwrap();
    let claims = |events: Vec<crate::store::RecordedEvent>| -> Vec<serde_json::Value> {
        events
            .into_iter()
            .filter(|e| e.event_type == KeyClaimed::TYPE)
            .map(|e| e.payload)
            .collect()
    };

    // Stored: the operation and the user in clear (the key's id), the fingerprint sealed.
    let stored = claims(inner.read_all(1, 100).await.unwrap());
    assert_eq!(stored.len(), 1);
    assert!(stored[0].get(SEALED).is_some(), "{}", stored[0]);
    assert!(stored[0].get("fingerprint").is_none(), "{}", stored[0]);
    assert_eq!(stored[0]["userId"], "u1");
    // Read through the wrapper it is whole, so the key still works both ways.
    let read = claims(store.read_all(1, 100).await.unwrap());
    assert!(read[0]["fingerprint"]
        .as_str()
        .is_some_and(|f| f.len() == 64));
    let again = engine.execute(&keyed, add("u1", "alice", "o1")).await;
    assert_eq!(again.unwrap(), first, "a repeat answers the first answer");
    let other = engine.execute(&keyed, add("u1", "alicia", "o1")).await;
    assert_eq!(other.unwrap_err().kind(), ErrorKind::KeyReused);

    engine
        .execute(&admin(), UserCommand::Remove(uid("u1")))
        .await
        .unwrap();
    let erasing = admin().with_idempotency_key("e");
    let erased = engine
        .execute(&erasing, UserCommand::Erase(uid("u1")))
        .await
        .unwrap();
    let read = claims(store.read_all(1, 100).await.unwrap());
    assert_eq!(read.len(), 2, "the add's and the erasure's claims");
    for claim in &read {
        assert_eq!(claim[ERASED], true, "{claim}");
        assert!(claim.get("fingerprint").is_none(), "{claim}");
    }
    // Repeats under their keys still answer the first answers, from the user's stream.
    let again = engine
        .execute(&erasing, UserCommand::Erase(uid("u1")))
        .await;
    assert_eq!(again.unwrap(), erased, "an erasure retried under its key");
    let again = engine.execute(&keyed, add("u1", "alice", "o1")).await;
    assert_eq!(again.unwrap(), first, "the add retried under its key");
    // Reused for another operation or user, a key is still refused: an erased claim keeps
    // its operation and its user.
    let other = engine.execute(&erasing, add("u1", "alice", "o1")).await;
    assert_eq!(other.unwrap_err().kind(), ErrorKind::KeyReused);
    engine
        .execute(&admin(), add("u2", "bob", "o1"))
        .await
        .unwrap();
    let reused = engine.execute(&keyed, UserCommand::Lock(uid("u2"))).await;
    assert_eq!(reused.unwrap_err().kind(), ErrorKind::KeyReused);
    // A new key on the erased user is refused as a command without one is, and no claim is
    // written: it would need the destroyed key.
    let head = inner.head_position().await.unwrap();
    for command in [UserCommand::Lock(uid("u1")), add("u1", "carol", "o1")] {
        let unkeyed = engine.execute(&admin(), command.clone()).await;
        let fresh = admin().with_idempotency_key(format!("new {}", command.name()));
        let keyed = engine.execute(&fresh, command.clone()).await;
        assert_eq!(
            keyed.unwrap_err().kind(),
            unkeyed.unwrap_err().kind(),
            "{} with a new key on an erased user",
            command.name()
        );
        assert_eq!(inner.head_position().await.unwrap(), head);
    }
}
