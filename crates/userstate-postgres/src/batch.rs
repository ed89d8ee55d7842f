//! One group-commit transaction: check every request of a batch against the stream versions,
//! insert the accepted events, commit once.
//!
//! The transaction first locks the one-row `position_counter` (`lock_position.sql`). Every
//! writer of every process does the same, so while it holds the lock no other append can commit:
//! the versions it reads are exact, and the positions it hands out follow the counter in commit
//! order (docs/adr/0002-postgres-positions.md). Requests are checked in arrival order against the
//! versions *as the batch leaves them*, so two requests for one stream in one batch behave
//! exactly as if they had been sent one after the other: each caller's conflict fails only that
//! caller.

use std::collections::HashMap;

use chrono::{DateTime, SubsecRound, Utc};
use deadpool_postgres::Object;
use futures_util::future::{join, join3};
use tokio::sync::oneshot;
use userstate::store::NewEvent;
use userstate::{ExpectedVersion, RecordedEvent, StoreError, StreamId};
use uuid::Uuid;

use crate::rows::{stream_instance, to_i64};
use crate::sql::{INSERT_EVENTS, LOCK_POSITION, STREAM_VERSIONS};

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

/// What a batch decided, known before its COMMIT is sent.
pub(crate) struct Plan {
    /// One answer per request, in request order.
    pub(crate) results: Vec<Result<Vec<RecordedEvent>, StoreError>>,
    /// The head after the batch, when it appends anything.
    pub(crate) head: Option<u64>,
    /// The id of the first accepted event: finding it tells whether an interrupted COMMIT
    /// happened (the batch is atomic).
    pub(crate) first_event: Option<Uuid>,
}

/// Columns of the accepted events, as `insert_events.sql` takes them.
#[derive(Default)]
struct Columns<'a> {
    instances: Vec<&'a str>,
    streams: Vec<&'a str>,
    sequences: Vec<i64>,
    positions: Vec<i64>,
    types: Vec<&'a str>,
    revisions: Vec<i32>,
    payloads: Vec<&'a serde_json::Value>,
    metadata: Vec<serde_json::Value>,
    ids: Vec<Uuid>,
    created: Vec<DateTime<Utc>>,
}

/// Runs the batch's transaction on `client`. Before COMMIT is sent, `planned` receives the
/// plan: if the call then fails (or is cancelled) with `planned` set, the outcome is unknown
/// and the caller must find out whether the commit happened.
pub(crate) async fn transact(
    client: &Object,
    batch: &[AppendRequest],
    channel: &str,
    planned: &mut Option<Plan>,
) -> Result<(), tokio_postgres::Error> {
    let lock = client.prepare_cached(LOCK_POSITION).await?;
    let versions_stmt = client.prepare_cached(STREAM_VERSIONS).await?;
    let insert = client.prepare_cached(INSERT_EVENTS).await?;

    let mut keys: Vec<(&str, &str)> = batch
        .iter()
        .map(|r| (stream_instance(&r.stream), r.stream.as_str()))
        .collect();
    keys.sort_unstable();
    keys.dedup();
    let (key_instances, key_streams): (Vec<&str>, Vec<&str>) = keys.into_iter().unzip();

    // One round trip: BEGIN, take the lock, then (in a snapshot taken after the lock) read the
    // versions. PostgreSQL runs pipelined statements in order.
    let (begun, locked, versions) = join3(
        client.batch_execute("BEGIN"),
        client.query_one(&lock, &[]),
        client.query(&versions_stmt, &[&key_instances, &key_streams]),
    )
    .await;
    let aborted = begun.and(locked).and_then(|locked| Ok((locked, versions?)));
    let (locked, versions) = match aborted {
        Ok(ok) => ok,
        Err(e) => {
            let _ = client.batch_execute("ROLLBACK").await;
            return Err(e);
        }
    };
    let base: i64 = locked.try_get(0)?;
    let now: DateTime<Utc> = locked.try_get(1)?;
    let mut current: HashMap<String, u64> = HashMap::with_capacity(versions.len());
    for row in &versions {
        let version: i64 = row.try_get(2)?;
        current.insert(row.try_get(1)?, u64::try_from(version).unwrap_or(0));
    }

    let mut next_position = u64::try_from(base).unwrap_or(0) + 1;
    let mut columns = Columns::default();
    let mut results = Vec::with_capacity(batch.len());
    for request in batch {
        let actual = current.get(request.stream.as_str()).copied().unwrap_or(0);
        if !request.expected.matches(actual) {
            results.push(Err(StoreError::Conflict {
                stream: request.stream.clone(),
                expected: request.expected,
                actual,
            }));
            continue;
        }
        let mut recorded = Vec::with_capacity(request.events.len());
        for (i, event) in request.events.iter().enumerate() {
            let sequence = actual + 1 + i as u64;
            columns.instances.push(stream_instance(&request.stream));
            columns.streams.push(request.stream.as_str());
            columns.sequences.push(to_i64(sequence));
            columns.positions.push(to_i64(next_position));
            columns.types.push(&event.event_type);
            columns.revisions.push(i32::from(event.revision));
            columns.payloads.push(&event.payload);
            columns
                .metadata
                .push(serde_json::to_value(&event.metadata).unwrap_or(serde_json::Value::Null));
            columns.ids.push(event.event_id);
            // PostgreSQL keeps microseconds: answer what a read will return.
            let created_at = event.created_at.unwrap_or(now).trunc_subsecs(6);
            columns.created.push(created_at);
            let mut event = event.clone();
            event.created_at = Some(created_at);
            recorded.push(RecordedEvent::record(
                request.stream.clone(),
                sequence,
                next_position,
                now,
                event,
            ));
            next_position += 1;
        }
        current.insert(
            request.stream.to_string(),
            actual + request.events.len() as u64,
        );
        results.push(Ok(recorded));
    }

    let Some(&first_event) = columns.ids.first() else {
        // Every request conflicted: nothing to write.
        client.batch_execute("ROLLBACK").await?;
        *planned = Some(Plan {
            results,
            head: None,
            first_event: None,
        });
        return Ok(());
    };
    let head = to_i64(next_position - 1);
    *planned = Some(Plan {
        results,
        head: Some(next_position - 1),
        first_event: Some(first_event),
    });
    let c = &columns;
    let (inserted, committed) = join(
        client.query(
            &insert,
            &[
                &c.instances,
                &c.streams,
                &c.sequences,
                &c.positions,
                &c.types,
                &c.revisions,
                &c.payloads,
                &c.metadata,
                &c.ids,
                &head,
                &c.created,
                &channel,
            ],
        ),
        // Pipelined: if the INSERT fails, PostgreSQL answers this COMMIT with a ROLLBACK.
        client.batch_execute("COMMIT"),
    )
    .await;
    if let Err(e) = inserted {
        if e.code().is_some() {
            // A statement error: the transaction rolled back, nothing is committed.
            *planned = None;
        }
        return Err(e);
    }
    committed
}
