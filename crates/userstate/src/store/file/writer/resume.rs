//! Resuming appends after a failed write or sync, without reopening the store (ADR 0011).
//!
//! After a failed `fdatasync` the page cache no longer says what is on disk: the failed
//! batch's pages may be on disk in any subset, and Linux marks them clean, so a later sync
//! would not write them again ("fsyncgate"). The syncer therefore never goes on from where it
//! was. Once the failed batch and the ones queued behind it have been answered with the error,
//! it repairs, retrying with backoff (10 ms doubling to 1 s) while appends are refused and
//! [`health`](super::health) reports why:
//! 0. the sync companion, if one is attached (the file key store), is synced (and repaired:
//!    after a failed sync of its own it rewrites its file; ADR 0021);
//! 1. the manifest is written again if a rotation was cut short, and any segment after the one
//!    being written is removed (it can hold no acknowledged event);
//! 2. the segment is reopened (a new file description) and cut to the end of the last synced
//!    batch (`ftruncate`), so nothing of the failed batch survives to be read later; zeros
//!    are written ahead again (64 KiB: this also proves there is space to write) and the file
//!    is fsynced;
//! 3. the segment is read back from its header to that end and must hold exactly the
//!    acknowledged records (checksums, positions up to the last one synced);
//! 4. once the publisher has published every batch synced before the failure, the queue
//!    forgets the failed appends (their versions, their positions) and appends resume at the
//!    position after the last acknowledged one.
//!
//! A read-back that does not match (step 3) is damage, not a full disk: appends stay stopped
//! until the store is reopened (which then refuses or repairs per the open-time rules).

use std::fs;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tracing::{error, info, warn};

use super::{Syncer, ZERO_AHEAD_MIN};
use crate::store::file::{manifest, scan, segment};
use crate::store::StoreError;

const FIRST_RETRY: Duration = Duration::from_millis(10);
const LAST_RETRY: Duration = Duration::from_secs(1);

impl Syncer {
    /// Repairs after a failure until it works (`true`: appends resume) or the store closes or
    /// the segment turns out damaged (`false`: the syncer stops).
    pub(super) fn resume(&mut self) -> bool {
        let mut delay = FIRST_RETRY;
        loop {
            match self.repair() {
                Ok(()) => break,
                Err(e @ StoreError::Corrupt { .. }) => {
                    error!(error = %e, "the file store cannot resume appends; reopen it");
                    self.shared.lock_queue().failed = Some(format!(
                        "the segment could not be repaired after a write failure ({e}); \
                         reopen the store"
                    ));
                    return false;
                }
                Err(e) => warn!(error = %e, retry_ms = delay.as_millis() as u64,
                    "repairing the file store after a write failure failed; will retry"),
            }
            // Closing: the attempt just made was the last (a close wakes the wait below, so
            // a store dropped during the backoff still gets one more attempt).
            let queue = self.shared.lock_queue();
            if queue.closing {
                return false;
            }
            drop(
                self.shared
                    .ready
                    .wait_timeout(queue, delay)
                    .unwrap_or_else(|e| e.into_inner()),
            );
            delay = (delay * 2).min(LAST_RETRY);
        }
        // Batches synced before the failure must be in the index before the queue forgets
        // what it had not published: versions are then checked against the index alone.
        while self.shared.publishing.load(Ordering::Acquire) > 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        let head = self.shared.read_index().head();
        let last_hash = match crate::store::file::head_hash(&self.shared.read_index()) {
            Ok(hash) => hash,
            Err(e) => {
                warn!(error = %e, "the log's last record cannot be read back; appends stay stopped");
                return false;
            }
        };
        let mut queue = self.shared.lock_queue();
        if queue.closing {
            return false;
        }
        queue.unpublished.clear();
        queue.next_position = head + 1;
        queue.last_hash = last_hash;
        queue.failed = None;
        info!(head, segment = %self.path.display(), "file store repaired; appends resume");
        true
    }

    /// One repair attempt (see the module docs).
    fn repair(&mut self) -> Result<(), StoreError> {
        if let Some(companion) = self.shared.companion.get() {
            companion.sync()?;
        }
        if self.manifest_stale {
            manifest::write(&*self.io, &self.dir, &self.segments)?;
            self.manifest_stale = false;
        }
        let mut removed = false;
        for entry in fs::read_dir(&self.dir)? {
            let entry = entry?;
            let name = entry.file_name();
            if segment::parse_name(&name.to_string_lossy()).is_some_and(|f| f > self.first) {
                warn!(file = %entry.path().display(),
                    "removing a segment a failed rotation left without acknowledged events");
                self.io.remove_file(&entry.path())?;
                removed = true;
            }
        }
        if removed {
            self.io.sync_dir(&self.dir)?;
        }
        let file = self.io.open(&self.path)?;
        file.set_len(self.len)?;
        let ahead = (self.len + ZERO_AHEAD_MIN)
            .min(self.segment_size)
            .max(self.len);
        segment::write_zeros(&*file, self.len, ahead)?;
        file.sync_all()?;
        scan::check_durable(&*file, &self.path, self.first, self.len, self.synced_head)?;
        self.file = file;
        self.allocated = ahead;
        Ok(())
    }
}
