//! The protocol-level KurrentDB test server shared by the integration tests.

pub mod log;
pub mod proto;
pub mod server;
pub mod streams;
pub mod wire;
