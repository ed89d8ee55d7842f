//! Connect server streaming (<https://connectrpc.com/docs/protocol>, "Streaming-Request" and
//! "Streaming-Response"): the event feed (`userstate.events.v1.EventService/SubscribeEvents`)
//! for Connect clients. A skin as unary is ([`super`]): the one request envelope is decoded
//! (JSON -> protobuf) and sent as a gRPC call to the same tonic service, so authentication,
//! grants, resume, the lag limit, the re-authentication ([`crate::feed::RECHECK`]) and the end
//! at the drain are the gRPC stream's own ([`crate::feed`]). gRPC frames messages as Connect
//! envelopes do (a flags byte, a big-endian u32 length), so the answer's frames pass through —
//! transcoded to JSON for a JSON call — and its status (the trailers) becomes the end-of-stream
//! envelope (flags `0x02`): `{"error": {"code", "message", "details"}, "metadata": {…}}`,
//! or `{}` when the stream ended well (the drain).
//!
//! HTTP errors only where the protocol has them, before a stream exists: a method other than
//! POST (405, [`super`]) and a content type other than `application/connect+json` or
//! `application/connect+proto` (415). Every other failure — authentication, a protocol
//! version other than 1, a bad envelope or message, a compressed request, a bad timeout — is
//! answered 200 with the end-of-stream envelope alone, as Connect's own servers do.
//!
//! Compression: none. `connect-content-encoding` other than `identity` is refused with
//! `unimplemented` and `connect-accept-encoding: identity`; answers are never compressed (a
//! client's `connect-accept-encoding` is a preference). `connect-timeout-ms` ends the stream with
//! `deadline_exceeded` once it runs out.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use bytes::{BufMut, Bytes, BytesMut};
use http_body::Frame;
use prost_reflect::MethodDescriptor;
use tokio::time::{Instant, Sleep};
use tonic::{Code, Status};
use userstate::Principal;

use super::{api_error, copy_headers, error_json, read_body, Connect};
use crate::caller::authenticate;
use crate::grpc::json::{self, answer_as_json};
use crate::grpc::status_of;
use crate::status::{ApiError, RequestError};

/// The flags of the envelope holding the end-of-stream message.
const END_STREAM: u8 = 0x02;

/// The message codecs of Connect streaming.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Codec {
    Json,
    Proto,
}

impl Codec {
    /// The codec a streaming `content-type` names (parameters such as `charset` ignored, as
    /// unary does).
    fn of(content_type: &str) -> Option<Self> {
        let essence = content_type.split(';').next().unwrap_or("").trim();
        if essence.eq_ignore_ascii_case("application/connect+json") {
            Some(Self::Json)
        } else if essence.eq_ignore_ascii_case("application/connect+proto") {
            Some(Self::Proto)
        } else {
            None
        }
    }

    fn content_type(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            Self::Json => "application/connect+json",
            Self::Proto => "application/connect+proto",
        })
    }
}

impl Connect {
    /// Answers one Connect server-streaming call of `method`.
    pub(super) async fn stream(
        &self,
        method: MethodDescriptor,
        parts: Parts,
        body: Body,
    ) -> Response {
        let content_type = parts
            .headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let Some(codec) = Codec::of(content_type) else {
            let mut error = ApiError::of(&RequestError::UnsupportedContentType(
                content_type.to_owned(),
            ));
            error.message = format!(
                "unsupported content type {content_type:?} for a streaming method; send \
                 application/connect+json or application/connect+proto"
            );
            return api_error(StatusCode::UNSUPPORTED_MEDIA_TYPE, error);
        };
        match self.open(codec, &method, parts, body).await {
            Ok(response) | Err(response) => response,
        }
    }

    /// The stream, or the end-of-stream answer of a call refused before it started.
    async fn open(
        &self,
        codec: Codec,
        method: &MethodDescriptor,
        parts: Parts,
        body: Body,
    ) -> Result<Response, Response> {
        let refuse = |status: Status| refused(codec, &status);
        let headers = &parts.headers;
        let (principal, deadline) = match self.admit(codec, &parts).await {
            Ok(admitted) => admitted,
            Err(response) => {
                // The request body is read (and dropped, at most the body limit) before the
                // refusal: an HTTP/1.1 server that answers a request whose body it did not
                // read closes the connection, and a client still sending its envelope then
                // sees a broken pipe instead of the answer (Connect's Node client does).
                let _ = read_body(body).await;
                return Err(response);
            }
        };
        let body = read_body(body).await.map_err(|e| refuse(status_of(&e)))?;
        let message = one_message(&body).map_err(|e| refuse(status_of(&e)))?;
        let message = match codec {
            Codec::Proto => message,
            Codec::Json => json::json_to_protobuf(&method.input(), &message)
                .map_err(|e| refuse(*e))?
                .into(),
        };
        let answer = self.forward(&parts.uri, headers, &message, principal).await;
        let (answer_parts, answer_body) = answer.into_parts();
        // A call refused when it opened is trailers-only: its status is in the headers.
        if let Some(status) = Status::from_header_map(&answer_parts.headers) {
            return Err(refuse(status));
        }
        let messages = match codec {
            Codec::Proto => answer_body,
            Codec::Json => answer_as_json(answer_body, method.output()),
        };
        let envelopes = Envelopes {
            answer: messages,
            deadline: deadline.map(|at| Box::pin(tokio::time::sleep_until(at))),
            ended: false,
        };
        let mut response = Response::new(Body::new(envelopes));
        copy_headers(&answer_parts.headers, response.headers_mut());
        response
            .headers_mut()
            .insert(CONTENT_TYPE, codec.content_type());
        Ok(response)
    }

    /// The checks before the body is read: the protocol version, the timeout, the message
    /// encoding and the credentials (authenticated before the body is decoded, as in every
    /// protocol, SPEC.md). The principal and the call's deadline, or the refusal.
    async fn admit(
        &self,
        codec: Codec,
        parts: &Parts,
    ) -> Result<(Arc<Principal>, Option<Instant>), Response> {
        let refuse = |status: Status| refused(codec, &status);
        let headers = &parts.headers;
        if let Some(version) = headers.get("connect-protocol-version") {
            if version.as_bytes() != b"1" {
                return Err(refuse(invalid_header(
                    "connect-protocol-version",
                    "must be 1",
                )));
            }
        }
        let deadline = match headers.get("connect-timeout-ms") {
            None => None,
            Some(value) => {
                let timeout = timeout(value).ok_or_else(|| {
                    refuse(invalid_header(
                        "connect-timeout-ms",
                        "must be a positive whole number of milliseconds, at most 10 digits",
                    ))
                })?;
                Some(Instant::now() + timeout)
            }
        };
        if let Some(encoding) = headers.get("connect-content-encoding") {
            if !encoding.as_bytes().eq_ignore_ascii_case(b"identity") {
                let status = Status::unimplemented(format!(
                    "message compression {:?} is not supported: send identity (uncompressed) \
                     messages",
                    String::from_utf8_lossy(encoding.as_bytes())
                ));
                let mut response = refuse(status);
                response.headers_mut().insert(
                    "connect-accept-encoding",
                    HeaderValue::from_static("identity"),
                );
                return Err(response);
            }
        }
        let principal = authenticate(&self.state, headers, &parts.extensions)
            .await
            .map_err(|e| refuse(status_of(&e)))?;
        Ok((principal, deadline))
    }
}

/// A header's bad value as InvalidArgument with the SPEC's detail.
fn invalid_header(name: &'static str, reason: &'static str) -> Status {
    status_of(&ApiError::of(&RequestError::InvalidHeader { name, reason }))
}

/// `connect-timeout-ms`: a positive decimal of at most 10 digits (the protocol's rule), or
/// `None`.
fn timeout(value: &HeaderValue) -> Option<Duration> {
    let digits = value.as_bytes();
    let ms = (!digits.is_empty() && digits.len() <= 10 && digits.iter().all(u8::is_ascii_digit))
        .then(|| std::str::from_utf8(digits).ok()?.parse::<u64>().ok())
        .flatten()
        .filter(|ms| *ms > 0);
    ms.map(Duration::from_millis)
}

/// The message of a server-streaming request body: exactly one envelope with flags 0. Anything
/// else is InvalidArgument (`GRPC-malformed-message`), never a panic.
fn one_message(body: &Bytes) -> Result<Bytes, ApiError> {
    let malformed = |reason: String| ApiError::from(RequestError::MalformedMessage(reason));
    let Some(prefix) = body.get(..5) else {
        return Err(malformed(format!(
            "{} bytes where an envelope (flags byte, 4-byte big-endian length, message) was \
             expected",
            body.len()
        )));
    };
    let flags = prefix[0];
    let length = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize;
    if flags != 0 {
        return Err(malformed(format!(
            "envelope flags {flags:#04x}: a request message is sent uncompressed with flags 0"
        )));
    }
    let sent = body.len() - 5;
    if sent < length {
        return Err(malformed(format!(
            "envelope cut short: {length} bytes announced, {sent} sent"
        )));
    }
    if sent > length {
        return Err(malformed(
            "more than one envelope: a server-streaming call takes one request message".into(),
        ));
    }
    Ok(body.slice(5..))
}

/// An envelope of `flags` around `message`.
fn envelope(flags: u8, message: &[u8]) -> Bytes {
    let mut framed = BytesMut::with_capacity(5 + message.len());
    framed.put_u8(flags);
    framed.put_u32(message.len() as u32);
    framed.put_slice(message);
    framed.freeze()
}

/// The end-of-stream envelope of `status` (no `error` when OK) and the answer's `trailers`
/// (gRPC's own left out) as its `metadata`.
fn end_stream(status: &Status, trailers: &HeaderMap) -> Bytes {
    let mut end = serde_json::Map::new();
    if status.code() != Code::Ok {
        end.insert("error".into(), error_json(status));
    }
    let mut metadata = serde_json::Map::new();
    for (name, value) in trailers {
        if name.as_str().starts_with("grpc-") {
            continue;
        }
        if let Ok(text) = value.to_str() {
            let values = metadata
                .entry(name.as_str())
                .or_insert_with(|| serde_json::Value::Array(Vec::new()));
            if let serde_json::Value::Array(values) = values {
                values.push(text.into());
            }
        }
    }
    if !metadata.is_empty() {
        end.insert("metadata".into(), metadata.into());
    }
    envelope(
        END_STREAM,
        serde_json::Value::Object(end).to_string().as_bytes(),
    )
}

/// The answer to a call refused before its stream started: 200, the end-of-stream envelope
/// alone.
fn refused(codec: Codec, status: &Status) -> Response {
    let mut response = Response::new(Body::from(end_stream(status, &HeaderMap::new())));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, codec.content_type());
    response
}

/// The body of a Connect stream: the gRPC answer's message frames as they come, then one
/// end-of-stream envelope (from the trailers, a failure of the answer, or the deadline), then
/// the end. Dropping it drops the gRPC answer, which closes the feed.
struct Envelopes {
    answer: Body,
    deadline: Option<Pin<Box<Sleep>>>,
    ended: bool,
}

impl Envelopes {
    /// The last frame: the end of the stream with `status`; the answer is dropped at once.
    fn end(&mut self, status: &Status, trailers: &HeaderMap) -> Frame<Bytes> {
        self.ended = true;
        self.answer = Body::empty();
        self.deadline = None;
        Frame::data(end_stream(status, trailers))
    }
}

impl http_body::Body for Envelopes {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = &mut *self;
        if this.ended {
            return Poll::Ready(None);
        }
        if let Some(deadline) = this.deadline.as_mut() {
            if deadline.as_mut().poll(cx).is_ready() {
                let status = Status::deadline_exceeded("connect-timeout-ms ran out");
                return Poll::Ready(Some(Ok(this.end(&status, &HeaderMap::new()))));
            }
        }
        loop {
            let frame = ready!(Pin::new(&mut this.answer).poll_frame(cx));
            let last = match frame {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) if data.is_empty() => continue,
                    Ok(data) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                    Err(frame) => match frame.into_trailers() {
                        Ok(trailers) => {
                            let status = Status::from_header_map(&trailers).unwrap_or_else(|| {
                                Status::internal("the gRPC answer ended without a status")
                            });
                            this.end(&status, &trailers)
                        }
                        Err(_) => continue,
                    },
                },
                Some(Err(e)) => this.end(&Status::from_error(e.into_inner()), &HeaderMap::new()),
                None => this.end(
                    &Status::internal("the gRPC answer ended without a status"),
                    &HeaderMap::new(),
                ),
            };
            return Poll::Ready(Some(Ok(last)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn streaming_content_types() {
        assert_eq!(Codec::of("application/connect+json"), Some(Codec::Json));
        assert_eq!(
            Codec::of("Application/Connect+JSON; charset=utf-8"),
            Some(Codec::Json)
        );
        assert_eq!(Codec::of("application/connect+proto"), Some(Codec::Proto));
        for other in [
            "application/json",
            "application/proto",
            "application/connect",
            "",
        ] {
            assert_eq!(Codec::of(other), None, "{other}");
        }
    }

    #[test]
    fn timeouts() {
        let t = |v: &str| timeout(&HeaderValue::from_str(v).unwrap());
        assert_eq!(t("1500").unwrap(), Duration::from_millis(1500));
        assert_eq!(
            t("9999999999").unwrap(),
            Duration::from_millis(9_999_999_999)
        );
        for bad in ["", "0", "-1", "1.5", "12345678901", "1e3", " 5"] {
            assert_eq!(t(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_end_of_stream_carries_the_error_and_the_trailers() {
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("8"));
        trailers.insert("x-kept", HeaderValue::from_static("a"));
        trailers.append("x-kept", HeaderValue::from_static("b"));
        let end = end_stream(&Status::resource_exhausted("behind"), &trailers);
        assert_eq!(end[0], END_STREAM);
        let json: serde_json::Value = serde_json::from_slice(&end[5..]).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "error": {"code": "resource_exhausted", "message": "behind"},
                "metadata": {"x-kept": ["a", "b"]}
            })
        );
        let ok = end_stream(&Status::new(Code::Ok, ""), &HeaderMap::new());
        assert_eq!(&ok[5..], b"{}");
        assert_eq!(u32::from_be_bytes([ok[1], ok[2], ok[3], ok[4]]), 2);
    }

    proptest! {
        /// A message in one envelope comes back as it was sent.
        #[test]
        fn one_envelope_round_trips(message in proptest::collection::vec(any::<u8>(), 0..300)) {
            let body = envelope(0, &message);
            prop_assert_eq!(one_message(&body).unwrap(), Bytes::from(message));
        }

        /// Any body is one message or InvalidArgument: never a panic.
        #[test]
        fn any_body_is_a_message_or_invalid_argument(body in proptest::collection::vec(any::<u8>(), 0..40)) {
            let body = Bytes::from(body);
            match one_message(&body) {
                Ok(message) => {
                    prop_assert_eq!(body[0], 0);
                    prop_assert_eq!(message.len() + 5, body.len());
                }
                Err(e) => prop_assert_eq!(e.kind, userstate::ErrorKind::InvalidArgument),
            }
        }
    }
}
