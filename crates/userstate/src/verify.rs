//! `verify`: scan a whole store and report everything that breaks the log's invariants —
//! gapless 1-based sequences per stream, strictly increasing positions, decodable user events,
//! user histories that the lifecycle rules could have produced, and username reservations
//! whose holder is a live user with that name (an orphan is reported; the next add of the name
//! reclaims it).
//!
//! It also checks the hash chain ([`crate::chain`]): every event's stored hash must be the
//! hash of its content chained to the stored hash of the event read before it, so a changed,
//! removed, inserted or reordered event is reported at its position (a removed one at the
//! event that follows the gap, which no longer chains to the one before it). On KurrentDB,
//! which links each event to the one before it in its stream instead, those links are checked
//! the same way, stream by stream, and the records KurrentDB keeps of streams deleted or
//! truncated through its API are reported by position ([`EventStore::removals`]). With a signed
//! [`Checkpoint`], the hash at its position must be the signed one: that proves the log up to
//! it is the one that was signed, even against someone who rewrote the chain.
//!
//! Framing and checksums are the file store's own business: `FileStore::open` refuses a damaged
//! log with the file and offset, and the `userstate verify` command reports that as a finding.

use std::collections::{HashMap, HashSet};
use std::fmt;

mod removals;

use crate::chain::{Checkpoint, EventHash};
use crate::domain::{InstanceId, StreamKind, StreamName, User, UserCommand, UserEvent, UserId};
use crate::engine::{username_holder, username_holds, Error};
use crate::store::{EventStore, RecordedEvent, StreamId};

/// Events read per page.
const PAGE: usize = 4096;

/// One thing wrong in the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// The stream, when the finding is about one.
    pub stream: Option<StreamId>,
    /// The event's sequence, when the finding is about one event.
    pub sequence: Option<u64>,
    /// The event's position.
    pub position: Option<u64>,
    /// What is wrong.
    pub problem: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(stream) = &self.stream {
            write!(f, "stream {stream}")?;
        }
        if let Some(sequence) = self.sequence {
            write!(f, " sequence {sequence}")?;
        }
        if let Some(position) = self.position {
            write!(f, " (position {position})")?;
        }
        write!(f, ": {}", self.problem)
    }
}

/// The result of a scan.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Events scanned.
    pub events: u64,
    /// Distinct streams seen.
    pub streams: u64,
    /// User streams seen.
    pub users: u64,
    /// Everything found wrong, in log order.
    pub findings: Vec<Finding>,
    /// How many of the findings are breaks of the hash chain (or of the checkpoint).
    pub chain_breaks: u64,
    /// The position of the last event scanned (0: none).
    pub head_position: u64,
    /// The stored chain hash of the last event scanned ([`EventHash::ZERO`]: none).
    pub head_hash: EventHash,
    /// Whether the checkpoint given to [`verify_store_against`] was proven.
    pub checkpoint_proven: bool,
    /// Whether the store records the chain ([`EventStore::stores_chain`]). When it does not
    /// (KurrentDB), the global hashes are computed here over the log as read, and its events'
    /// links in their streams' chains are checked instead
    /// ([`EventStore::stores_stream_chain`]): a changed, removed, inserted or reordered event
    /// of a stream is named by its position; a whole stream removed or events of different
    /// streams reordered show only against a signed checkpoint, which names its own position —
    /// unless it was done through KurrentDB's API (a stream deleted or truncated), whose
    /// records ([`EventStore::removals`]) are findings at their positions.
    pub chain_stored: bool,
    /// Username reservations held by no live user with that name, in log order: what an add
    /// leaves when it crashes between its two writes (or, on a store in use, an add between
    /// them). Not a broken invariant — the next add of the name reclaims it — so not a finding.
    pub orphans: Vec<Finding>,
}

impl Report {
    /// Whether nothing was found wrong.
    pub fn is_clean(&self) -> bool {
        self.findings.is_empty()
    }
}

struct StreamCheck {
    last_sequence: u64,
    /// The stream's last event's stored link and position (stream chains, KurrentDB).
    last_link: EventHash,
    last_position: u64,
    user: Option<User>,
}

/// Scans every event of `store` in position order. `progress` is called after each page with
/// the number of events scanned so far.
pub async fn verify_store(
    store: &dyn EventStore,
    progress: impl FnMut(u64),
) -> Result<Report, Error> {
    verify_store_against(store, None, progress).await
}

/// Like [`verify_store`], and when `checkpoint` is given (already checked against its public
/// key by the caller, see [`Checkpoint::check_signature`]), also proves the log up to the
/// checkpoint's position is the one that was signed: [`Report::checkpoint_proven`], or a
/// finding saying why not.
pub async fn verify_store_against(
    store: &dyn EventStore,
    checkpoint: Option<&Checkpoint>,
    mut progress: impl FnMut(u64),
) -> Result<Report, Error> {
    let mut report = Report {
        chain_stored: store.stores_chain(),
        ..Report::default()
    };
    let stream_chain = !report.chain_stored && store.stores_stream_chain();
    // Stream chains: whether an event carrying a link was seen yet (events written before
    // the stream chain carry none).
    let mut linked_seen = false;
    let mut previous_hash = EventHash::ZERO;
    let mut previous_position = 0u64;
    // Some(true): the checkpoint's event was found with the signed hash.
    // A checkpoint of the empty log (position 0) is matched by the chain's start.
    let mut checkpoint_matched = checkpoint
        .filter(|c| c.position == 0)
        .map(|c| c.hash == EventHash::ZERO);
    let mut streams: HashMap<StreamId, StreamCheck> = HashMap::new();
    let mut last_position = 0;
    // The last event of every username reservation stream.
    let mut reservations: HashMap<StreamId, RecordedEvent> = HashMap::new();
    // The user streams holding a `user.erased`: their key streams' tombstones are erasures.
    let mut erased: HashSet<StreamId> = HashSet::new();
    loop {
        let page = store.read_all(last_position + 1, PAGE).await?;
        if page.is_empty() {
            break;
        }
        for event in &page {
            let stored = event;
            let computed;
            let event = if report.chain_stored {
                event
            } else {
                // KurrentDB: the chain is computed over the log as read (ADR 0020).
                let mut e = event.clone();
                e.hash = e.chain_hash(&previous_hash);
                computed = e;
                &computed
            };
            report.events += 1;
            if event.position <= last_position {
                report.findings.push(finding(
                    event,
                    format!("position does not increase (after {last_position})"),
                ));
            }
            last_position = last_position.max(event.position);
            if report.chain_stored && event.hash != event.chain_hash(&previous_hash) {
                report.chain_breaks += 1;
                let problem = if previous_position == 0 {
                    "hash chain broken: the event does not match its hash as the log's first \
                     event (changed, or events before it were removed)"
                        .to_owned()
                } else {
                    format!(
                        "hash chain broken: the event does not match its hash chained to the \
                         event before it (position {previous_position}): it was changed, \
                         inserted or moved, or an event between them was removed"
                    )
                };
                report.findings.push(finding(event, problem));
            }
            if let Some(cp) = checkpoint {
                if event.position == cp.position {
                    checkpoint_matched = Some(event.hash == cp.hash);
                    if event.hash != cp.hash {
                        report.chain_breaks += 1;
                        report.findings.push(finding(
                            event,
                            format!(
                                "the event's hash {} is not the signed checkpoint's {}: the log \
                                 up to here is not the one that was signed",
                                event.hash, cp.hash
                            ),
                        ));
                    }
                }
            }
            previous_hash = event.hash;
            previous_position = event.position;
            let check = streams
                .entry(event.stream.clone())
                .or_insert_with(|| StreamCheck {
                    last_sequence: 0,
                    last_link: EventHash::ZERO,
                    last_position: 0,
                    user: (StreamKind::of(event.stream.as_str()) == Some(StreamKind::User))
                        .then(User::default),
                });
            if stream_chain {
                if let Some(problem) = check_stream_link(stored, check, &mut linked_seen) {
                    report.chain_breaks += 1;
                    report.findings.push(finding(event, problem));
                }
                check.last_link = stored.hash;
                check.last_position = stored.position;
            }
            if event.sequence != check.last_sequence + 1 {
                report.findings.push(finding(
                    event,
                    format!("sequence gap: expected {}", check.last_sequence + 1),
                ));
            }
            check.last_sequence = event.sequence;
            if StreamKind::of(event.stream.as_str()) == Some(StreamKind::Username) {
                reservations.insert(event.stream.clone(), event.clone());
            }
            if let Some(user) = &mut check.user {
                if event.event_type == crate::crypto::USER_ERASED {
                    erased.insert(event.stream.clone());
                }
                if let Some(problem) = check_user_event(user, event) {
                    report.findings.push(finding(event, problem));
                }
            }
        }
        progress(report.events);
    }
    report.head_position = previous_position;
    report.head_hash = previous_hash;
    if let Some(cp) = checkpoint {
        let breaks_before = report
            .findings
            .iter()
            .any(|f| f.position.is_some_and(|p| p <= cp.position) && f.problem.contains("hash"));
        match checkpoint_matched {
            Some(true) if !breaks_before => report.checkpoint_proven = true,
            Some(true) => {
                report.findings.push(Finding {
                    stream: None,
                    sequence: None,
                    position: Some(cp.position),
                    problem: "the checkpoint's hash is found, but the chain before it is \
                              broken: the log up to the checkpoint is not the one signed"
                        .into(),
                });
                report.chain_breaks += 1;
            }
            Some(false) => {}
            None => {
                report.chain_breaks += 1;
                report.findings.push(Finding {
                    stream: None,
                    sequence: None,
                    position: Some(cp.position),
                    problem: format!(
                        "the signed checkpoint's position {} is not in the log (its last \
                         position is {previous_position}): events were removed",
                        cp.position
                    ),
                });
            }
        }
    }
    removals::report(&mut report, &store.removals().await?, &erased);
    report.orphans = orphans(&reservations, &streams);
    report.streams = streams.len() as u64;
    report.users = streams.values().filter(|s| s.user.is_some()).count() as u64;
    Ok(report)
}

/// Reservations held by a user that is not a live user with that name, in log order. On a
/// store in use, an add between its two writes shows as one too.
fn orphans(
    reservations: &HashMap<StreamId, RecordedEvent>,
    streams: &HashMap<StreamId, StreamCheck>,
) -> Vec<Finding> {
    let mut found: Vec<Finding> = reservations
        .values()
        .filter_map(|last| {
            let holder = username_holder(last)?;
            let Some(StreamName::Username {
                instance,
                canonical,
            }) = StreamName::parse(last.stream.as_str())
            else {
                return None;
            };
            let user_stream = StreamId::user(&InstanceId::new(instance).ok()?, &holder);
            let user = streams.get(&user_stream).and_then(|s| s.user.as_ref());
            // A reservation stream named by a keyed hash of the name (crypto-shredding, ADR
            // 0016) cannot be matched to the name here: its holder must be live.
            let hashed = canonical.len() == 66 && canonical.starts_with("h-");
            let live = |u: &User| {
                u.state()
                    .is_some_and(|s| s != crate::domain::UserState::Deleted)
            };
            if user.is_some_and(|u| {
                if hashed {
                    live(u)
                } else {
                    username_holds(u, canonical)
                }
            }) {
                return None;
            }
            Some(finding(
                last,
                format!(
                    "orphaned username reservation: held by user {holder:?}, \
                     which is not a live user with this name"
                ),
            ))
        })
        .collect();
    found.sort_by_key(|f| f.position);
    found
}

/// The problem with `event`'s link in its stream's chain (KurrentDB, ADR 0020), if any.
fn check_stream_link(
    event: &RecordedEvent,
    stream: &StreamCheck,
    linked_seen: &mut bool,
) -> Option<String> {
    if event.hash == EventHash::ZERO {
        return (*linked_seen).then(|| {
            "hash chain broken: the event carries no link in its stream's chain, though events \
             before it do: its link was removed (or an older userstate wrote it)"
                .to_owned()
        });
    }
    *linked_seen = true;
    if event.hash == event.stream_chain_hash(&stream.last_link) {
        return None;
    }
    Some(if stream.last_position == 0 {
        "hash chain broken: the event does not match its link as its stream's first event \
         (changed, or events of the stream before it were removed)"
            .to_owned()
    } else {
        format!(
            "hash chain broken: the event does not match its link to the event before it in \
             its stream (position {}): it was changed, inserted or moved, or an event of the \
             stream between them was removed",
            stream.last_position
        )
    })
}

fn finding(event: &RecordedEvent, problem: String) -> Finding {
    Finding {
        stream: Some(event.stream.clone()),
        sequence: Some(event.sequence),
        position: Some(event.position),
        problem,
    }
}

/// Folds `event` onto `user`, returning a problem when the event cannot be decoded or is not
/// what any command could have decided in the user's state.
fn check_user_event(user: &mut User, event: &RecordedEvent) -> Option<String> {
    let decoded = match UserEvent::decode(&event.event_type, event.revision, &event.payload) {
        Ok(e) => e,
        Err(e) => return Some(format!("undecodable user event: {e}")),
    };
    let id = match StreamName::parse(event.stream.as_str()) {
        Some(StreamName::User { user, .. }) => UserId::new(user).ok(),
        _ => None,
    };
    let problem = match (&decoded, id) {
        (_, None) => Some("user stream name does not end in a valid user id".to_owned()),
        (UserEvent::Added(_), Some(_)) if user.data().is_some() => {
            Some("user.human.added on a user that already exists".to_owned())
        }
        (UserEvent::Added(_), Some(_)) => None,
        (other, Some(id)) => {
            let command = match other {
                UserEvent::Deactivated => UserCommand::Deactivate(id),
                UserEvent::Reactivated => UserCommand::Reactivate(id),
                UserEvent::Locked(_) => UserCommand::Lock(id),
                UserEvent::Unlocked(_) => UserCommand::Unlock(id),
                // A check's outcome is recorded for any live user.
                UserEvent::CheckFailed(method, _) | UserEvent::CheckSucceeded(method) => {
                    UserCommand::AuthSucceeded(crate::domain::AuthOutcome {
                        user_id: id,
                        method: *method,
                        now: event.created_at,
                    })
                }
                UserEvent::Erased => UserCommand::Erase(id),
                _ => UserCommand::Remove(id),
            };
            user.decide(&command)
                .err()
                .map(|e| format!("{} breaks the lifecycle rules: {e}", event.event_type))
        }
    };
    user.apply(&decoded, event.created_at);
    problem
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{EventMetadata, ExpectedVersion, MemoryStore, NewEvent};
    use crate::{InstanceId, UserId};

    fn ev(t: &str, payload: serde_json::Value) -> NewEvent {
        NewEvent::new(t, 1, payload, EventMetadata::default())
    }

    #[tokio::test]
    async fn reports_rule_breaks_and_bad_payloads_by_stream_and_sequence() {
        let store = MemoryStore::new();
        let stream = StreamId::user(&InstanceId::new("i").unwrap(), &UserId::new("u").unwrap());
        let added = serde_json::json!({"username": "a", "resourceOwner": "o"});
        store
            .append(
                &stream,
                ExpectedVersion::NoStream,
                vec![
                    ev("user.human.added", added),
                    ev("user.unlocked", serde_json::json!({})),
                    ev("user.frobbed", serde_json::json!({})),
                ],
            )
            .await
            .unwrap();
        let report = verify_store(&store, |_| {}).await.unwrap();
        assert_eq!((report.events, report.users), (3, 1));
        let problems: Vec<(u64, &str)> = report
            .findings
            .iter()
            .map(|f| (f.sequence.unwrap(), f.problem.as_str()))
            .collect();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert_eq!(problems[0].0, 2);
        assert!(problems[0].1.contains("not locked"));
        assert_eq!(problems[1].0, 3);
        assert!(problems[1].1.contains("undecodable"));
        assert!(report.findings[0]
            .to_string()
            .starts_with("stream user:i:u sequence 2"));
    }

    #[tokio::test]
    async fn a_history_written_by_the_engine_is_clean() {
        let store = std::sync::Arc::new(MemoryStore::new());
        let engine = crate::Engine::new(store.clone());
        let ctx = crate::Context::new(crate::Principal::system("a", InstanceId::new("i").unwrap()));
        let id = UserId::new("u").unwrap();
        engine
            .execute(
                &ctx,
                UserCommand::Add(crate::AddUser {
                    user_id: id.clone(),
                    username: "n".into(),
                    organization: crate::OrgId::new("o").unwrap(),
                    profile: None,
                    email: None,
                    initial: true,
                }),
            )
            .await
            .unwrap();
        for cmd in [
            UserCommand::Lock(id.clone()),
            UserCommand::Unlock(id.clone()),
            UserCommand::Remove(id),
        ] {
            engine.execute(&ctx, cmd).await.unwrap();
        }
        let report = verify_store(&*store, |_| {}).await.unwrap();
        assert!(report.is_clean(), "{:?}", report.findings);
        assert_eq!(report.streams, 2, "the user and its username reservation");
    }

    #[tokio::test]
    async fn reports_a_username_reserved_for_a_user_that_was_never_added() {
        let store = MemoryStore::new();
        let instance = InstanceId::new("i").unwrap();
        let reserved = ev(
            crate::engine::USERNAME_RESERVED,
            serde_json::json!({"userId": "ghost", "username": "Alice"}),
        );
        let stream = StreamId::username(&instance, "Alice").unwrap();
        store
            .append(&stream, ExpectedVersion::NoStream, vec![reserved])
            .await
            .unwrap();
        let report = verify_store(&store, |_| {}).await.unwrap();
        assert!(report.is_clean(), "{:?}", report.findings);
        assert_eq!(report.orphans.len(), 1, "{:?}", report.orphans);
        assert_eq!(report.orphans[0].stream.as_ref(), Some(&stream));
        assert!(report.orphans[0].problem.contains("orphaned"));
    }
}
