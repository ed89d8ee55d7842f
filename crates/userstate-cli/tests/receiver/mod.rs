//! A real webhook receiver for the delivery tests: an axum server that verifies every
//! Standard Webhooks signature, fails while told to, and records what it accepted — with the
//! node that sent it (the `userstate-node` header), so a test can check who delivered what,
//! in arrival order.

#![allow(dead_code)] // each test binary uses a different part

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use base64::Engine as _;
use serde_json::Value;

pub const SECRET_B64: &str = "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// One accepted delivery.
#[derive(Clone, Debug)]
pub struct Delivery {
    /// Its `webhook-id`.
    pub id: u64,
    /// Its body.
    pub body: String,
    /// The node that sent it (`userstate-node`).
    pub node: String,
}

/// A webhook receiver: verifies signatures, fails while told to, records what it accepted.
#[derive(Clone, Default)]
pub struct Receiver {
    /// What it accepted, in arrival order.
    pub accepted: Arc<Mutex<Vec<Delivery>>>,
    pub bad_signatures: Arc<AtomicUsize>,
    pub refused: Arc<AtomicUsize>,
    failing_until: Arc<Mutex<Option<Instant>>>,
    /// Bodies containing this are refused forever (to be dead-lettered).
    pub poison: Arc<Mutex<Option<String>>>,
}

impl Receiver {
    /// Serves on a free loopback port; returns the hook's URL.
    pub async fn start(&self) -> String {
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(hook))
            .with_state(self.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}/hook")
    }

    /// Refuses (503) every request for `d`.
    pub fn fail_for(&self, d: Duration) {
        *self.failing_until.lock().unwrap() = Some(Instant::now() + d);
    }

    /// The positions accepted, in arrival order.
    pub fn positions(&self) -> Vec<u64> {
        self.accepted.lock().unwrap().iter().map(|d| d.id).collect()
    }

    /// The nodes that sent the deliveries, in arrival order, runs of one node merged:
    /// `["n0", "n1"]` when n0 delivered everything until n1 took over.
    pub fn senders(&self) -> Vec<String> {
        let mut runs: Vec<String> = Vec::new();
        for d in self.accepted.lock().unwrap().iter() {
            if runs.last() != Some(&d.node) {
                runs.push(d.node.clone());
            }
        }
        runs
    }

    /// Waits until every position of `wanted` was accepted.
    pub async fn wait_for(&self, wanted: &[u64], within: Duration) {
        if let Err(missing) = self.wait_until(wanted, within).await {
            panic!("{missing}");
        }
    }

    /// [`wait_for`](Self::wait_for) that says what is missing instead of panicking (so a test
    /// can add the node's log to the failure).
    pub async fn wait_until(&self, wanted: &[u64], within: Duration) -> Result<(), String> {
        let deadline = Instant::now() + within;
        loop {
            let got: std::collections::HashSet<u64> = self.positions().into_iter().collect();
            let missing: Vec<u64> = wanted
                .iter()
                .filter(|p| !got.contains(p))
                .copied()
                .collect();
            if missing.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "{} positions never delivered, e.g. {:?}",
                    missing.len(),
                    &missing[..missing.len().min(10)]
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Every position once, or again only with the same body; each user's events in order
    /// of sequence as first received; every event's own position is its id.
    pub fn check(&self) -> usize {
        let accepted = self.accepted.lock().unwrap().clone();
        let mut bodies: HashMap<u64, String> = HashMap::new();
        let mut last_sequence: HashMap<String, u64> = HashMap::new();
        let mut repeats = 0;
        for Delivery { id, body, .. } in accepted {
            if let Some(before) = bodies.get(&id) {
                assert_eq!(
                    before, &body,
                    "position {id} delivered twice with different bodies"
                );
                repeats += 1;
                continue;
            }
            let event: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(event["position"], id, "webhook-id is the position");
            let stream = event["stream"].as_str().unwrap().to_owned();
            assert!(stream.starts_with("user:"), "only user events: {stream}");
            let sequence = event["sequence"].as_u64().unwrap();
            let last = last_sequence.entry(stream.clone()).or_default();
            assert!(
                sequence > *last,
                "{stream}: sequence {sequence} after {last}"
            );
            *last = sequence;
            bodies.insert(id, body);
        }
        assert_eq!(self.bad_signatures.load(Ordering::SeqCst), 0);
        repeats
    }
}

/// Verifies the Standard Webhooks headers with the secret, as a receiver must.
fn verify(headers: &HeaderMap, body: &str) -> Option<u64> {
    let get = |n: &str| headers.get(n)?.to_str().ok();
    let (id, ts, sigs) = (
        get("webhook-id")?,
        get("webhook-timestamp")?,
        get("webhook-signature")?,
    );
    let ts: i64 = ts.parse().ok()?;
    if (chrono::Utc::now().timestamp() - ts).abs() > 300 {
        return None;
    }
    let secret = base64::engine::general_purpose::STANDARD
        .decode(SECRET_B64)
        .unwrap();
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &secret);
    let ok = sigs.split(' ').any(|sig| {
        sig.strip_prefix("v1,")
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            .is_some_and(|tag| {
                ring::hmac::verify(&key, format!("{id}.{ts}.{body}").as_bytes(), &tag).is_ok()
            })
    });
    ok.then(|| id.parse().ok()).flatten()
}

async fn hook(State(r): State<Receiver>, headers: HeaderMap, body: String) -> StatusCode {
    let Some(id) = verify(&headers, &body) else {
        r.bad_signatures.fetch_add(1, Ordering::SeqCst);
        return StatusCode::UNAUTHORIZED;
    };
    let failing = r
        .failing_until
        .lock()
        .unwrap()
        .is_some_and(|t| Instant::now() < t);
    let poisoned = r
        .poison
        .lock()
        .unwrap()
        .as_ref()
        .is_some_and(|p| body.contains(p.as_str()));
    if failing || poisoned {
        r.refused.fetch_add(1, Ordering::SeqCst);
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    let node = headers
        .get("userstate-node")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    r.accepted.lock().unwrap().push(Delivery { id, body, node });
    StatusCode::NO_CONTENT
}

/// Writes a delivery file of webhook targets `(name, url, max_attempts)` with the secret.
pub fn webhook_file(dir: &Path, name: &str, targets: &[(&str, &str, Option<u32>)]) -> PathBuf {
    let path = dir.join(name);
    let mut text = String::new();
    for (target, url, attempts) in targets {
        text.push_str(&format!(
            "[[webhook]]\nname = \"{target}\"\nurl = \"{url}\"\nsecret = \"whsec_{SECRET_B64}\"\n"
        ));
        if let Some(n) = attempts {
            text.push_str(&format!("max_attempts = {n}\n"));
        }
    }
    std::fs::write(&path, text).unwrap();
    path
}
