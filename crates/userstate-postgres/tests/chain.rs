//! The hash chain on PostgreSQL (ADR 0020): computed under the position lock by every writer
//! of every process, so concurrent group commits from two stores still form one chain; and
//! rows changed, removed, inserted or swapped behind the store's back are named by position.

mod common;

use std::sync::Arc;

use userstate::chain::{self, Checkpoint};
use userstate::store::{EventMetadata, NewEvent};
use userstate::verify::{verify_store, verify_store_against, Report};
use userstate::{EventStore, ExpectedVersion, StreamId};
use userstate_postgres::PostgresStore;

/// Six single-event appends over three streams; positions 1..=6.
async fn seed(store: &PostgresStore) {
    for (i, s) in ["s-a", "s-b", "s-a", "s-c", "s-b", "s-a"]
        .iter()
        .enumerate()
    {
        let event = NewEvent::new(
            "test.happened",
            1,
            serde_json::json!({"n": i, "who": "alice"}),
            EventMetadata::default(),
        );
        store
            .append(
                &StreamId::new(*s).unwrap(),
                ExpectedVersion::Any,
                vec![event],
            )
            .await
            .unwrap();
    }
}

async fn sql(guard: &common::SchemaGuard, statements: &str) {
    let (client, connection) = tokio_postgres::connect(&guard.url, tokio_postgres::NoTls)
        .await
        .expect("admin connection");
    tokio::spawn(connection);
    client
        .batch_execute(&format!(
            "SET search_path TO {}; {statements}",
            guard.schema
        ))
        .await
        .expect("tampering statement");
}

fn chain_positions(report: &Report) -> Vec<u64> {
    report
        .findings
        .iter()
        .filter(|f| f.problem.contains("hash"))
        .filter_map(|f| f.position)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_of_two_stores_form_one_chain() {
    let Some((first, guard)) = common::fresh("chain_conc").await else {
        return;
    };
    let second = common::connect(common::builder(&guard.url, &guard.schema))
        .await
        .expect("second store");
    let stores = [Arc::new(first), Arc::new(second)];
    let mut tasks = Vec::new();
    for t in 0..16 {
        let store = stores[t % 2].clone();
        tasks.push(tokio::spawn(async move {
            let stream = StreamId::new(format!("s-{t}")).unwrap();
            let mut answered = Vec::new();
            for _ in 0..20 {
                let events = vec![
                    userstate::testkit::event("test.happened", 1),
                    userstate::testkit::event("test.happened", 2),
                ];
                answered.extend(
                    store
                        .append(&stream, ExpectedVersion::Any, events)
                        .await
                        .unwrap(),
                );
            }
            answered
        }));
    }
    let mut answered = Vec::new();
    for task in tasks {
        answered.extend(task.await.unwrap());
    }
    let report = verify_store(&*stores[0], |_| {}).await.unwrap();
    assert!(report.is_clean(), "{:?}", report.findings);
    assert_eq!(report.events, 640);
    // What each append answered is what a read returns, hash included.
    let read = stores[1].read_all(1, 1000).await.unwrap();
    answered.sort_by_key(|e| e.position);
    assert_eq!(answered, read);
}

#[tokio::test]
async fn a_changed_payload_is_named_by_position() {
    let Some((store, guard)) = common::fresh("chain_mod").await else {
        return;
    };
    seed(&store).await;
    assert!(verify_store(&store, |_| {}).await.unwrap().is_clean());
    sql(
        &guard,
        r#"UPDATE events SET payload = '{"n": 2, "who": "mallory"}' WHERE position = 3"#,
    )
    .await;
    let report = verify_store(&store, |_| {}).await.unwrap();
    assert_eq!(chain_positions(&report), vec![3], "{:?}", report.findings);
}

#[tokio::test]
async fn a_removed_row_is_named_where_the_chain_breaks() {
    let Some((store, guard)) = common::fresh("chain_del").await else {
        return;
    };
    seed(&store).await;
    sql(&guard, "DELETE FROM events WHERE position = 3").await;
    let report = verify_store(&store, |_| {}).await.unwrap();
    assert_eq!(chain_positions(&report), vec![4], "{:?}", report.findings);
    let first = report
        .findings
        .iter()
        .find(|f| f.position == Some(4))
        .unwrap();
    assert!(first.problem.contains("position 2"), "{first}");
}

#[tokio::test]
async fn an_inserted_row_is_named_by_position() {
    let Some((store, guard)) = common::fresh("chain_ins").await else {
        return;
    };
    seed(&store).await;
    sql(
        &guard,
        "UPDATE events SET position = position + 1000 WHERE position >= 3;
         UPDATE events SET position = position - 999 WHERE position > 1000;
         INSERT INTO events (instance, stream, sequence, position, created_at, type, revision,
                             payload, metadata, event_id, hash)
         SELECT instance, 'forged', 1, 3, created_at, type, revision, '{\"forged\": true}',
                metadata, gen_random_uuid(), hash
         FROM events WHERE position = 2",
    )
    .await;
    let report = verify_store(&store, |_| {}).await.unwrap();
    assert_eq!(
        chain_positions(&report).first(),
        Some(&3),
        "{:?}",
        report.findings
    );
}

#[tokio::test]
async fn two_swapped_rows_are_named_by_position() {
    let Some((store, guard)) = common::fresh("chain_swap").await else {
        return;
    };
    seed(&store).await;
    sql(
        &guard,
        "UPDATE events SET position = 1000 WHERE position = 3;
         UPDATE events SET position = 3 WHERE position = 4;
         UPDATE events SET position = 4 WHERE position = 1000;",
    )
    .await;
    let report = verify_store(&store, |_| {}).await.unwrap();
    // 3 and 4 moved; 5 chained to the event that was at 4.
    assert_eq!(
        chain_positions(&report),
        vec![3, 4, 5],
        "{:?}",
        report.findings
    );
}

#[tokio::test]
async fn a_signed_checkpoint_verifies_and_fails_after_one_changed_byte() {
    let Some((store, guard)) = common::fresh("chain_cp").await else {
        return;
    };
    seed(&store).await;
    let clean = verify_store(&store, |_| {}).await.unwrap();
    let key = chain::generate_key().unwrap();
    let checkpoint = Checkpoint::sign(&key, clean.head_position, clean.head_hash);
    let report = verify_store_against(&store, Some(&checkpoint), |_| {})
        .await
        .unwrap();
    assert!(report.checkpoint_proven, "{:?}", report.findings);
    // Appends after the checkpoint do not disturb it.
    seed(&store).await;
    let report = verify_store_against(&store, Some(&checkpoint), |_| {})
        .await
        .unwrap();
    assert!(
        report.checkpoint_proven && report.is_clean(),
        "{:?}",
        report.findings
    );

    sql(
        &guard,
        r#"UPDATE events SET payload = '{"n": 1, "who": "alicf"}' WHERE position = 2"#,
    )
    .await;
    let report = verify_store_against(&store, Some(&checkpoint), |_| {})
        .await
        .unwrap();
    assert!(!report.checkpoint_proven);
    assert_eq!(
        chain_positions(&report).first(),
        Some(&2),
        "{:?}",
        report.findings
    );
}

/// A database written before the chain (migrations 1 to 3) is chained once when a build with
/// migration 4 connects; appends then chain on from its head.
#[tokio::test]
async fn events_written_before_the_chain_are_chained_by_the_migration() {
    let Some((store, guard)) = common::fresh("chain_mig").await else {
        return;
    };
    seed(&store).await;
    drop(store);
    // Back to the schema of migration 3, rows and all.
    sql(
        &guard,
        &format!(
            "DROP FUNCTION append_batch(text[], text[], bigint[], int[], int[], int[], text[],
                 int[], jsonb[], jsonb[], uuid[], timestamptz[], bytea[], text);
             DROP FUNCTION chain_link(bytea, bigint, bigint, timestamptz, uuid, int, bytea);
             ALTER TABLE events DROP COLUMN hash;
             ALTER TABLE position_counter DROP COLUMN head_hash;
             DELETE FROM schema_migrations WHERE version = 4;
             {}",
            include_str!("../src/sql/migrations/0003_append_batch.sql")
        ),
    )
    .await;
    let store = common::connect(common::builder(&guard.url, &guard.schema))
        .await
        .expect("reconnect");
    let report = verify_store(&store, |_| {}).await.unwrap();
    assert!(report.is_clean(), "{:?}", report.findings);
    assert_eq!(report.head_position, 6);
    seed(&store).await;
    let report = verify_store(&store, |_| {}).await.unwrap();
    assert!(report.is_clean(), "{:?}", report.findings);
    assert_eq!(report.head_position, 12);
}
