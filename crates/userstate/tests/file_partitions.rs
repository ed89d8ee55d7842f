//! Concurrent appends across the file store's version partitions (issue 29, ADR 0008): the
//! appenders of different streams decide their versions under different locks and meet only
//! for the global position and hash chain. Whatever the mix, positions stay gapless, each
//! stream's sequences run 1..=n in position order, the chain verifies, two appends never both
//! win one expected version, and the log reads back the same after a reopen.

use std::collections::HashMap;
use std::sync::Arc;

use proptest::prelude::*;
use userstate::testkit::{event, stream};
use userstate::verify::verify_store;
use userstate::{EventStore, ExpectedVersion, FileStore, StoreError};

/// Streams every task appends to with the versions it expects (`Exact` of what it last got),
/// plus `shared` streams all tasks race on with the version they last read.
#[derive(Clone, Debug)]
struct Mix {
    tasks: usize,
    appends: usize,
    own_streams: usize,
    shared: usize,
    events_per_append: u64,
}

fn mix() -> impl Strategy<Value = Mix> {
    (2usize..9, 20usize..80, 1usize..20, 1usize..4, 1u64..4).prop_map(
        |(tasks, appends, own_streams, shared, events_per_append)| Mix {
            tasks,
            appends,
            own_streams,
            shared,
            events_per_append,
        },
    )
}

/// What one task saw: per stream, the sequences of the events it was answered with.
type Won = HashMap<String, Vec<u64>>;

async fn task(store: Arc<FileStore>, t: usize, mix: Mix) -> Won {
    let mut won = Won::new();
    let mut own = vec![0u64; mix.own_streams];
    for i in 0..mix.appends {
        let events = || {
            (0..mix.events_per_append)
                .map(|k| event("test.partitioned", (i as u64) << 8 | k))
                .collect()
        };
        let (name, expected) = if i % 3 == 2 {
            // A shared stream: expect the version this task reads now; others may win first.
            let name = format!("shared-{}", i % mix.shared);
            let version = store.read_stream(&stream(&name), 1).await.unwrap().len() as u64;
            (name, ExpectedVersion::Exact(version))
        } else {
            let k = i % mix.own_streams;
            (format!("t{t}-s{k}"), ExpectedVersion::Exact(own[k]))
        };
        match store.append(&stream(&name), expected, events()).await {
            Ok(recorded) => {
                if let Some(k) = name
                    .strip_prefix(&format!("t{t}-s"))
                    .and_then(|k| k.parse::<usize>().ok())
                {
                    own[k] = recorded.last().unwrap().sequence;
                }
                won.entry(name)
                    .or_default()
                    .extend(recorded.iter().map(|e| e.sequence));
            }
            Err(StoreError::Conflict { .. }) => {
                assert!(name.starts_with("shared-"), "{name}: its own stream conflicted");
            }
            Err(e) => panic!("{name}: {e}"),
        }
    }
    won
}

/// Runs `mix` on a fresh store and checks every rule of the module's docs.
async fn check(mix: Mix) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(FileStore::open(dir.path()).unwrap());
    let handles: Vec<_> = (0..mix.tasks)
        .map(|t| tokio::spawn(task(store.clone(), t, mix.clone())))
        .collect();
    let mut won = Won::new();
    for h in handles {
        for (name, sequences) in h.await.unwrap() {
            won.entry(name).or_default().extend(sequences);
        }
    }
    let head = store.head_position().await.unwrap();
    let log = store.read_all(1, usize::MAX).await.unwrap();
    let positions: Vec<u64> = log.iter().map(|e| e.position).collect();
    assert_eq!(positions, (1..=head).collect::<Vec<_>>(), "positions not gapless");
    let mut in_log: HashMap<String, Vec<u64>> = HashMap::new();
    for e in &log {
        let name = e.stream.as_str().trim_start_matches("test:").to_owned();
        in_log.entry(name).or_default().push(e.sequence);
    }
    assert_eq!(in_log.len(), won.len());
    for (name, mut sequences) in won {
        // Two winners of one expected version would answer one sequence twice.
        sequences.sort_unstable();
        let n = sequences.len() as u64;
        assert_eq!(sequences, (1..=n).collect::<Vec<_>>(), "{name}: answered sequences");
        assert_eq!(in_log[&name], sequences, "{name}: sequences in position order");
    }
    let report = verify_store(&*store, |_| {}).await.unwrap();
    assert_eq!(report.chain_breaks, 0, "{:?}", report.findings);
    assert_eq!(report.head_position, head);
    drop(store);
    let reopened = FileStore::open(dir.path()).unwrap();
    assert_eq!(reopened.read_all(1, usize::MAX).await.unwrap(), log);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(8))]

    #[test]
    fn concurrent_appends_across_partitions_keep_positions_sequences_and_chain(mix in mix()) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(4)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(check(mix));
    }
}

/// Many streams (every partition is used) from 64 tasks, then a second round on the same
/// streams, decided from what the partitions kept; a wrong version is refused naming the
/// right one. (Forgetting published versions is tested in `writer::versions`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_streams_from_many_tasks_decide_versions_per_stream() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(FileStore::open(dir.path()).unwrap());
    let (streams, tasks) = (4_000usize, 64usize);
    for round in 0..2u64 {
        let handles: Vec<_> = (0..tasks)
            .map(|t| {
                let store = store.clone();
                tokio::spawn(async move {
                    for i in (t..streams).step_by(tasks) {
                        let s = stream(&format!("many-{i}"));
                        let e = vec![event("test.partitioned", i as u64)];
                        store
                            .append(&s, ExpectedVersion::Exact(round), e.clone())
                            .await
                            .unwrap();
                        // A wrong version is refused, with the right one named.
                        match store.append(&s, ExpectedVersion::Exact(round), e).await {
                            Err(StoreError::Conflict { actual, .. }) => {
                                assert_eq!(actual, round + 1)
                            }
                            other => panic!("{i}: {other:?}"),
                        }
                    }
                })
            })
            .collect();
        for h in handles {
            h.await.unwrap();
        }
    }
    assert_eq!(store.head_position().await.unwrap(), 2 * streams as u64);
}
