//! The whole store conformance suite through the real `kurrentdb` client against the
//! protocol-level test server (one fresh server per check).

#[allow(dead_code)]
mod support;

use support::server::TestServer;
use userstate_eventstoredb::EsdbStore;

userstate::store_conformance_tests!(|| async {
    let server = TestServer::start();
    let store = EsdbStore::connect(&server.url())
        .await
        .expect("connect to the test server");
    (store, server)
});
