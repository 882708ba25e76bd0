//! Compiles `vigil/v1/*.proto` with protox (a protobuf compiler in Rust), so
//! building Vigil needs no `protoc` on the machine, and writes the descriptor
//! set that gRPC server reflection serves.

use std::path::PathBuf;

use prost::Message;

const PROTOS: &[&str] = &[
    "vigil/v1/common.proto",
    "vigil/v1/rooms.proto",
    "vigil/v1/tokens.proto",
    "vigil/v1/events.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(PROTOS, ["."])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("vigil_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .build_transport(false)
        .codec_path("crate::codec::VigilCodec")
        .compile_fds(descriptors)?;
    Ok(())
}
