//! Throughput of the KurrentDB backend through the real `kurrentdb` client against the
//! in-process protocol-level test server. It measures the client + backend overhead (gRPC,
//! encoding, the read-back after each append), not KurrentDB's storage.
//!
//! `cargo bench -p userstate-eventstoredb --bench throughput`

#[allow(dead_code)]
#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::Instant;

use support::server::TestServer;
use userstate::testkit::{event, stream};
use userstate::{EventStore, ExpectedVersion};
use userstate_eventstoredb::EsdbStore;

const SEQUENTIAL: u64 = 2_000;
const WRITERS: u64 = 16;
const PER_WRITER: u64 = 250;

fn main() {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("no runtime: {e}");
            return;
        }
    };
    runtime.block_on(run());
}

async fn run() {
    let server = TestServer::start();
    let store = Arc::new(
        EsdbStore::connect(&server.url())
            .await
            .expect("connect to the test server"),
    );

    let started = Instant::now();
    for i in 0..SEQUENTIAL {
        store
            .append(
                &stream("seq"),
                ExpectedVersion::Exact(i),
                vec![event("bench.e", i)],
            )
            .await
            .expect("append");
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "sequential appends (1 event, Exact): {SEQUENTIAL} in {secs:.2} s = {:.0}/s, {:.2} ms each",
        SEQUENTIAL as f64 / secs,
        secs * 1000.0 / SEQUENTIAL as f64
    );

    let started = Instant::now();
    let tasks: Vec<_> = (0..WRITERS)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                for i in 0..PER_WRITER {
                    store
                        .append(
                            &stream(&format!("w{w}")),
                            ExpectedVersion::Any,
                            vec![event("bench.e", i)],
                        )
                        .await
                        .expect("append");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("writer");
    }
    let secs = started.elapsed().as_secs_f64();
    let total = WRITERS * PER_WRITER;
    println!(
        "concurrent appends ({WRITERS} writers, 1 event each): {total} in {secs:.2} s = {:.0}/s",
        total as f64 / secs
    );

    let started = Instant::now();
    let mut from = 1;
    let mut read = 0usize;
    loop {
        let page = store.read_all(from, 500).await.expect("read_all");
        let Some(last) = page.last() else { break };
        from = last.position + 1;
        read += page.len();
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "read_all paging (500 per page): {read} events in {secs:.2} s = {:.0}/s",
        read as f64 / secs
    );
}
