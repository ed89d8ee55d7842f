//! Recovery of the file store from damaged directories, on real files: torn tails are
//! repaired, damage in the middle is refused with file and offset, strangers are named.

use std::fs;
use std::path::{Path, PathBuf};

use userstate::testkit::{event, stream};
use userstate::{EventStore, ExpectedVersion, FileStore, StoreError};

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut s: Vec<PathBuf> = fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("segment-"))
        })
        .collect();
    s.sort();
    s
}

fn len(path: &Path) -> u64 {
    fs::metadata(path).expect("metadata").len()
}

/// Where the records of a segment end: the writer keeps zeros ahead of the log, so the file is
/// longer. A frame ends with its JSON payload, never with a zero byte.
fn data_len(path: &Path) -> u64 {
    let bytes = fs::read(path).expect("read");
    bytes
        .iter()
        .rposition(|&b| b != 0)
        .map_or(0, |i| i as u64 + 1)
}

/// Copies the segments of `from` into a fresh directory.
fn copy_store(from: &Path) -> tempfile::TempDir {
    let to = tempfile::tempdir().expect("tempdir");
    for s in segments(from) {
        fs::copy(&s, to.path().join(s.file_name().expect("name"))).expect("copy");
    }
    to
}

fn corrupt_location(result: Result<FileStore, StoreError>) -> (String, String) {
    match result {
        Err(StoreError::Corrupt { location, reason }) => (location, reason),
        Err(other) => panic!("expected Corrupt, got {other:?}"),
        Ok(_) => panic!("expected Corrupt, but the store opened"),
    }
}

/// Builds a store with `appends` single-event appends then one 3-event append; returns the
/// segment and its sizes after each append.
async fn build(dir: &Path, appends: u64) -> (PathBuf, Vec<u64>) {
    let store = FileStore::open(dir).expect("open");
    let seg = segments(dir).remove(0);
    let mut sizes = vec![data_len(&seg)];
    for i in 0..appends {
        store
            .append(
                &stream(&format!("s{}", i % 2)),
                ExpectedVersion::Any,
                vec![event("t", i)],
            )
            .await
            .expect("append");
        sizes.push(data_len(&seg));
    }
    let three = (0..3).map(|i| event("t.multi", i)).collect();
    store
        .append(&stream("multi"), ExpectedVersion::NoStream, three)
        .await
        .expect("append");
    sizes.push(data_len(&seg));
    (seg, sizes)
}

#[tokio::test]
async fn a_torn_last_append_is_truncated_at_every_byte_offset() {
    let src = tempfile::tempdir().expect("tempdir");
    let (seg, sizes) = build(src.path(), 4).await;
    let (whole, with_last) = (sizes[4], sizes[5]);
    assert!(with_last > whole + 100, "the last append has three records");
    for cut in whole..with_last {
        let dir = copy_store(src.path());
        let copy = dir.path().join(seg.file_name().expect("name"));
        fs::OpenOptions::new()
            .write(true)
            .open(&copy)
            .expect("open copy")
            .set_len(cut)
            .expect("truncate");
        let store = FileStore::open(dir.path()).unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
        assert_eq!(
            store.head_position().await.unwrap(),
            4,
            "cut at {cut}: all or nothing"
        );
        assert_eq!(len(&copy), whole, "cut at {cut}: tail repaired");
        assert!(store
            .read_stream(&stream("multi"), 1)
            .await
            .unwrap()
            .is_empty());
        let again = store
            .append(
                &stream("multi"),
                ExpectedVersion::NoStream,
                vec![event("t", 9)],
            )
            .await
            .expect("append after repair");
        assert_eq!(again[0].position, 5);
        drop(store);
        let store = FileStore::open(dir.path()).expect("reopen after repair");
        assert_eq!(store.read_all(1, 100).await.unwrap().len(), 5);
    }
}

#[tokio::test]
async fn zeros_after_the_log_are_kept_as_space_ahead() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (seg, sizes) = build(dir.path(), 3).await;
    assert!(
        len(&seg) > sizes[4],
        "the writer wrote zeros ahead of the log"
    );
    let mut bytes = fs::read(&seg).expect("read");
    bytes.extend_from_slice(&[0; 5000]);
    let grown = bytes.len() as u64;
    fs::write(&seg, bytes).expect("write");
    let store = FileStore::open(dir.path()).expect("open");
    assert_eq!(store.head_position().await.unwrap(), 6);
    assert_eq!(len(&seg), grown, "zeros are not a torn tail");
    store
        .append(
            &stream("after"),
            ExpectedVersion::NoStream,
            vec![event("t", 7)],
        )
        .await
        .expect("append over the zeros");
    drop(store);
    let store = FileStore::open(dir.path()).expect("reopen");
    assert_eq!(store.read_all(1, 100).await.unwrap().len(), 7);
    assert_eq!(len(&seg), grown, "written in place, not appended");
}

/// A crash during the last batch can leave any of its 512-byte sectors unwritten (zeros after
/// the previous batch's last byte) while later ones reached the disk: the log ends before that
/// batch, whatever the pattern.
#[tokio::test]
async fn a_last_batch_with_holes_is_dropped_whole() {
    let src = tempfile::tempdir().expect("tempdir");
    let (seg, sizes) = build(src.path(), 4).await;
    let (whole, with_last) = (sizes[4], sizes[5]);
    let name = seg.file_name().expect("name").to_owned();
    let first_sector = whole - whole % 512;
    let sectors: Vec<u64> = (first_sector..with_last).step_by(512).collect();
    // Every single sector missing, then every other one, then all but the first.
    let mut patterns: Vec<Vec<u64>> = sectors.iter().map(|&s| vec![s]).collect();
    patterns.push(sectors.iter().copied().step_by(2).collect());
    patterns.push(sectors.iter().copied().skip(1).collect());
    for lost in patterns {
        let dir = copy_store(src.path());
        let copy = dir.path().join(&name);
        let mut bytes = fs::read(&copy).expect("read");
        for &sector in &lost {
            let hole = sector.max(whole) as usize..(sector + 512).min(with_last) as usize;
            bytes[hole].fill(0);
        }
        fs::write(&copy, bytes).expect("write");
        let store =
            FileStore::open(dir.path()).unwrap_or_else(|e| panic!("sectors {lost:?} lost: {e}"));
        assert_eq!(
            store.head_position().await.unwrap(),
            4,
            "sectors {lost:?} lost"
        );
        assert_eq!(
            data_len(&copy),
            whole,
            "sectors {lost:?} lost: tail cleared"
        );
        drop(store);
        let store = FileStore::open(dir.path()).expect("reopen after repair");
        assert_eq!(store.read_all(1, 100).await.unwrap().len(), 4);
    }
}

#[tokio::test]
async fn a_flipped_byte_in_a_middle_record_is_refused_with_file_and_offset() {
    let src = tempfile::tempdir().expect("tempdir");
    let (seg, sizes) = build(src.path(), 3).await;
    let name = seg
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    let (start, end) = (sizes[1], sizes[2]);
    assert!(
        end > start + 50,
        "a whole record lies between {start} and {end}"
    );
    for at in start..end {
        let dir = copy_store(src.path());
        let copy = dir.path().join(&name);
        let mut bytes = fs::read(&copy).expect("read");
        bytes[at as usize] ^= 0x01;
        fs::write(&copy, bytes).expect("write");
        let (location, reason) = corrupt_location(FileStore::open(dir.path()));
        assert!(location.contains(&name), "{location}");
        assert!(
            location.ends_with(&format!("at offset {start}")),
            "flip at {at}: {location} ({reason})"
        );
    }
}

#[tokio::test]
async fn strangers_in_the_directory_are_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    build(dir.path(), 2).await;
    fs::write(dir.path().join("notes.txt"), "hello").expect("write");
    fs::write(dir.path().join("segment-12.log"), "x").expect("write");
    fs::create_dir(dir.path().join("old")).expect("mkdir");
    let (location, reason) = corrupt_location(FileStore::open(dir.path()));
    assert!(location.contains(&dir.path().display().to_string()));
    for name in ["notes.txt", "segment-12.log", "old"] {
        assert!(reason.contains(name), "{reason}");
    }
}

#[tokio::test]
async fn a_file_that_is_not_a_segment_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let seg = dir.path().join("segment-00000000000000000001.log");
    fs::write(&seg, "this is not a userstate segment, just text").expect("write");
    let (location, reason) = corrupt_location(FileStore::open(dir.path()));
    assert!(
        location.contains("segment-00000000000000000001.log") && location.ends_with("offset 0")
    );
    assert!(reason.contains("magic"), "{reason}");
}

#[tokio::test]
async fn a_missing_segment_is_refused_and_old_segments_are_never_rewritten() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = FileStore::options()
        .segment_size(4096)
        .open(dir.path())
        .expect("open");
    for i in 0..200 {
        store
            .append(
                &stream(&format!("r{}", i % 5)),
                ExpectedVersion::Any,
                vec![event("t", i)],
            )
            .await
            .expect("append");
    }
    let segs = segments(dir.path());
    assert!(segs.len() >= 4, "rotated into {} segments", segs.len());
    let sealed: Vec<Vec<u8>> = segs[..segs.len() - 1]
        .iter()
        .map(|s| fs::read(s).unwrap())
        .collect();
    for i in 0..50 {
        store
            .append(&stream("more"), ExpectedVersion::Any, vec![event("t", i)])
            .await
            .unwrap();
    }
    let all = store.read_all(1, 1000).await.unwrap();
    assert_eq!(all.len(), 250);
    drop(store);
    for (s, before) in segs.iter().zip(&sealed) {
        assert_eq!(
            &fs::read(s).unwrap(),
            before,
            "{} was rewritten",
            s.display()
        );
    }
    let store = FileStore::open(dir.path()).expect("reopen");
    assert_eq!(store.read_all(1, 1000).await.unwrap(), all);
    drop(store);
    fs::remove_file(&segs[1]).expect("remove");
    let (location, reason) = corrupt_location(FileStore::open(dir.path()));
    assert!(reason.contains("missing segment"), "{location}: {reason}");
}

#[tokio::test]
async fn a_second_open_fails_naming_the_lock_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = FileStore::open(dir.path()).expect("open");
    match FileStore::open(dir.path()) {
        Err(e @ StoreError::Unavailable { .. }) => {
            let text = e.to_string();
            assert!(
                text.contains(&dir.path().join("userstate.lock").display().to_string()),
                "{text}"
            );
            assert!(text.contains(&std::process::id().to_string()), "{text}");
        }
        Err(other) => panic!("expected Unavailable, got {other:?}"),
        Ok(_) => panic!("a second open must fail while the first holds the lock"),
    }
    drop(first);
    FileStore::open(dir.path()).expect("open after the first closed");
}

#[tokio::test]
async fn records_larger_than_the_scan_chunk_survive_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = FileStore::open(dir.path()).expect("open");
    let mut big = event("t.big", 1);
    big.payload = serde_json::json!({ "blob": "x".repeat(3 << 20) });
    store
        .append(&stream("big"), ExpectedVersion::Any, vec![event("t", 0)])
        .await
        .unwrap();
    store
        .append(&stream("big"), ExpectedVersion::Any, vec![big.clone()])
        .await
        .unwrap();
    store
        .append(&stream("big"), ExpectedVersion::Any, vec![event("t", 2)])
        .await
        .unwrap();
    drop(store);
    let store = FileStore::open(dir.path()).expect("reopen");
    let read = store.read_stream(&stream("big"), 1).await.unwrap();
    assert_eq!(read.len(), 3);
    assert_eq!(read[1].payload, big.payload);
}

/// Collects the warnings logged while it is the current subscriber.
#[derive(Clone, Default)]
struct Capture(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

struct Fields(String);
impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.push_str(&format!("{}={:?} ", field.name(), value));
    }
}

impl tracing::Subscriber for Capture {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        if *event.metadata().level() == tracing::Level::WARN {
            let mut fields = Fields(String::new());
            event.record(&mut fields);
            self.0.lock().expect("capture lock").push(fields.0);
        }
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

/// The capture, installed once as this test binary's global subscriber. A scoped
/// `with_default` subscriber is not enough: tracing caches each call site's interest globally,
/// and a parallel test that reaches the call site first (with no subscriber) can leave it cached
/// as "never", which made this test flaky.
fn global_capture() -> &'static Capture {
    static CAPTURE: std::sync::OnceLock<Capture> = std::sync::OnceLock::new();
    CAPTURE.get_or_init(|| {
        let capture = Capture::default();
        tracing::subscriber::set_global_default(capture.clone())
            .expect("no other global subscriber in this test binary");
        capture
    })
}

#[tokio::test]
async fn the_repair_is_logged_with_file_and_offset() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (seg, sizes) = build(dir.path(), 2).await;
    let cut = sizes[3] - 5;
    fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(cut)
        .unwrap();
    let capture = global_capture();
    let store = FileStore::open(dir.path()).expect("open repairs the tail");
    drop(store);
    let logged = capture.0.lock().unwrap().join("\n");
    assert!(logged.contains(&seg.display().to_string()), "{logged}");
    assert!(logged.contains(&format!("offset={}", sizes[2])), "{logged}");
    assert!(logged.contains("torn tail"), "{logged}");
}

/// Damage that appears while the store is open is reported by every read of the damaged
/// record — `read_all`, `visit_all` and `read_stream` — as `Corrupt` naming the file, never
/// returned as an event.
#[tokio::test]
async fn damage_after_open_is_reported_by_every_read() {
    use std::os::unix::fs::FileExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = FileStore::open(dir.path()).expect("open");
    for i in 0..3 {
        store
            .append(&stream("s"), ExpectedVersion::Any, vec![event("t", i)])
            .await
            .expect("append");
    }
    let seg = segments(dir.path()).remove(0);
    // The last byte of the log is the last record's payload: flip it.
    let at = data_len(&seg) - 1;
    let file = fs::OpenOptions::new().write(true).open(&seg).expect("open");
    let mut byte = [0u8];
    fs::File::open(&seg)
        .expect("open")
        .read_exact_at(&mut byte, at)
        .expect("read");
    file.write_all_at(&[byte[0] ^ 0x20], at).expect("write");
    let name = seg
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    let is_corrupt = |e: StoreError| match e {
        StoreError::Corrupt { location, reason } => {
            assert!(location.contains(&name), "{location}");
            assert!(reason.contains("checksum"), "{reason}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    };
    is_corrupt(store.read_all(1, 10).await.expect_err("read_all"));
    is_corrupt(
        store
            .read_stream(&stream("s"), 3)
            .await
            .expect_err("read_stream"),
    );
    let mut lent = Vec::new();
    let err = store
        .visit_all(1, 10, &mut |e| lent.push(e.position))
        .await
        .expect_err("visit_all");
    is_corrupt(err);
    assert_eq!(
        lent,
        [1, 2],
        "the intact records before the damage were lent"
    );
    // The intact records still read.
    assert_eq!(store.read_all(1, 2).await.expect("read_all").len(), 2);
}
