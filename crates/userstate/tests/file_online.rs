//! Issue 27: read-only opens and backups of a file store that a writer keeps appending to
//! (ADR 0017). Sixteen appenders write to a store with small segments (so it rotates and
//! rewrites its manifest all the time) while read-only opens and backups are taken over and
//! over: each must hold every append acknowledged before it started, as a gapless prefix of
//! the log; each backup must open as a store of its own and take appends; and none of them may
//! change a byte, a name, an inode or a time stamp of the live directory.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use userstate::testkit::{event, stream};
use userstate::{EventStore, ExpectedVersion, FileStore, RecordedEvent};

/// Every file of `dir`: name -> (inode, size, mtime, ctime, bytes).
type Snapshot = BTreeMap<String, (u64, u64, (i64, i64), (i64, i64), Vec<u8>)>;

fn snapshot(dir: &Path) -> Snapshot {
    fs::read_dir(dir)
        .expect("read dir")
        .map(|e| {
            let path = e.expect("entry").path();
            let m = fs::metadata(&path).expect("metadata");
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let times = ((m.mtime(), m.mtime_nsec()), (m.ctime(), m.ctime_nsec()));
            let bytes = fs::read(&path).expect("read");
            (name, (m.ino(), m.size(), times.0, times.1, bytes))
        })
        .collect()
}

/// What the appenders were told: event id by position, and the highest position answered.
#[derive(Default)]
struct Acknowledged {
    ids: Mutex<HashMap<u64, uuid::Uuid>>,
    max: AtomicU64,
}

impl Acknowledged {
    fn record(&self, events: &[RecordedEvent]) {
        let mut ids = self.ids.lock().unwrap();
        for e in events {
            ids.insert(e.position, e.event_id);
            self.max.fetch_max(e.position, Ordering::SeqCst);
        }
    }
}

/// Reads the whole of `store` and checks it against what was acknowledged up to `before`:
/// positions gapless from 1, every acknowledged position up to `before` present with its id.
async fn check_prefix(store: &FileStore, acked: &Acknowledged, before: u64, what: &str) {
    let head = store.head();
    assert!(
        head >= before,
        "{what}: head {head} < acknowledged {before}"
    );
    let mut next = 1;
    let ids = acked.ids.lock().unwrap().clone();
    loop {
        let page = store.read_all(next, 4096).await.expect("read_all");
        let Some(last) = page.last() else { break };
        for e in &page {
            assert_eq!(e.position, next, "{what}: positions are gapless");
            if let Some(id) = ids.get(&e.position) {
                assert_eq!(&e.event_id, id, "{what}: the event at {}", e.position);
            }
            next += 1;
        }
        next = last.position + 1;
    }
    assert_eq!(next - 1, head, "{what}: read_all reaches the head");
    for p in 1..=before {
        assert!(ids.contains_key(&p) || p <= head, "{what}: {p}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn read_only_opens_and_backups_of_a_live_store_hold_every_acknowledged_append() {
    let dir = tempfile::tempdir().expect("tempdir");
    let live = dir.path().join("live");
    let store = Arc::new(
        FileStore::options()
            .segment_size(64 << 10)
            .open(&live)
            .expect("open"),
    );
    let acked = Arc::new(Acknowledged::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..16u64 {
        let (store, acked, stop) = (store.clone(), acked.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::SeqCst) {
                // One or three events per append: a multi-event append is all or nothing.
                let n = 1 + 2 * (i % 2);
                let events = (0..n).map(|k| event("t", i * 10 + k)).collect();
                let s = stream(&format!("w{w}-{}", i % 5));
                let recorded = store
                    .append(&s, ExpectedVersion::Any, events)
                    .await
                    .expect("append");
                acked.record(&recorded);
                i += 1;
            }
        }));
    }
    let started = Instant::now();
    let mut rounds = 0;
    while started.elapsed() < Duration::from_secs(4) || rounds < 5 {
        rounds += 1;
        let before = acked.max.load(Ordering::SeqCst);
        let reader = FileStore::open_read_only(&live).expect("read-only open of a live store");
        assert!(
            reader.pending_repairs().is_empty(),
            "a live store has nothing to repair"
        );
        check_prefix(&reader, &acked, before, &format!("read-only open {rounds}")).await;

        let copy = dir.path().join(format!("backup-{rounds}"));
        let before = acked.max.load(Ordering::SeqCst);
        let taken = FileStore::open_read_only(&live).expect("read-only open");
        let summary = taken.backup(&copy, |_, _| {}).expect("backup");
        assert!(
            summary.head >= before,
            "the backup holds every acknowledged append"
        );
        drop(taken);
        let restored = FileStore::open(&copy).expect("the backup opens as a store");
        assert!(restored.pending_repairs().is_empty());
        assert_eq!(restored.head(), summary.head);
        check_prefix(&restored, &acked, before, &format!("backup {rounds}")).await;
        let appended = restored
            .append(
                &stream("after-restore"),
                ExpectedVersion::NoStream,
                vec![event("t", 0)],
            )
            .await
            .expect("a restored backup takes appends");
        assert_eq!(appended[0].position, summary.head + 1);
        drop(restored);
        fs::remove_dir_all(&copy).expect("clean up");
    }
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        w.await.expect("writer");
    }
    assert!(store.head() > 1000, "the writers wrote: {}", store.head());

    // With the writer idle (it holds the directory, writes nothing), a read-only open, a full
    // read and a backup leave every file of the live directory as it was: bytes, size, inode,
    // mtime and ctime (any write, truncation, chmod or rename would move one of them).
    let before = snapshot(&live);
    let reader = FileStore::open_read_only(&live).expect("read-only open");
    assert_eq!(reader.head(), store.head());
    check_prefix(&reader, &acked, store.head(), "idle").await;
    reader
        .backup(dir.path().join("idle-backup"), |_, _| {})
        .expect("backup");
    drop(reader);
    assert_eq!(
        snapshot(&live),
        before,
        "a read-only open changed the live directory"
    );
}

/// A backup refuses a directory that is not empty, and leaves it as it was.
#[tokio::test]
async fn a_backup_refuses_a_non_empty_target() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = FileStore::open(dir.path().join("live")).expect("open");
    store
        .append(&stream("a"), ExpectedVersion::Any, vec![event("t", 1)])
        .await
        .expect("append");
    let target = dir.path().join("target");
    fs::create_dir(&target).expect("mkdir");
    fs::write(target.join("keep"), b"x").expect("write");
    let err = store.backup(&target, |_, _| {}).expect_err("not empty");
    assert!(err.to_string().contains("not empty"), "{err}");
    assert_eq!(fs::read_dir(&target).unwrap().count(), 1);
}
