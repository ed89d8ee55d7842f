//! Keeps the head watch current, including appends made by other processes, with a catch-up
//! subscription to `$all` filtered to the namespace. When the subscription fails (server gone,
//! client dead) it waits, re-reads the head and subscribes again after it, forever, until the
//! store is dropped.

use std::sync::Arc;

use kurrentdb::{StreamPosition, SubscribeToAllOptions, SubscriptionEvent};

use crate::codec::our_position;
use crate::removals::is_tombstone;
use crate::store::Shared;

/// Follows `$all` for the store's lifetime.
pub(crate) async fn follow(shared: Arc<Shared>) {
    let mut failures = 0u32;
    loop {
        match follow_once(&shared).await {
            Ok(()) => failures = 0,
            Err(e) => {
                failures = failures.saturating_add(1);
                tracing::debug!(error = %e, "head subscription ended; resubscribing");
            }
        }
        tokio::time::sleep(shared.connection.backoff(failures.max(1))).await;
    }
}

async fn follow_once(shared: &Shared) -> Result<(), String> {
    // Subscribe after the current last event, so nothing between the read and the
    // subscription is missed (catch-up subscriptions start after the given position).
    let start = match shared.last_event().await.map_err(|e| e.to_string())? {
        Some((ours, theirs)) => {
            shared.raise_head(ours);
            StreamPosition::Position(theirs)
        }
        None => StreamPosition::Start,
    };
    let lease = shared.connection.lease().map_err(|e| e.to_string())?;
    let options = SubscribeToAllOptions::default()
        .position(start)
        .filter(shared.filter());
    let mut subscription = lease.client.subscribe_to_all(&options).await;
    loop {
        match subscription.next_subscription_event().await {
            Ok(SubscriptionEvent::EventAppeared(e)) => {
                let event = e.get_original_event();
                if !is_tombstone(event) {
                    shared.raise_head(our_position(event.position));
                }
            }
            Ok(SubscriptionEvent::CaughtUp(_)) => shared.connection.succeeded(&lease),
            Ok(_) => {}
            Err(e) => {
                let error = shared.connection.fail(&lease, e);
                return Err(error.to_string());
            }
        }
        // Keep a slow subscriber from starving the runtime in a busy burst.
        tokio::task::yield_now().await;
    }
}
