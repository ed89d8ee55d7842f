//! Prometheus metrics: HTTP requests by route, method and status; store append latency; the
//! projection's lag behind the store head, in events and in seconds (age of the oldest event
//! not applied yet); commands by type and outcome; users by state; the process (CPU, memory,
//! file descriptors, start time; Linux) and the build (version, git commit). Served as text at
//! `/metrics` (the names are listed in docs/OPERATIONS.md).
//!
//! The command path only touches atomics: every (command, outcome) counter is created up
//! front ([`CommandCounters`]), so counting one is an index and an atomic add, never the
//! label map's lock. The users-by-state gauge is computed from the read model when `/metrics`
//! is scraped, not on the command path.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use prometheus::{
    Encoder, Gauge, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};
use userstate::store::{NewEvent, StoreWrapper};
use userstate::{
    ErrorKind, EventStore, ExpectedVersion, RecordedEvent, StoreError, StreamId, UserCommand,
    UserState,
};

/// Every metric of the server, in its own registry.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    auth_failures: IntCounterVec,
    latency: HistogramVec,
    appends: HistogramVec,
    lag: IntGauge,
    lag_seconds: Gauge,
    head: IntGauge,
    projected: IntGauge,
    build_info: IntGaugeVec,
    users: IntGaugeVec,
    commands: CommandCounters,
}

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

impl Metrics {
    /// A fresh registry with every metric registered.
    pub fn new() -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "userstate_http_requests_total",
                "HTTP requests by route, method and status",
            ),
            &["route", "method", "status"],
        )
        .expect("static metric definition");
        let auth_failures = IntCounterVec::new(
            Opts::new(
                "userstate_auth_failures_total",
                "Requests refused as unauthenticated (401 / code 16), by reason: missing, \
                 unknown or invalid credential",
            ),
            &["reason"],
        )
        .expect("static metric definition");
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "userstate_http_request_duration_seconds",
                "HTTP request latency by route, method and status",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["route", "method", "status"],
        )
        .expect("static metric definition");
        let appends = HistogramVec::new(
            HistogramOpts::new(
                "userstate_store_append_duration_seconds",
                "Event store append latency by outcome",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["outcome"],
        )
        .expect("static metric definition");
        let lag = IntGauge::new(
            "userstate_projection_lag_events",
            "Store head position minus the projection's position",
        )
        .expect("static metric definition");
        let lag_seconds = Gauge::new(
            "userstate_projection_lag_seconds",
            "Age of the oldest event the projection has not applied yet (0 when caught up)",
        )
        .expect("static metric definition");
        let head = IntGauge::new("userstate_store_head_position", "Store head position")
            .expect("static metric definition");
        let projected = IntGauge::new(
            "userstate_projection_position",
            "Position of the last event the projection applied",
        )
        .expect("static metric definition");
        let build_info = IntGaugeVec::new(
            Opts::new(
                "userstate_build_info",
                "Always 1; the labels name the running build: its version and git commit",
            ),
            &["version", "commit"],
        )
        .expect("static metric definition");
        let users = IntGaugeVec::new(
            Opts::new(
                "userstate_users",
                "Users in the read model by state (removed users included as `deleted`), \
                 measured when /metrics is scraped",
            ),
            &["state"],
        )
        .expect("static metric definition");
        let commands_vec = IntCounterVec::new(
            Opts::new(
                "userstate_commands_total",
                "Commands executed, by command and outcome (`ok` or the error kind)",
            ),
            &["command", "outcome"],
        )
        .expect("static metric definition");
        let commands = CommandCounters::new(&commands_vec);
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(build_info.clone()),
            Box::new(users.clone()),
            Box::new(commands_vec),
            Box::new(auth_failures.clone()),
            Box::new(latency.clone()),
            Box::new(appends.clone()),
            Box::new(lag.clone()),
            Box::new(lag_seconds.clone()),
            Box::new(head.clone()),
            Box::new(projected.clone()),
        ] {
            registry.register(c).expect("metric names are unique");
        }
        // CPU seconds, resident and virtual memory, open and maximum fds, threads, start time:
        // the standard `process_*` names, read from /proc at each scrape.
        #[cfg(target_os = "linux")]
        registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("metric names are unique");
        let metrics = Self {
            registry,
            requests,
            auth_failures,
            latency,
            appends,
            lag,
            lag_seconds,
            head,
            projected,
            build_info,
            users,
            commands,
        };
        metrics.set_build_info(env!("CARGO_PKG_VERSION"), "unknown");
        for state in STATES {
            metrics
                .users
                .with_label_values(&[state_label(state)])
                .set(0);
        }
        metrics
    }

    /// Names the running build in `userstate_build_info` (replacing what was set before): the
    /// binary's version and the git commit it was built from (`unknown` when not known).
    pub fn set_build_info(&self, version: &str, commit: &str) {
        self.build_info.reset();
        self.build_info.with_label_values(&[version, commit]).set(1);
    }

    /// Sets `userstate_users` from the read model's count of users by state.
    pub fn set_users_by_state(&self, counts: &[(UserState, usize)]) {
        for &(state, n) in counts {
            self.users
                .with_label_values(&[state_label(state)])
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    /// The counters of commands by type and outcome (for [`UserService`](crate::UserService)).
    pub fn commands(&self) -> &CommandCounters {
        &self.commands
    }

    /// The registry, for collectors of other parts of the server (delivery).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Counts one failed authentication (`reason`: `missing`, `unknown` or `invalid`).
    pub fn auth_failed(&self, reason: &str) {
        self.auth_failures.with_label_values(&[reason]).inc();
    }

    /// Records one finished HTTP request.
    pub fn observe_request(&self, route: &str, method: &str, status: u16, elapsed: Duration) {
        // HTTP statuses have static texts; gRPC codes (0..=16) are formatted.
        let (code, formatted);
        let status = match axum::http::StatusCode::from_u16(status) {
            Ok(c) => {
                code = c;
                code.as_str()
            }
            Err(_) => {
                formatted = status.to_string();
                formatted.as_str()
            }
        };
        let labels = [route, method, status];
        self.requests.with_label_values(&labels).inc();
        self.latency
            .with_label_values(&labels)
            .observe(elapsed.as_secs_f64());
    }

    /// Sets the store head and projection positions (and so the lag).
    pub fn set_positions(&self, head: u64, projected: u64) {
        let clamp = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.head.set(clamp(head));
        self.projected.set(clamp(projected));
        self.lag.set(clamp(head.saturating_sub(projected)));
    }

    /// Sets the positions (as [`set_positions`](Self::set_positions)) and the lag in seconds.
    pub fn set_lag(&self, head: u64, projected: u64, seconds: f64) {
        self.set_positions(head, projected);
        self.lag_seconds.set(seconds);
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // Encoding into a Vec only fails on invalid metric data, which the types rule out.
        if TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .is_err()
        {
            return String::new();
        }
        String::from_utf8(out).unwrap_or_default()
    }

    /// A store that records its append latency here.
    pub fn metered(&self, store: Arc<dyn EventStore>) -> Arc<dyn EventStore> {
        Arc::new(MeteredStore {
            inner: store,
            appends: self.appends.clone(),
        })
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Every state, in SPEC.md's order.
const STATES: [UserState; 5] = [
    UserState::Initial,
    UserState::Active,
    UserState::Inactive,
    UserState::Locked,
    UserState::Deleted,
];

/// The `state` label of `userstate_users`.
fn state_label(state: UserState) -> &'static str {
    match state {
        UserState::Initial => "initial",
        UserState::Active => "active",
        UserState::Inactive => "inactive",
        UserState::Locked => "locked",
        UserState::Deleted => "deleted",
    }
}

/// The `command` label of `userstate_commands_total`, by [`CommandCounters`] index.
pub const COMMANDS: [&str; 11] = [
    "add",
    "deactivate",
    "reactivate",
    "lock",
    "unlock",
    "remove",
    "report_authentication_failed",
    "report_authentication_succeeded",
    "expire_lock",
    "erase",
    "set_lockout_policy",
];

/// The `outcome` label of `userstate_commands_total`: `ok`, then each [`ErrorKind`].
pub const OUTCOMES: [&str; 12] = [
    "ok",
    "invalid_argument",
    "failed_precondition",
    "unauthenticated",
    "permission_denied",
    "not_found",
    "already_exists",
    "aborted",
    "resource_exhausted",
    "unavailable",
    "internal",
    "key_reused",
];

/// What a command is, for its counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommandType {
    /// A [`UserCommand`].
    User(usize),
    /// Setting a lockout policy.
    SetLockoutPolicy,
}

impl CommandType {
    /// The type of `command`.
    pub fn of(command: &UserCommand) -> Self {
        Self::User(match command {
            UserCommand::Add(_) => 0,
            UserCommand::Deactivate(_) => 1,
            UserCommand::Reactivate(_) => 2,
            UserCommand::Lock(_) | UserCommand::LockFor(_) => 3,
            UserCommand::Unlock(_) => 4,
            UserCommand::Remove(_) => 5,
            UserCommand::AuthFailed(_) => 6,
            UserCommand::AuthSucceeded(_) => 7,
            UserCommand::ExpireLock { .. } => 8,
            UserCommand::Erase(_) => 9,
        })
    }

    fn index(self) -> usize {
        match self {
            Self::User(i) => i,
            Self::SetLockoutPolicy => 10,
        }
    }
}

fn outcome_index(outcome: Result<(), ErrorKind>) -> usize {
    match outcome {
        Ok(()) => 0,
        Err(kind) => match kind {
            ErrorKind::InvalidArgument => 1,
            ErrorKind::FailedPrecondition => 2,
            ErrorKind::Unauthenticated => 3,
            ErrorKind::PermissionDenied => 4,
            ErrorKind::NotFound => 5,
            ErrorKind::AlreadyExists => 6,
            ErrorKind::Aborted => 7,
            ErrorKind::ResourceExhausted => 8,
            ErrorKind::Unavailable => 9,
            ErrorKind::Internal => 10,
            ErrorKind::KeyReused => 11,
        },
    }
}

/// `userstate_commands_total`, every (command, outcome) series made up front: counting is an
/// index and one atomic add (the label map and its lock are never touched after start).
#[derive(Clone)]
pub struct CommandCounters {
    counters: Arc<[IntCounter]>,
}

impl CommandCounters {
    fn new(vec: &IntCounterVec) -> Self {
        let counters = COMMANDS
            .iter()
            .flat_map(|c| OUTCOMES.iter().map(move |o| vec.with_label_values(&[c, o])))
            .collect();
        Self { counters }
    }

    /// Counts one command of type `command` that ended with `outcome`.
    pub fn count(&self, command: CommandType, outcome: Result<(), ErrorKind>) {
        let i = command.index() * OUTCOMES.len() + outcome_index(outcome);
        if let Some(counter) = self.counters.get(i) {
            counter.inc();
        }
    }
}

/// Delegates to a store and times every append.
struct MeteredStore {
    inner: Arc<dyn EventStore>,
    appends: HistogramVec,
}

#[async_trait]
impl StoreWrapper for MeteredStore {
    fn inner(&self) -> &dyn EventStore {
        &*self.inner
    }

    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let start = Instant::now();
        let result = self.inner.append(stream, expected, events).await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(StoreError::Conflict { .. }) => "conflict",
            Err(_) => "error",
        };
        self.appends
            .with_label_values(&[outcome])
            .observe(start.elapsed().as_secs_f64());
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_name_every_error_kind_in_order() {
        for (i, kind) in ErrorKind::ALL.into_iter().enumerate() {
            assert_eq!(outcome_index(Err(kind)), i + 1);
            let snake: String = format!("{kind:?}")
                .chars()
                .enumerate()
                .flat_map(|(j, c)| {
                    let sep = (j > 0 && c.is_ascii_uppercase()).then_some('_');
                    sep.into_iter()
                        .chain(std::iter::once(c.to_ascii_lowercase()))
                })
                .collect();
            assert_eq!(OUTCOMES[i + 1], snake);
        }
    }

    #[test]
    fn every_series_is_there_from_the_start() {
        let metrics = Metrics::new();
        metrics
            .commands()
            .count(CommandType::SetLockoutPolicy, Err(ErrorKind::KeyReused));
        let text = metrics.render();
        let series = text
            .lines()
            .filter(|l| l.starts_with("userstate_commands_total{"))
            .count();
        assert_eq!(series, COMMANDS.len() * OUTCOMES.len());
        assert!(text.contains(
            "userstate_commands_total{command=\"set_lockout_policy\",outcome=\"key_reused\"} 1"
        ));
    }
}
