//! ListUsers over a large read model (issue 23): a page of 100 by a rare state and by an
//! organisation, p50/p99 over many calls, and the read model's bytes per user.
//! `cargo run --release -p userstate-bench --example list_users -- 1000000`
//!
//! Users as in `read_model_memory` (18-digit ids, `user123456@example.com`, one organisation
//! per 1000 users); 1 in 1000 is then locked (the rare state). Each list call is timed alone,
//! as an instance-wide reader and, last, as one with read on three organisations.

use std::time::Instant;

use chrono::Utc;
use hdrhistogram::Histogram;
use userstate::store::{EventMetadata, NewEvent};
use userstate::{
    InstanceId, ListRequest, Principal, ReadModel, RecordedEvent, SortColumn, StreamId, UserId,
    UserQuery, UserState,
};

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
    let mut position = 0;
    let mut record = |stream: StreamId, sequence, event: NewEvent| {
        position += 1;
        RecordedEvent::record(stream, sequence, position, now, event)
    };
    let build = Instant::now();
    for i in 0..n {
        let id = UserId::new(format!("{}", 100_000_000_000_000_000 + i)).unwrap();
        let username = format!("user{i}@example.com");
        username_bytes += username.len() as u64;
        let payload = serde_json::json!({
            "username": username, "resourceOwner": format!("org{}", i / 1000), "initial": false
        });
        let added = NewEvent::new("user.human.added", 1, payload, EventMetadata::default());
        model.apply(&record(StreamId::user(&instance, &id), 1, added));
    }
    let grown = rss_bytes().saturating_sub(before);
    for i in (0..n).step_by(1000) {
        let id = UserId::new(format!("{}", 100_000_000_000_000_000 + i + 7)).unwrap();
        let locked = NewEvent::new(
            "user.locked",
            1,
            serde_json::Value::Null,
            EventMetadata::default(),
        );
        model.apply(&record(StreamId::user(&instance, &id), 2, locked));
    }
    println!(
        "{n} users (+{} locked) applied in {:.1} s: RSS grew {:.1} MiB = {:.0} bytes per user, of which username {:.0} bytes",
        n / 1000,
        build.elapsed().as_secs_f64(),
        grown as f64 / (1 << 20) as f64,
        grown as f64 / n as f64,
        username_bytes as f64 / n as f64
    );
    let admin = Principal::system("admin", instance.clone());
    // Read on three organisations only: the per-organisation lists, merged.
    let scoped = Principal::for_orgs(
        "scoped",
        instance.clone(),
        ["org100", "org500", "org900"].map(|o| userstate::OrgId::new(o).unwrap()),
        &[userstate::Permission::UserRead],
    );
    let cases = [
        (
            "state LOCKED, by user name",
            SortColumn::UserName,
            vec![UserQuery::State(UserState::Locked)],
        ),
        (
            "state LOCKED, by creation date",
            SortColumn::CreationDate,
            vec![UserQuery::State(UserState::Locked)],
        ),
        (
            "organisation org500, by user name",
            SortColumn::UserName,
            vec![UserQuery::Organization("org500".to_owned())],
        ),
        (
            "organisation org500, by creation date",
            SortColumn::CreationDate,
            vec![UserQuery::Organization("org500".to_owned())],
        ),
        (
            "user name prefix user12345, by user name",
            SortColumn::UserName,
            vec![UserQuery::UserName {
                text: "USER12345".to_owned(),
                method: userstate::TextMethod::StartsWithIgnoreCase,
            }],
        ),
        (
            "no filter, by creation date",
            SortColumn::CreationDate,
            vec![],
        ),
    ];
    let cases = cases
        .into_iter()
        .map(|(name, sort, queries)| (name, sort, queries, &admin))
        .chain([(
            "state LOCKED, by user name, 3 org grants",
            SortColumn::UserName,
            vec![UserQuery::State(UserState::Locked)],
            &scoped,
        )]);
    for (name, sort, queries, principal) in cases {
        let mut hist = Histogram::<u64>::new(3).unwrap();
        let mut total = 0;
        for round in 0..2000u64 {
            let request = ListRequest {
                offset: (round % 5) * 100,
                limit: 100,
                asc: round % 2 == 0,
                sort,
                queries: queries.clone(),
            };
            let start = Instant::now();
            let page = model.list(principal, &request).unwrap();
            hist.record(start.elapsed().as_nanos() as u64).unwrap();
            total = page.total;
            assert!(page.users.len() <= 100);
        }
        println!(
            "{name:<42} total {total:>7}: p50 {:>6.1} µs  p99 {:>6.1} µs  max {:>6.1} µs",
            hist.value_at_quantile(0.5) as f64 / 1000.0,
            hist.value_at_quantile(0.99) as f64 / 1000.0,
            hist.max() as f64 / 1000.0
        );
    }
}
