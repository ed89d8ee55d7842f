//! Generates the server side of the KurrentDB gRPC protocol for the protocol-level test server
//! under `tests/support`. The `.proto` files in `protos/` are copies of those shipped inside the
//! `kurrentdb` crate (checked identical by `tests/protos_match_client.rs`); they are compiled with
//! `protox`, a pure-Rust protobuf compiler, so a fresh machine needs no `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["protos/streams.proto", "protos/serverfeatures.proto"];
    for file in files.iter().chain(&[
        "protos/shared.proto",
        "protos/status.proto",
        "protos/code.proto",
    ]) {
        println!("cargo:rerun-if-changed={file}");
    }
    let descriptors = protox::compile(files, ["protos"])?;
    tonic_build::configure()
        .build_client(false)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
