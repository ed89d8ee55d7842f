//! W3C trace context on a real server (issue 27): the `traceparent` a caller sends over HTTP,
//! gRPC or Connect names the trace of that request's span, so the request's log lines carry
//! the caller's trace id, and the answer's `traceparent` continues that trace. A request
//! without one (or with a malformed one) gets a trace of its own, in its lines too.

mod common;
mod grpc_support;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::*;
use grpc_support::*;
use userstate::MemoryStore;
use userstate_server::grpc::pb::zitadel::user::v2::{LockUserRequest, UnlockUserRequest};

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
    /// The lines that carry `needle`.
    fn with(&self, needle: &str) -> Vec<String> {
        String::from_utf8_lossy(&self.0.lock().unwrap())
            .lines()
            .filter(|l| l.contains(needle))
            .map(str::to_owned)
            .collect()
    }
}

fn traceparent(trace: &str) -> String {
    format!("00-{trace}-00f067aa0ba902b7-01")
}

/// The answer's `traceparent` continues `trace` with a span of the server's own.
fn assert_continues(answer: Option<&str>, trace: &str) {
    let answer = answer.expect("a traceparent in the answer");
    let parts: Vec<&str> = answer.split('-').collect();
    assert_eq!(parts.len(), 4, "{answer}");
    assert_eq!(parts[0], "00", "{answer}");
    assert_eq!(parts[1], trace, "{answer}");
    assert_eq!(parts[2].len(), 16, "{answer}");
    assert_ne!(
        parts[2], "00f067aa0ba902b7",
        "the server's own span: {answer}"
    );
    assert_eq!(parts[3], "01", "the caller's sampling decision: {answer}");
}

/// Every line of the request `request_id` names `trace` (and there is at least one).
fn assert_lines_carry(lines: &Lines, request_id: &str, trace: &str, expected: &[&str]) {
    let found = lines.with(request_id);
    assert!(!found.is_empty(), "no line for {request_id}");
    for line in &found {
        assert!(line.contains(&format!("trace_id={trace}")), "{line}");
    }
    for message in expected {
        assert!(
            found.iter().any(|l| l.contains(message)),
            "no {message:?} line for {request_id}: {found:#?}"
        );
    }
}

#[tokio::test]
async fn the_callers_trace_id_is_in_every_line_of_its_request_on_every_protocol() {
    let lines = Lines::default();
    let writer = lines.clone();
    // Successful requests log at debug: shown here, so they are checked too.
    tracing_subscriber::fmt()
        .with_env_filter("info,userstate_server=debug")
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();
    let s = TestServer::start(Arc::new(MemoryStore::new())).await;
    s.add(ADMIN, "u1", "acme").await;

    // HTTP: a command that succeeds, and one the lifecycle refuses (logged at info).
    let http_ok = "4bf92f3577b34da6a3ce929d0e0e4736";
    let answer = s
        .client
        .post(s.url("/v2/users/u1/lock"))
        .bearer_auth(ADMIN)
        .header("x-request-id", "req-http-ok")
        .header("traceparent", traceparent(http_ok))
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    assert_continues(
        answer
            .headers()
            .get("traceparent")
            .map(|v| v.to_str().unwrap()),
        http_ok,
    );
    assert_lines_carry(&lines, "req-http-ok", http_ok, &["request answered"]);

    let http_refused = "0af7651916cd43dd8448eb211c80319c";
    let answer = s
        .client
        .post(s.url("/v2/users/u1/lock"))
        .bearer_auth(ADMIN)
        .header("x-request-id", "req-http-refused")
        .header("traceparent", traceparent(http_refused))
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 400);
    assert_continues(
        answer
            .headers()
            .get("traceparent")
            .map(|v| v.to_str().unwrap()),
        http_refused,
    );
    assert_lines_carry(
        &lines,
        "req-http-refused",
        http_refused,
        &["request not successful"],
    );

    // A bad token: the authentication line is the request's too.
    let http_401 = "11111111111111112222222222222222";
    let answer = s
        .client
        .get(s.url("/v2/users/u1"))
        .bearer_auth("not-a-token")
        .header("x-request-id", "req-http-401")
        .header("traceparent", traceparent(http_401))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 401);
    assert_lines_carry(
        &lines,
        "req-http-401",
        http_401,
        &["authentication failed", "request not successful"],
    );

    // gRPC: metadata `traceparent`; a call that succeeds and one that is refused.
    let mut c = v2(s.addr).await;
    let grpc_ok = "a3ce929d0e0e47364bf92f3577b34da6";
    let mut request = as_(
        ADMIN,
        UnlockUserRequest {
            user_id: "u1".into(),
        },
    );
    request
        .metadata_mut()
        .insert("traceparent", traceparent(grpc_ok).parse().unwrap());
    request
        .metadata_mut()
        .insert("x-request-id", "req-grpc-ok".parse().unwrap());
    let answer = c.unlock_user(request).await.unwrap();
    assert_continues(
        answer
            .metadata()
            .get("traceparent")
            .map(|v| v.to_str().unwrap()),
        grpc_ok,
    );
    assert_lines_carry(&lines, "req-grpc-ok", grpc_ok, &["gRPC call answered"]);

    let grpc_refused = "8448eb211c80319c0af7651916cd43dd";
    let mut request = as_(
        ADMIN,
        LockUserRequest {
            user_id: "nobody".into(),
        },
    );
    request
        .metadata_mut()
        .insert("traceparent", traceparent(grpc_refused).parse().unwrap());
    request
        .metadata_mut()
        .insert("x-request-id", "req-grpc-refused".parse().unwrap());
    let refused = c.lock_user(request).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::NotFound);
    assert_continues(
        refused
            .metadata()
            .get("traceparent")
            .map(|v| v.to_str().unwrap()),
        grpc_refused,
    );
    assert_lines_carry(
        &lines,
        "req-grpc-refused",
        grpc_refused,
        &["gRPC call not successful"],
    );

    // Connect.
    let connect = "33333333333333334444444444444444";
    let answer = s
        .client
        .post(s.url("/zitadel.user.v2.UserService/GetUserByID"))
        .bearer_auth(ADMIN)
        .header("content-type", "application/json")
        .header("x-request-id", "req-connect-missing")
        .header("traceparent", traceparent(connect))
        .body(r#"{"userId":"nobody"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 404);
    assert_continues(
        answer
            .headers()
            .get("traceparent")
            .map(|v| v.to_str().unwrap()),
        connect,
    );
    assert_lines_carry(
        &lines,
        "req-connect-missing",
        connect,
        &["request not successful"],
    );

    // No traceparent, or a malformed one: a new trace, named in the answer and the lines.
    for (id, header) in [
        ("req-no-trace", None),
        ("req-bad-trace", Some("00-zz-00f067aa0ba902b7-01")),
    ] {
        let mut request = s
            .client
            .get(s.url("/v2/users/nobody"))
            .bearer_auth(ADMIN)
            .header("x-request-id", id);
        if let Some(header) = header {
            request = request.header("traceparent", header);
        }
        let answer = request.send().await.unwrap();
        assert_eq!(answer.status(), 404);
        let own = answer.headers()["traceparent"].to_str().unwrap().to_owned();
        let trace = own.split('-').nth(1).unwrap().to_owned();
        assert_eq!(trace.len(), 32, "{own}");
        assert_ne!(trace, "0".repeat(32));
        assert_lines_carry(&lines, id, &trace, &["request not successful"]);
    }
    s.stop().await;
}
