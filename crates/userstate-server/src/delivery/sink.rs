//! Where a target's events go: [`Webhook`] (Standard Webhooks) and [`Nats`] (JetStream).

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, context::Publish};
use async_trait::async_trait;
use base64::Engine as _;
use tokio::sync::Mutex;
use userstate::RecordedEvent;

use super::config::{NatsTarget, WebhookTarget};
use crate::feed::event_line;

/// How long one webhook request or NATS publish may take.
const TIMEOUT: Duration = Duration::from_secs(5);
/// The header naming the node that sent a webhook request (beside Standard Webhooks' own).
pub const NODE_HEADER: &str = "userstate-node";

/// A target's transport. Called by several tasks at once (up to
/// [`concurrency`](Sink::concurrency) calls in flight, never two with events of one user).
#[async_trait]
pub trait Sink: Send + Sync {
    /// Sends `events` in order; returns how many were delivered (a prefix), and the failure
    /// that stopped it when that is fewer than all.
    async fn send(&self, events: &[Arc<RecordedEvent>]) -> (usize, Option<String>);

    /// The most events one call is given (the lease is checked between calls).
    fn chunk(&self) -> usize;

    /// How many calls may be in flight at once.
    fn concurrency(&self) -> usize;
}

/// The Standard Webhooks signature of `body` sent with `id` at `timestamp`:
/// `v1,<base64 HMAC-SHA256 of "id.timestamp.body">`.
pub fn sign(secret: &[u8], id: &str, timestamp: i64, body: &str) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    // Signed in pieces: the body is not copied.
    let mut mac = ring::hmac::Context::with_key(&key);
    let timestamp = timestamp.to_string();
    for piece in [id, ".", timestamp.as_str(), ".", body] {
        mac.update(piece.as_bytes());
    }
    let tag = mac.sign();
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(tag.as_ref())
    )
}

/// POSTs each event as its own request: body = the export line, `webhook-id` = its position
/// (the same on every retry), `webhook-timestamp`, `webhook-signature`, and beside them
/// `user-agent: userstate/VERSION` and `userstate-node: NODE` (the node that sent it). A 2xx
/// is delivered. Up to the target's `concurrency` requests are in flight at once (the delivery
/// window keeps one user's events in order), over kept-alive connections.
pub struct Webhook {
    target: WebhookTarget,
    /// The target's URL, parsed once (the file was validated: an error here is a bug, and is
    /// each request's failure).
    url: Result<reqwest::Url, String>,
    node: String,
    client: reqwest::Client,
}

impl Webhook {
    /// The sink of `target`, sending as `node`.
    pub fn new(target: WebhookTarget, node: &str) -> Self {
        let client = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .user_agent(concat!("userstate/", env!("CARGO_PKG_VERSION")))
            // One kept-alive connection per request in flight.
            .pool_max_idle_per_host(target.concurrency)
            .tcp_nodelay(true)
            .build()
            .unwrap_or_default();
        let url = reqwest::Url::parse(&target.url).map_err(|e| format!("url: {e}"));
        Self {
            target,
            url,
            node: node.to_owned(),
            client,
        }
    }

    /// POSTs one event, answered 2xx within [`TIMEOUT`], or says why not.
    async fn post(&self, event: &RecordedEvent) -> Result<(), String> {
        let id = event.position.to_string();
        let body = event_line(event);
        let timestamp = chrono::Utc::now().timestamp();
        let signature = sign(self.target.secret.bytes(), &id, timestamp, &body);
        let url = self.url.clone()?;
        let sent = self
            .client
            .post(url)
            .header("content-type", "application/json")
            .header("webhook-id", &id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .header(NODE_HEADER, &self.node)
            .body(body)
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => Ok(()),
            Ok(r) => Err(format!("HTTP {}", r.status().as_u16())),
            // Without the URL: it may carry credentials.
            Err(e) => Err(e.without_url().to_string()),
        }
    }
}

#[async_trait]
impl Sink for Webhook {
    /// One event a call (Standard Webhooks: one event per request).
    fn chunk(&self) -> usize {
        1
    }

    fn concurrency(&self) -> usize {
        self.target.concurrency
    }

    async fn send(&self, events: &[Arc<RecordedEvent>]) -> (usize, Option<String>) {
        for (n, event) in events.iter().enumerate() {
            if let Err(e) = self.post(event).await {
                return (n, Some(e));
            }
        }
        (events.len(), None)
    }
}

/// Publishes each event to JetStream on the subject, with `Nats-Msg-Id` = its position (so
/// JetStream drops a redelivery inside its duplicate window), all of a batch before awaiting
/// the acknowledgements in order. Connects (and creates the stream capturing the subject when
/// none does) on first use and after a failure.
pub struct Nats {
    target: NatsTarget,
    context: Mutex<Option<jetstream::Context>>,
}

impl Nats {
    /// The sink of `target` (not connected yet).
    pub fn new(target: NatsTarget) -> Self {
        Self {
            target,
            context: Mutex::new(None),
        }
    }

    /// The stream's name when none captures the subject yet.
    fn stream_name(&self) -> String {
        self.target.stream.clone().unwrap_or_else(|| {
            let name: String = self
                .target
                .name
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '-' {
                        c.to_ascii_uppercase()
                    } else {
                        '_'
                    }
                })
                .collect();
            format!("USERSTATE_{name}")
        })
    }

    async fn connect(&self) -> Result<jetstream::Context, String> {
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(TIMEOUT)
            .connect(self.target.url.as_str())
            .await
            .map_err(|e| format!("connecting to NATS: {e}"))?;
        let mut context = jetstream::new(client);
        context.set_timeout(TIMEOUT);
        if context
            .stream_by_subject(&self.target.subject)
            .await
            .is_err()
        {
            context
                .get_or_create_stream(jetstream::stream::Config {
                    name: self.stream_name(),
                    subjects: vec![self.target.subject.clone()],
                    ..Default::default()
                })
                .await
                .map_err(|e| format!("creating the JetStream stream: {e}"))?;
        }
        Ok(context)
    }
}

#[async_trait]
impl Sink for Nats {
    /// A batch is published before its acknowledgements are awaited.
    fn chunk(&self) -> usize {
        256
    }

    /// One batch at a time: JetStream keeps the order of one connection's publishes.
    fn concurrency(&self) -> usize {
        1
    }

    async fn send(&self, events: &[Arc<RecordedEvent>]) -> (usize, Option<String>) {
        let context = {
            let mut slot = self.context.lock().await;
            match &*slot {
                Some(c) => c.clone(),
                None => match self.connect().await {
                    Ok(c) => {
                        *slot = Some(c.clone());
                        c
                    }
                    Err(e) => return (0, Some(e)),
                },
            }
        };
        let mut acks = Vec::with_capacity(events.len());
        let mut failure = None;
        for event in events {
            let publish = Publish::build()
                .message_id(event.position.to_string())
                .payload(event_line(event).into());
            match context
                .send_publish(self.target.subject.clone(), publish)
                .await
            {
                Ok(ack) => acks.push(ack),
                Err(e) => {
                    failure = Some(format!("publishing: {e}"));
                    break;
                }
            }
        }
        let mut delivered = 0;
        for ack in acks {
            match ack.await {
                Ok(_) => delivered += 1,
                Err(e) => {
                    failure = Some(format!("JetStream did not acknowledge: {e}"));
                    break;
                }
            }
        }
        if failure.is_some() {
            *self.context.lock().await = None;
        }
        (delivered, failure)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::config::Secret;

    /// The example of the Standard Webhooks specification (and its reference libraries).
    #[test]
    fn signatures_match_the_standard_webhooks_example() {
        let secret = Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert_eq!(
            sign(
                secret.bytes(),
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1614265330,
                r#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }
}
