//! The event feed over Connect server streaming, driven by Connect's own client
//! (`@connectrpc/connect-node`, pinned in `tests/sdk/node`) with JSON and binary messages, over
//! HTTP/1.1 and HTTP/2:
//! `tests/sdk/node/connect_stream_check.mjs` builds `userstate.events.v1.EventService` from the
//! server's file descriptor set and checks history then live events, resume, the grants, a
//! deadline, no token, and a token revoked mid-stream. This test runs the server, revokes the
//! token when the script asks, and wants the script's "ok".
//!
//! `.ci/run` runs `npm ci` there and sets `USERSTATE_TEST_NODE_SDK`; without it the test says
//! why it skips (a failure under `CI=true`).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::revocable::with_revocable;
use common::*;
use userstate::MemoryStore;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connects_own_client_streams_the_event_feed_in_json_and_binary() {
    let what = "tests/sdk/node with `npm ci` run in it";
    let Some(project) = required_env("USERSTATE_TEST_NODE_SDK", what) else {
        return;
    };
    let (chain, revocable) = with_revocable();
    let s = TestServer::start_config(Arc::new(MemoryStore::new()), |config| {
        config.authenticator = Arc::new(chain)
    })
    .await;
    assert_eq!(s.add(ADMIN, "a1", "acme").await.status, 201);
    assert_eq!(s.add(ADMIN, "g1", "globex").await.status, 201);
    let dir = tempfile::tempdir().unwrap();
    let descriptors = dir.path().join("descriptors.binpb");
    std::fs::write(&descriptors, userstate_server::grpc::FILE_DESCRIPTOR_SET).unwrap();

    let mut node = Command::new("node")
        .arg(format!("{project}/connect_stream_check.mjs"))
        .arg(format!("http://{}", s.addr))
        .arg(&descriptors)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node runs");
    let mut to_node = node.stdin.take().unwrap();
    let from_node = node.stdout.take().unwrap();
    let (lines, mut line) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for text in BufReader::new(from_node).lines() {
            if lines.send(text).is_err() {
                break;
            }
        }
    });
    let mut ok = false;
    loop {
        let Ok(next) = tokio::time::timeout(Duration::from_secs(120), line.recv()).await else {
            let _ = node.kill();
            panic!("node said nothing for 2 minutes");
        };
        let Some(text) = next else { break };
        match text.unwrap().trim() {
            "revoke" => {
                revocable.set_revoked(true);
                // Every open stream has asked again by its next event.
                tokio::time::sleep(userstate_server::feed::RECHECK + Duration::from_millis(200))
                    .await;
                writeln!(to_node, "done").unwrap();
            }
            "restore" => {
                revocable.set_revoked(false);
                writeln!(to_node, "done").unwrap();
            }
            "ok" => ok = true,
            other => {
                let _ = node.kill();
                panic!("node said {other:?}");
            }
        }
    }
    drop(to_node);
    let out = tokio::task::spawn_blocking(move || node.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && ok, "node failed: {stderr}");
    s.stop().await;
}
