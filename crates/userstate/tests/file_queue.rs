//! The file store decides each append when it is queued, against the index plus the appends
//! queued before it that are not yet synced or published. These tests queue many appends
//! before the first one is durable and check that the decisions are the ones a store taking
//! them one at a time would make.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

use userstate::testkit::{event, stream};
use userstate::{EventStore, ExpectedVersion, FileStore, RecordedEvent, StoreError};

type Append<'a> = Pin<Box<dyn Future<Output = Result<Vec<RecordedEvent>, StoreError>> + Send + 'a>>;

/// Polls every append once, in order (the file store queues an append on its first poll),
/// then waits for all of them; the answers come back in the same order.
async fn queue_then_wait(
    mut appends: Vec<Append<'_>>,
) -> Vec<Result<Vec<RecordedEvent>, StoreError>> {
    let mut answers: Vec<Option<Result<Vec<RecordedEvent>, StoreError>>> =
        (0..appends.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        for (append, answer) in appends.iter_mut().zip(&mut answers) {
            if let Poll::Ready(result) = append.as_mut().poll(cx) {
                *answer = Some(result);
            }
        }
        Poll::Ready(())
    })
    .await;
    let mut out = Vec::new();
    for (append, answer) in appends.into_iter().zip(answers) {
        out.push(match answer {
            Some(result) => result,
            None => append.await,
        });
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_queued_behind_unsynced_ones_see_their_versions() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path()).unwrap();
    let (a, b) = (stream("a"), stream("b"));
    let mut appends: Vec<Append<'_>> = Vec::new();
    for i in 0..40u64 {
        // Two streams interleaved, each append expecting the version the one before it made.
        appends.push(Box::pin(store.append(
            &a,
            ExpectedVersion::Exact(i),
            vec![event("t", i)],
        )));
        appends.push(Box::pin(store.append(
            &b,
            ExpectedVersion::Exact(i * 2),
            vec![event("t", i), event("t", i)],
        )));
    }
    let answers = queue_then_wait(appends).await;
    let mut positions = Vec::new();
    for (k, answer) in answers.into_iter().enumerate() {
        let recorded = answer.unwrap_or_else(|e| panic!("append {k} failed: {e}"));
        let i = (k / 2) as u64;
        let expected_sequences: Vec<u64> = if k % 2 == 0 {
            vec![i + 1]
        } else {
            vec![2 * i + 1, 2 * i + 2]
        };
        assert_eq!(
            recorded.iter().map(|e| e.sequence).collect::<Vec<_>>(),
            expected_sequences
        );
        positions.extend(recorded.iter().map(|e| e.position));
    }
    assert_eq!(
        positions,
        (1..=120).collect::<Vec<u64>>(),
        "positions in queue order"
    );

    // A stale expectation conflicts with the version of everything queued before it.
    let stale = store
        .append(&a, ExpectedVersion::Exact(39), vec![event("t", 0)])
        .await;
    assert!(
        matches!(stale, Err(StoreError::Conflict { actual: 40, .. })),
        "{stale:?}"
    );
    assert_eq!(store.read_stream(&a, 1).await.unwrap().len(), 40);
    assert_eq!(store.read_stream(&b, 1).await.unwrap().len(), 80);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conflict_in_the_queue_fails_only_its_own_append() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path()).unwrap();
    let s = stream("s");
    let appends: Vec<Append<'_>> = vec![
        Box::pin(store.append(&s, ExpectedVersion::NoStream, vec![event("t", 1)])),
        Box::pin(store.append(&s, ExpectedVersion::NoStream, vec![event("t", 2)])),
        Box::pin(store.append(&s, ExpectedVersion::Exact(1), vec![event("t", 3)])),
        Box::pin(store.append(&s, ExpectedVersion::Exact(1), vec![event("t", 4)])),
        Box::pin(store.append(&s, ExpectedVersion::Any, vec![event("t", 5)])),
    ];
    let answers = queue_then_wait(appends).await;
    let outcome: Vec<Result<u64, u64>> = answers
        .into_iter()
        .map(|a| match a {
            Ok(recorded) => Ok(recorded[0].sequence),
            Err(StoreError::Conflict { actual, .. }) => Err(actual),
            Err(other) => panic!("unexpected error {other}"),
        })
        .collect();
    assert_eq!(outcome, [Ok(1), Err(1), Ok(2), Err(2), Ok(3)]);
    drop(store);

    // What was acknowledged is what a reopened store holds.
    let store = FileStore::open(dir.path()).unwrap();
    let read = store.read_stream(&s, 1).await.unwrap();
    assert_eq!(
        read.iter()
            .map(|e| e.payload["n"].as_u64())
            .collect::<Vec<_>>(),
        [Some(1), Some(3), Some(5)]
    );
}
