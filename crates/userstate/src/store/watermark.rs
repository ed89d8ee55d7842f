//! [`Watermark`]: a position that only moves forward, and a way to wait for it.

use std::sync::atomic::Ordering::SeqCst;
use std::sync::atomic::{AtomicU64, AtomicUsize};

use tokio::sync::Notify;

/// A position that only moves forward — a store's head ([`EventStore::watch_head`]), a
/// projection's progress — which tasks can wait on.
///
/// Made for one update per commit and few waiters. A `tokio::sync::watch` locks its eight
/// notifiers on every send, waiters or not; a memory-store command sent two (the store's head
/// and the projection's position) and those sends were ≈ 10 % of its instructions (callgrind,
/// docs/PERFORMANCE.md). Here an update is one atomic `fetch_max` and one load, and the
/// `Notify` is touched only while someone waits.
///
/// [`EventStore::watch_head`]: super::EventStore::watch_head
#[derive(Debug, Default)]
pub struct Watermark {
    position: AtomicU64,
    /// Tasks inside [`Watermark::wait_for`].
    waiting: AtomicUsize,
    notify: Notify,
}

impl Watermark {
    /// A watermark at `position`.
    pub fn new(position: u64) -> Self {
        Self {
            position: AtomicU64::new(position),
            ..Self::default()
        }
    }

    /// The current position.
    pub fn get(&self) -> u64 {
        self.position.load(SeqCst)
    }

    /// Moves the position to `to` when that is further (never back), waking the waiters.
    /// Returns whether it moved.
    pub fn advance(&self, to: u64) -> bool {
        let moved = self.position.fetch_max(to, SeqCst) < to;
        // SeqCst on both sides: either this load sees a waiter's increment and wakes it, or
        // that waiter's later load of the position sees `to` (see `wait_for`).
        if moved && self.waiting.load(SeqCst) > 0 {
            self.notify.notify_waiters();
        }
        moved
    }

    /// Returns the position once it is at least `target`. Cancel-safe: dropping the future
    /// (a timeout around it) leaves nothing behind.
    pub async fn wait_for(&self, target: u64) -> u64 {
        /// Counts the waiter out however the wait ends.
        struct Waiting<'a>(&'a AtomicUsize);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, SeqCst);
            }
        }
        self.waiting.fetch_add(1, SeqCst);
        let _waiting = Waiting(&self.waiting);
        loop {
            // A `Notified` receives every `notify_waiters` made after it was created, polled
            // or not; so create it before looking at the position.
            let notified = self.notify.notified();
            let position = self.get();
            if position >= target {
                return position;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    /// A waiter wakes when the position reaches its target, not before; a wait that times out
    /// counts itself out, so updates stop touching the notifier.
    #[tokio::test]
    async fn waiters_wake_at_their_target_only() {
        let mark = Arc::new(Watermark::default());
        let waiter = tokio::spawn({
            let mark = mark.clone();
            async move { mark.wait_for(5).await }
        });
        while mark.waiting.load(SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        assert!(mark.advance(3));
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "woke at 3 while waiting for 5");
        assert!(mark.advance(7));
        let reached = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("woke at 7")
            .unwrap();
        assert_eq!(reached, 7);
        assert!(!mark.advance(4), "the position never goes back");
        assert_eq!(mark.get(), 7);

        let gave_up = tokio::time::timeout(Duration::from_millis(10), mark.wait_for(9)).await;
        assert!(gave_up.is_err());
        assert_eq!(mark.waiting.load(SeqCst), 0);
        assert_eq!(
            mark.wait_for(7).await,
            7,
            "a reached target returns at once"
        );
    }

    /// Many updaters and waiters at once: every waiter sees its target, none hangs.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_wake_up_is_lost_under_concurrent_updates() {
        let mark = Arc::new(Watermark::default());
        let waiters: Vec<_> = (1..=200u64)
            .map(|target| {
                let mark = mark.clone();
                tokio::spawn(async move { mark.wait_for(target * 50).await })
            })
            .collect();
        let updaters: Vec<_> = (0..4u64)
            .map(|k| {
                let mark = mark.clone();
                tokio::spawn(async move {
                    for p in (k..=10_000).step_by(4) {
                        mark.advance(p);
                        if p % 64 == 0 {
                            tokio::task::yield_now().await;
                        }
                    }
                })
            })
            .collect();
        for u in updaters {
            u.await.unwrap();
        }
        for (i, w) in waiters.into_iter().enumerate() {
            let reached = tokio::time::timeout(Duration::from_secs(10), w)
                .await
                .expect("waiter woke")
                .unwrap();
            assert!(reached >= (i as u64 + 1) * 50);
        }
        assert_eq!(mark.get(), 10_000);
    }
}
