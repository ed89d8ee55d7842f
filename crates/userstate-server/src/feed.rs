//! The event feed for every front end (SPEC.md "Event feed"): one [`FeedRequest`] -> one
//! [`Subscription`](userstate::feed::Subscription) narrowed to what the caller may read, and
//! the one form an event takes on the wire ([`event_line`], as `userstate export` writes it).
//! REST serves it as Server-Sent Events (`GET /v2/events`, [`crate::http`]), gRPC as the
//! server-streaming `userstate.events.v1.EventService/SubscribeEvents` ([`crate::grpc`]), and
//! gRPC-web and Connect streaming as skins over that gRPC stream.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use axum::http::{header::AUTHORIZATION, HeaderMap};
use futures_util::{stream, Stream};
use userstate::feed::{Filter, Subscription, DEFAULT_MAX_LAG};
use userstate::{DomainError, Error, Permission, RecordedEvent};

use crate::auth::Credentials;
use crate::caller::Caller;
use crate::http::AppState;
use crate::status::ApiError;

/// The longest list of types or organisations a reader may ask for.
pub const MAX_FILTER_ITEMS: usize = 100;

/// What a reader asks for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FeedRequest {
    /// Every event after this position.
    pub after: u64,
    /// Only these event types (empty: every type).
    pub types: Vec<String>,
    /// Only these organisations (empty: every organisation the caller may read).
    pub orgs: Vec<String>,
}

impl FeedRequest {
    /// Splits a comma-separated list (`types=a,b`), refusing more than [`MAX_FILTER_ITEMS`].
    pub fn list(field: &'static str, value: &str) -> Result<Vec<String>, ApiError> {
        let items: Vec<String> = value
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        if items.len() > MAX_FILTER_ITEMS {
            return Err(DomainError::InvalidArgument {
                field,
                reason: format!("lists {} values, at most {MAX_FILTER_ITEMS}", items.len()),
            }
            .into());
        }
        Ok(items)
    }
}

/// The subscription `caller` gets for `request`: the public feed of its instance, narrowed to
/// the organisations it may read (`user.read`), then to the types and organisations asked
/// for. A caller without `user.read` anywhere is refused (PermissionDenied); one that asks
/// for organisations it may not read sees nothing of them, as ListUsers does.
pub fn open(
    state: &AppState,
    caller: &Caller,
    request: &FeedRequest,
) -> Result<Subscription, ApiError> {
    let principal = &caller.principal;
    let may_read = principal.instance_grants.contains(&Permission::UserRead)
        || principal
            .org_grants
            .values()
            .any(|p| p.contains(&Permission::UserRead));
    if !may_read {
        return Err(Error::PermissionDenied {
            subject: principal.subject.clone(),
            org: "*".to_owned(),
            permission: Permission::UserRead,
        }
        .into());
    }
    let mut filter = Filter::public();
    if !request.types.is_empty() {
        filter = filter.with_types(request.types.iter().cloned());
    }
    if !request.orgs.is_empty() {
        filter = filter.with_orgs(request.orgs.iter().cloned());
    }
    let filter = filter.visible_to(principal);
    Ok(
        Subscription::after(state.service().store().clone(), request.after)
            .with_filter(filter)
            .with_max_lag(state.feed_max_lag()),
    )
}

/// The default lag limit of a reader (events behind the head).
pub const DEFAULT_FEED_MAX_LAG: u64 = DEFAULT_MAX_LAG;

/// An event as one line of `userstate export` (without the newline).
pub fn event_line(event: &RecordedEvent) -> String {
    serde_json::to_string(event).expect("a recorded event is JSON")
}

/// How often an open stream asks the authenticator again whether the credentials it was
/// opened with are still good (a revoked store token, an expired JWT): at most this long after
/// that, the reader gets no further event.
pub const RECHECK: Duration = Duration::from_secs(1);

/// The events of `subscription` one by one, for a response body: ends after the first error
/// (a reader too far behind, a store failure, credentials no longer accepted), which it
/// yields, and ends when the server drains ([`AppState::close_feeds`]). Holds at most one
/// page. `headers` are the request's: their `Authorization` is authenticated again before an
/// event is sent once [`RECHECK`] has passed since the last time.
pub fn events(
    state: &AppState,
    subscription: Subscription,
    headers: &HeaderMap,
) -> impl Stream<Item = Result<RecordedEvent, ApiError>> + Send + 'static {
    let mut credentials = HeaderMap::new();
    if let Some(value) = headers.get(AUTHORIZATION) {
        credentials.insert(AUTHORIZATION, value.clone());
    }
    let reader = Reader {
        subscription,
        pending: VecDeque::new(),
        closing: state.closing(),
        done: false,
        state: state.clone(),
        credentials,
        checked: Instant::now(),
    };
    stream::unfold(reader, Reader::step)
}

/// One open stream.
struct Reader {
    subscription: Subscription,
    /// Read, not yet sent.
    pending: VecDeque<RecordedEvent>,
    closing: tokio::sync::watch::Receiver<bool>,
    done: bool,
    state: AppState,
    /// The `Authorization` header the stream was opened with (nothing else is kept).
    credentials: HeaderMap,
    /// When the credentials were last accepted.
    checked: Instant,
}

impl Reader {
    async fn step(mut self) -> Option<(Result<RecordedEvent, ApiError>, Self)> {
        if self.done {
            return None;
        }
        if self.pending.is_empty() {
            let batch = tokio::select! {
                batch = self.subscription.next_batch() => batch,
                _ = self.closing.wait_for(|closing| *closing) => return None,
            };
            match batch {
                Ok(batch) => self.pending.extend(batch),
                Err(e) => {
                    self.done = true;
                    return Some((Err(ApiError::from(e)), self));
                }
            }
        }
        if self.checked.elapsed() >= RECHECK {
            let accepted = self
                .state
                .authenticator()
                .authenticate(Credentials::new(&self.credentials))
                .await;
            if let Err(error) = accepted {
                self.state.metrics().auth_failed("invalid");
                tracing::info!(subject = error.subject(), error = %error, "event feed closed: its credentials are no longer accepted");
                self.done = true;
                return Some((Err(ApiError::from(error)), self));
            }
            self.checked = Instant::now();
        }
        let event = self.pending.pop_front()?;
        Some((Ok(event), self))
    }
}
