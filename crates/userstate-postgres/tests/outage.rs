//! The server goes away and comes back: a TCP proxy between the store and PostgreSQL is cut
//! (every connection dropped, new ones refused) and restored — a server outage for this store
//! only, while the real cluster keeps serving everyone else. During the outage operations answer
//! `Unavailable` within the operation timeout; afterwards the same store works again.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use userstate::testkit::event;
use userstate::{EventStore, ExpectedVersion, StoreError, StreamId};
use userstate_postgres::PostgresStore;

/// A TCP proxy to the test server that the test can break.
struct Proxy {
    port: u16,
    /// While false, new connections are refused (accepted and dropped at once).
    up: watch::Sender<bool>,
    /// Bumping it cuts every connection opened before.
    epoch: watch::Sender<u64>,
    /// While true, the server's answers are read and thrown away (the server still acts).
    swallow: watch::Sender<bool>,
}

impl Proxy {
    async fn start(target: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let (up, _) = watch::channel(true);
        let (epoch, _) = watch::channel(0u64);
        let (swallow, _) = watch::channel(false);
        let (up_rx, epoch_tx, swallow_tx) = (up.subscribe(), epoch.clone(), swallow.clone());
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                if !*up_rx.borrow() {
                    continue; // refused: dropped at once
                }
                let mut cut = epoch_tx.subscribe();
                let swallow = swallow_tx.subscribe();
                let target = target.clone();
                tokio::spawn(async move {
                    let Ok(outbound) = TcpStream::connect(&target).await else {
                        return;
                    };
                    let (mut client_read, mut client_write) = inbound.into_split();
                    let (mut server_read, mut server_write) = outbound.into_split();
                    let upstream = tokio::io::copy(&mut client_read, &mut server_write);
                    let downstream = async {
                        let mut buf = vec![0u8; 16 * 1024];
                        loop {
                            let n = match server_read.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => n,
                            };
                            if !*swallow.borrow()
                                && client_write.write_all(&buf[..n]).await.is_err()
                            {
                                return;
                            }
                        }
                    };
                    tokio::select! {
                        _ = upstream => {}
                        _ = downstream => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        Self {
            port,
            up,
            epoch,
            swallow,
        }
    }

    /// Cuts every open connection.
    fn cut(&self) {
        self.epoch.send_modify(|e| *e += 1);
    }
}

/// A store on a fresh schema, reached through a new proxy.
async fn store_behind_proxy(
    label: &str,
) -> Option<(Arc<PostgresStore>, Proxy, common::SchemaGuard)> {
    let url = common::url()?;
    let config: tokio_postgres::Config = url.parse().expect("test URL");
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        _ => "127.0.0.1".to_string(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let proxy = Proxy::start(format!("{host}:{port}")).await;
    let mut via_proxy = format!(
        "host=127.0.0.1 port={} user={} dbname={}",
        proxy.port,
        config.get_user().unwrap_or("postgres"),
        config.get_dbname().unwrap_or("postgres")
    );
    if let Some(password) = config.get_password() {
        via_proxy.push_str(&format!(" password={}", String::from_utf8_lossy(password)));
    }
    let schema = common::unique_schema(label);
    let guard = common::SchemaGuard {
        url: url.clone(),
        schema: schema.clone(),
    };
    let store = common::connect(
        common::builder(&via_proxy, &schema)
            .connect_timeout(Duration::from_secs(1))
            .operation_timeout(Duration::from_secs(2)),
    )
    .await?;
    Some((Arc::new(store), proxy, guard))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn outage_answers_unavailable_then_recovers() {
    let Some((store, proxy, _guard)) = store_behind_proxy("outage").await else {
        return;
    };
    let s = StreamId::new("outage:i:u").expect("stream");
    let before = store
        .append(
            &s,
            ExpectedVersion::NoStream,
            vec![event("outage.before", 1)],
        )
        .await
        .expect("append while up");

    proxy.up.send_replace(false);
    proxy.cut();
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

    proxy.up.send_replace(true);
    let head = store.watch_head();
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
    tokio::time::timeout(Duration::from_secs(20), head.wait_for(after[0].position))
        .await
        .expect("head follows");
}

/// The connection dies after the server committed but before the answer arrived: the writer
/// finds the batch's events by id and answers success — no lost acknowledgement, no duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_commit_whose_answer_was_lost_is_recognised() {
    let Some((store, proxy, _guard)) = store_behind_proxy("lostack").await else {
        return;
    };
    let s = StreamId::new("lostack:i:u").expect("stream");
    store
        .append(
            &s,
            ExpectedVersion::NoStream,
            vec![event("lostack.warm", 1)],
        )
        .await
        .expect("warm-up append");

    proxy.swallow.send_replace(true);
    let append = {
        let (store, s) = (store.clone(), s.clone());
        tokio::spawn(async move {
            store
                .append(
                    &s,
                    ExpectedVersion::Exact(1),
                    vec![event("lostack.committed", 2)],
                )
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    proxy.swallow.send_replace(false);
    proxy.cut();
    let recorded = append
        .await
        .expect("append task")
        .expect("the committed append is acknowledged after the lost answer");
    assert_eq!(recorded[0].sequence, 2);
    let stream = store.read_stream(&s, 1).await.expect("read");
    assert_eq!(stream.len(), 2, "written exactly once");
    assert_eq!(stream[1], recorded[0]);
    assert_eq!(store.writer_stats().recovered_commits, 1);
}
