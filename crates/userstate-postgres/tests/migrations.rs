//! Migrations run on connect: many processes starting at once on a new schema apply each
//! migration exactly once; connecting again changes nothing; an edited migration is refused.

mod common;

use userstate::StoreError;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_starts_apply_each_migration_once() {
    let Some(url) = common::url() else { return };
    let schema = common::unique_schema("mig");
    let _guard = common::SchemaGuard {
        url: url.clone(),
        schema: schema.clone(),
    };
    let starts: Vec<_> = (0..8)
        .map(|_| {
            let b = common::builder(&url, &schema);
            tokio::spawn(async move { b.connect().await })
        })
        .collect();
    for start in starts {
        start
            .await
            .expect("task")
            .expect("every concurrent start succeeds");
    }
    common::connect(common::builder(&url, &schema))
        .await
        .expect("connecting again");

    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("admin connection");
    tokio::spawn(connection);
    let rows = client
        .query(
            &format!("SELECT version FROM {schema}.schema_migrations ORDER BY version"),
            &[],
        )
        .await
        .expect("migration table");
    let versions: Vec<i32> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(versions, [1, 2, 3, 4, 5, 6, 7]);
    let counters: i64 = client
        .query_one(
            &format!("SELECT count(*) FROM {schema}.position_counter"),
            &[],
        )
        .await
        .expect("counter")
        .get(0);
    assert_eq!(counters, 1);

    client
        .execute(
            &format!("UPDATE {schema}.schema_migrations SET checksum = 'edited' WHERE version = 1"),
            &[],
        )
        .await
        .expect("tamper");
    match common::builder(&url, &schema).connect().await {
        Err(StoreError::Corrupt { .. }) => {}
        Err(other) => panic!("an edited migration must be Corrupt, got {other:?}"),
        Ok(_) => panic!("an edited migration must be refused"),
    }
}

#[tokio::test]
async fn bad_settings_are_invalid_arguments() {
    for schema in ["Bad", "a;b", "1x"] {
        let r = userstate_postgres::PostgresStore::builder("postgres://u@127.0.0.1/db")
            .schema(schema)
            .connect()
            .await;
        assert!(matches!(r, Err(StoreError::InvalidArgument(_))), "{schema}");
    }
}
