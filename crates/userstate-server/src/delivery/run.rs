//! One leased run of a target: read the feed after the checkpoint, send through the sink with
//! up to its `concurrency` calls in flight ([`Window`]: one user's events in order, never two
//! in flight), retry each failed event with backoff, dead-letter it after `max_attempts`, and
//! checkpoint the contiguous prefix of events done, until the lease is lost.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::stream::{FuturesUnordered, StreamExt};
use futures_util::FutureExt;
use tokio::sync::mpsc;
use tracing::{debug, warn};
use userstate::feed::{Checkpoint, DeadLetter, FeedError, Filter, StoreCheckpoint, Subscription};
use userstate::{EventStore, RecordedEvent, StoreError};

use super::config::Target;
use super::sink::Sink;
use super::window::{Unit, Window};
use super::{DeliveryMetrics, CHECKPOINT_EVERY, FIRST_BACKOFF, MAX_BACKOFF, PAGE};

/// The most events read ahead and not yet retired (the window stops reading beyond it: a
/// user whose event is retried holds back at most this much).
const MAX_PENDING: usize = 4 * PAGE;

/// What one call of the sink did: the unit, how many of its events were delivered, why it
/// stopped short, and whether it was attempted at all (a retry finding the lease not held
/// sends nothing).
struct Outcome {
    unit: Unit,
    sent: usize,
    failure: Option<String>,
    attempted: bool,
}

type Call<'a> = Pin<Box<dyn Future<Output = Outcome> + Send + 'a>>;

/// The wait before the retry after `attempts` failed attempts: 100 ms doubling, at most
/// [`MAX_BACKOFF`].
pub(super) fn backoff(attempts: u32) -> Duration {
    FIRST_BACKOFF
        .saturating_mul(1 << attempts.saturating_sub(1).min(16))
        .min(MAX_BACKOFF)
}

/// Aborts the feed's reader task when the run ends.
struct Reader(tokio::task::JoinHandle<()>);

impl Drop for Reader {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One leased run of a target.
pub(super) struct Run<'a> {
    pub store: &'a Arc<dyn EventStore>,
    pub checkpoint: &'a StoreCheckpoint,
    pub target: &'a Target,
    pub metrics: &'a DeliveryMetrics,
    pub filter: Filter,
}

impl<'a> Run<'a> {
    /// Delivers after `from` until the lease is lost (or the store fails).
    pub async fn deliver(&self, from: u64, sink: &'a dyn Sink) -> Result<(), FeedError> {
        let name = self.target.name();
        let idle = self.checkpoint.lease() / 4;
        let feed = Subscription::after(self.store.clone(), from)
            .with_filter(self.filter.clone())
            .with_page(PAGE)
            .with_max_lag(u64::MAX);
        // The feed is read by a task of its own, a batch ahead, so reading the store overlaps
        // sending; an empty batch says the feed was idle for `idle` (with how far it read).
        let (tx, mut batches) = mpsc::channel(1);
        let _reader = Reader(tokio::spawn(read(feed, idle, tx)));
        let mut window = Window::new(from, sink.concurrency(), sink.chunk());
        let mut calls: FuturesUnordered<Call<'a>> = FuturesUnordered::new();
        let mut saved = from;
        let mut saved_at = Instant::now();
        let mut tick = tokio::time::interval(idle);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // Still ours? (Renewed with what is delivered so far when half of it is gone.)
            if self.checkpoint.renewal_due() {
                saved = window.checkpoint().max(saved);
                self.checkpoint.save(saved).await?;
                saved_at = Instant::now();
            }
            for unit in window.dispatch() {
                let events = window.events(&unit);
                calls.push(Box::pin(send(sink, unit, events, None, self.checkpoint)));
            }
            let mut idle_tick = false;
            tokio::select! {
                Some(outcome) = calls.next(), if !calls.is_empty() => {
                    self.settle(&mut window, &mut calls, outcome, sink).await?;
                    // And every other call done by now, before dispatching again.
                    while let Some(Some(outcome)) = calls.next().now_or_never() {
                        self.settle(&mut window, &mut calls, outcome, sink).await?;
                    }
                }
                batch = batches.recv(), if window.len() < MAX_PENDING => match batch {
                    Some(Ok((batch, read))) => {
                        idle_tick = batch.is_empty();
                        window.push(batch, read);
                    }
                    Some(Err(e)) => return Err(e),
                    None => return Err(FeedError::Store(StoreError::Unavailable {
                        message: "the delivery feed's reader stopped".into(),
                        source: None,
                    })),
                },
                _ = tick.tick() => {}
            }
            let done = window.checkpoint();
            self.metrics
                .position
                .with_label_values(&[name])
                .set(done as i64);
            // At most once a second while busy; at once when idle (filtered events too).
            if done > saved && (idle_tick || saved_at.elapsed() >= CHECKPOINT_EVERY) {
                self.checkpoint.save(done).await?;
                saved = done;
                saved_at = Instant::now();
            }
        }
    }

    /// Takes in what a call did: delivered events are done; a failed event is retried in the
    /// unit's slot after its backoff, or dead-lettered after `max_attempts`.
    async fn settle(
        &self,
        window: &mut Window,
        calls: &mut FuturesUnordered<Call<'a>>,
        outcome: Outcome,
        sink: &'a dyn Sink,
    ) -> Result<(), FeedError> {
        let name = self.target.name();
        let Outcome {
            unit,
            sent,
            failure,
            attempted,
        } = outcome;
        if sent > 0 {
            self.metrics
                .delivered
                .with_label_values(&[name])
                .inc_by(sent as u64);
        }
        let rest = window.delivered(&unit, sent).to_vec();
        let Some(&first) = rest.first() else {
            window.finish(&rest);
            return Ok(());
        };
        if !attempted {
            // The lease was not held when the retry was due: renewed (or lost) by the loop
            // before this is tried again.
            window.retry(&rest);
            let events = window.events(&[first]);
            let wait = Some(Duration::ZERO);
            calls.push(Box::pin(send(
                sink,
                vec![first],
                events,
                wait,
                self.checkpoint,
            )));
            return Ok(());
        }
        let error = failure.unwrap_or_else(|| "not delivered".to_owned());
        self.metrics.failures.with_label_values(&[name]).inc();
        let attempts = window.failed(first);
        let event = window.event(first).clone();
        if attempts >= self.target.max_attempts() {
            warn!(target = %name, position = event.position, attempts, error, "event dead-lettered");
            self.checkpoint
                .dead_letter(DeadLetter {
                    position: event.position,
                    event_type: event.event_type.clone(),
                    attempts,
                    error,
                    node: self.checkpoint.node().to_owned(),
                    at: chrono::Utc::now(),
                })
                .await?;
            self.metrics.dead_letters.with_label_values(&[name]).inc();
            window.dead_lettered(first);
            window.finish(&rest[1..]);
            return Ok(());
        }
        debug!(target = %name, position = event.position, attempts, error, "delivery failed; retrying");
        window.retry(&rest);
        let wait = Some(backoff(attempts));
        calls.push(Box::pin(send(
            sink,
            vec![first],
            vec![event],
            wait,
            self.checkpoint,
        )));
        Ok(())
    }
}

/// One call of the sink, after `wait` for a retry (then only while the lease is held).
async fn send(
    sink: &dyn Sink,
    unit: Unit,
    events: Vec<Arc<RecordedEvent>>,
    wait: Option<Duration>,
    checkpoint: &StoreCheckpoint,
) -> Outcome {
    if let Some(wait) = wait {
        tokio::time::sleep(wait).await;
        if !checkpoint.holds() {
            return Outcome {
                unit,
                sent: 0,
                failure: None,
                attempted: false,
            };
        }
    }
    let (sent, failure) = sink.send(&events).await;
    Outcome {
        unit,
        sent,
        failure,
        attempted: true,
    }
}

/// Reads `feed` into `tx` a batch at a time (with how far it has read); an empty batch after
/// `idle` without events.
async fn read(
    mut feed: Subscription,
    idle: Duration,
    tx: mpsc::Sender<Result<(Vec<RecordedEvent>, u64), FeedError>>,
) {
    loop {
        let batch = match tokio::time::timeout(idle, feed.next_batch()).await {
            Ok(Ok(batch)) => Ok((batch, feed.read_position())),
            Ok(Err(e)) => Err(e),
            Err(_) => Ok((Vec::new(), feed.read_position())),
        };
        let failed = batch.is_err();
        if tx.send(batch).await.is_err() || failed {
            return;
        }
    }
}
