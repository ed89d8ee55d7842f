//! Memory per user in the read model: apply N `user.human.added` events (ids and usernames of
//! typical length, one organisation per 1000 users) and compare the resident set size before and
//! after. `cargo run --release -p userstate-bench --example read_model_memory -- 1000000`

use chrono::Utc;
use userstate::store::{EventMetadata, NewEvent};
use userstate::{InstanceId, ReadModel, RecordedEvent, StreamId, UserId};

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("Linux /proc");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .expect("resident pages");
    pages * 4096
}

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let instance = InstanceId::new("default").unwrap();
    let now = Utc::now();
    let mut model = ReadModel::default();
    let before = rss_bytes();
    let mut username_bytes = 0;
    for i in 0..n {
        // 18-digit ids like ZITADEL's; usernames like "user123456@example.com".
        let id = UserId::new(format!("{}", 100_000_000_000_000_000 + i)).unwrap();
        let username = format!("user{i}@example.com");
        username_bytes += username.len() as u64;
        let payload = serde_json::json!({
            "username": username, "resourceOwner": format!("org{}", i / 1000), "initial": false
        });
        let event = RecordedEvent::record(
            StreamId::user(&instance, &id),
            1,
            i + 1,
            now,
            NewEvent::new("user.human.added", 1, payload, EventMetadata::default()),
        );
        model.apply(&event);
    }
    let grown = rss_bytes().saturating_sub(before);
    println!(
        "{n} users: RSS grew {:.1} MiB = {:.0} bytes per user, of which username {:.0} bytes",
        grown as f64 / (1 << 20) as f64,
        grown as f64 / n as f64,
        username_bytes as f64 / n as f64
    );
    assert_eq!(model.len() as u64, n);
}
