//! UpdateRoom changes a live room's settings, and they apply at once: a
//! lowered stall threshold raises STALLED on a stream that was silent but
//! under the old one; a raised viewer limit admits the viewer refused
//! before (and clears ROOM_FULL), a lowered one refuses the next. Watchers
//! get RoomUpdated; GetRoom shows the new settings.

use std::time::Duration;

use tonic::Code;
use vigil_proto::v1 as pb;
use vigil_proto::v1::event::Kind;
use vigil_tests::conformance::{assert_problem, recvonly_offer};
use vigil_tests::control::{Scene, admin, subscribe_only};
use vigil_tests::eventually;
use vigil_tests::http_client::post_sdp_as;

const ROOM: &str = "site-1";
const LIMIT: Duration = Duration::from_secs(10);

async fn update(scene: &mut Scene, request: pb::UpdateRoomRequest) -> pb::Room {
    scene
        .clients
        .rooms
        .update_room(admin(pb::UpdateRoomRequest {
            name: ROOM.into(),
            ..request
        }))
        .await
        .expect("UpdateRoom")
        .into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lowered_stall_threshold_applies_to_a_live_stream() {
    let mut scene = Scene::with_room(
        ROOM,
        pb::CreateRoomRequest {
            alarm_rules: Some(pb::AlarmRules {
                stall_after_ms: Some(60_000),
                ..Default::default()
            }),
            ..Default::default()
        },
        |_| {},
    )
    .await;
    let mut watcher = scene.watch_room().await;
    let mut publisher = scene.publisher("cam-1").await;
    eventually(LIMIT, "cam-1's bitrate", || async {
        (scene.participant("cam-1").await.bitrate_bps > 0).then_some(())
    })
    .await;
    publisher.stop_media();
    // Silent for a few samples (500 ms apart), well under a minute: no alarm.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let stalled = |e: &pb::Event| match &e.kind {
        Some(Kind::AlarmRaised(a)) if a.kind == pb::AlarmKind::Stalled as i32 => Some(()),
        _ => None,
    };
    assert!(
        !watcher.drain().iter().any(|e| stalled(e).is_some()),
        "STALLED before the update"
    );

    let room = update(
        &mut scene,
        pb::UpdateRoomRequest {
            alarm_rules: Some(pb::AlarmRules {
                stall_after_ms: Some(1000),
                ..Default::default()
            }),
            ..Default::default()
        },
    )
    .await;
    let rules = room.alarm_rules.expect("rules");
    assert_eq!(rules.stall_after_ms, Some(1000));
    assert_eq!(rules.min_bitrate_bps, Some(50_000), "kept");
    let announced = watcher
        .wait_for(LIMIT, "RoomUpdated", |e| match &e.kind {
            Some(Kind::RoomUpdated(u)) => u.alarm_rules,
            _ => None,
        })
        .await;
    assert_eq!(announced.stall_after_ms, Some(1000));
    // The stream has been silent for over a second already.
    watcher
        .wait_for(Duration::from_secs(3), "STALLED", stalled)
        .await;
    scene.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewer_limits_change_at_the_next_admission() {
    let mut scene = Scene::with_room(
        ROOM,
        pb::CreateRoomRequest {
            limits: Some(pb::RoomLimits {
                max_publishers: Some(2),
                max_viewers: Some(1),
            }),
            ..Default::default()
        },
        |_| {},
    )
    .await;
    let mut watcher = scene.watch_room().await;
    let _publisher = scene.publisher("cam-1").await;
    let _first = scene.viewer("cam-1", "viewer-1").await;
    let whep = |scene: &Scene, token: String| {
        let url = format!("{}/whep/{ROOM}/cam-1", scene.base);
        async move { post_sdp_as(&url, &recvonly_offer(), Some(&token)).await }
    };
    let second = scene.token("viewer-2", subscribe_only()).await;
    assert_problem(&whep(&scene, second).await, 503, "a second viewer");
    watcher
        .wait_for(LIMIT, "ROOM_FULL", |e| match &e.kind {
            Some(Kind::AlarmRaised(a)) if a.kind == pb::AlarmKind::RoomFull as i32 => Some(()),
            _ => None,
        })
        .await;

    let room = update(
        &mut scene,
        pb::UpdateRoomRequest {
            limits: Some(pb::RoomLimits {
                max_viewers: Some(2),
                ..Default::default()
            }),
            ..Default::default()
        },
    )
    .await;
    let limits = room.limits.expect("limits");
    assert_eq!(
        (limits.max_publishers, limits.max_viewers),
        (Some(2), Some(2))
    );
    watcher
        .wait_for(LIMIT, "ROOM_FULL cleared", |e| match &e.kind {
            Some(Kind::AlarmCleared(a)) if a.kind == pb::AlarmKind::RoomFull as i32 => Some(()),
            _ => None,
        })
        .await;
    let _second = scene.viewer("cam-1", "viewer-2").await;

    // Lowered under the viewers there are: they stay, the next is refused.
    update(
        &mut scene,
        pb::UpdateRoomRequest {
            limits: Some(pb::RoomLimits {
                max_viewers: Some(1),
                ..Default::default()
            }),
            ..Default::default()
        },
    )
    .await;
    let third = scene.token("viewer-3", subscribe_only()).await;
    assert_problem(&whep(&scene, third).await, 503, "a third viewer");
    assert_eq!(scene.participant("viewer-2").await.watching, ["cam-1"]);

    // Unlimited; and what makes no sense is refused.
    let room = update(
        &mut scene,
        pb::UpdateRoomRequest {
            clear_max_viewers: true,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(room.limits.expect("limits").max_viewers, None);
    let got = scene.room_state().await;
    assert_eq!(got.limits, room.limits);
    let refused = scene
        .clients
        .rooms
        .update_room(admin(pb::UpdateRoomRequest {
            name: ROOM.into(),
            limits: Some(pb::RoomLimits {
                max_viewers: Some(3),
                ..Default::default()
            }),
            clear_max_viewers: true,
            ..Default::default()
        }))
        .await
        .expect_err("set and cleared");
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused}");
    let refused = scene
        .clients
        .rooms
        .update_room(admin(pb::UpdateRoomRequest {
            name: "nowhere".into(),
            ..Default::default()
        }))
        .await
        .expect_err("an unknown room");
    assert_eq!(refused.code(), Code::NotFound, "{refused}");
    scene.shutdown().await;
}
