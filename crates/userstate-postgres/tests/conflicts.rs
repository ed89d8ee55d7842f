//! Conflicts the version check cannot see in advance still come back typed: a unique
//! violation (SQLSTATE 23505, here from a reused event id) becomes `Conflict` with the stream's
//! real version, and inside a batch it fails only its own caller. Data PostgreSQL rejects is an
//! `InvalidArgument`.

mod common;

use std::sync::Arc;

use userstate::testkit::event;
use userstate::{EventStore, ExpectedVersion, StoreError, StreamId};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_unique_violation_is_a_typed_conflict_for_its_caller_only() {
    let Some((store, _guard)) = common::fresh("uv").await else {
        return;
    };
    let store = Arc::new(store);
    let s = StreamId::new("uv:i:dup").expect("stream");
    let reused = event("uv.first", 1);
    store
        .append(
            &s,
            ExpectedVersion::NoStream,
            vec![reused.clone(), event("uv.second", 2)],
        )
        .await
        .expect("first append");
    match store
        .append(&s, ExpectedVersion::Exact(2), vec![reused.clone()])
        .await
    {
        Err(StoreError::Conflict {
            stream,
            expected,
            actual,
        }) => {
            assert_eq!(stream, s);
            assert_eq!(expected, ExpectedVersion::Exact(2));
            assert_eq!(actual, 2, "the real version");
        }
        other => panic!("a reused event id must be a Conflict, got {other:?}"),
    }

    // Many callers at once, so they share batches; only the one reusing an id fails.
    for round in 0..10 {
        let barrier = Arc::new(tokio::sync::Barrier::new(16));
        let tasks: Vec<_> = (0..16)
            .map(|i| {
                let (store, barrier, reused) = (store.clone(), barrier.clone(), reused.clone());
                tokio::spawn(async move {
                    let stream = StreamId::new(format!("uv:i:r{round}-{i}")).expect("stream");
                    let e = if i == 7 { reused } else { event("uv.ok", i) };
                    barrier.wait().await;
                    (
                        i,
                        store
                            .append(&stream, ExpectedVersion::NoStream, vec![e])
                            .await,
                    )
                })
            })
            .collect();
        for task in tasks {
            match task.await.expect("task") {
                (7, Err(StoreError::Conflict { actual: 0, .. })) => {}
                (7, other) => panic!("the caller reusing an id must conflict, got {other:?}"),
                (_, Ok(recorded)) => assert_eq!(recorded[0].sequence, 1),
                (i, Err(e)) => panic!("caller {i} failed for another caller's conflict: {e}"),
            }
        }
    }
    assert_eq!(store.read_stream(&s, 1).await.expect("read").len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn data_postgres_rejects_is_an_invalid_argument() {
    let Some((store, _guard)) = common::fresh("nul").await else {
        return;
    };
    let mut e = event("nul.char", 1);
    e.payload = serde_json::json!({ "s": "a\u{0}b" });
    match store
        .append(
            &StreamId::new("nul:i:u").expect("stream"),
            ExpectedVersion::Any,
            vec![e],
        )
        .await
    {
        Err(StoreError::InvalidArgument(_)) => {}
        other => panic!("\\u0000 in jsonb must be InvalidArgument, got {other:?}"),
    }
    assert_eq!(store.head_position().await.expect("head"), 0);
}
