//! The conformance suite against a real KurrentDB / EventStoreDB when `EVENTSTOREDB_URL` is
//! set (e.g. `esdb://127.0.0.1:2113?tls=false`, see docs/EVENTSTOREDB.md). Each check uses a
//! fresh namespace, so the server needs no cleaning. Unset: every check prints why it is
//! skipped.

use std::io::Write;

use userstate_eventstoredb::{EsdbConfig, EsdbStore};

userstate::store_conformance_tests!(optional: || async {
    let Ok(url) = std::env::var("EVENTSTOREDB_URL") else {
        // Straight to stderr, past the test harness's capture: never skipped silently.
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED: EVENTSTOREDB_URL is not set; no real KurrentDB/EventStoreDB server to run \
             the conformance suite against (the test server suite in tests/conformance.rs ran)"
        );
        return None;
    };
    let namespace = format!("ustest{}", uuid::Uuid::new_v4().simple());
    let config = EsdbConfig::from_url(&url)
        .and_then(|c| c.with_namespace(namespace))
        .expect("EVENTSTOREDB_URL is a valid connection string");
    let store = EsdbStore::connect_with(config)
        .await
        .expect("connect to EVENTSTOREDB_URL");
    Some((store, ()))
});
