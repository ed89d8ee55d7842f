//! Issue 20 on real files: the store's files are private (item 5), a read-only open changes
//! nothing (item 10), and damage at the tail — a changed last record, a deleted newest
//! segment — is refused instead of silently dropping acknowledged events (item 11).

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use userstate::testkit::{event, stream};
use userstate::{EventStore, ExpectedVersion, FileStore, StoreError};

fn mode(path: &Path) -> u32 {
    fs::metadata(path).expect("metadata").permissions().mode() & 0o777
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut s: Vec<PathBuf> = fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    s.sort();
    s
}

/// Where the records of a segment end (the writer keeps zeros ahead of the log; a frame ends
/// with its JSON payload, never with a zero byte).
fn data_len(path: &Path) -> u64 {
    let bytes = fs::read(path).expect("read");
    bytes
        .iter()
        .rposition(|&b| b != 0)
        .map_or(0, |i| i as u64 + 1)
}

/// Every file of `dir`: name -> (mode, bytes).
fn snapshot(dir: &Path) -> BTreeMap<String, (u32, Vec<u8>)> {
    fs::read_dir(dir)
        .expect("read dir")
        .map(|e| {
            let path = e.expect("entry").path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, (mode(&path), fs::read(&path).expect("read")))
        })
        .collect()
}

async fn append_each(store: &FileStore, n: u64) -> Vec<u64> {
    let mut ends = Vec::new();
    for i in 0..n {
        let e = store
            .append(
                &stream(&format!("s{}", i % 3)),
                ExpectedVersion::Any,
                vec![event("t", i)],
            )
            .await
            .expect("append");
        ends.push(e[0].position);
    }
    ends
}

fn corrupt(result: Result<FileStore, StoreError>) -> (String, String) {
    match result {
        Err(StoreError::Corrupt { location, reason }) => (location, reason),
        Err(other) => panic!("expected Corrupt, got {other:?}"),
        Ok(_) => panic!("expected Corrupt, but the store opened"),
    }
}

#[tokio::test]
async fn the_directory_and_every_file_the_store_creates_are_private() {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = root.path().join("data").join("events");
    let store = FileStore::options()
        .segment_size(4096)
        .open(&dir)
        .expect("open");
    append_each(&store, 60).await;
    assert!(segments(&dir).len() > 1, "rotated");
    assert_eq!(mode(&dir), 0o700, "the store directory");
    assert_eq!(
        mode(&root.path().join("data")),
        0o700,
        "a directory it created"
    );
    for (name, (mode, _)) in snapshot(&dir) {
        assert_eq!(mode, 0o600, "{name}");
    }
    assert!(dir.join("manifest").exists() && dir.join("userstate.lock").exists());
    drop(store);

    // A directory left looser (an older version, or made by hand) is tightened on open.
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).expect("chmod");
    for seg in segments(&dir) {
        fs::set_permissions(&seg, fs::Permissions::from_mode(0o644)).expect("chmod");
    }
    let store = FileStore::open(&dir).expect("reopen");
    assert_eq!(mode(&dir), 0o700);
    for (name, (mode, _)) in snapshot(&dir) {
        assert_eq!(mode, 0o600, "{name}");
    }
    drop(store);
}

/// A bit flip in the last whole record is not a torn write: every sector of it was written.
/// Dropping it would lose an acknowledged event, so the open refuses, naming file and offset,
/// and leaves the file as it was.
#[tokio::test]
async fn a_flipped_bit_in_the_last_record_is_refused_not_truncated() {
    let src = tempfile::tempdir().expect("tempdir");
    let store = FileStore::open(src.path()).expect("open");
    append_each(&store, 4).await;
    let seg = segments(src.path()).remove(0);
    let before_last = data_len(&seg);
    append_each(&store, 1).await;
    drop(store);
    let end = data_len(&seg);
    let name = seg.file_name().unwrap().to_string_lossy().into_owned();
    for at in (before_last..end).step_by(7) {
        let dir = tempfile::tempdir().expect("tempdir");
        for (file, (_, bytes)) in snapshot(src.path()) {
            fs::write(dir.path().join(file), bytes).expect("copy");
        }
        let copy = dir.path().join(&name);
        let mut bytes = fs::read(&copy).expect("read");
        bytes[at as usize] ^= 0x04;
        fs::write(&copy, &bytes).expect("write");
        let (location, reason) = corrupt(FileStore::open(dir.path()));
        assert!(
            location.contains(&name) && location.ends_with(&format!("offset {before_last}")),
            "flip at {at}: {location}: {reason}"
        );
        assert_eq!(
            fs::read(&copy).expect("read"),
            bytes,
            "flip at {at}: untouched"
        );
    }
}

/// The manifest lists every segment: losing the newest (whose events were acknowledged) is
/// found, where before the log silently ended with the previous segment.
#[tokio::test]
async fn a_deleted_newest_segment_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = FileStore::options()
        .segment_size(4096)
        .open(dir.path())
        .expect("open");
    append_each(&store, 80).await;
    drop(store);
    let segs = segments(dir.path());
    assert!(segs.len() >= 3, "rotated into {} segments", segs.len());
    let newest = segs.last().unwrap();
    fs::remove_file(newest).expect("remove");
    let (location, reason) = corrupt(FileStore::open(dir.path()));
    assert!(
        location.contains(&*newest.file_name().unwrap().to_string_lossy()),
        "{location}"
    );
    assert!(reason.contains("missing segment"), "{reason}");
}

/// A data directory from before the manifest opens as it did, and gets one.
#[tokio::test]
async fn a_directory_without_a_manifest_opens_and_gets_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = FileStore::options()
        .segment_size(4096)
        .open(dir.path())
        .expect("open");
    append_each(&store, 50).await;
    drop(store);
    fs::remove_file(dir.path().join("manifest")).expect("remove the manifest");
    let store = FileStore::open(dir.path()).expect("open without a manifest");
    assert_eq!(store.head_position().await.unwrap(), 50);
    drop(store);
    let listed = fs::read_to_string(dir.path().join("manifest")).expect("written");
    assert_eq!(
        listed.lines().filter(|l| l.starts_with("segment ")).count(),
        segments(dir.path()).len()
    );
    // Now it guards the newest segment too.
    fs::remove_file(segments(dir.path()).last().unwrap()).expect("remove");
    corrupt(FileStore::open(dir.path()));
}

/// A read-only open of a store with a torn tail and no lock file: reads every whole event,
/// reports the tail, and creates, writes, truncates and removes nothing.
#[tokio::test]
async fn a_read_only_open_changes_nothing_and_reports_the_torn_tail() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = FileStore::open(dir.path()).expect("open");
    append_each(&store, 5).await;
    drop(store);
    let seg = segments(dir.path()).remove(0);
    let cut = data_len(&seg) - 5;
    fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .expect("open")
        .set_len(cut)
        .expect("cut");
    fs::remove_file(dir.path().join("userstate.lock")).expect("remove lock");
    let before = snapshot(dir.path());

    let store = FileStore::open_read_only(dir.path()).expect("read-only open");
    assert_eq!(store.read_all(1, 100).await.unwrap().len(), 4);
    let pending = store.pending_repairs().to_vec();
    assert_eq!(pending.len(), 1, "{pending:?}");
    assert!(
        pending[0].to_string().contains("torn tail"),
        "{}",
        pending[0]
    );
    assert!(store
        .append(&stream("x"), ExpectedVersion::Any, vec![event("t", 0)])
        .await
        .is_err());
    assert!(store.health().is_err());
    drop(store);
    assert_eq!(snapshot(dir.path()), before, "nothing changed");

    // A writer holding the directory does not keep a read-only open out (ADR 0017): it reads
    // the live log up to the writer's last whole append and reports nothing to repair; and a
    // read-only open does not keep a writer out.
    let writer = FileStore::open(dir.path()).expect("writable open repairs");
    let live = FileStore::open_read_only(dir.path()).expect("read-only open beside a writer");
    assert!(live.pending_repairs().is_empty());
    assert_eq!(live.head(), 4);
    drop(writer);
    let reader = FileStore::open_read_only(dir.path()).expect("read-only open");
    assert!(reader.pending_repairs().is_empty());
    let writer = FileStore::open(dir.path()).expect("a writer opens beside a reader");
    assert_eq!(reader.read_all(1, 100).await.unwrap().len(), 4);
    drop(writer);
}
