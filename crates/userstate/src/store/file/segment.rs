//! Segment files: naming, the 16-byte segment header, creation with directory fsync.
//!
//! A segment is `segment-{first_position:020}.log`: a header (`USTSEG01` + the first position,
//! little endian) followed by whole record frames. Only the newest segment is ever written to;
//! older ones are sealed and never rewritten.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::store::StoreError;

/// Bytes in a segment header.
pub const SEGMENT_HEADER_LEN: u64 = 16;
const MAGIC: &[u8; 8] = b"USTSEG01";
const PREFIX: &str = "segment-";
const SUFFIX: &str = ".log";

/// The file name of the segment whose first record has position `first`.
pub fn file_name(first: u64) -> String {
    format!("{PREFIX}{first:020}{SUFFIX}")
}

/// The first position encoded in a segment file name, if `name` is one.
pub fn parse_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().filter(|&n| n > 0)
}

/// The header bytes of a segment starting at `first`.
pub fn header(first: u64) -> [u8; SEGMENT_HEADER_LEN as usize] {
    let mut h = [0; SEGMENT_HEADER_LEN as usize];
    h[..8].copy_from_slice(MAGIC);
    h[8..].copy_from_slice(&first.to_le_bytes());
    h
}

/// Checks a segment header read from `path` against the position its name promises.
pub fn check_header(path: &Path, bytes: &[u8], first: u64) -> Result<(), StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt {
        location: location(path, 0),
        reason,
    };
    let Some(h) = bytes.get(..SEGMENT_HEADER_LEN as usize) else {
        return Err(corrupt("segment header is cut short".into()));
    };
    if &h[..8] != MAGIC {
        return Err(corrupt("not a userstate segment (bad magic)".into()));
    }
    let mut n = [0; 8];
    n.copy_from_slice(&h[8..]);
    let stored = u64::from_le_bytes(n);
    if stored != first {
        return Err(corrupt(format!(
            "header says first position {stored}, the file name says {first}"
        )));
    }
    Ok(())
}

/// Creates a new, empty segment starting at `first` in `dir`: writes and syncs its header, then
/// syncs the directory so the new name survives a crash. Returns the path and a handle
/// positioned at the end for appending.
pub fn create(dir: &Path, first: u64) -> Result<(PathBuf, File), StoreError> {
    let path = dir.join(file_name(first));
    let mut file = OpenOptions::new()
        .read(true)
        .append(true)
        .create_new(true)
        .open(&path)?;
    file.write_all(&header(first))?;
    file.sync_all()?;
    sync_dir(dir)?;
    Ok((path, file))
}

/// Fsyncs a directory so entries created or removed in it are durable.
pub fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)?.sync_all()?;
    Ok(())
}

/// How errors name a place in a file.
pub fn location(path: &Path, offset: u64) -> String {
    format!("file {} at offset {offset}", path.display())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_reject_lookalikes() {
        assert_eq!(parse_name(&file_name(42)), Some(42));
        for bad in [
            "segment-1.log",
            "segment-0000000000000000000x.log",
            "segment-00000000000000000000.log",
            "segment-00000000000000000001.txt",
            "x",
        ] {
            assert_eq!(parse_name(bad), None, "{bad}");
        }
    }
}
