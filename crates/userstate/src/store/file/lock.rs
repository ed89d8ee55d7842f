//! One process at a time: an exclusive OS lock (`flock` on Unix, via [`File::try_lock`]) on
//! `userstate.lock` in the store directory, held for the store's lifetime.
//!
//! The lock belongs to the open file description, so a second `open` fails even inside the
//! same process, and the OS releases it when the process dies (no stale lock after `kill -9`).
//! The holder writes its process id into the file so the error can name it.
//!
//! A read-only open (`verify`, `export`, `backup`, ...) takes no lock: it only asks, with a
//! shared lock taken and released at once on the file if it exists (never creating or writing
//! it), whether a writer holds the directory. If one does, it reads the live log (a batch in
//! flight is the end of what it sees, not a torn tail to report); if none does, it reads the
//! log as a crash left it and reports what the next writable open would repair. Either way a
//! writer can start while it reads (ADR 0017).

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use super::io::FILE_MODE;

use crate::store::StoreError;

/// The lock file's name inside the store directory.
pub const LOCK_FILE: &str = "userstate.lock";

/// A held directory lock; released on drop.
pub struct DirLock {
    _file: File,
}

impl DirLock {
    /// Takes the lock on `dir` or fails with an error naming the lock file (and the holder's
    /// process id when known).
    pub fn acquire(dir: &Path) -> Result<Self, StoreError> {
        let path = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(FILE_MODE)
            .open(&path)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Err(locked(&path, &mut file)),
            Err(TryLockError::Error(e)) => return Err(e.into()),
        }
        file.set_len(0)?;
        file.rewind()?;
        write!(file, "{}", std::process::id())?;
        Ok(Self { _file: file })
    }

    /// Whether a writer holds `dir` now: tries a shared lock on its lock file and releases it
    /// at once, without creating or writing anything (no lock file: no writer ever opened the
    /// directory, or it is a copy without one).
    pub fn writer_present(dir: &Path) -> Result<bool, StoreError> {
        let path = dir.join(LOCK_FILE);
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e.into()),
        };
        match file.try_lock_shared() {
            Ok(()) => Ok(false),
            Err(TryLockError::WouldBlock) => Ok(true),
            Err(TryLockError::Error(e)) => Err(e.into()),
        }
    }
}

fn locked(path: &Path, file: &mut File) -> StoreError {
    let mut holder = String::new();
    let _ = file.take(32).read_to_string(&mut holder);
    let holder = holder.trim();
    let who = if holder.is_empty() {
        String::new()
    } else {
        format!(" (held by process {holder})")
    };
    StoreError::Unavailable {
        message: format!(
            "the store is open in another process or handle: lock file {} is locked{who}",
            path.display()
        ),
        source: None,
    }
}
