//! Delivery targets (SPEC.md "Event feed", "Operator interface"): every event of the public
//! feed, at least once, in position order, to webhooks ([`sink::Webhook`], Standard Webhooks)
//! and NATS JetStream ([`sink::Nats`]), from a checkpoint per target kept in the store
//! ([`StoreCheckpoint`]: every node sharing the store agrees, and the lease lets one node at a
//! time deliver a target; ADR 0018).
//!
//! Per target, one task: take the lease (or wait for it to expire), subscribe after the
//! checkpoint, and send through the sink with up to [`Sink::concurrency`] calls in flight
//! (webhooks: the target's `concurrency` requests, one event each; NATS: one batch of up to
//! 256), one user's events never in two calls at once and never out of order
//! ([`window::Window`]). A failed event is retried with backoff (100 ms doubling, capped at
//! [`MAX_BACKOFF`]) and after the target's `max_attempts` dead-lettered (recorded in the
//! checkpoint stream, counted in `/metrics`, listed by `userstate delivery status`). The
//! checkpoint is the contiguous prefix of events delivered or dead-lettered, written at most
//! once a second while busy, and once per half lease while idle (renewing the lease), never
//! per event. The lease is checked before each call of the sink ([`run`]).
//!
//! [`Delivery::apply`] starts, keeps or restarts targets from a (re)loaded file: a target
//! whose configuration is unchanged keeps running.

pub mod config;
mod run;
pub mod sink;
mod window;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use prometheus::{IntCounterVec, IntGaugeVec, Opts};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};
use userstate::feed::{FeedError, Filter, LeaseState, StoreCheckpoint, DEFAULT_LEASE};
use userstate::EventStore;

use crate::metrics::Metrics;
pub use config::{load, ConfigError, Target};
use run::Run;
use sink::Sink;

/// The longest wait between two attempts of one event.
pub const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// The first wait after a failed attempt.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// Events read from the store per batch.
const PAGE: usize = 256;
/// How often progress is checkpointed while busy.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// How this node delivers.
#[derive(Clone, Debug)]
pub struct DeliveryOptions {
    /// This node's name in the leases (unique per running process).
    pub node: String,
    /// The lease's length: how long another node waits to take over a dead holder's targets.
    pub lease: Duration,
}

impl Default for DeliveryOptions {
    fn default() -> Self {
        Self {
            node: format!("node-{}", uuid::Uuid::new_v4().simple()),
            lease: DEFAULT_LEASE,
        }
    }
}

/// The `/metrics` of delivery, per target.
#[derive(Clone)]
struct DeliveryMetrics {
    delivered: IntCounterVec,
    failures: IntCounterVec,
    dead_letters: IntCounterVec,
    position: IntGaugeVec,
    leader: IntGaugeVec,
}

impl DeliveryMetrics {
    fn new(metrics: &Metrics) -> Self {
        let counter = |name: &str, help: &str| {
            IntCounterVec::new(Opts::new(name, help), &["target"]).expect("static metric")
        };
        let gauge = |name: &str, help: &str| {
            IntGaugeVec::new(Opts::new(name, help), &["target"]).expect("static metric")
        };
        let this = Self {
            delivered: counter(
                "userstate_delivery_delivered_total",
                "Events delivered to a target by this node",
            ),
            failures: counter(
                "userstate_delivery_failures_total",
                "Failed delivery attempts (each retry counts)",
            ),
            dead_letters: counter(
                "userstate_delivery_dead_letters_total",
                "Events given up on after the target's max_attempts",
            ),
            position: gauge(
                "userstate_delivery_position",
                "Position up to which every event of a target was delivered (or dead-lettered) by this node",
            ),
            leader: gauge(
                "userstate_delivery_leased",
                "1 while this node holds the target's delivery lease",
            ),
        };
        for c in [
            Box::new(this.delivered.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(this.failures.clone()),
            Box::new(this.dead_letters.clone()),
            Box::new(this.position.clone()),
            Box::new(this.leader.clone()),
        ] {
            // Registered once per registry; a second Delivery on one registry reuses them.
            let _ = metrics.registry().register(c);
        }
        this
    }
}

/// The running targets of one node.
pub struct Delivery {
    store: Arc<dyn EventStore>,
    options: DeliveryOptions,
    metrics: DeliveryMetrics,
    running: Mutex<HashMap<String, (Target, JoinHandle<()>)>>,
}

impl Delivery {
    /// Delivery from `store` (counted in `metrics`); no targets yet.
    pub fn new(store: Arc<dyn EventStore>, metrics: &Metrics, options: DeliveryOptions) -> Self {
        Self {
            store,
            options,
            metrics: DeliveryMetrics::new(metrics),
            running: Mutex::new(HashMap::new()),
        }
    }

    /// Runs exactly `targets`: starts the new ones, restarts the changed ones, stops the
    /// removed ones (releasing their leases), leaves the unchanged ones running.
    pub async fn apply(&self, targets: Vec<Target>) {
        let mut running = self.running.lock().await;
        let wanted: HashMap<String, Target> = targets
            .into_iter()
            .map(|t| (t.name().to_owned(), t))
            .collect();
        let names: Vec<String> = running.keys().cloned().collect();
        for name in names {
            if wanted.get(&name) != running.get(&name).map(|(t, _)| t) {
                if let Some((_, task)) = running.remove(&name) {
                    task.abort();
                    self.release(&name).await;
                    info!(target = %name, "delivery target stopped");
                }
            }
        }
        for (name, target) in wanted {
            if running.contains_key(&name) {
                continue;
            }
            let task = tokio::spawn(run_target(
                self.store.clone(),
                target.clone(),
                self.options.clone(),
                self.metrics.clone(),
            ));
            info!(target = %name, "delivery target started");
            running.insert(name, (target, task));
        }
    }

    /// Stops every target, releasing the leases so another node takes over at once.
    pub async fn stop(&self) {
        let mut running = self.running.lock().await;
        for (name, (_, task)) in running.drain() {
            task.abort();
            self.release(&name).await;
        }
    }

    async fn release(&self, name: &str) {
        self.metrics.leader.with_label_values(&[name]).set(0);
        if let Ok(checkpoint) = StoreCheckpoint::new(self.store.clone(), name, &self.options.node) {
            // A fresh checkpoint folds the stream: it releases only a lease this node holds.
            if let Err(e) = checkpoint.release().await {
                debug!(target = %name, error = %e, "could not release the delivery lease");
            }
        }
    }
}

/// One target, forever: lease, deliver, and back to the lease when it is lost.
async fn run_target(
    store: Arc<dyn EventStore>,
    target: Target,
    options: DeliveryOptions,
    metrics: DeliveryMetrics,
) {
    let name = target.name().to_owned();
    let checkpoint = match StoreCheckpoint::new(store.clone(), &name, &options.node) {
        Ok(c) => c.with_lease(options.lease),
        Err(e) => {
            warn!(target = %name, error = %e, "delivery target not started");
            return;
        }
    };
    let sink: Box<dyn Sink> = match &target {
        Target::Webhook(w) => Box::new(sink::Webhook::new(w.clone(), &options.node)),
        Target::Nats(n) => Box::new(sink::Nats::new(n.clone())),
    };
    let mut filter = Filter::public();
    if let Some(types) = target.types() {
        filter = filter.with_types(types.iter().cloned());
    }
    loop {
        match checkpoint.acquire().await {
            Ok(LeaseState::Held { position, .. }) => {
                metrics.leader.with_label_values(&[&name]).set(1);
                info!(target = %name, node = %options.node, position, "delivering");
                let run = Run {
                    store: &store,
                    checkpoint: &checkpoint,
                    target: &target,
                    metrics: &metrics,
                    filter: filter.clone(),
                };
                match run.deliver(position, &*sink).await {
                    Err(FeedError::LeaseLost { holder, .. }) => {
                        info!(target = %name, holder, "delivery lease lost to another node")
                    }
                    Err(e) => {
                        warn!(target = %name, error = %e, "delivery interrupted");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    Ok(()) => {}
                }
                metrics.leader.with_label_values(&[&name]).set(0);
            }
            Ok(LeaseState::Busy { holder, until }) => {
                debug!(target = %name, holder, %until, "another node delivers");
                let left = (until - chrono::Utc::now()).to_std().unwrap_or_default();
                // Look again when the lease may have ended (or its holder renewed it).
                tokio::time::sleep(left.clamp(Duration::from_millis(200), options.lease)).await;
            }
            Err(e) => {
                warn!(target = %name, error = %e, "cannot read the delivery checkpoint");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}
