//! The findings of [`EventStore::removals`](crate::EventStore::removals): streams deleted or
//! truncated through the backend's own API (KurrentDB), which a per-stream chain cannot see
//! when a whole stream or its last events went (ADR 0020).

use std::collections::HashSet;

use super::{Finding, Report};
use crate::domain::{InstanceId, UserId};
use crate::store::{Removal, RemovalKind, RemovalTarget, StreamId};

/// Adds a finding for every removal but the tombstone of the key stream of a user whose
/// `user.erased` is in the log (`erased`: those users' streams), and notes on the scan's
/// findings of a stream (a broken first link, a sequence gap) that it was deleted or
/// truncated. Keeps the findings in position order.
pub(super) fn report(report: &mut Report, removals: &[Removal], erased: &HashSet<StreamId>) {
    if removals.is_empty() {
        return; // every store but KurrentDB: the findings stay exactly as the scan made them
    }
    let scanned = report.findings.len();
    for removal in removals {
        let finding = match &removal.target {
            RemovalTarget::Stream(stream) => {
                note(&mut report.findings[..scanned], stream, removal);
                Finding {
                    stream: Some(stream.clone()),
                    sequence: None,
                    position: Some(removal.position),
                    problem: format!(
                        "the stream was {} in KurrentDB by the record at this position: \
                         userstate never deletes or truncates its streams; the events it \
                         removed are gone from reads of the stream, and from the log once \
                         the server scavenges",
                        removal.kind
                    ),
                }
            }
            RemovalTarget::Key(id) => {
                let user = user_of_key(id);
                let expected = removal.kind == RemovalKind::Tombstoned
                    && user.as_ref().is_some_and(|u| erased.contains(u));
                if expected {
                    continue; // an erasure (ADR 0021)
                }
                let problem = match (&user, removal.kind) {
                    (Some(_), RemovalKind::Tombstoned) => format!(
                        "the user's key stream ({id}) was hard-deleted in KurrentDB by the \
                         record at this position, but the log holds no `user.erased` of the \
                         user: its personal data is unreadable without an erasure on record \
                         (an erase that failed after destroying the key leaves this too: \
                         erase the user again)"
                    ),
                    (Some(_), kind) => format!(
                        "the user's key stream ({id}) was {kind} in KurrentDB by the record \
                         at this position: userstate only ever tombstones a key stream, on \
                         erasure"
                    ),
                    (None, kind) => format!(
                        "the key stream {id} was {kind} in KurrentDB by the record at this \
                         position: userstate never deletes or truncates it"
                    ),
                };
                Finding {
                    stream: user,
                    sequence: None,
                    position: Some(removal.position),
                    problem,
                }
            }
        };
        report.findings.push(finding);
    }
    // Stable: the scan's findings keep their order among themselves.
    report
        .findings
        .sort_by_key(|f| f.position.unwrap_or(u64::MAX));
}

/// The user stream whose key has the id `{instance}:{user}`.
fn user_of_key(id: &str) -> Option<StreamId> {
    let (instance, user) = id.split_once(':')?;
    Some(StreamId::user(
        &InstanceId::new(instance).ok()?,
        &UserId::new(user).ok()?,
    ))
}

/// Says on each of `findings` about `stream` that the stream was deleted or truncated: once
/// the server scavenged, the events the removal covered are gone, and the first one left no
/// longer links to the event before it (nor follows its sequence).
fn note(findings: &mut [Finding], stream: &StreamId, removal: &Removal) {
    for finding in findings {
        if finding.stream.as_ref() == Some(stream) {
            finding.problem.push_str(&format!(
                "; the stream was {} in KurrentDB at position {}",
                removal.kind, removal.position
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::store::{EventStore, MemoryStore, StoreError, StoreWrapper};
    use crate::verify::verify_store;
    use crate::{AddUser, Context, Engine, OrgId, Principal, UserCommand};

    /// A memory store that says it keeps `removals` (as KurrentDB does).
    struct Removed {
        inner: Arc<MemoryStore>,
        removals: Vec<Removal>,
    }

    #[async_trait::async_trait]
    impl StoreWrapper for Removed {
        fn inner(&self) -> &dyn EventStore {
            &*self.inner
        }

        async fn removals(&self) -> Result<Vec<Removal>, StoreError> {
            Ok(self.removals.clone())
        }
    }

    fn removal(position: u64, target: RemovalTarget, kind: RemovalKind) -> Removal {
        Removal {
            position,
            target,
            kind,
        }
    }

    #[tokio::test]
    async fn every_removal_but_an_erasures_key_tombstone_is_a_finding_in_position_order() {
        let inner = Arc::new(MemoryStore::new());
        let engine = Engine::new(inner.clone());
        let instance = InstanceId::new("i").unwrap();
        let ctx = Context::new(Principal::system("admin", instance.clone()));
        for id in ["u", "v"] {
            let add = AddUser {
                user_id: UserId::new(id).unwrap(),
                username: format!("name-{id}"),
                organization: OrgId::new("o").unwrap(),
                profile: None,
                email: None,
                initial: false,
            };
            engine.execute(&ctx, UserCommand::Add(add)).await.unwrap();
        }
        let u = UserId::new("u").unwrap();
        for command in [
            UserCommand::Remove(u.clone()),
            UserCommand::Erase(u.clone()),
        ] {
            engine.execute(&ctx, command).await.unwrap();
        }
        let user = |id: &str| StreamId::user(&instance, &UserId::new(id).unwrap());
        let key = |id: &str| RemovalTarget::Key(id.to_owned());
        let store = Removed {
            inner,
            removals: vec![
                removal(1_000, key("i:u"), RemovalKind::Tombstoned),
                removal(1_001, key("i:v"), RemovalKind::Tombstoned),
                removal(1_002, key("secret"), RemovalKind::Tombstoned),
                removal(1_003, key("i:u"), RemovalKind::SoftDeleted),
                removal(
                    1_004,
                    RemovalTarget::Stream(user("v")),
                    RemovalKind::MaxAge(60),
                ),
            ],
        };
        let report = verify_store(&store, |_| {}).await.unwrap();
        let found: Vec<(Option<StreamId>, Option<u64>)> = report
            .findings
            .iter()
            .map(|f| (f.stream.clone(), f.position))
            .collect();
        assert_eq!(
            found,
            [
                (Some(user("v")), Some(1_001)),
                (None, Some(1_002)),
                (Some(user("u")), Some(1_003)),
                (Some(user("v")), Some(1_004)),
            ],
            "{:?}",
            report.findings
        );
        assert!(report.findings[0].problem.contains("no `user.erased`"));
        assert!(report.findings[1].problem.contains("key stream secret"));
        assert!(report.findings[2].problem.contains("soft-deleted"));
        assert!(report.findings[3].problem.contains("younger than 60 s"));
    }
}
