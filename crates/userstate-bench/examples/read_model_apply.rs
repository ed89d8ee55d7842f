//! The cost of a state change in the read model (the command path applies each append to it,
//! ADR 0014): ns per apply of alternating lock/unlock events on random users, after building a
//! read model of N users. `cargo run --release -p userstate-bench --example read_model_apply -- 10000 1000000`
//!
//! Users as in `list_users` (18-digit ids, `user123456@example.com`, one organisation per 1000
//! users), each added one millisecond after the last; 200k state changes per run, 5 runs.

use std::time::{Duration, Instant};

use chrono::Utc;
use userstate::store::{EventMetadata, NewEvent};
use userstate::{InstanceId, ReadModel, RecordedEvent, StreamId, UserId};

fn main() {
    let sizes: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() {
        vec![10_000, 1_000_000]
    } else {
        sizes
    };
    let instance = InstanceId::new("default").unwrap();
    for n in sizes {
        let start = Utc::now();
        let mut model = ReadModel::default();
        let mut position = 0;
        let mut record = |stream: StreamId, sequence, at: u64, event: NewEvent| {
            position += 1;
            let at = start + Duration::from_millis(at);
            RecordedEvent::record(stream, sequence, position, at, event)
        };
        let stream = |i: u64| {
            let id = UserId::new(format!("{}", 100_000_000_000_000_000 + i)).unwrap();
            StreamId::user(&instance, &id)
        };
        let build = Instant::now();
        for i in 0..n {
            let payload = serde_json::json!({
                "username": format!("user{i}@example.com"),
                "resourceOwner": format!("org{}", i / 1000),
                "initial": false
            });
            let added = NewEvent::new("user.human.added", 1, payload, EventMetadata::default());
            model.apply(&record(stream(i), 1, i, added));
        }
        let built = build.elapsed();
        // Random users (a fixed LCG), each locked then unlocked: pairs of events, made up front.
        let changes = 200_000u64;
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut events = Vec::with_capacity(changes as usize);
        for k in 0..changes / 2 {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let user = (seed >> 33) % n;
            for (j, kind) in ["user.locked", "user.unlocked"].into_iter().enumerate() {
                let e = NewEvent::new(kind, 1, serde_json::Value::Null, EventMetadata::default());
                events.push(record(stream(user), 2 + 2 * k + j as u64, n + k, e));
            }
        }
        let mut runs = Vec::new();
        for _ in 0..5 {
            let t = Instant::now();
            for e in &events {
                model.apply(e);
            }
            runs.push(t.elapsed().as_nanos() as f64 / events.len() as f64);
        }
        let mut sorted = runs.clone();
        sorted.sort_by(f64::total_cmp);
        println!(
            "{n:>8} users (built in {:.1} s): ns per lock/unlock apply, 5 runs of {changes}: {} (median {:.0})",
            built.as_secs_f64(),
            runs.iter()
                .map(|r| format!("{r:.0}"))
                .collect::<Vec<_>>()
                .join(" "),
            sorted[2]
        );
    }
}
