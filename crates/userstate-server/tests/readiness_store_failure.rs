//! `/readyz` follows the store's ability to write (issue 20, item 7): after the file store's
//! write fails (the disk is full) the node answers 503 until the store has repaired its segment
//! once space is back, and then takes commands again without a restart.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use userstate::testkit::{Fault, FaultInjector};
use userstate::{EventStore, FileStore, InstanceId, Principal};
use userstate_server::auth::hash_token;
use userstate_server::{Server, ServerConfig, StaticTokens};

async fn readyz(http: &reqwest::Client, base: &str) -> u16 {
    let response = http.get(format!("{base}/readyz")).send().await.unwrap();
    response.status().as_u16()
}

async fn add(http: &reqwest::Client, base: &str, name: &str) -> u16 {
    let body = json!({ "username": name, "organization": { "orgId": "acme" } });
    let response = http
        .post(format!("{base}/v2/users/human"))
        .bearer_auth("tok")
        .json(&body)
        .send()
        .await
        .unwrap();
    response.status().as_u16()
}

async fn wait_for_readyz(http: &reqwest::Client, base: &str, status: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while readyz(http, base).await != status {
        assert!(Instant::now() < deadline, "/readyz never answered {status}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_not_ready_while_the_file_store_cannot_write_and_ready_once_repaired() {
    let dir = tempfile::tempdir().unwrap();
    let faults = FaultInjector::new(1);
    let store = Arc::new(
        FileStore::options()
            .fault_injector(&faults)
            .open(dir.path())
            .unwrap(),
    );
    let principal = Principal::system("op", InstanceId::new("default").unwrap());
    let auth = StaticTokens::new([(hash_token("tok"), principal)]).unwrap();
    let config = ServerConfig::new("127.0.0.1:0".parse().unwrap(), store.clone(), auth);
    let server = Server::bind(config).await.unwrap();
    let base = format!("http://{}", server.local_addr());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));
    let http = reqwest::Client::new();
    assert_eq!(add(&http, &base, "before").await, 201);
    assert_eq!(readyz(&http, &base).await, 200);

    // The disk fills up: every write fails until space is back.
    faults.inject(Fault::NoSpace, 0, u64::MAX / 2);
    assert_ne!(add(&http, &base, "during").await, 201);
    assert_eq!(readyz(&http, &base).await, 503, "a store that cannot write");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        readyz(&http, &base).await,
        503,
        "still full: still not ready"
    );

    // Space is back: the store repairs its segment by itself and the node is ready again.
    faults.clear();
    wait_for_readyz(&http, &base, 200).await;
    assert_eq!(add(&http, &base, "after").await, 201);

    // Nothing of the failed add was kept; both acknowledged ones were.
    let users: Vec<String> = store
        .read_all(1, usize::MAX)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.event_type == "user.human.added")
        .map(|e| {
            e.payload["username"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    assert_eq!(users, ["before", "after"]);
    let _ = stop.send(());
    running.await.unwrap().unwrap();
}
