//! Embedding: an identity backend mounts userstate's REST router inside its own axum app,
//! behind **its own** authentication. Userstate asks the embedder's [`Authenticator`] for the
//! principal of every request (before the body is read), then authorises each operation as
//! SPEC.md "Permissions" says; the embedder's session store stands in for the tokens file.
//!
//! Run with `cargo run --example embedder_auth`: it serves on a free loopback port, calls
//! the mounted API with a session, without one and with a session of another organisation,
//! prints what it got, and stops. (`tests/embedder_example.rs` runs the same code in CI.)

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};
use userstate::{InstanceId, MemoryStore, OrgId, Permission, Principal};
use userstate_server::auth::{async_trait, AuthError, Authenticator, Credentials};
use userstate_server::{router, AppState};

/// The embedder's own authentication: sessions named by an `x-session` header (a cookie or
/// an mTLS identity would do as well), each mapped to a userstate principal.
struct Sessions {
    by_id: HashMap<String, Arc<Principal>>,
}

#[async_trait]
impl Authenticator for Sessions {
    async fn authenticate(
        &self,
        credentials: Credentials<'_>,
    ) -> Result<Arc<Principal>, AuthError> {
        let session = credentials
            .headers()
            .get("x-session")
            .ok_or(AuthError::Missing)?
            .to_str()
            .map_err(|_| AuthError::Unknown)?;
        // A real backend would look the session up in its own store (asynchronously).
        self.by_id.get(session).cloned().ok_or(AuthError::Unknown)
    }
}

/// What the demo saw: the HTTP status of each call, in order.
pub async fn demo() -> Result<Vec<u16>, Box<dyn std::error::Error>> {
    let instance = InstanceId::new("default")?;
    let acme = OrgId::new("acme")?;
    let sessions = Sessions {
        by_id: HashMap::from([
            (
                "s-alice".to_owned(),
                Arc::new(Principal::for_orgs(
                    "alice",
                    instance.clone(),
                    [acme],
                    &Permission::ALL,
                )),
            ),
            (
                "s-bob".to_owned(),
                Arc::new(Principal::for_orgs(
                    "bob",
                    instance,
                    [OrgId::new("globex")?],
                    &[Permission::UserRead],
                )),
            ),
        ]),
    };
    let state = AppState::new(
        Arc::new(MemoryStore::new()),
        Arc::new(sessions) as Arc<dyn Authenticator>,
        Duration::from_secs(5),
    )
    .await?;
    // The embedder's app: its own routes, and userstate's API under /users-api.
    let app = Router::new()
        .route("/", get(|| async { "the embedder's own page" }))
        .nest("/users-api", router(state));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}/users-api", listener.local_addr()?);
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let client = reqwest::Client::new();
    let add = json!({"userId": "u1", "username": "u1", "organization": {"orgId": "acme"}});
    let mut statuses = Vec::new();
    let calls: [(&str, Option<&str>); 4] = [
        ("add as alice", Some("s-alice")),
        ("read without a session", None),
        ("read as bob (another organisation)", Some("s-bob")),
        ("read as alice", Some("s-alice")),
    ];
    for (i, (what, session)) in calls.into_iter().enumerate() {
        let mut request = if i == 0 {
            client.post(format!("{base}/v2/users/human")).json(&add)
        } else {
            client.get(format!("{base}/v2/users/u1"))
        };
        if let Some(session) = session {
            request = request.header("x-session", session);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        println!("{what:<36} -> {status} {body}");
        statuses.push(status);
    }
    server.abort();
    Ok(statuses)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    demo().await?;
    Ok(())
}
