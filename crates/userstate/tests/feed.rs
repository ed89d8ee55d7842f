//! The event feed over the memory store (issue 26): a subscription hands out every event after
//! its position, in order, nothing skipped, while writers append concurrently; a reader too far
//! behind is told so; filters and grants; the store-kept checkpoint's lease.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use userstate::feed::{Checkpoint, FeedError, Filter, LeaseState, StoreCheckpoint, Subscription};
use userstate::testkit::{event, stream, GatedStore};
use userstate::{
    AddUser, Context, Engine, EventStore, ExpectedVersion, InstanceId, ListRequest, MemoryStore,
    OrgId, Permission, Principal, Projection, UserCommand, UserId,
};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Appends `bursts` (stream, count) from one task per burst, all at once, while a subscription
/// started after `start` (clamped to what is committed before it starts) reads with pages of
/// `page`; it must see every position after its start exactly once, in order, and each
/// stream's sequences in order.
async fn nothing_skipped(prefill: Vec<(u8, u8)>, bursts: Vec<(u8, u8)>, start: u64, page: usize) {
    let store = Arc::new(MemoryStore::new());
    for (s, n) in &prefill {
        let events = (0..*n as u64).map(|i| event("t.pre", i)).collect();
        store
            .append(&stream(&s.to_string()), ExpectedVersion::Any, events)
            .await
            .unwrap();
    }
    let start = start.min(store.head_position().await.unwrap());
    let total: u64 = prefill.iter().chain(&bursts).map(|(_, n)| *n as u64).sum();
    let mut feed = Subscription::after(store.clone(), start).with_page(page);
    let writers: Vec<_> = bursts
        .into_iter()
        .map(|(s, n)| {
            let store = store.clone();
            tokio::spawn(async move {
                for i in 0..n as u64 {
                    store
                        .append(
                            &stream(&s.to_string()),
                            ExpectedVersion::Any,
                            vec![event("t.live", i)],
                        )
                        .await
                        .unwrap();
                    if i % 3 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
            })
        })
        .collect();
    let mut expected = start + 1;
    let mut sequences: HashMap<String, u64> = HashMap::new();
    while expected <= total {
        let batch = tokio::time::timeout(Duration::from_secs(10), feed.next_batch())
            .await
            .expect("a committed event arrives")
            .unwrap();
        assert!(!batch.is_empty() && batch.len() <= page);
        for e in batch {
            assert_eq!(e.position, expected, "positions in order, none skipped");
            let last = sequences.entry(e.stream.to_string()).or_default();
            assert!(e.sequence > *last, "a stream's events in order");
            *last = e.sequence;
            expected += 1;
        }
    }
    for w in writers {
        w.await.unwrap();
    }
    assert_eq!(feed.position(), total);
    // Nothing more, and nothing twice.
    assert!(feed.poll_batch().await.unwrap().is_empty());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Whatever was committed before, whatever is appended concurrently, wherever the reader
    /// starts and whatever its page: every event after the start, once, in position order.
    #[test]
    fn a_subscription_skips_nothing_and_keeps_order(
        prefill in proptest::collection::vec((0u8..4, 1u8..6), 0..6),
        bursts in proptest::collection::vec((0u8..4, 1u8..30), 1..6),
        start in 0u64..40,
        page in 1usize..16,
    ) {
        runtime().block_on(nothing_skipped(prefill, bursts, start, page));
    }
}

/// A reader that catches up from history is not "behind"; one that stops reading once live
/// and lets the head run away is told so, with the position to resume from.
#[tokio::test]
async fn a_live_reader_too_far_behind_gets_an_error_not_a_buffer() {
    let store = Arc::new(MemoryStore::new());
    let s = stream("a");
    for i in 0..100 {
        store
            .append(&s, ExpectedVersion::Any, vec![event("t", i)])
            .await
            .unwrap();
    }
    let mut feed = Subscription::after(store.clone(), 0)
        .with_page(8)
        .with_max_lag(10);
    for p in 1..=100 {
        assert_eq!(
            feed.next().await.unwrap().position,
            p,
            "catch-up is allowed"
        );
    }
    for i in 0..5 {
        store
            .append(&s, ExpectedVersion::Any, vec![event("t", i)])
            .await
            .unwrap();
    }
    assert_eq!(feed.next_batch().await.unwrap().len(), 5, "5 behind: fine");
    for i in 0..50 {
        store
            .append(&s, ExpectedVersion::Any, vec![event("t", i)])
            .await
            .unwrap();
    }
    match feed.next().await {
        Err(FeedError::TooFarBehind {
            position,
            lag,
            max_lag,
        }) => assert_eq!((position, lag, max_lag), (105, 50, 10)),
        other => panic!("expected TooFarBehind, got {other:?}"),
    }
    // Resubscribing from the position loses nothing.
    let mut again = Subscription::after(store.clone(), 105).with_max_lag(10);
    assert_eq!(again.next().await.unwrap().position, 106);
}

async fn add(engine: &Engine, instance: &str, org: &str, id: &str) {
    let ctx = Context::new(Principal::system(
        "admin",
        InstanceId::new(instance).unwrap(),
    ));
    engine
        .execute(
            &ctx,
            UserCommand::Add(AddUser {
                user_id: UserId::new(id).unwrap(),
                username: format!("name-{id}"),
                organization: OrgId::new(org).unwrap(),
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

/// The public feed carries users only (no username reservations, no delivery checkpoints),
/// of the reader's instance and granted organisations, of the types asked for.
#[tokio::test]
async fn filters_keep_to_the_feed_the_instance_the_grants_and_the_types() {
    let store: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
    let engine = Engine::new(store.clone());
    add(&engine, "default", "acme", "u1").await;
    add(&engine, "default", "other", "u2").await;
    add(&engine, "elsewhere", "acme", "u3").await;
    let checkpoint = StoreCheckpoint::new(store.clone(), "sink", "n1").unwrap();
    checkpoint.acquire().await.unwrap();
    checkpoint.save(3).await.unwrap();
    let head = store.head_position().await.unwrap();

    let collect = |filter: Filter| {
        let store = store.clone();
        async move {
            let mut feed = Subscription::after(store, 0).with_filter(filter);
            let mut seen = Vec::new();
            while feed.read_position() < head {
                seen.extend(
                    feed.poll_batch()
                        .await
                        .unwrap()
                        .into_iter()
                        .map(|e| (e.stream.to_string(), e.event_type)),
                );
            }
            seen
        }
    };
    let everything = collect(Filter::all()).await;
    assert!(everything.iter().any(|(s, _)| s.starts_with("username:")));
    assert!(everything.iter().any(|(s, _)| s == "delivery:*:sink"));

    let public = collect(Filter::public()).await;
    assert_eq!(public.len(), 6, "{public:?}");
    assert!(public.iter().all(|(s, _)| s.starts_with("user:")));

    let reader = Principal::for_orgs(
        "siem",
        InstanceId::new("default").unwrap(),
        [OrgId::new("acme").unwrap()],
        &[Permission::UserRead],
    );
    let granted = collect(Filter::public().visible_to(&reader)).await;
    assert_eq!(
        granted,
        vec![
            ("user:default:u1".to_owned(), "user.human.added".to_owned()),
            ("user:default:u1".to_owned(), "user.locked".to_owned()),
        ]
    );
    // Asking for an organisation it is not granted shows nothing more.
    let asked = collect(
        Filter::public()
            .with_orgs(["other"])
            .with_types(["user.locked"])
            .visible_to(&reader),
    )
    .await;
    assert!(asked.is_empty(), "{asked:?}");
    let admin = Principal::system("admin", InstanceId::new("default").unwrap());
    let locks = collect(
        Filter::public()
            .with_types(["user.locked"])
            .visible_to(&admin),
    )
    .await;
    assert_eq!(
        locks.len(),
        2,
        "both organisations of the instance: {locks:?}"
    );
}

/// A delivery checkpoint stream is never a user: the read model lists the users only.
#[tokio::test]
async fn checkpoint_streams_are_not_users() {
    let store: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
    let projection = Arc::new(Projection::spawn(store.clone()));
    let engine = Engine::new(store.clone()).with_listener(projection.listener());
    add(&engine, "default", "acme", "u1").await;
    let checkpoint = StoreCheckpoint::new(store.clone(), "default", "n1").unwrap();
    checkpoint.acquire().await.unwrap();
    checkpoint.save(2).await.unwrap();
    let head = store.head_position().await.unwrap();
    projection
        .wait_for(head, Duration::from_secs(5))
        .await
        .unwrap();
    let admin = Principal::system("admin", InstanceId::new("default").unwrap());
    let list = projection
        .list_users(&admin, &ListRequest::default())
        .unwrap();
    assert_eq!(list.total, 1);
    assert_eq!(list.users[0].user_id.as_str(), "u1");
}

/// One node at a time holds a target's lease; a save by another fails; when the holder stops
/// renewing, another takes over from the checkpoint; the old holder learns it lost the lease.
#[tokio::test]
async fn the_lease_goes_to_one_node_and_passes_on_when_it_expires() {
    let store: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
    let lease = Duration::from_secs(1);
    let a = StoreCheckpoint::new(store.clone(), "sink", "node-a")
        .unwrap()
        .with_lease(lease);
    let b = StoreCheckpoint::new(store.clone(), "sink", "node-b")
        .unwrap()
        .with_lease(lease);
    assert!(matches!(
        a.acquire().await.unwrap(),
        LeaseState::Held { position: 0, .. }
    ));
    assert!(a.holds());
    a.save(10).await.unwrap();
    match b.acquire().await.unwrap() {
        LeaseState::Busy { holder, .. } => assert_eq!(holder, "node-a"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(b.save(11).await, Err(FeedError::LeaseLost { .. })));
    assert!(!b.holds());
    assert_eq!(b.load().await.unwrap(), 10);

    tokio::time::sleep(lease + Duration::from_millis(100)).await;
    assert!(!a.holds(), "a holder stops before its lease ends");
    assert!(matches!(
        b.acquire().await.unwrap(),
        LeaseState::Held { position: 10, .. }
    ));
    match a.save(12).await {
        Err(FeedError::LeaseLost { holder, .. }) => assert_eq!(holder, "node-b"),
        other => panic!("a must have lost the lease: {other:?}"),
    }
    b.save(12).await.unwrap();
    assert_eq!(a.load().await.unwrap(), 12);
    // Four writes in all: two leases and two checkpoints; reads wrote nothing.
    let written = store
        .read_stream(&userstate::StreamId::delivery("sink"), 1)
        .await
        .unwrap();
    assert_eq!(written.len(), 4);
}

/// A delivery run asks `holds` and `renewal_due` from the futures of its calls, which it polls
/// itself, while it may be in a checkpoint write holding the checkpoint's lock: they answer
/// from the lease as last read or written without waiting for the write (a call that waited
/// for the lock there stopped delivery for good; the delivery test through `kill -9` found it).
#[tokio::test]
async fn the_lease_is_known_while_a_checkpoint_write_is_in_flight() {
    let store = Arc::new(GatedStore::new(Arc::new(MemoryStore::new()), |_, _| true));
    let lease = Duration::from_secs(30);
    let a = Arc::new(
        StoreCheckpoint::new(store.clone(), "sink", "node-a")
            .unwrap()
            .with_lease(lease),
    );
    assert!(matches!(
        a.acquire().await.unwrap(),
        LeaseState::Held { .. }
    ));
    store.close();
    let saving = tokio::spawn({
        let a = a.clone();
        async move { a.save(5).await }
    });
    store.entered().await;
    assert!(a.holds(), "held while the save waits at the gate");
    assert!(!a.renewal_due());
    store.open();
    saving.await.unwrap().unwrap();
    assert!(a.holds());
    assert_eq!(a.load().await.unwrap(), 5);
    // Released: known at once, and not held.
    a.release().await.unwrap();
    assert!(!a.holds());
    assert!(a.renewal_due());
}

/// Two nodes racing for a free lease: exactly one wins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_nodes_get_one_lease() {
    for _ in 0..20 {
        let store: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
        let nodes: Vec<_> = (0..4)
            .map(|i| Arc::new(StoreCheckpoint::new(store.clone(), "t", &format!("n{i}")).unwrap()))
            .collect();
        let tries: Vec<_> = nodes
            .iter()
            .map(|n| {
                let n = n.clone();
                tokio::spawn(async move { n.acquire().await.unwrap() })
            })
            .collect();
        let mut held = 0;
        for t in tries {
            if matches!(t.await.unwrap(), LeaseState::Held { .. }) {
                held += 1;
            }
        }
        assert_eq!(held, 1);
        let mut holding = 0;
        for n in &nodes {
            holding += n.holds() as usize;
        }
        assert_eq!(holding, 1);
    }
}

#[test]
fn bad_names_are_refused() {
    let store: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
    for bad in ["", "a:b", "a b", &"x".repeat(201)] {
        assert!(matches!(
            StoreCheckpoint::new(store.clone(), bad, "n"),
            Err(FeedError::InvalidName { .. })
        ));
    }
}
