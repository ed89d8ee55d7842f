//! A lone appender commits its own batch (`lead`): that it does, that appends arriving during
//! its sync are handed to the syncer thread, and that a failure of its sync answers its append
//! and every append queued behind it with the error and is repaired by the syncer thread.

use std::io;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::store::file::io::{SegmentFile, SegmentIo};
use crate::store::file::{FileStore, FileStoreOptions};
use crate::store::{EventStore, ExpectedVersion, RecordedEvent, StoreError};
use crate::testkit::{event, stream, Fault, FaultInjector};

/// Holds the next `fdatasync` of a segment until released, so a test can queue appends while
/// a leader syncs.
#[derive(Debug, Default)]
struct Gate {
    state: Mutex<GateState>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct GateState {
    armed: bool,
    held: bool,
    open: bool,
}

impl Gate {
    fn arm(&self) {
        let mut s = self.state.lock().unwrap();
        *s = GateState {
            armed: true,
            ..GateState::default()
        };
    }

    fn pass(&self) {
        let mut s = self.state.lock().unwrap();
        if !std::mem::take(&mut s.armed) {
            return;
        }
        s.held = true;
        self.changed.notify_all();
        while !s.open {
            s = self.changed.wait(s).unwrap();
        }
    }

    fn held(&self) -> bool {
        self.state.lock().unwrap().held
    }

    fn release(&self) {
        self.state.lock().unwrap().open = true;
        self.changed.notify_all();
    }
}

/// The injector's I/O with the gate in front of every segment's `fdatasync`.
#[derive(Debug)]
struct GatedIo {
    inner: Arc<dyn SegmentIo>,
    gate: Arc<Gate>,
}

struct GatedFile {
    inner: Box<dyn SegmentFile>,
    gate: Arc<Gate>,
}

impl SegmentIo for GatedIo {
    fn create_new(&self, path: &Path) -> io::Result<Box<dyn SegmentFile>> {
        let inner = self.inner.create_new(path)?;
        Ok(Box::new(GatedFile {
            inner,
            gate: self.gate.clone(),
        }))
    }
    fn open(&self, path: &Path) -> io::Result<Box<dyn SegmentFile>> {
        let inner = self.inner.open(path)?;
        Ok(Box::new(GatedFile {
            inner,
            gate: self.gate.clone(),
        }))
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.inner.rename(from, to)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.inner.remove_file(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.inner.sync_dir(dir)
    }
}

impl SegmentFile for GatedFile {
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<usize> {
        self.inner.write_at(buf, offset)
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.inner.read_at(buf, offset)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.gate.pass();
        self.inner.sync_data()
    }
    fn sync_all(&self) -> io::Result<()> {
        self.inner.sync_all()
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.inner.set_len(len)
    }
}

fn open(dir: &Path, faults: &FaultInjector, gate: &Arc<Gate>) -> Arc<FileStore> {
    let options = FileStoreOptions {
        io: Arc::new(GatedIo {
            inner: faults.io(),
            gate: gate.clone(),
        }),
        ..FileStoreOptions::default()
    };
    Arc::new(options.open(dir).expect("open"))
}

fn led(store: &FileStore) -> u64 {
    store.shared.lock_queue().led
}

async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Appends one event to `name` at its version `version`.
async fn append(store: &FileStore, name: &str, version: u64) -> Result<RecordedEvent, StoreError> {
    let mut recorded = store
        .append(
            &stream(name),
            ExpectedVersion::Exact(version),
            vec![event("lead", version)],
        )
        .await?;
    Ok(recorded.remove(0))
}

/// A lone caller's appends are committed by the caller itself once the previous batch was a
/// lone one too, are visible as soon as they are answered, and survive a reopen in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_caller_commits_its_own_appends() {
    let dir = tempfile::tempdir().unwrap();
    let (faults, gate) = (FaultInjector::new(1), Arc::new(Gate::default()));
    let store = open(dir.path(), &faults, &gate);
    for v in 0..40 {
        let e = append(&store, "solo", v).await.expect("append");
        assert_eq!(e.position, v + 1);
        let read = store.read_stream(&stream("solo"), v + 1).await.unwrap();
        assert_eq!(read.len(), 1, "answered, hence visible");
    }
    // The syncer thread takes an append whenever it was not yet idle again (after the open,
    // or descheduled on a busy machine between its last batch and its wait).
    assert!(led(&store) >= 20, "led {} of 40", led(&store));
    drop(store);
    let store = open(dir.path(), &faults, &gate);
    let all = store.read_all(1, usize::MAX).await.unwrap();
    let versions: Vec<u64> = all.iter().map(|e| e.sequence).collect();
    assert_eq!(versions, (1..=40).collect::<Vec<_>>());
}

/// Starts a lone append that leads and is held in its sync, then queues `n` appends from
/// other tasks behind it; returns the leader's and the others' tasks once they are queued.
#[allow(clippy::type_complexity)]
async fn queue_behind_a_leader(
    store: &Arc<FileStore>,
    gate: &Arc<Gate>,
    n: u64,
) -> (
    tokio::task::JoinHandle<Result<RecordedEvent, StoreError>>,
    Vec<tokio::task::JoinHandle<Result<RecordedEvent, StoreError>>>,
) {
    // A lone append first, so the previous batch held one append.
    let version = store.read_stream(&stream("leader"), 1).await.unwrap().len() as u64;
    append(store, "leader", version)
        .await
        .expect("warm-up append");
    until("the syncer waits", || store.shared.lock_queue().syncer_idle).await;
    let led_before = led(store);
    gate.arm();
    let leader = tokio::spawn({
        let store = store.clone();
        async move { append(&store, "leader", version + 1).await }
    });
    until("the leader syncs", || gate.held()).await;
    assert_eq!(led(store), led_before + 1, "the lone append leads");
    let others: Vec<_> = (0..n)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let name = format!("other-{i}");
                let version = store.read_stream(&stream(&name), 1).await?.len() as u64;
                append(&store, &name, version).await
            })
        })
        .collect();
    until("the others are queued", || {
        let queue = store.shared.lock_queue();
        queue.batches.iter().map(|b| b.appends.len()).sum::<usize>() == n as usize
    })
    .await;
    assert!(store.shared.lock_queue().leading);
    (leader, others)
}

/// Appends that arrive while a leader syncs wait for it, then the syncer thread commits them:
/// every append is answered, positions follow the queue's order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_queued_during_a_lead_go_to_the_syncer() {
    let dir = tempfile::tempdir().unwrap();
    let (faults, gate) = (FaultInjector::new(2), Arc::new(Gate::default()));
    let store = open(dir.path(), &faults, &gate);
    for round in 0..3 {
        let (leader, others) = queue_behind_a_leader(&store, &gate, 16).await;
        let led_before = led(&store);
        gate.release();
        let first = leader.await.unwrap().expect("the leader's append");
        for t in others {
            let e = t.await.unwrap().expect("a queued append");
            assert!(e.position > first.position, "round {round}");
        }
        assert_eq!(led(&store), led_before, "the queued appends were not led");
        assert_eq!(store.head(), first.position + 16, "round {round}");
    }
    let head = store.head();
    drop(store);
    let store = open(dir.path(), &faults, &gate);
    assert_eq!(
        store.read_all(1, usize::MAX).await.unwrap().len() as u64,
        head
    );
}

/// The leader's sync fails: its append and every append queued behind it get the error,
/// appends are refused until the syncer thread has repaired the segment, then go on at the
/// next position; nothing of the failed appends is ever read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_lead_fails_everyone_behind_it_and_the_syncer_repairs() {
    let dir = tempfile::tempdir().unwrap();
    let (faults, gate) = (FaultInjector::new(3), Arc::new(Gate::default()));
    let store = open(dir.path(), &faults, &gate);
    let (leader, others) = {
        faults.inject(Fault::SyncFails, 1, 1); // the warm-up's sync passes, the leader's fails
        queue_behind_a_leader(&store, &gate, 8).await
    };
    let head = store.head();
    gate.release();
    assert!(matches!(leader.await.unwrap(), Err(StoreError::Io(_))));
    for t in others {
        assert!(
            matches!(t.await.unwrap(), Err(StoreError::Io(_))),
            "queued behind the failed lead"
        );
    }
    until("repaired", || store.health().is_ok()).await;
    assert_eq!(store.head(), head);
    let e = append(&store, "after", 0).await.expect("appends resume");
    assert_eq!(e.position, head + 1);
    drop(store);
    let store = open(dir.path(), &faults, &gate);
    let all = store.read_all(1, usize::MAX).await.unwrap();
    assert_eq!(all.len() as u64, head + 1);
    assert!(all.iter().all(|e| !e.stream.as_str().contains("other")));
}
