//! MuteTrack over gRPC stops a track's packets reaching viewers (the other
//! track keeps flowing) and unmuting resumes it from a keyframe.

use std::time::Duration;

use tonic::Code;
use vigil_proto::v1 as pb;
use vigil_proto::v1::event::Kind;
use vigil_tests::control::{
    ADMIN_KEY, Clients, Watcher, admin, clients, create_room, publish_and_subscribe, secure_server,
    subscribe_only, token,
};
use vigil_tests::peers::{Publisher, Viewer};
use vigil_tests::{base_url, eventually};

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
    let vigil = secure_server(|_| {}).await;
    let base = base_url(&vigil);
    let mut c = clients(&vigil).await;
    create_room(&mut c, ROOM).await;
    let field_token = token(&mut c, ROOM, "field-1", publish_and_subscribe()).await;
    let dispatcher_token = token(&mut c, ROOM, "dispatcher", subscribe_only()).await;
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
    let viewer = Viewer::connect_as(&base, ROOM, "field-1", Some(&dispatcher_token))
        .await
        .unwrap_or_else(|r| panic!("WHEP: {} {}", r.status, r.body));
    viewer.peer.wait_connected().await;
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

    mute(&mut c, "field-1", true)
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

    let participants = c
        .rooms
        .list_participants(admin(pb::ListParticipantsRequest { room: ROOM.into() }))
        .await
        .expect("ListParticipants")
        .into_inner()
        .participants;
    let field = participants
        .iter()
        .find(|p| p.identity == "field-1")
        .expect("field-1 listed");
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
    mute(&mut c, "field-1", false)
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

    let unknown = mute(&mut c, "nobody", true)
        .await
        .expect_err("MuteTrack of an unknown identity");
    assert_eq!(unknown.code(), Code::NotFound, "{unknown}");
    vigil.shutdown().await;
}
