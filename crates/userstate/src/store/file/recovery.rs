//! Opening a store directory: check what is in it, scan every segment once, rebuild the index,
//! and repair a torn tail.
//!
//! The rules (see the fault model in the module docs of `store::file`):
//! - only `segment-*.log` and `userstate.lock` may be in the directory; anything else stops
//!   the open with the names of the strangers;
//! - segments must follow each other without a gap, the first starting at position 1;
//! - in the last segment, the log ends at the first record that is cut short or damaged if no
//!   later batch starts after it (`scan`); zeros after that point are space the writer wrote
//!   ahead and are kept; anything else there is the torn last batch: it is truncated (with a
//!   warning naming the file and offset), together with any records of an `append` whose last
//!   record is missing;
//! - anything else that fails a check (a checksum, a position out of order, a sequence gap, a
//!   damaged sealed segment) stops the open with [`StoreError::Corrupt`] naming file and offset.

use std::fs::{self, File, OpenOptions};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use tracing::{info, warn};

use super::index::{Index, Segment};
use super::lock::LOCK_FILE;
use super::scan::{scan_segment, ScanEnd};
use super::segment::{self, location, SEGMENT_HEADER_LEN};
use crate::store::StoreError;

/// The state recovered from a directory.
pub struct Recovered {
    /// The rebuilt index.
    pub index: Index,
    /// A handle appending to the last segment.
    pub file: File,
    /// Where the last segment's records end.
    pub len: u64,
    /// The last segment's file length (zeros between `len` and here).
    pub allocated: u64,
}

/// Scans `dir` (already locked) and rebuilds the index, repairing a torn tail.
pub fn recover(dir: &Path) -> Result<Recovered, StoreError> {
    let started = Instant::now();
    let segments = list_segments(dir)?;
    let mut index = Index::default();
    let mut last: Option<(PathBuf, u64, u64)> = None;
    for (i, (first, path)) in segments.iter().enumerate() {
        let is_last = i + 1 == segments.len();
        let expected = index.head() + 1;
        if *first != expected {
            return Err(StoreError::Corrupt {
                location: location(path, 0),
                reason: format!(
                    "missing segment: the next segment should start at position {expected}, \
                     this one starts at {first}"
                ),
            });
        }
        if is_last && torn_segment(path, *first)? {
            warn!(file = %path.display(), "removing a segment whose creation was torn");
            fs::remove_file(path)?;
            segment::sync_dir(dir)?;
            break;
        }
        index.add_segment(Segment {
            first: *first,
            path: path.clone(),
            file: Arc::new(File::open(path)?),
            len: SEGMENT_HEADER_LEN,
        });
        let ScanEnd { end, zeros_after } = scan_segment(path, *first, is_last, &mut index)?;
        index.set_last_len(end);
        let mut file_len = fs::metadata(path)?.len();
        if end < file_len && !zeros_after {
            warn!(file = %path.display(), offset = end, dropped_bytes = file_len - end,
                "torn tail: truncating the log after the last whole append");
            let f = OpenOptions::new().write(true).open(path)?;
            f.set_len(end)?;
            f.sync_all()?;
            file_len = end;
        }
        last = Some((path.clone(), end, file_len));
    }
    let (file, len, allocated) = match last {
        Some((path, len, allocated)) => (
            OpenOptions::new().read(true).write(true).open(path)?,
            len,
            allocated,
        ),
        None => {
            let (path, file) = segment::create(dir, index.head() + 1)?;
            index.add_segment(Segment {
                first: index.head() + 1,
                file: Arc::new(File::open(&path)?),
                path,
                len: SEGMENT_HEADER_LEN,
            });
            (file, SEGMENT_HEADER_LEN, SEGMENT_HEADER_LEN)
        }
    };
    info!(dir = %dir.display(), events = index.head(), streams = index.stream_count(),
        segments = index.segment_count(), elapsed_ms = started.elapsed().as_millis() as u64,
        "file store opened");
    Ok(Recovered {
        index,
        file,
        len,
        allocated,
    })
}

/// The segments in `dir` in position order; refuses any other file.
fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, StoreError> {
    let mut segments = Vec::new();
    let mut strangers = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name == LOCK_FILE {
            continue;
        }
        match segment::parse_name(&name) {
            Some(first) if entry.file_type()?.is_file() => segments.push((first, entry.path())),
            _ => strangers.push(name.into_owned()),
        }
    }
    if !strangers.is_empty() {
        strangers.sort();
        return Err(StoreError::Corrupt {
            location: format!("directory {}", dir.display()),
            reason: format!(
                "unexpected files in the store directory: {}; a store directory holds only \
                 segment-<20 digits>.log files and {LOCK_FILE} (move the others away)",
                strangers.join(", ")
            ),
        });
    }
    segments.sort();
    Ok(segments)
}

/// Whether a last segment holds nothing but a header whose writing was cut short (a prefix of
/// it, or zeros).
fn torn_segment(path: &Path, first: u64) -> Result<bool, StoreError> {
    let mut head = Vec::with_capacity(SEGMENT_HEADER_LEN as usize);
    File::open(path)?
        .take(SEGMENT_HEADER_LEN)
        .read_to_end(&mut head)?;
    let header = segment::header(first);
    if head.len() < header.len() && header.starts_with(&head) {
        return Ok(true);
    }
    if head.iter().any(|&b| b != 0) {
        return Ok(false);
    }
    Ok(fs::read(path)?.iter().all(|&b| b == 0))
}
