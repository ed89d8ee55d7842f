//! The protobuf codec of the generated services: tonic's prost codec, except that a request
//! message that does not decode is the caller's error — InvalidArgument (3) with SPEC.md's
//! `zitadel.v1.ErrorDetail` (`GRPC-malformed-message`, `Errors.Invalid.Body`) — where tonic
//! answers Internal (13).
//!
//! `build.rs` names it (`codec_path`) for the servers and the clients generated from `proto/`;
//! a client would report an undecodable answer the same way. The health and reflection
//! services come generated with tonic's codec and keep its mapping.

use std::marker::PhantomData;

use prost::Message;
use tonic::codec::{Codec, DecodeBuf, Decoder};
use tonic::Status;

use super::metadata::status_of;
use crate::status::{ApiError, RequestError};

/// [`tonic::codec::ProstCodec`] with decode failures mapped to InvalidArgument.
#[derive(Debug, Clone)]
pub struct ProstCodec<T, U> {
    _pd: PhantomData<(T, U)>,
}

impl<T, U> Default for ProstCodec<T, U> {
    fn default() -> Self {
        Self { _pd: PhantomData }
    }
}

impl<T, U> Codec for ProstCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = <tonic::codec::ProstCodec<T, U> as Codec>::Encoder;
    type Decoder = MessageDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        tonic::codec::ProstCodec::<T, U>::default().encoder()
    }

    fn decoder(&mut self) -> Self::Decoder {
        MessageDecoder(PhantomData)
    }
}

/// Decodes like [`tonic::codec::ProstDecoder`]; a failure is the caller's malformed message.
#[derive(Debug)]
pub struct MessageDecoder<U>(PhantomData<U>);

impl<U: Message + Default> Decoder for MessageDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        U::decode(buf).map(Some).map_err(|e| {
            status_of(&ApiError::of(&RequestError::MalformedMessage(
                e.to_string(),
            )))
        })
    }
}
