//! Where a target's events go: [`Webhook`] (Standard Webhooks) and [`Nats`] (JetStream).

use std::time::Duration;

use async_nats::jetstream::{self, context::Publish};
use async_trait::async_trait;
use base64::Engine as _;
use userstate::RecordedEvent;

use super::config::{NatsTarget, WebhookTarget};
use crate::feed::event_line;

/// How long one webhook request or NATS publish may take.
const TIMEOUT: Duration = Duration::from_secs(5);

/// A target's transport.
#[async_trait]
pub trait Sink: Send {
    /// Sends `events` in order; returns how many were delivered, and the failure that stopped
    /// it when that is fewer than all.
    async fn send(&mut self, events: &[RecordedEvent]) -> (usize, Option<String>);

    /// The most events one call is given (the lease is checked between calls).
    fn chunk(&self) -> usize;
}

/// The Standard Webhooks signature of `body` sent with `id` at `timestamp`:
/// `v1,<base64 HMAC-SHA256 of "id.timestamp.body">`.
pub fn sign(secret: &[u8], id: &str, timestamp: i64, body: &str) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let tag = ring::hmac::sign(&key, format!("{id}.{timestamp}.{body}").as_bytes());
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(tag.as_ref())
    )
}

/// POSTs each event as its own request: body = the export line, `webhook-id` = its position
/// (the same on every retry), `webhook-timestamp`, `webhook-signature`. A 2xx is delivered.
/// Different users' events are sent concurrently, one user's in order.
pub struct Webhook {
    target: WebhookTarget,
    client: reqwest::Client,
}

impl Webhook {
    /// The sink of `target`.
    pub fn new(target: WebhookTarget) -> Self {
        let client = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .build()
            .unwrap_or_default();
        Self { target, client }
    }
}

#[async_trait]
impl Sink for Webhook {
    /// Up to 32 events a call: the events of different users are sent at once, each user's
    /// one after the other (in order per user), all within [`TIMEOUT`].
    fn chunk(&self) -> usize {
        32
    }

    async fn send(&mut self, events: &[RecordedEvent]) -> (usize, Option<String>) {
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        // The chunk's indexes per stream, in order.
        let mut groups: Vec<(&str, Vec<usize>)> = Vec::new();
        for (i, event) in events.iter().enumerate() {
            match groups.iter_mut().find(|(s, _)| *s == event.stream.as_str()) {
                Some((_, indexes)) => indexes.push(i),
                None => groups.push((event.stream.as_str(), vec![i])),
            }
        }
        let this: &Webhook = self;
        let sends = groups.iter().map(|(_, indexes)| async move {
            // How many of this stream's events went through, and why it stopped.
            for (n, i) in indexes.iter().enumerate() {
                if let Err(e) = this.post(&events[*i], deadline).await {
                    return (n, Some(e));
                }
            }
            (indexes.len(), None)
        });
        let results = futures_util::future::join_all(sends).await;
        let mut delivered = vec![false; events.len()];
        let mut failure = None;
        for ((_, indexes), (sent, error)) in groups.iter().zip(results) {
            for i in &indexes[..sent] {
                delivered[*i] = true;
            }
            if failure.is_none() {
                failure = error;
            }
        }
        // Delivered: the prefix of the chunk that all went through (a later event that went
        // through anyway is sent again, with the same id).
        let prefix = delivered.iter().take_while(|d| **d).count();
        if prefix == events.len() {
            (prefix, None)
        } else {
            (prefix, failure.or_else(|| Some("not delivered".to_owned())))
        }
    }
}

impl Webhook {
    /// POSTs one event, answered 2xx before `deadline`, or says why not.
    async fn post(
        &self,
        event: &RecordedEvent,
        deadline: tokio::time::Instant,
    ) -> Result<(), String> {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            return Err("out of time for this chunk".to_owned());
        }
        let id = event.position.to_string();
        let body = event_line(event);
        let timestamp = chrono::Utc::now().timestamp();
        let signature = sign(self.target.secret.bytes(), &id, timestamp, &body);
        let sent = self
            .client
            .post(&self.target.url)
            .timeout(left)
            .header("content-type", "application/json")
            .header("webhook-id", &id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
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

/// Publishes each event to JetStream on the subject, with `Nats-Msg-Id` = its position (so
/// JetStream drops a redelivery inside its duplicate window), all of a batch before awaiting
/// the acknowledgements in order. Connects (and creates the stream capturing the subject when
/// none does) on first use and after a failure.
pub struct Nats {
    target: NatsTarget,
    context: Option<jetstream::Context>,
}

impl Nats {
    /// The sink of `target` (not connected yet).
    pub fn new(target: NatsTarget) -> Self {
        Self {
            target,
            context: None,
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

    async fn send(&mut self, events: &[RecordedEvent]) -> (usize, Option<String>) {
        let context = match &self.context {
            Some(c) => c.clone(),
            None => match self.connect().await {
                Ok(c) => {
                    self.context = Some(c.clone());
                    c
                }
                Err(e) => return (0, Some(e)),
            },
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
            self.context = None;
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
