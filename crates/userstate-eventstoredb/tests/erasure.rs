//! Crypto-shredding on KurrentDB (ADR 0021), against the protocol test server, with two
//! "nodes" (two clients, two key-store caches) on one server: the keys live in key streams of
//! the server, so a key made on node A opens on node B; personal data is never in clear in the
//! server's stored bytes; after an erasure on A, B reads the user as erased once it reads the
//! `user.erased` (it forgets its cached key), the key is gone from the server's stored bytes
//! after a scavenge, the lifecycle history stays, and the chain still verifies.

#[allow(dead_code)]
mod support;

use std::sync::Arc;

use base64::Engine as _;

use support::server::TestServer;
use userstate::crypto::KeyStore;
use userstate::domain::{Email, Profile};
use userstate::verify::verify_store;
use userstate::{
    AddUser, Context, CryptoStore, Engine, EventStore, InstanceId, OrgId, Principal, StreamId,
    UserCommand, UserId,
};
use userstate_eventstoredb::{EsdbKeyStore, EsdbStore};

/// The personal strings of the user (and the canonical form of its username).
const PERSONAL: [&str; 5] = [
    "Zelda.Quixote-7F3",
    "zelda.quixote-7f3",
    "Gwendolyn-Q7x",
    "Fitzwilliam-K2p",
    "gwen.q7x@example.org",
];

struct Node {
    raw: Arc<EsdbStore>,
    keys: Arc<EsdbKeyStore>,
    store: Arc<dyn EventStore>,
}

async fn node(server: &TestServer) -> Node {
    let raw = Arc::new(EsdbStore::connect(&server.url()).await.unwrap());
    let keys = Arc::new(raw.key_store().await.unwrap());
    let store: Arc<dyn EventStore> = Arc::new(CryptoStore::new(raw.clone(), keys.clone()));
    Node { raw, keys, store }
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    let haystack = String::from_utf8_lossy(haystack).to_lowercase();
    haystack.contains(&needle.to_lowercase())
}

async fn exported(store: &dyn EventStore) -> String {
    let mut out = Vec::new();
    userstate::transfer::export_jsonl(store, &mut out, |_| {})
        .await
        .unwrap();
    String::from_utf8(out).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_shared_by_the_nodes_and_an_erasure_forgets_everywhere() {
    let server = TestServer::start();
    let (a, b) = (node(&server).await, node(&server).await);
    assert_eq!(
        a.keys.username_secret(),
        b.keys.username_secret(),
        "one username secret per namespace"
    );
    let instance = InstanceId::new("i").unwrap();
    let ctx = Context::new(Principal::system("admin", instance.clone()));
    let id = UserId::new("u1").unwrap();
    let engine_a = Engine::new(a.store.clone());
    engine_a
        .execute(
            &ctx,
            UserCommand::Add(AddUser {
                user_id: id.clone(),
                username: PERSONAL[0].into(),
                organization: OrgId::new("o").unwrap(),
                profile: Some(Profile {
                    given_name: PERSONAL[2].into(),
                    family_name: PERSONAL[3].into(),
                }),
                email: Some(Email {
                    email: PERSONAL[4].into(),
                    is_verified: false,
                }),
                initial: false,
            }),
        )
        .await
        .unwrap();
    let stream = StreamId::user(&instance, &id);

    // Sealed in the server; node B opens what node A sealed.
    let raw = server.log().raw_bytes();
    for s in PERSONAL {
        assert!(!contains(&raw, s), "{s} in clear in the server's bytes");
    }
    let on_b = b.store.read_stream(&stream, 1).await.unwrap();
    assert_eq!(on_b[0].payload["email"]["email"], PERSONAL[4]);
    assert!(
        matches!(b.keys.cached("i:u1"), Some(Some(_))),
        "B cached the key"
    );

    // The key as its key stream holds it (base64).
    let key = a.keys.load("i:u1").await.unwrap().expect("the user's key");
    let key_text = base64::engine::general_purpose::STANDARD.encode(key.0);
    engine_a
        .execute(&ctx, UserCommand::Remove(id.clone()))
        .await
        .unwrap();
    engine_a
        .execute(&ctx, UserCommand::Erase(id.clone()))
        .await
        .unwrap();
    assert_eq!(a.keys.load("i:u1").await.unwrap(), None);
    assert!(
        a.keys.create("i:u1").await.is_err(),
        "a destroyed key came back"
    );

    // B reads the erasure and forgets the key it had cached; a fresh load finds none.
    let history = b.store.read_stream(&stream, 1).await.unwrap();
    let types: Vec<&str> = history.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(types, ["user.human.added", "user.removed", "user.erased"]);
    assert_eq!(history[0].payload["erased"], true);
    assert_eq!(b.keys.cached("i:u1"), Some(None));
    let all = b.store.read_all(1, 100).await.unwrap();
    let everything = serde_json::to_string(&all).unwrap()
        + &exported(&*b.store).await
        + &exported(&*b.raw).await;
    for s in PERSONAL {
        assert!(!contains(everything.as_bytes(), s), "{s} after erasure");
    }

    // The key's bytes leave the server's files once it scavenges (the key stream's
    // tombstone stays, as in KurrentDB: it holds the stream's name, not the key).
    let before = server.log().raw_bytes();
    assert!(
        contains(&before, &key_text),
        "until scavenged the key is on disk"
    );
    server.log().scavenge();
    let after = server.log().raw_bytes();
    assert!(
        !contains(&after, &key_text),
        "the key stream's events were scavenged"
    );
    for s in PERSONAL {
        assert!(!contains(&after, s), "{s} in clear after erasure");
    }

    // The lifecycle history stays, and the chain verifies.
    let report = verify_store(&*a.raw, |_| {}).await.unwrap();
    assert!(report.is_clean(), "{:?}", report.findings);
    assert_eq!(
        report.events, 5,
        "reserved, added, removed, released, erased"
    );
}
