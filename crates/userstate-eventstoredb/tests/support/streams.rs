//! `event_store.client.streams.Streams`: Append (expected revision checks), Read (one stream and
//! `$all`, forwards and backwards, with prefix filters and catch-up subscriptions to `$all`),
//! Delete (soft) and Tombstone, answering with the fields KurrentDB fills.

// `tonic::Status` is the protocol's error type; boxing it here would only add noise.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::pin::Pin;

use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};

use super::log::{AppendOutcome, DeleteOutcome, Expected, Log, Proposed, Record};
use super::proto::event_store::client::streams::{
    append_req, append_resp, delete_req, delete_resp, read_req, read_resp, streams_server,
    tombstone_resp, AppendReq, AppendResp, BatchAppendReq, BatchAppendResp, DeleteReq, DeleteResp,
    ReadReq, ReadResp, TombstoneReq, TombstoneResp,
};
use super::proto::event_store::client::StreamIdentifier;
use super::wire::{
    event_message, parse_id, stream_deleted, wrong_expected, wrong_expected_status, ExpectedMsg,
    Filter,
};

type RespStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// The Streams service over a shared [`Log`].
pub struct StreamsService {
    pub log: Log,
}

fn boxed(items: Vec<Result<ReadResp, Status>>) -> RespStream<ReadResp> {
    futures::stream::iter(items).boxed()
}

impl StreamsService {
    fn read_stream(
        &self,
        opts: read_req::options::StreamOptions,
        backwards: bool,
        count: u64,
        ids_as_string: bool,
    ) -> Result<RespStream<ReadResp>, Status> {
        use read_req::options::stream_options::RevisionOption;
        let name = opts.stream_identifier.unwrap_or_default().stream_name;
        let Some(records) = self.log.stream(&name) else {
            return Err(stream_deleted(&name));
        };
        if records.is_empty() {
            let nf = read_resp::StreamNotFound {
                stream_identifier: Some(StreamIdentifier { stream_name: name }),
            };
            return Ok(boxed(vec![Ok(ReadResp {
                content: Some(read_resp::Content::StreamNotFound(nf)),
            })]));
        }
        let take = usize::try_from(count).unwrap_or(usize::MAX);
        let selected: Vec<&Record> = match (opts.revision_option, backwards) {
            (Some(RevisionOption::Revision(r)), false) => records
                .iter()
                .filter(|e| e.revision >= r)
                .take(take)
                .collect(),
            (Some(RevisionOption::Revision(r)), true) => records
                .iter()
                .rev()
                .filter(|e| e.revision <= r)
                .take(take)
                .collect(),
            (Some(RevisionOption::End(_)), false) => Vec::new(),
            (Some(RevisionOption::End(_)), true) => records.iter().rev().take(take).collect(),
            (_, false) => records.iter().take(take).collect(),
            (_, true) => Vec::new(),
        };
        Ok(boxed(
            selected
                .into_iter()
                .map(|r| Ok(event_message(r, ids_as_string)))
                .collect(),
        ))
    }

    fn read_all(
        &self,
        options: read_req::Options,
        backwards: bool,
        ids_as_string: bool,
    ) -> Result<RespStream<ReadResp>, Status> {
        use read_req::options::all_options::AllOption;
        use read_req::options::{CountOption, StreamOption};
        let Some(StreamOption::All(all)) = options.stream_option else {
            return Err(Status::invalid_argument("not an $all read"));
        };
        let filter = Filter::parse(options.filter_option)?;
        let keep = move |r: &Record| filter.as_ref().is_none_or(|f| f.matches(r));
        let (records, _) = self.log.records_from(0);
        match options.count_option {
            Some(CountOption::Subscription(_)) if !backwards => {
                // Catch-up subscriptions start *after* the given position.
                let after = match all.all_option {
                    Some(AllOption::Position(p)) => Some(p.commit_position),
                    Some(AllOption::End(_)) => Some(u64::MAX),
                    _ => None,
                };
                Ok(self.subscribe_all(after, Box::new(keep), ids_as_string))
            }
            Some(CountOption::Count(count)) => {
                let take = usize::try_from(count).unwrap_or(usize::MAX);
                let selected: Vec<&Record> = if backwards {
                    let before = match all.all_option {
                        Some(AllOption::Position(p)) => p.commit_position,
                        Some(AllOption::Start(_)) => 0,
                        _ => u64::MAX,
                    };
                    records
                        .iter()
                        .rev()
                        .filter(|r| r.position < before && keep(r))
                        .take(take)
                        .collect()
                } else {
                    // Forwards reads include the event at the given position (KurrentDB
                    // reads from the closest record at or after it).
                    let from = match all.all_option {
                        Some(AllOption::Position(p)) => p.commit_position,
                        Some(AllOption::End(_)) => u64::MAX,
                        _ => 0,
                    };
                    records
                        .iter()
                        .filter(|r| r.position >= from && keep(r))
                        .take(take)
                        .collect()
                };
                Ok(boxed(
                    selected
                        .into_iter()
                        .map(|r| Ok(event_message(r, ids_as_string)))
                        .collect(),
                ))
            }
            _ => Err(Status::invalid_argument("unsupported $all read options")),
        }
    }

    /// Confirmation, the stored events after `after`, caught-up, then live events.
    fn subscribe_all(
        &self,
        after: Option<u64>,
        keep: Box<dyn Fn(&Record) -> bool + Send>,
        ids_as_string: bool,
    ) -> RespStream<ReadResp> {
        let (tx, rx) = mpsc::channel::<Result<ReadResp, Status>>(64);
        let log = self.log.clone();
        tokio::spawn(async move {
            let confirmation = read_resp::SubscriptionConfirmation {
                subscription_id: uuid::Uuid::new_v4().to_string(),
            };
            let content = read_resp::Content::Confirmation(confirmation);
            if tx
                .send(Ok(ReadResp {
                    content: Some(content),
                }))
                .await
                .is_err()
            {
                return;
            }
            let mut len = log.watch_len();
            let mut next = 0usize;
            let mut caught_up = false;
            loop {
                len.borrow_and_update();
                let (records, total) = log.records_from(next);
                next = total;
                for r in records
                    .iter()
                    .filter(|r| after.is_none_or(|a| r.position > a))
                {
                    if keep(r) && tx.send(Ok(event_message(r, ids_as_string))).await.is_err() {
                        return;
                    }
                }
                if !caught_up {
                    caught_up = true;
                    let position = records.last().map(|r| read_resp::Position {
                        commit_position: r.position,
                        prepare_position: r.position,
                    });
                    let msg = read_resp::CaughtUp {
                        timestamp: Some(std::time::SystemTime::now().into()),
                        stream_revision: None,
                        position,
                    };
                    let content = Some(read_resp::Content::CaughtUp(msg));
                    if tx.send(Ok(ReadResp { content })).await.is_err() {
                        return;
                    }
                }
                if len.changed().await.is_err() {
                    return;
                }
            }
        });
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) })
            .boxed()
    }
}

#[tonic::async_trait]
impl streams_server::Streams for StreamsService {
    type ReadStream = RespStream<ReadResp>;
    type BatchAppendStream = RespStream<BatchAppendResp>;

    async fn read(&self, request: Request<ReadReq>) -> Result<Response<Self::ReadStream>, Status> {
        use read_req::options::{uuid_option, CountOption, StreamOption};
        let options = request
            .into_inner()
            .options
            .ok_or_else(|| Status::invalid_argument("read options are required"))?;
        let backwards =
            options.read_direction == read_req::options::ReadDirection::Backwards as i32;
        let ids_as_string = matches!(
            options
                .uuid_option
                .as_ref()
                .and_then(|u| u.content.as_ref()),
            Some(uuid_option::Content::String(_))
        );
        let stream = match options.stream_option.clone() {
            Some(StreamOption::Stream(s)) => match options.count_option {
                Some(CountOption::Count(count)) => {
                    self.read_stream(s, backwards, count, ids_as_string)?
                }
                _ => {
                    return Err(Status::unimplemented(
                        "the test server has no stream subscriptions",
                    ))
                }
            },
            Some(StreamOption::All(_)) => self.read_all(options, backwards, ids_as_string)?,
            None => return Err(Status::invalid_argument("a stream or $all is required")),
        };
        Ok(Response::new(stream))
    }

    async fn append(
        &self,
        request: Request<Streaming<AppendReq>>,
    ) -> Result<Response<AppendResp>, Status> {
        use append_req::options::ExpectedStreamRevision as E;
        let mut messages = request.into_inner();
        let Some(AppendReq {
            content: Some(append_req::Content::Options(options)),
        }) = messages.message().await?
        else {
            return Err(Status::invalid_argument(
                "an append starts with its options",
            ));
        };
        let stream = options.stream_identifier.unwrap_or_default().stream_name;
        let (expected, expected_msg) = match options.expected_stream_revision {
            Some(E::Revision(r)) => (Expected::Revision(r), ExpectedMsg::Revision(r)),
            Some(E::NoStream(_)) => (Expected::NoStream, ExpectedMsg::NoStream),
            Some(E::StreamExists(_)) => (Expected::StreamExists, ExpectedMsg::Exists),
            Some(E::Any(_)) | None => (Expected::Any, ExpectedMsg::Any),
        };
        let mut events = Vec::new();
        while let Some(msg) = messages.message().await? {
            let Some(append_req::Content::ProposedMessage(p)) = msg.content else {
                return Err(Status::invalid_argument("expected a proposed message"));
            };
            let metadata: HashMap<String, String> = p.metadata;
            for required in ["type", "content-type"] {
                if !metadata.contains_key(required) {
                    return Err(Status::invalid_argument(format!("{required} is required")));
                }
            }
            events.push(Proposed {
                id: parse_id(p.id)?,
                metadata,
                custom_metadata: p.custom_metadata,
                data: p.data,
            });
        }
        let result = match self.log.append(&stream, expected, events) {
            AppendOutcome::Deleted => return Err(stream_deleted(&stream)),
            AppendOutcome::Written { revision, position } => {
                append_resp::Result::Success(append_resp::Success {
                    current_revision_option: Some(
                        append_resp::success::CurrentRevisionOption::CurrentRevision(revision),
                    ),
                    position_option: Some(append_resp::success::PositionOption::Position(
                        append_resp::Position {
                            commit_position: position,
                            prepare_position: position,
                        },
                    )),
                })
            }
            AppendOutcome::WrongExpectedVersion { current } => {
                append_resp::Result::WrongExpectedVersion(wrong_expected(current, expected_msg))
            }
        };
        Ok(Response::new(AppendResp {
            result: Some(result),
        }))
    }

    async fn delete(&self, request: Request<DeleteReq>) -> Result<Response<DeleteResp>, Status> {
        use delete_req::options::ExpectedStreamRevision as E;
        let options = request
            .into_inner()
            .options
            .ok_or_else(|| Status::invalid_argument("delete options are required"))?;
        let stream = options.stream_identifier.unwrap_or_default().stream_name;
        let expected = match options.expected_stream_revision {
            Some(E::Revision(r)) => Expected::Revision(r),
            Some(E::NoStream(_)) => Expected::NoStream,
            Some(E::StreamExists(_)) => Expected::StreamExists,
            Some(E::Any(_)) | None => Expected::Any,
        };
        match self.log.soft_delete(&stream, expected) {
            DeleteOutcome::Deleted { position } => Ok(Response::new(DeleteResp {
                position_option: Some(delete_resp::PositionOption::Position(
                    delete_resp::Position {
                        commit_position: position,
                        prepare_position: position,
                    },
                )),
            })),
            DeleteOutcome::WrongExpectedVersion { current } => {
                Err(wrong_expected_status(&stream, current))
            }
            DeleteOutcome::Tombstoned => Err(stream_deleted(&stream)),
        }
    }

    async fn tombstone(
        &self,
        request: Request<TombstoneReq>,
    ) -> Result<Response<TombstoneResp>, Status> {
        let stream = request
            .into_inner()
            .options
            .and_then(|o| o.stream_identifier)
            .unwrap_or_default()
            .stream_name;
        let position_option = match self.log.tombstone(&stream) {
            Some(position) => tombstone_resp::PositionOption::Position(tombstone_resp::Position {
                commit_position: position,
                prepare_position: position,
            }),
            None => return Err(stream_deleted(&stream)),
        };
        Ok(Response::new(TombstoneResp {
            position_option: Some(position_option),
        }))
    }

    async fn batch_append(
        &self,
        _: Request<Streaming<BatchAppendReq>>,
    ) -> Result<Response<Self::BatchAppendStream>, Status> {
        Err(Status::unimplemented("the test server has no batch append"))
    }
}
