//! One group-commit transaction: `BEGIN; SELECT append_batch(…); COMMIT`, pipelined in one
//! round trip.
//!
//! The server-side function (`sql/migrations/0003_append_batch.sql`) first locks the one-row
//! `position_counter`. Every writer of every process does the same, so while it holds the lock
//! no other append can commit: the versions it reads are exact, and the positions it hands out
//! follow the counter in commit order (docs/adr/0002-postgres-positions.md). A batch holds at
//! most one request per stream (the writer defers the others to the next batch), so each
//! request is checked on its own and a conflict fails only its caller.

use std::collections::HashMap;

use chrono::{DateTime, SubsecRound, Utc};
use deadpool_postgres::Object;
use futures_util::future::join3;
use tokio::sync::oneshot;
use userstate::chain;
use userstate::store::NewEvent;
use userstate::{ExpectedVersion, RecordedEvent, StoreError, StreamId};
use uuid::Uuid;

use crate::rows::{decode_event, stream_instance, to_i64};
use crate::sql::{APPEND_BATCH, EVENTS_BY_ID};

/// One caller's append, waiting in the writer's queue.
pub(crate) struct AppendRequest {
    /// The stream appended to.
    pub(crate) stream: StreamId,
    /// The version the caller expects.
    pub(crate) expected: ExpectedVersion,
    /// The events, in order; never empty.
    pub(crate) events: Vec<NewEvent>,
    /// Where the caller waits for its answer.
    pub(crate) reply: oneshot::Sender<Result<Vec<RecordedEvent>, StoreError>>,
}

/// One answer per request, in request order.
pub(crate) type Answers = Vec<Result<Vec<RecordedEvent>, StoreError>>;

/// `append_batch`'s parameters, as parallel arrays.
#[derive(Default)]
struct Params<'a> {
    instances: Vec<&'a str>,
    streams: Vec<&'a str>,
    expected: Vec<i64>,
    counts: Vec<i32>,
    requests: Vec<i32>,
    offsets: Vec<i32>,
    types: Vec<&'a str>,
    revisions: Vec<i32>,
    payloads: Vec<&'a serde_json::Value>,
    metadata: Vec<serde_json::Value>,
    ids: Vec<Uuid>,
    created: Vec<Option<DateTime<Utc>>>,
    /// Each event's chain content digest (ADR 0020), computed here, outside the lock.
    contents: Vec<Vec<u8>>,
}

fn params(batch: &[AppendRequest]) -> Params<'_> {
    let mut p = Params::default();
    for (r, request) in batch.iter().enumerate() {
        p.instances.push(stream_instance(&request.stream));
        p.streams.push(request.stream.as_str());
        p.expected.push(match request.expected {
            ExpectedVersion::Any => -1,
            ExpectedVersion::NoStream => 0,
            ExpectedVersion::Exact(n) => to_i64(n),
        });
        p.counts
            .push(i32::try_from(request.events.len()).unwrap_or(i32::MAX));
        for (k, event) in request.events.iter().enumerate() {
            p.requests.push(i32::try_from(r + 1).unwrap_or(i32::MAX));
            p.offsets.push(i32::try_from(k + 1).unwrap_or(i32::MAX));
            p.types.push(&event.event_type);
            p.revisions.push(i32::from(event.revision));
            p.payloads.push(&event.payload);
            p.metadata
                .push(serde_json::to_value(&event.metadata).unwrap_or_default());
            p.ids.push(event.event_id);
            // Whole microseconds, as PostgreSQL keeps them: the chain hashes what is stored.
            p.created.push(event.created_at.map(|t| t.trunc_subsecs(6)));
            p.contents.push(
                chain::content_digest(
                    request.stream.as_str(),
                    &event.event_type,
                    &event.metadata,
                    &event.payload,
                )
                .0
                .to_vec(),
            );
        }
    }
    p
}

/// Runs the batch's transaction on `client`. `sent` becomes true once COMMIT may have reached
/// the server: if the call then fails with a lost connection, the outcome is unknown
/// ([`committed_events`] finds out).
pub(crate) async fn transact(
    client: &Object,
    batch: &[AppendRequest],
    channel: &str,
    sent: &mut bool,
) -> Result<(Answers, Option<u64>), tokio_postgres::Error> {
    let stmt = client.prepare_cached(APPEND_BATCH).await?;
    let p = params(batch);
    *sent = true;
    let (begun, rows, committed) = join3(
        // READ COMMITTED whatever the server's default: each statement of append_batch() must
        // see what committed before the position lock was granted.
        client.batch_execute("BEGIN ISOLATION LEVEL READ COMMITTED"),
        client.query(
            &stmt,
            &[
                &p.instances,
                &p.streams,
                &p.expected,
                &p.counts,
                &p.requests,
                &p.offsets,
                &p.types,
                &p.revisions,
                &p.payloads,
                &p.metadata,
                &p.ids,
                &p.created,
                &p.contents,
                &channel,
            ],
        ),
        // Pipelined: if the call fails, PostgreSQL answers this COMMIT with a ROLLBACK.
        client.batch_execute("COMMIT"),
    )
    .await;
    let rows = match begun.and(rows) {
        Ok(rows) => rows,
        Err(e) => {
            if e.code().is_some() {
                // A statement error: the transaction rolled back, nothing is committed.
                *sent = false;
            }
            return Err(e);
        }
    };
    committed?;

    let mut answers = Vec::with_capacity(batch.len());
    let mut head = None;
    for (request, row) in batch.iter().zip(&rows) {
        let actual: i64 = row.try_get(1)?;
        let actual = u64::try_from(actual).unwrap_or(0);
        let first: Option<i64> = row.try_get(2)?;
        let now: DateTime<Utc> = row.try_get(3)?;
        let hashes: Option<Vec<Vec<u8>>> = row.try_get(4)?;
        let Some(first) = first.and_then(|f| u64::try_from(f).ok()) else {
            answers.push(Err(StoreError::Conflict {
                stream: request.stream.clone(),
                expected: request.expected,
                actual,
            }));
            continue;
        };
        let recorded: Vec<RecordedEvent> = request
            .events
            .iter()
            .enumerate()
            .map(|(k, event)| {
                let mut event = event.clone();
                // PostgreSQL keeps microseconds: answer what a read will return.
                event.created_at = Some(event.created_at.unwrap_or(now).trunc_subsecs(6));
                let hash = hashes
                    .as_ref()
                    .and_then(|h| h.get(k))
                    .map(|h| crate::rows::event_hash(h))
                    .unwrap_or_default();
                let k = k as u64;
                let mut recorded = RecordedEvent::record(
                    request.stream.clone(),
                    actual + 1 + k,
                    first + k,
                    now,
                    event,
                );
                recorded.hash = hash;
                recorded
            })
            .collect();
        head = recorded.last().map(|e| e.position).max(head);
        answers.push(Ok(recorded));
    }
    if answers.len() != batch.len() {
        // append_batch returns one row per request; anything else is a server-side bug.
        answers = batch
            .iter()
            .map(|_| {
                Err(StoreError::Backend {
                    message: format!(
                        "append_batch answered {} rows for {} requests",
                        rows.len(),
                        batch.len()
                    ),
                    source: None,
                })
            })
            .collect();
    }
    Ok((answers, head))
}

/// After an interrupted COMMIT: waits for the interrupted transaction to end (by taking the
/// position lock it held) and returns which of the batch's events exist, by event id.
pub(crate) async fn committed_events(
    client: &mut Object,
    batch: &[AppendRequest],
) -> Result<HashMap<Uuid, RecordedEvent>, StoreError> {
    let err = |e| crate::error::store_error("checking an interrupted commit", e);
    let ids: Vec<Uuid> = batch
        .iter()
        .flat_map(|r| r.events.iter().map(|e| e.event_id))
        .collect();
    let tx = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::ReadCommitted)
        .start()
        .await
        .map_err(err)?;
    tx.query_one(crate::sql::LOCK_POSITION, &[])
        .await
        .map_err(err)?;
    let rows = tx.query(EVENTS_BY_ID, &[&ids]).await.map_err(err)?;
    tx.rollback().await.map_err(err)?;
    rows.iter()
        .map(|row| decode_event(row).map(|e| (e.event_id, e)))
        .collect()
}
