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
    /// Each published track's reception, for the live statistics.
    pub tracks: Vec<TrackSample>,
    /// Each viewer session of the stream, for the live statistics.
    pub viewers: Vec<ViewerSample>,
}

/// What one published track's publisher sent us, cumulative since it
/// started (the stream statistics take rates from the difference of two).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackSample {
    /// Audio or video.
    pub kind: TrackKind,
    /// Its codec's mime type.
    pub codec: String,
    /// RTP packets received (media SSRCs only; duplicates count).
    pub packets: u64,
    /// Their payload bytes.
    pub bytes: u64,
    /// Packets expected from the sequence numbers (RFC 3550 A.3): lost
    /// (never came) is `expected - packets`.
    pub expected: u64,
    /// Packets that came after a higher sequence number: NACK repairs
    /// (`rtc` hands RTX repairs over on the media SSRC) and reordering.
    /// Lost on the way, before repair, is lost plus these.
    pub late: u64,
    /// Frames received (video: packets with the marker bit).
    pub frames: u64,
    /// Interarrival jitter (RFC 3550 A.8), microseconds.
    pub jitter_us: u64,
    /// Picture size of the last keyframe that carried it (video), or 0.
    pub width: u32,
    /// See `width`.
    pub height: u32,
}

/// One viewer session of a stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ViewerSample {
    /// Tells this session apart from the others of the same identity from
    /// one sample to the next (opaque; not the session's id, which is a
    /// capability).
    pub key: u64,
    /// Who plays it.
    pub identity: String,
    /// Its tracks (those it was sent something on).
    pub tracks: Vec<ViewerTrackSample>,
}

/// What one of a viewer's tracks was sent and what its reception reports
/// said, cumulative.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewerTrackSample {
    /// Audio or video.
    pub kind: TrackKind,
    /// RTP packets sent to it (repairs included).
    pub packets: u64,
    /// Their payload bytes.
    pub bytes: u64,
    /// Reception reports received about it.
    pub reports: u64,
    /// The last report's fraction lost, of 256 (since its previous report).
    pub fraction_lost: u8,
    /// The last report's cumulative packets lost.
    pub cumulative_lost: i64,
    /// The last report's jitter, microseconds.
    pub jitter_us: u64,
    /// Round trip from the last report that carried a sender report's
    /// time (RFC 3550 §6.4.1), microseconds; `None` before one did.
    pub rtt_us: Option<u64>,
    /// NACK packets it sent.
    pub nacks: u64,
    /// Keyframe requests (PLI, FIR) it sent.
    pub plis: u64,
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
    /// Starts pulling a camera, or pulls it again with new settings (its
    /// viewers stay and resume). The puller reports its states with
    /// [`crate::Facts::camera_status`]. Returns at once.
    fn start_camera(&self, spec: crate::camera::CameraSpec) {
        let _ = spec;
    }
    /// Stops pulling a camera and closes its viewers. Returns at once.
    fn stop_camera(&self, room: &RoomName, identity: &StreamName) {
        let _ = (room, identity);
    }
}
