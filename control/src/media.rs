//! The boundary between the control plane and the media plane.
//!
//! Control never imports the gateway: it defines what it needs from media
//! ([`MediaPlane`]) and the binary hands it the gateway, which implements it.
//! The other direction, facts from the media plane (a session started, a
//! track began), goes through [`crate::Facts`].

use crate::alarms::StreamCounters;
use crate::event::{LeaveReason, TrackKind};
use crate::names::{RoomName, StreamName};

/// One published stream's cumulative counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamSample {
    /// Its room.
    pub room: RoomName,
    /// The stream (its publisher's identity).
    pub stream: StreamName,
    /// Counters since it started.
    pub counters: StreamCounters,
}

/// What the control plane asks of the forwarding core.
#[async_trait::async_trait]
pub trait MediaPlane: Send + Sync + 'static {
    /// Closes every session of `identity` in `room` (publishing or playing),
    /// reporting `reason`. Returns how many were closed.
    async fn hang_up(&self, room: &RoomName, identity: &str, reason: LeaveReason) -> usize;
    /// Closes one session, reporting `reason`. `false` if there is none.
    async fn close_session(&self, session: &str, reason: LeaveReason) -> bool;
    /// Closes every session in `room`. Returns how many were closed.
    async fn close_room(&self, room: &RoomName) -> usize;
    /// Ends a call's media: closes `callee`'s sessions playing `caller`,
    /// and with `stop_caller` the publisher session of `caller` (reason
    /// [`LeaveReason::CallEnded`]). Returns how many were closed.
    async fn end_call(
        &self,
        room: &RoomName,
        caller: &StreamName,
        callee: &str,
        stop_caller: bool,
    ) -> usize;
    /// Stops (`muted`) or resumes forwarding one track of a stream. `false`
    /// if the stream has no such track.
    async fn mute(
        &self,
        room: &RoomName,
        stream: &StreamName,
        kind: TrackKind,
        muted: bool,
    ) -> bool;
    /// Counters of every published stream, for alarms and bitrates.
    async fn sample(&self) -> Vec<StreamSample>;
}
