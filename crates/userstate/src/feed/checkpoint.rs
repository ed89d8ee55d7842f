//! Where a consumer keeps the position it has handled: the [`Checkpoint`] trait,
//! [`MemoryCheckpoint`], and [`StoreCheckpoint`] — kept in the store, with a lease (ADR 0018).

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use super::FeedError;
use crate::store::{EventMetadata, EventStore, ExpectedVersion, NewEvent, StoreError, StreamId};

/// How long a [`StoreCheckpoint`]'s lease lasts after each write unless renewed.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(15);
/// The longest target or node name accepted, in bytes.
const MAX_NAME: usize = 200;
const CHECKPOINTED: &str = "delivery.checkpointed";
const RELEASED: &str = "delivery.released";
const DEAD_LETTERED: &str = "delivery.dead-lettered";
/// How many dead letters a checkpoint keeps in memory (the stream keeps them all).
const KEPT_DEAD_LETTERS: usize = 1000;

/// Where a consumer keeps the position of the last event it handled, to resume after it.
///
/// ```
/// use userstate::feed::{Checkpoint, MemoryCheckpoint};
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let checkpoint = MemoryCheckpoint::default();
/// assert_eq!(checkpoint.load().await.unwrap(), 0);
/// checkpoint.save(42).await.unwrap();
/// assert_eq!(checkpoint.load().await.unwrap(), 42);
/// # });
/// ```
#[async_trait]
pub trait Checkpoint: Send + Sync {
    /// The position of the last event handled (0: none yet).
    async fn load(&self) -> Result<u64, FeedError>;
    /// Records that every event up to `position` was handled.
    async fn save(&self, position: u64) -> Result<(), FeedError>;
}

/// A checkpoint in memory: lost with the process (tests, consumers that start from the head).
#[derive(Debug, Default)]
pub struct MemoryCheckpoint(AtomicU64);

#[async_trait]
impl Checkpoint for MemoryCheckpoint {
    async fn load(&self) -> Result<u64, FeedError> {
        Ok(self.0.load(Ordering::SeqCst))
    }

    async fn save(&self, position: u64) -> Result<(), FeedError> {
        self.0.fetch_max(position, Ordering::SeqCst);
        Ok(())
    }
}

/// Who may deliver a target now, as [`StoreCheckpoint::acquire`] found it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseState {
    /// This node holds the lease; deliver after `position`.
    Held {
        /// The checkpoint: the last position delivered.
        position: u64,
        /// Until when, unless renewed.
        until: DateTime<Utc>,
    },
    /// Another node holds it until `until`.
    Busy {
        /// The node holding it.
        holder: String,
        /// Until when, unless renewed.
        until: DateTime<Utc>,
    },
}

/// What a checkpoint event records.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Record {
    node: String,
    position: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    lease_until: Option<DateTime<Utc>>,
}

/// An event a target gave up on after its attempts (it is skipped, and recorded here).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetter {
    /// The event's position.
    pub position: u64,
    /// The event's type.
    pub event_type: String,
    /// The attempts made.
    pub attempts: u32,
    /// The last failure.
    pub error: String,
    /// The node that gave up.
    pub node: String,
    /// When.
    pub at: DateTime<Utc>,
}

/// What a delivery stream says now (for `userstate delivery status`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CheckpointStatus {
    /// The last position delivered (or dead-lettered).
    pub position: u64,
    /// The node holding the lease and until when (it may have expired).
    pub holder: Option<(String, DateTime<Utc>)>,
    /// The most recent dead letters, oldest first.
    pub dead_letters: Vec<DeadLetter>,
}

/// The fold of a delivery stream.
#[derive(Clone, Debug, Default)]
struct Folded {
    version: u64,
    position: u64,
    holder: Option<(String, DateTime<Utc>)>,
    dead_letters: std::collections::VecDeque<DeadLetter>,
}

/// A delivery target's checkpoint kept in the store, in a stream of its own
/// (`delivery:*:{target}`), with a lease: one node at a time delivers the target.
///
/// Every write is an append with the exact expected version of the stream, so two nodes never
/// both believe they hold the lease: [`acquire`](Self::acquire) takes a free or expired lease
/// (or renews this node's), each [`save`](Checkpoint::save) records the position and extends
/// the lease by its length, and a write that finds another node's write first fails with
/// [`FeedError::LeaseLost`]. A holder delivers only while [`holds`](Self::holds) says so
/// (it stops a third of the lease before it ends, so clocks may differ by that much). An idle
/// target writes nothing: its lease runs out and whichever node sees work first takes it.
/// A checkpoint written per batch, not per event, keeps the stream small.
///
/// ```
/// use std::sync::Arc;
/// use userstate::feed::{Checkpoint, LeaseState, StoreCheckpoint};
/// use userstate::MemoryStore;
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let store = Arc::new(MemoryStore::new());
/// let a = StoreCheckpoint::new(store.clone(), "sink", "node-a").unwrap();
/// let b = StoreCheckpoint::new(store.clone(), "sink", "node-b").unwrap();
/// assert!(matches!(a.acquire().await.unwrap(), LeaseState::Held { position: 0, .. }));
/// a.save(7).await.unwrap();
/// assert!(matches!(b.acquire().await.unwrap(), LeaseState::Busy { .. }));
/// assert!(b.save(8).await.is_err(), "only the holder writes");
/// a.release().await.unwrap();
/// assert!(matches!(b.acquire().await.unwrap(), LeaseState::Held { position: 7, .. }));
/// # });
/// ```
pub struct StoreCheckpoint {
    store: Arc<dyn EventStore>,
    stream: StreamId,
    target: String,
    node: String,
    lease: Duration,
    state: Mutex<Folded>,
    /// The end of this node's lease in microseconds since the epoch ([`NOT_HELD`] when this
    /// node does not hold it), kept beside `state` so [`holds`](Self::holds) never waits for
    /// the lock: a delivery run asks it from futures it polls itself while it may be waiting
    /// for that lock, and a future parked on the lock that its own poller never polls again
    /// would stop the run for good (a "futurelock").
    held_until: AtomicI64,
}

/// [`StoreCheckpoint::held_until`] when this node does not hold the lease.
const NOT_HELD: i64 = i64::MIN;

impl std::fmt::Debug for StoreCheckpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreCheckpoint")
            .field("target", &self.target)
            .field("node", &self.node)
            .field("lease", &self.lease)
            .finish_non_exhaustive()
    }
}

fn check_name(what: &'static str, value: &str) -> Result<(), FeedError> {
    let reason = if value.is_empty() || value.len() > MAX_NAME {
        "must be 1 to 200 bytes"
    } else if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"_.@-".contains(&b))
    {
        "may hold only A-Z, a-z, 0-9 and _ . @ -"
    } else {
        return Ok(());
    };
    Err(FeedError::InvalidName {
        what,
        value: value.to_owned(),
        reason,
    })
}

impl StoreCheckpoint {
    /// The checkpoint of `target` in `store`, written by this `node` (names of
    /// `[A-Za-z0-9_.@-]`, 1 to 200 bytes), with the [`DEFAULT_LEASE`].
    pub fn new(store: Arc<dyn EventStore>, target: &str, node: &str) -> Result<Self, FeedError> {
        check_name("delivery target", target)?;
        check_name("node", node)?;
        Ok(Self {
            store,
            stream: StreamId::delivery(target),
            target: target.to_owned(),
            node: node.to_owned(),
            lease: DEFAULT_LEASE,
            state: Mutex::new(Folded::default()),
            held_until: AtomicI64::new(NOT_HELD),
        })
    }

    /// With a lease of `lease` (at least one second).
    pub fn with_lease(mut self, lease: Duration) -> Self {
        self.lease = lease.max(Duration::from_secs(1));
        self
    }

    /// The target's name.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// This node's name.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The lease's length.
    pub fn lease(&self) -> Duration {
        self.lease
    }

    /// Takes the lease when it is free, expired or already this node's (renewing it), else
    /// says who holds it. Reads only the stream's events this node has not seen.
    pub async fn acquire(&self) -> Result<LeaseState, FeedError> {
        let mut state = self.state.lock().await;
        self.refresh(&mut state).await?;
        let now = Utc::now();
        if let Some((holder, until)) = &state.holder {
            if *holder != self.node && *until > now {
                return Ok(LeaseState::Busy {
                    holder: holder.clone(),
                    until: *until,
                });
            }
        }
        let position = state.position;
        match self.write(&mut state, position, true).await {
            Ok(until) => Ok(LeaseState::Held { position, until }),
            Err(FeedError::LeaseLost { holder, .. }) => Ok(LeaseState::Busy {
                until: state.holder.as_ref().map_or(now, |(_, u)| *u),
                holder,
            }),
            Err(e) => Err(e),
        }
    }

    /// Whether this node holds the lease with at least a third of it left: a holder delivers
    /// only while this is true, and renews (saves) when half of it is gone. Never waits (a
    /// write in flight does not hold it up): it answers from the last lease read or written.
    pub fn holds(&self) -> bool {
        self.holds_for(self.lease / 3)
    }

    /// Whether the lease should be renewed now (held, less than half of it left). Never waits.
    pub fn renewal_due(&self) -> bool {
        !self.holds_for(self.lease / 2)
    }

    fn holds_for(&self, margin: Duration) -> bool {
        let until = self.held_until.load(Ordering::Acquire);
        let margin = i64::try_from(margin.as_micros()).unwrap_or(i64::MAX);
        until != NOT_HELD && Utc::now().timestamp_micros().saturating_add(margin) < until
    }

    /// Records who holds the lease now, in the fold and in `held_until`.
    fn set_holder(&self, state: &mut Folded, holder: Option<(String, DateTime<Utc>)>) {
        let until = match &holder {
            Some((node, until)) if *node == self.node => until.timestamp_micros(),
            _ => NOT_HELD,
        };
        self.held_until.store(until, Ordering::Release);
        state.holder = holder;
    }

    /// Gives the lease up (keeping the checkpoint), so another node can take over at once.
    /// Does nothing when this node does not hold it.
    pub async fn release(&self) -> Result<(), FeedError> {
        let mut state = self.state.lock().await;
        self.refresh(&mut state).await?;
        if !matches!(&state.holder, Some((h, _)) if *h == self.node) {
            return Ok(());
        }
        let position = state.position;
        self.write(&mut state, position, false).await.map(|_| ())
    }

    /// The checkpoint, the lease and the dead letters as the store has them now.
    pub async fn status(&self) -> Result<CheckpointStatus, FeedError> {
        let mut state = self.state.lock().await;
        self.refresh(&mut state).await?;
        Ok(CheckpointStatus {
            position: state.position,
            holder: state.holder.clone(),
            dead_letters: state.dead_letters.iter().cloned().collect(),
        })
    }

    /// Records that the event at `letter.position` was given up on (only the lease holder
    /// may: [`FeedError::LeaseLost`] otherwise). The caller then saves a checkpoint past it.
    pub async fn dead_letter(&self, letter: DeadLetter) -> Result<(), FeedError> {
        let mut state = self.state.lock().await;
        let event = NewEvent::new(
            DEAD_LETTERED,
            1,
            serde_json::to_value(&letter).expect("a dead letter is JSON"),
            EventMetadata {
                creator: self.node.clone(),
                ..EventMetadata::default()
            },
        );
        self.append(&mut state, event).await?;
        if state.dead_letters.len() == KEPT_DEAD_LETTERS {
            state.dead_letters.pop_front();
        }
        state.dead_letters.push_back(letter);
        Ok(())
    }

    /// Appends `event` with the folded version as the exact expected version; a conflict is
    /// [`FeedError::LeaseLost`] (after folding what won).
    async fn append(&self, state: &mut Folded, event: NewEvent) -> Result<(), FeedError> {
        let expected = ExpectedVersion::Exact(state.version);
        match self.store.append(&self.stream, expected, vec![event]).await {
            Ok(recorded) => {
                state.version = recorded.last().map_or(state.version, |e| e.sequence);
                Ok(())
            }
            Err(StoreError::Conflict { .. }) => {
                self.refresh(state).await?;
                let holder = state
                    .holder
                    .as_ref()
                    .map_or_else(String::new, |(h, _)| h.clone());
                Err(FeedError::LeaseLost {
                    target: self.target.clone(),
                    holder,
                })
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Folds the events of the stream after the version already folded.
    async fn refresh(&self, state: &mut Folded) -> Result<(), FeedError> {
        let events = self
            .store
            .read_stream(&self.stream, state.version + 1)
            .await?;
        for event in events {
            let corrupt = |e: serde_json::Error| FeedError::Corrupt {
                stream: self.stream.to_string(),
                sequence: event.sequence,
                reason: e.to_string(),
            };
            if event.event_type == DEAD_LETTERED {
                let letter: DeadLetter =
                    serde_json::from_value(event.payload.clone()).map_err(corrupt)?;
                state.version = event.sequence;
                if state.dead_letters.len() == KEPT_DEAD_LETTERS {
                    state.dead_letters.pop_front();
                }
                state.dead_letters.push_back(letter);
                continue;
            }
            let record: Record = serde_json::from_value(event.payload.clone()).map_err(corrupt)?;
            state.version = event.sequence;
            state.position = state.position.max(record.position);
            let holder = match (event.event_type.as_str(), record.lease_until) {
                (CHECKPOINTED, Some(until)) => Some((record.node, until)),
                _ => None,
            };
            self.set_holder(state, holder);
        }
        Ok(())
    }

    /// Appends a checkpoint at `position` (leased for another lease length when `lease`,
    /// released otherwise) with the folded version as the exact expected version. Returns the
    /// lease's end.
    async fn write(
        &self,
        state: &mut Folded,
        position: u64,
        lease: bool,
    ) -> Result<DateTime<Utc>, FeedError> {
        let until = Utc::now() + chrono::Duration::from_std(self.lease).unwrap_or_default();
        let record = Record {
            node: self.node.clone(),
            position,
            lease_until: lease.then_some(until),
        };
        let event = NewEvent::new(
            if lease { CHECKPOINTED } else { RELEASED },
            1,
            serde_json::to_value(&record).expect("a record is JSON"),
            EventMetadata {
                creator: self.node.clone(),
                ..EventMetadata::default()
            },
        );
        self.append(state, event).await?;
        state.position = state.position.max(position);
        self.set_holder(state, lease.then(|| (self.node.clone(), until)));
        Ok(until)
    }
}

#[async_trait]
impl Checkpoint for StoreCheckpoint {
    /// The checkpoint as the store has it now.
    async fn load(&self) -> Result<u64, FeedError> {
        let mut state = self.state.lock().await;
        self.refresh(&mut state).await?;
        Ok(state.position)
    }

    /// Records `position` and renews the lease; [`FeedError::LeaseLost`] when another node
    /// holds the lease or wrote first (then stop delivering).
    async fn save(&self, position: u64) -> Result<(), FeedError> {
        let mut state = self.state.lock().await;
        if let Some((holder, until)) = &state.holder {
            if *holder != self.node && *until > Utc::now() {
                return Err(FeedError::LeaseLost {
                    target: self.target.clone(),
                    holder: holder.clone(),
                });
            }
        }
        if state.holder.is_none() {
            // Never acquired (or released): a save must not take a lease another node holds.
            self.refresh(&mut state).await?;
            if let Some((holder, until)) = &state.holder {
                if *holder != self.node && *until > Utc::now() {
                    return Err(FeedError::LeaseLost {
                        target: self.target.clone(),
                        holder: holder.clone(),
                    });
                }
            }
        }
        self.write(&mut state, position, true).await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryStore;
    use proptest::prelude::*;
    use std::collections::HashSet;

    #[derive(Clone, Copy, Debug)]
    enum Op {
        Acquire,
        Save(u64),
        Release,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            Just(Op::Acquire),
            (1u64..1000).prop_map(Op::Save),
            Just(Op::Release),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Three nodes contending for one target's lease, each step's operations run at once
        /// on a multi-threaded runtime: at most one node ever believes it holds the lease, and
        /// it is the holder the store has; in a step, a second node wins only after a winner
        /// released; the checkpoint is the highest position any holder saved.
        #[test]
        fn one_node_holds_the_lease_whatever_the_contenders_do(
            steps in proptest::collection::vec(proptest::collection::vec((0usize..3, op()), 1..4), 1..25),
        ) {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let store: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
                let lease = Duration::from_secs(60);
                let nodes: Vec<Arc<StoreCheckpoint>> = (0..3)
                    .map(|i| {
                        Arc::new(
                            StoreCheckpoint::new(store.clone(), "t", &format!("n{i}"))
                                .unwrap()
                                .with_lease(lease),
                        )
                    })
                    .collect();
                let observer = StoreCheckpoint::new(store.clone(), "t", "observer").unwrap();
                let mut saved = 0;
                for step in steps {
                    let mut running = tokio::task::JoinSet::new();
                    for (who, op) in step {
                        let node = nodes[who].clone();
                        running.spawn(async move {
                            let won = match op {
                                Op::Acquire => matches!(node.acquire().await.unwrap(), LeaseState::Held { .. }),
                                Op::Save(p) => node.save(p).await.is_ok(),
                                Op::Release => {
                                    node.release().await.unwrap();
                                    false
                                }
                            };
                            (who, op, won)
                        });
                    }
                    let mut winners = HashSet::new();
                    let mut releases = 0;
                    while let Some(done) = running.join_next().await {
                        let (who, op, won) = done.unwrap();
                        match (op, won) {
                            (Op::Save(p), true) => {
                                saved = saved.max(p);
                                winners.insert(who);
                            }
                            (Op::Acquire, true) => {
                                winners.insert(who);
                            }
                            (Op::Release, _) => releases += 1,
                            _ => {}
                        }
                    }
                    prop_assert!(winners.len() <= 1 + releases, "{winners:?} won with {releases} releases");
                    let mut holding = Vec::new();
                    for (i, n) in nodes.iter().enumerate() {
                        if n.holds() {
                            holding.push(i);
                        }
                    }
                    prop_assert!(holding.len() <= 1, "{holding:?} all believe they hold the lease");
                    let status = observer.status().await.unwrap();
                    let in_store = status
                        .holder
                        .filter(|(_, until)| *until > Utc::now())
                        .map(|(h, _)| h);
                    prop_assert_eq!(in_store, holding.first().map(|i| format!("n{i}")));
                    prop_assert_eq!(status.position, saved);
                }
                Ok(())
            })?;
        }
    }
}
