//! gRPC and gRPC-web: `zitadel.user.v2.UserService` and `zitadel.user.v3alpha.UserService`
//! (generated from `proto/` at build time; every message, field number and enum value is
//! ZITADEL's own), userstate's own `userstate.lockout.v1.LockoutService` (the authentication
//! reports, which ZITADEL does not have; its own package), `userstate.events.v1.EventService`
//! (the event feed as a server-streaming RPC), the gRPC health service and server reflection, on the same port as the HTTP
//! API. Requests whose `content-type` starts with `application/grpc` (gRPC over HTTP/2, gRPC-web
//! over HTTP/1.1 or HTTP/2; protobuf or JSON messages, see [`json`]) go to tonic; every other
//! request goes to the axum router ([`with_grpc`]), except Connect calls (unary and server
//! streaming, by path), which are transcoded to the same tonic services. Health reports `SERVING` until the server
//! drains, then `NOT_SERVING` ([`GrpcHealth`]).
//!
//! The services only translate: metadata -> principal ([`Authenticator`](crate::Authenticator),
//! the same as HTTP, checked by a service wrapper before the message is decoded), message ->
//! [`UserCommand`](userstate::UserCommand) -> [`UserService`](crate::UserService), and failures
//! -> [`tonic::Status`] through [`ApiError`](crate::ApiError), whose code comes from
//! [`ErrorKind::grpc_code`](userstate::ErrorKind::grpc_code).

pub mod codec;
mod connect;
pub(crate) mod convert;
mod dispatch;
mod events;
pub mod json;
mod lockout;
mod metadata;
mod v2;
mod v3alpha;

use axum::Router;
use metadata::Authenticate;
use tonic::server::NamedService;
use tonic::service::Routes;
use tonic_health::server::HealthReporter;

use crate::http::{AppState, MAX_BODY_BYTES};

pub use dispatch::{is_grpc_content_type, ByContentType, DispatchFuture, GRPC_METHODS};
pub use metadata::{status_of, POSITION_METADATA};

/// The generated protobuf messages, servers and clients (module paths follow the packages).
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod pb {
    /// `google.rpc`.
    pub mod google {
        /// `google.rpc`.
        pub mod rpc {
            tonic::include_proto!("google.rpc");
        }
    }
    /// `userstate.*` (userstate's own services).
    pub mod userstate {
        /// `userstate.events`.
        pub mod events {
            /// `userstate.events.v1`.
            pub mod v1 {
                tonic::include_proto!("userstate.events.v1");
            }
        }
        /// `userstate.lockout`.
        pub mod lockout {
            /// `userstate.lockout.v1`.
            pub mod v1 {
                tonic::include_proto!("userstate.lockout.v1");
            }
        }
    }
    /// `zitadel.*`.
    pub mod zitadel {
        /// `zitadel.v1`.
        pub mod v1 {
            tonic::include_proto!("zitadel.v1");
        }
        /// `zitadel.object`.
        pub mod object {
            /// `zitadel.object.v2`.
            pub mod v2 {
                tonic::include_proto!("zitadel.object.v2");
            }
            /// `zitadel.object.v2beta`.
            pub mod v2beta {
                tonic::include_proto!("zitadel.object.v2beta");
            }
        }
        /// `zitadel.user`.
        pub mod user {
            /// `zitadel.user.v2`.
            pub mod v2 {
                tonic::include_proto!("zitadel.user.v2");
            }
            /// `zitadel.user.v3alpha`.
            pub mod v3alpha {
                tonic::include_proto!("zitadel.user.v3alpha");
            }
        }
    }
}

/// The encoded `FileDescriptorSet` of every proto file (served by reflection).
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/userstate_descriptor.bin"));

use pb::userstate::events::v1::event_service_server::EventServiceServer;
use pb::userstate::lockout::v1::lockout_service_server::LockoutServiceServer;
use pb::zitadel::user::v2::user_service_server::UserServiceServer;
use pb::zitadel::user::v3alpha::user_service_server::UserServiceServer as UserServiceV3AlphaServer;

/// The services `grpc.health.v1.Health` reports on: the server as a whole (`""`) and each user
/// service and the lockout service.
const HEALTH_SERVICES: [&str; 5] = [
    "",
    <EventServiceServer<events::Events> as NamedService>::NAME,
    <UserServiceServer<v2::UserServiceV2> as NamedService>::NAME,
    <UserServiceV3AlphaServer<v3alpha::UsersV3Alpha> as NamedService>::NAME,
    <LockoutServiceServer<lockout::Lockout> as NamedService>::NAME,
];

/// The statuses `grpc.health.v1.Health` answers: `SERVING` from the start, `NOT_SERVING` once
/// the server drains ([`draining`](Self::draining)).
#[derive(Clone, Debug)]
pub struct GrpcHealth {
    reporter: HealthReporter,
}

impl GrpcHealth {
    /// The drain began: every service answers `NOT_SERVING`, and an open `Watch` receives it
    /// and then ends, so a watching client does not hold the drain open until the grace runs
    /// out (new calls are refused by then: the connections are closing).
    pub async fn draining(&mut self) {
        for service in HEALTH_SERVICES {
            self.reporter
                .set_service_status(service, tonic_health::ServingStatus::NotServing)
                .await;
        }
        for service in HEALTH_SERVICES {
            self.reporter.clear_service_status(service).await;
        }
    }
}

/// The tonic services (user v2, user v3alpha, userstate's lockout, health, reflection v1 and
/// v1alpha) as one axum
/// router (without gRPC-web; [`with_grpc`] adds it), and the health statuses.
pub async fn grpc_router(state: AppState) -> (Router, GrpcHealth) {
    let (reporter, health_service) = tonic_health::server::health_reporter();
    for service in HEALTH_SERVICES {
        reporter
            .set_service_status(service, tonic_health::ServingStatus::Serving)
            .await;
    }
    // The HTTP body limit applies to messages too; tonic refuses larger ones with OutOfRange.
    // Authentication runs before a message is decoded (metadata::Authenticate).
    let v2 = Authenticate::new(
        state.clone(),
        UserServiceServer::new(v2::UserServiceV2::new(state.clone()))
            .max_decoding_message_size(MAX_BODY_BYTES),
    );
    let v3 = Authenticate::new(
        state.clone(),
        UserServiceV3AlphaServer::new(v3alpha::UsersV3Alpha::new(state.clone()))
            .max_decoding_message_size(MAX_BODY_BYTES),
    );
    let lockout = Authenticate::new(
        state.clone(),
        LockoutServiceServer::new(lockout::Lockout::new(state.clone()))
            .max_decoding_message_size(MAX_BODY_BYTES),
    );
    let events = Authenticate::new(
        state.clone(),
        EventServiceServer::new(events::Events::new(state))
            .max_decoding_message_size(MAX_BODY_BYTES),
    );
    let mut routes = Routes::new(v2)
        .add_service(v3)
        .add_service(lockout)
        .add_service(events)
        .add_service(health_service);
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET);
    match reflection.build_v1() {
        Ok(service) => routes = routes.add_service(service),
        Err(e) => tracing::warn!(error = %e, "gRPC reflection v1 not served"),
    }
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET);
    match reflection.build_v1alpha() {
        Ok(service) => routes = routes.add_service(service),
        Err(e) => tracing::warn!(error = %e, "gRPC reflection v1alpha not served"),
    }
    (routes.into_axum_router(), GrpcHealth { reporter })
}

/// One service for the port: gRPC and gRPC-web requests (by content type) and Connect calls
/// (by path) to the tonic services, everything else to `http` (the JSON API); and the gRPC
/// health statuses.
pub async fn with_grpc(http: Router, state: AppState) -> (ByContentType, GrpcHealth) {
    let metrics = state.metrics().clone();
    let (grpc, health) = grpc_router(state.clone()).await;
    let connect = connect::Connect::new(grpc.clone(), state);
    (ByContentType::new(http, grpc, connect, metrics), health)
}
