//! The manifest: the list of the log's segments (their first positions), so that a missing
//! segment — the newest one included — is found on open instead of its events silently
//! disappearing.
//!
//! `manifest` is a small text file, replaced atomically whenever the list changes (at rotation,
//! and on an open that finds it missing or behind): written to `manifest.tmp` (mode 0600),
//! fsynced, renamed over `manifest`, and the directory fsynced. A rotation writes it after the
//! new segment's header is durable and before any record goes there, so every segment that can
//! hold an acknowledged event is listed; the only segment that may be missing from it is the
//! newest, created by a rotation the crash interrupted (it holds no acknowledged event).
//!
//! ```text
//! userstate-manifest 1
//! segment 1
//! segment 48213
//! crc32c 1c2b3a4d
//! ```
//!
//! The last line is the CRC32C of every byte before it. A data directory written before the
//! manifest existed has none; the first open writes it.

use std::fs;
use std::io;
use std::path::Path;

use super::io::{write_all_at, SegmentIo};
use super::segment::location;
use crate::store::StoreError;

/// The manifest's file name in the store directory.
pub const MANIFEST: &str = "manifest";
/// The name it is written under before the rename.
pub const MANIFEST_TMP: &str = "manifest.tmp";
const FIRST_LINE: &str = "userstate-manifest 1";

/// The manifest's text for segments starting at `firsts`.
fn render(firsts: &[u64]) -> String {
    let mut text = format!("{FIRST_LINE}\n");
    for first in firsts {
        text.push_str(&format!("segment {first}\n"));
    }
    let crc = crc32c::crc32c(text.as_bytes());
    text.push_str(&format!("crc32c {crc:08x}\n"));
    text
}

/// Replaces the manifest of `dir` with one listing `firsts`, atomically and durably.
pub fn write(io: &dyn SegmentIo, dir: &Path, firsts: &[u64]) -> io::Result<()> {
    let tmp = dir.join(MANIFEST_TMP);
    match io.remove_file(&tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let file = io.create_new(&tmp)?;
    write_all_at(&*file, render(firsts).as_bytes(), 0)?;
    file.sync_all()?;
    drop(file);
    io.rename(&tmp, &dir.join(MANIFEST))?;
    io.sync_dir(dir)
}

/// The first positions the manifest of `dir` lists, or `None` if it has none. A manifest that
/// fails its checksum or cannot be parsed is refused as [`StoreError::Corrupt`].
pub fn read(dir: &Path) -> Result<Option<Vec<u64>>, StoreError> {
    let path = dir.join(MANIFEST);
    let text = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let corrupt = |reason: &str| StoreError::Corrupt {
        location: location(&path, 0),
        reason: format!("the segment manifest {reason}"),
    };
    let text = std::str::from_utf8(&text).map_err(|_| corrupt("is not text"))?;
    let body_end = text
        .trim_end_matches('\n')
        .rfind('\n')
        .map(|i| i + 1)
        .ok_or_else(|| corrupt("is cut short"))?;
    let (body, last) = text.split_at(body_end);
    let crc = last
        .trim_end()
        .strip_prefix("crc32c ")
        .and_then(|hex| u32::from_str_radix(hex, 16).ok())
        .ok_or_else(|| corrupt("has no checksum line"))?;
    if crc32c::crc32c(body.as_bytes()) != crc {
        return Err(corrupt("fails its checksum"));
    }
    let mut lines = body.lines();
    if lines.next() != Some(FIRST_LINE) {
        return Err(corrupt("has an unknown format"));
    }
    let mut firsts = Vec::new();
    for line in lines {
        let first = line
            .strip_prefix("segment ")
            .and_then(|n| n.parse::<u64>().ok())
            .filter(|&n| n > 0 && firsts.last().is_none_or(|&prev| prev < n))
            .ok_or_else(|| corrupt(&format!("has a bad line {line:?}")))?;
        firsts.push(first);
    }
    Ok(Some(firsts))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::file::io::StdIo;

    #[test]
    fn round_trips_and_refuses_damage() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(read(dir.path()).expect("no manifest"), None);
        write(&StdIo, dir.path(), &[1, 40, 900]).expect("write");
        assert_eq!(read(dir.path()).expect("read"), Some(vec![1, 40, 900]));
        write(&StdIo, dir.path(), &[1]).expect("replace");
        assert_eq!(read(dir.path()).expect("read"), Some(vec![1]));
        assert!(!dir.path().join(MANIFEST_TMP).exists());
        let path = dir.path().join(MANIFEST);
        let text = fs::read_to_string(&path).expect("read");
        fs::write(&path, text.replace("segment 1", "segment 2")).expect("write");
        let err = read(dir.path()).expect_err("a changed list fails the checksum");
        assert!(err.to_string().contains("checksum"), "{err}");
    }
}
