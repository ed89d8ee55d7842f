//! Timed locks with three nodes on one PostgreSQL store (SPEC.md "Lockout policy and timed
//! locks"): each node has its own pool, projection and `LockExpiry` scheduler, as three `serve`
//! processes would. Many users locked for 1–2 s are each unlocked exactly once (reason
//! `lock-expired`, creator `system`), whichever node wins; a user unlocked by hand first is not
//! unlocked again when its lock's end passes.

mod common;

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use userstate::{
    AddUser, Context, Engine, EventStore, InstanceId, LockExpiry, LockFor, OrgId, Principal,
    Projection, StreamId, UserCommand, UserId, UserState,
};

const USERS: usize = 50;
const UNLOCKED_BY_HAND: usize = 5;
/// The lock of a user unlocked by hand: long enough that the unlock, the next command, comes
/// before its end however loaded the machine (the others' 1–2 s would not be), short enough to
/// pass within the test.
const HAND_LOCK: Duration = Duration::from_secs(3);

struct Node {
    engine: Engine,
    projection: Arc<Projection>,
    _expiry: LockExpiry,
}

impl Node {
    fn start(store: Arc<dyn EventStore>) -> Self {
        let projection = Arc::new(Projection::spawn(store.clone()));
        let engine = Engine::new(store).with_listener(projection.listener());
        let expiry = LockExpiry::spawn(engine.clone(), projection.clone());
        Node {
            engine,
            projection,
            _expiry: expiry,
        }
    }
}

fn user(n: usize) -> UserId {
    UserId::new(format!("u{n}")).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_unlock_each_expired_lock_exactly_once() {
    let Some((first, guard)) = common::fresh("lockexp").await else {
        return;
    };
    let mut stores: Vec<Arc<dyn EventStore>> = vec![Arc::new(first)];
    for _ in 0..2 {
        let other = common::connect(common::builder(&guard.url, &guard.schema))
            .await
            .expect("a second connection to the same server");
        stores.push(Arc::new(other));
    }
    let nodes: Vec<Node> = stores.iter().cloned().map(Node::start).collect();
    let instance = InstanceId::new("i1").unwrap();
    let admin = Context::new(Principal::system("admin", instance.clone()));

    let mut hand_locks_end = tokio::time::Instant::now();
    for n in 0..USERS {
        let node = &nodes[n % nodes.len()];
        let add = UserCommand::Add(AddUser {
            user_id: user(n),
            username: format!("user{n}"),
            organization: OrgId::new("acme").unwrap(),
            profile: None,
            email: None,
            initial: false,
        });
        node.engine.execute(&admin, add).await.expect("add");
        let by_hand = n < UNLOCKED_BY_HAND;
        let duration = match by_hand {
            true => HAND_LOCK,
            // 1 s to 2 s, spread over the users.
            false => Duration::from_millis(1000 + (n as u64 * 1000) / USERS as u64),
        };
        let lock = UserCommand::LockFor(LockFor {
            user_id: user(n),
            duration,
            now: Utc::now(),
        });
        node.engine.execute(&admin, lock).await.expect("timed lock");
        if by_hand {
            hand_locks_end = tokio::time::Instant::now() + HAND_LOCK;
            // Unlocked by hand before its end, on another node than the one that locked.
            let other = &nodes[(n + 1) % nodes.len()];
            let unlock = UserCommand::Unlock(user(n));
            other.engine.execute(&admin, unlock).await.expect("unlock");
        }
    }

    // Every node's read model sees every user active again, without any request.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    for node in &nodes {
        loop {
            let locked = (0..USERS)
                .filter(|&n| {
                    let view = node.projection.get_user(&admin.principal, &user(n)).ok();
                    view.is_none_or(|v| v.state != UserState::Active)
                })
                .count();
            if locked == 0 {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{locked} users still not active"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // More scheduler rounds on every node, past the end of the locks undone by hand too:
    // still one unlock each.
    tokio::time::sleep_until(
        hand_locks_end.max(tokio::time::Instant::now()) + Duration::from_millis(1500),
    )
    .await;

    for n in 0..USERS {
        let stream = StreamId::user(&instance, &user(n));
        let events = stores[n % stores.len()]
            .read_stream(&stream, 1)
            .await
            .expect("read the stream");
        let unlocks: Vec<_> = events
            .iter()
            .filter(|e| e.event_type == "user.unlocked")
            .map(|e| (e.metadata.creator.as_str(), e.payload.clone()))
            .collect();
        let expected = match n < UNLOCKED_BY_HAND {
            true => ("admin", serde_json::json!({})),
            false => ("system", serde_json::json!({"reason": "lock-expired"})),
        };
        assert_eq!(unlocks, [expected], "user {n}: {events:?}");
    }
    drop(nodes);
    drop(stores);
}
