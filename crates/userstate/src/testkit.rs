//! The store conformance suite: one set of checks every [`EventStore`] backend must pass.
//!
//! A backend runs the whole suite with one macro call in a test file:
//!
//! ```ignore
//! userstate::store_conformance_tests!(|| async {
//!     (userstate::store::MemoryStore::new(), ()) // (store, guard kept alive for the test)
//! });
//! ```
//!
//! The factory returns a fresh, empty store and a guard (a temporary directory, a database
//! schema, …) that lives as long as the test. The calling crate needs `tokio` with the
//! `macros` and `rt-multi-thread` features.

mod gate;
mod spy;

pub use crate::store::faults::{Fault, FaultInjector};
pub use gate::{Gated, GatedStore};
pub use spy::SpyStore;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::store::{EventMetadata, EventStore, ExpectedVersion, NewEvent, StoreError, StreamId};

/// Generates one `#[tokio::test]` per conformance check for the store made by `$factory`.
/// With `optional: $factory`, the factory returns `Option<(store, guard)>` and `None` skips
/// the check (a backend whose server may be absent on a laptop).
#[macro_export]
macro_rules! store_conformance_tests {
    // A factory returning `Option<(store, guard)>`: `None` skips the check (for backends that
    // need a server which may be absent; the factory prints why, or panics under CI).
    (optional: $factory:expr) => {
        $crate::store_conformance_tests!(@names (optional) $factory);
    };
    ($factory:expr) => {
        $crate::store_conformance_tests!(@names (required) $factory);
    };
    (@names $mode:tt $factory:expr) => {
        $crate::store_conformance_tests!(@each $mode $factory;
            append_and_read_back, sequences_are_gapless_and_positions_increase,
            expected_versions_are_enforced, conflicts_write_nothing,
            concurrent_appends_on_one_version_have_one_winner, multi_event_appends_are_atomic,
            reads_from_the_middle, empty_and_unknown_streams, read_all_pages_in_order,
            visit_all_lends_what_read_all_returns, followers_never_miss_an_event, head_is_watchable, bad_input_is_rejected,
            metadata_and_payload_round_trip, imported_events_keep_their_time);
    };
    (@each (required) $factory:expr; $($name:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                let (store, _guard) = ($factory)().await;
                $crate::testkit::$name(::std::sync::Arc::new(store)).await;
            }
        )*
    };
    (@each (optional) $factory:expr; $($name:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                let Some((store, _guard)) = ($factory)().await else { return };
                $crate::testkit::$name(::std::sync::Arc::new(store)).await;
            }
        )*
    };
}

/// An event of type `t` with a small payload, for tests.
pub fn event(t: &str, n: u64) -> NewEvent {
    NewEvent::new(
        t,
        1,
        serde_json::json!({ "n": n }),
        EventMetadata {
            instance: "inst".into(),
            resource_owner: "org".into(),
            creator: "tester".into(),
            correlation_id: Some(format!("c-{n}")),
            idempotency_key: None,
        },
    )
}

/// A stream name for tests.
pub fn stream(name: &str) -> StreamId {
    StreamId::new(format!("test:{name}")).expect("valid test stream name")
}

fn events(n: u64) -> Vec<NewEvent> {
    (1..=n).map(|i| event("test.happened", i)).collect()
}

/// Appended events come back from `read_stream` and `read_all` unchanged, in order.
pub async fn append_and_read_back<S: EventStore>(store: Arc<S>) {
    let s = stream("a");
    let recorded = store
        .append(&s, ExpectedVersion::NoStream, events(3))
        .await
        .expect("first append");
    assert_eq!(
        recorded.iter().map(|e| e.sequence).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    let read = store.read_stream(&s, 1).await.expect("read_stream");
    assert_eq!(read, recorded);
    let all = store.read_all(1, 100).await.expect("read_all");
    assert_eq!(all, recorded);
    assert_eq!(store.head_position().await.unwrap(), recorded[2].position);
}

/// Sequences are 1, 2, 3 … per stream; positions strictly increase across streams.
pub async fn sequences_are_gapless_and_positions_increase<S: EventStore>(store: Arc<S>) {
    for round in 0..5u64 {
        for name in ["x", "y", "z"] {
            store
                .append(&stream(name), ExpectedVersion::Any, events(round % 3 + 1))
                .await
                .expect("append");
        }
    }
    let all = store.read_all(1, 10_000).await.unwrap();
    assert_eq!(all.len(), 3 * (1 + 2 + 3 + 1 + 2));
    for pair in all.windows(2) {
        assert!(pair[0].position < pair[1].position, "positions increase");
    }
    for name in ["x", "y", "z"] {
        let seqs: Vec<u64> = store
            .read_stream(&stream(name), 1)
            .await
            .unwrap()
            .iter()
            .map(|e| e.sequence)
            .collect();
        assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    }
}

/// `NoStream`, `Exact` and `Any` accept and refuse exactly as documented, and a conflict says
/// what was expected and what was found.
pub async fn expected_versions_are_enforced<S: EventStore>(store: Arc<S>) {
    let s = stream("ev");
    store
        .append(&s, ExpectedVersion::Exact(0), events(1))
        .await
        .expect("Exact(0) on an empty stream");
    match store.append(&s, ExpectedVersion::NoStream, events(1)).await {
        Err(StoreError::Conflict {
            stream,
            expected,
            actual,
        }) => {
            assert_eq!(stream, s);
            assert_eq!(expected, ExpectedVersion::NoStream);
            assert_eq!(actual, 1);
        }
        other => panic!("NoStream on a stream with events must conflict, got {other:?}"),
    }
    for wrong in [0, 2, 7] {
        match store
            .append(&s, ExpectedVersion::Exact(wrong), events(1))
            .await
        {
            Err(StoreError::Conflict { actual, .. }) => assert_eq!(actual, 1),
            other => panic!("Exact({wrong}) at version 1 must conflict, got {other:?}"),
        }
    }
    store
        .append(&s, ExpectedVersion::Exact(1), events(2))
        .await
        .expect("Exact(1) at version 1");
    let r = store
        .append(&s, ExpectedVersion::Any, events(1))
        .await
        .expect("Any always appends");
    assert_eq!(r[0].sequence, 4);
}

/// A refused append leaves no trace: not in the stream, not in `read_all`, not in the head.
pub async fn conflicts_write_nothing<S: EventStore>(store: Arc<S>) {
    let s = stream("cw");
    store
        .append(&s, ExpectedVersion::NoStream, events(2))
        .await
        .unwrap();
    let head = store.head_position().await.unwrap();
    assert!(store
        .append(&s, ExpectedVersion::Exact(1), events(3))
        .await
        .is_err());
    assert_eq!(store.read_stream(&s, 1).await.unwrap().len(), 2);
    assert_eq!(store.read_all(1, 100).await.unwrap().len(), 2);
    assert_eq!(store.head_position().await.unwrap(), head);
}

/// Many tasks append on the same expected version at once: exactly one wins, every time.
pub async fn concurrent_appends_on_one_version_have_one_winner<S: EventStore>(store: Arc<S>) {
    const ROUNDS: u64 = 50;
    const RACERS: usize = 16;
    let s = stream("race");
    for round in 0..ROUNDS {
        let barrier = Arc::new(tokio::sync::Barrier::new(RACERS));
        let tasks: Vec<_> = (0..RACERS)
            .map(|_| {
                let (store, s, barrier) = (store.clone(), s.clone(), barrier.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    store
                        .append(&s, ExpectedVersion::Exact(round), events(1))
                        .await
                })
            })
            .collect();
        let mut wins = 0;
        for task in tasks {
            match task.await.expect("racer task") {
                Ok(_) => wins += 1,
                Err(StoreError::Conflict { actual, .. }) => assert_eq!(actual, round + 1),
                Err(other) => panic!("unexpected error {other:?}"),
            }
        }
        assert_eq!(wins, 1, "round {round}: exactly one writer wins");
    }
    assert_eq!(store.read_stream(&s, 1).await.unwrap().len() as u64, ROUNDS);
}

/// A multi-event append is all or nothing and its events are contiguous in the stream.
pub async fn multi_event_appends_are_atomic<S: EventStore>(store: Arc<S>) {
    let s = stream("atomic");
    let writers: Vec<_> = (0..8)
        .map(|_| {
            let (store, s) = (store.clone(), s.clone());
            tokio::spawn(async move {
                for _ in 0..10 {
                    store
                        .append(&s, ExpectedVersion::Any, events(5))
                        .await
                        .expect("append");
                }
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    let read = store.read_stream(&s, 1).await.unwrap();
    assert_eq!(read.len(), 8 * 10 * 5);
    // Each batch carries payloads n = 1..=5 in order; batches must not interleave.
    for chunk in read.chunks(5) {
        let ns: Vec<u64> = chunk
            .iter()
            .map(|e| e.payload["n"].as_u64().unwrap())
            .collect();
        assert_eq!(ns, [1, 2, 3, 4, 5]);
        // Positions only need to increase (KurrentDB's are log offsets, not counters).
        assert!(chunk.windows(2).all(|p| p[1].position > p[0].position));
        assert!(chunk.iter().all(|e| e.created_at == chunk[0].created_at));
    }
}

/// `read_stream` and `read_all` start anywhere, including past the end.
pub async fn reads_from_the_middle<S: EventStore>(store: Arc<S>) {
    let s = stream("mid");
    store
        .append(&s, ExpectedVersion::NoStream, events(10))
        .await
        .unwrap();
    let tail = store.read_stream(&s, 4).await.unwrap();
    assert_eq!(tail.len(), 7);
    assert_eq!(tail[0].sequence, 4);
    assert!(store.read_stream(&s, 11).await.unwrap().is_empty());
    assert_eq!(store.read_stream(&s, 0).await.unwrap().len(), 10);
    let all = store.read_all(1, 100).await.unwrap();
    let from = all[5].position;
    let rest = store.read_all(from, 100).await.unwrap();
    assert_eq!(rest, all[5..].to_vec());
    assert!(store
        .read_all(all[9].position + 1, 100)
        .await
        .unwrap()
        .is_empty());
}

/// An empty store and an unknown stream read as empty, not as errors.
pub async fn empty_and_unknown_streams<S: EventStore>(store: Arc<S>) {
    assert!(store.read_all(0, 10).await.unwrap().is_empty());
    assert!(store.read_all(1, 10).await.unwrap().is_empty());
    assert_eq!(store.head_position().await.unwrap(), 0);
    assert!(store
        .read_stream(&stream("nobody"), 1)
        .await
        .unwrap()
        .is_empty());
    store
        .append(&stream("some"), ExpectedVersion::NoStream, events(1))
        .await
        .unwrap();
    assert!(store
        .read_stream(&stream("nobody"), 1)
        .await
        .unwrap()
        .is_empty());
}

/// Paging through `read_all` with a small limit visits every event once, in order.
pub async fn read_all_pages_in_order<S: EventStore>(store: Arc<S>) {
    for i in 0..30u64 {
        store
            .append(
                &stream(&format!("p{}", i % 7)),
                ExpectedVersion::Any,
                events(i % 3 + 1),
            )
            .await
            .unwrap();
    }
    let everything = store.read_all(1, 10_000).await.unwrap();
    let mut paged = Vec::new();
    let mut from = 1;
    loop {
        let page = store.read_all(from, 7).await.unwrap();
        assert!(page.len() <= 7);
        let Some(last) = page.last() else { break };
        from = last.position + 1;
        paged.extend(page);
    }
    assert_eq!(paged, everything);
}

/// `visit_all` lends, page by page, exactly the events `read_all` returns (all but the
/// metadata), and visits nothing past the head or with a limit of 0.
pub async fn visit_all_lends_what_read_all_returns<S: EventStore>(store: Arc<S>) {
    for i in 0..20u64 {
        store
            .append(
                &stream(&format!("v{}", i % 5)),
                ExpectedVersion::Any,
                events(i % 3 + 1),
            )
            .await
            .unwrap();
    }
    let everything = store.read_all(1, 10_000).await.unwrap();
    // What a fold would keep of each lent event, with its payload parsed.
    type Seen = (
        String,
        u64,
        u64,
        DateTime<Utc>,
        String,
        u16,
        serde_json::Value,
    );
    let kept = |e: crate::store::EventRef<'_>| -> Seen {
        let payload = e.payload.deserialize().expect("a stored payload is JSON");
        let (stream, event_type) = (e.stream.to_owned(), e.event_type.to_owned());
        (
            stream,
            e.sequence,
            e.position,
            e.created_at,
            event_type,
            e.revision,
            payload,
        )
    };
    let expected: Vec<Seen> = everything.iter().map(|e| kept(e.as_event_ref())).collect();
    let mut seen: Vec<Seen> = Vec::new();
    let mut from = 1;
    loop {
        let before = seen.len();
        let visited = store
            .visit_all(from, 7, &mut |e| seen.push(kept(e)))
            .await
            .unwrap();
        assert_eq!(
            visited,
            seen.len() - before,
            "the count is of events visited"
        );
        assert!(visited <= 7);
        let Some(last) = seen.last().filter(|_| visited > 0) else {
            break;
        };
        from = last.2 + 1;
    }
    assert_eq!(seen, expected);
    let head = store.head_position().await.unwrap();
    let mut none = |_: crate::store::EventRef<'_>| panic!("nothing to visit");
    assert_eq!(store.visit_all(head + 1, 10, &mut none).await.unwrap(), 0);
    assert_eq!(store.visit_all(1, 0, &mut none).await.unwrap(), 0);
}

/// Writers append while a follower pages through `read_all`: the follower sees every committed
/// event exactly once, in position order (the position invariant).
pub async fn followers_never_miss_an_event<S: EventStore>(store: Arc<S>) {
    const WRITERS: u64 = 8;
    const APPENDS: u64 = 40;
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let follower = {
        let (store, done) = (store.clone(), done.clone());
        tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut from = 1;
            loop {
                let finished = done.load(std::sync::atomic::Ordering::SeqCst);
                let page = store.read_all(from, 13).await.expect("follower read");
                if let Some(last) = page.last() {
                    from = last.position + 1;
                }
                let empty = page.is_empty();
                seen.extend(page.into_iter().map(|e| (e.position, e.event_id)));
                if finished && empty {
                    return seen;
                }
                if empty {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        })
    };
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut ids = Vec::new();
                for i in 0..APPENDS {
                    let s = stream(&format!("f{w}-{}", i % 4));
                    let r = store
                        .append(&s, ExpectedVersion::Any, events(1 + i % 2))
                        .await
                        .expect("writer append");
                    ids.extend(r.into_iter().map(|e| e.event_id));
                }
                ids
            })
        })
        .collect();
    let mut acknowledged = HashSet::new();
    for w in writers {
        acknowledged.extend(w.await.unwrap());
    }
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let seen = follower.await.unwrap();
    assert!(
        seen.windows(2).all(|p| p[0].0 < p[1].0),
        "in position order"
    );
    let seen_ids: Vec<_> = seen.iter().map(|(_, id)| *id).collect();
    let unique: HashSet<_> = seen_ids.iter().copied().collect();
    assert_eq!(unique.len(), seen_ids.len(), "no event seen twice");
    assert_eq!(unique, acknowledged, "every acknowledged event seen");
}

/// `watch_head` wakes a waiter that was waiting before an append committed.
pub async fn head_is_watchable<S: EventStore>(store: Arc<S>) {
    let head = store.watch_head();
    let start = head.get();
    assert_eq!(start, store.head_position().await.unwrap());
    // Waits for the next position, whatever it will be: the first event the append commits.
    let waiter = tokio::spawn({
        let head = head.clone();
        async move { head.wait_for(start + 1).await }
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(!waiter.is_finished(), "nothing was appended yet");
    let recorded = store
        .append(&stream("w"), ExpectedVersion::Any, events(2))
        .await
        .unwrap();
    let reached = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("head watch woke within 10 s")
        .unwrap();
    assert!(reached > start);
    let target = recorded[1].position;
    tokio::time::timeout(Duration::from_secs(10), head.wait_for(target))
        .await
        .expect("head reaches the append's last position");
}

/// An empty batch is refused and writes nothing.
pub async fn bad_input_is_rejected<S: EventStore>(store: Arc<S>) {
    match store
        .append(&stream("e"), ExpectedVersion::Any, vec![])
        .await
    {
        Err(StoreError::InvalidArgument(_)) => {}
        other => panic!("an empty append must be InvalidArgument, got {other:?}"),
    }
    assert!(store.read_all(1, 10).await.unwrap().is_empty());
    assert!(StreamId::new("").is_err());
    assert!(StreamId::new("a\nb").is_err());
}

/// Ids, types, revisions, payloads and metadata come back exactly as appended.
pub async fn metadata_and_payload_round_trip<S: EventStore>(store: Arc<S>) {
    let mut e = event("test.rich", 1);
    e.revision = 7;
    e.payload = serde_json::json!({"s": "ünïcødé \"q\"", "n": 12345678901234u64, "a": [1, null, true],
        "o": {"nested": {"deep": 1.5}}});
    e.metadata.idempotency_key = Some("key-1".into());
    let appended = store
        .append(&stream("rich"), ExpectedVersion::Any, vec![e.clone()])
        .await
        .unwrap();
    let back = &store.read_stream(&stream("rich"), 1).await.unwrap()[0];
    assert_eq!(back, &appended[0]);
    assert_eq!(back.event_id, e.event_id);
    assert_eq!(back.event_type, "test.rich");
    assert_eq!(back.revision, 7);
    assert_eq!(back.payload, e.payload);
    assert_eq!(back.metadata, e.metadata);
    let by_stream: BTreeMap<_, _> = [(back.stream.clone(), back.sequence)].into();
    assert_eq!(by_stream[&stream("rich")], 1);
}

/// An event appended with its own `created_at` (an import) keeps that time, to the millisecond
/// at least; ordinary events get the commit's time.
pub async fn imported_events_keep_their_time<S: EventStore>(store: Arc<S>) {
    use chrono::{TimeZone, Utc};
    let then = Utc
        .with_ymd_and_hms(2025, 3, 5, 21, 29, 22)
        .single()
        .expect("valid date")
        + chrono::Duration::milliseconds(38);
    let mut old = event("test.imported", 1);
    old.created_at = Some(then);
    let before = Utc::now() - chrono::Duration::seconds(5);
    let recorded = store
        .append(
            &stream("imp"),
            ExpectedVersion::NoStream,
            vec![old, event("test.new", 2)],
        )
        .await
        .unwrap();
    let back = store.read_stream(&stream("imp"), 1).await.unwrap();
    assert_eq!(back, recorded);
    assert_eq!(
        back[0].created_at.timestamp_millis(),
        then.timestamp_millis()
    );
    assert!(
        back[1].created_at >= before,
        "no own time: the commit's time"
    );
}
