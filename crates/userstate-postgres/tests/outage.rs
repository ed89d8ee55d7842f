//! The server goes away and comes back: a TCP proxy between the store and PostgreSQL is cut
//! (every connection dropped, new ones refused) and restored — a server outage for this store
//! only, while the real cluster keeps serving everyone else. During the outage operations answer
//! `Unavailable` within the operation timeout; afterwards the same store works again.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use userstate::testkit::event;
use userstate::{EventStore, ExpectedVersion, StoreError, StreamId};

/// Forwards 127.0.0.1:<port> to `target` while `up` is true.
async fn proxy(target: String) -> (u16, watch::Sender<bool>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
    let port = listener.local_addr().expect("proxy address").port();
    let (up, _) = watch::channel(true);
    let switch = up.clone();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            if !*switch.borrow() {
                continue; // refused: dropped at once
            }
            let mut down = switch.subscribe();
            let target = target.clone();
            tokio::spawn(async move {
                let Ok(mut outbound) = TcpStream::connect(&target).await else {
                    return;
                };
                tokio::select! {
                    _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                    _ = down.wait_for(|up| !*up) => {}
                }
            });
        }
    });
    (port, up)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn outage_answers_unavailable_then_recovers() {
    let Some(url) = common::url() else { return };
    let config: tokio_postgres::Config = url.parse().expect("test URL");
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        _ => "127.0.0.1".to_string(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let (proxy_port, up) = proxy(format!("{host}:{port}")).await;
    let mut via_proxy = format!(
        "host=127.0.0.1 port={proxy_port} user={} dbname={}",
        config.get_user().unwrap_or("postgres"),
        config.get_dbname().unwrap_or("postgres")
    );
    if let Some(password) = config.get_password() {
        via_proxy.push_str(&format!(" password={}", String::from_utf8_lossy(password)));
    }
    let schema = common::unique_schema("outage");
    let _guard = common::SchemaGuard {
        url: url.clone(),
        schema: schema.clone(),
    };
    let Some(store) = common::connect(
        common::builder(&via_proxy, &schema)
            .connect_timeout(Duration::from_secs(1))
            .operation_timeout(Duration::from_secs(2)),
    )
    .await
    else {
        return;
    };
    let store = Arc::new(store);
    let s = StreamId::new("outage:i:u").expect("stream");
    let before = store
        .append(
            &s,
            ExpectedVersion::NoStream,
            vec![event("outage.before", 1)],
        )
        .await
        .expect("append while up");

    up.send_replace(false);
    let started = Instant::now();
    match store
        .append(
            &s,
            ExpectedVersion::Exact(1),
            vec![event("outage.during", 2)],
        )
        .await
    {
        Err(StoreError::Unavailable { .. }) => {}
        other => panic!("an append during the outage must be Unavailable, got {other:?}"),
    }
    match store.read_all(1, 10).await {
        Err(StoreError::Unavailable { .. }) => {}
        other => panic!("a read during the outage must be Unavailable, got {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "answers are bounded by the timeouts, not hanging"
    );

    up.send_replace(true);
    let mut head = store.watch_head();
    let deadline = Instant::now() + Duration::from_secs(20);
    let after = loop {
        match store
            .append(
                &s,
                ExpectedVersion::Exact(1),
                vec![event("outage.after", 3)],
            )
            .await
        {
            Ok(r) => break r,
            Err(StoreError::Unavailable { .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("the store did not recover after the outage: {e:?}"),
        }
    };
    assert_eq!(after[0].sequence, 2, "nothing from the outage was written");
    let all = store.read_all(1, 10).await.expect("read after the outage");
    assert_eq!(all, vec![before[0].clone(), after[0].clone()]);
    head.wait_for(|h| *h >= after[0].position)
        .await
        .expect("head follows");
}
