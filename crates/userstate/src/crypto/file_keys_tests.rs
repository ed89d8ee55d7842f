//! Tests of the file key store's in-place lines (torn tails, concurrent makers, readers) and of
//! its sync inside the file store's group commit.

use proptest::prelude::*;
use serde_json::json;

use super::*;
use crate::store::{EventMetadata, EventStore, ExpectedVersion, NewEvent, StreamId};
use crate::{CryptoStore, InstanceId, UserId};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Makes `n` keys with 64 concurrent makers; every one is in the file, read by a reader that
/// does not open it for writing, while the store is open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_makers_share_syncs_and_readers_see_every_key() {
    let dir = tempfile::tempdir().unwrap();
    let keys = Arc::new(FileKeyStore::open(dir.path()).unwrap());
    let mut tasks = tokio::task::JoinSet::new();
    for caller in 0..64 {
        let keys = keys.clone();
        tasks.spawn(async move {
            let mut made = Vec::new();
            for i in 0..20 {
                let id = format!("i:{caller}-{i}");
                let key = if i % 2 == 0 {
                    keys.create_soon(&id).await.unwrap();
                    keys.create(&id).await.unwrap()
                } else {
                    keys.create(&id).await.unwrap()
                };
                made.push((id, key));
            }
            made
        });
    }
    let mut made = Vec::new();
    while let Some(result) = tasks.join_next().await {
        made.extend(result.unwrap());
    }
    let export = FileKeyStore::read_export(dir.path()).unwrap().unwrap();
    assert_eq!(export.keys.len(), 64 * 20);
    for (id, key) in &made {
        assert_eq!(export.keys.get(id), Some(&key.to_b64()), "{id}");
    }
    let len = std::fs::metadata(dir.path().join(KEY_FILE)).unwrap().len();
    assert_eq!(
        len % KEY_FILE_CHUNK,
        0,
        "the file grows by whole chunks of zeros"
    );
    keys.destroy("i:0-0").await.unwrap();
    let bytes = std::fs::read(dir.path().join(KEY_FILE)).unwrap();
    let destroyed = made.iter().find(|(id, _)| id == "i:0-0").unwrap();
    let b64 = destroyed.1.to_b64();
    assert!(!bytes.windows(b64.len()).any(|w| w == b64.as_bytes()));
    // Keys made after the rewrite are synced in its epoch and read back.
    let after = keys.create("i:after").await.unwrap();
    drop(keys);
    let reopened = FileKeyStore::open(dir.path()).unwrap();
    assert_eq!(reopened.load("i:after").await.unwrap(), Some(after));
    assert_eq!(reopened.load("i:0-0").await.unwrap(), None);
}

/// Tied to the file store (`sync_with`), makers do not wait for a sync, and yet every add the
/// store acknowledges finds its key synced at that moment: the sync before the batch covered
/// the key's line, written before the append was queued. Once the store is gone, makers wait
/// for a sync of their own again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tied_to_the_file_store_every_acknowledged_add_finds_its_key_synced() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(FileStore::open(dir.path().join("events")).unwrap());
    let keys = Arc::new(FileKeyStore::open(dir.path()).unwrap());
    keys.sync_with(&store).unwrap();
    assert!(
        keys.sync_with(&store).is_err(),
        "one companion per file store"
    );
    let sealed = Arc::new(CryptoStore::new(store.clone(), keys.clone()));
    let mut tasks = tokio::task::JoinSet::new();
    for caller in 0..32 {
        let (sealed, keys) = (sealed.clone(), keys.clone());
        tasks.spawn(async move {
            for i in 0..10 {
                let id = format!("{caller}-{i}");
                let stream =
                    StreamId::user(&InstanceId::new("i").unwrap(), &UserId::new(&id).unwrap());
                let payload = json!({"username": format!("n{id}"), "resourceOwner": "o"});
                let event = NewEvent::new("user.human.added", 1, payload, EventMetadata::default());
                (sealed.append(&stream, ExpectedVersion::NoStream, vec![event]))
                    .await
                    .unwrap();
                let (epoch, offset) = {
                    let state = keys.shared.state.lock().unwrap();
                    (state.epoch, state.keys[&format!("i:{id}")].1)
                };
                assert!(
                    keys.shared.covered(epoch, offset),
                    "the key of {id} was synced before its add was acknowledged"
                );
            }
        });
    }
    while let Some(result) = tasks.join_next().await {
        result.unwrap();
    }
    drop(sealed);
    drop(Arc::into_inner(store).expect("the last handle of the store"));
    assert!(
        !keys.shared.partnered.load(Ordering::Acquire),
        "the stopped syncer detached the key store"
    );
    keys.create("i:alone").await.unwrap();
    let (epoch, offset) = {
        let state = keys.shared.state.lock().unwrap();
        (state.epoch, state.keys["i:alone"].1)
    };
    assert!(keys.shared.covered(epoch, offset), "a lone maker waits");
    let export = FileKeyStore::read_export(dir.path()).unwrap().unwrap();
    assert_eq!(export.keys.len(), 32 * 10 + 1);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    /// A crash while a line is written leaves any prefix of it (the rest zeros, or garbage
    /// bytes of a torn sector): the file opens with every whole line, the torn key is gone,
    /// and a key made after the reopen is read back whole on the next open.
    #[test]
    fn a_torn_last_line_opens_and_is_not_joined_to_the_next(cut in 0usize..60, junk in any::<bool>()) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(KEY_FILE);
        let rt = runtime();
        let (a, line_start, line_end) = rt.block_on(async {
            let keys = FileKeyStore::open(dir.path()).unwrap();
            let a = keys.create("i:a").await.unwrap();
            let start = keys.shared.state.lock().unwrap().len;
            keys.create("i:torn").await.unwrap();
            let end = keys.shared.state.lock().unwrap().len;
            (a, start as usize, end as usize)
        });
        let mut bytes = std::fs::read(&path).unwrap();
        let cut = line_start + cut.min(line_end - line_start - 1);
        let fill = if junk { b'x' } else { 0 };
        // The torn line: its first `cut` bytes, then zeros (or junk up to its length).
        for b in &mut bytes[cut..line_end] {
            *b = fill;
        }
        std::fs::write(&path, &bytes).unwrap();
        let b = rt.block_on(async {
            let keys = FileKeyStore::open(dir.path()).unwrap();
            prop_assert_eq!(keys.load("i:a").await.unwrap(), Some(a.clone()));
            prop_assert_eq!(keys.load("i:torn").await.unwrap(), None);
            Ok(keys.create("i:b").await.unwrap())
        })?;
        let export = FileKeyStore::read_export(dir.path()).unwrap().unwrap();
        prop_assert_eq!(export.keys.get("i:b"), Some(&b.to_b64()));
        prop_assert_eq!(export.keys.get("i:a"), Some(&a.to_b64()));
        prop_assert_eq!(export.keys.len(), 2);
    }
}
