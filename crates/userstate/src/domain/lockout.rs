//! The lockout policy (SPEC.md "Lockout policy and timed locks"): how many failed
//! authentication attempts lock a user, for how long, and after how long failures are
//! forgotten. One policy per instance, overridable per organisation, each kept in a stream of
//! its own ([`StreamName::LockoutPolicy`](super::StreamName::LockoutPolicy)) whose events are
//! the policy's audit trail. Pure: no clock, no I/O.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use super::{DecodeError, DomainError, EVENT_REVISION};

/// The longest lock duration or failure window accepted: 100 years, so `now + duration` never
/// overflows a timestamp.
pub const MAX_POLICY_DURATION: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// Which check the identity backend made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMethod {
    /// A password check.
    Password,
    /// A one-time password (TOTP / OTP) check.
    Otp,
}

impl AuthMethod {
    /// The wire name, `password` or `otp`.
    pub fn name(self) -> &'static str {
        match self {
            AuthMethod::Password => "password",
            AuthMethod::Otp => "otp",
        }
    }
}

impl fmt::Display for AuthMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A lockout policy. Every limit at 0 is off: the default, as in ZITADEL.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LockoutPolicy {
    /// Failed password checks in a row that lock the user (0: never).
    #[serde(default)]
    pub max_password_attempts: u32,
    /// Failed OTP checks in a row that lock the user (0: never).
    #[serde(default)]
    pub max_otp_attempts: u32,
    /// How long a lock by this policy lasts (0: until unlocked by hand).
    #[serde(default, with = "proto_duration")]
    pub lock_duration: Duration,
    /// A failure this long after the previous one of its method starts counting again from 1
    /// (0: failures are forgotten only on a success or an unlock).
    #[serde(default, with = "proto_duration")]
    pub failure_reset_after: Duration,
}

impl LockoutPolicy {
    /// The attempts that lock a user for `method` (0: never).
    pub fn max_attempts(&self, method: AuthMethod) -> u32 {
        match method {
            AuthMethod::Password => self.max_password_attempts,
            AuthMethod::Otp => self.max_otp_attempts,
        }
    }

    /// Checks the durations' bounds.
    pub fn validate(&self) -> Result<(), DomainError> {
        check_duration("lockDuration", self.lock_duration)?;
        check_duration("failureResetAfter", self.failure_reset_after)
    }
}

/// Refuses a duration over [`MAX_POLICY_DURATION`].
pub fn check_duration(field: &'static str, duration: Duration) -> Result<(), DomainError> {
    if duration > MAX_POLICY_DURATION {
        return Err(DomainError::InvalidArgument {
            field,
            reason: "is longer than 100 years".to_owned(),
        });
    }
    Ok(())
}

/// `at + duration`, for a duration within [`MAX_POLICY_DURATION`].
pub(super) fn after(at: DateTime<Utc>, duration: Duration) -> DateTime<Utc> {
    let delta = TimeDelta::from_std(duration).unwrap_or(TimeDelta::MAX);
    at.checked_add_signed(delta)
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// Parses a proto3 JSON duration: seconds with up to nine fractional digits and an `s`
/// (`"900s"`, `"1.5s"`). Negative durations are refused.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("{text:?} is not a duration like \"900s\"");
    let number = text.strip_suffix('s').ok_or_else(bad)?;
    let (secs, frac) = number.split_once('.').unwrap_or((number, ""));
    if secs.is_empty() || !secs.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    if frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) || number.ends_with('.') {
        return Err(bad());
    }
    let secs: u64 = secs.parse().map_err(|_| bad())?;
    let nanos: u32 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<9}").parse().map_err(|_| bad())?
    };
    Ok(Duration::new(secs, nanos))
}

/// Writes a duration in proto3 JSON form (`"900s"`, `"1.500s"`).
pub fn format_duration(duration: Duration) -> String {
    match duration.subsec_nanos() {
        0 => format!("{}s", duration.as_secs()),
        n => {
            let frac = format!("{n:09}");
            format!("{}.{}s", duration.as_secs(), frac.trim_end_matches('0'))
        }
    }
}

/// Serde for a `Duration` as a proto3 JSON duration string.
pub mod proto_duration {
    use super::*;

    /// Writes `"900s"`.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_duration(*d))
    }

    /// Reads `"900s"`.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        parse_duration(&text).map_err(serde::de::Error::custom)
    }
}

/// The event of a lockout policy's stream: `policy.lockout.set`, the whole policy as set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockoutPolicySet(pub LockoutPolicy);

impl LockoutPolicySet {
    /// The type string.
    pub const TYPE: &'static str = "policy.lockout.set";

    /// The JSON payload stored with the event.
    pub fn payload(&self) -> Value {
        serde_json::to_value(self.0).expect("a policy has only numbers and strings")
    }

    /// Reads a stored event back.
    pub fn decode(event_type: &str, revision: u16, payload: &Value) -> Result<Self, DecodeError> {
        if revision > EVENT_REVISION {
            return Err(DecodeError::UnknownRevision {
                event_type: event_type.to_owned(),
                revision,
            });
        }
        if event_type != Self::TYPE {
            return Err(DecodeError::UnknownType(event_type.to_owned()));
        }
        LockoutPolicy::deserialize(payload)
            .map(Self)
            .map_err(|source| DecodeError::Payload {
                event_type: event_type.to_owned(),
                source,
            })
    }
}

/// The fold of one policy stream (the instance's or one organisation's).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LockoutPolicyStream {
    policy: Option<LockoutPolicy>,
    changed_at: Option<DateTime<Utc>>,
    version: u64,
}

impl LockoutPolicyStream {
    /// Folds one event, written at `at`.
    pub fn apply(&mut self, event: &LockoutPolicySet, at: DateTime<Utc>) {
        self.version += 1;
        self.policy = Some(event.0);
        self.changed_at = Some(at);
    }

    /// The policy set last, `None` while never set.
    pub fn policy(&self) -> Option<LockoutPolicy> {
        self.policy
    }

    /// When it was set last.
    pub fn changed_at(&self) -> Option<DateTime<Utc>> {
        self.changed_at
    }

    /// How many events the stream has.
    pub fn version(&self) -> u64 {
        self.version
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_and_write_in_proto_json_form() {
        for (text, d) in [
            ("0s", Duration::ZERO),
            ("900s", Duration::from_secs(900)),
            ("1.5s", Duration::from_millis(1500)),
            ("0.000000001s", Duration::from_nanos(1)),
        ] {
            assert_eq!(parse_duration(text), Ok(d), "{text}");
            assert_eq!(format_duration(d), text);
        }
        for bad in [
            "",
            "s",
            "900",
            "-1s",
            "1.s",
            ".5s",
            "1.0000000001s",
            "1e3s",
            "1 s",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_policy_event_reads_back_and_missing_fields_are_off() {
        let policy = LockoutPolicy {
            max_password_attempts: 3,
            max_otp_attempts: 5,
            lock_duration: Duration::from_secs(900),
            failure_reset_after: Duration::from_secs(60),
        };
        let e = LockoutPolicySet(policy);
        assert_eq!(
            e.payload(),
            serde_json::json!({"maxPasswordAttempts": 3, "maxOtpAttempts": 5,
                "lockDuration": "900s", "failureResetAfter": "60s"})
        );
        assert_eq!(
            LockoutPolicySet::decode(LockoutPolicySet::TYPE, 1, &e.payload()).unwrap(),
            e
        );
        let empty = LockoutPolicySet::decode(LockoutPolicySet::TYPE, 1, &serde_json::json!({}));
        assert_eq!(empty.unwrap().0, LockoutPolicy::default());
        assert!(LockoutPolicySet::decode("user.locked", 1, &e.payload()).is_err());
        let over = LockoutPolicy {
            lock_duration: MAX_POLICY_DURATION + Duration::from_secs(1),
            ..policy
        };
        assert!(over.validate().is_err());
    }
}
