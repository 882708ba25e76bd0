//! Conversions between the domain and the `vigil.v1` messages.

use std::time::Duration;

use vigil_proto::v1 as pb;

use crate::alarm_log::AlarmRecord;
use crate::alarms::AlarmKind;
use crate::camera::{
    CameraState, CameraTrack, CameraTransport, CameraUpdate, CameraView, NewCamera,
};
use crate::core::{ControlError, ParticipantView, RoomView, StreamStatsView};
use crate::event::{Alarm, CallEndReason, Event, EventKind, LeaveReason, SessionRole, TrackKind};
use crate::room::{AlarmRules, Limits, RoomUpdate};
use crate::token::Grants;

pub fn limits(limits: Option<pb::RoomLimits>) -> Limits {
    let limits = limits.unwrap_or_default();
    Limits {
        max_publishers: limits.max_publishers,
        max_viewers: limits.max_viewers,
    }
}

pub fn alarm_rules(rules: Option<pb::AlarmRules>) -> AlarmRules {
    let rules = rules.unwrap_or_default();
    let defaults = AlarmRules::default();
    AlarmRules {
        stall_after: rules
            .stall_after_ms
            .map_or(defaults.stall_after, |ms| Duration::from_millis(ms.into())),
        min_bitrate_bps: rules.min_bitrate_bps.unwrap_or(defaults.min_bitrate_bps),
        keyframe_wait: rules
            .max_keyframe_interval_ms
            .map_or(defaults.keyframe_wait, |ms| {
                Duration::from_millis(ms.into())
            }),
    }
}

/// What UpdateRoom changes: the fields present; `clear_*` removes a limit.
pub fn room_update(req: &pb::UpdateRoomRequest) -> Result<RoomUpdate, ControlError> {
    let limits = req.limits.unwrap_or_default();
    let rules = req.alarm_rules.unwrap_or_default();
    let limit = |set: Option<u32>, clear: bool, name: &str| match (set, clear) {
        (Some(_), true) => Err(ControlError::InvalidArgument(format!(
            "{name} is both set and cleared"
        ))),
        (set, true) => Ok(Some(set)),
        (Some(max), false) => Ok(Some(Some(max))),
        (None, false) => Ok(None),
    };
    let millis = |ms: Option<u32>| ms.map(|ms| Duration::from_millis(ms.into()));
    Ok(RoomUpdate {
        max_publishers: limit(
            limits.max_publishers,
            req.clear_max_publishers,
            "max_publishers",
        )?,
        max_viewers: limit(limits.max_viewers, req.clear_max_viewers, "max_viewers")?,
        stall_after: millis(rules.stall_after_ms),
        min_bitrate_bps: rules.min_bitrate_bps,
        keyframe_wait: millis(rules.max_keyframe_interval_ms),
    })
}

fn limits_pb(limits: Limits) -> pb::RoomLimits {
    pb::RoomLimits {
        max_publishers: limits.max_publishers,
        max_viewers: limits.max_viewers,
    }
}

/// The effective thresholds, every field set.
fn alarm_rules_pb(rules: AlarmRules) -> pb::AlarmRules {
    let millis = |d: Duration| d.as_millis().min(u32::MAX as u128) as u32;
    pb::AlarmRules {
        stall_after_ms: Some(millis(rules.stall_after)),
        min_bitrate_bps: Some(rules.min_bitrate_bps),
        max_keyframe_interval_ms: Some(millis(rules.keyframe_wait)),
    }
}

pub fn room(view: RoomView) -> pb::Room {
    pb::Room {
        name: view.spec.name.to_string(),
        limits: Some(limits_pb(view.spec.limits)),
        alarm_rules: Some(alarm_rules_pb(view.spec.alarms)),
        created_at_unix_ms: view.spec.created_at_ms as i64,
        publishers: view.publishers,
        viewers: view.viewers,
        incarnation: view.spec.incarnation,
        bans: bans(view.spec.bans_in_force(crate::core::unix_ms())),
    }
}

fn bans(bans: Vec<(String, u64)>) -> Vec<pb::Ban> {
    bans.into_iter()
        .map(|(identity, until_ms)| pb::Ban {
            identity,
            until_unix_ms: until_ms as i64,
        })
        .collect()
}

pub fn track_kind(kind: TrackKind) -> pb::TrackKind {
    match kind {
        TrackKind::Audio => pb::TrackKind::Audio,
        TrackKind::Video => pb::TrackKind::Video,
    }
}

pub fn track_kind_from(kind: i32) -> Result<TrackKind, ControlError> {
    match pb::TrackKind::try_from(kind) {
        Ok(pb::TrackKind::Audio) => Ok(TrackKind::Audio),
        Ok(pb::TrackKind::Video) => Ok(TrackKind::Video),
        _ => Err(ControlError::InvalidArgument(
            "kind must be TRACK_KIND_AUDIO or TRACK_KIND_VIDEO".into(),
        )),
    }
}

fn alarm_kind(alarm: Alarm) -> pb::AlarmKind {
    match alarm {
        Alarm::Stream(AlarmKind::Stalled) => pb::AlarmKind::Stalled,
        Alarm::Stream(AlarmKind::LowBitrate) => pb::AlarmKind::LowBitrate,
        Alarm::Stream(AlarmKind::KeyframeInterval) => pb::AlarmKind::KeyframeInterval,
        Alarm::RoomFull => pb::AlarmKind::RoomFull,
        Alarm::CameraOffline => pb::AlarmKind::CameraOffline,
    }
}

fn camera_transport_from(transport: i32) -> Result<CameraTransport, ControlError> {
    match pb::CameraTransport::try_from(transport) {
        Ok(pb::CameraTransport::Unspecified | pb::CameraTransport::Tcp) => Ok(CameraTransport::Tcp),
        Ok(pb::CameraTransport::Udp) => Ok(CameraTransport::Udp),
        Err(_) => Err(ControlError::InvalidArgument(format!(
            "transport {transport} is not a CameraTransport"
        ))),
    }
}

fn camera_transport(transport: CameraTransport) -> pb::CameraTransport {
    match transport {
        CameraTransport::Tcp => pb::CameraTransport::Tcp,
        CameraTransport::Udp => pb::CameraTransport::Udp,
    }
}

fn camera_state(state: CameraState) -> pb::CameraState {
    match state {
        CameraState::Idle => pb::CameraState::Idle,
        CameraState::Connecting => pb::CameraState::Connecting,
        CameraState::Live => pb::CameraState::Live,
        CameraState::Unreachable => pb::CameraState::Unreachable,
        CameraState::Unauthorised => pb::CameraState::Unauthorised,
        CameraState::UnsupportedCodec => pb::CameraState::UnsupportedCodec,
    }
}

fn camera_tracks(tracks: Vec<CameraTrack>) -> Vec<pb::CameraTrack> {
    tracks
        .into_iter()
        .map(|t| pb::CameraTrack {
            kind: track_kind(t.kind).into(),
            codec: t.codec,
            playable: t.playable,
        })
        .collect()
}

/// AddCamera's settings (its room and identity are checked by the domain).
pub fn new_camera(req: pb::AddCameraRequest) -> Result<NewCamera, ControlError> {
    Ok(NewCamera {
        transport: camera_transport_from(req.transport)?,
        url: req.url,
        username: req.username,
        password: req.password,
        on_demand: req.on_demand,
    })
}

/// What UpdateCamera changes: the fields present.
pub fn camera_update(req: pb::UpdateCameraRequest) -> Result<CameraUpdate, ControlError> {
    Ok(CameraUpdate {
        transport: req.transport.map(camera_transport_from).transpose()?,
        url: req.url,
        username: req.username,
        password: req.password,
        on_demand: req.on_demand,
    })
}

/// A camera, without its password.
pub fn camera(view: CameraView) -> pb::Camera {
    pb::Camera {
        room: view.room.to_string(),
        identity: view.identity.to_string(),
        url: view.masked_url,
        username: view.username,
        has_password: view.has_password,
        transport: camera_transport(view.transport).into(),
        on_demand: view.on_demand,
        state: camera_state(view.status.state).into(),
        state_detail: view.status.detail,
        state_since_unix_ms: view.since_ms as i64,
        tracks: camera_tracks(view.status.tracks),
    }
}

pub fn stream_stats(view: StreamStatsView) -> pb::StreamStats {
    let mut out = pb::StreamStats {
        room: view.room.to_string(),
        stream: view.stream.to_string(),
        viewer_count: view.viewer_count,
        ..Default::default()
    };
    let Some(stats) = view.stats else {
        return out;
    };
    out.window_ms = stats.window.as_millis() as u32;
    let age = std::time::Instant::now().saturating_duration_since(stats.sampled_at);
    out.sampled_at_unix_ms = crate::core::unix_ms().saturating_sub(age.as_millis() as u64) as i64;
    out.poor_link = stats.poor_link;
    out.tracks = stats
        .tracks
        .into_iter()
        .map(|t| pb::TrackStats {
            kind: track_kind(t.kind).into(),
            codec: t.codec,
            bitrate_bps: t.bitrate_bps,
            packets_per_second: t.packets_per_second,
            frames_per_second: t.frames_per_second,
            width: t.width,
            height: t.height,
            packets_received: t.packets_received,
            packets_lost: t.packets_lost,
            packets_late: t.packets_late,
            loss: t.loss,
            jitter_ms: t.jitter_ms,
            nack_count: t.nacks,
            pli_count: t.plis,
        })
        .collect();
    out.viewers = stats
        .viewers
        .into_iter()
        .map(|v| pb::ViewerStats {
            identity: v.identity,
            tracks: v
                .tracks
                .into_iter()
                .map(|t| pb::ViewerTrackStats {
                    kind: track_kind(t.kind).into(),
                    bitrate_bps: t.bitrate_bps,
                    packets_per_second: t.packets_per_second,
                    fraction_lost: t.fraction_lost,
                    packets_lost: t.packets_lost,
                    jitter_ms: t.jitter_ms,
                    rtt_ms: t.rtt_ms,
                    nack_count: t.nacks,
                    pli_count: t.plis,
                })
                .collect(),
        })
        .collect();
    out
}

pub fn participant(view: ParticipantView) -> pb::Participant {
    pb::Participant {
        identity: view.identity,
        publishing: view.publishing,
        tracks: view
            .tracks
            .into_iter()
            .map(|t| pb::Track {
                kind: track_kind(t.kind).into(),
                codec: t.codec,
                muted: t.muted,
            })
            .collect(),
        viewer_count: view.viewer_count,
        bitrate_bps: view.bitrate_bps,
        connected_since_unix_ms: view.connected_since_unix_ms as i64,
        watching: view.watching.iter().map(ToString::to_string).collect(),
        active_alarms: view
            .active_alarms
            .into_iter()
            .map(|kind| alarm_kind(Alarm::Stream(kind)).into())
            .collect(),
        dispatcher: view.dispatcher,
        camera: view.camera,
    }
}

pub fn alarm(record: AlarmRecord) -> pb::Alarm {
    pb::Alarm {
        id: record.id,
        kind: alarm_kind(record.alarm).into(),
        stream: record.stream.map(|s| s.to_string()).unwrap_or_default(),
        identity: record.identity.unwrap_or_default(),
        detail: record.detail,
        raised_at_unix_ms: record.raised_at_ms as i64,
        cleared_at_unix_ms: record.cleared_at_ms.map(|ms| ms as i64),
        acknowledged: record.acknowledged.map(|ack| pb::AlarmAcknowledgement {
            by: ack.by,
            at_unix_ms: ack.at_ms as i64,
        }),
    }
}

pub fn grants(grants: Option<pb::Grants>) -> Grants {
    let grants = grants.unwrap_or_default();
    Grants {
        publish: grants.publish,
        subscribe: grants.subscribe,
        admin: grants.admin,
    }
}

fn role(role: SessionRole) -> i32 {
    match role {
        SessionRole::Publisher => pb::SessionRole::Publisher,
        SessionRole::Viewer => pb::SessionRole::Viewer,
    }
    .into()
}

fn leave_reason(reason: LeaveReason) -> i32 {
    match reason {
        LeaveReason::Left => pb::LeaveReason::Left,
        LeaveReason::HungUp => pb::LeaveReason::HungUp,
        LeaveReason::TimedOut => pb::LeaveReason::TimedOut,
        LeaveReason::RoomClosed => pb::LeaveReason::RoomClosed,
        LeaveReason::PublisherGone => pb::LeaveReason::PublisherGone,
        LeaveReason::ServerShutdown => pb::LeaveReason::ServerShutdown,
        LeaveReason::Replaced => pb::LeaveReason::Replaced,
        LeaveReason::CallEnded => pb::LeaveReason::CallEnded,
        LeaveReason::RoomFull => pb::LeaveReason::RoomFull,
        LeaveReason::NodeLost => pb::LeaveReason::NodeLost,
    }
    .into()
}

fn call_end_reason(reason: CallEndReason) -> i32 {
    match reason {
        CallEndReason::Ended => pb::CallEndReason::Ended,
        CallEndReason::CalleeLeft => pb::CallEndReason::CalleeLeft,
        CallEndReason::CallerLeft => pb::CallEndReason::CallerLeft,
        CallEndReason::NotAnswered => pb::CallEndReason::NotAnswered,
        CallEndReason::RoomClosed => pb::CallEndReason::RoomClosed,
    }
    .into()
}

pub fn event(event: Event) -> pb::Event {
    use pb::event::Kind;
    let kind = match event.kind {
        EventKind::RoomCreated => Kind::RoomCreated(pb::RoomCreated {}),
        EventKind::RoomDeleted => Kind::RoomDeleted(pb::RoomDeleted {}),
        EventKind::RoomUpdated { limits, alarms } => Kind::RoomUpdated(pb::RoomUpdated {
            limits: Some(limits_pb(limits)),
            alarm_rules: Some(alarm_rules_pb(alarms)),
        }),
        EventKind::ParticipantJoined {
            role: r,
            stream,
            dispatcher,
        } => Kind::ParticipantJoined(pb::ParticipantJoined {
            role: role(r),
            stream: stream.to_string(),
            dispatcher,
        }),
        EventKind::ParticipantLeft {
            role: r,
            stream,
            reason,
        } => Kind::ParticipantLeft(pb::ParticipantLeft {
            role: role(r),
            stream: stream.to_string(),
            reason: leave_reason(reason),
        }),
        EventKind::TrackPublished { kind, codec } => Kind::TrackPublished(pb::TrackPublished {
            kind: track_kind(kind).into(),
            codec,
        }),
        EventKind::TrackUnpublished { kind } => Kind::TrackUnpublished(pb::TrackUnpublished {
            kind: track_kind(kind).into(),
        }),
        EventKind::TrackMuted { kind, muted } => Kind::TrackMuted(pb::TrackMuted {
            kind: track_kind(kind).into(),
            muted,
        }),
        EventKind::CallRequested {
            call_id,
            caller,
            callee,
            whep_path,
        } => Kind::CallRequested(pb::CallRequested {
            caller,
            callee,
            whep_path,
            call_id,
        }),
        EventKind::CallConnected {
            call_id,
            caller,
            callee,
        } => Kind::CallConnected(pb::CallConnected {
            call_id,
            caller,
            callee,
        }),
        EventKind::CallEnded {
            call_id,
            caller,
            callee,
            reason,
        } => Kind::CallEnded(pb::CallEnded {
            call_id,
            caller,
            callee,
            reason: call_end_reason(reason),
        }),
        EventKind::AlarmRaised {
            alarm,
            stream,
            detail,
        } => Kind::AlarmRaised(pb::AlarmRaised {
            kind: alarm_kind(alarm).into(),
            stream: stream.map(|s| s.to_string()).unwrap_or_default(),
            detail,
        }),
        EventKind::AlarmCleared {
            alarm,
            stream,
            alarm_id,
        } => Kind::AlarmCleared(pb::AlarmCleared {
            kind: alarm_kind(alarm).into(),
            stream: stream.map(|s| s.to_string()).unwrap_or_default(),
            alarm_id,
        }),
        EventKind::AlarmAcknowledged {
            alarm_id,
            alarm,
            stream,
            by,
        } => Kind::AlarmAcknowledged(pb::AlarmAcknowledged {
            alarm_id,
            kind: alarm_kind(alarm).into(),
            stream: stream.map(|s| s.to_string()).unwrap_or_default(),
            by,
        }),
        EventKind::BansChanged { bans: list } => {
            Kind::BansChanged(pb::BansChanged { bans: bans(list) })
        }
        EventKind::CameraStateChanged {
            state,
            detail,
            tracks,
        } => Kind::CameraStateChanged(pb::CameraStateChanged {
            state: camera_state(state).into(),
            detail,
            tracks: camera_tracks(tracks),
        }),
        EventKind::CameraRemoved => Kind::CameraRemoved(pb::CameraRemoved {}),
        EventKind::TokensRevoked { token_id } => Kind::TokensRevoked(pb::TokensRevoked {
            token_id: token_id.unwrap_or_default(),
        }),
    };
    pb::Event {
        id: event.id,
        at_unix_ms: event.at_unix_ms as i64,
        room: event.room.to_string(),
        identity: event.identity.unwrap_or_default(),
        kind: Some(kind),
    }
}

/// The feed's marker for events lost before `oldest` (still retained).
pub fn gap(oldest: u64) -> pb::Event {
    pb::Event {
        id: oldest.saturating_sub(1),
        kind: Some(pb::event::Kind::HistoryGap(pb::HistoryGap {
            oldest_retained_id: oldest,
        })),
        ..Default::default()
    }
}
