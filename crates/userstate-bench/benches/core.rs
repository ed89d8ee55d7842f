//! Micro-benchmarks of the pure and in-memory parts: fold/decide, event encode/decode,
//! read-model update, and a full command on the memory store.
//!
//! `cargo bench -p userstate-bench --bench core`

use std::hint::black_box;
use std::sync::Arc;

use chrono::Utc;
use criterion::{criterion_group, criterion_main, Criterion};
use userstate::store::{EventMetadata, NewEvent};
use userstate::{
    AddUser, Context, Engine, InstanceId, MemoryStore, OrgId, Principal, ReadModel, RecordedEvent,
    StreamId, User, UserCommand, UserEvent, UserId,
};

fn add(id: &UserId) -> UserCommand {
    UserCommand::Add(AddUser {
        user_id: id.clone(),
        username: "alice".into(),
        organization: OrgId::new("org").unwrap(),
        profile: None,
        email: None,
        initial: false,
    })
}

fn domain(c: &mut Criterion) {
    let id = UserId::new("u1").unwrap();
    let added = User::default().decide(&add(&id)).unwrap().remove(0);
    let at = chrono::Utc::now();
    let mut history = vec![added.clone()];
    for _ in 0..50 {
        history.push(UserEvent::Locked(Default::default()));
        history.push(UserEvent::Unlocked(Default::default()));
    }
    c.bench_function("fold 101 events", |b| {
        b.iter(|| User::from_events(black_box(&history).iter().map(|e| (e, at))))
    });
    let user = User::from_events(history.iter().map(|e| (e, at)));
    c.bench_function("decide lock", |b| {
        b.iter(|| user.decide(black_box(&UserCommand::Lock(id.clone()))))
    });
    c.bench_function("encode user.human.added payload", |b| {
        b.iter(|| serde_json::to_vec(&black_box(&added).payload()))
    });
    let payload = added.payload();
    c.bench_function("decode user.human.added", |b| {
        b.iter(|| UserEvent::decode("user.human.added", 1, black_box(&payload)))
    });
}

fn read_model(c: &mut Criterion) {
    let instance = InstanceId::new("i").unwrap();
    let meta = EventMetadata {
        instance: "i".into(),
        resource_owner: "org".into(),
        creator: "bench".into(),
        ..Default::default()
    };
    let events: Vec<RecordedEvent> = (0..1000u64)
        .map(|i| {
            let id = UserId::new(format!("u{i}")).unwrap();
            let e = User::default().decide(&add(&id)).unwrap().remove(0);
            RecordedEvent::record(
                StreamId::user(&instance, &id),
                1,
                i + 1,
                Utc::now(),
                NewEvent::new(e.event_type(), 1, e.payload(), meta.clone()),
            )
        })
        .collect();
    c.bench_function("read model: apply 1000 adds", |b| {
        b.iter(|| {
            let mut model = ReadModel::default();
            for e in &events {
                model.apply(e);
            }
            model
        })
    });
}

fn engine(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let engine = Engine::new(Arc::new(MemoryStore::new()));
    let ctx = Context::new(Principal::system("bench", InstanceId::new("i").unwrap()));
    let id = UserId::new("u1").unwrap();
    rt.block_on(engine.execute(&ctx, add(&id))).unwrap();
    let mut locked = false;
    c.bench_function("engine: lock/unlock on the memory store", |b| {
        b.iter(|| {
            let cmd = if locked {
                UserCommand::Unlock(id.clone())
            } else {
                UserCommand::Lock(id.clone())
            };
            locked = !locked;
            rt.block_on(engine.execute(&ctx, cmd)).unwrap()
        })
    });
}

criterion_group!(benches, domain, read_model, engine);
criterion_main!(benches);
