//! What `vigil ctl` prints: each response and event as text or as JSON.
//!
//! Text is one line per item: a name, then `key=value` fields (free text
//! quoted), so it reads well and `grep`s well. JSON is the response message
//! with its `.proto` field names, every field present (unset optional ones
//! as `null`), 64-bit numbers as numbers, enums by their `.proto` names;
//! an event carries its kind as the key of its `oneof` field
//! (`{"id": 7, ..., "room_created": {}}`).

use serde_json::{Value, json};
use vigil_proto::v1 as pb;
use vigil_proto::v1::event::Kind;

/// `site-1 publishers=0 viewers=0 max_publishers=- ...`
pub fn room_line(room: &pb::Room) -> String {
    format!(
        "{} publishers={} viewers={} {} created={} incarnation={} bans={}",
        room.name,
        room.publishers,
        room.viewers,
        settings_text(room.limits, room.alarm_rules),
        utc(room.created_at_unix_ms),
        room.incarnation,
        bans_text(&room.bans),
    )
}

/// `max_publishers=… max_viewers=… stall_after_ms=… min_bitrate_bps=…
/// max_keyframe_interval_ms=…`, `-` for unset.
fn settings_text(limits: Option<pb::RoomLimits>, rules: Option<pb::AlarmRules>) -> String {
    let limits = limits.unwrap_or_default();
    let rules = rules.unwrap_or_default();
    format!(
        "max_publishers={} max_viewers={} stall_after_ms={} min_bitrate_bps={} \
         max_keyframe_interval_ms={}",
        or_dash(limits.max_publishers),
        or_dash(limits.max_viewers),
        or_dash(rules.stall_after_ms),
        or_dash(rules.min_bitrate_bps),
        or_dash(rules.max_keyframe_interval_ms),
    )
}

fn limits_json(limits: pb::RoomLimits) -> Value {
    json!({
        "max_publishers": limits.max_publishers,
        "max_viewers": limits.max_viewers,
    })
}

fn rules_json(rules: pb::AlarmRules) -> Value {
    json!({
        "stall_after_ms": rules.stall_after_ms,
        "min_bitrate_bps": rules.min_bitrate_bps,
        "max_keyframe_interval_ms": rules.max_keyframe_interval_ms,
    })
}

pub fn room_json(room: &pb::Room) -> Value {
    json!({
        "name": room.name,
        "limits": room.limits.map(limits_json),
        "alarm_rules": room.alarm_rules.map(rules_json),
        "created_at_unix_ms": room.created_at_unix_ms,
        "publishers": room.publishers,
        "viewers": room.viewers,
        "incarnation": room.incarnation,
        "bans": bans_json(&room.bans),
    })
}

/// One [`room_line`] per room.
pub fn rooms_text(response: &pb::ListRoomsResponse) -> String {
    lines(response.rooms.iter().map(room_line))
}

pub fn rooms_json(response: &pb::ListRoomsResponse) -> Value {
    json!({ "rooms": response.rooms.iter().map(room_json).collect::<Vec<_>>() })
}

pub fn deleted_text(room: &str, response: &pb::DeleteRoomResponse) -> String {
    format!(
        "deleted {room} sessions_closed={}",
        response.sessions_closed
    )
}

pub fn deleted_json(response: &pb::DeleteRoomResponse) -> Value {
    json!({ "sessions_closed": response.sessions_closed })
}

/// `cam-1 publishing=true viewers=2 bitrate_bps=... since=... tracks=video/H264,audio/opus(muted)`
pub fn participant_line(p: &pb::Participant) -> String {
    let mut line = format!(
        "{} publishing={} viewers={} bitrate_bps={} since={}",
        field(&p.identity),
        p.publishing,
        p.viewer_count,
        p.bitrate_bps,
        utc(p.connected_since_unix_ms),
    );
    if !p.tracks.is_empty() {
        let tracks: Vec<String> = p
            .tracks
            .iter()
            .map(|t| match t.muted {
                true => format!("{}(muted)", t.codec),
                false => t.codec.clone(),
            })
            .collect();
        line.push_str(&format!(" tracks={}", field(&tracks.join(","))));
    }
    if !p.watching.is_empty() {
        line.push_str(&format!(" watching={}", field(&p.watching.join(","))));
    }
    if p.camera {
        line.push_str(" camera=true");
    }
    if !p.active_alarms.is_empty() {
        let alarms: Vec<String> = p
            .active_alarms
            .iter()
            .map(|&a| enum_text::<pb::AlarmKind>(a))
            .collect();
        line.push_str(&format!(" alarms={}", alarms.join(",")));
    }
    line
}

pub fn participant_json(p: &pb::Participant) -> Value {
    let tracks: Vec<Value> = p
        .tracks
        .iter()
        .map(|t| {
            json!({
                "kind": enum_json::<pb::TrackKind>(t.kind),
                "codec": t.codec,
                "muted": t.muted,
            })
        })
        .collect();
    let alarms: Vec<Value> = p
        .active_alarms
        .iter()
        .map(|&a| enum_json::<pb::AlarmKind>(a))
        .collect();
    json!({
        "identity": p.identity,
        "publishing": p.publishing,
        "tracks": tracks,
        "viewer_count": p.viewer_count,
        "bitrate_bps": p.bitrate_bps,
        "connected_since_unix_ms": p.connected_since_unix_ms,
        "watching": p.watching,
        "active_alarms": alarms,
        "camera": p.camera,
    })
}

/// `gate state=live since=… url=rtsp://admin:***@10.0.0.7/s1 username=admin
/// has_password=true transport=tcp on_demand=false tracks=video/H264
/// detail="…"`; never a password (the server sends none).
pub fn camera_line(c: &pb::Camera) -> String {
    let tracks: Vec<String> = c
        .tracks
        .iter()
        .map(|t| match t.playable {
            true => t.codec.clone(),
            false => format!("{}(unplayable)", t.codec),
        })
        .collect();
    format!(
        "{} state={} since={} url={} username={} has_password={} transport={} on_demand={} \
         tracks={} detail={}",
        field(&c.identity),
        enum_text::<pb::CameraState>(c.state),
        utc(c.state_since_unix_ms),
        field(&c.url),
        or_dash_str(&c.username),
        c.has_password,
        enum_text::<pb::CameraTransport>(c.transport),
        c.on_demand,
        or_dash_str(&tracks.join(",")),
        field(&c.state_detail),
    )
}

pub fn camera_json(c: &pb::Camera) -> Value {
    json!({
        "room": c.room,
        "identity": c.identity,
        "url": c.url,
        "username": c.username,
        "has_password": c.has_password,
        "transport": enum_json::<pb::CameraTransport>(c.transport),
        "on_demand": c.on_demand,
        "state": enum_json::<pb::CameraState>(c.state),
        "state_detail": c.state_detail,
        "state_since_unix_ms": c.state_since_unix_ms,
        "tracks": c.tracks.iter().map(|t| json!({
            "kind": enum_json::<pb::TrackKind>(t.kind),
            "codec": t.codec,
            "playable": t.playable,
        })).collect::<Vec<_>>(),
    })
}

/// One [`camera_line`] per camera.
pub fn cameras_text(response: &pb::ListCamerasResponse) -> String {
    lines(response.cameras.iter().map(camera_line))
}

pub fn cameras_json(response: &pb::ListCamerasResponse) -> Value {
    json!({ "cameras": response.cameras.iter().map(camera_json).collect::<Vec<_>>() })
}

pub fn camera_removed_text(room: &str, identity: &str) -> String {
    format!("removed camera {identity} from {room}")
}

/// One [`participant_line`] per participant.
pub fn participants_text(response: &pb::ListParticipantsResponse) -> String {
    lines(response.participants.iter().map(participant_line))
}

pub fn participants_json(response: &pb::ListParticipantsResponse) -> Value {
    json!({
        "participants": response.participants.iter().map(participant_json).collect::<Vec<_>>()
    })
}

/// The stream's line (`STREAM viewers=… window_ms=… poor_link=…`), then
/// one line per track (`track KIND codec=… bitrate_bps=…`) and per
/// viewer track (`viewer IDENTITY KIND fraction_lost=… rtt_ms=…`).
pub fn stream_stats_text(s: &pb::StreamStats) -> String {
    let mut text = format!(
        "{} viewers={} window_ms={} poor_link={} sampled={}\n",
        field(&s.stream),
        s.viewer_count,
        s.window_ms,
        s.poor_link,
        or_dash((s.sampled_at_unix_ms > 0).then(|| utc(s.sampled_at_unix_ms))),
    );
    for t in &s.tracks {
        text.push_str(&format!(
            "track {} codec={} bitrate_bps={} packets_per_s={:.1} fps={:.1} size={}x{} loss={:.3} \
             packets_lost={} packets_late={} jitter_ms={:.1} nacks={} plis={}\n",
            enum_text::<pb::TrackKind>(t.kind),
            field(&t.codec),
            t.bitrate_bps,
            t.packets_per_second,
            t.frames_per_second,
            t.width,
            t.height,
            t.loss,
            t.packets_lost,
            t.packets_late,
            t.jitter_ms,
            t.nack_count,
            t.pli_count,
        ));
    }
    for v in &s.viewers {
        for t in &v.tracks {
            text.push_str(&format!(
                "viewer {} {} bitrate_bps={} packets_per_s={:.1} fraction_lost={:.3} \
                 packets_lost={} jitter_ms={:.1} rtt_ms={} nacks={} plis={}\n",
                field(&v.identity),
                enum_text::<pb::TrackKind>(t.kind),
                t.bitrate_bps,
                t.packets_per_second,
                t.fraction_lost,
                t.packets_lost,
                t.jitter_ms,
                or_dash(t.rtt_ms.map(|ms| format!("{ms:.1}"))),
                t.nack_count,
                t.pli_count,
            ));
        }
    }
    text.truncate(text.trim_end().len());
    text
}

pub fn stream_stats_json(s: &pb::StreamStats) -> Value {
    let tracks: Vec<Value> = s
        .tracks
        .iter()
        .map(|t| {
            json!({
                "kind": enum_json::<pb::TrackKind>(t.kind),
                "codec": t.codec,
                "bitrate_bps": t.bitrate_bps,
                "packets_per_second": t.packets_per_second,
                "frames_per_second": t.frames_per_second,
                "width": t.width,
                "height": t.height,
                "packets_received": t.packets_received,
                "packets_lost": t.packets_lost,
                "packets_late": t.packets_late,
                "loss": t.loss,
                "jitter_ms": t.jitter_ms,
                "nack_count": t.nack_count,
                "pli_count": t.pli_count,
            })
        })
        .collect();
    let viewers: Vec<Value> = s
        .viewers
        .iter()
        .map(|v| {
            let tracks: Vec<Value> = v
                .tracks
                .iter()
                .map(|t| {
                    json!({
                        "kind": enum_json::<pb::TrackKind>(t.kind),
                        "bitrate_bps": t.bitrate_bps,
                        "packets_per_second": t.packets_per_second,
                        "fraction_lost": t.fraction_lost,
                        "packets_lost": t.packets_lost,
                        "jitter_ms": t.jitter_ms,
                        "rtt_ms": t.rtt_ms,
                        "nack_count": t.nack_count,
                        "pli_count": t.pli_count,
                    })
                })
                .collect();
            json!({ "identity": v.identity, "tracks": tracks })
        })
        .collect();
    json!({
        "room": s.room,
        "stream": s.stream,
        "viewer_count": s.viewer_count,
        "window_ms": s.window_ms,
        "sampled_at_unix_ms": s.sampled_at_unix_ms,
        "poor_link": s.poor_link,
        "tracks": tracks,
        "viewers": viewers,
    })
}

/// One line per alarm: `#ID KIND STREAM raised=… cleared=… acknowledged=BY@… detail=…`.
pub fn alarms_text(alarms: &[pb::Alarm]) -> String {
    alarms
        .iter()
        .map(|a| {
            let cleared = a.cleared_at_unix_ms.map_or("active".to_owned(), utc);
            let acknowledged = a
                .acknowledged
                .as_ref()
                .map_or("no".to_owned(), |ack| {
                    format!("{}@{}", field(&ack.by), utc(ack.at_unix_ms))
                });
            format!(
                "#{} {} stream={} raised={} cleared={cleared} acknowledged={acknowledged} detail={}\n",
                a.id,
                enum_text::<pb::AlarmKind>(a.kind),
                field(&a.stream),
                utc(a.raised_at_unix_ms),
                field(&a.detail),
            )
        })
        .collect()
}

pub fn alarms_json(alarms: &[pb::Alarm]) -> Value {
    let alarms: Vec<Value> = alarms
        .iter()
        .map(|a| {
            json!({
                "id": a.id,
                "kind": enum_json::<pb::AlarmKind>(a.kind),
                "stream": a.stream,
                "identity": a.identity,
                "detail": a.detail,
                "raised_at_unix_ms": a.raised_at_unix_ms,
                "cleared_at_unix_ms": a.cleared_at_unix_ms,
                "acknowledged": a.acknowledged.as_ref().map(|ack| json!({
                    "by": ack.by,
                    "at_unix_ms": ack.at_unix_ms,
                })),
            })
        })
        .collect();
    json!({ "alarms": alarms })
}

pub fn hung_up_text(room: &str, identity: &str, response: &pb::HangUpResponse) -> String {
    format!(
        "hung up {} in {room} sessions_closed={}",
        field(identity),
        response.sessions_closed
    )
}

pub fn hung_up_json(response: &pb::HangUpResponse) -> Value {
    json!({ "sessions_closed": response.sessions_closed })
}

pub fn unbanned_text(room: &str, identity: &str, response: &pb::LiftBanResponse) -> String {
    if response.lifted {
        format!("lifted the ban on {} in {room}", field(identity))
    } else {
        format!("{} was not banned in {room}", field(identity))
    }
}

pub fn unbanned_json(response: &pb::LiftBanResponse) -> Value {
    json!({ "lifted": response.lifted })
}

pub fn muted_text(room: &str, identity: &str, kind: pb::TrackKind, muted: bool) -> String {
    let verb = if muted { "muted" } else { "unmuted" };
    let kind = enum_text::<pb::TrackKind>(kind.into());
    format!("{verb} {kind} of {} in {room}", field(identity))
}

pub fn called_text(callee: &str, response: &pb::CallResponse) -> String {
    format!(
        "called {} call_id={} whep_path={}",
        field(callee),
        response.call_id,
        response.whep_path
    )
}

pub fn called_json(response: &pb::CallResponse) -> Value {
    json!({ "call_id": response.call_id, "whep_path": response.whep_path })
}

pub fn call_ended_text(room: &str, callee: &str, response: &pb::EndCallResponse) -> String {
    format!(
        "ended the call of {} in {room} sessions_closed={}",
        field(callee),
        response.sessions_closed
    )
}

pub fn call_ended_json(response: &pb::EndCallResponse) -> Value {
    json!({ "sessions_closed": response.sessions_closed })
}

/// What accompanies a token on stderr: when it expires, where it publishes.
pub fn token_note(response: &pb::CreateTokenResponse) -> String {
    format!(
        "token_id={} expires={} whip_path={}",
        field(&response.token_id),
        utc(response.expires_at_unix.saturating_mul(1000)),
        response.whip_path
    )
}

pub fn token_json(response: &pb::CreateTokenResponse) -> Value {
    json!({
        "token": response.token,
        "expires_at_unix": response.expires_at_unix,
        "whip_path": response.whip_path,
        "token_id": response.token_id,
    })
}

/// `revoked token ID in ROOM sessions_closed=N`, or `revoked every token
/// of ROOM …` without an id.
pub fn revoked_text(room: &str, token_id: Option<&str>, sessions_closed: u32) -> String {
    match token_id {
        Some(id) => format!(
            "revoked token {} in {room} sessions_closed={sessions_closed}",
            field(id)
        ),
        None => format!("revoked every token of {room} sessions_closed={sessions_closed}"),
    }
}

pub fn revoked_json(sessions_closed: u32) -> Value {
    json!({ "sessions_closed": sessions_closed })
}

/// `#7 2025-06-01T10:00:00.123Z site-1 cam-1 participant_joined role=publisher stream=cam-1`
/// (`-` for an event about no one in particular).
pub fn event_line(event: &pb::Event) -> String {
    let (kind, details) = match &event.kind {
        Some(kind) => (kind_name(kind), kind_text(kind)),
        None => ("unknown", String::new()),
    };
    let mut line = format!(
        "#{} {} {} {} {kind}",
        event.id,
        utc(event.at_unix_ms),
        or_dash_str(&event.room),
        or_dash_str(&event.identity),
    );
    if !details.is_empty() {
        line.push(' ');
        line.push_str(&details);
    }
    line
}

pub fn event_json(event: &pb::Event) -> Value {
    let mut value = json!({
        "id": event.id,
        "at_unix_ms": event.at_unix_ms,
        "room": event.room,
        "identity": event.identity,
    });
    // An event kind newer than this build has no key: the fields above remain.
    if let (Some(kind), Value::Object(object)) = (&event.kind, &mut value) {
        object.insert(kind_name(kind).to_owned(), kind_json(kind));
    }
    value
}

/// The `oneof` field's name in `events.proto`.
fn kind_name(kind: &Kind) -> &'static str {
    match kind {
        Kind::RoomCreated(_) => "room_created",
        Kind::RoomDeleted(_) => "room_deleted",
        Kind::RoomUpdated(_) => "room_updated",
        Kind::ParticipantJoined(_) => "participant_joined",
        Kind::ParticipantLeft(_) => "participant_left",
        Kind::TrackPublished(_) => "track_published",
        Kind::TrackUnpublished(_) => "track_unpublished",
        Kind::TrackMuted(_) => "track_muted",
        Kind::CallRequested(_) => "call_requested",
        Kind::CallConnected(_) => "call_connected",
        Kind::CallEnded(_) => "call_ended",
        Kind::AlarmRaised(_) => "alarm_raised",
        Kind::AlarmCleared(_) => "alarm_cleared",
        Kind::AlarmAcknowledged(_) => "alarm_acknowledged",
        Kind::TokensRevoked(_) => "tokens_revoked",
        Kind::BansChanged(_) => "bans_changed",
        Kind::HistoryGap(_) => "history_gap",
        Kind::CameraStateChanged(_) => "camera_state_changed",
        Kind::CameraRemoved(_) => "camera_removed",
    }
}

fn kind_text(kind: &Kind) -> String {
    match kind {
        Kind::RoomCreated(_) | Kind::RoomDeleted(_) => String::new(),
        Kind::RoomUpdated(e) => settings_text(e.limits, e.alarm_rules),
        Kind::ParticipantJoined(e) => format!(
            "role={} stream={}{}",
            enum_text::<pb::SessionRole>(e.role),
            field(&e.stream),
            if e.dispatcher { " dispatcher=true" } else { "" }
        ),
        Kind::ParticipantLeft(e) => format!(
            "role={} stream={} reason={}",
            enum_text::<pb::SessionRole>(e.role),
            field(&e.stream),
            enum_text::<pb::LeaveReason>(e.reason)
        ),
        Kind::TrackPublished(e) => format!(
            "kind={} codec={}",
            enum_text::<pb::TrackKind>(e.kind),
            field(&e.codec)
        ),
        Kind::TrackUnpublished(e) => format!("kind={}", enum_text::<pb::TrackKind>(e.kind)),
        Kind::TrackMuted(e) => format!(
            "kind={} muted={}",
            enum_text::<pb::TrackKind>(e.kind),
            e.muted
        ),
        Kind::CallRequested(e) => format!(
            "call_id={} caller={} callee={} whep_path={}",
            field(&e.call_id),
            field(&e.caller),
            field(&e.callee),
            field(&e.whep_path)
        ),
        Kind::CallConnected(e) => format!(
            "call_id={} caller={} callee={}",
            field(&e.call_id),
            field(&e.caller),
            field(&e.callee)
        ),
        Kind::CallEnded(e) => format!(
            "call_id={} caller={} callee={} reason={}",
            field(&e.call_id),
            field(&e.caller),
            field(&e.callee),
            enum_text::<pb::CallEndReason>(e.reason)
        ),
        Kind::AlarmRaised(e) => format!(
            "alarm={} stream={} detail={}",
            enum_text::<pb::AlarmKind>(e.kind),
            field(&e.stream),
            field(&e.detail)
        ),
        Kind::AlarmCleared(e) => format!(
            "alarm={} stream={} alarm_id={}",
            enum_text::<pb::AlarmKind>(e.kind),
            field(&e.stream),
            e.alarm_id
        ),
        Kind::AlarmAcknowledged(e) => format!(
            "alarm={} stream={} alarm_id={} by={}",
            enum_text::<pb::AlarmKind>(e.kind),
            field(&e.stream),
            e.alarm_id,
            field(&e.by)
        ),
        // Every token of the room, or one.
        Kind::TokensRevoked(e) if e.token_id.is_empty() => "all=true".into(),
        Kind::TokensRevoked(e) => format!("token_id={}", field(&e.token_id)),
        Kind::BansChanged(e) => format!("bans={}", bans_text(&e.bans)),
        Kind::HistoryGap(e) => format!("oldest_retained_id={}", e.oldest_retained_id),
        Kind::CameraStateChanged(e) => format!(
            "state={} detail={}",
            enum_text::<pb::CameraState>(e.state),
            field(&e.detail)
        ),
        Kind::CameraRemoved(_) => String::new(),
    }
}

fn kind_json(kind: &Kind) -> Value {
    match kind {
        Kind::RoomCreated(_) | Kind::RoomDeleted(_) => json!({}),
        Kind::RoomUpdated(e) => json!({
            "limits": e.limits.map(limits_json),
            "alarm_rules": e.alarm_rules.map(rules_json),
        }),
        Kind::ParticipantJoined(e) => json!({
            "role": enum_json::<pb::SessionRole>(e.role),
            "stream": e.stream,
            "dispatcher": e.dispatcher,
        }),
        Kind::ParticipantLeft(e) => json!({
            "role": enum_json::<pb::SessionRole>(e.role),
            "stream": e.stream,
            "reason": enum_json::<pb::LeaveReason>(e.reason),
        }),
        Kind::TrackPublished(e) => json!({
            "kind": enum_json::<pb::TrackKind>(e.kind),
            "codec": e.codec,
        }),
        Kind::TrackUnpublished(e) => json!({ "kind": enum_json::<pb::TrackKind>(e.kind) }),
        Kind::TrackMuted(e) => json!({
            "kind": enum_json::<pb::TrackKind>(e.kind),
            "muted": e.muted,
        }),
        Kind::CallRequested(e) => json!({
            "call_id": e.call_id,
            "caller": e.caller,
            "callee": e.callee,
            "whep_path": e.whep_path,
        }),
        Kind::CallConnected(e) => json!({
            "call_id": e.call_id,
            "caller": e.caller,
            "callee": e.callee,
        }),
        Kind::CallEnded(e) => json!({
            "call_id": e.call_id,
            "caller": e.caller,
            "callee": e.callee,
            "reason": enum_json::<pb::CallEndReason>(e.reason),
        }),
        Kind::AlarmRaised(e) => json!({
            "kind": enum_json::<pb::AlarmKind>(e.kind),
            "stream": e.stream,
            "detail": e.detail,
        }),
        Kind::AlarmCleared(e) => json!({
            "kind": enum_json::<pb::AlarmKind>(e.kind),
            "stream": e.stream,
            "alarm_id": e.alarm_id,
        }),
        Kind::AlarmAcknowledged(e) => json!({
            "alarm_id": e.alarm_id,
            "kind": enum_json::<pb::AlarmKind>(e.kind),
            "stream": e.stream,
            "by": e.by,
        }),
        Kind::TokensRevoked(e) => json!({ "token_id": e.token_id }),
        Kind::BansChanged(e) => json!({ "bans": bans_json(&e.bans) }),
        Kind::HistoryGap(e) => json!({ "oldest_retained_id": e.oldest_retained_id }),
        Kind::CameraStateChanged(e) => json!({
            "state": enum_json::<pb::CameraState>(e.state),
            "detail": e.detail,
            "tracks": e.tracks.iter().map(|t| json!({
                "kind": enum_json::<pb::TrackKind>(t.kind),
                "codec": t.codec,
                "playable": t.playable,
            })).collect::<Vec<_>>(),
        }),
        Kind::CameraRemoved(_) => json!({}),
    }
}

/// `field-1@2026-11-28T13:00:00.000Z,cam-2@…`, or `-` for none.
fn bans_text(bans: &[pb::Ban]) -> String {
    if bans.is_empty() {
        return "-".into();
    }
    bans.iter()
        .map(|b| format!("{}@{}", field(&b.identity), utc(b.until_unix_ms)))
        .collect::<Vec<_>>()
        .join(",")
}

fn bans_json(bans: &[pb::Ban]) -> Vec<Value> {
    bans.iter()
        .map(|b| json!({ "identity": b.identity, "until_unix_ms": b.until_unix_ms }))
        .collect()
}

/// A `.proto` enum as `vigil ctl` names it.
trait ProtoEnum: TryFrom<i32> {
    /// What every value's `.proto` name starts with (`TRACK_KIND_`).
    const PREFIX: &'static str;
    /// The value's `.proto` name (`TRACK_KIND_VIDEO`).
    fn proto_name(&self) -> &'static str;
}

macro_rules! proto_enum {
    ($($ty:ty => $prefix:literal),* $(,)?) => {$(
        impl ProtoEnum for $ty {
            const PREFIX: &'static str = $prefix;
            fn proto_name(&self) -> &'static str {
                self.as_str_name()
            }
        }
    )*};
}

proto_enum!(
    pb::TrackKind => "TRACK_KIND_",
    pb::CameraState => "CAMERA_STATE_",
    pb::CameraTransport => "CAMERA_TRANSPORT_",
    pb::SessionRole => "SESSION_ROLE_",
    pb::LeaveReason => "LEAVE_REASON_",
    pb::AlarmKind => "ALARM_KIND_",
    pb::CallEndReason => "CALL_END_REASON_",
);

/// `TRACK_KIND_VIDEO`; the number for a value newer than this build.
fn enum_json<E: ProtoEnum>(value: i32) -> Value {
    match E::try_from(value) {
        Ok(known) => Value::from(known.proto_name()),
        Err(_) => Value::from(value),
    }
}

/// `video`; the number for a value newer than this build.
fn enum_text<E: ProtoEnum>(value: i32) -> String {
    match E::try_from(value) {
        Ok(known) => {
            let name = known.proto_name();
            name.strip_prefix(E::PREFIX)
                .unwrap_or(name)
                .to_ascii_lowercase()
        }
        Err(_) => value.to_string(),
    }
}

/// A value in a text line: as is when it is one plain word, quoted (Rust
/// string syntax) when it is empty or has spaces, quotes or `=`.
fn field(value: &str) -> String {
    let plain = !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_graphic() && c != '"' && c != '=');
    if plain {
        value.to_owned()
    } else {
        format!("{value:?}")
    }
}

fn or_dash(value: Option<impl std::fmt::Display>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

fn or_dash_str(value: &str) -> String {
    if value.is_empty() {
        "-".to_owned()
    } else {
        field(value)
    }
}

fn lines(items: impl Iterator<Item = String>) -> String {
    items.collect::<Vec<_>>().join("\n")
}

/// Milliseconds since the Unix epoch as RFC 3339 UTC,
/// `2025-06-01T10:00:00.123Z`.
pub fn utc(unix_ms: i64) -> String {
    let secs = unix_ms.div_euclid(1000);
    let millis = unix_ms.rem_euclid(1000);
    let (days, in_day) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        in_day / 3600,
        in_day % 3600 / 60,
        in_day % 60
    )
}

/// The proleptic Gregorian date `days` after 1970-01-01: Howard Hinnant's
/// `civil_from_days` (chrono-compatible date algorithms), in eras of 400 years.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    // Months counted from March, so the leap day ends the year.
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    // Both are in range by construction: day 1..=31, month 1..=12.
    (year, month as u32, day as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(utc(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(utc(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(utc(-1), "1969-12-31T23:59:59.999Z");
        assert_eq!(utc(4_107_542_400_000), "2100-03-01T00:00:00.000Z");
    }

    #[test]
    fn enums_by_name_or_number() {
        let video = i32::from(pb::TrackKind::Video);
        assert_eq!(enum_text::<pb::TrackKind>(video), "video");
        assert_eq!(enum_json::<pb::TrackKind>(video), json!("TRACK_KIND_VIDEO"));
        let hung_up = i32::from(pb::LeaveReason::HungUp);
        assert_eq!(enum_text::<pb::LeaveReason>(hung_up), "hung_up");
        assert_eq!(enum_text::<pb::AlarmKind>(99), "99");
        assert_eq!(enum_json::<pb::AlarmKind>(99), json!(99));
    }

    #[test]
    fn events_as_text_and_json() {
        let event = pb::Event {
            id: 7,
            at_unix_ms: 1_700_000_000_123,
            room: "site-1".into(),
            identity: "cam-1".into(),
            kind: Some(Kind::AlarmRaised(pb::AlarmRaised {
                kind: pb::AlarmKind::Stalled.into(),
                stream: "cam-1".into(),
                detail: "no media for 3 s".into(),
            })),
        };
        assert_eq!(
            event_line(&event),
            "#7 2023-11-14T22:13:20.123Z site-1 cam-1 alarm_raised \
             alarm=stalled stream=cam-1 detail=\"no media for 3 s\""
        );
        assert_eq!(
            event_json(&event),
            json!({
                "id": 7,
                "at_unix_ms": 1_700_000_000_123_i64,
                "room": "site-1",
                "identity": "cam-1",
                "alarm_raised": {
                    "kind": "ALARM_KIND_STALLED",
                    "stream": "cam-1",
                    "detail": "no media for 3 s",
                },
            })
        );
        let created = pb::Event {
            id: 1,
            at_unix_ms: 0,
            room: "site-1".into(),
            identity: String::new(),
            kind: Some(Kind::RoomCreated(pb::RoomCreated {})),
        };
        assert_eq!(
            event_line(&created),
            "#1 1970-01-01T00:00:00.000Z site-1 - room_created"
        );
    }

    #[test]
    fn cameras_as_text_and_json() {
        let camera = pb::Camera {
            room: "site-1".into(),
            identity: "gate".into(),
            url: "rtsp://admin:***@10.0.0.7/s1".into(),
            username: "admin".into(),
            has_password: true,
            transport: pb::CameraTransport::Tcp.into(),
            on_demand: false,
            state: pb::CameraState::Unreachable.into(),
            state_detail: "connection refused".into(),
            state_since_unix_ms: 0,
            tracks: vec![pb::CameraTrack {
                kind: pb::TrackKind::Audio.into(),
                codec: "audio/MPEG4-GENERIC".into(),
                playable: false,
            }],
        };
        assert_eq!(
            camera_line(&camera),
            "gate state=unreachable since=1970-01-01T00:00:00.000Z \
             url=rtsp://admin:***@10.0.0.7/s1 username=admin has_password=true transport=tcp \
             on_demand=false tracks=audio/MPEG4-GENERIC(unplayable) \
             detail=\"connection refused\""
        );
        let value = camera_json(&camera);
        assert_eq!(value["state"], json!("CAMERA_STATE_UNREACHABLE"));
        assert_eq!(value["transport"], json!("CAMERA_TRANSPORT_TCP"));
        assert_eq!(value["has_password"], json!(true));
        assert_eq!(value["tracks"][0]["playable"], json!(false));
    }

    #[test]
    fn rooms_show_unset_limits_as_dash_and_null() {
        let room = pb::Room {
            name: "site-1".into(),
            limits: Some(pb::RoomLimits {
                max_publishers: None,
                max_viewers: Some(5),
            }),
            alarm_rules: None,
            created_at_unix_ms: 0,
            publishers: 1,
            viewers: 2,
            incarnation: 42,
            bans: vec![pb::Ban {
                identity: "field-1".into(),
                until_unix_ms: 60_000,
            }],
        };
        assert_eq!(
            room_line(&room),
            "site-1 publishers=1 viewers=2 max_publishers=- max_viewers=5 stall_after_ms=- \
             min_bitrate_bps=- max_keyframe_interval_ms=- created=1970-01-01T00:00:00.000Z \
             incarnation=42 bans=field-1@1970-01-01T00:01:00.000Z"
        );
        let value = room_json(&room);
        assert_eq!(value["limits"]["max_publishers"], Value::Null);
        assert_eq!(value["limits"]["max_viewers"], json!(5));
        assert_eq!(value["alarm_rules"], Value::Null);
        assert_eq!(value["incarnation"], json!(42));
        assert_eq!(
            value["bans"],
            json!([{ "identity": "field-1", "until_unix_ms": 60_000 }])
        );
    }
}
