//! Several nodes over one Redis (issue 17): heartbeats and the liveness
//! window, commands that cross nodes, one publisher per stream in the
//! deployment, and placement by redirect. Three `vigil` processes and a
//! real `redis-server`, all on 127.0.0.1 (tests/src/cluster.rs).

use std::time::{Duration, Instant};

use vigil_proto::v1 as pb;
use vigil_proto::v1::event::Kind;
use vigil_tests::cluster::Deployment;
use vigil_tests::conformance::SDP;
use vigil_tests::control::{Clients, Watcher, clients_at};
use vigil_tests::eventually;
use vigil_tests::http_client::request;
use vigil_tests::media::{ffmpeg_decodes_h264, h264_annexb};
use vigil_tests::peers::{PublishRequest, Publisher, TestVideo, Viewer};
use vigil_tests::rtsp::{RtspOptions, RtspServer};

const ROOM: &str = "city";

/// `room`'s participants as the node behind `clients` lists them.
async fn participants(clients: &mut Clients) -> Vec<pb::Participant> {
    clients
        .rooms
        .list_participants(pb::ListParticipantsRequest {
            room: ROOM.into(),
            ..Default::default()
        })
        .await
        .expect("ListParticipants")
        .into_inner()
        .participants
}

/// MuteTrack of `identity`'s video through the node behind `clients`.
async fn mute_video(clients: &mut Clients, identity: &str) -> Result<(), tonic::Status> {
    clients
        .rooms
        .mute_track(pb::MuteTrackRequest {
            room: ROOM.into(),
            identity: identity.into(),
            kind: pb::TrackKind::Video.into(),
            muted: true,
        })
        .await
        .map(|_| ())
}

/// Waits until the directory names `node` as `stream`'s publisher.
async fn published_at(deployment: &Deployment, stream: &str, node: &str) {
    let key = format!("vigil:stream:{ROOM}/{stream}");
    eventually(
        Duration::from_secs(5),
        &format!("{stream} at {node}"),
        || async { (deployment.redis.cli(&["GET", &key]).await == node).then_some(()) },
    )
    .await;
}

fn whip_request<'a>() -> PublishRequest<'a> {
    PublishRequest {
        video: TestVideo::H264,
        video_codec: None,
        headers: vec![("content-type", SDP.to_owned())],
        munge: Box::new(|offer| offer),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_leaves_the_deployment_within_the_liveness_window() {
    let mut deployment = Deployment::start(3, &[]).await;
    // A watch at node2 sees what happens at node1.
    let mut watch =
        Watcher::start_at(deployment.node(2).grpc, "open", pb::WatchRequest::default()).await;
    let _publisher = Publisher::connect(&deployment.base(1), ROOM, "field-1").await;
    let _viewer = Viewer::connect(&deployment.base(1), ROOM, "field-1")
        .await
        .unwrap_or_else(|r| panic!("WHEP at node1: {} {}", r.status, r.body));
    watch
        .wait_for(Duration::from_secs(5), "field-1 joined at node1", |e| {
            matches!(&e.kind, Some(Kind::ParticipantJoined(_)))
                .then_some(())
                .filter(|()| e.identity == "field-1")
        })
        .await;
    // The directory names node1 as the stream's publisher.
    published_at(&deployment, "field-1", "node1").await;
    let key = format!("vigil:stream:{ROOM}/field-1");

    let killed = Instant::now();
    deployment.kill(1).await;
    loop {
        let members = deployment.redis.cli(&["SMEMBERS", "vigil:nodes"]).await;
        let stream = deployment.redis.cli(&["GET", &key]).await;
        if !members.contains("node1") && stream.is_empty() {
            break;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(6),
            "node1 should be reaped within the 3 s liveness window plus a heartbeat; members {members:?}, stream {stream:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("node1 reaped {:?} after SIGKILL", killed.elapsed());
    assert_eq!(deployment.live_nodes().await, ["node2", "node3"]);
    // node1's publisher and viewer are reported gone, "node lost".
    let mut left = Vec::new();
    while left.len() < 2 {
        let (identity, role) = watch
            .wait_for(
                Duration::from_secs(5),
                "ParticipantLeft NODE_LOST",
                |e| match &e.kind {
                    Some(Kind::ParticipantLeft(l))
                        if l.reason == i32::from(pb::LeaveReason::NodeLost) =>
                    {
                        Some((e.identity.clone(), l.role))
                    }
                    _ => None,
                },
            )
            .await;
        left.push((identity, role));
    }
    eprintln!(
        "reported lost {:?} after SIGKILL: {left:?}",
        killed.elapsed()
    );
    assert!(left.contains(&("field-1".to_owned(), i32::from(pb::SessionRole::Publisher))));
    assert!(
        left.iter()
            .any(|(_, role)| *role == i32::from(pb::SessionRole::Viewer))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hang_up_through_one_node_ends_the_session_on_another() {
    let deployment = Deployment::start(3, &[]).await;
    let publisher = Publisher::connect(&deployment.base(1), ROOM, "field-1").await;
    let mut node3 = clients_at(deployment.node(3).grpc).await;

    let asked = Instant::now();
    let closed = node3
        .rooms
        .hang_up(pb::HangUpRequest {
            room: ROOM.into(),
            identity: "field-1".into(),
            ..Default::default()
        })
        .await
        .expect("HangUp through node3")
        .into_inner();
    assert_eq!(closed.sessions_closed, 1, "node1's publisher session");
    // HangUp answers once node1 has closed the session.
    let gone = request("GET", &publisher.session.url, &[], "").await;
    assert_eq!(gone.status, 404, "the session is gone at node1");
    eprintln!(
        "HangUp at node3 closed node1's session in {:?}",
        asked.elapsed()
    );
    let state = publisher.peer.wait_left(Duration::from_secs(10)).await;
    eprintln!(
        "the publisher's peer: {state:?} {:?} after",
        asked.elapsed()
    );

    let nobody = node3
        .rooms
        .hang_up(pb::HangUpRequest {
            room: ROOM.into(),
            identity: "nobody".into(),
            ..Default::default()
        })
        .await
        .expect_err("nobody is in the room anywhere");
    assert_eq!(nobody.code(), tonic::Code::NotFound, "{nobody:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mute_through_one_node_mutes_a_stream_published_on_another() {
    let deployment = Deployment::start(2, &[]).await;
    let mut publisher = Publisher::connect(&deployment.base(1), ROOM, "field-1").await;
    publisher.start_media();
    let mut node1 = clients_at(deployment.node(1).grpc).await;
    let mut node2 = clients_at(deployment.node(2).grpc).await;
    // The publisher's video track is known once its first packet arrived.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let participants = participants(&mut node1).await;
        if participants.iter().any(|p| p.tracks.len() == 2) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "tracks published: {participants:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    mute_video(&mut node2, "field-1")
        .await
        .expect("MuteTrack through node2");
    let participants = participants(&mut node1).await;
    let video = participants[0]
        .tracks
        .iter()
        .find(|t| t.kind == i32::from(pb::TrackKind::Video))
        .expect("a video track");
    assert!(video.muted, "muted at node1: {participants:?}");

    let missing = mute_video(&mut node2, "nobody")
        .await
        .expect_err("no such stream anywhere");
    assert_eq!(missing.code(), tonic::Code::NotFound, "{missing:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_has_one_publisher_in_the_whole_deployment() {
    let deployment = Deployment::start(2, &[]).await;
    let _first = Publisher::connect(&deployment.base(1), ROOM, "field-1").await;
    published_at(&deployment, "field-1", "node1").await;
    let base2 = deployment.base(2);
    let second = Publisher::publish(
        &base2,
        &format!("{base2}/whip/{ROOM}/field-1"),
        whip_request(),
    )
    .await
    .err()
    .expect("the stream is published at node1");
    assert_eq!(second.status, 409, "{}", second.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_at_capacity_redirects_new_sessions_to_one_with_room() {
    let deployment = Deployment::start(3, &["--node-capacity", "1"]).await;
    let base1 = deployment.base(1);
    let _first = Publisher::connect(&base1, ROOM, "field-1").await;
    // node1 now hosts one session: its capacity. Its next heartbeat (1 s)
    // tells the others, but node1 decides on its own count at once.
    let refused = Publisher::publish(
        &base1,
        &format!("{base1}/whip/{ROOM}/field-2"),
        whip_request(),
    )
    .await
    .err()
    .expect("node1 is full");
    assert_eq!(refused.status, 307, "{}", refused.body);
    let location = refused.header("location").expect("Location").to_owned();
    let (base, path) = location
        .split_once("/whip/")
        .unwrap_or_else(|| panic!("a WHIP URL at another node: {location}"));
    assert_ne!(base, base1, "another node");
    assert!(
        [deployment.base(2), deployment.base(3)].contains(&base.to_owned()),
        "{base} is node2 or node3"
    );
    assert_eq!(path, format!("{ROOM}/field-2"), "the same endpoint there");

    // The client follows it: same offer, same path, at the other node.
    let (second, _) = Publisher::publish(base, &location, whip_request())
        .await
        .unwrap_or_else(|r| panic!("POST at {location}: {} {}", r.status, r.body));

    // A client that resolves its session URL against the node it first
    // asked is sent on to the node that hosts the session.
    let session_path = second
        .session
        .url
        .strip_prefix(base)
        .expect("session URL at that node")
        .to_owned();
    let elsewhere = request("DELETE", &format!("{base1}{session_path}"), &[], "").await;
    assert_eq!(elsewhere.status, 307, "{}", elsewhere.body);
    assert_eq!(
        elsewhere.header("location"),
        Some(second.session.url.as_str())
    );
    let deleted = request("DELETE", &second.session.url, &[], "").await;
    assert_eq!(deleted.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_at_two_other_nodes_decode_a_stream_through_one_relay_each() {
    let deployment = Deployment::start(3, &[]).await;
    let mut publisher = Publisher::connect(&deployment.base(1), ROOM, "field-1").await;
    publisher.start_media();
    let mut viewers = Vec::new();
    for node in [2, 2, 3, 3] {
        let viewer = Viewer::connect(&deployment.base(node), ROOM, "field-1")
            .await
            .unwrap_or_else(|r| panic!("WHEP at node{node}: {} {}", r.status, r.body));
        viewer.peer.wait_connected().await;
        viewers.push(viewer);
    }
    for viewer in &viewers {
        viewer.wait_keyframes(2).await;
        assert!(
            viewer.video()[0].keyframe_start(),
            "video at another node starts on a keyframe"
        );
        eventually(Duration::from_secs(10), "audio", || async {
            (viewer.audio_count() > 10).then_some(())
        })
        .await;
    }
    // And it decodes: 60 frames from each viewer's first packet on.
    for viewer in &viewers {
        eventually(Duration::from_secs(10), "60 frames", || async {
            (viewer.video().iter().filter(|p| p.header.marker).count() >= 60).then_some(())
        })
        .await;
        let video = viewer.video();
        let stream = h264_annexb(video.iter().map(|p| &p.payload[..]));
        let (frames, errors) = ffmpeg_decodes_h264(&stream);
        assert!(
            frames >= 60 && !errors,
            "FFmpeg decoded {frames} frames, errors: {errors}"
        );
    }
    // What arrived is what the publisher sent, through the hop.
    let sent = publisher.sent.lock().unwrap().video.clone();
    for viewer in &viewers {
        let got = viewer.video();
        let last = got.last().expect("video");
        assert!(
            sent.iter().any(|p| p.payload == last.payload),
            "a relayed packet carries a payload the publisher sent"
        );
    }
    // node1 serves one relay per other node, not one per viewer.
    eventually(
        Duration::from_secs(5),
        "two viewer sessions at node1",
        || async { (deployment.viewer_sessions(1).await == 2).then_some(()) },
    )
    .await;
    // Any node lists the stream once, with its four viewers (in open mode
    // a relay is an anonymous viewer at the origin and is listed too).
    let mut node3 = clients_at(deployment.node(3).grpc).await;
    let participants = participants(&mut node3).await;
    let publishing: Vec<&str> = participants
        .iter()
        .filter(|p| p.publishing)
        .map(|p| p.identity.as_str())
        .collect();
    assert_eq!(publishing, ["field-1"], "{participants:?}");

    // HangUp through node3 ends the publisher at node1, and the viewers at
    // node2 and node3 get nothing more.
    node3
        .rooms
        .hang_up(pb::HangUpRequest {
            room: ROOM.into(),
            identity: "field-1".into(),
            ..Default::default()
        })
        .await
        .expect("HangUp through node3");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let counts: Vec<usize> = viewers.iter().map(|v| v.video().len()).collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let later: Vec<usize> = viewers.iter().map(|v| v.video().len()).collect();
    assert_eq!(counts, later, "no video after the hang-up, at any node");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_pulls_from_a_relay_when_the_origin_is_full() {
    // node1 takes two sessions: its publisher and node2's relay.
    let deployment = Deployment::start_each(&[&["--node-capacity", "2"], &[], &[]]).await;
    let mut publisher = Publisher::connect(&deployment.base(1), ROOM, "field-1").await;
    publisher.start_media();
    let at_node2 = Viewer::connect(&deployment.base(2), ROOM, "field-1")
        .await
        .unwrap_or_else(|r| panic!("WHEP at node2: {} {}", r.status, r.body));
    at_node2.wait_keyframes(1).await;
    // node1's next heartbeat says it is full.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let at_node3 = Viewer::connect(&deployment.base(3), ROOM, "field-1")
        .await
        .unwrap_or_else(|r| panic!("WHEP at node3: {} {}", r.status, r.body));
    at_node3.wait_keyframes(2).await;
    assert!(at_node3.video()[0].keyframe_start());

    // node1 feeds node2 only; node2 feeds its viewer and node3's relay.
    for (node, sessions) in [(1, 1), (2, 2), (3, 1)] {
        eventually(
            Duration::from_secs(5),
            &format!("{sessions} viewer sessions at node{node}"),
            || async { (deployment.viewer_sessions(node).await == sessions).then_some(()) },
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_elsewhere_play_again_when_a_dead_nodes_publisher_returns_at_another_node() {
    let mut deployment = Deployment::start(3, &[]).await;
    let mut first = Publisher::connect(&deployment.base(1), ROOM, "field-1").await;
    first.start_media();
    let viewer = Viewer::connect(&deployment.base(2), ROOM, "field-1")
        .await
        .unwrap_or_else(|r| panic!("WHEP at node2: {} {}", r.status, r.body));
    viewer.wait_keyframes(1).await;

    deployment.kill(1).await;
    drop(first);
    let killed = Instant::now();
    // The phone comes back through another node once node1 is known dead
    // (until then the stream is still node1's: 409).
    loop {
        if deployment.live_nodes().await == ["node2", "node3"]
            && deployment
                .redis
                .cli(&["SISMEMBER", "vigil:nodes", "node1"])
                .await
                == "0"
        {
            break;
        }
        assert!(killed.elapsed() < Duration::from_secs(6), "node1 reaped");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut second = Publisher::connect(&deployment.base(3), ROOM, "field-1").await;
    second.start_media();
    let before = viewer.video().len();
    let resumed = eventually(
        Duration::from_secs(20),
        "the node2 viewer's video from the publisher at node3",
        || async {
            let sent = second.sent.lock().unwrap().video.clone();
            viewer.video()[before..]
                .iter()
                .find(|p| sent.iter().any(|s| s.payload == p.payload))
                .cloned()
        },
    )
    .await;
    eprintln!(
        "node2's viewer plays the publisher's return at node3 {:?} after node1 died",
        resumed.at.duration_since(killed)
    );
    let gone = request("GET", &viewer.session.url, &[], "").await;
    assert_eq!(gone.status, 204, "the same viewer session at node2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarting_mid_stream_breaks_no_session() {
    let mut deployment = Deployment::start(3, &[]).await;
    let mut publisher = Publisher::connect(&deployment.base(1), ROOM, "field-1").await;
    publisher.start_media();
    let local = Viewer::connect(&deployment.base(1), ROOM, "field-1")
        .await
        .unwrap_or_else(|r| panic!("WHEP at node1: {} {}", r.status, r.body));
    let relayed = Viewer::connect(&deployment.base(2), ROOM, "field-1")
        .await
        .unwrap_or_else(|r| panic!("WHEP at node2: {} {}", r.status, r.body));
    for viewer in [&local, &relayed] {
        viewer.wait_keyframes(1).await;
    }

    // Redis goes away for 3 s and comes back empty (no persistence here).
    deployment.redis.kill().await;
    let counts = [local.video().len(), relayed.video().len()];
    tokio::time::sleep(Duration::from_secs(3)).await;
    let during = [local.video().len(), relayed.video().len()];
    assert!(
        during[0] > counts[0] + 30 && during[1] > counts[1] + 30,
        "video flows while Redis is away: {counts:?} -> {during:?}"
    );
    deployment.redis.restart().await;
    let back = Instant::now();

    // The nodes write their heartbeats and directories again by themselves.
    let key = format!("vigil:stream:{ROOM}/field-1");
    loop {
        if deployment.live_nodes().await.len() == 3
            && deployment.redis.cli(&["GET", &key]).await == "node1"
        {
            break;
        }
        assert!(
            back.elapsed() < Duration::from_secs(10),
            "the deployment heals after Redis returns"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "directory and heartbeats back {:?} after Redis",
        back.elapsed()
    );
    // Nobody was reported lost: every session is still there, and plays.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(deployment.live_nodes().await, ["node1", "node2", "node3"]);
    for (viewer, before) in [(&local, during[0]), (&relayed, during[1])] {
        assert!(viewer.video().len() > before + 100, "video still flows");
        let alive = request("GET", &viewer.session.url, &[], "").await;
        assert_eq!(alive.status, 204);
    }
    let alive = request("GET", &publisher.session.url, &[], "").await;
    assert_eq!(alive.status, 204, "the publisher's session too");
    // A new viewer at a third node finds the stream again.
    let late = Viewer::connect(&deployment.base(3), ROOM, "field-1")
        .await
        .unwrap_or_else(|r| panic!("WHEP at node3: {} {}", r.status, r.body));
    late.wait_keyframes(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_camera_added_at_one_node_is_pulled_once_and_plays_at_every_node() {
    let camera = RtspServer::start(RtspOptions::default()).await;
    let deployment = Deployment::start(2, &[]).await;
    // A camera that node1 is to pull, added at node2: node1 hears of it
    // through the change notice.
    let nodes = ["node1".to_owned(), "node2".to_owned()];
    let room = vigil_control::RoomName::new(ROOM).unwrap();
    let identity = (0..)
        .map(|i| format!("gate-cam-{i}"))
        .find(|name| {
            let stream = vigil_control::StreamName::new(name).unwrap();
            vigil_gateway::camera::owner_of(&room, &stream, &nodes).map(String::as_str)
                == Some("node1")
        })
        .expect("some name hashes to node1");
    let mut node2 = clients_at(deployment.node(2).grpc).await;
    node2
        .rooms
        .add_camera(pb::AddCameraRequest {
            room: ROOM.into(),
            identity: identity.clone(),
            url: camera.url().to_owned(),
            ..Default::default()
        })
        .await
        .expect("AddCamera at node2");
    // One node pulls it (the placement's choice), and says so in the
    // stream directory.
    let key = format!("vigil:stream:{ROOM}/{identity}");
    let puller = eventually(Duration::from_secs(15), "the camera published", || async {
        let node = deployment.redis.cli(&["GET", &key]).await;
        (!node.is_empty()).then_some(node)
    })
    .await;
    assert_eq!(
        puller, "node1",
        "the placement's choice, not the node asked"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(camera.connections(), 1, "pulled by one node, not by each");
    for node in [1, 2] {
        let viewer = Viewer::connect(&deployment.base(node), ROOM, &identity)
            .await
            .unwrap_or_else(|r| panic!("WHEP at node{node}: {} {}", r.status, r.body));
        viewer.wait_keyframes(1).await;
    }
    assert_eq!(camera.connections(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_and_end_call_through_other_nodes_act_where_the_call_is() {
    let deployment = Deployment::start(3, &[]).await;
    let base1 = deployment.base(1);
    // The dispatcher's desk and a field user, both at node1.
    let mut desk = Publisher::connect(&base1, ROOM, "desk").await;
    desk.start_media();
    let _field = Publisher::connect(&base1, ROOM, "field-1").await;
    let mut node3 = clients_at(deployment.node(3).grpc).await;
    let asked = Instant::now();
    let call = node3
        .rooms
        .call(pb::CallRequest {
            room: ROOM.into(),
            caller: "desk".into(),
            callee: "field-1".into(),
        })
        .await
        .expect("Call through node3")
        .into_inner();
    eprintln!("Call through node3 rang at node1 in {:?}", asked.elapsed());
    assert_eq!(call.whep_path, format!("/whep/{ROOM}/desk"));
    // The callee answers by playing the caller at its node.
    let answer = Viewer::connect(&base1, ROOM, "desk")
        .await
        .unwrap_or_else(|r| panic!("the callee's WHEP: {} {}", r.status, r.body));
    answer.wait_keyframes(1).await;

    let mut node2 = clients_at(deployment.node(2).grpc).await;
    let ended = node2
        .rooms
        .end_call(pb::EndCallRequest {
            room: ROOM.into(),
            callee: "field-1".into(),
        })
        .await
        .expect("EndCall through node2")
        .into_inner();
    assert!(ended.sessions_closed >= 1, "{ended:?}");
    let again = node2
        .rooms
        .end_call(pb::EndCallRequest {
            room: ROOM.into(),
            callee: "field-1".into(),
        })
        .await
        .expect_err("the call is over");
    assert_eq!(again.code(), tonic::Code::NotFound, "{again:?}");
}
