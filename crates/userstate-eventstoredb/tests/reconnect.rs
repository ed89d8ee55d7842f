//! The server going away: the test server stops mid-load and starts again on the same port
//! with the same data. Meanwhile calls fail with `Unavailable`; afterwards they succeed again
//! without a new store, and no acknowledged event is lost. Also the case the `kurrentdb`
//! client never recovers from by itself: no server at all on the first call.

#[allow(dead_code)]
mod support;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::log::Log;
use support::server::TestServer;
use userstate::testkit::{event, stream};
use userstate::{EventStore, ExpectedVersion, StoreError};
use userstate_eventstoredb::{EsdbConfig, EsdbStore};

/// Generous bound for a condition that must become true; not a timing assertion.
const PATIENCE: Duration = Duration::from_secs(60);

async fn store_for(url: &str) -> EsdbStore {
    let config = EsdbConfig::from_url(url)
        .expect("url")
        .with_reconnect_backoff(Duration::from_millis(50), Duration::from_millis(500));
    EsdbStore::connect_with(config).await.expect("connect")
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never happened: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[derive(Default)]
struct Load {
    stop: AtomicBool,
    acked: Mutex<Vec<uuid::Uuid>>,
    acks: AtomicUsize,
    unavailable: AtomicUsize,
    other_errors: Mutex<Vec<String>>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn survives_a_server_restart_mid_load() {
    let server = TestServer::start();
    let store = Arc::new(store_for(&server.url()).await);
    let load = Arc::new(Load::default());
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (store, load) = (store.clone(), load.clone());
            tokio::spawn(async move {
                let mut n = 0;
                while !load.stop.load(Ordering::SeqCst) {
                    n += 1;
                    let e = event("test.load", n);
                    match store
                        .append(&stream(&format!("load-{w}")), ExpectedVersion::Any, vec![e])
                        .await
                    {
                        Ok(recorded) => {
                            load.acked
                                .lock()
                                .unwrap()
                                .extend(recorded.iter().map(|r| r.event_id));
                            load.acks.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(StoreError::Unavailable { .. }) => {
                            load.unavailable.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                        Err(other) => load.other_errors.lock().unwrap().push(other.to_string()),
                    }
                }
            })
        })
        .collect();

    eventually("acks before the stop", || {
        load.acks.load(Ordering::SeqCst) >= 40
    })
    .await;
    let (addr, log): (_, Log) = server.stop();
    let down_from = load.unavailable.load(Ordering::SeqCst);
    eventually("Unavailable while down", || {
        load.unavailable.load(Ordering::SeqCst) >= down_from + 20
    })
    .await;
    match store.read_all(1, 10).await {
        Err(StoreError::Unavailable { .. }) => {}
        other => panic!("read_all while down must be Unavailable, got {other:?}"),
    }
    let server = TestServer::start_on(addr, log);
    let acks_at_restart = load.acks.load(Ordering::SeqCst);
    eventually("acks after the restart", || {
        load.acks.load(Ordering::SeqCst) >= acks_at_restart + 40
    })
    .await;
    load.stop.store(true, Ordering::SeqCst);
    for w in writers {
        w.await.expect("writer");
    }

    let errors = load.other_errors.lock().unwrap().clone();
    assert!(
        errors.is_empty(),
        "only Unavailable while down, got {errors:?}"
    );
    let acked: HashSet<uuid::Uuid> = load.acked.lock().unwrap().iter().copied().collect();
    let stored: HashSet<uuid::Uuid> = store
        .read_all(1, usize::MAX)
        .await
        .expect("read_all after restart")
        .into_iter()
        .map(|e| e.event_id)
        .collect();
    let lost: Vec<_> = acked.difference(&stored).collect();
    assert!(lost.is_empty(), "acknowledged events lost: {lost:?}");

    // The head follower resubscribed too.
    let head = store.watch_head();
    let r = store
        .append(
            &stream("after"),
            ExpectedVersion::NoStream,
            vec![event("test.after", 1)],
        )
        .await
        .expect("append after restart");
    let target = r[0].position;
    tokio::time::timeout(PATIENCE, head.wait_for(target))
        .await
        .expect("head watch follows after the restart");
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn recovers_when_there_was_no_server_at_first() {
    // A port with nothing listening (bound, then released).
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port");
    let store = store_for(&format!("esdb://{addr}?tls=false")).await;
    for _ in 0..3 {
        match store.read_stream(&stream("x"), 1).await {
            Err(StoreError::Unavailable { .. }) => {}
            other => panic!("no server must be Unavailable, got {other:?}"),
        }
        match store
            .append(&stream("x"), ExpectedVersion::Any, vec![event("test.x", 1)])
            .await
        {
            Err(StoreError::Unavailable { .. }) => {}
            other => panic!("no server must be Unavailable, got {other:?}"),
        }
    }
    let server = TestServer::start_on(addr, Log::new());
    let mut result = Err(StoreError::InvalidArgument("not tried".into()));
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while tokio::time::Instant::now() < deadline {
        result = store
            .append(
                &stream("x"),
                ExpectedVersion::NoStream,
                vec![event("test.x", 1)],
            )
            .await;
        match &result {
            Ok(_) => break,
            Err(StoreError::Unavailable { .. }) => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    let recorded = result.expect("append succeeds once the server is up");
    assert_eq!(recorded[0].sequence, 1);
    assert_eq!(store.read_stream(&stream("x"), 1).await.unwrap(), recorded);
    drop(server);
}
