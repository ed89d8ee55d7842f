//! Two `append_batch` calls on the same streams, from two sessions (two processes sharing one
//! database, or two batches in flight): the second waits for the position lock while the first
//! is uncommitted, and must then decide on the versions the first left — refuse a stale
//! expected version with the real one, place an unconditional append after the first's events
//! — never a unique violation, never a version read before the wait (ADR 0002: the versions
//! are read after the lock is taken; docs/PERFORMANCE.md, "Issue 29, session 14", tried
//! reading them before it).

mod common;

use std::time::{Duration, Instant};

use tokio_postgres::{Client, NoTls};

/// A connection to the test server with the schema of `guard` as its search path.
async fn client(guard: &common::SchemaGuard) -> Client {
    let (client, connection) = tokio_postgres::connect(&guard.url, NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    client
        .batch_execute(&format!("SET search_path TO {}", guard.schema))
        .await
        .expect("search path");
    client
}

/// `append_batch` with one-event-per-offset requests `(stream, expected, events)` on instance
/// `i`; answers `(request, actual, first position)` per request.
fn batch(requests: &[(&str, i64, i32)]) -> String {
    let list = |f: &dyn Fn(&(&str, i64, i32)) -> String| {
        requests.iter().map(f).collect::<Vec<_>>().join(", ")
    };
    let mut events = Vec::new();
    for (r, (_, _, n)) in requests.iter().enumerate() {
        events.extend((1..=*n).map(|k| (r + 1, k)));
    }
    let each = |v: &str| vec![v; events.len()].join(", ");
    format!(
        "SELECT o_request, o_actual, o_first_position FROM append_batch(
            ARRAY[{instances}]::text[], ARRAY[{streams}]::text[], ARRAY[{expected}]::bigint[],
            ARRAY[{counts}]::int[], ARRAY[{requests}]::int[], ARRAY[{offsets}]::int[],
            ARRAY[{types}]::text[], ARRAY[{revisions}]::int[], ARRAY[{payloads}]::jsonb[],
            ARRAY[{payloads}]::jsonb[], ARRAY[{ids}]::uuid[], ARRAY[{created}]::timestamptz[],
            ARRAY[{contents}]::bytea[], 'waiting_batch')",
        instances = list(&|_| "'i'".into()),
        streams = list(&|(s, _, _)| format!("'{s}'")),
        expected = list(&|(_, e, _)| e.to_string()),
        counts = list(&|(_, _, n)| n.to_string()),
        requests = events
            .iter()
            .map(|(r, _)| r.to_string())
            .collect::<Vec<_>>()
            .join(", "),
        offsets = events
            .iter()
            .map(|(_, k)| k.to_string())
            .collect::<Vec<_>>()
            .join(", "),
        types = each("'t'"),
        revisions = each("1"),
        payloads = each("'{}'"),
        ids = each("gen_random_uuid()"),
        created = each("NULL"),
        contents = each("'\\x00'"),
    )
}

/// The answer rows as `(request, actual, first position)`.
async fn answers(client: &Client, sql: &str) -> Vec<(i32, i64, Option<i64>)> {
    let rows = client.query(sql, &[]).await.expect("append_batch");
    rows.iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

#[tokio::test]
async fn a_batch_that_waited_for_the_lock_decides_on_the_versions_committed_meanwhile() {
    let Some((store, guard)) = common::fresh("waiting").await else {
        return;
    };
    drop(store);
    let (first, second) = (client(&guard).await, client(&guard).await);

    // The first batch holds the position lock, uncommitted: s at 1, t at 2.
    first.batch_execute("BEGIN").await.expect("begin");
    let held = answers(&first, &batch(&[("s", 0, 1), ("t", 0, 2)])).await;
    assert_eq!(held, [(1, 0, Some(1)), (2, 0, Some(2))]);

    // The second reads s and t at 0, then waits for the lock.
    let pid: i32 = second
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .expect("pid")
        .get(0);
    let waiting = tokio::spawn(async move {
        answers(&second, &batch(&[("s", 0, 1), ("t", -1, 1), ("u", 0, 1)])).await
    });
    let watcher = client(&guard).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let row = watcher
            .query_one(
                "SELECT coalesce(wait_event_type, '') FROM pg_stat_activity WHERE pid = $1",
                &[&pid],
            )
            .await
            .expect("pg_stat_activity");
        if row.get::<_, String>(0) == "Lock" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the second batch never waited for the lock"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    first.batch_execute("COMMIT").await.expect("commit");

    // s was written meanwhile: refused, with its real version. t: placed after the first
    // batch's two events. u: untouched, appended.
    let decided = waiting.await.expect("the second batch");
    assert_eq!(decided, [(1, 1, None), (2, 2, Some(4)), (3, 0, Some(5))]);
    let rows = watcher
        .query(
            "SELECT stream, sequence, position FROM events WHERE instance = 'i' ORDER BY position",
            &[],
        )
        .await
        .expect("events");
    let log: Vec<(String, i64, i64)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let expected = [
        ("s", 1, 1),
        ("t", 1, 2),
        ("t", 2, 3),
        ("t", 3, 4),
        ("u", 1, 5),
    ];
    assert_eq!(
        log,
        expected.map(|(s, q, p)| (s.to_owned(), q, p)),
        "positions gapless, sequences per stream gapless"
    );
}
