//! Every workload runs on the memory store and counts what BENCH.md says it counts: the
//! task-owned workloads never race, so every command succeeds.

use std::sync::Arc;
use std::time::Duration;

use userstate::{EventStore, MemoryStore, StreamId};
use userstate_bench::{fsync_floor, run, FloorMode, RunSpec, Workload};

fn spec(workload: Workload) -> RunSpec {
    RunSpec {
        store_name: "memory".into(),
        durable: false,
        workload,
        users: 50,
        concurrency: 4,
        duration: Duration::from_millis(200),
        progress: false,
        instance: userstate::InstanceId::new("bench").unwrap(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owned_workloads_only_succeed() {
    for workload in [
        Workload::LockUnlock,
        Workload::Mixed,
        Workload::ReadWhileWrite,
    ] {
        let store = Arc::new(MemoryStore::new());
        let report = run(store.clone(), &spec(workload)).await.unwrap();
        assert!(report.commands > 0, "{workload:?} ran commands");
        assert_eq!(report.errors, 0, "{workload:?}");
        assert_eq!(report.rejected, 0, "{workload:?} never races");
        // Every command appended exactly one event after the 50 adds (+50 reservations).
        assert_eq!(
            store.head_position().await.unwrap(),
            100 + report.commands,
            "{workload:?}"
        );
        assert!(report.p50_us <= report.p99_us && report.p99_us <= report.p999_us);
        if workload == Workload::ReadWhileWrite {
            assert!(report.reads > 0, "{report:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_adds_users_and_zipf_counts_rejections_not_errors() {
    let store = Arc::new(MemoryStore::new());
    let report = run(store.clone(), &spec(Workload::Create)).await.unwrap();
    assert!(report.commands > 0);
    assert_eq!(report.errors, 0);
    let first = userstate::UserId::new("bench-c0-0").unwrap();
    let instance = userstate::InstanceId::new("bench").unwrap();
    let events = store
        .read_stream(&StreamId::user(&instance, &first), 1)
        .await
        .unwrap();
    assert_eq!(events[0].event_type, "user.human.added");

    let report = run(Arc::new(MemoryStore::new()), &spec(Workload::Zipf))
        .await
        .unwrap();
    assert!(report.commands > 0);
    assert_eq!(report.errors, 0);
}

#[test]
fn the_fsync_floor_writes_and_cleans_up() {
    let dir = tempfile::tempdir().unwrap();
    for mode in [FloorMode::Append, FloorMode::InPlace] {
        let floor = fsync_floor(dir.path(), 64, mode, Duration::from_millis(50)).unwrap();
        assert_eq!(floor.store, "fsync-floor");
        assert_eq!(floor.mode, mode);
        assert!(floor.records_per_s > 0.0);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
