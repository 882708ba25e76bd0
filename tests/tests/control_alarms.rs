//! Alarms are pushed to the admin's feed soon after their cause and cleared
//! when it ends, and ListParticipants reports live media state.

use std::time::{Duration, Instant};

use tonic::transport::Channel;
use vigil_proto::v1 as pb;
use vigil_proto::v1::event::Kind;
use vigil_proto::v1::room_service_client::RoomServiceClient;
use vigil_tests::control::{
    ADMIN_KEY, Clients, Watcher, admin, clients, publish_and_subscribe, secure_server,
    subscribe_only, token,
};
use vigil_tests::peers::{Publisher, Viewer};
use vigil_tests::{base_url, eventually};

const ROOM: &str = "site-1";
const STALL_AFTER_MS: u32 = 1000;

async fn create_room_stalling_after(c: &mut Clients, stall_after_ms: u32) {
    c.rooms
        .create_room(admin(pb::CreateRoomRequest {
            name: ROOM.into(),
            alarm_rules: Some(pb::AlarmRules {
                stall_after_ms: Some(stall_after_ms),
                ..Default::default()
            }),
            ..Default::default()
        }))
        .await
        .expect("CreateRoom");
}

async fn participants(mut rooms: RoomServiceClient<Channel>) -> Vec<pb::Participant> {
    rooms
        .list_participants(admin(pb::ListParticipantsRequest { room: ROOM.into() }))
        .await
        .expect("ListParticipants")
        .into_inner()
        .participants
}

async fn participant(rooms: RoomServiceClient<Channel>, identity: &str) -> pb::Participant {
    participants(rooms)
        .await
        .into_iter()
        .find(|p| p.identity == identity)
        .unwrap_or_else(|| panic!("{identity} not listed"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stall_alarm_is_raised_within_two_seconds_and_cleared() {
    let vigil = secure_server(|_| {}).await;
    let base = base_url(&vigil);
    let mut c = clients(&vigil).await;
    create_room_stalling_after(&mut c, STALL_AFTER_MS).await;
    let field_token = token(&mut c, ROOM, "field-1", publish_and_subscribe()).await;
    let mut watcher = Watcher::start(
        &vigil,
        ADMIN_KEY,
        pb::WatchRequest {
            room: ROOM.into(),
            ..Default::default()
        },
    )
    .await;
    let mut publisher = Publisher::connect_as(&base, ROOM, "field-1", &field_token)
        .await
        .unwrap_or_else(|r| panic!("WHIP: {} {}", r.status, r.body));
    publisher.start_media();
    // The control plane has sampled media flowing.
    eventually(Duration::from_secs(10), "field-1's bitrate", || {
        let rooms = c.rooms.clone();
        async move { (participant(rooms, "field-1").await.bitrate_bps > 0).then_some(()) }
    })
    .await;

    publisher.stop_media();
    let stopped = Instant::now();
    let (raised, detail) = watcher
        .wait_for(
            Duration::from_secs(10),
            "AlarmRaised STALLED",
            |e| match &e.kind {
                Some(Kind::AlarmRaised(a)) if a.kind == pb::AlarmKind::Stalled as i32 => {
                    Some((e.clone(), a.clone()))
                }
                _ => None,
            },
        )
        .await;
    let delay = stopped.elapsed();
    eprintln!(
        "STALLED raised {delay:?} after media stopped (stall_after {STALL_AFTER_MS} ms): {:?}",
        detail.detail
    );
    assert_eq!(detail.stream, "field-1");
    assert_eq!(raised.identity, "field-1");
    let limit = Duration::from_millis(STALL_AFTER_MS.into()) + Duration::from_secs(2);
    assert!(
        delay <= limit,
        "the stall alarm came {delay:?} after its cause; the wall needs it within {limit:?}"
    );

    let listed = participant(c.rooms.clone(), "field-1").await;
    assert!(
        listed
            .active_alarms
            .contains(&(pb::AlarmKind::Stalled as i32)),
        "active_alarms while stalled: {:?}",
        listed.active_alarms
    );

    publisher.start_media();
    let resumed = Instant::now();
    let cleared = watcher
        .wait_for(
            Duration::from_secs(5),
            "AlarmCleared STALLED",
            |e| match &e.kind {
                Some(Kind::AlarmCleared(a)) if a.kind == pb::AlarmKind::Stalled as i32 => {
                    Some(a.clone())
                }
                _ => None,
            },
        )
        .await;
    eprintln!(
        "STALLED cleared {:?} after media resumed",
        resumed.elapsed()
    );
    assert_eq!(cleared.stream, "field-1");
    let listed = participant(c.rooms.clone(), "field-1").await;
    assert!(
        !listed
            .active_alarms
            .contains(&(pb::AlarmKind::Stalled as i32)),
        "active_alarms after the stall ended: {:?}",
        listed.active_alarms
    );
    vigil.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_participants_reports_live_media() {
    let vigil = secure_server(|_| {}).await;
    let base = base_url(&vigil);
    let mut c = clients(&vigil).await;
    create_room_stalling_after(&mut c, STALL_AFTER_MS).await;
    let field_token = token(&mut c, ROOM, "field-1", publish_and_subscribe()).await;
    let mut publisher = Publisher::connect_as(&base, ROOM, "field-1", &field_token)
        .await
        .unwrap_or_else(|r| panic!("WHIP: {} {}", r.status, r.body));
    publisher.start_media();
    let mut viewers = Vec::new();
    for identity in ["dispatcher", "supervisor"] {
        let viewer_token = token(&mut c, ROOM, identity, subscribe_only()).await;
        let viewer = Viewer::connect_as(&base, ROOM, "field-1", Some(&viewer_token))
            .await
            .unwrap_or_else(|r| panic!("WHEP {identity}: {} {}", r.status, r.body));
        viewer.peer.wait_connected().await;
        viewer.wait_video().await;
        viewers.push(viewer);
    }

    let field = eventually(
        Duration::from_secs(10),
        "field-1 with a bitrate and both tracks",
        || {
            let rooms = c.rooms.clone();
            async move {
                let p = participant(rooms, "field-1").await;
                (p.bitrate_bps > 0 && p.tracks.len() == 2).then_some(p)
            }
        },
    )
    .await;
    eprintln!("field-1 as listed: {field:?}");
    assert!(field.publishing, "field-1 publishing");
    assert_eq!(field.viewer_count, 2, "viewer_count");
    assert!(
        field.bitrate_bps > 50_000,
        "bitrate_bps {} for the fixture media",
        field.bitrate_bps
    );
    let codec = |kind: pb::TrackKind| {
        field
            .tracks
            .iter()
            .find(|t| t.kind == kind as i32)
            .map(|t| t.codec.to_ascii_lowercase())
            .unwrap_or_else(|| panic!("no {kind:?} track in {:?}", field.tracks))
    };
    assert_eq!(codec(pb::TrackKind::Video), "video/h264");
    assert_eq!(codec(pb::TrackKind::Audio), "audio/opus");
    assert!(field.tracks.iter().all(|t| !t.muted), "nothing muted");
    assert!(
        field.active_alarms.is_empty(),
        "alarms: {:?}",
        field.active_alarms
    );

    let everyone = participants(c.rooms.clone()).await;
    for identity in ["dispatcher", "supervisor"] {
        let viewer = everyone
            .iter()
            .find(|p| p.identity == identity)
            .unwrap_or_else(|| panic!("{identity} not listed in {everyone:?}"));
        assert!(!viewer.publishing, "{identity} does not publish");
        assert_eq!(viewer.watching, ["field-1"], "{identity} watches field-1");
    }
    vigil.shutdown().await;
}
