//! The `vigil.v1` gRPC schema (`proto/vigil/v1/*.proto`) and its generated
//! code: messages, server traits and clients.
//!
//! The server, the admin tools, the tests and the web console share this one
//! definition; nothing else describes the control API.

pub mod codec;

/// Package `vigil.v1`.
pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("vigil.v1");

    /// The encoded `FileDescriptorSet` of the schema, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/vigil_descriptor.bin"));
}
