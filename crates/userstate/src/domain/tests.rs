//! Given / when / then for every (state, command) pair of SPEC.md, plus properties of the fold.

use super::*;
use proptest::prelude::*;

/// The instant every event of these tests is written at (time matters only to lockouts).
fn t0() -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap()
}

/// Folds `events`, each written at [`t0`].
fn fold(events: &[UserEvent]) -> User {
    User::from_events(events.iter().map(|e| (e, t0())))
}

fn uid() -> UserId {
    UserId::new("u1").unwrap()
}

fn added(initial: bool) -> UserEvent {
    UserEvent::Added(UserAdded {
        username: "alice".into(),
        resource_owner: OrgId::new("org1").unwrap(),
        profile: None,
        email: None,
        initial,
        erased: false,
    })
}

/// The shortest history that reaches each state.
fn given(state: Option<UserState>) -> Vec<UserEvent> {
    match state {
        None => vec![],
        Some(UserState::Initial) => vec![added(true)],
        Some(UserState::Active) => vec![added(false)],
        Some(UserState::Inactive) => vec![added(false), UserEvent::Deactivated],
        Some(UserState::Locked) => vec![added(false), UserEvent::Locked(UserLocked::default())],
        Some(UserState::Deleted) => vec![added(false), UserEvent::Removed],
    }
}

fn command(name: &str) -> UserCommand {
    match name {
        "add" => UserCommand::Add(AddUser {
            user_id: uid(),
            username: "alice".into(),
            organization: OrgId::new("org1").unwrap(),
            profile: None,
            email: None,
            initial: false,
        }),
        "deactivate" => UserCommand::Deactivate(uid()),
        "reactivate" => UserCommand::Reactivate(uid()),
        "lock" => UserCommand::Lock(uid()),
        "unlock" => UserCommand::Unlock(uid()),
        "remove" => UserCommand::Remove(uid()),
        other => panic!("unknown command {other}"),
    }
}

/// Then: `Ok(event type)` or `Err(error id)`.
type Then = Result<&'static str, &'static str>;

const NOT_FOUND: Then = Err("COMMAND-450yxuqrh1");

#[test]
fn every_state_and_command_pair_follows_the_spec() {
    use UserState::*;
    #[rustfmt::skip]
    let table: Vec<(Option<UserState>, &str, Then)> = vec![
        (None,           "add",        Ok("user.human.added")),
        (None,           "deactivate", NOT_FOUND),
        (None,           "reactivate", NOT_FOUND),
        (None,           "lock",       NOT_FOUND),
        (None,           "unlock",     NOT_FOUND),
        (None,           "remove",     NOT_FOUND),
        (Some(Initial),  "add",        Err("COMMAND-7yiox1isql")),
        (Some(Initial),  "deactivate", Err("COMMAND-gvx4kct9r2")),
        (Some(Initial),  "reactivate", Err("COMMAND-s5qqcz97hf")),
        (Some(Initial),  "lock",       Ok("user.locked")),
        (Some(Initial),  "unlock",     Err("COMMAND-olb9vb0oca")),
        (Some(Initial),  "remove",     Ok("user.removed")),
        (Some(Active),   "add",        Err("COMMAND-7yiox1isql")),
        (Some(Active),   "deactivate", Ok("user.deactivated")),
        (Some(Active),   "reactivate", Err("COMMAND-s5qqcz97hf")),
        (Some(Active),   "lock",       Ok("user.locked")),
        (Some(Active),   "unlock",     Err("COMMAND-olb9vb0oca")),
        (Some(Active),   "remove",     Ok("user.removed")),
        (Some(Inactive), "add",        Err("COMMAND-7yiox1isql")),
        (Some(Inactive), "deactivate", Err("COMMAND-5gunjw0cd7")),
        (Some(Inactive), "reactivate", Ok("user.reactivated")),
        (Some(Inactive), "lock",       Err("COMMAND-lgws8wtsqf")),
        (Some(Inactive), "unlock",     Err("COMMAND-olb9vb0oca")),
        (Some(Inactive), "remove",     Ok("user.removed")),
        (Some(Locked),   "add",        Err("COMMAND-7yiox1isql")),
        (Some(Locked),   "deactivate", Ok("user.deactivated")),
        (Some(Locked),   "reactivate", Err("COMMAND-s5qqcz97hf")),
        (Some(Locked),   "lock",       Err("COMMAND-lgws8wtsqf")),
        (Some(Locked),   "unlock",     Ok("user.unlocked")),
        (Some(Locked),   "remove",     Ok("user.removed")),
        (Some(Deleted),  "add",        Err("COMMAND-7yiox1isql")),
        (Some(Deleted),  "deactivate", NOT_FOUND),
        (Some(Deleted),  "reactivate", NOT_FOUND),
        (Some(Deleted),  "lock",       NOT_FOUND),
        (Some(Deleted),  "unlock",     NOT_FOUND),
        (Some(Deleted),  "remove",     NOT_FOUND),
    ];
    assert_eq!(
        table.len(),
        36,
        "six states (with 'never added') times six commands"
    );
    for (state, name, then) in table {
        let user = fold(&given(state));
        assert_eq!(user.state(), state, "given history reaches {state:?}");
        let got = user
            .decide(&command(name))
            .map(|events| {
                assert_eq!(events.len(), 1);
                events[0].event_type()
            })
            .map_err(|e| {
                use crate::error::Classified;
                e.id()
            });
        assert_eq!(got, then, "given {state:?}, when {name}");
    }
}

#[test]
fn state_after_each_event_follows_the_spec() {
    let mut user = fold(&given(Some(UserState::Initial)));
    for (event, state) in [
        (UserEvent::Locked(UserLocked::default()), UserState::Locked),
        (
            UserEvent::Unlocked(UserUnlocked::default()),
            UserState::Active,
        ),
        (UserEvent::Locked(UserLocked::default()), UserState::Locked),
        (UserEvent::Deactivated, UserState::Inactive),
        (UserEvent::Reactivated, UserState::Active),
        (UserEvent::Removed, UserState::Deleted),
    ] {
        user.apply(&event, t0());
        assert_eq!(user.state(), Some(state));
    }
    assert_eq!(user.version(), 7);
}

#[test]
fn messages_name_the_user_and_state() {
    let user = fold(&given(Some(UserState::Active)));
    let err = user.decide(&command("unlock")).unwrap_err();
    assert_eq!(err.to_string(), "user \"u1\" is not locked (state: active)");
    assert_eq!(err.kind(), crate::ErrorKind::FailedPrecondition);
}

#[test]
fn bad_usernames_are_invalid_arguments() {
    for bad in ["", "   ", " alice", "a\u{0}b", &"x".repeat(201)] {
        let mut cmd = command("add");
        if let UserCommand::Add(add) = &mut cmd {
            add.username = bad.to_owned();
        }
        let err = User::default().decide(&cmd).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::InvalidArgument, "{bad:?}");
    }
}

#[test]
fn events_round_trip_through_their_stored_form() {
    let full = UserEvent::Added(UserAdded {
        username: "bob@example.com".into(),
        resource_owner: OrgId::new("o").unwrap(),
        profile: Some(Profile {
            given_name: "Bob".into(),
            family_name: "B".into(),
        }),
        email: Some(Email {
            email: "bob@example.com".into(),
            is_verified: true,
        }),
        initial: true,
        erased: false,
    });
    for event in [
        full,
        added(false),
        UserEvent::Deactivated,
        UserEvent::Reactivated,
        UserEvent::Locked(UserLocked::default()),
        UserEvent::Unlocked(UserUnlocked::default()),
        UserEvent::Removed,
    ] {
        let back = UserEvent::decode(event.event_type(), EVENT_REVISION, &event.payload()).unwrap();
        assert_eq!(back, event);
    }
    assert!(UserEvent::decode("user.renamed", 1, &serde_json::json!({})).is_err());
    assert!(UserEvent::decode("user.locked", EVENT_REVISION + 1, &serde_json::json!({})).is_err());
    assert!(UserEvent::decode("user.human.added", 1, &serde_json::json!({"username": 5})).is_err());
}

fn any_command() -> impl Strategy<Value = UserCommand> {
    prop_oneof![
        Just(command("add")),
        Just(command("deactivate")),
        Just(command("reactivate")),
        Just(command("lock")),
        Just(command("unlock")),
        Just(command("remove")),
    ]
}

proptest! {
    /// Driving the aggregate with any commands: a failed command changes nothing, a successful
    /// one adds exactly one event, and the fold of the accepted events is the live aggregate.
    #[test]
    fn replay_of_accepted_events_equals_the_live_aggregate(
        commands in prop::collection::vec(any_command(), 0..40)
    ) {
        let mut live = User::default();
        let mut history = Vec::new();
        for cmd in &commands {
            let before = live.clone();
            match live.decide(cmd) {
                Ok(events) => {
                    prop_assert_eq!(events.len(), 1);
                    for e in &events { live.apply(e, t0()); }
                    history.extend(events);
                }
                Err(_) => prop_assert_eq!(&live, &before),
            }
            prop_assert_eq!(live.version(), history.len() as u64);
        }
        prop_assert_eq!(fold(&history), live.clone());
        // Once deleted, nothing succeeds any more.
        if live.state() == Some(UserState::Deleted) {
            for name in ["add", "deactivate", "reactivate", "lock", "unlock", "remove"] {
                prop_assert!(live.decide(&command(name)).is_err());
            }
        }
    }
}

#[test]
fn erase_is_for_removed_users_and_empties_their_personal_data() {
    use UserState::*;
    let cmd = UserCommand::Erase(uid());
    assert_eq!(
        User::default().decide(&cmd),
        Err(DomainError::NotFound(uid()))
    );
    for state in [Initial, Active, Inactive, Locked] {
        let err = fold(&given(Some(state))).decide(&cmd).unwrap_err();
        assert_eq!(err, DomainError::NotRemoved(uid(), state));
        assert_eq!(err.kind(), crate::ErrorKind::FailedPrecondition);
    }
    let mut user = fold(&given(Some(Deleted)));
    assert_eq!(user.decide(&cmd), Ok(vec![UserEvent::Erased]));
    user.apply(&UserEvent::Erased, t0());
    let data = user.data().unwrap();
    assert!(data.erased && data.username.is_empty());
    assert_eq!((data.profile.clone(), data.email.clone()), (None, None));
    assert_eq!(data.resource_owner.as_str(), "org1");
    assert_eq!(user.state(), Some(Deleted));
    // Again (a retry): recorded again.
    assert_eq!(user.decide(&cmd), Ok(vec![UserEvent::Erased]));
}
