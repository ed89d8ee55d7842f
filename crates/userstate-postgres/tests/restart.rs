//! Sessions killed mid-load with `pg_terminate_backend` (only this test's sessions, found by
//! their `application_name`; the cluster keeps running for everyone else): no acknowledged
//! event is lost, failed appends answer `Unavailable`, and the store recovers by itself.

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use userstate::testkit::event;
use userstate::{EventStore, ExpectedVersion, StoreError, StreamId};

const WRITERS: usize = 16;

/// Terminates every session named `app`; returns how many.
async fn terminate(url: &str, app: &str) -> u64 {
    let Ok((client, connection)) = tokio_postgres::connect(url, tokio_postgres::NoTls).await else {
        return 0;
    };
    tokio::spawn(connection);
    let sql = "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity \
               WHERE application_name = $1 AND pid <> pg_backend_pid()";
    match client.query_one(sql, &[&app]).await {
        Ok(row) => row.get::<_, i64>(0).try_into().unwrap_or(0),
        Err(_) => 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_sessions_lose_no_acknowledged_event_and_recover() {
    let Some(url) = common::url() else { return };
    let schema = common::unique_schema("restart");
    let app = schema.clone();
    let guard = common::SchemaGuard {
        url: url.clone(),
        schema: schema.clone(),
    };
    let Some(store) = common::connect(
        common::builder(&url, &schema)
            .application_name(&app)
            .operation_timeout(Duration::from_secs(3)),
    )
    .await
    else {
        return;
    };
    let store = Arc::new(store);

    let stop = Arc::new(AtomicBool::new(false));
    let killed = Arc::new(AtomicU64::new(0));
    let killer = {
        let (url, app, stop, killed) = (url.clone(), app.clone(), stop.clone(), killed.clone());
        tokio::spawn(async move {
            // Let the load start, then kill every session of the store five times.
            for _ in 0..5 {
                tokio::time::sleep(Duration::from_millis(400)).await;
                killed.fetch_add(terminate(&url, &app).await, Ordering::SeqCst);
            }
            tokio::time::sleep(Duration::from_millis(400)).await;
            stop.store(true, Ordering::SeqCst);
        })
    };
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (store, stop) = (store.clone(), stop.clone());
            tokio::spawn(async move {
                let (mut acked, mut unavailable) = (Vec::new(), 0u64);
                let mut i = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    let stream = StreamId::new(format!("restart:w{w}:{}", i % 4)).expect("stream");
                    let batch = vec![event("restart.appended", i), event("restart.appended", i)];
                    match store.append(&stream, ExpectedVersion::Any, batch).await {
                        Ok(recorded) => acked.extend(recorded.into_iter().map(|e| e.event_id)),
                        Err(StoreError::Unavailable { .. }) => unavailable += 1,
                        Err(other) => panic!("appends may only fail as Unavailable, got {other:?}"),
                    }
                    i += 1;
                }
                (acked, unavailable)
            })
        })
        .collect();
    killer.await.expect("killer task");
    let (mut acknowledged, mut unavailable) = (Vec::new(), 0);
    for w in writers {
        let (acked, failed) = w.await.expect("writer task");
        acknowledged.extend(acked);
        unavailable += failed;
    }
    assert!(
        killed.load(Ordering::SeqCst) > 0,
        "the test killed sessions"
    );

    // Recovery without restarting the store: appends and reads work again.
    let deadline = Instant::now() + Duration::from_secs(15);
    let last = loop {
        match store
            .append(
                &StreamId::new("restart:after").expect("stream"),
                ExpectedVersion::Any,
                vec![event("restart.after", 0)],
            )
            .await
        {
            Ok(r) => break r,
            Err(e) if Instant::now() < deadline => {
                eprintln!("not recovered yet: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("the store did not recover: {e}"),
        }
    };
    let mut everything = Vec::new();
    let mut from = 1;
    loop {
        let page = store
            .read_all(from, 1000)
            .await
            .expect("read after recovery");
        let Some(tail) = page.last() else { break };
        from = tail.position + 1;
        everything.extend(page);
    }
    let stored: HashSet<_> = everything.iter().map(|e| e.event_id).collect();
    assert_eq!(stored.len(), everything.len(), "no event stored twice");
    let missing = acknowledged
        .iter()
        .filter(|id| !stored.contains(id))
        .count();
    assert_eq!(missing, 0, "acknowledged events lost");
    assert!(stored.contains(&last[0].event_id));
    let positions: Vec<u64> = everything.iter().map(|e| e.position).collect();
    assert_eq!(positions, (1..=everything.len() as u64).collect::<Vec<_>>());
    let stats = store.writer_stats();
    eprintln!(
        "restart test: {} sessions killed, {} events acknowledged, {unavailable} appends answered \
         Unavailable, {} batch retries, {} interrupted commits found committed",
        killed.load(Ordering::SeqCst),
        acknowledged.len(),
        stats.retries,
        stats.recovered_commits
    );
    drop(store);
    drop(guard);
}
