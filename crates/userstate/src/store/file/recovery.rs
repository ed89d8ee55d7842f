//! Opening a store directory: check what is in it, scan every segment once, rebuild the index,
//! and repair a torn tail (or, opened read-only, report what a writable open would repair).
//!
//! The rules (see the fault model in the module docs of `store::file`):
//! - only `segment-*.log`, `manifest` (and a leftover `manifest.tmp`) and `userstate.lock` may
//!   be in the directory; anything else stops the open with the names of the strangers;
//! - every segment the manifest lists must be there; a segment it does not list is accepted
//!   only as the newest one (created by a rotation a crash interrupted before the manifest
//!   was replaced); without a manifest (a directory older than it) every segment is accepted
//!   and the open writes one;
//! - segments must follow each other without a gap, the first starting at position 1;
//! - in the last segment, the log ends at the first record that is cut short, or damaged with
//!   a sector missing as a torn write leaves it, if no later batch starts after it (`scan`);
//!   zeros after that point are space the writer wrote ahead and are kept; anything else there
//!   is the torn last batch: it is truncated (with a warning naming the file and offset),
//!   together with any records of an `append` whose last record is missing;
//! - anything else that fails a check (a checksum, a position out of order, a sequence gap, a
//!   damaged sealed segment, a whole record in the newest batch that fails its checksum)
//!   stops the open with [`StoreError::Corrupt`] naming file and offset.
//!
//! A writable open also tightens the directory to mode 0700 and the store's files to 0600 if
//! they were looser. A read-only open changes nothing: no truncation, no removal, no manifest,
//! no change of mode; it returns what it would have repaired as [`PendingRepair`]s.

use std::fmt;
use std::fs::{self, File, OpenOptions, Permissions};
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use tracing::{info, warn};

use super::index::{Index, Segment};
use super::io::{SegmentIo, FILE_MODE};
use super::lock::LOCK_FILE;
use super::manifest::{self, MANIFEST, MANIFEST_TMP};
use super::scan::{scan_segment, ScanEnd};
use super::segment::{self, location, SEGMENT_HEADER_LEN};
use crate::store::StoreError;

/// Mode of the store directory: its owner only.
pub const DIR_MODE: u32 = 0o700;

/// Something a read-only open found that a writable open would repair (a torn tail, a
/// segment whose creation was cut short, a missing manifest), left as it was.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingRepair {
    /// The file, and the offset when there is one.
    pub location: String,
    /// What the next writable open will do there.
    pub repair: String,
}

impl fmt::Display for PendingRepair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.location, self.repair)
    }
}

/// The newest segment, where the syncer goes on writing.
pub struct LastSegment {
    /// Its path.
    pub path: PathBuf,
    /// Its first position.
    pub first: u64,
    /// Where its records end.
    pub len: u64,
    /// Its file length (zeros between `len` and here).
    pub allocated: u64,
}

/// The state recovered from a directory.
pub struct Recovered {
    /// The rebuilt index.
    pub index: Index,
    /// The segment to write next (`None` only for a read-only open of an empty directory).
    pub last: Option<LastSegment>,
    /// The first positions of every segment, as the manifest now lists them.
    pub segments: Vec<u64>,
    /// What a read-only open left unrepaired (always empty for a writable open).
    pub pending: Vec<PendingRepair>,
}

/// Scans `dir` and rebuilds the index. With `io` (the directory locked), repairs what needs it
/// and writes through `io`; without, changes nothing and reports. `live` (only without `io`):
/// a writer holds the directory and may append, rotate or write the manifest while this
/// reads, so what lies past the last whole append of the newest segment (a batch being
/// written, or a segment being created) is the end of the log, not a repair to report.
pub fn recover(
    dir: &Path,
    io: Option<&dyn SegmentIo>,
    live: bool,
) -> Result<Recovered, StoreError> {
    let live = live && io.is_none();
    let started = Instant::now();
    if io.is_some() {
        tighten(dir)?;
    }
    let listed = manifest::read(dir)?;
    let segments = list_segments(dir)?;
    check_against_manifest(dir, &segments, listed.as_deref())?;
    let mut pending = Vec::new();
    let mut index = Index::default();
    let mut last: Option<LastSegment> = None;
    let mut firsts = Vec::new();
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
        let unlisted = listed.as_ref().is_none_or(|l| !l.contains(first));
        if is_last && unlisted && torn_segment(path, *first)? {
            if live {
                // A rotation is creating it: nothing of it is acknowledged yet.
                break;
            }
            if io.is_none() {
                pending.push(PendingRepair {
                    location: format!("file {}", path.display()),
                    repair: "a segment whose creation was cut short: removed".into(),
                });
                break;
            }
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
        firsts.push(*first);
        let ScanEnd { end, zeros_after } =
            scan_segment(path, *first, is_last, io.is_none(), &mut index)?;
        index.set_last_len(end);
        let mut file_len = fs::metadata(path)?.len();
        if end < file_len && !zeros_after && !live {
            if io.is_none() {
                pending.push(PendingRepair {
                    location: location(path, end),
                    repair: format!(
                        "torn tail: {} bytes after the last whole append, truncated",
                        file_len - end
                    ),
                });
            } else {
                warn!(file = %path.display(), offset = end, dropped_bytes = file_len - end,
                    "torn tail: truncating the log after the last whole append");
                let f = OpenOptions::new().write(true).open(path)?;
                f.set_len(end)?;
                f.sync_all()?;
                file_len = end;
            }
        }
        last = Some(LastSegment {
            path: path.clone(),
            first: *first,
            len: end,
            allocated: file_len,
        });
    }
    if let Some(io) = io {
        if last.is_none() {
            let first = index.head() + 1;
            let (path, file) = segment::create(io, dir, first)?;
            drop(file);
            index.add_segment(Segment {
                first,
                file: Arc::new(File::open(&path)?),
                path: path.clone(),
                len: SEGMENT_HEADER_LEN,
            });
            firsts.push(first);
            last = Some(LastSegment {
                path,
                first,
                len: SEGMENT_HEADER_LEN,
                allocated: SEGMENT_HEADER_LEN,
            });
        }
        if listed.as_ref() != Some(&firsts) || dir.join(MANIFEST_TMP).exists() {
            manifest::write(io, dir, &firsts)?;
        }
    } else if listed.is_none() && !segments.is_empty() && !live {
        pending.push(PendingRepair {
            location: format!("directory {}", dir.display()),
            repair: "no segment manifest (written before the store had one): written".into(),
        });
    }
    info!(dir = %dir.display(), events = index.head(), streams = index.stream_count(),
        segments = index.segment_count(), elapsed_ms = started.elapsed().as_millis() as u64,
        read_only = io.is_none(), live, "file store opened");
    Ok(Recovered {
        index,
        last,
        segments: firsts,
        pending,
    })
}

/// Refuses a directory missing a segment its manifest lists, or holding an unlisted segment
/// other than the newest.
fn check_against_manifest(
    dir: &Path,
    segments: &[(u64, PathBuf)],
    listed: Option<&[u64]>,
) -> Result<(), StoreError> {
    let Some(listed) = listed else {
        return Ok(());
    };
    for first in listed {
        if !segments.iter().any(|(f, _)| f == first) {
            return Err(StoreError::Corrupt {
                location: format!("file {}", dir.join(segment::file_name(*first)).display()),
                reason: format!(
                    "missing segment: the manifest lists the segment starting at position \
                     {first}, and it is not in the directory (its events are lost; restore \
                     it from a backup)"
                ),
            });
        }
    }
    let newest_listed = listed.last().copied().unwrap_or(0);
    for (i, (first, path)) in segments.iter().enumerate() {
        let newest = i + 1 == segments.len();
        let accepted = listed.contains(first) || (newest && *first > newest_listed);
        if !accepted {
            return Err(StoreError::Corrupt {
                location: format!("file {}", path.display()),
                reason: "a segment the manifest does not list, and not the newest one".into(),
            });
        }
    }
    Ok(())
}

/// Tightens `dir` to [`DIR_MODE`] and the store's files in it to [`FILE_MODE`] where they are
/// looser (a directory written by an older version, or created by hand).
fn tighten(dir: &Path) -> Result<(), StoreError> {
    let tight = |path: &Path, mode: u32| -> Result<(), StoreError> {
        let current = fs::metadata(path)?.permissions().mode() & 0o777;
        if current & !mode != 0 {
            warn!(path = %path.display(), mode = format!("{current:o}"),
                wanted = format!("{mode:o}"), "tightening the permissions of the file store");
            fs::set_permissions(path, Permissions::from_mode(mode))?;
        }
        Ok(())
    };
    tight(dir, DIR_MODE)?;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let ours = name == LOCK_FILE
            || name == MANIFEST
            || name == MANIFEST_TMP
            || segment::parse_name(&name).is_some();
        if ours && entry.file_type()?.is_file() {
            tight(&entry.path(), FILE_MODE)?;
        }
    }
    Ok(())
}

/// The segments in `dir` in position order; refuses any other file.
fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, StoreError> {
    let mut segments = Vec::new();
    let mut strangers = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name == LOCK_FILE || name == MANIFEST || name == MANIFEST_TMP {
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
                 segment-<20 digits>.log files, {MANIFEST} and {LOCK_FILE} (move the others \
                 away)",
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
