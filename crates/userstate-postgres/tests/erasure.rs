//! Crypto-shredding on PostgreSQL (ADR 0021): through [`CryptoStore`] with the key table of
//! the store's schema, no personal string is in clear in any table; after `user.erased` the
//! key row is emptied, another node sharing the schema reads the user erased too, and the
//! lifecycle events stay. Skips without `USERSTATE_TEST_POSTGRES_URL`.

mod common;

use std::sync::Arc;

use serde_json::{json, Value};
use userstate::crypto::KeyStore;
use userstate::store::{EventMetadata, NewEvent};
use userstate::{CryptoStore, EventStore, ExpectedVersion, InstanceId, StreamId, UserId};

const PERSONAL: [&str; 4] = [
    "Zelda.Quixote-7F3",
    "zelda.quixote-7f3",
    "Gwendolyn-Q7x",
    "gwen.q7x@example.org",
];

fn event(event_type: &str, payload: Value) -> NewEvent {
    NewEvent::new(event_type, 1, payload, EventMetadata::default())
}

/// Every row of every table of `schema`, as text.
async fn dump(url: &str, schema: &str) -> String {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let tables = client
        .query(
            "SELECT table_name::text FROM information_schema.tables WHERE table_schema = $1",
            &[&schema],
        )
        .await
        .unwrap();
    assert!(tables.len() >= 3, "the schema's tables");
    let mut text = String::new();
    for table in tables {
        let name: String = table.get(0);
        for row in client
            .query(&format!("SELECT t::text FROM {schema}.{name} t"), &[])
            .await
            .unwrap()
        {
            text.push_str(&row.get::<_, String>(0));
            text.push('\n');
        }
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn personal_data_is_sealed_in_every_table_and_erased_with_its_key() {
    let Some((pg, guard)) = common::fresh("erase").await else {
        return;
    };
    let keys: Arc<dyn KeyStore> = Arc::new(pg.key_store().await.unwrap());
    let store: Arc<dyn EventStore> = Arc::new(CryptoStore::new(Arc::new(pg), keys.clone()));
    let instance = InstanceId::new("i").unwrap();
    let user = StreamId::user(&instance, &UserId::new("u1").unwrap());
    let name = StreamId::username(&instance, PERSONAL[0]).unwrap();
    let added = json!({"username": PERSONAL[0], "resourceOwner": "acme",
        "profile": {"givenName": PERSONAL[2]}, "email": {"email": PERSONAL[3]}});
    let reserved = event(
        "username.reserved",
        json!({"userId": "u1", "username": PERSONAL[0]}),
    );
    store
        .append(&name, ExpectedVersion::NoStream, vec![reserved])
        .await
        .unwrap();
    store
        .append(
            &user,
            ExpectedVersion::NoStream,
            vec![event("user.human.added", added.clone())],
        )
        .await
        .unwrap();
    store
        .append(
            &user,
            ExpectedVersion::Exact(1),
            vec![event("user.removed", json!({}))],
        )
        .await
        .unwrap();
    let tables = dump(&guard.url, &guard.schema).await;
    for personal in PERSONAL {
        assert!(!tables.contains(personal), "{personal} in clear:\n{tables}");
    }
    assert_eq!(store.read_stream(&user, 1).await.unwrap()[0].payload, added);

    // A second node on the same schema reads it too, until it reads the erasure.
    let other_pg = common::connect(common::builder(&guard.url, &guard.schema))
        .await
        .unwrap();
    let other_keys: Arc<dyn KeyStore> = Arc::new(other_pg.key_store().await.unwrap());
    assert_eq!(other_keys.username_secret(), keys.username_secret());
    let other: Arc<dyn EventStore> = Arc::new(CryptoStore::new(Arc::new(other_pg), other_keys));
    assert_eq!(other.read_stream(&user, 1).await.unwrap()[0].payload, added);

    store
        .append(
            &user,
            ExpectedVersion::Exact(2),
            vec![event("user.erased", json!({}))],
        )
        .await
        .unwrap();
    assert_eq!(keys.load("i:u1").await.unwrap(), None);
    assert!(
        keys.create("i:u1").await.is_err(),
        "a destroyed key came back"
    );
    for reader in [&store, &other] {
        let events = reader.read_all(1, 100).await.unwrap();
        let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
        assert_eq!(
            types,
            [
                "username.reserved",
                "user.human.added",
                "user.removed",
                "user.erased"
            ]
        );
        assert_eq!(
            events[1].payload,
            json!({"resourceOwner": "acme", "erased": true})
        );
        assert_eq!(events[0].payload, json!({"userId": "u1", "erased": true}));
    }
    let tables = dump(&guard.url, &guard.schema).await;
    assert!(
        tables.contains("(i:u1,)"),
        "the key row is emptied:\n{tables}"
    );
}
