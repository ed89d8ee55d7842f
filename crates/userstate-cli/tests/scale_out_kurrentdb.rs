//! The scale-out scenario on KurrentDB (issue 12): three `userstate serve` processes on the
//! protocol-level KurrentDB test server of `userstate-eventstoredb` (feature `test-server`):
//! round-robin commands, racing unlocks with exactly one success, and read-your-writes across
//! nodes under load with the consistency token.

mod cluster;

use std::time::Duration;

use cluster::{scenario, write_tokens, Client, Node};
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
    for base in &bases {
        client.wait_ready(base, Duration::from_secs(20)).await;
    }
    drop(nodes);
    drop(server);
}
