//! The file store under injected I/O faults (issue 20, item 7), through the fault-injecting
//! I/O layer (`testkit::FaultInjector`): a full disk (`ENOSPC`), a failed `fdatasync` that
//! loses some of the batch's sectors, short writes. After a fault the store refuses appends and
//! reports it (`health`) until its syncer has repaired the segment, then takes appends again
//! without a reopen. Every acknowledged event stays readable (after the fault, after the
//! repair, after reopening), nothing unacknowledged ever becomes visible, and positions stay
//! dense. A model test drives random appends and faults against a plain list.

use std::sync::Arc;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use userstate::testkit::{event, stream, Fault, FaultInjector};
use userstate::{EventStore, ExpectedVersion, FileStore, RecordedEvent, StoreError};

fn open(dir: &std::path::Path, faults: &FaultInjector) -> Arc<FileStore> {
    Arc::new(
        FileStore::options()
            .segment_size(4096)
            .fault_injector(faults)
            .open(dir)
            .expect("open"),
    )
}

async fn healthy(store: &FileStore) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while let Err(e) = store.health() {
        assert!(Instant::now() < deadline, "never repaired: {e}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// The reference: the acknowledged log, as (stream, event id).
#[derive(Default)]
struct Model {
    log: Vec<(String, uuid::Uuid)>,
}

impl Model {
    fn apply(&mut self, mut recorded: Vec<RecordedEvent>) {
        recorded.sort_by_key(|e| e.position);
        for e in recorded {
            assert_eq!(e.position, self.log.len() as u64 + 1, "positions are dense");
            self.log.push((e.stream.to_string(), e.event_id));
        }
    }

    fn version(&self, s: &str) -> u64 {
        self.log.iter().filter(|(n, _)| n == s).count() as u64
    }
}

/// The store holds exactly the acknowledged log: nothing lost, nothing more.
async fn compare(store: &FileStore, model: &Model, when: &str) {
    let all = store.read_all(1, usize::MAX).await.expect("read_all");
    let got: Vec<(String, uuid::Uuid)> = all
        .iter()
        .map(|e| (e.stream.to_string(), e.event_id))
        .collect();
    assert_eq!(got, model.log, "{when}");
    assert_eq!(
        store.head_position().await.unwrap(),
        model.log.len() as u64,
        "{when}"
    );
    for s in 0..3u8 {
        let name = stream(&s.to_string());
        let read = store.read_stream(&name, 1).await.expect("read_stream");
        assert_eq!(read.len() as u64, model.version(name.as_str()), "{when}");
    }
}

#[derive(Clone, Debug)]
enum Op {
    /// One append of `n` events with the right expected version.
    Append { stream: u8, n: u8 },
    /// Appends from several tasks at once (expected `Any`).
    Burst(Vec<(u8, u8)>),
    /// Arms a fault: the write or sync `after` operations from now, `times` in a row.
    Arm {
        fault: Fault,
        after: u64,
        times: u64,
    },
    /// Drops the store and opens it again (once it has repaired itself).
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    let fault = prop_oneof![
        Just(Fault::NoSpace),
        Just(Fault::ShortWrite),
        Just(Fault::SyncFails)
    ];
    prop_oneof![
        5 => (0u8..3, 1u8..4).prop_map(|(stream, n)| Op::Append { stream, n }),
        2 => proptest::collection::vec((0u8..3, 1u8..4), 1..6).prop_map(Op::Burst),
        3 => (fault, 0u64..6, 1u64..4).prop_map(|(fault, after, times)| Op::Arm { fault, after, times }),
        1 => Just(Op::Reopen),
    ]
}

/// An append's outcome: acknowledged, or refused by the fault (an I/O error for the failed
/// batch, `Unavailable` while the store repairs). Nothing else is expected.
fn acknowledged(
    result: Result<Vec<RecordedEvent>, StoreError>,
    step: usize,
) -> Option<Vec<RecordedEvent>> {
    match result {
        Ok(recorded) => Some(recorded),
        Err(StoreError::Io(_) | StoreError::Unavailable { .. }) => None,
        Err(e) => panic!("step {step}: unexpected {e}"),
    }
}

async fn run(seed: u64, ops: Vec<Op>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let faults = FaultInjector::new(seed);
    let mut store = open(dir.path(), &faults);
    let mut model = Model::default();
    for (step, op) in ops.into_iter().enumerate() {
        match op {
            Op::Append { stream: s, n } => {
                let name = stream(&s.to_string());
                let expected = ExpectedVersion::Exact(model.version(name.as_str()));
                let events = (0..n).map(|i| event("model", u64::from(i))).collect();
                let result = store.append(&name, expected, events).await;
                if let Some(recorded) = acknowledged(result, step) {
                    model.apply(recorded);
                }
            }
            Op::Burst(appends) => {
                let tasks: Vec<_> = appends
                    .into_iter()
                    .map(|(s, n)| {
                        let store = store.clone();
                        tokio::spawn(async move {
                            let events = (0..n).map(|i| event("burst", u64::from(i))).collect();
                            store
                                .append(&stream(&s.to_string()), ExpectedVersion::Any, events)
                                .await
                        })
                    })
                    .collect();
                let mut recorded = Vec::new();
                for t in tasks {
                    recorded.extend(acknowledged(t.await.expect("task"), step).unwrap_or_default());
                }
                model.apply(recorded);
            }
            Op::Arm {
                fault,
                after,
                times,
            } => faults.inject(fault, after, times),
            Op::Reopen => {
                healthy(&store).await;
                drop(store);
                store = open(dir.path(), &faults);
            }
        }
        // Right after the step, repaired or not: what was acknowledged, and only that.
        compare(&store, &model, &format!("step {step}, after the fault")).await;
        healthy(&store).await;
        compare(&store, &model, &format!("step {step}, after the repair")).await;
    }
    faults.clear();
    healthy(&store).await;
    drop(store);
    compare(&open(dir.path(), &faults), &model, "after reopening").await;
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    #[test]
    fn acknowledged_events_survive_injected_faults_and_nothing_else_appears(
        seed in any::<u64>(),
        ops in proptest::collection::vec(op(), 1..30),
    ) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(run(seed, ops));
    }
}

/// The disk is full: the append that hits it fails, the store reports it and refuses appends
/// while the repair keeps failing, and once space is back it takes appends again, at the next
/// position, without a reopen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_resume_after_a_full_disk_without_a_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let faults = FaultInjector::new(3);
    let store = open(dir.path(), &faults);
    let mut model = Model::default();
    for i in 0..5 {
        let r = store
            .append(&stream("0"), ExpectedVersion::Any, vec![event("t", i)])
            .await
            .expect("append");
        model.apply(r);
    }
    faults.inject(Fault::NoSpace, 0, u64::MAX / 2);
    let err = store
        .append(&stream("0"), ExpectedVersion::Any, vec![event("t", 9)])
        .await
        .expect_err("the disk is full");
    assert!(
        err.to_string().contains("28") || err.to_string().contains("space"),
        "{err}"
    );
    assert!(
        store.health().is_err(),
        "a store that cannot write is not healthy"
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    let refused = store
        .append(&stream("1"), ExpectedVersion::Any, vec![event("t", 10)])
        .await
        .expect_err("still full");
    assert!(
        matches!(refused, StoreError::Unavailable { .. }),
        "{refused}"
    );
    assert!(store.health().is_err(), "still full");
    compare(&store, &model, "while full").await;

    faults.clear();
    healthy(&store).await;
    let r = store
        .append(
            &stream("1"),
            ExpectedVersion::NoStream,
            vec![event("t", 11)],
        )
        .await
        .expect("appends resume");
    assert_eq!(r[0].position, 6, "the next position, none skipped");
    model.apply(r);
    compare(&store, &model, "after the repair").await;
    drop(store);
    compare(&open(dir.path(), &faults), &model, "after reopening").await;
}

/// A failed `fdatasync` whose batch reached the disk in part: its callers get an error, and
/// none of its events is ever read back — not after the repair, not after a reopen — even when
/// a shorter batch is later written over the same place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_sync_never_lets_its_batch_be_read() {
    for seed in 1..20 {
        let dir = tempfile::tempdir().expect("tempdir");
        let faults = FaultInjector::new(seed);
        let store = open(dir.path(), &faults);
        let mut model = Model::default();
        let r = store
            .append(
                &stream("a0"),
                ExpectedVersion::NoStream,
                vec![event("t", 0)],
            )
            .await
            .expect("append");
        model.apply(r);
        // Appends of one size, each a whole append: had the repair not cut the failed batch
        // away, a later, shorter batch written over it would leave its later records exactly
        // where the next open's scan looks, at the positions that follow.
        faults.inject(Fault::SyncFails, 0, 1);
        let tasks: Vec<_> = (1..9)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    let name = stream(&format!("a{i}"));
                    store
                        .append(&name, ExpectedVersion::NoStream, vec![event("t", i)])
                        .await
                })
            })
            .collect();
        let mut recorded = Vec::new();
        for t in tasks {
            recorded.extend(t.await.expect("task").unwrap_or_default());
        }
        model.apply(recorded);
        assert!(faults.injected() > 0, "seed {seed}: the sync failed");
        healthy(&store).await;
        let r = store
            .append(
                &stream("a9"),
                ExpectedVersion::NoStream,
                vec![event("t", 9)],
            )
            .await
            .expect("appends resume");
        assert_eq!(r[0].position, model.log.len() as u64 + 1, "seed {seed}");
        model.apply(r);
        compare(&store, &model, &format!("seed {seed}")).await;
        drop(store);
        compare(
            &open(dir.path(), &faults),
            &model,
            &format!("seed {seed}, reopened"),
        )
        .await;
    }
}
