//! The records KurrentDB keeps of streams deleted or truncated through its API (ADR 0020,
//! issue 28): `verify` reports them by position, because a stream's own chain cannot show a
//! whole stream removed, or its last events.
//!
//! KurrentDB removes events in only these ways, each leaving a record in `$all` that
//! outlives the events (until a scavenge, the removed events stay in `$all` too):
//!
//! - **hard delete** (`Tombstone`): a `$streamDeleted` record in the stream itself, at
//!   revision `i64::MAX`; a scavenge keeps it forever (the stream can never be written again);
//! - **soft delete** (`Delete`): a `$metadata` event in the metadata stream `$$stream` whose
//!   `$tb` (truncate before) is `i64::MAX`;
//! - **truncation** by stream metadata: a `$metadata` event in `$$stream` with `$tb` (the
//!   first revision kept), `$maxCount` or `$maxAge` (seconds) — also what KurrentDB writes
//!   when a soft-deleted stream is written again (`$tb` = the first new revision).
//!
//! A metadata stream keeps only its last event at a scavenge, so a truncation's record can be
//! superseded by later metadata and scavenged with the events; the stream's first event left
//! then no longer links to the one before it (see ADR 0020 for what is proven).
//!
//! They are found with one `$all` read filtered server-side by event type (`$streamDeleted`,
//! `$metadata`), kept when the stream (or the stream the metadata is of) is one of the
//! namespace's or a key stream of it. userstate writes none of them but the tombstones of
//! erased users' key streams.

use kurrentdb::{Position, ReadAllOptions, StreamPosition, SubscriptionFilter};
use userstate::store::{Removal, RemovalKind, RemovalTarget};
use userstate::StoreError;

use crate::codec::our_position;
use crate::keys::KEYS_SUFFIX;
use crate::store::Shared;

/// The event type of a hard delete's tombstone.
pub(crate) const TOMBSTONE: &str = "$streamDeleted";
/// The event type of stream metadata.
const METADATA: &str = "$metadata";
/// The prefix of a metadata stream's name.
const METASTREAM: &str = "$$";
/// KurrentDB's `$tb` of a soft-deleted stream (`EventNumber.DeletedStream`).
const SOFT_DELETED: u64 = i64::MAX as u64;
/// Records read per page.
const PAGE: usize = 512;

/// Whether `event` is a hard delete's tombstone: not an event of ours, and `read_all` skips it
/// (its removal is reported by `verify`).
pub(crate) fn is_tombstone(event: &kurrentdb::RecordedEvent) -> bool {
    event.event_type == TOMBSTONE
}

/// Every removal record of the namespace's streams and key streams, in position order.
pub(crate) async fn removals(shared: &Shared) -> Result<Vec<Removal>, StoreError> {
    let keys_prefix = format!(
        "{}{KEYS_SUFFIX}-",
        shared.naming.prefix().trim_end_matches('-')
    );
    let target = |name: &str| -> Result<Option<RemovalTarget>, StoreError> {
        if let Some(id) = name.strip_prefix(&keys_prefix) {
            return Ok(Some(RemovalTarget::Key(id.to_owned())));
        }
        if name.starts_with(shared.naming.prefix()) {
            return Ok(Some(RemovalTarget::Stream(
                shared.naming.stream_id_of(name)?,
            )));
        }
        Ok(None)
    };
    let mut out = Vec::new();
    let mut start: StreamPosition<Position> = StreamPosition::Start;
    let mut after: Option<Position> = None;
    loop {
        let page = read_page(shared, start).await?;
        let full = page.len() == PAGE;
        let mut last = None;
        for resolved in &page {
            let event = resolved.get_original_event();
            if Some(event.position) == after {
                continue; // the inclusive start of this page, already handled
            }
            last = Some(event.position);
            let position = our_position(event.position);
            let name = event.stream_id();
            if event.event_type == TOMBSTONE {
                if let Some(target) = target(name)? {
                    out.push(Removal {
                        position,
                        target,
                        kind: RemovalKind::Tombstoned,
                    });
                }
                continue;
            }
            let Some(of) = name.strip_prefix(METASTREAM) else {
                continue;
            };
            let Some(target) = target(of)? else {
                continue;
            };
            for kind in metadata_removals(&event.data) {
                out.push(Removal {
                    position,
                    target: target.clone(),
                    kind,
                });
            }
        }
        match last {
            Some(position) if full => {
                start = StreamPosition::Position(position);
                after = Some(position);
            }
            _ => return Ok(out),
        }
    }
}

/// One page of tombstones and metadata events from `start` (inclusive).
async fn read_page(
    shared: &Shared,
    start: StreamPosition<Position>,
) -> Result<Vec<kurrentdb::ResolvedEvent>, StoreError> {
    let lease = shared.connection.lease()?;
    let filter = SubscriptionFilter::on_event_type()
        .add_prefix(TOMBSTONE)
        .add_prefix(METADATA);
    let options = ReadAllOptions::default()
        .forwards()
        .position(start)
        .filter(filter)
        .max_count(PAGE);
    let mut page = Vec::new();
    let result = async {
        let mut read = lease.client.read_all(&options).await?;
        while let Some(e) = read.next().await? {
            page.push(e);
        }
        Ok::<_, kurrentdb::Error>(())
    }
    .await;
    match result {
        Ok(()) => {
            shared.connection.succeeded(&lease);
            Ok(page)
        }
        Err(e) => Err(shared.connection.fail(&lease, e)),
    }
}

/// What a stream metadata event (`$$stream`, JSON) deletes or truncates. Metadata that is not
/// a JSON object, or sets none of `$tb`, `$maxCount` and `$maxAge`, removes nothing (an ACL,
/// for one).
fn metadata_removals(data: &[u8]) -> Vec<RemovalKind> {
    let Ok(serde_json::Value::Object(meta)) = serde_json::from_slice(data) else {
        return Vec::new();
    };
    let number = |key: &str| meta.get(key).and_then(serde_json::Value::as_u64);
    let mut kinds = Vec::new();
    match number("$tb") {
        Some(SOFT_DELETED) => kinds.push(RemovalKind::SoftDeleted),
        // A revision (0-based) to our sequence (1-based) of the first event kept.
        Some(tb) if tb > 0 => kinds.push(RemovalKind::TruncatedBefore(tb + 1)),
        _ => {}
    }
    if let Some(n) = number("$maxCount") {
        kinds.push(RemovalKind::MaxCount(n));
    }
    if let Some(seconds) = number("$maxAge") {
        kinds.push(RemovalKind::MaxAge(seconds));
    }
    kinds
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_that_deletes_or_truncates_is_told_apart_from_other_metadata() {
        let kinds = |json: &str| metadata_removals(json.as_bytes());
        assert_eq!(
            kinds(r#"{"$tb":9223372036854775807}"#),
            [RemovalKind::SoftDeleted]
        );
        assert_eq!(kinds(r#"{"$tb":2}"#), [RemovalKind::TruncatedBefore(3)]);
        assert_eq!(
            kinds(r#"{"$maxCount":1,"$maxAge":60}"#),
            [RemovalKind::MaxCount(1), RemovalKind::MaxAge(60)]
        );
        assert!(kinds(r#"{"$tb":0}"#).is_empty());
        assert!(kinds(r#"{"$acl":{"$r":"$admins"}}"#).is_empty());
        assert!(kinds("not json").is_empty());
    }
}
