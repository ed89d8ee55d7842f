//! Listing users (SPEC.md "Listing users", ZITADEL's `ListUsers`): the indexes of the read
//! model that answer a page without looking at every user. What a request means — the query
//! types, their meaning on one user ([`UserQuery::matches`]), the sort orders — is `query`'s.
//!
//! The indexes hold `u32` indices into the read model's entries (4 bytes per user per index,
//! plus ~30 % slack in the chunks; docs/PERFORMANCE.md "Issue 23"):
//! - per instance, every live (not removed) user in user-name order, for user-name prefix and
//!   equality searches;
//! - per (instance, organisation, live state), the users in user-name order and in creation
//!   order, for the state and organisation filters and every sort column;
//! - per (instance, live state), the same across organisations, for callers who may read every
//!   organisation of the instance and name none (one stream per state, not per organisation).
//!
//! A list merges the groups its top-level state and organisation queries (and the caller's
//! grants) select, in the requested order, and stops after the page; when those queries are
//! all it has, the total is the sum of the groups' live users. Other queries are checked on each
//! candidate (and then the total needs every candidate counted). Not here: who may list (the
//! projection passes the organisations a principal may read) and the wire forms.

use std::cmp::Ordering;
use std::collections::HashSet;

use super::read_model::{Entry, ReadModel};
use super::{Error, Permission, Principal};
use crate::domain::{OrgId, UserState};
use crate::hash::FastMap;
#[cfg(test)]
use sorted::CHUNK;
use sorted::{Merge, SortedIds};

use query::{fold, fold_cmp, name_cmp};
pub use query::{
    Candidate, ListRequest, SortColumn, TextMethod, UserList, UserQuery, DEFAULT_LIMIT, MAX_LIMIT,
};

/// The list indexes of each instance, by instance id (hashed on every state change).
pub(super) type Lists = FastMap<Box<str>, ListIndex>;

/// The live states in the order of their numbers, and so of their groups.
const LIVE: [UserState; 4] = [
    UserState::Active,
    UserState::Inactive,
    UserState::Locked,
    UserState::Initial,
];

/// The group of a state, `None` for a removed user (not listed, not indexed).
fn slot(state: UserState) -> Option<usize> {
    LIVE.iter().position(|&s| s == state)
}

/// The users of one (instance, organisation, state). A user who changes to another live state
/// stays in its old groups' lists (it is skipped there, its state says it left) until it comes
/// back or the lists are compacted: a lock and an unlock then cost the command path no list
/// work when the user was in both states before (docs/PERFORMANCE.md, "The cost on the command
/// path"). [`Entry::grouped`] says which lists hold an entry.
///
/// The command path never compacts: a group that came to hold more than twice its live users
/// (plus [`STALE`]) is queued, and [`compact`] (the projection's follower, about once a second)
/// compacts the queued groups still in that state. A wave of locks and unlocks over many users
/// (BENCH.md's `lock-unlock`) then leaves the users in both groups instead of taking each out
/// and putting it back once per wave.
#[derive(Clone, Debug, Default)]
pub(super) struct Group {
    by_name: SortedIds,
    by_creation: SortedIds,
    /// How many of the users held are in the group's state.
    live: usize,
    /// Whether the group is in its instance's [`ListIndex::queued`].
    queued: bool,
}

/// How many more users than twice its live ones a group's lists may hold before they are
/// compacted (none in tests, so that the property tests compact often).
const STALE: usize = if cfg!(test) { 0 } else { 64 };

impl Group {
    /// Counts entry `i` (now in this group's state) in, adding it to the lists unless they
    /// hold it (`bit` of [`Entry::grouped`]).
    fn enter(&mut self, entries: &mut [Entry], i: u32, bit: u8) {
        self.live += 1;
        if entries[i as usize].grouped & bit == 0 {
            self.by_name.insert(i, by_name(entries));
            self.by_creation.insert(i, by_creation(entries));
            entries[i as usize].grouped |= bit;
        }
    }

    /// Counts a user (now in another state) out, left in the lists. Whether the group should
    /// now be queued for [`compact`] (it holds too many stale users and is not queued yet).
    #[must_use]
    fn leave(&mut self) -> bool {
        self.live -= 1;
        let queue = !self.queued && self.stale();
        self.queued |= queue;
        queue
    }

    /// Whether the lists hold more than twice the live users (plus [`STALE`]).
    fn stale(&self) -> bool {
        self.by_name.len() > 2 * self.live + STALE
    }

    /// Takes the users no longer in state `k` out of the lists (`bit` of [`Entry::grouped`]).
    fn compact(&mut self, entries: &mut [Entry], k: usize, bit: u8) {
        self.queued = false;
        if !self.stale() {
            return;
        }
        let state = LIVE[k];
        for i in self.by_name.range(0, self.by_name.len()) {
            let e = &mut entries[i as usize];
            if e.state != state {
                e.grouped &= !bit;
            }
        }
        let entries = &*entries;
        let held = |i: u32| entries[i as usize].state == state;
        self.by_name.retain(held);
        self.by_creation.retain(held);
    }

    /// Takes entry `i` out of the lists, if they hold it.
    fn purge(&mut self, entries: &mut [Entry], i: u32, bit: u8) {
        if entries[i as usize].grouped & bit != 0 {
            self.by_name.remove(i, by_name(entries));
            self.by_creation.remove(i, by_creation(entries));
            entries[i as usize].grouped &= !bit;
        }
    }
}

/// The bit of [`Entry::grouped`] of the lists of group `k` across organisations.
fn across(k: usize) -> u8 {
    1 << k
}

/// The bit of [`Entry::grouped`] of the lists of group `k` of its organisation.
fn of_org(k: usize) -> u8 {
    1 << (4 + k)
}

/// The list indexes of one instance.
#[derive(Clone, Debug, Default)]
pub(super) struct ListIndex {
    /// Every live user, in user-name order.
    by_name: SortedIds,
    /// By live state ([`LIVE`]), across organisations.
    states: [Group; 4],
    /// By organisation (interned), then by live state ([`LIVE`]).
    orgs: FastMap<u32, [Group; 4]>,
    /// The groups waiting for [`compact`]: (organisation, or `None` across them; live state).
    queued: Vec<(Option<u32>, usize)>,
}

/// Compacts the groups queued since the last call (see [`Group`]): off the command path, by
/// the projection's follower about once a second and after a rebuild. Costs a pass over each
/// queued group's lists.
pub(super) fn compact(lists: &mut Lists, entries: &mut [Entry]) {
    for index in lists.values_mut() {
        for (org, k) in std::mem::take(&mut index.queued) {
            let (group, bit) = match org {
                None => (&mut index.states[k], across(k)),
                Some(org) => match index.orgs.get_mut(&org) {
                    Some(groups) => (&mut groups[k], of_org(k)),
                    None => continue,
                },
            };
            group.compact(entries, k, bit);
        }
    }
}

/// The user-name order of entries `a` and `b` (then by stream name, i.e. user id), by their
/// strings: how an entry finds its place in the instance's user-name list.
fn by_name_text(entries: &[Entry]) -> impl Fn(u32, u32) -> Ordering + '_ {
    move |a, b| {
        let (x, y) = (&entries[a as usize], &entries[b as usize]);
        name_cmp(x.username(), y.username()).then_with(|| x.key().cmp(y.key()))
    }
}

/// The same order by the entries' name labels (of live entries of one instance).
fn by_name(entries: &[Entry]) -> impl Fn(u32, u32) -> Ordering + '_ {
    move |a, b| {
        entries[a as usize]
            .name_label
            .cmp(&entries[b as usize].name_label)
    }
}

/// The creation order of entries `a` and `b` (then by stream name, i.e. user id).
fn by_creation(entries: &[Entry]) -> impl Fn(u32, u32) -> Ordering + '_ {
    move |a, b| {
        let (x, y) = (&entries[a as usize], &entries[b as usize]);
        x.creation_date
            .cmp(&y.creation_date)
            .then_with(|| x.key().cmp(y.key()))
    }
}

/// The ascending order of `sort` on the live entries of one instance (as [`SortColumn::cmp`]
/// on views; the user-name order by the name labels).
fn order(entries: &[Entry], sort: SortColumn) -> impl Fn(u32, u32) -> Ordering + '_ {
    move |a, b| {
        let (x, y) = (&entries[a as usize], &entries[b as usize]);
        let by = match sort {
            SortColumn::UserName => return x.name_label.cmp(&y.name_label),
            SortColumn::CreationDate => x.creation_date.cmp(&y.creation_date),
            SortColumn::State => x
                .state
                .wire_number()
                .cmp(&y.state.wire_number())
                .then(x.creation_date.cmp(&y.creation_date)),
        };
        by.then_with(|| x.key().cmp(y.key()))
    }
}

/// The room left between name labels when there is room: up to 2^32 users can be appended (in
/// user-name order) or ~32 inserted at one place before labels are reassigned. Small in tests,
/// so that the property tests reassign them often.
const GAP: u64 = if cfg!(test) { 4 } else { 1 << 32 };

/// Gives the entry just inserted at `at` of the instance's user-name list `list` a name label
/// between its neighbours' (order-maintenance labelling: every live entry of an instance has
/// a label, strictly increasing along the list, so the label order is the user-name order).
/// When no label is free between the neighbours, reassigns the labels of a window of chunks
/// around it, evenly spaced, widened until they are at least `GAP >> level` apart (the whole
/// list always is, for fewer than 2^32 users).
fn label(list: &SortedIds, entries: &mut [Entry], (c, at): (usize, usize)) {
    let chunks = &list.chunks;
    let prev = match at {
        0 => c.checked_sub(1).map(|p| chunks[p][chunks[p].len() - 1]),
        _ => Some(chunks[c][at - 1]),
    };
    let next = match chunks[c].get(at + 1) {
        Some(&n) => Some(n),
        None => chunks.get(c + 1).map(|n| n[0]),
    };
    let lo = prev.map_or(0, |p| entries[p as usize].name_label);
    let hi = next.map_or(u64::MAX, |n| entries[n as usize].name_label);
    let id = chunks[c][at] as usize;
    if hi - lo >= 2 {
        let room = GAP.min((hi - lo) / 2);
        entries[id].name_label = match (prev, next) {
            (_, None) => lo + room,
            (None, Some(_)) => hi - room,
            (Some(_), Some(_)) => lo + (hi - lo) / 2,
        };
        return;
    }
    let (mut first, mut last, mut level) = (c, c, 0u32);
    loop {
        let lo = first.checked_sub(1).map_or(0, |p| {
            entries[chunks[p][chunks[p].len() - 1] as usize].name_label
        });
        let hi = chunks
            .get(last + 1)
            .map_or(u64::MAX, |n| entries[n[0] as usize].name_label);
        let count: u64 = chunks[first..=last].iter().map(|ch| ch.len() as u64).sum();
        let spacing = GAP.min((hi - lo) / (count + 1));
        let whole = first == 0 && last + 1 == chunks.len();
        if spacing >= (GAP >> level).max(2) || (whole && spacing >= 1) {
            let ids = chunks[first..=last].iter().flatten();
            for (j, &i) in (1u64..).zip(ids) {
                entries[i as usize].name_label = lo + spacing * j;
            }
            return;
        }
        let width = 1usize << level;
        first = first.saturating_sub(width);
        last = (last + width).min(chunks.len() - 1);
        level += 1;
    }
}

/// Adds entry `i` to the list indexes, if it is live (and gives it its name label).
pub(super) fn index(lists: &mut Lists, entries: &mut [Entry], i: u32) {
    let entry = &entries[i as usize];
    let Some(k) = slot(entry.state) else {
        return;
    };
    let org = entry.org;
    let (instance, _) = entry.ids();
    let lists = match lists.get_mut(instance) {
        Some(lists) => lists,
        None => lists.entry(instance.into()).or_default(),
    };
    // Lists that still hold it are ordered by its old label.
    let groups = lists.orgs.entry(org).or_default();
    for (j, (wide, of)) in lists.states.iter_mut().zip(groups.iter_mut()).enumerate() {
        wide.purge(entries, i, across(j));
        of.purge(entries, i, of_org(j));
    }
    let at = lists.by_name.insert(i, by_name_text(entries));
    label(&lists.by_name, entries, at);
    lists.states[k].enter(entries, i, across(k));
    groups[k].enter(entries, i, of_org(k));
}

/// Removes entry `i` from the list indexes (before its state or data changes).
pub(super) fn unindex(lists: &mut Lists, entries: &mut [Entry], i: u32) {
    remove(lists, entries, i, slot(entries[i as usize].state));
}

/// Removes entry `i` from the list indexes, where `k` is its live state's group, if any.
fn remove(lists: &mut Lists, entries: &mut [Entry], i: u32, k: Option<usize>) {
    let entry = &entries[i as usize];
    let org = entry.org;
    let (instance, _) = entry.ids();
    let Some(lists) = lists.get_mut(instance) else {
        return;
    };
    if k.is_some() {
        lists.by_name.remove(i, by_name(entries));
    }
    for j in 0..4 {
        lists.states[j].live -= usize::from(Some(j) == k);
        lists.states[j].purge(entries, i, across(j));
    }
    if let Some(groups) = lists.orgs.get_mut(&org) {
        for (j, group) in groups.iter_mut().enumerate() {
            group.live -= usize::from(Some(j) == k);
            group.purge(entries, i, of_org(j));
        }
    }
}

/// Keeps the list indexes in step with entry `i`'s change of state from `old` (its state is
/// already the new one). Between live states only its state groups change: the instance's
/// user-name list and its name label stay, and it stays in the lists of the old state (see
/// [`Group`]).
pub(super) fn restate(lists: &mut Lists, entries: &mut [Entry], i: u32, old: UserState) {
    let entry = &entries[i as usize];
    match (slot(old), slot(entry.state)) {
        (Some(from), Some(to)) if from != to => {
            let org = entry.org;
            let (instance, _) = entry.ids();
            let Some(lists) = lists.get_mut(instance) else {
                return;
            };
            if lists.states[from].leave() {
                lists.queued.push((None, from));
            }
            lists.states[to].enter(entries, i, across(to));
            if let Some(groups) = lists.orgs.get_mut(&org) {
                if groups[from].leave() {
                    lists.queued.push((Some(org), from));
                }
                groups[to].enter(entries, i, of_org(to));
            }
        }
        (Some(_), Some(_)) | (None, None) => {}
        (Some(from), None) => remove(lists, entries, i, Some(from)),
        (None, Some(_)) => index(lists, entries, i),
    }
}

#[cfg(test)]
thread_local! {
    /// How many lists of this thread merged the groups across organisations (0) and per
    /// organisation (1), so the tests can tell they reach both.
    pub(super) static MERGES: std::cell::Cell<[u64; 2]> = const { std::cell::Cell::new([0; 2]) };
}

/// Where a list's candidates come from.
enum Source<'a> {
    /// These ids.
    Ids(&'a [String]),
    /// The user-name range `from..to` of the instance's index.
    Names(usize, usize),
    /// The groups of these organisations and states.
    Groups,
}

impl ReadModel {
    /// One page of the users of `principal`'s instance that match `request`, of the
    /// organisations on which it holds `user.read` (the others are left out, not refused);
    /// removed users are never listed.
    pub fn list(&self, principal: &Principal, request: &ListRequest) -> Result<UserList, Error> {
        let limit = request.page_size()?;
        let offset = usize::try_from(request.offset).unwrap_or(usize::MAX);
        let mut answer = UserList {
            total: 0,
            users: Vec::new(),
            position: self.position(),
            timestamp: self.last_created_at(),
        };
        let Some(lists) = self.lists.get(principal.instance.as_str()) else {
            return Ok(answer);
        };
        let all_orgs = principal.instance_grants.contains(&Permission::UserRead);
        let mut orgs: Vec<u32> = match all_orgs {
            true => lists.orgs.keys().copied().collect(),
            false => principal
                .org_grants
                .iter()
                .filter(|(_, p)| p.contains(&Permission::UserRead))
                .filter_map(|(o, _)| self.org_index.get(o).copied())
                .filter(|o| lists.orgs.contains_key(o))
                .collect(),
        };
        let mut states = [true; 4];
        // Whether the groups hold exactly the matches (only state and organisation queries).
        let mut exact = true;
        let mut ids: Option<&[String]> = None;
        let mut name: Option<(&str, TextMethod)> = None;
        for q in &request.queries {
            match q {
                UserQuery::State(s) => {
                    let k = slot(*s);
                    for (j, on) in states.iter_mut().enumerate() {
                        *on &= Some(j) == k;
                    }
                }
                UserQuery::Organization(o) => {
                    let i = OrgId::new(o.as_str())
                        .ok()
                        .and_then(|o| self.org_index.get(&o).copied());
                    orgs.retain(|&x| Some(x) == i);
                }
                UserQuery::InUserIds(v) => {
                    exact = false;
                    if ids.is_none_or(|cur| v.len() < cur.len()) {
                        ids = Some(v);
                    }
                }
                UserQuery::UserName { text, method } if method.is_prefix() => {
                    exact = false;
                    name = name.or(Some((text.as_str(), *method)));
                }
                _ => exact = false,
            }
        }
        // Whether the caller reads, and the queries keep, every organisation of the instance
        // (`orgs` holds each at most once): then the groups across organisations hold the
        // same users as the per-organisation ones, in one stream per state.
        let every_org = orgs.len() == lists.orgs.len();
        let groups: Vec<(usize, &Group)> = match every_org {
            true => (0..4)
                .filter(|&k| states[k])
                .map(|k| (k, &lists.states[k]))
                .collect(),
            false => {
                orgs.sort_unstable();
                orgs.iter()
                    .flat_map(|o| {
                        let groups = &lists.orgs[o];
                        (0..4).filter(|&k| states[k]).map(move |k| (k, &groups[k]))
                    })
                    .collect()
            }
        };
        let group_total: usize = groups.iter().map(|(_, g)| g.live).sum();
        let source = match (ids, name) {
            (Some(ids), _) => Source::Ids(ids),
            (None, Some((text, method))) => {
                let prefix = fold(text);
                let from = lists
                    .by_name
                    .rank(|i| fold_cmp(self.entries[i as usize].username(), &prefix).is_lt());
                let to = lists.by_name.rank(|i| {
                    let name = self.entries[i as usize].username();
                    fold_cmp(name, &prefix).is_lt() || fold(name).starts_with(&prefix)
                });
                if to - from < group_total {
                    // The range holds exactly the matches for a case-insensitive prefix, the
                    // only query, of a caller who reads every organisation.
                    exact = method.range_is_exact() && request.queries.len() == 1 && all_orgs;
                    Source::Names(from, to)
                } else {
                    Source::Groups
                }
            }
            (None, None) => Source::Groups,
        };
        let ascending = order(&self.entries, request.sort);
        let cmp = |a: u32, b: u32| match request.asc {
            true => ascending(a, b),
            false => ascending(b, a),
        };
        let readable: HashSet<u32> = match every_org {
            true => HashSet::new(),
            false => orgs.iter().copied().collect(),
        };
        let keep = |i: u32| {
            let e = &self.entries[i as usize];
            let (_, user_id) = e.ids();
            let candidate = Candidate {
                user_id,
                username: e.username(),
                org: self.orgs[e.org as usize].as_str(),
                state: e.state,
            };
            slot(e.state).is_some()
                && (every_org || readable.contains(&e.org))
                && request.queries.iter().all(|q| q.matches(&candidate))
        };
        let page = |total: usize, users: &mut dyn Iterator<Item = u32>| -> (u64, Vec<u32>) {
            (total as u64, users.skip(offset).take(limit).collect())
        };
        let (total, page) = match source {
            Source::Ids(ids) => {
                let prefix = format!("user:{}:", principal.instance);
                let mut found: Vec<u32> = ids
                    .iter()
                    .filter_map(|id| self.find(&format!("{prefix}{id}")))
                    .filter(|&i| keep(i))
                    .collect();
                found.sort_unstable_by(|&a, &b| cmp(a, b));
                found.dedup();
                page(found.len(), &mut found.into_iter())
            }
            Source::Names(from, to) if exact => {
                let mut range: Box<dyn Iterator<Item = u32>> = match request.asc {
                    true => Box::new(lists.by_name.range(from, to)),
                    false => Box::new(lists.by_name.range(from, to).rev()),
                };
                if request.sort == SortColumn::UserName {
                    page(to - from, &mut range)
                } else {
                    let mut all: Vec<u32> = range.collect();
                    all.sort_unstable_by(|&a, &b| cmp(a, b));
                    page(all.len(), &mut all.into_iter())
                }
            }
            Source::Names(from, to) => {
                let mut all: Vec<u32> =
                    lists.by_name.range(from, to).filter(|&i| keep(i)).collect();
                all.sort_unstable_by(|&a, &b| cmp(a, b));
                page(all.len(), &mut all.into_iter())
            }
            Source::Groups => {
                #[cfg(test)]
                MERGES.with(|m| {
                    let mut n = m.get();
                    n[usize::from(!every_org)] += 1;
                    m.set(n);
                });
                let entries = &self.entries;
                let streams = groups.iter().map(|&(k, g)| {
                    let list = match request.sort {
                        SortColumn::UserName => &g.by_name,
                        SortColumn::CreationDate | SortColumn::State => &g.by_creation,
                    };
                    // Users who left the group's state stay in its lists for a while.
                    let held = move |&i: &u32| entries[i as usize].state == LIVE[k];
                    let it: Box<dyn Iterator<Item = u32>> = match request.asc {
                        true => Box::new(list.range(0, list.len()).filter(held)),
                        false => Box::new(list.range(0, list.len()).rev().filter(held)),
                    };
                    it
                });
                let mut merged = Merge::new(streams, cmp);
                if exact {
                    page(group_total, &mut merged)
                } else {
                    let mut total = 0;
                    let mut users = Vec::new();
                    for i in merged.filter(|&i| keep(i)) {
                        if total >= offset && users.len() < limit {
                            users.push(i);
                        }
                        total += 1;
                    }
                    (total as u64, users)
                }
            }
        };
        answer.total = total;
        answer.users = page.into_iter().map(|i| self.view_at(i)).collect();
        Ok(answer)
    }
}

mod query;
mod sorted;
#[cfg(test)]
mod tests;
