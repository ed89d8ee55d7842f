//! Model-based test: random appends (with right and wrong expected versions, single and
//! concurrent) and reopen points, run against the file store (small segments, so it rotates)
//! and against a plain in-memory model; after every step they must agree.

use std::collections::HashMap;
use std::sync::Arc;

use proptest::prelude::*;
use userstate::testkit::{event, stream};
use userstate::{EventStore, ExpectedVersion, FileStore, RecordedEvent, StoreError};

#[derive(Clone, Debug)]
enum Expect {
    Any,
    NoStream,
    Right,
    Wrong(u64),
}

#[derive(Clone, Debug)]
enum Op {
    Append {
        stream: u8,
        expect: Expect,
        n: u8,
    },
    /// Appends from several tasks at once (expected `Any`).
    Burst(Vec<(u8, u8)>),
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    let expect = prop_oneof![
        Just(Expect::Any),
        Just(Expect::NoStream),
        Just(Expect::Right),
        (1u64..3).prop_map(Expect::Wrong),
    ];
    prop_oneof![
        6 => (0u8..4, expect, 1u8..4).prop_map(|(stream, expect, n)| Op::Append { stream, expect, n }),
        2 => proptest::collection::vec((0u8..4, 1u8..4), 1..8).prop_map(Op::Burst),
        1 => Just(Op::Reopen),
    ]
}

/// The reference: the log as a list of (stream, event id).
#[derive(Default)]
struct Model {
    log: Vec<(String, uuid::Uuid)>,
    versions: HashMap<String, u64>,
}

impl Model {
    fn version(&self, s: &str) -> u64 {
        self.versions.get(s).copied().unwrap_or(0)
    }
    fn apply(&mut self, recorded: &[RecordedEvent]) {
        for e in recorded {
            assert_eq!(e.position, self.log.len() as u64 + 1, "next position");
            let v = self.versions.entry(e.stream.to_string()).or_default();
            *v += 1;
            assert_eq!(e.sequence, *v, "next sequence");
            self.log.push((e.stream.to_string(), e.event_id));
        }
    }
}

fn open(dir: &std::path::Path) -> Arc<FileStore> {
    Arc::new(
        FileStore::options()
            .segment_size(4096)
            .open(dir)
            .expect("open"),
    )
}

async fn compare(store: &FileStore, model: &Model) {
    assert_eq!(store.head_position().await.unwrap(), model.log.len() as u64);
    let all = store.read_all(1, usize::MAX).await.unwrap();
    let got: Vec<(String, uuid::Uuid)> = all
        .iter()
        .map(|e| (e.stream.to_string(), e.event_id))
        .collect();
    assert_eq!(got, model.log);
    for s in 0..4u8 {
        let name = stream(&s.to_string());
        let read = store.read_stream(&name, 1).await.unwrap();
        assert_eq!(read.len() as u64, model.version(name.as_str()));
    }
}

async fn run(ops: Vec<Op>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = open(dir.path());
    let mut model = Model::default();
    for (step, op) in ops.into_iter().enumerate() {
        match op {
            Op::Append {
                stream: s,
                expect,
                n,
            } => {
                let name = stream(&s.to_string());
                let actual = model.version(name.as_str());
                let expected = match expect {
                    Expect::Any => ExpectedVersion::Any,
                    Expect::NoStream => ExpectedVersion::NoStream,
                    Expect::Right => ExpectedVersion::Exact(actual),
                    Expect::Wrong(d) => ExpectedVersion::Exact(actual + d),
                };
                let events = (0..n).map(|i| event("model", u64::from(i))).collect();
                match store.append(&name, expected, events).await {
                    Ok(recorded) => {
                        assert!(
                            expected.matches(actual),
                            "step {step}: accepted {expected:?}"
                        );
                        assert_eq!(recorded.len(), usize::from(n));
                        model.apply(&recorded);
                    }
                    Err(StoreError::Conflict { actual: a, .. }) => {
                        assert!(
                            !expected.matches(actual),
                            "step {step}: refused {expected:?}"
                        );
                        assert_eq!(a, actual);
                    }
                    Err(e) => panic!("step {step}: {e}"),
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
                    recorded.extend(t.await.expect("task").expect("append Any"));
                }
                recorded.sort_by_key(|e| e.position);
                model.apply(&recorded);
            }
            Op::Reopen => {
                drop(store);
                store = open(dir.path());
            }
        }
        assert_eq!(store.head_position().await.unwrap(), model.log.len() as u64);
    }
    compare(&store, &model).await;
    drop(store);
    compare(&open(dir.path()), &model).await;
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    #[test]
    fn file_store_agrees_with_the_model(ops in proptest::collection::vec(op(), 1..40)) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(run(ops));
    }
}
