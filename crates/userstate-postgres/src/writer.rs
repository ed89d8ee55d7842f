//! The group-commit writer: one task per store drains every pending append into one
//! transaction ([`crate::batch`]), so throughput is not one round trip per command.
//!
//! Failure handling, per batch:
//! - a unique violation (23505) or serialisation failure (40001) for the whole batch — another
//!   process wrote without our lock, or an event id was reused — re-runs the requests one by
//!   one, so each caller gets its own answer; a lone request gets
//!   [`StoreError::Conflict`] with the stream's real version;
//! - a lost connection *before* COMMIT was sent is retried on a fresh connection (nothing was
//!   committed);
//! - a lost connection *during* COMMIT leaves the outcome unknown: the writer takes the position
//!   lock on a fresh connection (which waits until the old transaction is over) and looks for
//!   the batch's first event id. Found: the batch committed and every caller gets its events.
//!   Not found: it is retried;
//! - when the deadline (the operation timeout) passes, every caller gets
//!   [`StoreError::Unavailable`].

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Object, Pool};
use tokio::sync::{mpsc, watch};
use tokio::time::{timeout_at, Instant};
use tracing::{debug, warn};
use userstate::{RecordedEvent, StoreError};
use uuid::Uuid;

use crate::batch::{transact, AppendRequest, Plan};
use crate::error::{classify, pool_error, share, store_error, timed_out, Failure};
use crate::rows::{stream_instance, to_i64};
use crate::sql::{LOCK_POSITION, STREAM_VERSION};

type Answers = Vec<Result<Vec<RecordedEvent>, StoreError>>;

/// How many times one batch is tried on a lost connection before its callers get
/// `Unavailable` (within the deadline).
const ATTEMPTS: u32 = 3;

/// The writer task's state.
pub(crate) struct Writer {
    pub(crate) pool: Pool,
    pub(crate) channel: String,
    pub(crate) head: watch::Sender<u64>,
    pub(crate) max_batch: usize,
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
    pub(crate) async fn run(self, mut requests: mpsc::Receiver<AppendRequest>) {
        let mut batch = Vec::with_capacity(self.max_batch);
        while requests.recv_many(&mut batch, self.max_batch).await > 0 {
            // Callers that gave up (timed out) are not written for.
            batch.retain(|r: &AppendRequest| !r.reply.is_closed());
            if batch.is_empty() {
                continue;
            }
            let answers = self.process(&batch).await;
            for (request, answer) in batch.drain(..).zip(answers) {
                let _ = request.reply.send(answer);
            }
        }
        debug!("writer stopped: store dropped");
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
            Err(e) => {
                let first = &batch[0];
                let error = Arc::new(self.final_error(first, e, deadline).await);
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
        let mut planned = None;
        let outcome = timeout_at(
            deadline,
            transact(&client, batch, &self.channel, &mut planned),
        )
        .await;
        let failure = match outcome {
            Ok(Ok(())) => {
                let plan = planned.ok_or_else(|| AttemptError::Fatal(lost_answer()))?;
                return Ok(self.publish(plan));
            }
            Ok(Err(e)) => {
                let failure = classify(&e);
                if failure != Failure::Conflict || e.code().is_none() {
                    // The session may be mid-transaction or dead: never hand it back.
                    drop(Object::take(client));
                }
                match (failure, planned) {
                    (Failure::Unavailable, Some(plan)) => {
                        return self.resolve(plan, deadline).await
                    }
                    (Failure::Conflict, _) => return Err(AttemptError::Conflict(e)),
                    (Failure::Unavailable, None) => {
                        AttemptError::Retry(store_error("appending", e))
                    }
                    _ => AttemptError::Fatal(store_error("appending", e)),
                }
            }
            Err(_) => {
                drop(Object::take(client));
                match planned {
                    Some(plan) => return self.resolve(plan, deadline).await,
                    None => AttemptError::Fatal(timed_out("append", self.timeout)),
                }
            }
        };
        Err(failure)
    }

    /// The COMMIT of `plan` was interrupted: did it happen?
    async fn resolve(&self, plan: Plan, deadline: Instant) -> Result<Answers, AttemptError> {
        let Some(first_event) = plan.first_event else {
            return Ok(plan.results);
        };
        match timeout_at(deadline, self.committed(first_event)).await {
            Ok(Ok(true)) => {
                debug!("interrupted commit did happen");
                Ok(self.publish(plan))
            }
            Ok(Ok(false)) => Err(AttemptError::Retry(StoreError::Unavailable {
                message: "the connection was lost before the append committed".into(),
                source: None,
            })),
            Ok(Err(e)) => Err(AttemptError::Fatal(e)),
            Err(_) => Err(AttemptError::Fatal(timed_out(
                "checking an interrupted commit",
                self.timeout,
            ))),
        }
    }

    async fn committed(&self, event: Uuid) -> Result<bool, StoreError> {
        let mut client = self.pool.get().await.map_err(pool_error)?;
        let err = |e| store_error("checking an interrupted commit", e);
        let tx = client.transaction().await.map_err(err)?;
        // Waits until the interrupted transaction, which held this lock, is over.
        tx.query_one(LOCK_POSITION, &[]).await.map_err(err)?;
        let found = tx
            .query_opt("SELECT 1 FROM events WHERE event_id = $1", &[&event])
            .await
            .map_err(err)?;
        tx.rollback().await.map_err(err)?;
        Ok(found.is_some())
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

    fn publish(&self, plan: Plan) -> Answers {
        if let Some(head) = plan.head {
            self.head.send_if_modified(|h| {
                let moved = *h < head;
                *h = (*h).max(head);
                moved
            });
            debug!(head = to_i64(head), "batch committed");
        }
        plan.results
    }
}

fn lost_answer() -> StoreError {
    StoreError::Backend {
        message: "the writer produced no answer for an append".into(),
        source: None,
    }
}
