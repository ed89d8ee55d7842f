//! `userstate.events.v1.EventService` over gRPC: the event feed as a server-streaming RPC, a
//! skin over [`crate::feed`] as REST's `GET /v2/events` is. A reader too far behind ends with
//! `RESOURCE_EXHAUSTED`; every stream ends (OK) when the server drains.

use std::pin::Pin;

use futures_util::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use super::metadata::{caller, status_of};
use super::pb::userstate::events::v1::event_service_server::EventService;
use super::pb::userstate::events::v1::*;
use crate::feed::{self, event_line, open, FeedRequest, MAX_FILTER_ITEMS};
use crate::http::AppState;
use crate::status::ApiError;

/// The event service.
pub struct Events {
    state: AppState,
}

impl Events {
    /// The service on the server's state.
    pub fn new(state: AppState) -> Self {
        Self { state }
    }
}

/// The answer for one item of the feed. (`tonic::Status` is what the stream type carries,
/// however large clippy finds it.)
#[allow(clippy::result_large_err)]
fn answer(
    item: Result<userstate::RecordedEvent, ApiError>,
) -> Result<SubscribeEventsResponse, Status> {
    match item {
        Ok(event) => Ok(SubscribeEventsResponse {
            position: event.position,
            event: event_line(&event),
        }),
        Err(error) => Err(status_of(&error)),
    }
}

/// The stream of answers of one call.
type EventStream = Pin<Box<dyn Stream<Item = Result<SubscribeEventsResponse, Status>> + Send>>;

#[tonic::async_trait]
impl EventService for Events {
    type SubscribeEventsStream = EventStream;

    async fn subscribe_events(
        &self,
        request: Request<SubscribeEventsRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let caller = caller(&self.state, &request)
            .await
            .map_err(|e| status_of(&e))?;
        let headers = request.metadata().clone().into_headers();
        let message = request.into_inner();
        let too_many = |field: &'static str, n: usize| {
            status_of(&ApiError::from(userstate::DomainError::InvalidArgument {
                field,
                reason: format!("lists {n} values, at most {MAX_FILTER_ITEMS}"),
            }))
        };
        if message.types.len() > MAX_FILTER_ITEMS {
            return Err(too_many("types", message.types.len()));
        }
        if message.orgs.len() > MAX_FILTER_ITEMS {
            return Err(too_many("orgs", message.orgs.len()));
        }
        let feed = FeedRequest {
            after: message.after_position,
            types: message.types,
            orgs: message.orgs,
        };
        let subscription = open(&self.state, &caller, &feed).map_err(|e| status_of(&e))?;
        let answers = feed::events(&self.state, subscription, &headers).map(answer);
        Ok(Response::new(Box::pin(answers)))
    }
}
