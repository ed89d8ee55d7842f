//! The open-time scan of one segment: reads it front to back in cache-sized chunks, checks
//! every frame and its place in the log, and feeds the index.
//!
//! Chunks (1 MiB, grown only for a larger record) keep the checked bytes in cache right after
//! the kernel copied them, and keep memory flat however large the segment is.
//!
//! **A torn write or damage?** The newest batch is written in place over zeros (ADR 0007) with
//! one `pwrite`, so a crash (or a failed sync) leaves each of its 512-byte sectors either as
//! written or as it was before: zeros after the previous batch's last byte. So a torn batch's
//! first undecodable record has a sector that reads as zeros from the record's start (or the
//! sector's) to the sector's end, within the bytes the record covers (its declared length if
//! its header checks out, else its 12-byte header), or it runs past the end of the file. A
//! record that is whole in length and fails its checksum with no such sector was written whole
//! and changed afterwards: damage to a possibly acknowledged event, refused, never truncated.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::time::Duration;

use super::index::Index;
use super::io::{read_exact_at, SegmentFile};
use super::record::{declared_len, decode, Decoded, HEADER_LEN};
use super::segment::{check_header, location, SEGMENT_HEADER_LEN};
use crate::store::StoreError;

const CHUNK: usize = 1 << 20;
/// The smallest unit a disk writes whole: a torn write loses whole sectors.
const SECTOR: u64 = 512;
/// How often a read-only scan reads an undecodable place again before it calls it damage
/// (see [`scan_segment`]), and how long it waits in between.
const REREADS: usize = 5;
const REREAD_PAUSE: Duration = Duration::from_millis(20);

/// A forward-only window over a file.
struct Window {
    file: File,
    buf: Vec<u8>,
    /// `buf[pos..end]` holds unread bytes; `buf[pos]` is at file offset `offset`.
    pos: usize,
    end: usize,
    offset: u64,
    eof: bool,
}

impl Window {
    fn bytes(&self) -> &[u8] {
        &self.buf[self.pos..self.end]
    }

    fn advance(&mut self, n: usize) {
        self.pos += n;
        self.offset += n as u64;
    }

    /// Reads more, keeping the unread bytes; grows the buffer if they already fill it.
    fn refill(&mut self) -> std::io::Result<()> {
        self.buf.copy_within(self.pos..self.end, 0);
        self.end -= self.pos;
        self.pos = 0;
        if self.end == self.buf.len() {
            self.buf.resize(self.buf.len() * 2, 0);
        }
        while self.end < self.buf.len() {
            let n = self.file.read(&mut self.buf[self.end..])?;
            if n == 0 {
                self.eof = true;
                break;
            }
            self.end += n;
        }
        Ok(())
    }

    /// Forgets what it holds and reads the file again from the current offset (bytes a live
    /// writer wrote since they were read).
    fn reread(&mut self) -> std::io::Result<()> {
        self.file.seek(SeekFrom::Start(self.offset))?;
        self.pos = 0;
        self.end = 0;
        self.eof = false;
        self.refill()
    }

    /// What follows the undecodable frame here: nothing but zeros, a later batch's start (a
    /// whole, checksummed record carrying the batch-start mark at any offset after this one), a
    /// torn batch, or a damaged record. Reads the rest of the file (only at the end of the last
    /// segment, or on damage).
    fn after_damage(&mut self) -> std::io::Result<(AfterDamage, Vec<u8>)> {
        let at = self.offset;
        let mut rest = self.bytes().to_vec();
        if !self.eof {
            self.file.read_to_end(&mut rest)?;
        }
        let verdict = Self::judge(at, &rest);
        Ok((verdict, rest))
    }

    /// The verdict of [`after_damage`](Self::after_damage) on `rest`, read from offset `at`.
    fn judge(at: u64, rest: &[u8]) -> AfterDamage {
        // Trailing zeros hold no record; skip them rather than try every offset in them.
        let end = rest.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
        if end == 0 {
            return AfterDamage::Zeros;
        }
        let later = (1..end).any(|at| {
            matches!(decode(&rest[at..]), Decoded::Record { record, .. } if record.starts_batch)
        });
        if later {
            AfterDamage::LaterBatch
        } else if lost_sector(at, rest, declared_len(rest).unwrap_or(HEADER_LEN)) {
            AfterDamage::TornBatch
        } else {
            AfterDamage::Damaged
        }
    }
}

/// Whether one of the 512-byte sectors overlapping the first `limit` bytes of `rest` (the
/// bytes from file offset `at` to the end of the file) reads as zeros from `at` or its start to
/// its end: a sector a torn write did not reach. Bytes past the end of the file count as zeros.
fn lost_sector(at: u64, rest: &[u8], limit: usize) -> bool {
    let mut sector = at - at % SECTOR;
    while sector < at + limit as u64 {
        let from = (sector.max(at) - at) as usize;
        let to = ((sector + SECTOR - at) as usize).min(rest.len());
        if rest.get(from..to).is_none_or(|b| b.iter().all(|&x| x == 0)) {
            return true;
        }
        sector += SECTOR;
    }
    false
}

/// What [`Window::after_damage`] found.
#[derive(PartialEq, Eq)]
enum AfterDamage {
    /// Only zeros: the space the writer wrote ahead of the log.
    Zeros,
    /// Bytes of a last batch a crash left partly written.
    TornBatch,
    /// The start of a later batch: the damage is inside the log.
    LaterBatch,
    /// A record written whole and changed since: no sector of it is missing.
    Damaged,
}

/// Where a segment's log ends, as found by [`scan_segment`].
pub struct ScanEnd {
    /// The offset after the last whole append.
    pub end: u64,
    /// Whether every byte after `end` is zero (space written ahead, nothing to repair).
    pub zeros_after: bool,
}

/// Scans the segment at `path` (whose name says it starts at `first`) into `index`. Returns
/// where the last whole append ends; bytes after it other than zeros are a torn tail, accepted
/// only in the last segment (a sealed segment must end exactly there).
///
/// With `read_only` (the scan holds no lock, and a writer may be appending to the last
/// segment meanwhile: ADR 0017), an undecodable place in the last segment that looks like
/// damage or is followed by a later batch is read again, up to [`REREADS`] times
/// [`REREAD_PAUSE`] apart: bytes read before the writer wrote them (zeros, or half of a
/// `pwrite` being copied) then decode, and only damage that reads the same twice is refused.
pub fn scan_segment(
    path: &Path,
    first: u64,
    is_last: bool,
    read_only: bool,
    index: &mut Index,
) -> Result<ScanEnd, StoreError> {
    let mut w = Window {
        file: File::open(path)?,
        buf: vec![0; CHUNK],
        pos: 0,
        end: 0,
        offset: 0,
        eof: false,
    };
    w.refill()?;
    check_header(path, w.bytes(), first)?;
    w.advance(SEGMENT_HEADER_LEN as usize);
    let corrupt = |offset: u64, reason: String| StoreError::Corrupt {
        location: location(path, offset),
        reason,
    };
    let mut committed = w.offset;
    let zeros_after: bool;
    // The append being read, not yet known to be whole: its stream and records so far.
    let mut pending_stream = String::new();
    let mut pending = 0usize;
    loop {
        let at = w.offset;
        let (record, len) = match decode(w.bytes()) {
            Decoded::Record { record, len } => (record, len),
            Decoded::Incomplete if !w.eof => {
                w.refill()?;
                continue;
            }
            Decoded::Incomplete if w.bytes().is_empty() || is_last => {
                zeros_after = w.bytes().is_empty() && pending == 0;
                break;
            }
            Decoded::Incomplete => {
                return Err(corrupt(at, "record cut short in a sealed segment".into()))
            }
            // In the last segment, damage after which no later batch starts is the end of the
            // log: the zeros ahead of it, or a last batch the crash left partly written (its
            // pages reach the disk in any order). Damage followed by a later batch is not.
            Decoded::Invalid(why) => {
                if is_last {
                    let (mut verdict, mut seen) = w.after_damage()?;
                    if read_only
                        && matches!(verdict, AfterDamage::LaterBatch | AfterDamage::Damaged)
                    {
                        let mut decoded = false;
                        for _ in 0..REREADS {
                            std::thread::sleep(REREAD_PAUSE);
                            w.reread()?;
                            if matches!(decode(w.bytes()), Decoded::Record { .. })
                                || (!w.eof && matches!(decode(w.bytes()), Decoded::Incomplete))
                            {
                                decoded = true;
                                break;
                            }
                            let (again, rest) = w.after_damage()?;
                            let stable = rest == seen;
                            (verdict, seen) = (again, rest);
                            if stable
                                || !matches!(
                                    verdict,
                                    AfterDamage::LaterBatch | AfterDamage::Damaged
                                )
                            {
                                break;
                            }
                        }
                        if decoded {
                            continue;
                        }
                    }
                    match verdict {
                        AfterDamage::LaterBatch => {}
                        AfterDamage::Damaged => {
                            return Err(corrupt(
                                at,
                                format!(
                                    "{why} in the newest batch, whose every sector was written: \
                                     damage to a record that may have been acknowledged, not a \
                                     torn write"
                                ),
                            ))
                        }
                        found => {
                            zeros_after = found == AfterDamage::Zeros && pending == 0;
                            break;
                        }
                    }
                }
                return Err(corrupt(at, why.into()));
            }
        };
        let position = index.head() + 1;
        if record.position != position {
            return Err(corrupt(
                at,
                format!("expected position {position}, found {}", record.position),
            ));
        }
        // Format 1 (before the hash chain, ADR 0020): read only, and only a whole log of it.
        let unchained = record.hash.is_none();
        if *index.unchained.get_or_insert(unchained) != unchained {
            return Err(corrupt(
                at,
                "records of format 1 (before the hash chain) and format 2 in one log".into(),
            ));
        }
        if unchained && !read_only {
            return Err(corrupt(
                at,
                "a record of format 1, written before the hash chain (ADR 0020): this release \
                 writes format 2 only; export the log with this release (`userstate export` \
                 reads it) and import it into a new data directory (docs/OPERATIONS.md, \
                 \"Upgrading\")"
                    .into(),
            ));
        }
        if pending > 0 && record.stream != pending_stream {
            return Err(corrupt(
                at,
                format!(
                    "an append to {pending_stream} is interleaved with one to {}",
                    record.stream
                ),
            ));
        }
        let offset = u32::try_from(at).map_err(|_| corrupt(at, "segment too large".into()))?;
        if let Err(due) = index.push_checked(record.stream, offset, record.sequence) {
            return Err(corrupt(
                at,
                format!(
                    "stream {} expected sequence {due}, found {}",
                    record.stream, record.sequence
                ),
            ));
        }
        if record.ends_append {
            pending = 0;
            w.advance(len);
            committed = w.offset;
        } else {
            if pending == 0 {
                record.stream.clone_into(&mut pending_stream);
            }
            pending += 1;
            w.advance(len);
        }
    }
    if pending > 0 {
        index.pop(&pending_stream, pending);
    }
    if !is_last && (committed != w.offset || !w.bytes().is_empty()) {
        return Err(corrupt(
            committed,
            "a sealed segment ends inside an append".into(),
        ));
    }
    Ok(ScanEnd {
        end: committed,
        zeros_after,
    })
}

/// Checks, after the syncer repaired the segment `path` following a failed write, that it holds
/// exactly what was acknowledged: a valid header for `first`, then whole, checksummed records
/// with positions `first..=head` back to back, ending exactly at `len`.
pub fn check_durable(
    file: &dyn SegmentFile,
    path: &Path,
    first: u64,
    len: u64,
    head: u64,
) -> Result<(), StoreError> {
    let corrupt = |offset: u64, reason: String| StoreError::Corrupt {
        location: location(path, offset),
        reason: format!("after a failed write, the acknowledged log does not read back: {reason}"),
    };
    let size = usize::try_from(len).map_err(|_| corrupt(0, "segment too large".into()))?;
    let mut buf = vec![0; size];
    read_exact_at(file, &mut buf, 0).map_err(|e| corrupt(0, e.to_string()))?;
    check_header(path, &buf, first)?;
    let mut at = SEGMENT_HEADER_LEN as usize;
    let mut position = first;
    while at < size {
        match decode(&buf[at..]) {
            Decoded::Record { record, len } if record.position == position => {
                at += len;
                position += 1;
            }
            Decoded::Record { record, .. } => {
                return Err(corrupt(
                    at as u64,
                    format!("expected position {position}, found {}", record.position),
                ))
            }
            Decoded::Incomplete => return Err(corrupt(at as u64, "record cut short".into())),
            Decoded::Invalid(why) => return Err(corrupt(at as u64, why.into())),
        }
    }
    if position != head + 1 {
        return Err(corrupt(
            len,
            format!(
                "the records end at position {}, {head} was acknowledged",
                position - 1
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::FileExt;

    use super::*;
    use crate::store::{EventStore, ExpectedVersion};
    use crate::testkit::{event, stream};

    /// A segment of three appends, each its own batch (so each record carries the batch-start
    /// mark), and the offset and bytes of the second record.
    async fn three_batches(dir: &Path) -> (std::path::PathBuf, u64, Vec<u8>) {
        let store = crate::FileStore::open(dir).unwrap();
        for i in 0..3 {
            store
                .append(&stream("s"), ExpectedVersion::Any, vec![event("t", i)])
                .await
                .unwrap();
        }
        drop(store);
        let path = dir.join(super::super::segment::file_name(1));
        let bytes = std::fs::read(&path).unwrap();
        let mut at = SEGMENT_HEADER_LEN as usize;
        let Decoded::Record { len, .. } = decode(&bytes[at..]) else {
            panic!("a first record")
        };
        at += len;
        let Decoded::Record { len, .. } = decode(&bytes[at..]) else {
            panic!("a second record")
        };
        (path, at as u64, bytes[at..at + len].to_vec())
    }

    fn scan(path: &Path, read_only: bool) -> Result<u64, StoreError> {
        let mut index = Index::default();
        scan_segment(path, 1, true, read_only, &mut index)?;
        Ok(index.head())
    }

    /// A read-only scan beside a writer may read a record before the writer wrote it (zeros
    /// where it goes, a later batch after it): it reads the place again, and once the bytes
    /// are there it goes on. A writable open (nobody else writes) would refuse it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_read_only_scan_reads_again_a_record_being_written() {
        let dir = tempfile::tempdir().unwrap();
        let (path, at, record) = three_batches(dir.path()).await;
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        file.write_all_at(&vec![0; record.len()], at).unwrap();
        assert!(
            matches!(scan(&path, false), Err(StoreError::Corrupt { .. })),
            "damage followed by a later batch"
        );
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(5));
            file.write_all_at(&record, at).unwrap();
        });
        assert_eq!(scan(&path, true).unwrap(), 3, "every record, once written");
        writer.join().unwrap();
    }

    /// Damage that reads the same when read again is refused by a read-only scan too.
    #[tokio::test]
    async fn a_read_only_scan_refuses_damage_that_stays() {
        let dir = tempfile::tempdir().unwrap();
        let (path, at, _) = three_batches(dir.path()).await;
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        file.write_all_at(&[0xff; 4], at + 20).unwrap();
        let started = std::time::Instant::now();
        match scan(&path, true) {
            Err(StoreError::Corrupt { location, .. }) => {
                assert!(location.contains(&format!("offset {at}")), "{location}")
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "read again once, not forever"
        );
    }
}
