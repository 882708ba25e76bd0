//! MuteTrack over gRPC stops a track's packets reaching viewers (the other
//! track keeps flowing) and unmuting resumes it from a keyframe.

use std::time::Duration;

use tonic::Code;
use vigil_proto::v1 as pb;
use vigil_proto::v1::event::Kind;
use vigil_tests::control::{Clients, Scene, admin};
use vigil_tests::eventually;

const ROOM: &str = "site-1";

async fn mute(c: &mut Clients, identity: &str, muted: bool) -> Result<(), tonic::Status> {
    c.rooms
        .mute_track(admin(pb::MuteTrackRequest {
            room: ROOM.into(),
            identity: identity.into(),
            kind: pb::TrackKind::Video.into(),
            muted,
        }))
        .await
        .map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mute_stops_video_and_unmute_resumes_from_a_keyframe() {
    let mut scene = Scene::new(ROOM).await;
    let mut watcher = scene.watch_room().await;
    let _publisher = scene.publisher("field-1").await;
    let viewer = scene.viewer("field-1", "dispatcher").await;
    // Video is flowing steadily (more than a second of it) before muting.
    eventually(Duration::from_secs(10), "video flowing", || async {
        (viewer.video().len() > 50).then_some(())
    })
    .await;
    watcher
        .wait_for(
            Duration::from_secs(5),
            "video TrackPublished",
            |e| match &e.kind {
                Some(Kind::TrackPublished(t)) if t.kind == pb::TrackKind::Video as i32 => Some(()),
                _ => None,
            },
        )
        .await;

    mute(&mut scene.clients, "field-1", true)
        .await
        .expect("MuteTrack(video, true)");
    // Packets already on their way may still land; then measure a window.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (video_before, audio_before) = (viewer.video().len(), viewer.audio_count());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (video_after, audio_after) = (viewer.video().len(), viewer.audio_count());
    eprintln!(
        "muted window: video {video_before} -> {video_after}, audio {audio_before} -> {audio_after}"
    );
    assert_eq!(video_after, video_before, "video kept arriving while muted");
    assert!(
        audio_after >= audio_before + 25,
        "audio stopped while only video was muted: {audio_before} -> {audio_after}"
    );

    let field = scene.participant("field-1").await;
    let track = |kind: pb::TrackKind| {
        field
            .tracks
            .iter()
            .find(|t| t.kind == kind as i32)
            .unwrap_or_else(|| panic!("no {kind:?} track in {field:?}"))
    };
    assert!(track(pb::TrackKind::Video).muted, "video listed as muted");
    assert!(
        !track(pb::TrackKind::Audio).muted,
        "audio listed as not muted"
    );

    let muted = watcher
        .wait_for(Duration::from_secs(5), "TrackMuted", |e| match &e.kind {
            Some(Kind::TrackMuted(m)) => Some((e.identity.clone(), *m)),
            _ => None,
        })
        .await;
    assert_eq!(muted.0, "field-1");
    assert_eq!(muted.1.kind, pb::TrackKind::Video as i32);
    assert!(muted.1.muted, "TrackMuted says muted");

    let resumed_from = viewer.video().len();
    mute(&mut scene.clients, "field-1", false)
        .await
        .expect("MuteTrack(video, false)");
    eventually(Duration::from_secs(5), "video after unmute", || async {
        (viewer.video().len() > resumed_from).then_some(())
    })
    .await;
    let first = viewer.video()[resumed_from].clone();
    assert!(
        first.keyframe_start(),
        "the first video packet after unmute does not start a keyframe (seq {})",
        first.header.sequence_number
    );
    let unmuted = watcher
        .wait_for(Duration::from_secs(5), "TrackMuted false", |e| {
            match &e.kind {
                Some(Kind::TrackMuted(m)) => Some(*m),
                _ => None,
            }
        })
        .await;
    assert!(!unmuted.muted, "TrackMuted says unmuted");

    let unknown = mute(&mut scene.clients, "nobody", true)
        .await
        .expect_err("MuteTrack of an unknown identity");
    assert_eq!(unknown.code(), Code::NotFound, "{unknown}");
    scene.shutdown().await;
}
