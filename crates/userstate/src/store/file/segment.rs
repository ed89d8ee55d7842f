//! Segment files: naming, the 16-byte segment header, creation with directory fsync, and the
//! zero-filled space the writer keeps ahead of the log.
//!
//! A segment is `segment-{first_position:020}.log`: a header (`USTSEG02` + the first position,
//! little endian) followed by whole record frames. Only the newest segment is ever written to;
//! older ones are sealed (cut to their last record) and never rewritten.
//!
//! The newest segment may end in zeros: the writer extends it with written zeros ahead of the
//! log and then overwrites them in place. On ext4 (and most journaling file systems) an
//! `fdatasync` after an append that grows the file must also commit the new size through the
//! journal; after an overwrite of blocks that already exist it only flushes data. On the
//! development VM that makes a 64-record sync about 1.6x faster (docs/PERFORMANCE.md).
//! `fallocate` is no substitute: its unwritten extents need the same metadata commit when first
//! written.

use std::fs::File;
use std::path::{Path, PathBuf};

use super::io::{write_all_at, SegmentFile, SegmentIo};
use crate::store::StoreError;

/// Bytes in a segment header.
pub const SEGMENT_HEADER_LEN: u64 = 16;
const MAGIC: &[u8; 8] = b"USTSEG02";
/// The magic of the first format, whose batches carried no start mark (see `record`).
const OLD_MAGIC: &[u8; 8] = b"USTSEG01";
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
    if &h[..8] == OLD_MAGIC {
        return Err(corrupt(
            "a segment of an earlier development format (USTSEG01); export it with the \
             version that wrote it and import the export"
                .into(),
        ));
    }
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

/// Creates a new, empty segment starting at `first` in `dir` (mode 0600): writes and syncs its
/// header, then syncs the directory so the new name survives a crash. Returns the path and a
/// handle for positional writes.
pub fn create(
    io: &dyn SegmentIo,
    dir: &Path,
    first: u64,
) -> Result<(PathBuf, Box<dyn SegmentFile>), StoreError> {
    let path = dir.join(file_name(first));
    let file = io.create_new(&path)?;
    write_all_at(&*file, &header(first), 0)?;
    file.sync_all()?;
    io.sync_dir(dir)?;
    Ok((path, file))
}

/// Writes zeros over `from..to` of `file` (without syncing; the caller's next `fdatasync`
/// makes them durable together with whatever it writes there).
pub fn write_zeros(file: &dyn SegmentFile, from: u64, to: u64) -> std::io::Result<()> {
    const PIECE: u64 = 1 << 20;
    let zeros = vec![0u8; PIECE.min(to.saturating_sub(from)) as usize];
    let mut at = from;
    while at < to {
        let n = PIECE.min(to - at) as usize;
        write_all_at(file, &zeros[..n], at)?;
        at += n as u64;
    }
    Ok(())
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
    fn headers_of_the_first_format_are_refused_by_name() {
        let path = Path::new("segment-00000000000000000001.log");
        let mut old = header(1);
        old[..8].copy_from_slice(OLD_MAGIC);
        let err = check_header(path, &old, 1).expect_err("USTSEG01 is refused");
        assert!(err.to_string().contains("USTSEG01"), "{err}");
        check_header(path, &header(1), 1).expect("the current header is accepted");
        let err = check_header(path, &header(2), 1).expect_err("position must match the name");
        assert!(err.to_string().contains("first position 2"), "{err}");
    }

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
