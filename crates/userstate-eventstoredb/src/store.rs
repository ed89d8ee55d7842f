//! [`EsdbStore`]: the [`EventStore`] contract on KurrentDB / EventStoreDB.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::Utc;
use kurrentdb::{
    AppendToStreamOptions, CurrentRevision, Position, ReadAllOptions, ReadStreamOptions,
    StreamPosition, StreamState, SubscriptionFilter,
};
use userstate::chain::{self, Coordinates, EventHash};
use userstate::store::{NewEvent, Watermark};
use userstate::{EventStore, ExpectedVersion, RecordedEvent, StoreError, StreamId};

use crate::codec::{decode, encode, our_position};
use crate::connection::Connection;
use crate::keys::EsdbKeyStore;
use crate::naming::StreamNaming;
use crate::positions::PositionIndex;
use crate::removals::is_tombstone;
use crate::{head, EsdbConfig};

/// Events read per request when paging.
const PAGE: usize = 512;
/// Records read per request when looking for the last event backwards.
const HEAD_PAGE: usize = 16;
/// Positions remembered for starting `$all` reads.
const INDEX_CAPACITY: usize = 65_536;
/// Streams whose last sequence and link are remembered (the cache is emptied when full).
const HEADS_CAPACITY: usize = 65_536;
/// The longest pause before an append with [`ExpectedVersion::Any`] tries again after losing a
/// race to another writer (pauses grow with the attempts and are jittered, so contenders spread
/// out; an `Any` append never answers `Conflict`).
const ANY_MAX_PAUSE: std::time::Duration = std::time::Duration::from_millis(20);

/// What the store and its head follower share.
pub(crate) struct Shared {
    pub(crate) connection: Connection,
    pub(crate) naming: StreamNaming,
    pub(crate) index: PositionIndex,
    pub(crate) head: Arc<Watermark>,
    /// Stream -> the sequence and stored link of an event of it seen last: the link the next
    /// append's first event chains to, when it expects that sequence.
    pub(crate) heads: Mutex<HashMap<StreamId, (u64, EventHash)>>,
}

impl Shared {
    /// Raises the head watch to `position` if it is higher.
    pub(crate) fn raise_head(&self, position: u64) {
        self.head.advance(position);
    }

    /// Remembers that `event` is (or was) the last of its stream.
    fn remember_head(&self, event: &RecordedEvent) {
        let mut heads = self.heads.lock().unwrap_or_else(|e| e.into_inner());
        if heads.len() >= HEADS_CAPACITY {
            heads.clear();
        }
        heads.insert(event.stream.clone(), (event.sequence, event.hash));
    }

    /// The link remembered for the event at `sequence` of `stream`.
    fn known_link(&self, stream: &StreamId, sequence: u64) -> Option<EventHash> {
        let heads = self.heads.lock().unwrap_or_else(|e| e.into_inner());
        heads
            .get(stream)
            .filter(|(s, _)| *s == sequence)
            .map(|(_, h)| *h)
    }

    pub(crate) fn filter(&self) -> SubscriptionFilter {
        SubscriptionFilter::on_stream_name().add_prefix(self.naming.prefix())
    }

    /// The last event of the namespace in `$all`, if any (a hard delete's tombstone is no
    /// event: passed over).
    pub(crate) async fn last_event(&self) -> Result<Option<(u64, Position)>, StoreError> {
        let mut before = StreamPosition::End;
        loop {
            let lease = self.connection.lease()?;
            let options = ReadAllOptions::default()
                .backwards()
                .position(before)
                .filter(self.filter())
                .max_count(HEAD_PAGE);
            let mut page = Vec::new();
            let result = async {
                let mut read = lease.client.read_all(&options).await?;
                while let Some(e) = read.next().await? {
                    let event = e.get_original_event();
                    page.push((event.position, is_tombstone(event)));
                }
                Ok::<_, kurrentdb::Error>(())
            }
            .await;
            if let Err(e) = result {
                return Err(self.connection.fail(&lease, e));
            }
            self.connection.succeeded(&lease);
            if let Some((p, _)) = page.iter().find(|(_, tombstone)| !tombstone) {
                return Ok(Some((our_position(*p), *p)));
            }
            match page.last() {
                Some((p, _)) if page.len() == HEAD_PAGE => before = StreamPosition::Position(*p),
                _ => return Ok(None),
            }
        }
    }
}

/// An event store on KurrentDB / EventStoreDB, through the official `kurrentdb` client.
///
/// ```no_run
/// # async fn demo() -> Result<(), userstate::StoreError> {
/// use std::sync::Arc;
/// let store = userstate_eventstoredb::EsdbStore::connect("esdb://localhost:2113?tls=false").await?;
/// let engine = userstate::Engine::new(Arc::new(store));
/// # Ok(()) }
/// ```
///
/// Dropping the store stops its head follower.
pub struct EsdbStore {
    shared: Arc<Shared>,
    follower: tokio::task::JoinHandle<()>,
    namespace: String,
}

impl EsdbStore {
    /// Connects with a connection string (`esdb://host:2113?tls=false`, `kurrentdb://…`, see
    /// [`EsdbConfig::from_url`]). Must be called inside a tokio runtime. It does not wait for
    /// the server: an unreachable server shows as [`StoreError::Unavailable`] on calls, until
    /// it is reachable.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::connect_with(EsdbConfig::from_url(url)?).await
    }

    /// Connects with a full configuration.
    pub async fn connect_with(config: EsdbConfig) -> Result<Self, StoreError> {
        let shared = Arc::new(Shared {
            connection: Connection::new(&config)?,
            naming: StreamNaming::new(config.namespace()),
            index: PositionIndex::new(INDEX_CAPACITY),
            head: Arc::default(),
            heads: Mutex::default(),
        });
        let follower = tokio::spawn(head::follow(shared.clone()));
        Ok(Self {
            shared,
            follower,
            namespace: config.namespace().to_owned(),
        })
    }

    /// The key store of crypto-shredding in this server, shared by every node of the namespace
    /// (see [`EsdbKeyStore`]); makes the username secret when there is none yet.
    pub async fn key_store(&self) -> Result<EsdbKeyStore, StoreError> {
        EsdbKeyStore::open(self.shared.clone(), &self.namespace).await
    }

    /// The namespace prefix of this store's KurrentDB stream names.
    pub fn stream_prefix(&self) -> &str {
        self.shared.naming.prefix()
    }

    /// The KurrentDB stream name of `stream`.
    pub fn esdb_stream_name(&self, stream: &StreamId) -> String {
        self.shared.naming.esdb_name(stream)
    }

    /// Reads `stream` from 0-based `revision`, at most `count` events.
    async fn read_revisions(
        &self,
        stream: &StreamId,
        revision: u64,
        count: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let s = &self.shared;
        let name = s.naming.esdb_name(stream);
        let lease = s.connection.lease()?;
        let options = ReadStreamOptions::default()
            .forwards()
            .position(StreamPosition::Position(revision))
            .max_count(count);
        let mut raw = Vec::new();
        let result = async {
            let mut read = lease.client.read_stream(name.as_str(), &options).await?;
            while let Some(e) = read.next().await? {
                raw.push(e);
            }
            Ok(())
        }
        .await;
        match result {
            // A missing stream is reported on the first read (or, by some servers, on the
            // call): it is empty.
            Ok(()) | Err(kurrentdb::Error::ResourceNotFound) => {}
            Err(kurrentdb::Error::ResourceDeleted) => return Err(deleted(stream, &name)),
            Err(e) => return Err(s.connection.fail(&lease, e)),
        }
        s.connection.succeeded(&lease);
        let events = raw
            .iter()
            .map(|e| {
                let event = e.get_original_event();
                s.index
                    .remember(our_position(event.position), event.position);
                decode(&s.naming, event)
            })
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(last) = events.last() {
            s.remember_head(last);
        }
        Ok(events)
    }

    /// The last event of `stream`, if any.
    async fn last_of(&self, stream: &StreamId) -> Result<Option<RecordedEvent>, StoreError> {
        let s = &self.shared;
        let name = s.naming.esdb_name(stream);
        let lease = s.connection.lease()?;
        let options = ReadStreamOptions::default()
            .backwards()
            .position(StreamPosition::End)
            .max_count(1);
        let result = async {
            let mut read = lease.client.read_stream(name.as_str(), &options).await?;
            read.next().await
        }
        .await;
        let event = match result {
            Ok(e) => e,
            Err(kurrentdb::Error::ResourceNotFound) => None,
            Err(kurrentdb::Error::ResourceDeleted) => return Err(deleted(stream, &name)),
            Err(e) => return Err(s.connection.fail(&lease, e)),
        };
        s.connection.succeeded(&lease);
        event
            .map(|e| decode(&s.naming, e.get_original_event()))
            .transpose()
    }

    /// The stored link of the event at `sequence` of `stream` (the one an append expecting
    /// that version chains to): remembered, or read. [`EventHash::ZERO`] for 0, or when there
    /// is no such event (the append then fails on its expected version).
    async fn link_at(&self, stream: &StreamId, sequence: u64) -> Result<EventHash, StoreError> {
        if sequence == 0 {
            return Ok(EventHash::ZERO);
        }
        if let Some(link) = self.shared.known_link(stream, sequence) {
            return Ok(link);
        }
        let read = self.read_revisions(stream, sequence - 1, 1).await?;
        Ok(read
            .first()
            .filter(|e| e.sequence == sequence)
            .map_or(EventHash::ZERO, |e| e.hash))
    }

    /// Appends `events` after the event at `version` of `stream`, each linked to the one
    /// before it in the stream (ADR 0020).
    async fn append_linked(
        &self,
        stream: &StreamId,
        version: u64,
        mut previous: EventHash,
        events: &[NewEvent],
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let s = &self.shared;
        let name = s.naming.esdb_name(stream);
        let now = Utc::now();
        let mut data = Vec::with_capacity(events.len());
        for (sequence, e) in (version + 1..).zip(events) {
            let created_at = e.created_at.unwrap_or(now);
            let at = Coordinates {
                position: 0, // not known before commit, and not covered by a stream link
                sequence,
                created_at_micros: created_at.timestamp_micros(),
                event_id: e.event_id,
                revision: e.revision,
            };
            let content =
                chain::content_digest(stream.as_str(), &e.event_type, &e.metadata, &e.payload);
            previous = chain::stream_link(&previous, &at, &content);
            data.push(encode(e, created_at, previous)?);
        }
        let expected = ExpectedVersion::Exact(version);
        let options = AppendToStreamOptions::default().stream_state(stream_state(expected));
        let lease = s.connection.lease()?;
        let written = match lease
            .client
            .append_to_stream(name.as_str(), &options, data)
            .await
        {
            Ok(w) => w,
            Err(kurrentdb::Error::WrongExpectedVersion { current, .. }) => {
                s.connection.succeeded(&lease);
                let actual = match current {
                    CurrentRevision::Current(r) => r + 1,
                    CurrentRevision::NoStream => 0,
                };
                return Err(StoreError::Conflict {
                    stream: stream.clone(),
                    expected,
                    actual,
                });
            }
            Err(kurrentdb::Error::ResourceDeleted) => return Err(deleted(stream, &name)),
            Err(e) => return Err(s.connection.fail(&lease, e)),
        };
        s.connection.succeeded(&lease);
        // The append answers only the last revision; read the events back for their
        // positions, so that what we return equals what every later read returns.
        let n = events.len() as u64;
        let first = (written.next_expected_version + 1).saturating_sub(n);
        let recorded = self.read_revisions(stream, first, events.len()).await?;
        let ids_match = recorded.len() == events.len()
            && recorded
                .iter()
                .zip(events)
                .all(|(r, e)| r.event_id == e.event_id);
        if !ids_match {
            return Err(StoreError::Corrupt {
                location: format!("stream {name} from revision {first}"),
                reason: "the events read back after an append are not the ones appended".into(),
            });
        }
        if let Some(last) = recorded.last() {
            s.raise_head(last.position);
        }
        Ok(recorded)
    }

    /// One `$all` page from `start` (inclusive), at most `count` raw records: our events, and
    /// `None` for a hard delete's tombstone (no event of ours; `verify` reports it).
    async fn read_all_page(
        &self,
        start: StreamPosition<Position>,
        count: usize,
    ) -> Result<Vec<(Position, Option<RecordedEvent>)>, StoreError> {
        let s = &self.shared;
        let lease = s.connection.lease()?;
        let options = ReadAllOptions::default()
            .forwards()
            .position(start)
            .filter(s.filter())
            .max_count(count);
        let mut read = match lease.client.read_all(&options).await {
            Ok(r) => r,
            Err(e) => return Err(s.connection.fail(&lease, e)),
        };
        let mut out = Vec::new();
        loop {
            match read.next().await {
                Ok(Some(e)) => {
                    let event = e.get_original_event();
                    let ours = if is_tombstone(event) {
                        None
                    } else {
                        Some(decode(&s.naming, event)?)
                    };
                    out.push((event.position, ours));
                }
                Ok(None) => break,
                Err(e) => return Err(s.connection.fail(&lease, e)),
            }
        }
        s.connection.succeeded(&lease);
        Ok(out)
    }
}

impl Drop for EsdbStore {
    fn drop(&mut self) {
        self.follower.abort();
    }
}

fn deleted(stream: &StreamId, name: &str) -> StoreError {
    StoreError::Backend {
        message: format!(
            "stream {stream} (KurrentDB stream {name}) was deleted in KurrentDB; its events are \
             gone and it cannot be written again"
        ),
        source: None,
    }
}

fn stream_state(expected: ExpectedVersion) -> StreamState {
    match expected {
        ExpectedVersion::Any => StreamState::Any,
        ExpectedVersion::NoStream | ExpectedVersion::Exact(0) => StreamState::NoStream,
        // KurrentDB revisions are 0-based: our version n is its revision n - 1.
        ExpectedVersion::Exact(n) => StreamState::StreamRevision(n - 1),
    }
}

#[async_trait]
impl EventStore for EsdbStore {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        userstate::store::ensure_events(&events)?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (version, previous) = match expected {
                ExpectedVersion::NoStream => (0, EventHash::ZERO),
                ExpectedVersion::Exact(n) => (n, self.link_at(stream, n).await?),
                // The link needs the event before: append after the last one seen, again
                // when another writer got there first.
                ExpectedVersion::Any => match self.last_of(stream).await? {
                    Some(last) => (last.sequence, last.hash),
                    None => (0, EventHash::ZERO),
                },
            };
            match self.append_linked(stream, version, previous, &events).await {
                Err(StoreError::Conflict { .. }) if expected == ExpectedVersion::Any => {
                    // Each round of a race has a winner, so every writer gets through; the
                    // pause keeps many writers of one stream from retrying in lockstep. The
                    // jitter is the clock's nanoseconds: no randomness is needed for it.
                    let grow = std::time::Duration::from_micros(100 << attempt.min(8));
                    let cap = grow.min(ANY_MAX_PAUSE).as_micros() as u64;
                    let nanos = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| u64::from(d.subsec_nanos()));
                    tokio::time::sleep(std::time::Duration::from_micros(nanos % cap.max(1))).await;
                }
                Err(StoreError::Conflict { actual, .. }) => {
                    return Err(StoreError::Conflict {
                        stream: stream.clone(),
                        expected,
                        actual,
                    })
                }
                other => return other,
            }
        }
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        from_sequence: u64,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let mut revision = from_sequence.saturating_sub(1);
        let mut out = Vec::new();
        loop {
            let page = self.read_revisions(stream, revision, PAGE).await?;
            let full = page.len() == PAGE;
            revision += page.len() as u64;
            out.extend(page);
            if !full {
                return Ok(out);
            }
        }
    }

    async fn read_all(
        &self,
        from_position: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let s = &self.shared;
        let from = from_position.max(1);
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        let mut start = match s.index.at_or_before(from) {
            Some((_, p)) => StreamPosition::Position(p),
            None => StreamPosition::Start,
        };
        let mut last_seen: Option<u64> = None;
        loop {
            let count = (limit - out.len()).saturating_add(1).min(PAGE);
            let page = self.read_all_page(start, count).await?;
            let full = page.len() == count;
            for (theirs, event) in page {
                start = StreamPosition::Position(theirs);
                let Some(event) = event else {
                    continue; // a tombstone
                };
                let ours = event.position;
                s.index.remember(ours, theirs);
                if let Some(last) = last_seen {
                    if ours == last {
                        continue; // the inclusive start of this page, already handled
                    }
                    if ours < last {
                        return Err(StoreError::Corrupt {
                            location: format!("$all at {theirs}"),
                            reason: format!("position {ours} after {last}: $all out of order"),
                        });
                    }
                }
                last_seen = Some(ours);
                if ours >= from {
                    s.raise_head(ours);
                    out.push(event);
                    if out.len() == limit {
                        return Ok(out);
                    }
                }
            }
            if !full {
                return Ok(out);
            }
        }
    }

    async fn head_position(&self) -> Result<u64, StoreError> {
        let head = self.shared.last_event().await?;
        let position = head.map_or(0, |(ours, theirs)| {
            self.shared.index.remember(ours, theirs);
            ours
        });
        self.shared.raise_head(position);
        Ok(position)
    }

    fn watch_head(&self) -> Arc<Watermark> {
        self.shared.head.clone()
    }

    /// KurrentDB's tombstones and deleting or truncating stream metadata of the namespace's
    /// streams and key streams (`src/removals.rs`).
    async fn removals(&self) -> Result<Vec<userstate::store::Removal>, StoreError> {
        crate::removals::removals(&self.shared).await
    }

    /// Our positions are KurrentDB's commit positions plus one: far apart, never dense.
    fn dense_positions(&self) -> bool {
        false
    }

    /// KurrentDB orders events itself, without a lock the global link could be computed under
    /// (ADR 0020): the global chain is computed over `$all` as read, by `verify` and `export`.
    fn stores_chain(&self) -> bool {
        false
    }

    /// Each event's custom metadata carries its link in its stream's chain, made at append
    /// (where the expected version fixes the event before it).
    fn stores_stream_chain(&self) -> bool {
        true
    }
}
