//! `application/grpc+json` and `application/grpc-web+json`: the same services with each message
//! in ZITADEL's proto3 JSON form (lowerCamelCase names, 64-bit integers as strings, RFC 3339
//! times, enum names; unknown fields ignored).
//!
//! The generated services speak protobuf only, so JSON calls are transcoded around them:
//! [`ByContentType`](super::ByContentType) rewrites the content type to its protobuf twin and
//! marks the request with [`JsonMessages`]; [`JsonTranscode`] (between the gRPC-web translation
//! and the tonic router) then re-frames the request body JSON -> protobuf and the answer
//! protobuf -> JSON, one length-prefixed frame at a time, with the method's message
//! descriptors from [`FILE_DESCRIPTOR_SET`](super::FILE_DESCRIPTOR_SET). The request body is
//! transcoded lazily, as tonic reads it: the authentication interceptor has run by then, so a
//! bad token is Unauthenticated whatever the body holds. A frame that is not JSON for the method
//! is InvalidArgument (`HTTP-malformed-json`), as on the JSON API.
//!
//! Not here: compressed JSON frames (answered InvalidArgument) and gRPC-web-text with JSON.

use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{ready, Context, Poll};

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::Response;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use http_body::Frame;
use prost::Message;
use prost_reflect::{
    DescriptorPool, DeserializeOptions, DynamicMessage, MessageDescriptor, MethodDescriptor,
};
use tonic::Status;
use tower::Service;

use super::metadata::status_of;
use crate::http::MAX_BODY_BYTES;
use crate::status::{ApiError, RequestError};

/// Request extension: the caller sent JSON messages and wants JSON answers.
#[derive(Clone, Copy, Debug)]
pub struct JsonMessages;

/// The protobuf content type a JSON gRPC content type stands for (`application/grpc+json` ->
/// `application/grpc`, `application/grpc-web+json` -> `application/grpc-web+proto`), or `None`.
pub fn protobuf_twin(content_type: &str) -> Option<&'static str> {
    let essence = content_type.split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case("application/grpc+json") {
        Some("application/grpc")
    } else if essence.eq_ignore_ascii_case("application/grpc-web+json") {
        Some("application/grpc-web+proto")
    } else {
        None
    }
}

/// The JSON content type of an answer to a JSON call whose answer carries `content_type`.
pub fn json_answer_type(content_type: Option<&HeaderValue>) -> HeaderValue {
    let web = content_type
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc-web"));
    HeaderValue::from_static(if web {
        "application/grpc-web+json"
    } else {
        "application/grpc+json"
    })
}

/// Our descriptors (built once).
fn pool() -> &'static Option<DescriptorPool> {
    static POOL: OnceLock<Option<DescriptorPool>> = OnceLock::new();
    POOL.get_or_init(|| match DescriptorPool::decode(super::FILE_DESCRIPTOR_SET) {
        Ok(pool) => Some(pool),
        Err(e) => {
            tracing::error!(error = %e, "gRPC JSON messages unavailable: descriptors do not load");
            None
        }
    })
}

/// The method at `path` (`/package.Service/Method`), if served.
pub(super) fn method_at(path: &str) -> Option<MethodDescriptor> {
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    let service = pool().as_ref()?.get_service_by_name(service)?;
    let found = service.methods().find(|m| m.name() == method);
    found
}

/// The request and answer descriptors of the method at `path`.
fn method(path: &str) -> Option<(MessageDescriptor, MessageDescriptor)> {
    method_at(path).map(|m| (m.input(), m.output()))
}

/// One JSON message of type `desc` as protobuf (an empty or blank one is the empty message;
/// unknown fields ignored). Not JSON for the type: InvalidArgument (`HTTP-malformed-json`).
pub(super) fn json_to_protobuf(
    desc: &MessageDescriptor,
    payload: &[u8],
) -> Result<Vec<u8>, Box<Status>> {
    let payload = if payload.iter().all(u8::is_ascii_whitespace) {
        b"{}".as_slice()
    } else {
        payload
    };
    let mut json = serde_json::Deserializer::from_slice(payload);
    let message = DynamicMessage::deserialize_with_options(
        desc.clone(),
        &mut json,
        &DeserializeOptions::new().deny_unknown_fields(false),
    )
    .and_then(|m| json.end().map(|()| m))
    .map_err(|e| malformed(e.to_string()))?;
    Ok(message.encode_to_vec())
}

/// The request message of the RPC at `path` from its proto3 JSON form (unknown fields
/// ignored), for a REST route that takes the same body (`POST /v2/users` is `ListUsers`).
pub(crate) fn request_from_json<M: Message + Default>(
    path: &str,
    json: serde_json::Value,
) -> Result<M, ApiError> {
    let (input, _) = method(path).ok_or_else(|| {
        ApiError::from(RequestError::MalformedJson(format!(
            "no message for {path}"
        )))
    })?;
    let message = DynamicMessage::deserialize_with_options(
        input,
        json,
        &DeserializeOptions::new().deny_unknown_fields(false),
    )
    .map_err(|e| RequestError::MalformedJson(e.to_string()))?;
    M::decode(message.encode_to_vec().as_slice())
        .map_err(|e| RequestError::MalformedJson(e.to_string()).into())
}

/// One protobuf message of type `desc` (an answer of ours) as JSON.
pub(super) fn protobuf_to_json(
    desc: &MessageDescriptor,
    payload: &[u8],
) -> Result<Vec<u8>, Box<Status>> {
    let message = DynamicMessage::decode(desc.clone(), payload)
        .map_err(|e| Box::new(Status::internal(format!("answer does not decode: {e}"))))?;
    serde_json::to_vec(&message).map_err(|e| {
        Box::new(Status::internal(format!(
            "answer does not encode as JSON: {e}"
        )))
    })
}

/// A gRPC answer body whose protobuf message frames become `desc`'s JSON form, frame by frame
/// as they arrive (the trailers pass through): Connect streaming's JSON answers
/// ([`super::connect`]).
pub(super) fn answer_as_json(body: Body, desc: MessageDescriptor) -> Body {
    Body::new(Transcode::new(body, Arc::new(Direction::ToJson(desc))))
}

/// The transcoding service around the tonic router (see the module docs).
#[derive(Clone)]
pub struct JsonTranscode<S> {
    inner: S,
}

impl<S> JsonTranscode<S> {
    /// Transcodes the JSON calls to `inner`.
    pub fn new(inner: S) -> Self {
        Self { inner }
    }
}

impl<S, B> Service<Request<B>> for JsonTranscode<S>
where
    S: Service<Request, Response = Response> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn std::future::Future<Output = Result<Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let descriptors = req
            .extensions()
            .get::<JsonMessages>()
            .and_then(|_| method(req.uri().path()));
        let Some((input, output)) = descriptors else {
            // Protobuf, or a method we do not serve (tonic answers UNIMPLEMENTED unread).
            return Box::pin(self.inner.call(req.map(Body::new)));
        };
        let req = req.map(|b| Body::new(Transcode::new(b, Arc::new(Direction::ToProtobuf(input)))));
        let future = self.inner.call(req);
        Box::pin(async move {
            let response = future.await?;
            // The content type is set by `ByContentType`, after the gRPC-web translation.
            let mut response =
                response.map(|b| Body::new(Transcode::new(b, Arc::new(Direction::ToJson(output)))));
            response
                .headers_mut()
                .remove(axum::http::header::CONTENT_LENGTH);
            Ok(response)
        })
    }
}

/// Which way a body's messages are converted.
enum Direction {
    /// A request: JSON in, protobuf out.
    ToProtobuf(MessageDescriptor),
    /// An answer: protobuf in, JSON out.
    ToJson(MessageDescriptor),
}

impl Direction {
    /// One message converted.
    fn convert(&self, payload: &[u8]) -> Result<Vec<u8>, Box<Status>> {
        match self {
            Direction::ToProtobuf(desc) => json_to_protobuf(desc, payload),
            Direction::ToJson(desc) => protobuf_to_json(desc, payload),
        }
    }
}

fn malformed(reason: String) -> Box<Status> {
    Box::new(status_of(&ApiError::of(&RequestError::MalformedJson(
        reason,
    ))))
}

/// A gRPC body whose length-prefixed message frames are converted by a [`Direction`];
/// trailers pass through after the last message.
struct Transcode<B> {
    inner: Pin<Box<B>>,
    direction: Arc<Direction>,
    buffered: BytesMut,
    trailers: Option<HeaderMap>,
    ended: bool,
}

impl<B> Transcode<B> {
    fn new(inner: B, direction: Arc<Direction>) -> Self {
        Self {
            inner: Box::pin(inner),
            direction,
            buffered: BytesMut::new(),
            trailers: None,
            ended: false,
        }
    }

    /// The next complete message of `buffered`, converted and framed.
    fn next_message(&mut self) -> Result<Option<Bytes>, Box<Status>> {
        if self.buffered.len() < 5 {
            return Ok(None);
        }
        let flag = self.buffered[0];
        let len = u32::from_be_bytes([
            self.buffered[1],
            self.buffered[2],
            self.buffered[3],
            self.buffered[4],
        ]) as usize;
        if matches!(*self.direction, Direction::ToProtobuf(_)) && len > MAX_BODY_BYTES {
            return Err(Box::new(status_of(&ApiError::of(
                &RequestError::BodyTooLarge {
                    limit: MAX_BODY_BYTES,
                },
            ))));
        }
        if self.buffered.len() < 5 + len {
            return Ok(None);
        }
        self.buffered.advance(5);
        let payload = self.buffered.split_to(len);
        if flag & 1 != 0 {
            return Err(malformed(
                "compressed JSON messages are not supported".into(),
            ));
        }
        let converted = self.direction.convert(&payload)?;
        let mut frame = BytesMut::with_capacity(5 + converted.len());
        frame.put_u8(0);
        frame.put_u32(converted.len() as u32);
        frame.put_slice(&converted);
        Ok(Some(frame.freeze()))
    }
}

impl<B> http_body::Body for Transcode<B>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = &mut *self;
        loop {
            match this.next_message() {
                Ok(Some(message)) => return Poll::Ready(Some(Ok(Frame::data(message)))),
                Ok(None) => {}
                Err(status) => return Poll::Ready(Some(Err(*status))),
            }
            if this.ended {
                if let Some(trailers) = this.trailers.take() {
                    return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                }
                if !this.buffered.is_empty() {
                    this.buffered.clear();
                    return Poll::Ready(Some(Err(*malformed("message frame cut short".into()))));
                }
                return Poll::Ready(None);
            }
            match ready!(this.inner.as_mut().poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => this.buffered.extend_from_slice(&data),
                    Err(frame) => {
                        if let Ok(trailers) = frame.into_trailers() {
                            this.trailers = Some(trailers);
                        }
                    }
                },
                Some(Err(e)) => return Poll::Ready(Some(Err(Status::from_error(e.into())))),
                None => this.ended = true,
            }
        }
    }
}
