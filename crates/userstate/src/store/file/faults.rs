//! A fault-injecting [`SegmentIo`] for tests (feature `testkit`): wraps the real I/O and makes
//! a chosen write fail with `ENOSPC`, write only part of its buffer, or a chosen sync fail with
//! `EIO`, deterministically, counted from when the fault is armed.
//!
//! A failed sync also models what Linux does to the page cache ("fsyncgate"): the pages written
//! since the file's last good sync may or may not have reached the disk, and they are marked
//! clean, so a later sync succeeds without writing them. Here a pseudo-random subset (from the
//! injector's seed) of the 512-byte sectors written since the last good sync is overwritten
//! with zeros in the real file — the disk kept the others — and the next sync of the file
//! succeeds without them. A store that trusted what it had written before the failure would
//! later read zeros (or a torn batch) where it believed its records were.

use std::fmt;
use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use super::io::{SegmentFile, SegmentIo, StdIo};

const ENOSPC: i32 = 28;
const EIO: i32 = 5;
const SECTOR: u64 = 512;

/// A fault [`FaultInjector::inject`] can arm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// A write fails with `ENOSPC` (no space left on device) and writes nothing.
    NoSpace,
    /// A write writes only a prefix of its buffer, ending at a 512-byte boundary of the file
    /// when one lies inside it (as the kernel stops at a page), and reports the shorter
    /// length; the caller must write the rest.
    ShortWrite,
    /// A sync (`fdatasync` or `fsync` of a file, or `fsync` of the directory) fails with
    /// `EIO`, losing some of the sectors written since the file's last good sync (see the
    /// module docs).
    SyncFails,
}

/// Which operations fail: `Fault` on operations `from..until` of its kind (writes or syncs).
#[derive(Clone, Copy, Debug)]
struct Rule {
    fault: Fault,
    from: u64,
    until: u64,
}

#[derive(Debug, Default)]
struct Plan {
    writes: u64,
    syncs: u64,
    rules: Vec<Rule>,
    injected: u64,
    rng: u64,
}

impl Plan {
    fn next(&mut self, write: bool) -> Option<Fault> {
        let n = if write {
            self.writes += 1;
            self.writes
        } else {
            self.syncs += 1;
            self.syncs
        };
        let fault = self
            .rules
            .iter()
            .find(|r| (r.fault == Fault::SyncFails) != write && r.from <= n && n < r.until)
            .map(|r| r.fault);
        if fault.is_some() {
            self.injected += 1;
        }
        fault
    }

    /// xorshift64: a coin per lost sector.
    fn coin(&mut self) -> bool {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng & 1 == 1
    }
}

/// Arms faults in the I/O of a [`FileStore`](crate::FileStore) opened with
/// [`FileStoreOptions::fault_injector`](crate::FileStoreOptions::fault_injector). Clones share
/// one plan, so a test keeps one and hands the other to the store.
///
/// ```
/// # fn demo() -> Result<(), userstate::StoreError> {
/// use userstate::testkit::{Fault, FaultInjector};
/// let faults = FaultInjector::new(7);
/// let dir = tempfile::tempdir().expect("tempdir");
/// let store = userstate::FileStore::options().fault_injector(&faults).open(dir.path())?;
/// faults.inject(Fault::NoSpace, 0, 1); // the next write fails with ENOSPC
/// # drop(store); Ok(()) }
/// # demo().unwrap();
/// ```
#[derive(Clone, Default)]
pub struct FaultInjector {
    plan: Arc<Mutex<Plan>>,
}

impl fmt::Debug for FaultInjector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let plan = self.plan();
        f.debug_struct("FaultInjector")
            .field("writes", &plan.writes)
            .field("syncs", &plan.syncs)
            .field("injected", &plan.injected)
            .finish()
    }
}

impl FaultInjector {
    /// An injector with nothing armed; `seed` chooses which sectors a failed sync loses.
    pub fn new(seed: u64) -> Self {
        let injector = Self::default();
        injector.plan().rng = seed | 1;
        injector
    }

    fn plan(&self) -> MutexGuard<'_, Plan> {
        self.plan.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Arms `fault` for `times` consecutive operations of its kind (writes for
    /// [`Fault::NoSpace`] and [`Fault::ShortWrite`], syncs for [`Fault::SyncFails`]), starting
    /// with the one `after` operations from now (0: the next one).
    pub fn inject(&self, fault: Fault, after: u64, times: u64) {
        let mut plan = self.plan();
        let done = if fault == Fault::SyncFails {
            plan.syncs
        } else {
            plan.writes
        };
        let from = done + 1 + after;
        plan.rules.push(Rule {
            fault,
            from,
            until: from + times,
        });
    }

    /// Disarms every fault not yet injected.
    pub fn clear(&self) {
        self.plan().rules.clear();
    }

    /// Writes seen so far.
    pub fn writes(&self) -> u64 {
        self.plan().writes
    }

    /// Syncs seen so far.
    pub fn syncs(&self) -> u64 {
        self.plan().syncs
    }

    /// Faults injected so far.
    pub fn injected(&self) -> u64 {
        self.plan().injected
    }

    /// The I/O the store uses.
    pub(crate) fn io(&self) -> Arc<dyn SegmentIo> {
        Arc::new(FaultyIo {
            plan: self.plan.clone(),
        })
    }
}

#[derive(Debug)]
struct FaultyIo {
    plan: Arc<Mutex<Plan>>,
}

impl FaultyIo {
    fn wrap(&self, inner: Box<dyn SegmentFile>) -> Box<dyn SegmentFile> {
        Box::new(FaultyFile {
            inner,
            plan: self.plan.clone(),
            dirty: Mutex::default(),
        })
    }

    fn next(&self, write: bool) -> Option<Fault> {
        self.plan
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .next(write)
    }
}

impl SegmentIo for FaultyIo {
    fn create_new(&self, path: &Path) -> io::Result<Box<dyn SegmentFile>> {
        Ok(self.wrap(StdIo.create_new(path)?))
    }

    fn open(&self, path: &Path) -> io::Result<Box<dyn SegmentFile>> {
        Ok(self.wrap(StdIo.open(path)?))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        StdIo.rename(from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        StdIo.remove_file(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        match self.next(false) {
            Some(_) => Err(io::Error::from_raw_os_error(EIO)),
            None => StdIo.sync_dir(dir),
        }
    }
}

struct FaultyFile {
    inner: Box<dyn SegmentFile>,
    plan: Arc<Mutex<Plan>>,
    /// Byte ranges written since the last good sync.
    dirty: Mutex<Vec<(u64, u64)>>,
}

impl FaultyFile {
    fn plan(&self) -> MutexGuard<'_, Plan> {
        self.plan.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn dirty(&self) -> MutexGuard<'_, Vec<(u64, u64)>> {
        self.dirty.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn sync(&self, sync: impl FnOnce() -> io::Result<()>) -> io::Result<()> {
        if self.plan().next(false).is_none() {
            sync()?;
            self.dirty().clear();
            return Ok(());
        }
        let dirty = std::mem::take(&mut *self.dirty());
        for (from, to) in dirty {
            let mut sector = from - from % SECTOR;
            while sector < to {
                let (a, b) = (sector.max(from), (sector + SECTOR).min(to));
                if self.plan().coin() {
                    let zeros = vec![0u8; (b - a) as usize];
                    super::io::write_all_at(&*self.inner, &zeros, a)?;
                }
                sector += SECTOR;
            }
        }
        Err(io::Error::from_raw_os_error(EIO))
    }
}

impl SegmentFile for FaultyFile {
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<usize> {
        let len = buf.len() as u64;
        let n = match self.plan().next(true) {
            Some(Fault::NoSpace) => return Err(io::Error::from_raw_os_error(ENOSPC)),
            Some(_) => {
                let boundary = (offset / SECTOR + 1) * SECTOR;
                if boundary < offset + len {
                    boundary - offset
                } else {
                    len.div_ceil(2)
                }
            }
            None => len,
        };
        let written = self.inner.write_at(&buf[..n as usize], offset)?;
        self.dirty().push((offset, offset + written as u64));
        Ok(written)
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.inner.read_at(buf, offset)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.sync(|| self.inner.sync_data())
    }

    fn sync_all(&self) -> io::Result<()> {
        self.sync(|| self.inner.sync_all())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.inner.set_len(len)?;
        for range in self.dirty().iter_mut() {
            range.1 = range.1.min(len);
            range.0 = range.0.min(range.1);
        }
        Ok(())
    }
}
