//! A process that installed its own rustls crypto provider before the first KurrentDB call
//! (like our HTTP/gRPC servers do) still talks to the server. The `eventstore` 4.0.0 client
//! panics here (see docs/adr/0003-kurrentdb-client.md). Its own test binary: the provider is
//! process-wide.

#[allow(dead_code)]
mod support;

use support::server::TestServer;
use userstate::testkit::{event, stream};
use userstate::{EventStore, ExpectedVersion};
use userstate_eventstoredb::EsdbStore;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn works_after_the_process_installed_a_crypto_provider() {
    // A provider of our own (TLS 1.3 suites only), so we can tell it is still the one in use.
    let mut ours = rustls::crypto::aws_lc_rs::default_provider();
    ours.cipher_suites
        .retain(|s| matches!(s, rustls::SupportedCipherSuite::Tls13(_)));
    let suites = ours.cipher_suites.len();
    assert!(
        ours.install_default().is_ok(),
        "first provider in this process"
    );

    let server = TestServer::start();
    let store = EsdbStore::connect(&server.url()).await.unwrap();
    let r = store
        .append(
            &stream("tls"),
            ExpectedVersion::NoStream,
            vec![event("t", 1)],
        )
        .await
        .expect("append works with a pre-installed provider");
    assert_eq!(store.read_stream(&stream("tls"), 1).await.unwrap(), r);
    // Build a second client too (a reconnect builds new clients): still fine.
    let again = EsdbStore::connect(&server.url()).await.unwrap();
    assert_eq!(again.read_all(1, 10).await.unwrap(), r);
    let current = rustls::crypto::CryptoProvider::get_default().expect("still installed");
    assert_eq!(
        current.cipher_suites.len(),
        suites,
        "our provider stayed in place"
    );
}
