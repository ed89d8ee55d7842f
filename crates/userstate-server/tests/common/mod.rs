//! A real server on a free loopback port, and a real HTTP client to call it.

#![allow(dead_code)]

pub mod failing_store;
pub mod revocable;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use userstate::{EventStore, InstanceId, OrgId, Permission, Principal};
use userstate_server::auth::hash_token;
use userstate_server::{ServeError, Server, ServerConfig, StaticTokens};

/// Every permission on instance `i1`.
pub const ADMIN: &str = "tok-admin";
/// Every permission on organisation `acme` of `i1`.
pub const ACME: &str = "tok-acme";
/// `user.read` and `user.write` (no delete) on `acme` of `i1`.
pub const ACME_WRITER: &str = "tok-acme-writer";
/// `user.read` only on `acme` of `i1`.
pub const ACME_READER: &str = "tok-acme-reader";
/// Every permission on organisation `globex` of `i1`.
pub const GLOBEX: &str = "tok-globex";
/// Every permission on instance `i2`.
pub const OTHER_INSTANCE: &str = "tok-i2";

pub fn authenticator() -> StaticTokens {
    let i1 = InstanceId::new("i1").unwrap();
    let org = |o: &str| OrgId::new(o).unwrap();
    let all = Permission::ALL;
    let entries = [
        (ADMIN, Principal::system("admin", i1.clone())),
        (
            ACME,
            Principal::for_orgs("acme-op", i1.clone(), [org("acme")], &all),
        ),
        (
            ACME_WRITER,
            Principal::for_orgs(
                "acme-writer",
                i1.clone(),
                [org("acme")],
                &[Permission::UserRead, Permission::UserWrite],
            ),
        ),
        (
            ACME_READER,
            Principal::for_orgs(
                "acme-reader",
                i1.clone(),
                [org("acme")],
                &[Permission::UserRead],
            ),
        ),
        (
            GLOBEX,
            Principal::for_orgs("globex-op", i1, [org("globex")], &all),
        ),
        (
            OTHER_INSTANCE,
            Principal::system("admin2", InstanceId::new("i2").unwrap()),
        ),
    ];
    StaticTokens::new(entries.map(|(t, p)| (hash_token(t), p))).unwrap()
}

/// The value of `var`, or `None` after saying why the test skips (a failure under `CI=true`):
/// for tests that need something installed outside cargo (the SDKs of `tests/sdk`).
pub fn required_env(var: &str, what: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(value) => Some(value),
        Err(_) => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "{var} is unset under CI=true (.ci/run sets it)"
            );
            println!("SKIPPED: {var} is not set ({what})");
            None
        }
    }
}

pub struct TestServer {
    pub addr: SocketAddr,
    pub client: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<Result<(), ServeError>>>,
}

/// An answer: status, headers, JSON body (`Value::Null` when not JSON).
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Answer {
    pub fn position(&self) -> u64 {
        self.headers
            .get("x-userstate-position")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .expect("x-userstate-position header")
    }
}

impl TestServer {
    pub async fn start(store: Arc<dyn EventStore>) -> Self {
        Self::start_with(store, Duration::from_secs(5)).await
    }

    pub async fn start_with(store: Arc<dyn EventStore>, read_timeout: Duration) -> Self {
        Self::start_config(store, |config| config.read_timeout = read_timeout).await
    }

    /// A server with the config `configure` leaves.
    pub async fn start_config(
        store: Arc<dyn EventStore>,
        configure: impl FnOnce(&mut ServerConfig),
    ) -> Self {
        let mut config = ServerConfig::new("127.0.0.1:0".parse().unwrap(), store, authenticator());
        configure(&mut config);
        let server = Server::bind(config).await.unwrap();
        let addr = server.local_addr();
        let (tx, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(server.run(async {
            let _ = rx.await;
        }));
        Self {
            addr,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            shutdown: Some(tx),
            handle: Some(handle),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Sends a request; `body` is sent as JSON with `Content-Type: application/json`.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Answer {
        let mut req = self.client.request(method, self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        Self::answer(req).await
    }

    pub async fn answer(req: reqwest::RequestBuilder) -> Answer {
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Answer {
            status,
            headers,
            body,
            text,
        }
    }

    pub async fn get(&self, path: &str, token: &str) -> Answer {
        self.call(Method::GET, path, Some(token), None).await
    }

    pub async fn post(&self, path: &str, token: &str) -> Answer {
        self.call(Method::POST, path, Some(token), Some(serde_json::json!({})))
            .await
    }

    pub async fn delete(&self, path: &str, token: &str) -> Answer {
        self.call(Method::DELETE, path, Some(token), None).await
    }

    /// Adds user `id` named `id` in `org` as `token`.
    pub async fn add(&self, token: &str, id: &str, org: &str) -> Answer {
        self.call(
            Method::POST,
            "/v2/users/human",
            Some(token),
            Some(serde_json::json!({
                "userId": id, "username": id, "organization": {"orgId": org}
            })),
        )
        .await
    }

    /// Starts a graceful shutdown without waiting for it.
    pub fn begin_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    /// Graceful shutdown; waits until the server stopped.
    pub async fn stop(mut self) {
        self.begin_shutdown();
        if let Some(h) = self.handle.take() {
            h.await.unwrap().unwrap();
        }
    }
}

/// Asserts SPEC.md's error shape exactly.
pub fn assert_error(answer: &Answer, http: u16, code: i64, id: &str, key: &str) {
    assert_eq!(
        answer.status.as_u16(),
        http,
        "status; body: {}",
        answer.text
    );
    let body = answer.body.as_object().expect("error body is an object");
    let mut keys: Vec<&str> = body.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["code", "details", "message"], "{}", answer.text);
    assert_eq!(body["code"], code, "{}", answer.text);
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
    assert_eq!(
        body["details"],
        serde_json::json!([{
            "@type": "type.googleapis.com/zitadel.v1.ErrorDetail",
            "id": id,
            "message": key
        }]),
        "{}",
        answer.text
    );
    assert_eq!(
        answer.headers.get("content-type").unwrap(),
        "application/json"
    );
}

/// Asserts a `details` object's exact keys and value forms; returns (sequence, changeDate).
pub fn assert_details(details: &Value, v2: bool) -> (u64, String) {
    let obj = details.as_object().expect("details is an object");
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort_unstable();
    let expected: &[&str] = if v2 {
        &["changeDate", "creationDate", "resourceOwner", "sequence"]
    } else {
        &["changeDate", "resourceOwner", "sequence"]
    };
    assert_eq!(keys, expected, "{details}");
    let sequence: u64 = obj["sequence"]
        .as_str()
        .expect("sequence is a string")
        .parse()
        .expect("sequence is decimal");
    let change = obj["changeDate"].as_str().unwrap().to_owned();
    for field in ["changeDate", "creationDate"] {
        if let Some(t) = obj.get(field) {
            assert_time(t.as_str().expect("time is a string"));
        }
    }
    (sequence, change)
}

/// `2025-03-05T21:29:22.038Z`: RFC 3339, UTC, milliseconds.
pub fn assert_time(t: &str) {
    assert_eq!(t.len(), 24, "{t}");
    assert!(t.ends_with('Z'), "{t}");
    assert_eq!(&t[19..20], ".", "{t}");
    chrono::DateTime::parse_from_rfc3339(t).expect("RFC 3339");
}
