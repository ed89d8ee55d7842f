//! The I/O seam under the file store's write path: every call the syncer makes on segment
//! files, the manifest and the directory goes through [`SegmentIo`] and [`SegmentFile`].
//!
//! [`StdIo`] is the real implementation: `std::fs` with the syscalls the store always made
//! (`pwrite`, `fdatasync`, `fsync`, `ftruncate`, `rename`), one dynamic call per syscall, so a
//! batch pays two or three indirect calls next to an `fdatasync` of hundreds of microseconds.
//! The fault-injecting implementation (feature `testkit`, [`crate::testkit::FaultInjector`])
//! wraps it to fail a chosen write or sync. The open-time scan and the readers use `std::fs`
//! directly: they only read.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

/// Mode of every file the store creates: its owner reads and writes, nobody else.
pub const FILE_MODE: u32 = 0o600;

/// Creates, renames and removes the store's files and syncs its directory.
pub trait SegmentIo: Send + Sync + fmt::Debug {
    /// Creates `path` (it must not exist) for reading and writing, with mode [`FILE_MODE`].
    fn create_new(&self, path: &Path) -> io::Result<Box<dyn SegmentFile>>;
    /// Opens the existing file `path` for reading and writing.
    fn open(&self, path: &Path) -> io::Result<Box<dyn SegmentFile>>;
    /// Renames `from` to `to`, replacing `to` (atomic on POSIX file systems).
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes the file `path`.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Fsyncs the directory `dir`, so entries created, renamed or removed in it are durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
}

/// One open file of the store, written with positional writes.
pub trait SegmentFile: Send + Sync {
    /// Writes `buf` at `offset`; may write less (a short write), as `pwrite` does.
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<usize>;
    /// Reads into `buf` from `offset`; may read less, as `pread` does.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
    /// `fdatasync`.
    fn sync_data(&self) -> io::Result<()>;
    /// `fsync` (also the file's size and other metadata).
    fn sync_all(&self) -> io::Result<()>;
    /// `ftruncate`: cuts or extends the file to `len` bytes.
    fn set_len(&self, len: u64) -> io::Result<()>;
}

/// Writes all of `buf` at `offset`, going on after short writes (what `write_all_at` does).
pub fn write_all_at(file: &dyn SegmentFile, mut buf: &[u8], mut offset: u64) -> io::Result<()> {
    while !buf.is_empty() {
        match file.write_at(buf, offset) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                buf = &buf[n..];
                offset += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reads exactly `buf.len()` bytes at `offset`.
pub fn read_exact_at(
    file: &dyn SegmentFile,
    mut buf: &mut [u8],
    mut offset: u64,
) -> io::Result<()> {
    while !buf.is_empty() {
        match file.read_at(buf, offset) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => {
                buf = &mut buf[n..];
                offset += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The real I/O: `std::fs`.
#[derive(Clone, Copy, Debug, Default)]
pub struct StdIo;

impl SegmentIo for StdIo {
    fn create_new(&self, path: &Path) -> io::Result<Box<dyn SegmentFile>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(FILE_MODE)
            .open(path)?;
        Ok(Box::new(file))
    }

    fn open(&self, path: &Path) -> io::Result<Box<dyn SegmentFile>> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        Ok(Box::new(file))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }
}

impl SegmentFile for File {
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<usize> {
        FileExt::write_at(self, buf, offset)
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        FileExt::read_at(self, buf, offset)
    }

    fn sync_data(&self) -> io::Result<()> {
        File::sync_data(self)
    }

    fn sync_all(&self) -> io::Result<()> {
        File::sync_all(self)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        File::set_len(self, len)
    }
}
