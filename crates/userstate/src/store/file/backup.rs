//! A consistent copy of an open store: the prefix of the log its index holds, copied segment
//! by segment into a new directory that [`FileStore::open`](super::FileStore::open) opens.
//!
//! The copy needs no lock and changes nothing in the source: sealed segments are never
//! written again, and the newest one only past the end of its last indexed record, so the
//! bytes `0..len` of every indexed segment stay as they were while they are copied (read
//! with positional reads through the index's own handles, so even a segment renamed or cut
//! meanwhile would be read from the file the index holds). Each copy ends exactly at its last
//! record (no zeros ahead), is fsynced, and a manifest listing them is written last, so the
//! copy is a store that was closed cleanly at that position.

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::io::{StdIo, FILE_MODE};
use super::manifest;
use super::recovery::DIR_MODE;
use super::segment;
use super::Shared;
use crate::store::StoreError;

/// What [`FileStore::backup`](super::FileStore::backup) copied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupSummary {
    /// The last position in the copy (every event up to it, none after).
    pub head: u64,
    /// Segments copied.
    pub segments: usize,
    /// Bytes copied (headers and records).
    pub bytes: u64,
}

/// Copies the indexed prefix of the log to `out`, which must not exist or be an empty
/// directory. On failure, removes what it created.
pub fn backup(
    shared: &Shared,
    out: &Path,
    mut progress: impl FnMut(u64, u64),
) -> Result<BackupSummary, StoreError> {
    // One look at the index: the head and the end of every segment's records, together.
    let (head, parts) = {
        let index = shared.read_index();
        (index.head(), index.segment_extents())
    };
    let created_dir = match fs::read_dir(out) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(StoreError::InvalidArgument(format!(
                    "the backup directory {} is not empty",
                    out.display()
                )));
            }
            false
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(DIR_MODE)
                .create(out)?;
            true
        }
        Err(e) => return Err(e.into()),
    };
    let mut written: Vec<PathBuf> = Vec::new();
    let result = copy(out, &parts, &mut written, &mut progress);
    match result {
        Ok(bytes) => Ok(BackupSummary {
            head,
            segments: parts.len(),
            bytes,
        }),
        Err(e) => {
            for path in written.iter().rev() {
                let _ = fs::remove_file(path);
            }
            if created_dir {
                let _ = fs::remove_dir(out);
            }
            Err(e)
        }
    }
}

/// One segment to copy: its first position, its read handle and path, and where its
/// records end.
pub struct Extent {
    /// Position of its first record.
    pub first: u64,
    /// The index's read handle.
    pub file: std::sync::Arc<File>,
    /// Its path, for errors.
    pub path: PathBuf,
    /// Bytes to copy (header and whole records).
    pub len: u64,
}

fn copy(
    out: &Path,
    parts: &[Extent],
    written: &mut Vec<PathBuf>,
    progress: &mut impl FnMut(u64, u64),
) -> Result<u64, StoreError> {
    const PIECE: usize = 4 << 20;
    let total: u64 = parts.iter().map(|p| p.len).sum();
    let mut done = 0u64;
    let mut buf = vec![0u8; PIECE];
    let mut firsts = Vec::with_capacity(parts.len());
    for part in parts {
        let target = out.join(segment::file_name(part.first));
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(FILE_MODE)
            .open(&target)?;
        written.push(target.clone());
        let mut at = 0u64;
        while at < part.len {
            let n = PIECE.min((part.len - at) as usize);
            part.file
                .read_exact_at(&mut buf[..n], at)
                .map_err(|e| StoreError::Corrupt {
                    location: segment::location(&part.path, at),
                    reason: format!("cannot read {n} bytes of the indexed log: {e}"),
                })?;
            file.write_all(&buf[..n])?;
            at += n as u64;
            done += n as u64;
            progress(done, total);
        }
        file.sync_all()?;
        firsts.push(part.first);
    }
    if !firsts.is_empty() {
        manifest::write(&StdIo, out, &firsts)?;
        written.push(out.join(manifest::MANIFEST));
    }
    segment::sync_dir(out)?;
    Ok(done)
}
