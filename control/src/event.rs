//! What happens in rooms, as events for the live feed.
//!
//! Events are JSON in a shared feed (a Redis stream, several nodes, several
//! versions during an upgrade): the serde names are a wire format, so a
//! field or variant is renamed only with a `#[serde(alias)]` for the old
//! name.

use serde::{Deserialize, Serialize};

use crate::alarms::AlarmKind;
use crate::camera::{CameraState, CameraTrack};
use crate::names::{RoomName, StreamName};
use crate::room::{AlarmRules, Limits};

/// What a WebRTC session does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionRole {
    /// Publishes its own stream (WHIP).
    Publisher,
    /// Plays a stream (WHEP).
    Viewer,
}

/// Audio or video.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrackKind {
    /// Audio.
    Audio,
    /// Video.
    Video,
}

/// Why a participant's session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaveReason {
    /// DELETE on the session, or the peer closed the connection.
    Left,
    /// An admin hung up.
    HungUp,
    /// ICE or consent failed, or the session never connected.
    TimedOut,
    /// The room was deleted.
    RoomClosed,
    /// The played stream's publisher left and did not come back.
    PublisherGone,
    /// The server shut down.
    ServerShutdown,
    /// A new session of the same identity took the stream over.
    Replaced,
    /// EndCall closed it: the callee's playback of the caller, or the
    /// caller's stream.
    CallEnded,
    /// A viewer connected when the room's connected viewers already filled
    /// its `max_viewers`.
    RoomFull,
    /// The node that hosted the session stopped heartbeating (it died or
    /// lost its network); another node of the deployment reported it.
    NodeLost,
}

/// Why a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallEndReason {
    /// EndCall.
    Ended,
    /// The callee stopped playing the caller, or left while it rang.
    CalleeLeft,
    /// The caller stopped publishing.
    CallerLeft,
    /// It rang for [`crate::RING_TIMEOUT`] without the callee playing.
    NotAnswered,
    /// The room was deleted.
    RoomClosed,
}

/// An alarm: one of a stream's, the room being full, or a camera offline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Alarm {
    /// A stream alarm.
    Stream(AlarmKind),
    /// A session was refused because the room is at its limit.
    RoomFull,
    /// A camera has not been live for the room's `stall_after` (its stream
    /// names the camera).
    CameraOffline,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A room was created.
    RoomCreated,
    /// A room was deleted.
    RoomDeleted,
    /// A room's settings changed (UpdateRoom); they are now these.
    RoomUpdated {
        /// Its limits.
        limits: Limits,
        /// Its alarm thresholds.
        alarms: AlarmRules,
    },
    /// A session started.
    ParticipantJoined {
        /// Publisher or viewer.
        role: SessionRole,
        /// The stream published or played.
        stream: StreamName,
        /// It joined with the room's admin grant (a dispatcher's wall).
        dispatcher: bool,
    },
    /// A session ended.
    ParticipantLeft {
        /// Publisher or viewer.
        role: SessionRole,
        /// The stream published or played.
        stream: StreamName,
        /// Why.
        reason: LeaveReason,
    },
    /// A publisher's track started.
    TrackPublished {
        /// Audio or video.
        kind: TrackKind,
        /// Mime type, e.g. `video/H264`.
        codec: String,
    },
    /// A publisher's track ended.
    TrackUnpublished {
        /// Audio or video.
        kind: TrackKind,
    },
    /// An admin muted or unmuted a track.
    TrackMuted {
        /// Audio or video.
        kind: TrackKind,
        /// Muted now?
        muted: bool,
    },
    /// A call rings: the callee is asked to play the caller's stream.
    CallRequested {
        /// The call.
        call_id: String,
        /// Whose stream to play.
        caller: String,
        /// Who should play it.
        callee: String,
        /// `/whep/{room}/{caller}`.
        whep_path: String,
    },
    /// The callee's player of the caller's stream connected.
    CallConnected {
        /// The call.
        call_id: String,
        /// Whose stream is played.
        caller: String,
        /// Who plays it.
        callee: String,
    },
    /// A call ended.
    CallEnded {
        /// The call.
        call_id: String,
        /// Whose stream was played.
        caller: String,
        /// Who played it.
        callee: String,
        /// Why.
        reason: CallEndReason,
    },
    /// An alarm began.
    AlarmRaised {
        /// Which.
        alarm: Alarm,
        /// The stream it concerns (none for room-wide alarms).
        stream: Option<StreamName>,
        /// A sentence for a person.
        detail: String,
    },
    /// An alarm ended.
    AlarmCleared {
        /// Which.
        alarm: Alarm,
        /// The stream it concerned.
        stream: Option<StreamName>,
        /// The id of the `AlarmRaised` event.
        alarm_id: u64,
    },
    /// Someone acknowledged an alarm (it stays active until its cause ends).
    AlarmAcknowledged {
        /// The id of the `AlarmRaised` event.
        alarm_id: u64,
        /// Which.
        alarm: Alarm,
        /// The stream it concerns.
        stream: Option<StreamName>,
        /// Who acknowledged it.
        by: String,
    },
    /// Who is kept out of the room changed (a ban, or one lifted): the bans
    /// in force, by identity, each with its end (ms since the Unix epoch).
    BansChanged {
        /// Identity and end of each ban in force.
        bans: Vec<(String, u64)>,
    },
    /// A camera's state, detail or tracks changed (the event's identity is
    /// the camera's).
    CameraStateChanged {
        /// Where it is now.
        state: CameraState,
        /// Why, for a person.
        detail: String,
        /// Its tracks as last described.
        tracks: Vec<CameraTrack>,
    },
    /// A camera was removed (RemoveCamera).
    CameraRemoved,
    /// Tokens of the room were revoked: one (about its identity), or every
    /// token issued for the room so far (room-wide).
    TokensRevoked {
        /// The revoked token's id; `None` for every token of the room.
        token_id: Option<String>,
    },
}

/// One event of the feed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Increasing id; resume after it.
    pub id: u64,
    /// When, milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
    /// The room.
    pub room: RoomName,
    /// The participant it is about, if any.
    pub identity: Option<String>,
    /// What happened.
    pub kind: EventKind,
}
