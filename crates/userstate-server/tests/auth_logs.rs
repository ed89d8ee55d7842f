//! Refused requests in the logs and metrics: a failed authentication is counted in
//! `userstate_auth_failures_total` by reason; the 401 and 403 log lines carry the request id,
//! the client address and the subject when known, and no line carries the token.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::*;
use userstate::MemoryStore;

/// Every log line written, kept in memory.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<u8>>>);

impl Write for Lines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Lines {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

fn failures(metrics: &str, reason: &str) -> u64 {
    let prefix = format!("userstate_auth_failures_total{{reason=\"{reason}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .map_or(0, |v| v.trim().parse().unwrap())
}

#[tokio::test]
async fn failed_authentications_are_counted_and_logged_without_the_secret() {
    let lines = Lines::default();
    let writer = lines.clone();
    tracing_subscriber::fmt()
        .with_env_filter("info")
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();
    let s = TestServer::start(Arc::new(MemoryStore::new())).await;
    s.add(ADMIN, "u1", "acme").await;
    let secret = "us_0123456789abcdef-not-a-known-token";
    let before = s.get("/metrics", ADMIN).await.text;
    let unknown = s
        .client
        .get(s.url("/v2/users/u1"))
        .bearer_auth(secret)
        .header("x-request-id", "req-unknown-1")
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 401);
    let missing = s.client.get(s.url("/v2/users/u1")).send().await.unwrap();
    assert_eq!(missing.status(), 401);
    // A Connect call with a bad token: counted once, though the gRPC service is behind it.
    let connect = s
        .client
        .post(s.url("/zitadel.user.v2.UserService/GetUserByID"))
        .bearer_auth(secret)
        .header("content-type", "application/json")
        .header("x-request-id", "req-connect-1")
        .body(r#"{"userId":"u1"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(connect.status(), 401);
    // A 403: the subject is known.
    let forbidden = s
        .client
        .post(s.url("/v2/users/u1/lock"))
        .bearer_auth(GLOBEX)
        .header("x-request-id", "req-forbidden-1")
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(forbidden.status(), 403);

    let after = s.get("/metrics", ADMIN).await.text;
    assert_eq!(
        failures(&after, "unknown") - failures(&before, "unknown"),
        2
    );
    assert_eq!(
        failures(&after, "missing") - failures(&before, "missing"),
        1
    );

    let text = lines.text();
    for token in [secret, ADMIN, GLOBEX] {
        assert!(!text.contains(token), "a log line carries {token}:\n{text}");
    }
    let line = |id: &str| {
        text.lines()
            .filter(|l| l.contains(id))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let unknown_lines = line("req-unknown-1");
    assert!(
        unknown_lines.contains("authentication failed"),
        "{unknown_lines}"
    );
    assert!(unknown_lines.contains("status=401"), "{unknown_lines}");
    assert!(
        unknown_lines.contains("client=\"127.0.0.1:"),
        "{unknown_lines}"
    );
    let connect_lines = line("req-connect-1");
    assert!(
        connect_lines.contains("authentication failed"),
        "{connect_lines}"
    );
    assert!(
        connect_lines.contains("client=\"127.0.0.1:"),
        "{connect_lines}"
    );
    let forbidden_lines = line("req-forbidden-1");
    assert!(forbidden_lines.contains("status=403"), "{forbidden_lines}");
    assert!(
        forbidden_lines.contains("subject=\"globex-op\""),
        "{forbidden_lines}"
    );
    assert!(
        forbidden_lines.contains("client=\"127.0.0.1:"),
        "{forbidden_lines}"
    );
    s.stop().await;
}
