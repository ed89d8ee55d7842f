//! How far this node's read model is behind the shared store, and how far it may be before the
//! node reports not ready (several nodes on one store, issue 12).
//!
//! - Lag in events: the store's head position minus the projection's position.
//! - Lag in seconds: the age of the oldest event the projection has not applied yet (its
//!   `createdAt`, as stamped by the node that wrote it, against this node's clock); 0 when
//!   caught up. Clocks of the nodes should be synchronised (NTP) for it to mean much.

use std::time::Duration;

use chrono::Utc;
use userstate::StoreError;

use crate::service::UserService;

/// Default of [`LagLimit::max_events`].
pub const DEFAULT_MAX_LAG_EVENTS: u64 = 1000;
/// Default of [`LagLimit::max_age`].
pub const DEFAULT_MAX_LAG: Duration = Duration::from_secs(10);

/// The most a ready node's projection may trail the store head. `None`: no limit of that kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LagLimit {
    /// At most this many events behind the head.
    pub max_events: Option<u64>,
    /// The oldest unapplied event at most this old.
    pub max_age: Option<Duration>,
}

impl Default for LagLimit {
    fn default() -> Self {
        Self {
            max_events: Some(DEFAULT_MAX_LAG_EVENTS),
            max_age: Some(DEFAULT_MAX_LAG),
        }
    }
}

/// One measurement of the lag.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Lag {
    /// The store's head position.
    pub head: u64,
    /// The projection's position.
    pub projected: u64,
    /// `head - projected` (0 when the projection is ahead of a head read earlier).
    pub events: u64,
    /// Age of the oldest unapplied event in seconds; 0 when caught up.
    pub seconds: f64,
}

impl Lag {
    /// Measures the lag of `service`'s projection: one head query, plus one read of the first
    /// unapplied event when behind.
    pub async fn measure(service: &UserService) -> Result<Self, StoreError> {
        let projected = service.projection().position();
        let head = service.store().head_position().await?;
        let events = head.saturating_sub(projected);
        let mut seconds = 0.0;
        if events > 0 {
            let next = service.store().read_all(projected + 1, 1).await?;
            if let Some(event) = next.first() {
                let age = Utc::now().signed_duration_since(event.created_at);
                seconds = age.to_std().map(|d| d.as_secs_f64()).unwrap_or(0.0);
            }
        }
        Ok(Self {
            head,
            projected,
            events,
            seconds,
        })
    }

    /// Why this lag exceeds `limit`, or `None` when it is within it.
    pub fn exceeds(&self, limit: &LagLimit) -> Option<String> {
        if let Some(max) = limit.max_events {
            if self.events > max {
                return Some(format!(
                    "the read model is {} events behind the store (position {} of {}; at most {max} allowed)",
                    self.events, self.projected, self.head
                ));
            }
        }
        if let Some(max) = limit.max_age {
            if self.seconds > max.as_secs_f64() {
                return Some(format!(
                    "the read model is {:.1} s behind the store (position {} of {}; at most {:.1} s allowed)",
                    self.seconds,
                    self.projected,
                    self.head,
                    max.as_secs_f64()
                ));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lag(events: u64, seconds: f64) -> Lag {
        Lag {
            head: 100,
            projected: 100 - events,
            events,
            seconds,
        }
    }

    #[test]
    fn within_and_beyond_the_limit() {
        let limit = LagLimit {
            max_events: Some(10),
            max_age: Some(Duration::from_secs(2)),
        };
        assert_eq!(lag(10, 2.0).exceeds(&limit), None);
        assert!(lag(11, 0.0).exceeds(&limit).unwrap().contains("11 events"));
        assert!(lag(1, 2.5).exceeds(&limit).unwrap().contains("2.5 s"));
        let none = LagLimit {
            max_events: None,
            max_age: None,
        };
        assert_eq!(lag(99, 1e6).exceeds(&none), None);
    }
}
