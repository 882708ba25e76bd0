//! Vigil's domain core: rooms, participants, tokens, events and alarms, in
//! plain Rust with no sockets, no HTTP and no gRPC.
//!
//! The WHIP/WHEP gateway and the gRPC control plane both speak in these
//! types, so a name that one layer accepts is a name every layer accepts.
//! Time is passed in (`now`) wherever it matters, so the rules are tested
//! with a fake clock. Panic policy: nothing here panics on user input.

pub mod alarm_log;
pub mod alarms;
pub mod bus;
pub mod camera;
mod core;
pub mod event;
pub mod grpc;
pub mod issued;
pub mod media;
mod names;
mod owner;
pub mod peers;
pub mod reload;
pub mod room;
pub mod stats;
pub mod store;
pub mod token;

pub use names::{InvalidName, RoomName, StreamName};

pub use core::{
    Admission, Auth, CallView, Control, ControlError, EndedCall, Facts, Inbox, NewToken,
    ParticipantView, RoomView, StreamStatsView, TrackView, WatchScope, channel,
};
pub use owner::RING_TIMEOUT;
