//! gRPC test helpers: generated tonic clients on a real server's port, bearer metadata, and
//! assertions on `tonic::Status` (code, and the `zitadel.v1.ErrorDetail` in its details).

#![allow(dead_code)]

use prost::Message;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};
use userstate_server::grpc::pb::google::rpc::Status as RpcStatus;
use userstate_server::grpc::pb::zitadel::object::v2::{organization::Org, Organization};
use userstate_server::grpc::pb::zitadel::user::v2::user_service_client::UserServiceClient;
use userstate_server::grpc::pb::zitadel::user::v2::AddHumanUserRequest;
use userstate_server::grpc::pb::zitadel::user::v3alpha::user_service_client::UserServiceClient as UserServiceV3AlphaClient;
use userstate_server::grpc::pb::zitadel::v1::ErrorDetail;

/// A channel to the server at `addr` (gRPC over HTTP/2 without TLS).
pub async fn channel(addr: std::net::SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .expect("valid uri")
        .connect()
        .await
        .expect("connect")
}

/// The v2 client.
pub async fn v2(addr: std::net::SocketAddr) -> UserServiceClient<Channel> {
    UserServiceClient::new(channel(addr).await)
}

/// The v3alpha client.
pub async fn v3(addr: std::net::SocketAddr) -> UserServiceV3AlphaClient<Channel> {
    UserServiceV3AlphaClient::new(channel(addr).await)
}

/// A request with `authorization: Bearer <token>` (none when `token` is `None`).
pub fn req<T>(token: Option<&str>, message: T) -> Request<T> {
    let mut request = Request::new(message);
    if let Some(t) = token {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    request
}

/// A request as `token`.
pub fn as_<T>(token: &str, message: T) -> Request<T> {
    req(Some(token), message)
}

/// The `x-userstate-position` response metadata.
pub fn position<T>(response: &tonic::Response<T>) -> u64 {
    response
        .metadata()
        .get("x-userstate-position")
        .expect("x-userstate-position metadata")
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// Asserts the code and that the details are a `google.rpc.Status` with the same code and
/// message and exactly one `zitadel.v1.ErrorDetail` with `id` and `key`.
pub fn assert_status<T: std::fmt::Debug>(
    result: Result<T, Status>,
    code: i32,
    id: &str,
    key: &str,
) {
    let status = result.expect_err("the call must fail");
    assert_eq!(status.code() as i32, code, "{status:?}");
    assert_ne!(status.code(), Code::Unknown);
    assert!(!status.message().is_empty());
    let rpc = RpcStatus::decode(status.details()).expect("details are a google.rpc.Status");
    assert_eq!(rpc.code, code);
    assert_eq!(rpc.message, status.message());
    assert_eq!(rpc.details.len(), 1, "{rpc:?}");
    assert_eq!(
        rpc.details[0].type_url,
        "type.googleapis.com/zitadel.v1.ErrorDetail"
    );
    let detail = ErrorDetail::decode(rpc.details[0].value.as_slice()).expect("an ErrorDetail");
    assert_eq!(
        (detail.id.as_str(), detail.message.as_str()),
        (id, key),
        "{status:?}"
    );
}

/// A timestamp as the JSON API writes it (RFC 3339, UTC, milliseconds).
pub fn json_time(t: &prost_types::Timestamp) -> String {
    chrono::DateTime::from_timestamp(t.seconds, t.nanos as u32)
        .expect("valid timestamp")
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// An add of user `id` (generated when `None`) named `username` in `org`.
pub fn add_request(id: Option<&str>, username: &str, org: &str) -> AddHumanUserRequest {
    AddHumanUserRequest {
        user_id: id.map(str::to_owned),
        username: Some(username.to_owned()),
        organization: Some(Organization {
            org: Some(Org::OrgId(org.to_owned())),
        }),
        ..Default::default()
    }
}

/// A codec that sends the request bytes as given (what no generated client would send) and
/// hands back the answer's bytes.
#[derive(Clone, Copy, Default)]
pub struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }

    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl tonic::codec::Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;

    fn encode(
        &mut self,
        item: Vec<u8>,
        buf: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), Status> {
        bytes::BufMut::put_slice(buf, &item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;

    fn decode(&mut self, buf: &mut tonic::codec::DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        let len = bytes::Buf::remaining(buf);
        Ok(Some(bytes::Buf::copy_to_bytes(buf, len).to_vec()))
    }
}

/// A unary call of `path` (e.g. `/zitadel.user.v2.UserService/LockUser`) whose request
/// message is `payload`, as bytes.
pub async fn raw_unary(
    addr: std::net::SocketAddr,
    path: &'static str,
    token: Option<&str>,
    payload: Vec<u8>,
) -> Result<tonic::Response<Vec<u8>>, Status> {
    let mut grpc = tonic::client::Grpc::new(channel(addr).await);
    grpc.ready().await.expect("the channel is ready");
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(path);
    grpc.unary(req(token, payload), path, RawCodec).await
}
