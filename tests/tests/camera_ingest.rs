//! IP cameras end to end: GStreamer's RTSP server (`tests/rtsp/server.py`,
//! started here on 127.0.0.1) is the camera, added over gRPC; Vigil pulls
//! it with retina and viewers play it over WHEP.
//!
//! - H.264 and PCMU reach a webrtc-rs viewer, starting at a keyframe; the
//!   camera killed raises CAMERA_OFFLINE within the room's stall time;
//!   restarted, the same viewer session plays again (its SSRC, numbered
//!   on, from a keyframe) without reconnecting; removed, the viewer is
//!   closed.
//! - aiortc decodes the camera's frames and its 440 Hz tone (in a network
//!   namespace: aiortc gathers no loopback candidates).
//! - Wrong credentials: UNAUTHORISED after one attempt, none more while
//!   the test watches; corrected, live at once.
//! - H.264 with AAC plays its video and reports AAC unplayable; H.265 with
//!   PCMU plays its audio; H.265 alone is UNSUPPORTED_CODEC.
//! - On demand: not pulled until a viewer asks (the WHEP POST waits for it),
//!   let go after its last viewer.
//! - RTP over UDP.

use std::time::{Duration, Instant};

use bytes::Bytes;
use tonic::transport::Channel;
use vigil_gateway::Vigil;
use vigil_proto::v1 as pb;
use vigil_proto::v1::event::Kind;
use vigil_proto::v1::room_service_client::RoomServiceClient;
use vigil_tests::control::{ADMIN_KEY, Watcher, admin, clients};
use vigil_tests::http_client::request;
use vigil_tests::peers::Viewer;
use vigil_tests::rtsp::{RtspAudio, RtspOptions, RtspServer, RtspVideo};
use vigil_tests::script::{Script, require_aiortc};
use vigil_tests::{base_url, eventually, netns, start_server};

const ROOM: &str = "site";
const LIMIT: Duration = Duration::from_secs(15);
/// The room's stall time, which is also its cameras' offline time.
const STALL: Duration = Duration::from_secs(1);

/// A server with a room whose stall time is [`STALL`], and a watch on it.
struct Site {
    vigil: Vigil,
    rooms: RoomServiceClient<Channel>,
    watcher: Watcher,
}

impl Site {
    async fn start(vigil: Vigil) -> Site {
        let mut rooms = clients(&vigil).await.rooms;
        rooms
            .create_room(admin(pb::CreateRoomRequest {
                name: ROOM.into(),
                alarm_rules: Some(pb::AlarmRules {
                    stall_after_ms: Some(STALL.as_millis() as u32),
                    ..Default::default()
                }),
                ..Default::default()
            }))
            .await
            .expect("CreateRoom");
        let watcher = Watcher::start(
            &vigil,
            ADMIN_KEY,
            pb::WatchRequest {
                room: ROOM.into(),
                ..Default::default()
            },
        )
        .await;
        Site {
            vigil,
            rooms,
            watcher,
        }
    }

    fn base(&self) -> String {
        base_url(&self.vigil)
    }

    async fn add(
        &mut self,
        identity: &str,
        url: &str,
        tweak: impl FnOnce(&mut pb::AddCameraRequest),
    ) {
        let mut add = pb::AddCameraRequest {
            room: ROOM.into(),
            identity: identity.into(),
            url: url.into(),
            ..Default::default()
        };
        tweak(&mut add);
        self.rooms
            .add_camera(admin(add))
            .await
            .unwrap_or_else(|e| panic!("AddCamera {identity}: {e}"));
    }

    /// Waits for `identity` to report `state`; returns the event.
    async fn state(&mut self, identity: &str, state: pb::CameraState) -> pb::CameraStateChanged {
        let what = format!("{identity} {}", state.as_str_name());
        self.watcher
            .wait_for(LIMIT, &what, |e| match &e.kind {
                Some(Kind::CameraStateChanged(c))
                    if e.identity == identity && c.state == state as i32 =>
                {
                    Some(c.clone())
                }
                _ => None,
            })
            .await
    }

    /// `identity`'s tracks as reported: (codec, playable).
    fn tracks(changed: &pb::CameraStateChanged) -> Vec<(String, bool)> {
        changed
            .tracks
            .iter()
            .map(|t| (t.codec.clone(), t.playable))
            .collect()
    }
}

/// A viewer of `identity` that has had `video` video and `audio` audio
/// packets.
async fn watch(base: &str, identity: &str, video: usize, audio: usize) -> Viewer {
    let viewer = Viewer::connect(base, ROOM, identity)
        .await
        .unwrap_or_else(|r| panic!("WHEP {identity}: {} {}", r.status, r.body));
    viewer.peer.wait_connected().await;
    eventually(LIMIT, "the camera's media at the viewer", || async {
        (viewer.video().len() >= video && viewer.audio_count() >= audio).then_some(())
    })
    .await;
    viewer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_camera_plays_dies_and_comes_back_on_the_same_viewer() {
    let mut camera = RtspServer::start(RtspOptions::default()).await;
    let mut site = Site::start(
        start_server(|c| {
            c.republish_grace = Duration::from_secs(30);
        })
        .await,
    )
    .await;
    site.add("gate", camera.url(), |_| {}).await;
    let live = site.state("gate", pb::CameraState::Live).await;
    assert_eq!(
        Site::tracks(&live),
        [("video/H264".into(), true), ("audio/PCMU".into(), true)]
    );
    let base = site.base();
    let viewer = watch(&base, "gate", 60, 50).await;
    let video = viewer.video();
    assert!(video[0].keyframe_start(), "the viewer starts at a keyframe");
    let codecs = viewer.received.lock().expect("received").codecs.clone();
    assert!(codecs.contains(&"audio".to_owned()) && codecs.contains(&"video".to_owned()));

    // The camera is a participant, marked as a camera.
    let participants = site
        .rooms
        .list_participants(admin(pb::ListParticipantsRequest {
            room: ROOM.into(),
            ..Default::default()
        }))
        .await
        .expect("ListParticipants")
        .into_inner()
        .participants;
    let gate = participants
        .iter()
        .find(|p| p.identity == "gate")
        .expect("the camera in the room");
    assert!(gate.camera && gate.publishing);

    // The camera dies: offline within the room's stall time.
    let killed = Instant::now();
    camera.kill().await;
    let before = viewer.video();
    site.watcher
        .wait_for(LIMIT, "CAMERA_OFFLINE", |e| match &e.kind {
            Some(Kind::AlarmRaised(a))
                if a.kind == pb::AlarmKind::CameraOffline as i32 && e.identity == "gate" =>
            {
                Some(())
            }
            _ => None,
        })
        .await;
    let after = killed.elapsed();
    println!("camera killed → CAMERA_OFFLINE in {after:?} (stall time {STALL:?})");
    assert!(
        after <= STALL + Duration::from_millis(1500),
        "CAMERA_OFFLINE {after:?} after the camera died, stall time {STALL:?}"
    );

    // Back on the same port: the same viewer plays on, without reconnecting.
    camera.restart().await;
    // Live again, and the alarm cleared (in either order).
    let (mut live, mut cleared) = (false, false);
    site.watcher
        .wait_for(LIMIT, "LIVE and CAMERA_OFFLINE cleared", |e| {
            match &e.kind {
                Some(Kind::CameraStateChanged(c)) if c.state == pb::CameraState::Live as i32 => {
                    live = true;
                }
                Some(Kind::AlarmCleared(a)) if a.kind == pb::AlarmKind::CameraOffline as i32 => {
                    cleared = true;
                }
                _ => {}
            }
            (live && cleared).then_some(())
        })
        .await;
    eventually(LIMIT, "video again at the same viewer", || async {
        (viewer.video().len() >= before.len() + 30).then_some(())
    })
    .await;
    let again = viewer.video();
    let (last_old, first_new) = (&before[before.len() - 1], &again[before.len()]);
    assert_eq!(first_new.header.ssrc, last_old.header.ssrc, "same SSRC");
    assert_eq!(
        first_new.header.sequence_number,
        last_old.header.sequence_number.wrapping_add(1),
        "numbered on"
    );
    assert!(first_new.keyframe_start(), "from a keyframe");
    let get = request("GET", &viewer.session.url, &[], Bytes::new()).await;
    assert!((200..300).contains(&get.status), "the same session");

    // Removed: its viewer is closed.
    site.rooms
        .remove_camera(admin(pb::RemoveCameraRequest {
            room: ROOM.into(),
            identity: "gate".into(),
        }))
        .await
        .expect("RemoveCamera");
    eventually(LIMIT, "the viewer's session gone", || async {
        let get = request("GET", &viewer.session.url, &[], Bytes::new()).await;
        (get.status == 404).then_some(())
    })
    .await;
    site.vigil.shutdown().await;
}

#[test]
fn a_camera_decodes_in_aiortc() {
    require_aiortc();
    netns::run(|| async {
        let camera = RtspServer::start(RtspOptions::default()).await;
        let mut site = Site::start(netns::start_server(|_| {}).await).await;
        site.add("gate", camera.url(), |_| {}).await;
        site.state("gate", pb::CameraState::Live).await;
        let label = "aiortc WHEP viewer (RTSP camera)";
        let whep = format!("{}/whep/{ROOM}/gate", site.base());
        let mut viewer = Script::python(label, "whep_play.py", &[&whep, "--label", label]);
        let played = viewer.report("play and decode").await;
        viewer.exits_cleanly("exit").await;
        let (decoded, seconds) = (played.num("video_frames"), played.num("seconds"));
        assert!(
            decoded >= 60.0,
            "decoded {decoded} video frames in {seconds} s"
        );
        assert_eq!(played.str("sizes"), "320x240");
        assert!(
            played.num("distinct_images") >= decoded * 0.9,
            "the picture advances"
        );
        assert!(played.num("audio_frames") >= 50.0, "audio decoded");
        let hz = played.num("audio_hz");
        assert!(
            (400.0..=480.0).contains(&hz),
            "the camera's 440 Hz tone, not {hz} Hz"
        );
        site.vigil.shutdown().await;
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_are_unauthorised_without_a_retry_storm() {
    let camera = RtspServer::start(RtspOptions {
        user: Some("admin".into()),
        password: Some("right-one".into()),
        ..RtspOptions::default()
    })
    .await;
    let mut site = Site::start(start_server(|_| {}).await).await;
    site.add("door", camera.url(), |add| {
        add.username = "admin".into();
        add.password = "wrong-one".into();
    })
    .await;
    let refused = site.state("door", pb::CameraState::Unauthorised).await;
    assert!(refused.detail.contains("401"), "{}", refused.detail);
    // Five seconds on, the camera has been asked once.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(camera.connections(), 1, "one attempt, no retry storm");
    site.rooms
        .update_camera(admin(pb::UpdateCameraRequest {
            room: ROOM.into(),
            identity: "door".into(),
            password: Some("right-one".into()),
            ..Default::default()
        }))
        .await
        .expect("UpdateCamera");
    site.state("door", pb::CameraState::Live).await;
    watch(&site.base(), "door", 30, 20).await;
    site.vigil.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unplayable_tracks_are_reported_and_the_others_play() {
    let aac = RtspServer::start(RtspOptions {
        audio: RtspAudio::Aac,
        ..RtspOptions::default()
    })
    .await;
    let h265 = RtspServer::start(RtspOptions {
        video: RtspVideo::H265,
        audio: RtspAudio::Pcmu,
        ..RtspOptions::default()
    })
    .await;
    let h265_alone = RtspServer::start(RtspOptions {
        video: RtspVideo::H265,
        audio: RtspAudio::None,
        ..RtspOptions::default()
    })
    .await;
    let mut site = Site::start(start_server(|_| {}).await).await;
    let base = site.base();

    site.add("aac", aac.url(), |_| {}).await;
    let live = site.state("aac", pb::CameraState::Live).await;
    assert_eq!(
        Site::tracks(&live),
        [
            ("video/H264".into(), true),
            ("audio/MPEG4-GENERIC".into(), false)
        ]
    );
    assert!(live.detail.contains("MPEG4-GENERIC"), "{}", live.detail);
    let viewer = watch(&base, "aac", 30, 0).await;
    assert_eq!(viewer.audio_count(), 0);

    site.add("h265", h265.url(), |_| {}).await;
    let live = site.state("h265", pb::CameraState::Live).await;
    assert_eq!(
        Site::tracks(&live),
        [("video/H265".into(), false), ("audio/PCMU".into(), true)]
    );
    let viewer = watch(&base, "h265", 0, 50).await;
    assert!(viewer.video().is_empty());

    site.add("h265-only", h265_alone.url(), |_| {}).await;
    let refused = site
        .state("h265-only", pb::CameraState::UnsupportedCodec)
        .await;
    assert_eq!(Site::tracks(&refused), [("video/H265".into(), false)]);
    assert!(refused.detail.contains("video/H265"), "{}", refused.detail);
    site.vigil.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_on_demand_camera_is_pulled_only_while_watched() {
    let camera = RtspServer::start(RtspOptions::default()).await;
    let mut site = Site::start(start_server(|_| {}).await).await;
    site.add("yard", camera.url(), |add| add.on_demand = true)
        .await;
    site.state("yard", pb::CameraState::Idle).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(camera.connections(), 0, "not pulled while nobody watches");

    // The WHEP POST waits for the camera, then plays.
    let asked = Instant::now();
    let viewer = watch(&site.base(), "yard", 30, 20).await;
    println!(
        "on-demand camera: first media {:?} after the WHEP POST",
        asked.elapsed()
    );
    assert_eq!(camera.connections(), 1);
    site.state("yard", pb::CameraState::Live).await;

    // Its last viewer gone, it is let go (after 10 s).
    assert_eq!(viewer.delete().await, 200);
    let left = Instant::now();
    site.state("yard", pb::CameraState::Idle).await;
    println!(
        "on-demand camera idle {:?} after its last viewer left",
        left.elapsed()
    );
    assert!(left.elapsed() >= Duration::from_secs(9));
    site.vigil.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_camera_over_udp_plays() {
    let camera = RtspServer::start(RtspOptions::default()).await;
    let mut site = Site::start(start_server(|_| {}).await).await;
    site.add("pier", camera.url(), |add| {
        add.transport = pb::CameraTransport::Udp as i32;
    })
    .await;
    let live = site.state("pier", pb::CameraState::Live).await;
    assert!(live.detail.contains("UDP"), "{}", live.detail);
    watch(&site.base(), "pier", 60, 50).await;
    site.vigil.shutdown().await;
}
