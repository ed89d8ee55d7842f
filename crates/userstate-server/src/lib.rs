//! # userstate-server
//!
//! The HTTP/JSON front end of userstate: the routes of SPEC.md (v2 and v3alpha), bearer-token
//! authentication, the wire shapes (`details`, `google.rpc.Status` errors), operations endpoints
//! (`/healthz`, `/readyz`, `/metrics`, `/openapi.json`) and graceful shutdown.
//!
//! The layers, so a second front end (gRPC) can reuse everything but the HTTP glue:
//! - [`auth`]: the pluggable [`Authenticator`]: request credentials ->
//!   [`Principal`](userstate::Principal) (static token hashes, a [`Chain`], an embedder's own);
//! - [`jwt`]: JWT bearer tokens verified against a JWKS (file or URL);
//! - [`tokens`]: the tokens file (hashes only) and the first-start admin token;
//! - [`store_tokens`]: the tokens kept in the store (`userstate token …`), followed by every
//!   node; `admin`: the local admin socket that carries `token` commands to a running server;
//! - [`caller`]: the one caller extractor (headers or gRPC metadata -> principal + request meta);
//! - [`operations`]: the one operation table every front end is a skin over;
//! - [`service`]: request -> [`UserCommand`](userstate::UserCommand) -> engine -> typed answer, with
//!   read-your-writes; every front end calls it;
//! - [`status`]: the one error value every failure becomes, built from
//!   [`Classified`](userstate::Classified) (codes come from [`ErrorKind`](userstate::ErrorKind));
//! - [`feed`]: the event feed (SSE, gRPC and Connect streaming share it); [`delivery`]: webhook and
//!   NATS JetStream targets fed from it;
//! - [`wire`]: the JSON bodies; [`http`]: the axum router; [`grpc`]: the same service over gRPC,
//!   gRPC-web and Connect on the same port (by content type and path); [`metrics`]: Prometheus;
//!   [`server`]: binding, signals and shutdown; [`trace`]: W3C trace context on every request.
//!
//! It is not the place for business rules: those live in `userstate`'s domain and engine.

#![deny(missing_docs)]

#[cfg(unix)]
pub mod admin;
pub mod auth;
pub mod caller;
pub mod delivery;
pub mod feed;
pub mod grpc;
pub mod http;
pub mod jwt;
pub mod metrics;
pub mod openapi;
pub mod operations;
pub mod server;
pub mod service;
pub mod status;
pub mod store_tokens;
pub mod tokens;
pub mod trace;
pub mod wire;

pub use auth::{AuthError, Authenticator, Chain, Credentials, StaticTokens};
pub use caller::Caller;
pub use http::{router, AppState};
pub use server::{serve, shutdown_signal, ServeError, Server, ServerConfig};
pub use service::{RequestMeta, UserService};
pub use status::{ApiError, RequestError};
pub use store_tokens::StoreTokens;
