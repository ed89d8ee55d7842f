//! Usernames (issue 20, SPEC.md "Identifiers and usernames"): one canonical form per name, and
//! no reservation left behind by a user that does not exist.

use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use serde_json::json;

use super::*;
use crate::domain::UsernameEvent;
use crate::store::StoreWrapper;

#[tokio::test]
async fn look_alike_usernames_are_one_username() {
    let engine = engine();
    let pairs = [
        ("jos\u{e9}", "jose\u{301}"),                 // NFC and NFD
        ("dave", "\u{ff44}\u{ff41}\u{ff56}\u{ff45}"), // ASCII and full width
        ("Erin", "ERIN"),
    ];
    for (i, (first, second)) in pairs.into_iter().enumerate() {
        engine
            .execute(&admin(), add(&format!("a{i}"), first, "o1"))
            .await
            .unwrap();
        let err = engine
            .execute(&admin(), add(&format!("b{i}"), second, "o1"))
            .await
            .unwrap_err();
        assert_eq!(
            err.kind(),
            ErrorKind::AlreadyExists,
            "{first} / {second}: {err}"
        );
    }
    // The display form is kept as given.
    let loaded = engine.load(&inst("i1"), &uid("a1")).await.unwrap();
    assert_eq!(loaded.user.data().unwrap().username, "dave");
}

#[tokio::test]
async fn invisible_and_direction_changing_characters_are_refused() {
    let engine = engine();
    for bad in [
        "bob\u{200b}",
        "c\u{ad}arol",
        "evil\u{202e}gpj.exe",
        "two words",
        "\u{1F600}",
        "",
    ] {
        let err = engine
            .execute(&admin(), add("u1", bad, "o1"))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{bad:?}: {err}");
    }
    // 200 characters of two bytes each: within the character limit, over the byte limit.
    let err = engine
        .execute(&admin(), add("u1", &"\u{e9}".repeat(200), "o1"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    engine
        .execute(&admin(), add("u1", &"a".repeat(200), "o1"))
        .await
        .expect("200 ASCII characters are allowed");
}

#[tokio::test]
async fn profile_fields_are_bounded_and_free_of_control_characters() {
    let engine = engine();
    let with = |given: &str, email: &str| {
        UserCommand::Add(AddUser {
            user_id: uid("u1"),
            username: "alice".into(),
            organization: org("o1"),
            profile: Some(crate::domain::Profile {
                given_name: given.into(),
                family_name: "Smith".into(),
            }),
            email: Some(crate::domain::Email {
                email: email.into(),
                is_verified: false,
            }),
            initial: false,
        })
    };
    for (given, email) in [
        ("x".repeat(201), "a@example.com".to_owned()),
        ("nul\u{0}".to_owned(), "a@example.com".to_owned()),
        (
            "Alice".to_owned(),
            format!("{}@example.com", "a".repeat(320)),
        ),
    ] {
        let err = engine
            .execute(&admin(), with(&given, &email))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    }
    engine
        .execute(&admin(), with(&"x".repeat(200), "a@example.com"))
        .await
        .expect("200 characters are allowed");
}

/// A memory store whose appends to user streams fail with ENOSPC while `failing` is set.
struct FullDisk {
    inner: MemoryStore,
    failing: AtomicBool,
}

#[async_trait]
impl StoreWrapper for FullDisk {
    fn inner(&self) -> &dyn EventStore {
        &self.inner
    }

    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        if self.failing.load(Ordering::SeqCst) && stream.as_str().starts_with("user:") {
            return Err(StoreError::Io(std::io::Error::from_raw_os_error(28)));
        }
        self.inner.append(stream, expected, events).await
    }
}

#[tokio::test]
async fn a_failed_add_leaves_its_username_free() {
    let store = Arc::new(FullDisk {
        inner: MemoryStore::new(),
        failing: AtomicBool::new(true),
    });
    let engine = Engine::new(store.clone());
    let err = engine
        .execute(&admin(), add("u1", "alice", "o1"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Internal, "{err}");
    store.failing.store(false, Ordering::SeqCst);
    engine
        .execute(&admin(), add("u2", "alice", "o1"))
        .await
        .expect("the name was given back");
}

/// Appends what an add that crashed between its two writes left: a reservation of `username`
/// for `holder`, written `age` ago, and no user.
async fn crashed_add(store: &dyn EventStore, username: &str, holder: &str, age: Duration) {
    let mut reserved = NewEvent::new(
        USERNAME_RESERVED,
        1,
        json!({ "userId": holder, "username": username }),
        EventMetadata::default(),
    );
    reserved.created_at = Some(chrono::Utc::now() - age);
    let stream = StreamId::username(&inst("i1"), username).unwrap();
    store
        .append(&stream, ExpectedVersion::NoStream, vec![reserved])
        .await
        .unwrap();
}

#[tokio::test]
async fn a_reservation_left_by_a_crash_is_reclaimed_once_no_add_can_still_land() {
    let store = Arc::new(MemoryStore::new());
    let engine = Engine::new(store.clone());
    crashed_add(
        &*store,
        "alice",
        "ghost",
        RECLAIM_AFTER + Duration::from_secs(1),
    )
    .await;
    engine
        .execute(&admin(), add("u1", "alice", "o1"))
        .await
        .expect("an old orphan is reclaimed");
    // A young one may belong to an add still on its way: the name stays taken for now.
    crashed_add(&*store, "bob", "in-flight", Duration::from_secs(1)).await;
    let err = engine
        .execute(&admin(), add("u2", "bob", "o1"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyExists, "{err}");
}

#[tokio::test]
async fn a_removed_users_name_is_reclaimed_even_when_its_release_was_lost() {
    let store = Arc::new(MemoryStore::new());
    let engine = Engine::new(store.clone());
    engine
        .execute(&admin(), add("u1", "alice", "o1"))
        .await
        .unwrap();
    // The removal as a crash right after its user append leaves it: no release.
    let stream = StreamId::user(&inst("i1"), &uid("u1"));
    let removed = to_new_event(&admin(), &org("o1"), &crate::domain::UserEvent::Removed);
    store
        .append(&stream, ExpectedVersion::Exact(1), vec![removed])
        .await
        .unwrap();
    engine
        .execute(&admin(), add("u2", "alice", "o1"))
        .await
        .expect("a removed holder's name is free at once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_adds_of_one_user_keep_its_name_reserved() {
    for round in 0..20 {
        let store = Arc::new(MemoryStore::new());
        let engine = Engine::new(store.clone());
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let engine = engine.clone();
                tokio::spawn(async move { engine.execute(&admin(), add("u1", "same", "o1")).await })
            })
            .collect();
        for t in tasks {
            if let Err(e) = t.await.unwrap() {
                assert_eq!(e.kind(), ErrorKind::AlreadyExists, "{e}");
            }
        }
        let stream = StreamId::username(&inst("i1"), "same").unwrap();
        let last = store.read_stream(&stream, 1).await.unwrap().pop().unwrap();
        assert_ne!(last.event_type, UsernameEvent::RELEASED, "round {round}");
        let err = engine
            .execute(&admin(), add("u2", "same", "o1"))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::AlreadyExists, "round {round}: {err}");
    }
}
