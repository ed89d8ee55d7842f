//! A lone appender leads: it writes, syncs and publishes its own batch on its own thread,
//! instead of waking the syncer thread and parking until the answer wakes it (ADR 0008).
//!
//! For one caller at a time the two wake-ups were the cost beyond the disk's: the append
//! woke the sleeping syncer thread (a futex wake-up of an idle vCPU), and the answer woke the
//! caller's parked runtime worker. A leader does neither: its answer is ready when [`lead`]
//! returns. It blocks its thread for the write and `fdatasync` inside tokio's
//! `block_in_place`, which hands the worker's other tasks to another thread, so the runtime
//! keeps running them.
//!
//! Only a lone append leads ([`lone`]): with several callers the syncer thread's group commit
//! (and its gathering after idle) is what makes batches, and a leader holding the only batch
//! of one append would split them.

use std::sync::Mutex;

use tokio::runtime::{Handle, RuntimeFlavor};

use super::syncer::lock;
use super::{Batch, Queue, Syncer};
use crate::store::file::Shared;

/// A lone append's batch, taken out of the queue for its caller to commit with [`lead`].
pub struct Lead(pub(super) Batch);

/// Whether the append just queued (the only one in `queue`) should be committed by its caller:
/// the syncer thread is idle (and nobody leads), the previous batch held one append too, the
/// publisher has nothing left to publish (answers stay in the log's order), and the caller
/// runs where it may block (tokio's multi-thread runtime, through `block_in_place`).
pub(super) fn lone(shared: &Shared, queue: &Queue) -> bool {
    queue.syncer_idle
        && !queue.leading
        && queue.last_appends <= 1
        && queue.batches.len() == 1
        && queue.batches.front().is_some_and(|b| b.appends.len() == 1)
        && shared.publishing.load(std::sync::atomic::Ordering::Acquire) == 0
        && may_block()
}

/// Whether the calling thread may block in `block_in_place`: inside a multi-thread tokio
/// runtime (it panics on a current-thread runtime). A caller outside any tokio runtime does
/// not lead either: its executor is unknown.
fn may_block() -> bool {
    Handle::try_current().is_ok_and(|h| h.runtime_flavor() == RuntimeFlavor::MultiThread)
}

/// Writes, syncs and publishes a lone append's batch on the calling thread (inside
/// `block_in_place`), as the syncer thread would: once it returns, the append's answer is
/// there (the events are durable and visible, or the write failed). Then gives the log back
/// to the syncer thread, waking it if appends queued meanwhile or a repair is due.
pub fn lead(log: &Mutex<Syncer>, Lead(batch): Lead) {
    tokio::task::block_in_place(|| {
        let mut syncer = lock(log);
        let shared = syncer.shared.clone();
        let _done = Done(&shared);
        if !syncer.commit(batch, true) {
            syncer.shared.lock_queue().repair = true;
        }
        drop(syncer);
    });
}

/// Ends a lead however it ends: the syncer thread may take batches again and is woken if
/// there is work for it. If the leader panicked in the middle of a batch, appends stop as if
/// the syncer had (the page cache may no longer match the disk) and the queued batches are
/// dropped, so their callers are answered that the writer has stopped.
struct Done<'a>(&'a Shared);

impl Drop for Done<'_> {
    fn drop(&mut self) {
        let mut queue = self.0.lock_queue();
        queue.leading = false;
        if std::thread::panicking() {
            queue
                .failed
                .get_or_insert_with(|| "an appender panicked while writing its batch".into());
            drop(std::mem::take(&mut queue.batches));
        }
        let work = !queue.batches.is_empty() || queue.repair || queue.closing;
        let wake = work && std::mem::take(&mut queue.syncer_idle);
        drop(queue);
        if wake {
            self.0.ready.notify_one();
        }
    }
}
