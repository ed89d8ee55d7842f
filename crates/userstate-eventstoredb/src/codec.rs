//! Events and positions between userstate and KurrentDB.
//!
//! An event is stored as a JSON event (`content-type: application/json`) whose `type` is our
//! type string, whose id is our `NewEvent::event_id` (so KurrentDB recognises a retried append
//! by its ids) and whose data is our payload. Everything else goes in the custom metadata, a
//! JSON object: `instance`, `resourceOwner`, `creator`, `correlationId`, `idempotencyKey` (our
//! [`EventMetadata`]), `revision` (payload schema revision), `createdAt` (our commit time,
//! RFC 3339 with nanoseconds, the same for all events of one append), `chain` (the event's link
//! in its stream's hash chain, 64 hex digits, see [`userstate::chain::stream_link`] and ADR
//! 0020; absent on events written before it) and, when there is a correlation id, KurrentDB's
//! conventional `$correlationId`.
//!
//! Our global position is the event's log position in `$all` plus one (1-based, 0 = "none").
//! Every event a gRPC append writes is a self-committed prepare record, so its commit and its
//! prepare positions are the same byte offset in the transaction log; we take the prepare
//! position, which stays unique per event even where a server reports one shared commit
//! position for all events of a multi-event append. See `docs/EVENTSTOREDB.md` for why this is
//! order-preserving and never skips.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use userstate::chain::EventHash;
use userstate::store::{EventMetadata, NewEvent};
use userstate::{RecordedEvent, StoreError};

use crate::naming::StreamNaming;

/// The custom metadata stored with each event.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredMetadata {
    #[serde(flatten)]
    meta: EventMetadata,
    revision: u16,
    created_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    chain: Option<EventHash>,
    #[serde(
        rename = "$correlationId",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    esdb_correlation_id: Option<String>,
}

/// Our position of a KurrentDB `$all` position.
pub fn our_position(p: kurrentdb::Position) -> u64 {
    p.prepare.saturating_add(1)
}

/// The KurrentDB event for `event`, committed at `created_at` (for an imported event, its own
/// time), carrying `chain`, its link in its stream's chain.
pub fn encode(
    event: &NewEvent,
    created_at: DateTime<Utc>,
    chain: EventHash,
) -> Result<kurrentdb::EventData, StoreError> {
    let meta = StoredMetadata {
        meta: event.metadata.clone(),
        revision: event.revision,
        created_at,
        chain: Some(chain),
        esdb_correlation_id: event.metadata.correlation_id.clone(),
    };
    let invalid =
        |e: serde_json::Error| StoreError::InvalidArgument(format!("event not encodable: {e}"));
    kurrentdb::EventData::json(&event.event_type, &event.payload)
        .map_err(invalid)?
        .id(event.event_id)
        .metadata_as_json(&meta)
        .map_err(invalid)
}

/// Our event of a KurrentDB event of this namespace.
pub fn decode(
    naming: &StreamNaming,
    e: &kurrentdb::RecordedEvent,
) -> Result<RecordedEvent, StoreError> {
    let location = || format!("{}@{}", e.stream_id(), e.revision);
    let corrupt = |reason: String| StoreError::Corrupt {
        location: location(),
        reason,
    };
    if e.position.prepare == 0 && e.position.commit == 0 {
        return Err(StoreError::Backend {
            message: format!(
                "the server returned no log position for {}; userstate needs EventStoreDB \
                 22.10 or later (KurrentDB), which report it on stream reads",
                location()
            ),
            source: None,
        });
    }
    let stream = naming.stream_id_of(e.stream_id())?;
    let meta: StoredMetadata = serde_json::from_slice(&e.custom_metadata)
        .map_err(|err| corrupt(format!("custom metadata is not userstate's: {err}")))?;
    let payload: serde_json::Value = serde_json::from_slice(&e.data)
        .map_err(|err| corrupt(format!("data is not JSON: {err}")))?;
    let event = NewEvent {
        event_id: e.id,
        event_type: e.event_type.clone(),
        revision: meta.revision,
        payload,
        metadata: meta.meta,
        created_at: None,
    };
    let mut recorded = RecordedEvent::record(
        stream,
        e.revision.saturating_add(1),
        our_position(e.position),
        meta.created_at,
        event,
    );
    recorded.hash = meta.chain.unwrap_or(EventHash::ZERO);
    Ok(recorded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based_and_ordered() {
        let p = |n| kurrentdb::Position {
            commit: n,
            prepare: n,
        };
        assert_eq!(our_position(p(0)), 1);
        assert!(our_position(p(1024)) < our_position(p(1200)));
    }

    #[test]
    fn metadata_layout_is_flat_camel_case() {
        let meta = StoredMetadata {
            meta: EventMetadata {
                instance: "i".into(),
                resource_owner: "o".into(),
                creator: "c".into(),
                correlation_id: Some("k".into()),
                idempotency_key: None,
            },
            revision: 3,
            created_at: DateTime::from_timestamp(0, 5).unwrap_or_default(),
            chain: Some(EventHash([0xab; 32])),
            esdb_correlation_id: Some("k".into()),
        };
        let json = serde_json::to_value(&meta).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"instance": "i", "resourceOwner": "o", "creator": "c",
                "correlationId": "k", "revision": 3, "createdAt": "1970-01-01T00:00:00.000000005Z",
                "chain": "ab".repeat(32), "$correlationId": "k"})
        );
    }
}
