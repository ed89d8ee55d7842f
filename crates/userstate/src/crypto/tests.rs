//! Tests of the crypto wrapper and the key stores (`super`).

use proptest::prelude::*;
use serde_json::json;

use super::*;
use crate::domain::{InstanceId, UserId};
use crate::store::{EventMetadata, MemoryStore};

fn new_event(event_type: &str, payload: Value) -> NewEvent {
    NewEvent::new(event_type, 1, payload, EventMetadata::default())
}

proptest! {
    /// Whatever the personal fields hold, they open back to themselves under their key,
    /// and to nothing (erased) under another key or none.
    #[test]
    fn sealed_fields_open_only_under_their_key(
        username in ".{0,40}", given in ".{0,40}", email in ".{0,40}"
    ) {
        let plain = json!({"username": username, "resourceOwner": "o",
            "profile": {"givenName": given}, "email": {"email": email}});
        let key = UserKey::generate();
        let fields = personal_fields(USER_ADDED).unwrap();
        let mut sealed = plain.clone();
        let personal = seal(&mut sealed, fields, &key, b"i:u");
        prop_assert!(personal.is_some());
        let text = sealed.to_string();
        prop_assert!(sealed.get("username").is_none() && sealed.get("profile").is_none());
        prop_assert_eq!(&sealed["resourceOwner"], "o");
        let mut opened = sealed.clone();
        open(&mut opened, Some(&key), b"i:u");
        prop_assert_eq!(&opened, &plain);
        let mut given_back = sealed.clone();
        unseal_in_place(&mut given_back, personal.unwrap_or_default());
        prop_assert_eq!(&given_back, &plain);
        for (key, aad) in [(Some(&UserKey::generate()), &b"i:u"[..]), (Some(&key), b"i:v"), (None, b"i:u")] {
            let mut erased: Value = serde_json::from_str(&text).unwrap();
            open(&mut erased, key, aad);
            prop_assert_eq!(erased, json!({"resourceOwner": "o", "erased": true}));
        }
    }
}

#[tokio::test]
async fn the_inner_store_holds_only_sealed_data_and_erasure_destroys_the_key() {
    let inner = Arc::new(MemoryStore::new());
    let keys: Arc<dyn KeyStore> = Arc::new(MemoryKeyStore::new());
    let store: Arc<dyn EventStore> = Arc::new(CryptoStore::new(inner.clone(), keys.clone()));
    let instance = InstanceId::new("i").unwrap();
    let user = StreamId::user(&instance, &UserId::new("u").unwrap());
    let name = StreamId::username(&instance, "Alice.Secret").unwrap();
    let reserved = json!({"userId": "u", "username": "Alice.Secret"});
    let added = json!({"username": "Alice.Secret", "resourceOwner": "o",
        "email": {"email": "alice@secret.example"}});
    let recorded = store
        .append(
            &name,
            ExpectedVersion::Any,
            vec![new_event(UsernameEvent::RESERVED, reserved.clone())],
        )
        .await
        .unwrap();
    assert_eq!(
        (recorded[0].stream.clone(), recorded[0].payload.clone()),
        (name.clone(), reserved.clone())
    );
    store
        .append(
            &user,
            ExpectedVersion::Any,
            vec![new_event(USER_ADDED, added.clone())],
        )
        .await
        .unwrap();
    let raw = inner.read_all(1, 100).await.unwrap();
    let text = serde_json::to_string(&raw).unwrap();
    assert!(!text.to_lowercase().contains("alice"), "{text}");
    assert_ne!(raw[0].stream, name);
    assert_eq!(
        store.read_stream(&name, 1).await.unwrap()[0].payload,
        reserved
    );
    assert_eq!(store.read_stream(&user, 1).await.unwrap()[0].payload, added);
    let mut visited = Vec::new();
    store
        .visit_all(1, 100, &mut |e| {
            visited.push(e.payload.deserialize::<Value>().unwrap())
        })
        .await
        .unwrap();
    assert_eq!(visited, [reserved, added]);

    store
        .append(
            &user,
            ExpectedVersion::Any,
            vec![new_event(USER_ERASED, json!({}))],
        )
        .await
        .unwrap();
    assert_eq!(keys.load("i:u").await.unwrap(), None);
    let erased = store.read_all(1, 100).await.unwrap();
    assert_eq!(erased[0].payload, json!({"userId": "u", "erased": true}));
    assert_eq!(
        erased[1].payload,
        json!({"resourceOwner": "o", "erased": true})
    );
    assert!(
        keys.create("i:u").await.is_err(),
        "an erased user's key came back"
    );
}

/// A user whose personal data was stored in clear (before crypto-shredding) is not
/// "erased" by destroying a key that never sealed it: the erasure is refused, says why,
/// and changes nothing.
#[tokio::test]
async fn erasure_of_a_user_stored_in_clear_is_refused() {
    let inner = Arc::new(MemoryStore::new());
    let keys: Arc<dyn KeyStore> = Arc::new(MemoryKeyStore::new());
    let store: Arc<dyn EventStore> = Arc::new(CryptoStore::new(inner.clone(), keys.clone()));
    let instance = InstanceId::new("i").unwrap();
    let user = StreamId::user(&instance, &UserId::new("u").unwrap());
    let added = json!({"username": "Alice.Clear", "resourceOwner": "o"});
    assert!(holds_clear_personal_data(USER_ADDED, &added));
    inner
        .append(
            &user,
            ExpectedVersion::Any,
            vec![new_event(USER_ADDED, added)],
        )
        .await
        .unwrap();
    keys.create("i:u").await.unwrap();
    let refused = store
        .append(
            &user,
            ExpectedVersion::Any,
            vec![new_event(USER_ERASED, json!({}))],
        )
        .await;
    match refused {
        Err(StoreError::InvalidArgument(why)) => assert!(why.contains("in clear"), "{why}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(inner.head_position().await.unwrap(), 1);
    assert!(keys.load("i:u").await.unwrap().is_some());
    let sealed = json!({"sealed": "AAAA", "resourceOwner": "o"});
    assert!(!holds_clear_personal_data(USER_ADDED, &sealed));
    assert!(!holds_clear_personal_data(
        "user.locked",
        &json!({"username": "x"})
    ));
}

#[tokio::test]
async fn the_file_key_store_keeps_keys_across_opens_and_forgets_destroyed_ones() {
    let dir = tempfile::tempdir().unwrap();
    let keys = FileKeyStore::open(dir.path()).unwrap();
    let a = keys.create("i:a").await.unwrap();
    let b = keys.create("i:b").await.unwrap();
    let secret = keys.username_secret();
    keys.destroy("i:a").await.unwrap();
    drop(keys);
    let text = std::fs::read_to_string(dir.path().join(KEY_FILE)).unwrap();
    assert!(!text.contains("i:a") && !text.contains(&B64.encode(a.0)));
    let keys = FileKeyStore::open(dir.path()).unwrap();
    assert_eq!(keys.username_secret(), secret);
    assert_eq!(keys.load("i:a").await.unwrap(), None);
    assert_eq!(keys.load("i:b").await.unwrap(), Some(b));
    let export = keys.export().await.unwrap();
    let other = tempfile::tempdir().unwrap();
    let moved = FileKeyStore::open(other.path()).unwrap();
    moved.import(&export).await.unwrap();
    assert_eq!(moved.username_secret(), secret);
    assert_eq!(moved.export().await.unwrap(), export);
}

/// A key store that answers [`KeyStore::cached`] only for what was loaded through it, as
/// a node's cache of a shared key store does after its start, and counts its round trips.
struct ColdKeys {
    inner: Arc<dyn KeyStore>,
    loaded: std::sync::Mutex<std::collections::HashMap<String, Option<UserKey>>>,
    loads: std::sync::atomic::AtomicUsize,
    batches: std::sync::atomic::AtomicUsize,
}

#[async_trait]
impl KeyStore for ColdKeys {
    fn username_secret(&self) -> [u8; 32] {
        self.inner.username_secret()
    }
    fn cached(&self, id: &str) -> Option<Option<UserKey>> {
        self.loaded.lock().unwrap().get(id).cloned()
    }
    async fn load(&self, id: &str) -> Result<Option<UserKey>, StoreError> {
        self.loads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let key = self.inner.load(id).await?;
        self.loaded.lock().unwrap().insert(id.into(), key.clone());
        Ok(key)
    }
    async fn load_many(&self, ids: &[String]) -> Result<(), StoreError> {
        self.batches
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        for id in ids {
            let key = self.inner.load(id).await?;
            self.loaded.lock().unwrap().insert(id.clone(), key);
        }
        Ok(())
    }
    async fn create(&self, id: &str) -> Result<UserKey, StoreError> {
        self.inner.create(id).await
    }
    async fn destroy(&self, id: &str) -> Result<(), StoreError> {
        self.inner.destroy(id).await
    }
    async fn export(&self) -> Result<KeyExport, StoreError> {
        self.inner.export().await
    }
    async fn import(&self, export: &KeyExport) -> Result<(), StoreError> {
        self.inner.import(export).await
    }
}

/// A node starting on a log of many users (a cold key cache) reads each page a bounded
/// number of times and loads the page's keys in one batch, whether it folds the log
/// (`visit_all`, the projection's follower) or reads it (`read_all`); and it opens every
/// sealed payload. It used to read a page again for every new user in it.
#[tokio::test]
async fn a_cold_start_loads_a_pages_keys_at_once_and_reads_it_at_most_twice() {
    let spy = Arc::new(crate::testkit::SpyStore::new(Arc::new(MemoryStore::new())));
    let keys: Arc<dyn KeyStore> = Arc::new(MemoryKeyStore::new());
    let writer: Arc<dyn EventStore> = Arc::new(CryptoStore::new(spy.clone(), keys.clone()));
    let instance = InstanceId::new("i").unwrap();
    let mut expected = Vec::new();
    for i in 0..100 {
        let user = StreamId::user(&instance, &UserId::new(format!("u{i}")).unwrap());
        let added = json!({"username": format!("name-{i}"), "resourceOwner": "o"});
        let lock = new_event("user.locked", json!({}));
        let events = vec![new_event(USER_ADDED, added.clone()), lock];
        writer
            .append(&user, ExpectedVersion::NoStream, events)
            .await
            .unwrap();
        expected.extend([added, json!({})]);
    }
    let cold = || {
        Arc::new(ColdKeys {
            inner: keys.clone(),
            loaded: Default::default(),
            loads: Default::default(),
            batches: Default::default(),
        })
    };
    let count = |n: &std::sync::atomic::AtomicUsize| n.load(std::sync::atomic::Ordering::SeqCst);

    let folding = cold();
    let reader: Arc<dyn EventStore> = Arc::new(CryptoStore::new(spy.clone(), folding.clone()));
    let before = spy.pages_read();
    let (mut next, mut folded) = (1, Vec::new());
    loop {
        let n = reader
            .visit_all(next, 1024, &mut |e| {
                folded.push(e.payload.deserialize::<Value>().unwrap())
            })
            .await
            .unwrap();
        if n == 0 {
            break;
        }
        next += n as u64;
    }
    assert_eq!(folded, expected);
    assert!(
        spy.pages_read() - before <= 3,
        "{} pages",
        spy.pages_read() - before
    );
    assert_eq!((count(&folding.batches), count(&folding.loads)), (1, 0));

    let reading = cold();
    let reader: Arc<dyn EventStore> = Arc::new(CryptoStore::new(spy.clone(), reading.clone()));
    let read: Vec<Value> = reader
        .read_all(1, 1024)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.payload)
        .collect();
    assert_eq!(read, expected);
    assert_eq!((count(&reading.batches), count(&reading.loads)), (1, 0));
}
