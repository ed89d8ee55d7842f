//! The file key store synced inside the file store's group commit (ADR 0021, "Keys in the
//! log's group commit"): `FileKeyStore::sync_with` makes the store's syncer sync `DATA/keys`
//! before each batch. A failed sync of the key file fails the batch like a failed write of the
//! log (nothing acknowledged, appends stop until the syncer has repaired, the key file is
//! rewritten from memory), and a `kill -9` while many callers add users leaves every
//! acknowledged user readable with its key.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde_json::json;
use userstate::testkit::{Fault, FaultInjector};
use userstate::{
    CryptoStore, EventStore, ExpectedVersion, FileKeyStore, FileStore, InstanceId, StoreError,
    StreamId, UserId,
};

mod support;

const CHILD_ENV: &str = "USERSTATE_KEYS_CRASH_CHILD_DIR";
const TASKS: usize = 16;

/// The file store in `DIR/events`, the key store `DIR/keys` synced by its syncer (its file
/// written through `faults` if given), and the sealing store over both.
fn open(
    dir: &Path,
    faults: Option<&FaultInjector>,
) -> (Arc<FileStore>, Arc<FileKeyStore>, Arc<CryptoStore>) {
    let store = Arc::new(FileStore::open(dir.join("events")).expect("open the file store"));
    let keys = Arc::new(match faults {
        Some(faults) => FileKeyStore::open_with_faults(dir, faults).expect("open the keys"),
        None => FileKeyStore::open(dir).expect("open the keys"),
    });
    keys.sync_with(&store).expect("tie the keys to the store");
    let sealed = Arc::new(CryptoStore::new(store.clone(), keys.clone()));
    (store, keys, sealed)
}

fn user(id: &str) -> StreamId {
    StreamId::user(&InstanceId::new("i").unwrap(), &UserId::new(id).unwrap())
}

fn username(id: &str) -> StreamId {
    StreamId::username(&InstanceId::new("i").unwrap(), &format!("name-{id}")).unwrap()
}

/// What an add appends: the username's reservation (its key made with `create_soon`), then
/// the user's event (its key made with `create`), both sealed.
async fn add(store: &CryptoStore, id: &str) -> Result<(), StoreError> {
    let mut reserved = userstate::testkit::event("username.reserved", 0);
    reserved.payload = json!({"userId": id, "username": format!("name-{id}")});
    store
        .append(&username(id), ExpectedVersion::Any, vec![reserved])
        .await?;
    let mut added = userstate::testkit::event("user.human.added", 0);
    added.payload = json!({"username": format!("name-{id}"), "resourceOwner": "o",
        "email": {"email": format!("{id}@example.com")}});
    store
        .append(&user(id), ExpectedVersion::NoStream, vec![added])
        .await?;
    Ok(())
}

/// Asserts that the user `id` was added and reads in clear: its key is in the key store.
async fn assert_readable(store: &CryptoStore, id: &str) {
    let events = store.read_stream(&user(id), 1).await.expect("read");
    assert_eq!(events.len(), 1, "the add of {id} is in the log");
    assert_eq!(
        events[0].payload["username"],
        format!("name-{id}"),
        "the add of {id} opens with its key: {}",
        events[0].payload
    );
}

async fn healthy(store: &FileStore) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while let Err(e) = store.health() {
        assert!(Instant::now() < deadline, "never repaired: {e}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// A failed `fdatasync` of the key file (which also loses, at random per seed, sectors of the
/// key lines written since its last good sync) fails the batch that needed it: the add
/// answers an error and nothing of it is acknowledged or visible. The syncer's repair rewrites
/// the key file from memory, appends resume, a retry of the add works, and after a reopen
/// every acknowledged user reads in clear.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_key_sync_fails_the_batch_and_a_retry_after_repair_works() {
    for seed in 1..=4 {
        let dir = tempfile::tempdir().unwrap();
        let faults = FaultInjector::new(seed);
        let (store, keys, sealed) = open(dir.path(), Some(&faults));
        add(&sealed, "a").await.expect("an add");
        let head = store.head();
        assert_eq!(head, 2);
        faults.inject(Fault::SyncFails, 0, 1);
        let error = add(&sealed, "b")
            .await
            .expect_err("the add whose key could not be synced fails");
        assert_eq!(faults.injected(), 1, "the key file's sync failed");
        assert!(
            error.to_string().contains("key store") || format!("{error:?}").contains("key store"),
            "the error names the key store: {error:?}"
        );
        assert_eq!(
            store.head(),
            head,
            "nothing of the failed batch is acknowledged"
        );
        assert!(sealed.read_stream(&user("b"), 1).await.unwrap().is_empty());
        healthy(&store).await;
        add(&sealed, "b")
            .await
            .expect("a retry after the repair works");
        add(&sealed, "c").await.expect("an add after the repair");
        for id in ["a", "b", "c"] {
            assert_readable(&sealed, id).await;
        }
        drop((sealed, keys));
        drop(Arc::into_inner(store).expect("the last handle of the store"));
        let (_store, _keys, sealed) = open(dir.path(), None);
        for id in ["a", "b", "c"] {
            assert_readable(&sealed, id).await;
        }
    }
}

/// The child role: does nothing unless started by the parent. Adds users from many tasks
/// and prints every acknowledged one until it is killed.
#[test]
fn keys_crash_child() {
    support::crash_child::as_child(CHILD_ENV, |dir| async move {
        let (_store, _keys, sealed) = open(Path::new(&dir), None);
        println!("READY");
        let run = format!("{}", std::process::id());
        let tasks: Vec<_> = (0..TASKS)
            .map(|t| {
                let sealed = sealed.clone();
                let run = run.clone();
                tokio::spawn(async move {
                    for k in 0.. {
                        let id = format!("u{run}-{t}-{k}");
                        if add(&sealed, &id).await.is_ok() {
                            println!("ACK {id}");
                        }
                    }
                })
            })
            .collect();
        for t in tasks {
            let _ = t.await;
        }
    });
}

/// Starts the child on `dir`, kills it (`SIGKILL`) after `delay`, returns the users it
/// acknowledged.
fn run_child(dir: &Path, delay: Duration) -> Vec<String> {
    support::crash_child::run_and_kill("keys_crash_child", CHILD_ENV, dir, delay, |line| {
        line.strip_prefix("ACK ").map(str::to_owned)
    })
}

/// `kill -9` at random moments while 16 tasks add users: after each, both stores reopen and
/// every user acknowledged so far reads in clear (its event and its key are there). A key
/// without its event (an add cut short) is harmless and may be left behind.
#[test]
fn acknowledged_adds_keep_their_keys_across_kill_9() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut seed = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
        | 1;
    eprintln!("keys crash test seed {seed}");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut acked = Vec::new();
    for cycle in 0..8 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let delay = Duration::from_millis(20 + seed % 300);
        let acks = run_child(dir.path(), delay);
        let count = acks.len();
        acked.extend(acks);
        rt.block_on(async {
            let (_store, keys, sealed) = open(dir.path(), None);
            let known: HashSet<_> = userstate::KeyStore::export(&*keys)
                .await
                .expect("export")
                .keys
                .into_keys()
                .collect();
            for id in &acked {
                assert!(
                    known.contains(&format!("i:{id}")),
                    "the key of {id} is kept"
                );
                assert_readable(&sealed, id).await;
            }
        });
        eprintln!("cycle {cycle}: killed after {delay:?}, {count} acknowledged");
    }
    assert!(!acked.is_empty(), "the children acknowledged adds");
}
