//! What happens after a commit, in the open: the engine tells every [`CommitListener`] it was
//! built with of each append it made, as the store acknowledges it (ADR 0014). The live read
//! model is one ([`Projection::listener`](super::Projection::listener)); subscriptions and
//! delivery are the next.

use crate::store::RecordedEvent;

/// Told of every append an [`Engine`](super::Engine) commits, right after the store
/// acknowledged it, on the task that appended.
///
/// A listener sees this engine's appends only — not another engine's, another process's or an
/// append made around the engine — and appends reach it in the order they returned, which two
/// concurrent appends may reach in either order of position. A listener that needs every event
/// in position order (a read model) must also follow the store and treat what it is told as a
/// head start, as [`Projection`](super::Projection) does.
///
/// `committed` runs inside the command: keep it short and never block.
///
/// ```
/// use std::sync::{Arc, atomic::{AtomicU64, Ordering}};
/// use userstate::{CommitListener, Engine, MemoryStore, RecordedEvent};
///
/// /// Counts committed events.
/// #[derive(Default)]
/// struct Counter(AtomicU64);
///
/// impl CommitListener for Counter {
///     fn committed(&self, events: &[RecordedEvent]) {
///         self.0.fetch_add(events.len() as u64, Ordering::Relaxed);
///     }
/// }
///
/// let counter = Arc::new(Counter::default());
/// let engine = Engine::new(Arc::new(MemoryStore::new())).with_listener(counter.clone());
/// # let _ = engine;
/// ```
pub trait CommitListener: Send + Sync + 'static {
    /// `events` were committed by one append (in position order, at least one).
    fn committed(&self, events: &[RecordedEvent]);
}
