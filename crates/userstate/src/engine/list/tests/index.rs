//! The list indexes' own bookkeeping: the sorted chunks fill as appended, name labels stay in
//! user-name order where no label is free, and users who left a state leave its lists when
//! compacted. The events come from the model test's helpers (`super`).

use super::*;

#[test]
fn appending_fills_the_chunks() {
    let mut ids = SortedIds::default();
    for id in 0..5 * CHUNK as u32 {
        ids.insert(id, |a: u32, b: u32| a.cmp(&b));
    }
    assert_eq!(ids.chunks.len(), 5);
    assert!(ids.chunks.iter().all(|ch| ch.len() == CHUNK));
    assert_eq!(
        ids.range(0, ids.len()).collect::<Vec<_>>(),
        (0..5 * CHUNK as u32).collect::<Vec<_>>()
    );
}

/// Name labels stay strictly increasing along every user-name list when users are added where
/// no label is free (always first, always at one place in the middle, spread over many
/// chunks), removed and locked: the labels are reassigned over one chunk, wider windows and the
/// whole list (`GAP` is small in tests).
#[test]
fn name_labels_follow_the_user_name_order_where_no_label_is_free() {
    let mut model = ReadModel::default();
    let mut position = 0;
    let mut apply = |model: &mut ReadModel, user: usize, event_type: &str, name: &str| {
        position += 1;
        let payload = match event_type {
            "user.human.added" => serde_json::json!({
                "username": name, "resourceOwner": ORGS[user % 3], "initial": user.is_multiple_of(5)
            }),
            _ => serde_json::json!({}),
        };
        let e = event(
            position,
            &format!("user:i1:u{user}"),
            0,
            event_type,
            payload,
        );
        model.apply(&e);
    };
    let mut user = 0;
    // Always first, then always just after "m", then spread.
    for n in (0..1500).rev() {
        apply(&mut model, user, "user.human.added", &format!("b{n:05}"));
        user += 1;
    }
    for n in (0..1500).rev() {
        apply(&mut model, user, "user.human.added", &format!("m{n:05}"));
        user += 1;
    }
    for n in 0..3000 {
        apply(
            &mut model,
            user,
            "user.human.added",
            &format!("{:05}", (n * 7919) % 3000),
        );
        user += 1;
    }
    for u in (0..user).step_by(7) {
        apply(&mut model, u, "user.locked", "");
    }
    for u in (0..user).step_by(11) {
        apply(&mut model, u, "user.removed", "");
    }
    for n in (0..1000).rev() {
        apply(&mut model, user, "user.human.added", &format!("m{n:05}"));
        user += 1;
    }
    let lists = &model.lists["i1"];
    assert!(lists.by_name.chunks.len() > 8);
    let check = |list: &SortedIds| {
        let ids: Vec<u32> = list.range(0, list.len()).collect();
        for w in ids.windows(2) {
            let (a, b) = (&model.entries[w[0] as usize], &model.entries[w[1] as usize]);
            assert!(a.name_label < b.name_label, "{a:?} {b:?}");
            assert_eq!(
                name_cmp(a.username(), b.username()).then_with(|| a.key().cmp(b.key())),
                Ordering::Less
            );
        }
    };
    check(&lists.by_name);
    let live = model
        .entries
        .iter()
        .filter(|e| slot(e.state).is_some())
        .count();
    assert_eq!(lists.by_name.len(), live);
    for group in lists.states.iter().chain(lists.orgs.values().flatten()) {
        check(&group.by_name);
    }
}

/// The command path leaves users who left a state in that state's lists (a wave of locks and
/// unlocks costs no list work the second time round); `compact_lists` takes them out once they
/// outnumber the users in it, and a user who comes back is put in again.
#[test]
fn users_who_left_a_state_stay_in_its_lists_until_compacted() {
    let mut steps = Vec::new();
    for u in 0..10 {
        steps.push(Step::Add {
            user: (0, u),
            name: format!("n{u}"),
            org: 0,
            initial: false,
            at: 0,
        });
    }
    let change = |u, event| Step::Change {
        user: (0, u),
        event,
    };
    steps.extend((0..10).map(|u| change(u, "user.locked")));
    steps.extend((0..10).map(|u| change(u, "user.unlocked")));
    let (mut model, _) = fold(&steps);
    let locked = slot(UserState::Locked).unwrap();
    let held = |model: &ReadModel| {
        let index = &model.lists[INSTANCES[0]];
        let org = &index.orgs.values().next().unwrap()[locked];
        let across = &index.states[locked];
        (
            across.by_name.len(),
            across.live,
            org.by_creation.len(),
            org.live,
        )
    };
    assert_eq!(held(&model), (10, 0, 10, 0), "left in, not counted");
    model.compact_lists();
    assert_eq!(held(&model), (0, 0, 0, 0), "compacted");
    assert!(model.entries.iter().all(|e| e.grouped & 0b0100_0100 == 0));

    // Locked again: in the lists again, once.
    let position = steps.len();
    model.apply(&event(
        position,
        &stream((0, 3)),
        5,
        "user.locked",
        serde_json::json!({}),
    ));
    model.compact_lists();
    assert_eq!(held(&model), (1, 1, 1, 1));
}
