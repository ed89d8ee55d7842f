//! The read model's fold against a plain `HashMap` reference (property test), and its index
//! and equality under many users.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use proptest::prelude::*;

use crate::domain::{AuthMethod, InstanceId, UserEvent, UserId, UserState, EVENT_REVISION};
use crate::engine::decode;
use crate::engine::read_model::{ReadModel, UserView};
use crate::store::{EventMetadata, NewEvent, RecordedEvent, StreamId};

/// The read model's fold written plainly over a `HashMap` of views, as the reference.
#[derive(Default)]
struct Reference {
    users: HashMap<String, UserView>,
    position: u64,
}

impl Reference {
    fn apply(&mut self, event: &RecordedEvent) {
        self.position = self.position.max(event.position);
        let name = event.stream.as_str();
        let Some(rest) = name.strip_prefix("user:") else {
            return;
        };
        let Ok(decoded) = decode(event) else {
            return;
        };
        if let UserEvent::Added(added) = decoded {
            let Some((i, u)) = rest.split_once(':') else {
                return;
            };
            let (Ok(_), Ok(user_id)) = (InstanceId::new(i), UserId::new(u)) else {
                return;
            };
            let view = UserView {
                user_id,
                username: added.username,
                resource_owner: added.resource_owner,
                state: match added.initial {
                    true => UserState::Initial,
                    false => UserState::Active,
                },
                profile: added.profile,
                email: added.email,
                sequence: event.sequence,
                position: event.position,
                change_date: event.created_at,
                creation_date: event.created_at,
                failed_password_attempts: 0,
                failed_otp_attempts: 0,
                locked_until: None,
            };
            self.users.insert(name.to_owned(), view);
            return;
        }
        let Some(view) = self.users.get_mut(name) else {
            return;
        };
        view.locked_until = match &decoded {
            UserEvent::Locked(locked) => locked.locked_until,
            UserEvent::CheckFailed(..) | UserEvent::CheckSucceeded(_) | UserEvent::Erased => {
                view.locked_until
            }
            _ => None,
        };
        if let UserEvent::Erased = &decoded {
            // Erasure drops profile and email (the username orders lists; see `apply_ref`).
            view.profile = None;
            view.email = None;
        }
        match &decoded {
            UserEvent::CheckFailed(AuthMethod::Password, f) => {
                view.failed_password_attempts = f.failed_attempts
            }
            UserEvent::CheckFailed(AuthMethod::Otp, f) => {
                view.failed_otp_attempts = f.failed_attempts
            }
            UserEvent::CheckSucceeded(AuthMethod::Password) => view.failed_password_attempts = 0,
            UserEvent::CheckSucceeded(AuthMethod::Otp) => view.failed_otp_attempts = 0,
            UserEvent::Unlocked(_) => {
                view.failed_password_attempts = 0;
                view.failed_otp_attempts = 0;
            }
            _ => {}
        }
        view.state = match decoded {
            UserEvent::Deactivated => UserState::Inactive,
            UserEvent::Reactivated | UserEvent::Unlocked(_) => UserState::Active,
            UserEvent::Locked(_) => UserState::Locked,
            UserEvent::CheckFailed(..) | UserEvent::CheckSucceeded(_) | UserEvent::Erased => {
                view.state
            }
            UserEvent::Removed => UserState::Deleted,
            UserEvent::Added(_) => unreachable!(),
        };
        view.sequence = event.sequence;
        view.position = event.position;
        view.change_date = event.created_at;
    }
}

const INSTANCES: [&str; 2] = ["i1", "i2"];
const USERS: usize = 40;

fn user_stream(instance: usize, user: usize) -> String {
    format!("user:{}:u{user}", INSTANCES[instance])
}

/// A stream name: mostly valid user streams, sometimes a username reservation or a user
/// stream whose name does not parse.
fn any_stream() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => (0..INSTANCES.len(), 0..USERS).prop_map(|(i, u)| user_stream(i, u)),
        1 => Just("username:i1:alice".to_owned()),
        1 => prop::sample::select(vec!["user:i1", "user::u1", "user:i1:", "user:i 1:u1", "user:i1:u1:x"])
            .prop_map(str::to_owned),
    ]
}

/// An event type, revision and payload: mostly well-formed, sometimes undecodable.
fn any_event() -> impl Strategy<Value = (String, u16, serde_json::Value)> {
    let added = (
        prop::sample::select(vec![
            "alice",
            "",
            "Bob@example.com",
            "é名",
            "a-much-longer-username-than-most",
        ]),
        prop::sample::select(vec!["o1", "o2", "o3"]),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(username, org, profile, email, initial)| {
            let mut payload = serde_json::json!({
                "username": username, "resourceOwner": org, "initial": initial
            });
            if profile {
                payload["profile"] = serde_json::json!({"givenName": "G", "familyName": username});
            }
            if email {
                payload["email"] = serde_json::json!({"email": "e@x.org", "isVerified": initial});
            }
            ("user.human.added".to_owned(), 1, payload)
        });
    let other = prop::sample::select(UserEvent::TYPES[1..].to_vec())
        .prop_map(|t| (t.to_owned(), 1, serde_json::json!({})));
    prop_oneof![
        3 => added,
        6 => other,
        1 => Just(("user.human.added".to_owned(), 1, serde_json::json!({"username": 5}))),
        1 => Just(("user.renamed".to_owned(), 1, serde_json::json!({}))),
        1 => Just(("user.locked".to_owned(), EVENT_REVISION + 1, serde_json::json!({}))),
    ]
}

/// A recorded event at position `i + 1`, created `i` seconds after a fixed instant.
pub(crate) fn recorded(
    i: usize,
    stream: &str,
    sequence: u64,
    (event_type, revision, payload): (String, u16, serde_json::Value),
) -> RecordedEvent {
    let at = DateTime::<Utc>::from_timestamp(1_700_000_000 + i as i64, 0).unwrap();
    RecordedEvent::record(
        StreamId::new(stream).unwrap(),
        sequence,
        i as u64 + 1,
        at,
        NewEvent::new(event_type, revision, payload, EventMetadata::default()),
    )
}

fn assert_same(model: &ReadModel, reference: &Reference) -> Result<(), TestCaseError> {
    prop_assert_eq!(model.position(), reference.position);
    prop_assert_eq!(model.len(), reference.users.len());
    prop_assert_eq!(model.is_empty(), reference.users.is_empty());
    for (i, instance) in INSTANCES.iter().enumerate() {
        let instance = InstanceId::new(*instance).unwrap();
        for u in 0..USERS {
            let user = UserId::new(format!("u{u}")).unwrap();
            let expected = reference.users.get(&user_stream(i, u)).cloned();
            prop_assert_eq!(model.user(&instance, &user), expected);
        }
    }
    let mut counts: HashMap<UserState, usize> = HashMap::new();
    for view in reference.users.values() {
        *counts.entry(view.state).or_default() += 1;
    }
    for (state, n) in model.count_by_state() {
        prop_assert_eq!(n, counts.get(&state).copied().unwrap_or(0), "{:?}", state);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    /// Any sequence of recorded events (re-adds, events for unknown users, undecodable
    /// events, streams of other kinds or with bad names) leaves the read model answering
    /// exactly as the plain `HashMap` fold does; a clone equals it, and so does a model that
    /// folded the same events.
    #[test]
    fn read_model_answers_like_a_plain_map(
        events in prop::collection::vec((any_stream(), 1u64..5, any_event()), 0..300)
    ) {
        let mut model = ReadModel::default();
        let mut again = ReadModel::default();
        let mut reference = Reference::default();
        for (i, (stream, sequence, event)) in events.into_iter().enumerate() {
            let event = recorded(i, &stream, sequence, event);
            model.apply(&event);
            again.apply(&event);
            reference.apply(&event);
        }
        assert_same(&model, &reference)?;
        prop_assert_eq!(&model.clone(), &model);
        prop_assert_eq!(&again, &model);
    }
}

#[test]
fn many_users_are_all_found_after_the_index_grows() {
    let instance = InstanceId::new("i1").unwrap();
    let mut model = ReadModel::default();
    let n = 5_000;
    for u in 0..n {
        let payload = serde_json::json!({
            "username": format!("name{u}"), "resourceOwner": format!("o{}", u % 7)
        });
        let event = ("user.human.added".to_owned(), 1, payload);
        model.apply(&recorded(u, &format!("user:i1:u{u}"), 1, event));
    }
    assert_eq!(model.len(), n);
    for u in 0..n {
        let view = model
            .user(&instance, &UserId::new(format!("u{u}")).unwrap())
            .unwrap();
        assert_eq!(view.username, format!("name{u}"));
        assert_eq!(view.resource_owner.as_str(), format!("o{}", u % 7));
        assert_eq!(view.position, u as u64 + 1);
    }
    assert_eq!(
        model.user(&instance, &UserId::new(format!("u{n}")).unwrap()),
        None
    );
    assert_eq!(
        model.user(&InstanceId::new("i2").unwrap(), &UserId::new("u1").unwrap()),
        None
    );
}

#[test]
fn models_with_the_same_users_added_in_another_order_are_equal() {
    let add = |i: usize, u: usize| {
        let payload = serde_json::json!({"username": format!("n{u}"), "resourceOwner": "o1"});
        recorded(
            i,
            &format!("user:i1:u{u}"),
            1,
            ("user.human.added".to_owned(), 1, payload),
        )
    };
    let (mut forward, mut backward) = (ReadModel::default(), ReadModel::default());
    for u in 0..3 {
        forward.apply(&add(u, u));
        backward.apply(&add(u, 2 - u));
    }
    // Same users, but each with its own position: not equal until the positions match.
    assert_ne!(forward, backward);
    let (mut forward, mut backward) = (ReadModel::default(), ReadModel::default());
    for u in 0..3 {
        forward.apply(&add(0, u));
        backward.apply(&add(0, 2 - u));
    }
    assert_eq!(forward, backward);
    assert_eq!(format!("{forward:?}").matches("user:i1:u").count(), 3);
}
