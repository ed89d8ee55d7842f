//! `/readyz` follows the read model's lag behind the store head (issue 12): a node whose
//! projection cannot follow the store while other nodes' writes land reports 503 code 14 with
//! the lag in the message, `/metrics` shows the lag in events and seconds, and the node is ready
//! again once the projection caught up.
//!
//! The node's own commands reach its read model as their appends return (the projection is
//! fed), so the lag is made by "another node": an [`Engine`] writing to the same store.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use userstate::testkit::SpyStore;
use userstate::{
    AddUser, Context, Engine, InstanceId, MemoryStore, OrgId, Principal, UserCommand, UserId,
};
use userstate_server::auth::hash_token;
use userstate_server::http::LagLimit;
use userstate_server::{Server, ServerConfig, StaticTokens};

async fn status_and_body(http: &reqwest::Client, url: String) -> (u16, String) {
    let response = http.get(url).send().await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

/// Adds a user; returns the position of its last event.
async fn add(http: &reqwest::Client, base: &str, name: &str) -> u64 {
    let body = json!({ "username": name, "organization": { "orgId": "acme" } });
    let response = http
        .post(format!("{base}/v2/users/human"))
        .bearer_auth("tok")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 201);
    let position = response.headers().get("x-userstate-position").unwrap();
    position.to_str().unwrap().parse().unwrap()
}

/// Adds a user through another node's engine on the same store; returns the position of its
/// last event.
async fn add_elsewhere(engine: &Engine, name: &str) -> u64 {
    let principal = Principal::system("other-node", InstanceId::new("default").unwrap());
    let command = UserCommand::Add(AddUser {
        user_id: UserId::generate(),
        username: name.to_owned(),
        organization: OrgId::new("acme").unwrap(),
        profile: None,
        email: None,
        initial: false,
    });
    let details = engine.execute(&Context::new(principal), command).await;
    details.unwrap().position
}

async fn lag_events(http: &reqwest::Client, base: &str) -> Option<u64> {
    let (_, metrics) = status_and_body(http, format!("{base}/metrics")).await;
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("userstate_projection_lag_events "))
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_reports_not_ready_beyond_the_lag_limit() {
    // Frozen, the projection's follower sees nothing new, as on a node cut off from the
    // store's feed; commands and the head are unaffected.
    let store = Arc::new(SpyStore::new(Arc::new(MemoryStore::new())));
    let principal = Principal::system("op", InstanceId::new("default").unwrap());
    let auth = StaticTokens::new([(hash_token("tok"), principal)]).unwrap();
    let mut config = ServerConfig::new("127.0.0.1:0".parse().unwrap(), store.clone(), auth);
    config.lag_limit = LagLimit {
        max_events: Some(3),
        max_age: None,
    };
    let server = Server::bind(config).await.unwrap();
    let other_node = Engine::new(store.clone());
    let base = format!("http://{}", server.local_addr());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));
    let http = reqwest::Client::new();
    assert_eq!(
        status_and_body(&http, format!("{base}/readyz")).await.0,
        200
    );

    // Caught up at `start`; then the projection stalls while another node's writes land.
    let start = add(&http, &base, "first").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while lag_events(&http, &base).await != Some(0) {
        assert!(Instant::now() < deadline, "projection never caught up");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    store.freeze(true);

    // At most 3 events behind: ready. Beyond: 503, code 14, the lag in the message and metrics.
    let mut behind;
    let mut i = 0;
    loop {
        behind = add_elsewhere(&other_node, &format!("a{i}")).await - start;
        i += 1;
        let (status, body) = status_and_body(&http, format!("{base}/readyz")).await;
        if behind <= 3 {
            assert_eq!(status, 200, "{behind} behind: {body}");
            continue;
        }
        assert_eq!(status, 503, "{body}");
        let body: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["code"], 14);
        let message = body["message"].as_str().unwrap();
        assert!(
            message.contains(&format!("{behind} events behind")),
            "{message}"
        );
        break;
    }
    assert_eq!(lag_events(&http, &base).await, Some(behind));
    let (_, metrics) = status_and_body(&http, format!("{base}/metrics")).await;
    let seconds = metrics
        .lines()
        .find_map(|l| l.strip_prefix("userstate_projection_lag_seconds "))
        .and_then(|v| v.parse::<f64>().ok())
        .expect("lag seconds metric");
    assert!(seconds >= 0.0);

    // Unfrozen, the next write wakes the projection; it catches up and the node is ready.
    store.freeze(false);
    add_elsewhere(&other_node, "last").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while status_and_body(&http, format!("{base}/readyz")).await.0 != 200 {
        assert!(Instant::now() < deadline, "not ready after catching up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(lag_events(&http, &base).await, Some(0));
    let (_, metrics) = status_and_body(&http, format!("{base}/metrics")).await;
    assert!(
        metrics.contains("userstate_projection_lag_seconds 0"),
        "{metrics}"
    );
    let _ = stop.send(());
    running.await.unwrap().unwrap();
}
