//! The `vigil.v1` gRPC schema lives in `proto/vigil/v1/*.proto` and its
//! generated code is exposed from here.
//!
//! The WHIP/WHEP gateway needs no schema: the control-plane services
//! (rooms, tokens, events) add their `.proto` files and the tonic/prost build
//! to this crate, so that the server, the admin tools and the web console
//! share one definition.
