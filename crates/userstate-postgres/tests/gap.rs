//! The position never skips: 32 writers spread over four stores (four independent writer
//! tasks and connection pools, as four processes would have) append for several seconds while a
//! follower on a fifth store reads `read_all` continuously. Afterwards the follower has seen
//! every acknowledged event exactly once, in position order, and positions are dense.
//!
//! `USERSTATE_GAP_SECONDS` sets the duration (default 5).

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use userstate::testkit::event;
use userstate::{EventStore, ExpectedVersion, StreamId};

const STORES: usize = 4;
const WRITERS: usize = 32;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn follower_sees_every_event_once_in_order_under_32_writers() {
    let Some((first, _guard)) = common::fresh("gap").await else {
        return;
    };
    let Some(url) = common::url() else { return };
    let seconds: u64 = std::env::var("USERSTATE_GAP_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let mut stores = vec![Arc::new(first)];
    for i in 1..STORES {
        // Half the stores keep two batches in flight, so both writer modes race each other.
        let b = common::builder(&url, &_guard.schema).batches_in_flight(1 + i % 2);
        stores.push(Arc::new(common::connect(b).await.expect("second store")));
    }
    let follower_store = common::connect(common::builder(&url, &_guard.schema))
        .await
        .expect("follower store");

    let done = Arc::new(AtomicBool::new(false));
    let follower = {
        let done = done.clone();
        tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut from = 1;
            loop {
                let finished = done.load(Ordering::SeqCst);
                let page = follower_store
                    .read_all(from, 100)
                    .await
                    .expect("follower read");
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

    let until = Instant::now() + Duration::from_secs(seconds);
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let store = stores[w % STORES].clone();
            tokio::spawn(async move {
                let mut ids = Vec::new();
                let mut i = 0u64;
                while Instant::now() < until {
                    let stream = StreamId::new(format!("gap:w{w}:{}", i % 8)).expect("stream");
                    let batch = (0..1 + i % 3).map(|n| event("gap.appended", n)).collect();
                    let recorded = store
                        .append(&stream, ExpectedVersion::Any, batch)
                        .await
                        .expect("append under load");
                    ids.extend(recorded.into_iter().map(|e| e.event_id));
                    i += 1;
                }
                ids
            })
        })
        .collect();
    let mut acknowledged = HashSet::new();
    for w in writers {
        acknowledged.extend(w.await.expect("writer task"));
    }
    done.store(true, Ordering::SeqCst);
    let seen = follower.await.expect("follower task");

    assert!(!acknowledged.is_empty());
    assert!(
        seen.windows(2).all(|p| p[0].0 < p[1].0),
        "the follower saw positions in increasing order"
    );
    let positions: Vec<u64> = seen.iter().map(|(p, _)| *p).collect();
    assert_eq!(
        positions,
        (1..=seen.len() as u64).collect::<Vec<_>>(),
        "positions are dense: 1, 2, 3, …"
    );
    let ids: Vec<_> = seen.iter().map(|(_, id)| *id).collect();
    let unique: HashSet<_> = ids.iter().copied().collect();
    assert_eq!(unique.len(), ids.len(), "no event seen twice");
    assert_eq!(
        unique, acknowledged,
        "every acknowledged event seen, nothing else"
    );
    eprintln!(
        "gap test: {} events from {WRITERS} writers on {STORES} stores in {seconds} s",
        ids.len()
    );
}
