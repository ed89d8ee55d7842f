//! Streams deleted or truncated through KurrentDB's own API (issue 28, ADR 0020): the
//! per-stream chain cannot show a whole stream removed, or its last events, but KurrentDB
//! keeps a record of every such removal in `$all` — a `$streamDeleted` tombstone, or `$$stream`
//! metadata with `$tb`, `$maxCount` or `$maxAge` — and `verify` names each by its position,
//! before and after a scavenge. The tombstone of an erased user's key stream is an erasure,
//! not a finding; a key stream deleted without a `user.erased` is one.

#[allow(dead_code)]
mod support;

use std::sync::Arc;

use kurrentdb::{
    AppendToStreamOptions, Client, DeleteStreamOptions, StreamMetadata, TombstoneStreamOptions,
};
use support::server::TestServer;
use userstate::verify::{verify_store, Finding, Report};
use userstate::{
    AddUser, Context, CryptoStore, Engine, EventStore, InstanceId, OrgId, Principal, StreamId,
    UserCommand, UserId,
};
use userstate_eventstoredb::{EsdbKeyStore, EsdbStore};

/// A server holding users `u1` and `u2` (added through the engine, sealed, each with a key
/// stream and a username reservation), and a plain KurrentDB client for the operator's calls.
struct Setup {
    server: TestServer,
    raw: Arc<EsdbStore>,
    keys: Arc<EsdbKeyStore>,
    engine: Engine,
    ctx: Context,
    client: Client,
}

fn instance() -> InstanceId {
    InstanceId::new("i").unwrap()
}

fn user(id: &str) -> StreamId {
    StreamId::user(&instance(), &UserId::new(id).unwrap())
}

async fn setup() -> Setup {
    let server = TestServer::start();
    let raw = Arc::new(EsdbStore::connect(&server.url()).await.unwrap());
    let keys = Arc::new(raw.key_store().await.unwrap());
    let store: Arc<dyn EventStore> = Arc::new(CryptoStore::new(raw.clone(), keys.clone()));
    let engine = Engine::new(store);
    let ctx = Context::new(Principal::system("admin", instance()));
    for (id, name) in [("u1", "alice"), ("u2", "bob")] {
        engine
            .execute(
                &ctx,
                UserCommand::Add(AddUser {
                    user_id: UserId::new(id).unwrap(),
                    username: name.into(),
                    organization: OrgId::new("o").unwrap(),
                    profile: None,
                    email: None,
                    initial: false,
                }),
            )
            .await
            .unwrap();
        engine
            .execute(&ctx, UserCommand::Lock(UserId::new(id).unwrap()))
            .await
            .unwrap();
    }
    let client = Client::new(server.url().parse().unwrap()).unwrap();
    let clean = verify(&raw).await;
    assert!(clean.is_clean(), "{:?}", clean.findings);
    Setup {
        server,
        raw,
        keys,
        engine,
        ctx,
        client,
    }
}

async fn verify(store: &EsdbStore) -> Report {
    verify_store(store, |_| {}).await.unwrap()
}

/// Our position of a KurrentDB log position.
fn ours(p: kurrentdb::Position) -> u64 {
    p.prepare + 1
}

/// The findings of removal records.
fn removals(report: &Report) -> Vec<&Finding> {
    report
        .findings
        .iter()
        .filter(|f| {
            f.problem
                .contains("in KurrentDB by the record at this position")
        })
        .collect()
}

/// Asserts `report` holds exactly one removal finding, of `stream` at `position`, saying
/// `what`; returns the chain breaks.
fn assert_removal(report: &Report, stream: &StreamId, position: u64, what: &str) -> Vec<Finding> {
    let found = removals(report);
    assert_eq!(found.len(), 1, "{:?}", report.findings);
    assert_eq!(found[0].stream.as_ref(), Some(stream), "{found:?}");
    assert_eq!(found[0].position, Some(position), "{found:?}");
    assert!(found[0].problem.contains(what), "{}", found[0].problem);
    report
        .findings
        .iter()
        .filter(|f| f.problem.starts_with("hash chain"))
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hard_deleted_user_stream_is_named_by_the_tombstones_position() {
    let s = setup().await;
    let name = s.raw.esdb_stream_name(&user("u1"));
    let position = s
        .client
        .tombstone_stream(name.as_str(), &TombstoneStreamOptions::default())
        .await
        .unwrap()
        .expect("the tombstone's position");
    let report = verify(&s.raw).await;
    let breaks = assert_removal(&report, &user("u1"), ours(position), "hard-deleted");
    assert!(breaks.is_empty(), "{breaks:?}");
    // Until a scavenge the deleted events are still in $all; after it the tombstone is all
    // that is left of the stream, and it still tells.
    s.server.log().scavenge();
    let report = verify(&s.raw).await;
    assert_removal(&report, &user("u1"), ours(position), "hard-deleted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_soft_deleted_user_stream_is_named_by_the_metadatas_position() {
    let s = setup().await;
    let name = s.raw.esdb_stream_name(&user("u2"));
    let position = s
        .client
        .delete_stream(name.as_str(), &DeleteStreamOptions::default())
        .await
        .unwrap()
        .expect("the delete's position");
    assert!(
        s.raw.read_stream(&user("u2"), 1).await.unwrap().is_empty(),
        "a soft-deleted stream reads as no stream"
    );
    let report = verify(&s.raw).await;
    assert_removal(&report, &user("u2"), ours(position), "soft-deleted");
    s.server.log().scavenge();
    let report = verify(&s.raw).await;
    // The scavenge kept only the stream's last event, which no longer links to its stream's
    // first: that break says the stream was deleted.
    let breaks = assert_removal(&report, &user("u2"), ours(position), "soft-deleted");
    assert_eq!(breaks.len(), 1, "{:?}", report.findings);
    assert!(breaks[0].problem.contains("was soft-deleted"), "{breaks:?}");
}

/// Truncates u1's stream with `metadata`; verifies before and after a scavenge.
async fn truncated(metadata: StreamMetadata, what: &str) {
    let s = setup().await;
    let name = s.raw.esdb_stream_name(&user("u1"));
    let written = s
        .client
        .set_stream_metadata(name.as_str(), &AppendToStreamOptions::default(), &metadata)
        .await
        .unwrap();
    let position = ours(written.position);
    let read = s.raw.read_stream(&user("u1"), 1).await.unwrap();
    assert_eq!(read.len(), 1, "only the lock is read");
    let report = verify(&s.raw).await;
    let breaks = assert_removal(&report, &user("u1"), position, what);
    assert!(breaks.is_empty(), "{breaks:?}");
    s.server.log().scavenge();
    let report = verify(&s.raw).await;
    let breaks = assert_removal(&report, &user("u1"), position, what);
    // The add is gone: the lock, now the stream's first event, no longer links (nor follows
    // a sequence, nor a lifecycle), and each of its findings says the stream was truncated.
    assert_eq!(breaks.len(), 1, "{:?}", report.findings);
    assert_eq!(breaks[0].position, Some(read[0].position), "{breaks:?}");
    for f in report.findings.iter().filter(|f| f.sequence.is_some()) {
        assert_eq!(f.position, Some(read[0].position), "{f:?}");
        assert!(f.problem.contains("the stream was truncated"), "{f:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_stream_truncated_by_tb_is_named_by_the_metadatas_position() {
    let metadata = StreamMetadata {
        truncate_before: Some(1),
        ..StreamMetadata::default()
    };
    truncated(metadata, "truncated before sequence 2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_stream_truncated_by_max_count_is_named_by_the_metadatas_position() {
    let metadata = StreamMetadata {
        max_count: Some(1),
        ..StreamMetadata::default()
    };
    truncated(metadata, "truncated to its last 1 events").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erasure_verifies_and_a_key_stream_deleted_without_one_is_named() {
    let s = setup().await;
    let u1 = UserId::new("u1").unwrap();
    for command in [UserCommand::Remove(u1.clone()), UserCommand::Erase(u1)] {
        s.engine.execute(&s.ctx, command).await.unwrap();
    }
    let report = verify(&s.raw).await;
    assert!(report.is_clean(), "{:?}", report.findings);
    s.server.log().scavenge();
    let report = verify(&s.raw).await;
    assert!(report.is_clean(), "{:?}", report.findings);

    // u2's key stream tombstoned by hand: u2's personal data is gone without an erasure.
    let key_stream = s.keys.stream("i:u2");
    let position = s
        .client
        .tombstone_stream(key_stream.as_str(), &TombstoneStreamOptions::default())
        .await
        .unwrap()
        .expect("the tombstone's position");
    let report = verify(&s.raw).await;
    let found = removals(&report);
    assert_eq!(found.len(), 1, "{:?}", report.findings);
    assert_eq!(found[0].stream.as_ref(), Some(&user("u2")));
    assert_eq!(found[0].position, Some(ours(position)));
    assert!(found[0].problem.contains("no `user.erased`"), "{found:?}");
}
