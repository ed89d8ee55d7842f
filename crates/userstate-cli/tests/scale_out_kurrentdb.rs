//! The scale-out scenario on KurrentDB (issue 12): three `userstate serve` processes on the
//! protocol-level KurrentDB test server of `userstate-eventstoredb` (feature `test-server`):
//! round-robin commands, racing unlocks with exactly one success, and read-your-writes across
//! nodes under load with the consistency token.

mod cluster;

use std::time::Duration;

use cluster::{scenario, write_tokens, Client, Node};
use reqwest::Method;
use serde_json::json;
use userstate_eventstoredb::test_server::server::TestServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_on_one_kurrentdb_agree_and_read_their_writes() {
    let server = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    let tokens = write_tokens(dir.path());
    let nodes: Vec<Node> = (0..3)
        .map(|i| {
            Node::start(
                &server.url(),
                &tokens,
                &dir.path().join(format!("node{i}")),
                &[],
            )
        })
        .collect();
    let bases: Vec<String> = nodes.iter().map(|n| n.base.clone()).collect();
    let client = Client::new();
    for base in &bases {
        client.wait_ready(base, Duration::from_secs(20)).await;
    }
    scenario::round_robin(&client, &bases, 15).await;
    scenario::racing_unlocks(&client, &bases, 1).await;
    scenario::read_your_writes_under_load(&client, &bases, 20).await;
    erasure_across_nodes(&client, &bases, &server).await;
    for base in &bases {
        client.wait_ready(base, Duration::from_secs(20)).await;
    }
    drop(nodes);
    drop(server);
}

/// The erased user's personal strings.
const PERSONAL: [&str; 4] = [
    "Zelda.Quixote-7F3",
    "Gwendolyn-Q7x",
    "Fitzwilliam-K2p",
    "gwen.q7x@example.org",
];

fn has_personal(text: &str) -> Option<&'static str> {
    let text = text.to_lowercase();
    PERSONAL
        .into_iter()
        .find(|p| text.contains(&p.to_lowercase()))
}

/// Added on node 0 (sealed in the server, in clear on node 1), removed on node 1, erased on
/// node 2: its history on nodes 0 and 1 keeps the lifecycle with the personal data erased.
async fn erasure_across_nodes(client: &Client, bases: &[String], server: &TestServer) {
    let body = json!({
        "userId": "zq", "username": PERSONAL[0], "organization": {"orgId": "acme"},
        "profile": {"givenName": PERSONAL[1], "familyName": PERSONAL[2]},
        "email": {"email": PERSONAL[3]},
    });
    let added = client
        .json(&bases[0], Method::POST, "/v2/users/human", &body)
        .await
        .unwrap();
    assert_eq!(added.status, 201, "{}", added.body);
    let raw = String::from_utf8_lossy(&server.log().raw_bytes()).into_owned();
    assert_eq!(
        has_personal(&raw),
        None,
        "personal data in clear in KurrentDB"
    );
    let read = client.get(&bases[1], "zq", added.position).await.unwrap();
    assert_eq!(read.status, 200, "{}", read.body);
    assert_eq!(
        read.body["user"]["username"], PERSONAL[0],
        "opened on another node"
    );
    let removed = client
        .json(&bases[1], Method::DELETE, "/v2/users/zq", &json!({}))
        .await
        .unwrap();
    assert_eq!(removed.status, 200, "{}", removed.body);
    let erased = client
        .json(&bases[2], Method::POST, "/v2/users/zq/erase", &json!({}))
        .await
        .unwrap();
    assert_eq!(erased.status, 200, "erase on KurrentDB: {}", erased.body);
    for base in &bases[..2] {
        let history = client.get_path(base, "/v2/users/zq/history").await.unwrap();
        assert_eq!(history.status, 200, "{}", history.body);
        let events = history.body["events"].as_array().unwrap();
        assert_eq!(events.len(), 3, "added, removed, erased: {}", history.body);
        assert_eq!(events[0]["payload"]["erased"], true, "{}", history.body);
        assert_eq!(has_personal(&history.body.to_string()), None);
    }
}
