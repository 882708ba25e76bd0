//! Vigil's domain core: the plain-Rust model of rooms and streams, with no
//! sockets, no HTTP and no gRPC.
//!
//! The WHIP/WHEP gateway and (later) the gRPC control plane both speak in
//! these types, so a name that one layer accepts is a name every layer
//! accepts. Panic policy: nothing here panics on user input.

mod names;

pub use names::{InvalidName, RoomName, StreamName};
