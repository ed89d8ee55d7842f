//! The commands of SPEC.md: what a caller asks of one user.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{AuthMethod, DomainError, Email, OrgId, Profile, UserId};

/// The longest username accepted: characters as given, and bytes in canonical form.
pub const MAX_USERNAME_LEN: usize = 200;

/// Everything needed to add a human user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddUser {
    /// The new user's id (generate one with [`UserId::generate`] when the caller gave none).
    pub user_id: UserId,
    /// The login name, unique per instance.
    pub username: String,
    /// The organisation that will own the user.
    pub organization: OrgId,
    /// Optional profile.
    pub profile: Option<Profile>,
    /// Optional email.
    pub email: Option<Email>,
    /// Start in the initial state instead of active.
    pub initial: bool,
}

/// A request to change one user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UserCommand {
    /// Add a human user.
    Add(AddUser),
    /// Deactivate: active or locked -> inactive.
    Deactivate(UserId),
    /// Reactivate: inactive -> active.
    Reactivate(UserId),
    /// Lock: active or initial -> locked.
    Lock(UserId),
    /// Unlock: locked -> active.
    Unlock(UserId),
    /// Remove: any existing user -> deleted (terminal).
    Remove(UserId),
    /// Erase a removed user's personal data (ours, SPEC.md "Erasure and tamper evidence"):
    /// the user's key is destroyed, the lifecycle history stays.
    Erase(UserId),
    /// Lock for a while: active or initial -> locked until `now + duration` (a zero duration
    /// locks until unlocked by hand, like [`UserCommand::Lock`]).
    LockFor(LockFor),
    /// The identity backend's check of a password or OTP failed: recorded, and the failure
    /// that reaches the lockout policy's maximum also locks the user.
    AuthFailed(AuthOutcome),
    /// The identity backend's check succeeded: recorded, and the method's failures forgotten.
    AuthSucceeded(AuthOutcome),
    /// The system's unlock of a timed lock whose `lockedUntil` is not after `now`; refused
    /// (`NotLocked`, `LockNotExpired`) for a user that is not so locked (any more).
    ExpireLock {
        /// The user.
        user_id: UserId,
        /// The decision's time.
        now: DateTime<Utc>,
    },
}

/// A lock with a duration (`LockUser` with `{"duration": "3600s"}`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockFor {
    /// The user.
    pub user_id: UserId,
    /// How long the lock lasts (zero: until unlocked by hand).
    pub duration: Duration,
    /// The decision's time: the lock lasts until `now + duration`.
    pub now: DateTime<Utc>,
}

/// An authentication outcome the identity backend reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthOutcome {
    /// The user.
    pub user_id: UserId,
    /// What was checked.
    pub method: AuthMethod,
    /// The decision's time (the failure window and a lock's end are measured from it).
    pub now: DateTime<Utc>,
}

impl UserCommand {
    /// The user the command is about.
    pub fn user_id(&self) -> &UserId {
        match self {
            UserCommand::Add(add) => &add.user_id,
            UserCommand::Deactivate(id)
            | UserCommand::Reactivate(id)
            | UserCommand::Lock(id)
            | UserCommand::Unlock(id)
            | UserCommand::Remove(id)
            | UserCommand::Erase(id) => id,
            UserCommand::LockFor(lock) => &lock.user_id,
            UserCommand::AuthFailed(outcome) | UserCommand::AuthSucceeded(outcome) => {
                &outcome.user_id
            }
            UserCommand::ExpireLock { user_id, .. } => user_id,
        }
    }

    /// The type of the (first) event the command appends when it succeeds.
    pub fn event_type(&self) -> &'static str {
        use AuthMethod::{Otp, Password};
        match self {
            UserCommand::Add(_) => "user.human.added",
            UserCommand::Deactivate(_) => "user.deactivated",
            UserCommand::Reactivate(_) => "user.reactivated",
            UserCommand::Lock(_) | UserCommand::LockFor(_) => "user.locked",
            UserCommand::Unlock(_) | UserCommand::ExpireLock { .. } => "user.unlocked",
            UserCommand::Remove(_) => "user.removed",
            UserCommand::Erase(_) => "user.erased",
            UserCommand::AuthFailed(o) if o.method == Password => {
                "user.human.password.check.failed"
            }
            UserCommand::AuthFailed(_) => "user.human.mfa.otp.check.failed",
            UserCommand::AuthSucceeded(o) if o.method == Otp => {
                "user.human.mfa.otp.check.succeeded"
            }
            UserCommand::AuthSucceeded(_) => "user.human.password.check.succeeded",
        }
    }

    /// A short lowercase name for logs and metrics: `add`, `lock`, …
    pub fn name(&self) -> &'static str {
        match self {
            UserCommand::Add(_) => "add",
            UserCommand::Deactivate(_) => "deactivate",
            UserCommand::Reactivate(_) => "reactivate",
            UserCommand::Lock(_) => "lock",
            UserCommand::Unlock(_) => "unlock",
            UserCommand::Remove(_) => "remove",
            UserCommand::Erase(_) => "erase",
            UserCommand::LockFor(_) => "lock",
            UserCommand::AuthFailed(_) => "authentication-failed",
            UserCommand::AuthSucceeded(_) => "authentication-succeeded",
            UserCommand::ExpireLock { .. } => "expire-lock",
        }
    }
}

/// Checks a username and returns its canonical form: PRECIS `UsernameCaseMapped` (RFC 8265:
/// width mapping, case folding, NFC; control, format and bidi-override characters and spaces
/// refused), as SPEC.md "Identifiers and usernames" asks. Two usernames are the same username
/// when their canonical forms are equal (`Alice`, `alice` and `ａｌｉｃｅ` collide); the form
/// given is kept for display. Limits: at most [`MAX_USERNAME_LEN`] characters as given and
/// [`MAX_USERNAME_LEN`] bytes canonical, so every name a reservation stream is built from fits.
pub fn canonical_username(username: &str) -> Result<String, DomainError> {
    use precis_profiles::precis_core::profile::PrecisFastInvocation;
    use precis_profiles::precis_core::Error as Precis;
    use precis_profiles::UsernameCaseMapped;

    let invalid = |reason: String| DomainError::InvalidArgument {
        field: "username",
        reason,
    };
    // Counted before PRECIS runs, so a huge input costs no more than a bounded one.
    if username.chars().nth(MAX_USERNAME_LEN).is_some() {
        return Err(invalid(format!(
            "is longer than {MAX_USERNAME_LEN} characters"
        )));
    }
    let canonical = UsernameCaseMapped::enforce(username).map_err(|e| {
        invalid(match e {
            Precis::Invalid => "must not be empty".to_owned(),
            Precis::BadCodepoint(cp) => format!(
                "may not contain U+{:04X} (character {}): usernames follow RFC 8265 \
                 (no spaces, control, format or bidi-override characters)",
                cp.cp,
                cp.position + 1
            ),
            other => format!("is not a valid RFC 8265 username: {other}"),
        })
    })?;
    if canonical.len() > MAX_USERNAME_LEN {
        return Err(invalid(format!(
            "is longer than {MAX_USERNAME_LEN} bytes once canonical (RFC 8265)"
        )));
    }
    Ok(canonical.into_owned())
}

/// Checks a username (see [`canonical_username`]).
pub fn validate_username(username: &str) -> Result<(), DomainError> {
    canonical_username(username).map(drop)
}

/// The longest profile field (given name, family name) accepted, in characters.
pub const MAX_PROFILE_FIELD_LEN: usize = 200;
/// The longest email address accepted, in bytes (RFC 5321's path limit is 256; 320 is the
/// local part's 64 plus the domain's 255 and the `@`).
pub const MAX_EMAIL_LEN: usize = 320;

/// Checks everything an add carries besides its ids: the username (returning its canonical
/// form) and the profile and email limits of SPEC.md. Control characters are refused in every
/// field (a NUL, for one, is not storable in PostgreSQL's `jsonb`).
pub fn validate_add(add: &AddUser) -> Result<String, DomainError> {
    let canonical = canonical_username(&add.username)?;
    if let Some(profile) = &add.profile {
        let limit = MAX_PROFILE_FIELD_LEN;
        let too_long = |v: &str| v.chars().nth(limit).is_some();
        let given = &profile.given_name;
        check_text(
            "profile.givenName",
            given,
            too_long(given),
            "200 characters",
        )?;
        let family = &profile.family_name;
        check_text(
            "profile.familyName",
            family,
            too_long(family),
            "200 characters",
        )?;
    }
    if let Some(email) = &add.email {
        let address = &email.email;
        check_text(
            "email.email",
            address,
            address.len() > MAX_EMAIL_LEN,
            "320 bytes",
        )?;
    }
    Ok(canonical)
}

/// Refuses a text field that is over its `limit` or holds a control character.
fn check_text(
    field: &'static str,
    value: &str,
    too_long: bool,
    limit: &str,
) -> Result<(), DomainError> {
    let reason = if too_long {
        format!("is longer than {limit}")
    } else if value.chars().any(char::is_control) {
        "must not contain control characters".to_owned()
    } else {
        return Ok(());
    };
    Err(DomainError::InvalidArgument { field, reason })
}
