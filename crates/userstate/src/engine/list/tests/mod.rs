//! Lists against a brute-force filter and sort over a plain list of the users (property test),
//! page by page, and what a request means. The indexes' own bookkeeping — sorted chunks, name
//! labels, compaction — is tested in `index`.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use proptest::prelude::*;

use super::*;
use crate::domain::{InstanceId, UserId};
use crate::engine::read_model::UserView;
use crate::store::{EventMetadata, NewEvent, RecordedEvent, StreamId};

mod index;

const INSTANCES: [&str; 2] = ["i1", "i2"];
const ORGS: [&str; 3] = ["o1", "o2", "o3"];
/// Letters of user names and query texts: case pairs, a non-ASCII pair, a digit.
const LETTERS: [char; 7] = ['a', 'A', 'b', 'B', 'é', 'É', '1'];

/// One event to apply: the user (instance, number) and what happens to it.
#[derive(Clone, Debug)]
enum Step {
    Add {
        user: (usize, usize),
        name: String,
        org: usize,
        initial: bool,
        /// Seconds after a fixed instant (few values: ties happen).
        at: i64,
    },
    Change {
        user: (usize, usize),
        event: &'static str,
    },
    /// The follower's compaction of the list indexes, at any point.
    Compact,
}

fn name() -> impl Strategy<Value = String> {
    proptest::collection::vec(proptest::sample::select(&LETTERS[..]), 1..4)
        .prop_map(|cs| cs.into_iter().collect())
}

fn step() -> impl Strategy<Value = Step> {
    let user = (0..INSTANCES.len(), 0..12usize);
    prop_oneof![
        8 => (user.clone(), name(), 0..ORGS.len(), any::<bool>(), 0..4i64).prop_map(
            |(user, name, org, initial, at)| Step::Add {
                user,
                name,
                org,
                initial,
                at
            }
        ),
        8 => (
            user,
            proptest::sample::select(
                &[
                    "user.deactivated",
                    "user.reactivated",
                    "user.locked",
                    "user.unlocked",
                    "user.removed",
                ][..]
            )
        )
            .prop_map(|(user, event)| Step::Change { user, event }),
        1 => Just(Step::Compact),
    ]
}

fn state() -> impl Strategy<Value = UserState> {
    proptest::sample::select(
        &[
            UserState::Initial,
            UserState::Active,
            UserState::Inactive,
            UserState::Locked,
            UserState::Deleted,
        ][..],
    )
}

/// A query without and/or/not.
fn leaf() -> impl Strategy<Value = UserQuery> {
    prop_oneof![
        state().prop_map(UserQuery::State),
        (0..ORGS.len() + 1).prop_map(|o| UserQuery::Organization(
            ORGS.get(o).copied().unwrap_or("nope").to_owned()
        )),
        (
            proptest::collection::vec(proptest::sample::select(&LETTERS[..]), 0..3),
            proptest::sample::select(&TextMethod::ALL[..])
        )
            .prop_map(|(cs, method)| UserQuery::UserName {
                text: cs.into_iter().collect(),
                method
            }),
        proptest::collection::vec(0..14usize, 0..4).prop_map(|ids| UserQuery::InUserIds(
            ids.into_iter().map(|i| format!("u{i}")).collect()
        )),
    ]
}

/// A query, and/or/not included; most often a plain one (as requests have them).
fn query() -> impl Strategy<Value = UserQuery> {
    let tree = leaf().prop_recursive(3, 12, 3, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..3).prop_map(UserQuery::Or),
            proptest::collection::vec(inner.clone(), 0..3).prop_map(UserQuery::And),
            inner.prop_map(|q| UserQuery::Not(Box::new(q))),
        ]
    });
    prop_oneof![2 => leaf(), 1 => tree]
}

fn sort() -> impl Strategy<Value = SortColumn> {
    proptest::sample::select(
        &[
            SortColumn::UserName,
            SortColumn::CreationDate,
            SortColumn::State,
        ][..],
    )
}

fn stream(user: (usize, usize)) -> String {
    format!("user:{}:u{}", INSTANCES[user.0], user.1)
}

fn event(
    position: usize,
    stream: &str,
    at: i64,
    event_type: &str,
    payload: serde_json::Value,
) -> RecordedEvent {
    let at = DateTime::<Utc>::from_timestamp(1_700_000_000 + at, 0).unwrap();
    RecordedEvent::record(
        StreamId::new(stream).unwrap(),
        1,
        position as u64 + 1,
        at,
        NewEvent::new(event_type, 1, payload, EventMetadata::default()),
    )
}

/// The model after `steps`, and every stream that was added.
fn fold(steps: &[Step]) -> (ReadModel, BTreeMap<String, (usize, usize)>) {
    let mut model = ReadModel::default();
    let mut added = BTreeMap::new();
    for (i, s) in steps.iter().enumerate() {
        let e = match s {
            Step::Add {
                user,
                name,
                org,
                initial,
                at,
            } => {
                added.insert(stream(*user), *user);
                let payload = serde_json::json!({
                    "username": name, "resourceOwner": ORGS[*org], "initial": initial
                });
                event(i, &stream(*user), *at, "user.human.added", payload)
            }
            // Locks and unlocks carry a payload (issue 24's reason and end), all fields optional.
            Step::Change { user, event: t } => {
                event(i, &stream(*user), 5, t, serde_json::json!({}))
            }
            Step::Compact => {
                model.compact_lists();
                continue;
            }
        };
        model.apply(&e);
    }
    (model, added)
}

/// The answer written plainly: every user of the instance, filtered, sorted, paged.
fn brute_force(
    model: &ReadModel,
    added: &BTreeMap<String, (usize, usize)>,
    principal: &Principal,
    request: &ListRequest,
) -> (u64, Vec<UserView>) {
    let mut all: Vec<UserView> = added
        .values()
        .filter(|(i, _)| INSTANCES[*i] == principal.instance.as_str())
        .filter_map(|&(_, u)| {
            model.user(&principal.instance, &UserId::new(format!("u{u}")).unwrap())
        })
        .filter(|v| v.state != UserState::Deleted)
        .filter(|v| principal.may(Permission::UserRead, &v.resource_owner))
        .filter(|v| {
            let candidate = Candidate {
                user_id: v.user_id.as_str(),
                username: &v.username,
                org: v.resource_owner.as_str(),
                state: v.state,
            };
            request.queries.iter().all(|q| q.matches(&candidate))
        })
        .collect();
    all.sort_by(|a, b| match request.asc {
        true => request.sort.cmp(a, b),
        false => request.sort.cmp(b, a),
    });
    let total = all.len() as u64;
    let limit = request.page_size().unwrap();
    let page = all
        .into_iter()
        .skip(request.offset as usize)
        .take(limit)
        .collect();
    (total, page)
}

/// An instance-wide reader (the lists across organisations when no organisation is named), or
/// one with read grants on some organisations (the per-organisation lists; the lists across
/// organisations when its grants cover every organisation with users).
fn principal() -> impl Strategy<Value = Principal> {
    (
        0..INSTANCES.len(),
        proptest::option::of(proptest::collection::vec(0..ORGS.len(), 0..5)),
    )
        .prop_map(|(i, orgs)| {
            let instance = InstanceId::new(INSTANCES[i]).unwrap();
            match orgs {
                None => Principal::system("admin", instance),
                Some(orgs) => {
                    let mut p = Principal::for_orgs(
                        "scoped",
                        instance,
                        orgs.iter().map(|&o| OrgId::new(ORGS[o]).unwrap()),
                        &[Permission::UserRead],
                    );
                    // Write without read on o3 does not let it list o3's users.
                    p.org_grants
                        .entry(OrgId::new("o3").unwrap())
                        .or_default()
                        .insert(Permission::UserWrite);
                    p
                }
            }
        })
}

/// The property: every list, whole and page by page, is the brute-force answer.
fn list_page_by_page(
    steps: &[Step],
    principal: &Principal,
    queries: Vec<UserQuery>,
    sort: SortColumn,
    asc: bool,
    limit: u32,
) -> Result<(), TestCaseError> {
    let (model, added) = fold(steps);
    let unpaged = ListRequest {
        offset: 0,
        limit: MAX_LIMIT,
        asc,
        sort,
        queries,
    };
    let whole = model.list(principal, &unpaged).unwrap();
    let (total, expected) = brute_force(&model, &added, principal, &unpaged);
    prop_assert_eq!(whole.total, total);
    prop_assert_eq!(&whole.users, &expected);
    prop_assert_eq!(whole.position, model.position());

    let mut pages = Vec::new();
    let mut offset = 0;
    loop {
        let request = ListRequest {
            offset,
            limit,
            ..unpaged.clone()
        };
        let page = model.list(principal, &request).unwrap();
        let (total, expected) = brute_force(&model, &added, principal, &request);
        prop_assert_eq!(page.total, total);
        prop_assert_eq!(&page.users, &expected);
        if page.users.is_empty() {
            break;
        }
        pages.extend(page.users);
        offset += u64::from(limit);
    }
    prop_assert_eq!(pages, whole.users);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn a_list_is_the_brute_force_answer_page_by_page(
        steps in proptest::collection::vec(step(), 0..60),
        principal in principal(),
        queries in proptest::collection::vec(query(), 0..3),
        sort in sort(),
        asc in any::<bool>(),
        limit in 1u32..5,
    ) {
        list_page_by_page(&steps, &principal, queries, sort, asc, limit)?;
    }

    #[test]
    fn sorted_chunks_hold_what_a_sorted_vector_holds(
        ops in proptest::collection::vec((any::<bool>(), 0u32..3000), 0..3000),
        from in 0usize..3000,
        len in 0usize..1200,
    ) {
        let cmp = |a: u32, b: u32| a.cmp(&b);
        let mut ids = SortedIds::default();
        let mut plain: Vec<u32> = Vec::new();
        for (insert, id) in ops {
            match (insert, plain.binary_search(&id)) {
                (true, Err(at)) => {
                    plain.insert(at, id);
                    ids.insert(id, cmp);
                }
                (false, found) => {
                    prop_assert_eq!(ids.remove(id, cmp), found.is_ok());
                    if let Ok(at) = found {
                        plain.remove(at);
                    }
                }
                (true, Ok(_)) => {}
            }
        }
        prop_assert_eq!(ids.len(), plain.len());
        prop_assert_eq!(ids.rank(|x| x < 1500), plain.partition_point(|&x| x < 1500));
        let to = (from + len).min(plain.len());
        let from = from.min(to);
        prop_assert_eq!(ids.range(from, to).collect::<Vec<_>>(), plain[from..to].to_vec());
        prop_assert_eq!(
            ids.range(from, to).rev().collect::<Vec<_>>(),
            plain[from..to].iter().rev().copied().collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_merge_is_the_sorted_concatenation(
        mut streams in proptest::collection::vec(proptest::collection::vec(0u32..100, 0..20), 0..12),
    ) {
        for s in &mut streams {
            s.sort_unstable();
        }
        let merged: Vec<u32> = Merge::new(streams.iter().map(|s| s.iter().copied()), |a: u32, b: u32| a.cmp(&b)).collect();
        let mut plain: Vec<u32> = streams.concat();
        plain.sort_unstable();
        prop_assert_eq!(merged, plain);
    }
}

#[test]
fn a_limit_over_the_maximum_is_refused_and_zero_is_the_default() {
    let principal = Principal::system("admin", InstanceId::new("i1").unwrap());
    let model = ReadModel::default();
    let request = ListRequest {
        limit: MAX_LIMIT + 1,
        ..ListRequest::default()
    };
    let error = model.list(&principal, &request).unwrap_err();
    assert_eq!(error.kind(), crate::error::ErrorKind::InvalidArgument);
    assert_eq!(
        ListRequest::default().page_size().unwrap(),
        DEFAULT_LIMIT as usize
    );
}

#[test]
fn ignoring_case_folds_every_character() {
    assert!(TextMethod::StartsWithIgnoreCase.matches("Élan", "éL"));
    assert!(!TextMethod::StartsWith.matches("Élan", "éL"));
    assert!(TextMethod::EndsWithIgnoreCase.matches("ALICE", "ice"));
    assert!(TextMethod::ContainsIgnoreCase.matches("mAlIcE", "LIC"));
    assert!(TextMethod::EqualsIgnoreCase.matches("Bob", "bOB"));
    assert_eq!(fold_cmp("abc", "ABD"), Ordering::Less);
    assert_eq!(fold_cmp("É", "é"), Ordering::Equal);
}

#[test]
fn a_case_sensitive_prefix_is_checked_on_each_user_of_the_range() {
    let add = |user, name: &str| Step::Add {
        user,
        name: name.to_owned(),
        org: 0,
        initial: false,
        at: 0,
    };
    let steps = [add((0, 1), "ab"), add((0, 2), "Ab"), add((0, 3), "b")];
    let (model, added) = fold(&steps);
    let principal = Principal::system("admin", InstanceId::new("i1").unwrap());
    let request = ListRequest {
        asc: true,
        sort: SortColumn::UserName,
        queries: vec![UserQuery::UserName {
            text: "a".to_owned(),
            method: TextMethod::StartsWith,
        }],
        ..ListRequest::default()
    };
    let list = model.list(&principal, &request).unwrap();
    let (total, expected) = brute_force(&model, &added, &principal, &request);
    assert_eq!((list.total, &list.users), (total, &expected));
    assert_eq!(list.total, 1);
}

#[test]
fn the_property_reaches_the_groups_across_and_per_organisation_with_both_kinds_of_callers() {
    use std::cell::RefCell;
    use std::collections::HashSet;

    let seen = RefCell::new(HashSet::new());
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let strategy = (
        proptest::collection::vec(step(), 0..60),
        principal(),
        proptest::collection::vec(query(), 0..3),
        sort(),
        any::<bool>(),
        1u32..5,
    );
    runner
        .run(
            &strategy,
            |(steps, principal, queries, sort, asc, limit)| {
                let before = MERGES.get();
                list_page_by_page(&steps, &principal, queries, sort, asc, limit)?;
                let after = MERGES.get();
                let wide = principal.instance_grants.contains(&Permission::UserRead);
                for (across, (a, b)) in [true, false].into_iter().zip(after.into_iter().zip(before))
                {
                    if a > b {
                        seen.borrow_mut().insert((wide, across));
                    }
                }
                Ok(())
            },
        )
        .unwrap();
    let seen = seen.into_inner();
    for wide in [true, false] {
        for across in [true, false] {
            assert!(
                seen.contains(&(wide, across)),
                "instance-wide {wide}, across organisations {across} never reached: {seen:?}"
            );
        }
    }
}
