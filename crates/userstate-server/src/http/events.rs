//! `GET /v2/events` (SPEC.md "Event feed"): the event feed as Server-Sent Events. Each event is
//! one SSE event with `id:` = its position and `data:` = the event as `userstate export` writes
//! it; `Last-Event-ID` (an EventSource's reconnect) wins over `afterPosition`. A reader too far
//! behind gets one `event: error` whose data is the `google.rpc.Status` body, and the stream
//! ends; so does every stream when the server drains.

use std::collections::HashMap;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, Uri};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use userstate::DomainError;

use super::AppState;
use crate::caller::Caller;
use crate::feed::{self, event_line, open, FeedRequest};
use crate::status::{ApiError, RequestError};

/// The header an EventSource sends when it reconnects.
pub const LAST_EVENT_ID_HEADER: &str = "last-event-id";
/// How often an idle stream sends a comment, so proxies keep it open.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The event feed as Server-Sent Events (ours; SPEC.md "Event feed"). Needs `user.read` on an
/// organisation at least; shows only the organisations the token may read. The same feed
/// streams over gRPC, gRPC-web and Connect as `userstate.events.v1.EventService/SubscribeEvents`.
#[utoipa::path(get, path = "/v2/events", tag = "v2",
    params(("afterPosition" = Option<String>, Query, description = "Only events after this position (default 0: from the start)"),
        ("types" = Option<String>, Query, description = "Only these event types, comma-separated"),
        ("orgs" = Option<String>, Query, description = "Only these organisations, comma-separated"),
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this position; wins over afterPosition")),
    responses(
        (status = 200, description = "text/event-stream: `id:` position, `data:` the event as `userstate export` writes it; `event: error` then the end when the reader falls too far behind"),
        (status = "default", description = "Error (google.rpc.Status)", body = crate::wire::ErrorBody)),
    security(("bearer" = [])))]
pub async fn events(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, ApiError> {
    let request = feed_request(&headers, &uri)?;
    let subscription = open(&state, &caller, &request)?;
    let events = feed::events(&state, subscription, &headers).map(|item| {
        Ok::<_, Infallible>(match item {
            Ok(event) => Event::default()
                .id(event.position.to_string())
                .data(event_line(&event)),
            Err(error) => Event::default()
                .event("error")
                .data(serde_json::to_string(&error.body()).unwrap_or_default()),
        })
    });
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response())
}

/// The request's position and filters.
fn feed_request(headers: &HeaderMap, uri: &Uri) -> Result<FeedRequest, ApiError> {
    let Query(params) = Query::<HashMap<String, String>>::try_from_uri(uri)
        .map_err(|e| RequestError::InvalidPath(e.body_text()))?;
    let mut request = FeedRequest::default();
    if let Some(v) = params.get("afterPosition") {
        request.after = v.parse().map_err(|_| DomainError::InvalidArgument {
            field: "afterPosition",
            reason: format!("{v:?} is not a non-negative integer"),
        })?;
    }
    if let Some(v) = headers.get(LAST_EVENT_ID_HEADER) {
        request.after = v.to_str().ok().and_then(|v| v.trim().parse().ok()).ok_or(
            RequestError::InvalidHeader {
                name: "Last-Event-ID",
                reason: "must be a position (a non-negative integer)",
            },
        )?;
    }
    if let Some(v) = params.get("types") {
        request.types = FeedRequest::list("types", v)?;
    }
    if let Some(v) = params.get("orgs") {
        request.orgs = FeedRequest::list("orgs", v)?;
    }
    Ok(request)
}
