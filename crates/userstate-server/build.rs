//! Generates the gRPC services (server and client) from `proto/` with `protox`, a pure-Rust
//! protobuf compiler, so a fresh machine needs no `protoc`. Also writes the encoded file
//! descriptor set that server reflection serves.

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/zitadel/user/v2/user_service.proto",
        "proto/zitadel/user/v3alpha/user_service.proto",
        "proto/zitadel/v1/message.proto",
        "proto/userstate/lockout/v1/lockout_service.proto",
        "proto/userstate/events/v1/events_service.proto",
        "proto/google/rpc/status.proto",
    ];
    println!("cargo:rerun-if-changed=proto");
    let descriptors = protox::compile(files, ["proto"])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("userstate_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;
    tonic_build::configure()
        .build_client(true)
        .build_server(true)
        // A request that does not decode is InvalidArgument, not Internal (src/grpc/codec.rs).
        .codec_path("crate::grpc::codec::ProstCodec")
        .compile_fds(descriptors)?;
    Ok(())
}
