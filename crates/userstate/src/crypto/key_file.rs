//! The file key store's file, `DATA/keys`: its format (a `secret` line, `key` lines, then
//! zeros), how it is read (also while a writer appends to it), opened for writing in place,
//! and rewritten whole (ADR 0021). [`FileKeyStore`](super::FileKeyStore) keeps it.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;

use super::keys::{KeyFile, UserKey};
use crate::store::file::io::{write_all_at, SegmentFile, SegmentIo};
use crate::store::StoreError;

/// How many zeros the file key store writes ahead of its lines at a time (about 900 keys).
pub const KEY_FILE_CHUNK: u64 = 64 * 1024;

/// The file name of the key store in the data directory.
pub const KEY_FILE: &str = "keys";

/// Opens the key file for writing in place: the file, the end of its lines (a torn last line
/// zeroed and synced, so the next line does not run into it) and its size.
pub(super) fn open_in_place(
    io: &dyn SegmentIo,
    path: &Path,
) -> std::io::Result<(Arc<dyn SegmentFile>, u64, u64)> {
    let bytes = std::fs::read(path)?;
    let file: Arc<dyn SegmentFile> = Arc::from(io.open(path)?);
    let allocated = bytes.len() as u64;
    let len = lines_end(&bytes);
    let written = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    if written > len {
        write_all_at(&*file, &vec![0; written - len], len as u64)?;
        file.sync_data()?;
    }
    Ok((file, len as u64, allocated))
}

/// The end of the whole lines of a key file's bytes: after the last newline before the first
/// NUL.
fn lines_end(bytes: &[u8]) -> usize {
    let written = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    bytes[..written]
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1)
}

pub(super) fn read_key_file(path: &Path) -> Result<Option<KeyFile>, StoreError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    // A last line without its newline was torn by a crash (or is being written): its key's
    // event was never acknowledged (the key is synced first).
    let text = String::from_utf8_lossy(&bytes[..lines_end(&bytes)]);
    let corrupt = |line: usize, reason: &str| StoreError::Corrupt {
        location: format!("{}:{line}", path.display()),
        reason: reason.to_owned(),
    };
    let mut secret = None;
    let mut keys = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let mut parts = line.split(' ');
        match (parts.next(), parts.next(), parts.next()) {
            (Some("secret"), Some(b64), None) if i == 0 => {
                secret = Some(UserKey::from_b64(b64).ok_or_else(|| corrupt(i + 1, "bad secret"))?)
            }
            (Some("key"), Some(id), Some(b64)) => keys.push((
                id.to_owned(),
                UserKey::from_b64(b64).ok_or_else(|| corrupt(i + 1, "bad key"))?,
            )),
            // An unknown line after the secret (a later version's fact): skipped.
            _ if i > 0 => {}
            _ => return Err(corrupt(i + 1, "the first line is not the secret")),
        }
    }
    let secret = secret.ok_or_else(|| corrupt(1, "empty key file"))?;
    Ok(Some((secret.0, keys)))
}

/// Writes a whole key file (its lines, then zeros up to a [`KEY_FILE_CHUNK`] boundary): a
/// temporary file, synced, renamed over `path`, directory synced.
pub(super) fn write_key_file<'a>(
    path: &Path,
    secret: &[u8; 32],
    keys: impl Iterator<Item = (&'a String, &'a UserKey)>,
) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut text = format!("secret {}\n", B64.encode(secret));
    for (id, key) in keys {
        text.push_str(&format!("key {id} {}\n", key.to_b64()));
    }
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(true);
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&tmp)?;
    let allocated = (text.len() as u64 + 1).next_multiple_of(KEY_FILE_CHUNK);
    let mut bytes = text.into_bytes();
    bytes.resize(allocated as usize, 0);
    file.write_all(&bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}
