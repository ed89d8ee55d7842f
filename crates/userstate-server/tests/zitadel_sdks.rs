//! ZITADEL's official SDKs pointed at a real server, unchanged (issue 21):
//! - the Python SDK (PyPI `zitadel-client`, pinned in `tests/sdk/python`), which speaks Connect
//!   with JSON bodies;
//! - the npm client (`@zitadel/client`, pinned in `tests/sdk/node`, built on ZITADEL's own
//!   generated protos) over its gRPC and gRPC-web transports and a Connect transport.
//!
//! `.ci/run` installs both (a venv; `npm ci`) and sets `USERSTATE_TEST_PYTHON` (the venv's
//! interpreter) and `USERSTATE_TEST_NODE_SDK` (the npm project, `node_modules` installed).
//! Without them a test says why it skips; under `CI=true` it fails instead.

mod common;

use std::process::Command;
use std::sync::Arc;

use common::*;
use userstate::MemoryStore;

/// Runs `program args… BASE_URL TOKEN` against a fresh server; it must print "ok".
async fn check(program: String, args: Vec<String>) {
    let s = TestServer::start(Arc::new(MemoryStore::new())).await;
    let base = format!("http://{}", s.addr);
    let out = tokio::task::spawn_blocking(move || {
        Command::new(&program)
            .args(args)
            .args([base.as_str(), ADMIN])
            .output()
            .unwrap_or_else(|e| panic!("{program} runs: {e}"))
    })
    .await
    .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert_eq!(stdout.trim(), "ok", "{stderr}");
    s.stop().await;
}

const SDK_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdk");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zitadels_python_sdk_calls_every_v2_user_method_over_connect() {
    let what = "a Python with tests/sdk/python/requirements.txt installed";
    let Some(python) = required_env("USERSTATE_TEST_PYTHON", what) else {
        return;
    };
    let script = format!("{SDK_DIR}/python/zitadel_sdk_check.py");
    check(python, vec![script]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zitadels_npm_client_calls_every_v2_user_method_over_grpc_grpc_web_and_connect() {
    let what = "tests/sdk/node with `npm ci` run in it";
    let Some(project) = required_env("USERSTATE_TEST_NODE_SDK", what) else {
        return;
    };
    check("node".to_owned(), vec![format!("{project}/sdk_check.mjs")]).await;
}
