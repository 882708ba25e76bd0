//! Alarms are pushed to the admin's feed soon after their cause and cleared
//! when it ends, and ListParticipants reports live media state.

use std::time::{Duration, Instant};

use vigil_proto::v1 as pb;
use vigil_proto::v1::event::Kind;
use vigil_tests::control::Scene;
use vigil_tests::eventually;

const ROOM: &str = "site-1";
const STALL_AFTER_MS: u32 = 1000;

/// A scene whose room raises STALLED after `STALL_AFTER_MS` without media.
async fn stalling_scene() -> Scene {
    let request = pb::CreateRoomRequest {
        alarm_rules: Some(pb::AlarmRules {
            stall_after_ms: Some(STALL_AFTER_MS),
            ..Default::default()
        }),
        ..Default::default()
    };
    Scene::with_room(ROOM, request, |_| {}).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stall_alarm_is_raised_within_two_seconds_and_cleared() {
    let mut scene = stalling_scene().await;
    let mut watcher = scene.watch_room().await;
    let mut publisher = scene.publisher("field-1").await;
    // The control plane has sampled media flowing.
    eventually(Duration::from_secs(10), "field-1's bitrate", || async {
        (scene.participant("field-1").await.bitrate_bps > 0).then_some(())
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

    let listed = scene.participant("field-1").await;
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
    let listed = scene.participant("field-1").await;
    assert!(
        !listed
            .active_alarms
            .contains(&(pb::AlarmKind::Stalled as i32)),
        "active_alarms after the stall ended: {:?}",
        listed.active_alarms
    );
    // Counted for Prometheus, by kind.
    let metrics =
        vigil_tests::http_client::request("GET", &format!("{}/metrics", scene.base), &[], "")
            .await
            .body;
    assert!(
        metrics
            .lines()
            .any(|line| line == "vigil_alarms_raised_total{kind=\"stalled\"} 1"),
        "{metrics}"
    );
    scene.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_participants_reports_live_media() {
    let mut scene = stalling_scene().await;
    let _publisher = scene.publisher("field-1").await;
    let _viewers = [
        scene.viewer("field-1", "dispatcher").await,
        scene.viewer("field-1", "supervisor").await,
    ];

    let field = eventually(
        Duration::from_secs(10),
        "field-1 with a bitrate and both tracks",
        || async {
            let p = scene.participant("field-1").await;
            (p.bitrate_bps > 0 && p.tracks.len() == 2).then_some(p)
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

    let everyone = scene.participants().await;
    for identity in ["dispatcher", "supervisor"] {
        let viewer = everyone
            .iter()
            .find(|p| p.identity == identity)
            .unwrap_or_else(|| panic!("{identity} not listed in {everyone:?}"));
        assert!(!viewer.publishing, "{identity} does not publish");
        assert_eq!(viewer.watching, ["field-1"], "{identity} watches field-1");
    }
    scene.shutdown().await;
}
