//! Given / when / then for the lockout rules (SPEC.md "Lockout policy and timed locks"), and a
//! property test of the fold against a plain reference model.

use std::time::Duration;

use chrono::{DateTime, Utc};
use proptest::prelude::*;

use super::*;

fn t(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_700_000_000 + secs, 0).unwrap()
}

fn uid() -> UserId {
    UserId::new("u1").unwrap()
}

fn policy(max_password: u32, max_otp: u32, lock: u64, reset: u64) -> LockoutPolicy {
    LockoutPolicy {
        max_password_attempts: max_password,
        max_otp_attempts: max_otp,
        lock_duration: Duration::from_secs(lock),
        failure_reset_after: Duration::from_secs(reset),
    }
}

fn failed(method: AuthMethod, at: i64) -> UserCommand {
    UserCommand::AuthFailed(AuthOutcome {
        user_id: uid(),
        method,
        now: t(at),
    })
}

fn succeeded(method: AuthMethod, at: i64) -> UserCommand {
    UserCommand::AuthSucceeded(AuthOutcome {
        user_id: uid(),
        method,
        now: t(at),
    })
}

/// An active user, added at `t(0)`.
fn active() -> User {
    let added = UserEvent::Added(UserAdded {
        username: "alice".into(),
        resource_owner: OrgId::new("o1").unwrap(),
        profile: None,
        email: None,
        initial: false,
        erased: false,
    });
    User::from_events([(&added, t(0))])
}

/// Decides `command` at its own time under `policy` and folds what was decided (written at
/// `at`); answers the event types.
fn when(
    user: &mut User,
    command: &UserCommand,
    policy: &LockoutPolicy,
    at: i64,
) -> Result<Vec<UserEvent>, DomainError> {
    let events = user.decide_under(command, policy)?;
    for e in &events {
        user.apply(e, t(at));
    }
    Ok(events)
}

fn types(events: &[UserEvent]) -> Vec<&'static str> {
    events.iter().map(UserEvent::event_type).collect()
}

#[test]
fn the_failure_that_reaches_the_limit_also_locks_until_the_duration_ends() {
    let p = policy(3, 0, 900, 0);
    let mut user = active();
    use AuthMethod::Password;
    for i in 1..=2 {
        let events = when(&mut user, &failed(Password, i), &p, i).unwrap();
        assert_eq!(types(&events), ["user.human.password.check.failed"]);
        assert_eq!(user.failed_attempts(Password), i as u32);
    }
    let events = when(&mut user, &failed(Password, 3), &p, 3).unwrap();
    assert_eq!(
        events,
        [
            UserEvent::CheckFailed(Password, CheckFailed { failed_attempts: 3 }),
            UserEvent::Locked(UserLocked {
                reason: Some("lockout-policy".into()),
                locked_until: Some(t(903)),
            }),
        ]
    );
    assert_eq!(
        events[1].payload(),
        serde_json::json!({"reason": "lockout-policy", "lockedUntil": "2023-11-14T22:28:23Z"})
    );
    assert_eq!(user.state(), Some(UserState::Locked));
    assert_eq!(user.locked_until(), Some(t(903)));
    // A failure while locked is recorded and locks nothing more.
    let events = when(&mut user, &failed(Password, 4), &p, 4).unwrap();
    assert_eq!(types(&events), ["user.human.password.check.failed"]);
    assert_eq!(user.locked_until(), Some(t(903)));
}

#[test]
fn a_zero_duration_locks_until_unlocked_by_hand_and_a_zero_limit_never_locks() {
    use AuthMethod::Password;
    let mut user = active();
    let events = when(&mut user, &failed(Password, 1), &policy(1, 0, 0, 0), 1).unwrap();
    assert_eq!(
        events[1],
        UserEvent::Locked(UserLocked {
            reason: Some("lockout-policy".into()),
            locked_until: None
        })
    );
    assert_eq!(user.locked_until(), None);
    let expire = UserCommand::ExpireLock {
        user_id: uid(),
        now: t(1_000_000),
    };
    assert_eq!(
        user.decide(&expire),
        Err(DomainError::LockNotExpired(uid()))
    );
    let mut user = active();
    for i in 1..=50 {
        let events = when(&mut user, &failed(Password, i), &policy(0, 0, 60, 0), i).unwrap();
        assert_eq!(events.len(), 1);
    }
    assert_eq!(user.failed_attempts(Password), 50);
}

#[test]
fn a_success_resets_its_methods_counter_and_otp_counts_apart_from_passwords() {
    use AuthMethod::{Otp, Password};
    let p = policy(3, 2, 60, 0);
    let mut user = active();
    when(&mut user, &failed(Password, 1), &p, 1).unwrap();
    when(&mut user, &failed(Password, 2), &p, 2).unwrap();
    // OTP failures do not bring the password counter closer to its limit.
    let events = when(&mut user, &failed(Otp, 3), &p, 3).unwrap();
    assert_eq!(types(&events), ["user.human.mfa.otp.check.failed"]);
    assert_eq!(
        (user.failed_attempts(Password), user.failed_attempts(Otp)),
        (2, 1)
    );
    let events = when(&mut user, &succeeded(Password, 4), &p, 4).unwrap();
    assert_eq!(types(&events), ["user.human.password.check.succeeded"]);
    assert_eq!(
        (user.failed_attempts(Password), user.failed_attempts(Otp)),
        (0, 1)
    );
    when(&mut user, &failed(Password, 5), &p, 5).unwrap();
    // The second OTP failure reaches the OTP limit of 2.
    let events = when(&mut user, &failed(Otp, 6), &p, 6).unwrap();
    assert_eq!(
        types(&events),
        ["user.human.mfa.otp.check.failed", "user.locked"]
    );
    assert_eq!(user.locked_until(), Some(t(66)));
}

#[test]
fn a_failure_after_the_reset_window_counts_from_one_again() {
    use AuthMethod::Password;
    let p = policy(3, 0, 60, 100);
    let mut user = active();
    when(&mut user, &failed(Password, 0), &p, 0).unwrap();
    when(&mut user, &failed(Password, 99), &p, 99).unwrap();
    assert_eq!(user.failed_attempts(Password), 2);
    // 100 s after the previous failure (at 99): the window has passed.
    let events = when(&mut user, &failed(Password, 199), &p, 199).unwrap();
    assert_eq!(
        events,
        [UserEvent::CheckFailed(
            Password,
            CheckFailed { failed_attempts: 1 }
        )]
    );
    assert_eq!(user.state(), Some(UserState::Active));
}

#[test]
fn a_timed_lock_expires_once_and_not_after_a_manual_unlock() {
    let mut user = active();
    let lock = UserCommand::LockFor(LockFor {
        user_id: uid(),
        duration: Duration::from_secs(3600),
        now: t(10),
    });
    let events = when(&mut user, &lock, &LockoutPolicy::default(), 10).unwrap();
    assert_eq!(
        events[0].payload(),
        serde_json::json!({"lockedUntil": "2023-11-14T23:13:30Z"})
    );
    let expire = |at| UserCommand::ExpireLock {
        user_id: uid(),
        now: t(at),
    };
    // Not yet due.
    assert_eq!(
        user.decide(&expire(3609)),
        Err(DomainError::LockNotExpired(uid()))
    );
    let mut expired = user.clone();
    let events = when(&mut expired, &expire(3610), &LockoutPolicy::default(), 3610).unwrap();
    assert_eq!(
        events[0].payload(),
        serde_json::json!({"reason": "lock-expired"})
    );
    assert_eq!(expired.state(), Some(UserState::Active));
    assert_eq!(expired.locked_until(), None);
    // A second expiry (another node's, deciding on what won) finds nothing to unlock.
    assert!(matches!(
        expired.decide(&expire(3611)),
        Err(DomainError::NotLocked(..))
    ));
    // A manual unlock before the end: the expiry later finds nothing.
    let unlock = UserCommand::Unlock(uid());
    when(&mut user, &unlock, &LockoutPolicy::default(), 20).unwrap();
    assert!(matches!(
        user.decide(&expire(4000)),
        Err(DomainError::NotLocked(..))
    ));
    // Relocked by hand without a duration: the old end does not apply.
    when(
        &mut user,
        &UserCommand::Lock(uid()),
        &LockoutPolicy::default(),
        30,
    )
    .unwrap();
    assert_eq!(
        user.decide(&expire(4000)),
        Err(DomainError::LockNotExpired(uid()))
    );
}

#[test]
fn a_lock_of_a_user_locked_by_policy_is_refused_and_changes_nothing() {
    let mut user = active();
    when(
        &mut user,
        &failed(AuthMethod::Password, 1),
        &policy(1, 0, 60, 0),
        1,
    )
    .unwrap();
    let before = user.clone();
    for command in [
        UserCommand::Lock(uid()),
        UserCommand::LockFor(LockFor {
            user_id: uid(),
            duration: Duration::from_secs(5),
            now: t(2),
        }),
    ] {
        let err = user.decide(&command).unwrap_err();
        assert!(matches!(err, DomainError::ShouldBeActiveOrInitial(..)));
    }
    assert_eq!(user, before);
    assert_eq!(user.locked_until(), Some(t(61)));
}

#[test]
fn old_lock_and_unlock_events_with_empty_payloads_still_decode() {
    let empty = serde_json::json!({});
    assert_eq!(
        UserEvent::decode("user.locked", 1, &empty).unwrap(),
        UserEvent::Locked(UserLocked::default())
    );
    assert_eq!(
        UserEvent::decode("user.unlocked", 1, &empty).unwrap(),
        UserEvent::Unlocked(UserUnlocked::default())
    );
    for event in [
        UserEvent::CheckFailed(AuthMethod::Otp, CheckFailed { failed_attempts: 4 }),
        UserEvent::CheckSucceeded(AuthMethod::Otp),
        UserEvent::CheckSucceeded(AuthMethod::Password),
        UserEvent::Locked(UserLocked {
            reason: Some("lockout-policy".into()),
            locked_until: Some(t(5)),
        }),
    ] {
        let back = UserEvent::decode(event.event_type(), 1, &event.payload()).unwrap();
        assert_eq!(back, event);
    }
}

#[test]
fn failures_of_a_removed_or_unknown_user_are_not_found() {
    let command = failed(AuthMethod::Password, 1);
    assert_eq!(
        User::default().decide(&command),
        Err(DomainError::NotFound(uid()))
    );
}

/// One step of the property test.
#[derive(Clone, Debug)]
enum Step {
    Fail(AuthMethod),
    Succeed(AuthMethod),
    Lock(u64),
    Unlock,
    Expire,
    Advance(u64),
}

fn step() -> impl Strategy<Value = Step> {
    let method = prop_oneof![Just(AuthMethod::Password), Just(AuthMethod::Otp)];
    prop_oneof![
        4 => method.clone().prop_map(Step::Fail),
        1 => method.prop_map(Step::Succeed),
        1 => (0..3u64).prop_map(|d| Step::Lock(d * 30)),
        1 => Just(Step::Unlock),
        2 => Just(Step::Expire),
        3 => (0..90u64).prop_map(Step::Advance),
    ]
}

/// The rules written plainly: what the fold must agree with.
#[derive(Debug, Default)]
struct Reference {
    locked: bool,
    until: Option<i64>,
    /// Per method: (count, time of the last failure).
    failures: [(u32, i64); 2],
}

impl Reference {
    fn step(&mut self, step: &Step, now: i64, p: &LockoutPolicy) {
        let slot = |m: &AuthMethod| *m as usize;
        match step {
            Step::Fail(m) => {
                let (count, last) = self.failures[slot(m)];
                let window = p.failure_reset_after.as_secs() as i64;
                let count = if window > 0 && count > 0 && last + window <= now {
                    1
                } else {
                    count + 1
                };
                self.failures[slot(m)] = (count, now);
                let max = p.max_attempts(*m);
                if max > 0 && count >= max && !self.locked {
                    self.locked = true;
                    let d = p.lock_duration.as_secs() as i64;
                    self.until = (d > 0).then_some(now + d);
                }
            }
            Step::Succeed(m) => self.failures[slot(m)] = (0, 0),
            Step::Lock(d) if !self.locked => {
                self.locked = true;
                self.until = (*d > 0).then_some(now + *d as i64);
            }
            Step::Unlock if self.locked => self.unlock(),
            Step::Expire if self.locked && self.until.is_some_and(|u| u <= now) => self.unlock(),
            _ => {}
        }
    }

    fn unlock(&mut self) {
        self.locked = false;
        self.until = None;
        self.failures = [(0, 0); 2];
    }
}

proptest! {
    /// Any interleaving of failures, successes, locks (with and without a duration), unlocks,
    /// expiries and clock advances: the fold's state, lock end and counters equal the
    /// reference's, and replaying the accepted events gives the same user.
    #[test]
    fn the_fold_equals_the_reference_model(
        steps in prop::collection::vec(step(), 0..60),
        max_password in 0..4u32,
        max_otp in 0..4u32,
        lock in 0..3u64,
        reset in 0..3u64,
    ) {
        let p = policy(max_password, max_otp, lock * 40, reset * 50);
        let mut user = active();
        let mut history: Vec<(UserEvent, DateTime<Utc>)> = Vec::new();
        let mut reference = Reference::default();
        let mut now = 0i64;
        for step in &steps {
            let command = match step {
                Step::Advance(s) => {
                    now += *s as i64;
                    continue;
                }
                Step::Fail(m) => failed(*m, now),
                Step::Succeed(m) => succeeded(*m, now),
                Step::Lock(0) => UserCommand::Lock(uid()),
                Step::Lock(d) => UserCommand::LockFor(LockFor {
                    user_id: uid(),
                    duration: Duration::from_secs(*d),
                    now: t(now),
                }),
                Step::Unlock => UserCommand::Unlock(uid()),
                Step::Expire => UserCommand::ExpireLock { user_id: uid(), now: t(now) },
            };
            reference.step(step, now, &p);
            if let Ok(events) = user.decide_under(&command, &p) {
                for e in events {
                    user.apply(&e, t(now));
                    history.push((e, t(now)));
                }
            }
            let state = if reference.locked { UserState::Locked } else { UserState::Active };
            prop_assert_eq!(user.state(), Some(state));
            prop_assert_eq!(user.locked_until(), reference.until.map(t));
            prop_assert_eq!(user.failed_attempts(AuthMethod::Password), reference.failures[0].0);
            prop_assert_eq!(user.failed_attempts(AuthMethod::Otp), reference.failures[1].0);
        }
        let mut replayed = active();
        for (e, at) in &history {
            replayed.apply(e, *at);
        }
        prop_assert_eq!(replayed, user);
    }
}
