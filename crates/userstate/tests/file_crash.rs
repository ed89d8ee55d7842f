//! Crash test with real processes: a child process (this test binary, re-executed with
//! `USERSTATE_CRASH_CHILD_DIR` set) appends from many tasks and prints every acknowledged
//! append; the parent `kill -9`s it at a random moment, reopens the store and checks that every
//! acknowledged event is there, in order, with no gap and no duplicate, and that every append
//! is all or nothing. Repeated for many cycles on the same directory.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use userstate::testkit::stream;
use userstate::{EventStore, ExpectedVersion, FileStore, StoreError};

mod support;

const CHILD_ENV: &str = "USERSTATE_CRASH_CHILD_DIR";
const TASKS: usize = 32;

/// The child role: does nothing unless started by the parent.
#[test]
fn crash_child() {
    support::crash_child::as_child(CHILD_ENV, child);
}

async fn child(dir: String) {
    let store = Arc::new(
        FileStore::options()
            .segment_size(256 << 10)
            .open(&dir)
            .expect("child opens the store"),
    );
    println!("READY");
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let store = store.clone();
            tokio::spawn(async move { append_forever(&store, t).await })
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
}

async fn append_forever(store: &FileStore, task: usize) {
    let mut k: u64 = task as u64;
    // The versions this task last saw; a conflict tells the actual one.
    let mut versions: HashMap<String, u64> = HashMap::new();
    loop {
        k += 1;
        // Every fourth append goes to a stream all tasks share, so versions conflict.
        let s = if k.is_multiple_of(4) {
            stream("shared")
        } else {
            stream(&format!("t{task}-{}", k % 3))
        };
        // A stream not seen yet is tried at version 0; a conflict tells the real one.
        let version = versions.get(s.as_str()).copied().unwrap_or(0);
        let n = 1 + k % 3;
        let append_id = format!("{}-{task}-{k}", run_id());
        let events = (0..n)
            .map(|i| {
                let mut e = userstate::testkit::event("crash.test", i);
                e.payload = serde_json::json!({ "append": append_id, "i": i, "n": n });
                e
            })
            .collect();
        match store
            .append(&s, ExpectedVersion::Exact(version), events)
            .await
        {
            Ok(recorded) => {
                versions.insert(s.to_string(), recorded[recorded.len() - 1].sequence);
                let ids: Vec<String> = recorded.iter().map(|e| e.event_id.to_string()).collect();
                let line = format!(
                    "ACK {} {} {} {}\n",
                    recorded[0].position,
                    recorded[0].sequence,
                    s,
                    ids.join(",")
                );
                let mut out = std::io::stdout().lock();
                let _ = out.write_all(line.as_bytes());
                let _ = out.flush();
            }
            Err(StoreError::Conflict { actual, .. }) => {
                versions.insert(s.to_string(), actual);
            }
            Err(e) => panic!("child append failed: {e}"),
        }
    }
}

/// Distinguishes this child's appends from earlier children's.
fn run_id() -> &'static str {
    static ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ID.get_or_init(|| {
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        format!("{}.{nanos}", std::process::id())
    })
}

/// One acknowledged append as the child reported it.
struct Ack {
    position: u64,
    sequence: u64,
    stream: String,
    ids: Vec<String>,
}

fn parse(line: &str) -> Option<Ack> {
    let mut parts = line.strip_prefix("ACK ")?.split(' ');
    Some(Ack {
        position: parts.next()?.parse().ok()?,
        sequence: parts.next()?.parse().ok()?,
        stream: parts.next()?.to_owned(),
        ids: parts.next()?.split(',').map(str::to_owned).collect(),
    })
}

/// A small deterministic generator (seeded from the clock; the seed is printed).
struct XorShift(u64);
impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Starts the child, kills it after `delay`, returns what it acknowledged.
fn run_child(dir: &Path, delay: Duration) -> Vec<Ack> {
    support::crash_child::run_and_kill("crash_child", CHILD_ENV, dir, delay, parse)
}

/// Reopens the store and checks it against everything acknowledged so far.
fn verify(dir: &Path, acked: &[Ack]) -> u64 {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let store = FileStore::open(dir).expect("reopen after kill -9");
        let head = store.head_position().await.expect("head");
        let mut all = Vec::new();
        while (all.len() as u64) < head {
            let page = store
                .read_all(all.len() as u64 + 1, 5000)
                .await
                .expect("read_all");
            assert!(!page.is_empty(), "read_all stopped before the head");
            all.extend(page);
        }
        // In order, no gap, no duplicate.
        for (i, e) in all.iter().enumerate() {
            assert_eq!(e.position, i as u64 + 1, "positions have no gap");
        }
        let ids: HashSet<_> = all.iter().map(|e| e.event_id).collect();
        assert_eq!(ids.len(), all.len(), "no event is stored twice");
        let mut versions: HashMap<&str, u64> = HashMap::new();
        let mut appends: HashMap<String, Vec<u64>> = HashMap::new();
        for e in &all {
            let v = versions.entry(e.stream.as_str()).or_default();
            *v += 1;
            assert_eq!(e.sequence, *v, "stream {} has no sequence gap", e.stream);
            let id = e.payload["append"].as_str().expect("append id").to_owned();
            appends
                .entry(id)
                .or_default()
                .push(e.payload["i"].as_u64().expect("i"));
        }
        for e in &all {
            let parts = &appends[e.payload["append"].as_str().expect("append id")];
            let n = e.payload["n"].as_u64().expect("n");
            assert_eq!(
                parts,
                &(0..n).collect::<Vec<_>>(),
                "appends are all or nothing"
            );
        }
        // Every acknowledged event is present where the child was told it is.
        for ack in acked {
            for (i, id) in ack.ids.iter().enumerate() {
                let e = all
                    .get((ack.position - 1) as usize + i)
                    .unwrap_or_else(|| panic!("acknowledged position {} lost", ack.position));
                assert_eq!(
                    &e.event_id.to_string(),
                    id,
                    "acknowledged event at its position"
                );
                assert_eq!(e.stream.as_str(), ack.stream);
                assert_eq!(e.sequence, ack.sequence + i as u64);
            }
        }
        head
    })
}

fn crash_cycles(cycles: usize, max_delay_ms: u64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let seed = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
        | 1;
    eprintln!("crash test seed {seed}");
    let mut rng = XorShift(seed);
    let mut acked = Vec::new();
    let started = Instant::now();
    for cycle in 0..cycles {
        let delay = Duration::from_millis(10 + rng.next() % max_delay_ms);
        let acks = run_child(dir.path(), delay);
        let count = acks.len();
        acked.extend(acks);
        let head = verify(dir.path(), &acked);
        eprintln!("cycle {cycle}: killed after {delay:?}, {count} acknowledged, head {head}");
    }
    assert!(!acked.is_empty(), "the children acknowledged appends");
    eprintln!(
        "{cycles} cycles, {} acknowledged appends, {:?}",
        acked.len(),
        started.elapsed()
    );
}

#[test]
fn acknowledged_appends_survive_kill_9() {
    crash_cycles(20, 250);
}

/// The long run: `cargo test -p userstate --release --test file_crash -- --ignored`.
#[test]
#[ignore = "long crash run; run on demand"]
fn acknowledged_appends_survive_kill_9_long() {
    crash_cycles(100, 1000);
}
