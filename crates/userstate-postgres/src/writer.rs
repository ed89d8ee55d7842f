//! The group-commit writer: one task per store drains every pending append into one
//! transaction ([`crate::batch`]), so throughput is not one round trip per command. A batch
//! takes pending requests in arrival order, at most one per stream; a second request for a
//! stream waits for the next batch, so per-stream order is kept and each request's version
//! check is independent of the others.
//!
//! Failure handling, per batch:
//! - a unique violation (23505), serialisation failure (40001) or deadlock (40P01) for the
//!   whole batch — e.g. a reused event id — re-runs the requests one by one, so each caller gets
//!   its own answer; the failing request gets [`StoreError::Conflict`] with the stream's real
//!   version;
//! - a lost connection before the pipeline was sent is retried on a fresh connection;
//! - a lost connection after it was sent leaves the outcome unknown: the writer takes the
//!   position lock on a fresh connection (which waits until the old transaction is over) and
//!   looks the batch's events up by id. Found: the batch committed and every caller gets its
//!   events. Not found: the batch is retried;
//! - when the deadline (the operation timeout) passes, every caller gets
//!   [`StoreError::Unavailable`].

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Object, Pool};
use tokio::sync::{mpsc, Semaphore};
use tokio::time::{timeout_at, Instant};
use tracing::{debug, warn};
use userstate::store::Watermark;
use userstate::{RecordedEvent, StoreError, StreamId};

use crate::batch::{committed_events, transact, Answers, AppendRequest};
use crate::error::{classify, pool_error, share, store_error, timed_out, Failure};
use crate::rows::stream_instance;
use crate::sql::STREAM_VERSION;
use crate::stats::Counters;

/// How many times one batch is tried on a lost connection before its callers get
/// `Unavailable` (within the deadline).
const ATTEMPTS: u32 = 3;

/// The writer task's state.
pub(crate) struct Writer {
    pub(crate) pool: Pool,
    pub(crate) channel: String,
    pub(crate) head: Arc<Watermark>,
    pub(crate) counters: Arc<Counters>,
    pub(crate) max_batch: usize,
    pub(crate) in_flight: usize,
    pub(crate) timeout: Duration,
}

/// Why one attempt at a batch failed.
enum AttemptError {
    /// 23505 / 40001 / 40P01 for the batch as a whole.
    Conflict(tokio_postgres::Error),
    /// Worth another attempt on a fresh connection.
    Retry(StoreError),
    /// Final for every caller in the batch.
    Fatal(StoreError),
}

impl Writer {
    /// Runs until every sender (the store) is gone.
    ///
    /// Up to `in_flight` batches run at once, each on its own connection. The second waits
    /// for the position lock inside PostgreSQL while the first commits, so the lock passes on
    /// without a client round trip; a stream is never in two running batches.
    pub(crate) async fn run(self: Arc<Self>, mut requests: mpsc::Receiver<AppendRequest>) {
        let slots = Arc::new(Semaphore::new(self.in_flight.max(1)));
        let (done_tx, mut done) = mpsc::unbounded_channel::<Vec<StreamId>>();
        let mut busy: HashSet<StreamId> = HashSet::new();
        let mut pending: VecDeque<AppendRequest> = VecDeque::new();
        let mut incoming = Vec::with_capacity(self.max_batch);
        let mut open = true;
        while open || !pending.is_empty() {
            if pending.is_empty() {
                tokio::select! {
                    n = requests.recv_many(&mut incoming, self.max_batch) => open = n > 0,
                    Some(streams) = done.recv() => release(&mut busy, streams),
                }
            }
            let permit = loop {
                tokio::select! {
                    biased;
                    Some(streams) = done.recv() => release(&mut busy, streams),
                    permit = slots.clone().acquire_owned() => break permit,
                }
            };
            while let Ok(streams) = done.try_recv() {
                release(&mut busy, streams);
            }
            pending.extend(incoming.drain(..));
            while let Ok(request) = requests.try_recv() {
                pending.push_back(request);
            }
            let batch = self.take_batch(&mut pending, &busy);
            if batch.is_empty() {
                drop(permit);
                if !pending.is_empty() {
                    // Everything pending waits for a running batch of the same stream.
                    if let Some(streams) = done.recv().await {
                        release(&mut busy, streams);
                    }
                }
                continue;
            }
            let streams: Vec<StreamId> = batch.iter().map(|r| r.stream.clone()).collect();
            busy.extend(streams.iter().cloned());
            let (writer, done_tx) = (self.clone(), done_tx.clone());
            tokio::spawn(async move {
                writer.commit(batch).await;
                let _ = done_tx.send(streams);
                drop(permit);
            });
        }
        debug!("writer stopped: store dropped");
    }

    /// Commits one batch and answers its callers.
    async fn commit(&self, batch: Vec<AppendRequest>) {
        let started = std::time::Instant::now();
        let answers = self.process(&batch).await;
        let events: u64 = answers
            .iter()
            .map(|a| a.as_ref().map_or(0, |r| r.len() as u64))
            .sum();
        let busy = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.counters.batch(batch.len(), events, events > 0, busy);
        for (request, answer) in batch.into_iter().zip(answers) {
            let _ = request.reply.send(answer);
        }
    }

    /// The next batch: pending requests in arrival order, at most one per stream and none for
    /// a stream in a running batch (those stay pending, ahead of later ones). Callers that gave
    /// up are dropped unwritten.
    fn take_batch(
        &self,
        pending: &mut VecDeque<AppendRequest>,
        busy: &HashSet<StreamId>,
    ) -> Vec<AppendRequest> {
        let mut batch = Vec::with_capacity(pending.len().min(self.max_batch));
        let mut streams = HashSet::with_capacity(batch.capacity());
        let mut deferred = VecDeque::new();
        for request in pending.drain(..) {
            if request.reply.is_closed() {
                continue;
            }
            if batch.len() < self.max_batch
                && !busy.contains(&request.stream)
                && streams.insert(request.stream.clone())
            {
                batch.push(request);
            } else {
                deferred.push_back(request);
            }
        }
        *pending = deferred;
        batch
    }

    async fn process(&self, batch: &[AppendRequest]) -> Answers {
        let deadline = Instant::now() + self.timeout;
        match self.with_retries(batch, deadline).await {
            Ok(answers) => answers,
            Err(AttemptError::Conflict(_)) if batch.len() > 1 => {
                debug!(
                    requests = batch.len(),
                    "batch conflicted; running its requests alone"
                );
                let mut answers = Vec::with_capacity(batch.len());
                for request in batch {
                    let single = std::slice::from_ref(request);
                    answers.push(match self.with_retries(single, deadline).await {
                        Ok(mut a) => a.pop().unwrap_or_else(|| Err(lost_answer())),
                        Err(e) => Err(self.final_error(request, e, deadline).await),
                    });
                }
                answers
            }
            Err(e) if batch.len() == 1 => vec![Err(self.final_error(&batch[0], e, deadline).await)],
            Err(e) => {
                let error = Arc::new(self.final_error(&batch[0], e, deadline).await);
                batch.iter().map(|_| Err(share(&error))).collect()
            }
        }
    }

    /// The answer for a request whose batch failed for good.
    async fn final_error(
        &self,
        request: &AppendRequest,
        e: AttemptError,
        deadline: Instant,
    ) -> StoreError {
        match e {
            AttemptError::Conflict(cause) => match self.version_of(request, deadline).await {
                Ok(actual) => StoreError::Conflict {
                    stream: request.stream.clone(),
                    expected: request.expected,
                    actual,
                },
                Err(_) => store_error("appending (conflict)", cause),
            },
            AttemptError::Retry(e) | AttemptError::Fatal(e) => e,
        }
    }

    async fn with_retries(
        &self,
        batch: &[AppendRequest],
        deadline: Instant,
    ) -> Result<Answers, AttemptError> {
        let mut attempt = 1;
        loop {
            match self.attempt(batch, deadline).await {
                Err(AttemptError::Retry(e)) if attempt < ATTEMPTS && Instant::now() < deadline => {
                    warn!(error = %e, attempt, "append batch failed; retrying on a fresh connection");
                    self.counters.retried();
                    tokio::time::sleep(Duration::from_millis(20 * u64::from(attempt))).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    async fn attempt(
        &self,
        batch: &[AppendRequest],
        deadline: Instant,
    ) -> Result<Answers, AttemptError> {
        let client = match timeout_at(deadline, self.pool.get()).await {
            Ok(Ok(client)) => client,
            Ok(Err(e)) => return Err(AttemptError::Retry(pool_error(e))),
            Err(_) => return Err(AttemptError::Fatal(timed_out("append", self.timeout))),
        };
        let mut sent = false;
        let outcome =
            timeout_at(deadline, transact(&client, batch, &self.channel, &mut sent)).await;
        let error = match outcome {
            Ok(Ok((answers, head))) => {
                if let Some(head) = head {
                    self.head.advance(head);
                }
                return Ok(answers);
            }
            Ok(Err(e)) => e,
            Err(_) => {
                drop(Object::take(client));
                return match sent {
                    true => self.resolve(batch).await,
                    false => Err(AttemptError::Fatal(timed_out("append", self.timeout))),
                };
            }
        };
        let failure = classify(&error);
        if failure != Failure::Conflict || error.code().is_none() {
            // The session may be mid-transaction or dead: never hand it back.
            drop(Object::take(client));
        }
        match failure {
            Failure::Unavailable if sent => self.resolve(batch).await,
            Failure::Unavailable => Err(AttemptError::Retry(store_error("appending", error))),
            Failure::Conflict => Err(AttemptError::Conflict(error)),
            Failure::InvalidData | Failure::Other => {
                Err(AttemptError::Fatal(store_error("appending", error)))
            }
        }
    }

    /// The COMMIT of `batch` was interrupted: did it happen? The batch is atomic, so either
    /// every accepted request's events exist or none do.
    async fn resolve(&self, batch: &[AppendRequest]) -> Result<Answers, AttemptError> {
        // A budget of its own: the batch's deadline may be what interrupted it.
        let deadline = Instant::now() + self.timeout;
        let check = async {
            let mut client = self.pool.get().await.map_err(pool_error)?;
            committed_events(&mut client, batch).await
        };
        let found = match timeout_at(deadline, check).await {
            Ok(Ok(found)) => found,
            Ok(Err(e)) => return Err(AttemptError::Fatal(e)),
            Err(_) => {
                return Err(AttemptError::Fatal(timed_out(
                    "checking an interrupted commit",
                    self.timeout,
                )))
            }
        };
        if found.is_empty() {
            return Err(AttemptError::Retry(StoreError::Unavailable {
                message: "the connection was lost before the append committed".into(),
                source: None,
            }));
        }
        debug!("an interrupted commit did happen");
        self.counters.recovered();
        let mut answers = Vec::with_capacity(batch.len());
        for request in batch {
            let recorded: Option<Vec<RecordedEvent>> = request
                .events
                .iter()
                .map(|e| found.get(&e.event_id).cloned())
                .collect();
            answers.push(match recorded {
                Some(recorded) => {
                    if let Some(last) = recorded.last() {
                        self.head.advance(last.position);
                    }
                    Ok(recorded)
                }
                // Refused in the committed batch: its conflict, with today's version.
                None => Err(StoreError::Conflict {
                    stream: request.stream.clone(),
                    expected: request.expected,
                    actual: self.version_of(request, deadline).await.unwrap_or(0),
                }),
            });
        }
        Ok(answers)
    }

    /// The stream's current version, for a conflict's `actual`.
    async fn version_of(
        &self,
        request: &AppendRequest,
        deadline: Instant,
    ) -> Result<u64, StoreError> {
        let query = async {
            let client = self.pool.get().await.map_err(pool_error)?;
            let err = |e| store_error("reading a stream version", e);
            let stmt = client.prepare_cached(STREAM_VERSION).await.map_err(err)?;
            let row = client
                .query_one(
                    &stmt,
                    &[&stream_instance(&request.stream), &request.stream.as_str()],
                )
                .await
                .map_err(err)?;
            let version: i64 = row.try_get(0).map_err(err)?;
            Ok(u64::try_from(version).unwrap_or(0))
        };
        timeout_at(deadline, query)
            .await
            .unwrap_or_else(|_| Err(timed_out("reading a stream version", self.timeout)))
    }
}

fn lost_answer() -> StoreError {
    StoreError::Backend {
        message: "the writer produced no answer for an append".into(),
        source: None,
    }
}

fn release(busy: &mut HashSet<StreamId>, streams: Vec<StreamId>) {
    for stream in streams {
        busy.remove(&stream);
    }
}
