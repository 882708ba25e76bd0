//! Same-identity takeover: a publisher that lost its network comes back
//! with its token while the server still holds its old session. The new
//! WHIP POST replaces the old session at once (no 409 for the ≈ 30 s until
//! the old one times out), the old session is closed and reported as
//! `REPLACED`, and its viewers keep their connection and play the new
//! publisher's media, numbered on.

use std::time::Duration;

use bytes::Bytes;
use vigil_proto::v1 as pb;
use vigil_proto::v1::event::Kind;
use vigil_tests::control::{Scene, publish_and_subscribe};
use vigil_tests::eventually;
use vigil_tests::http_client::request;
use vigil_tests::peers::{Publisher, ReceivedPacket, Viewer};
use webrtc::peer_connection::RTCPeerConnectionState;

const ROOM: &str = "site-1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_identity_takes_its_stream_over_and_viewers_stay() {
    let mut scene = Scene::new(ROOM).await;
    let mut watcher = scene.watch_room().await;
    let token = scene.token("field-1", publish_and_subscribe()).await;
    let mut old = Publisher::connect_as(&scene.base, ROOM, "field-1", &token)
        .await
        .unwrap_or_else(|r| panic!("first WHIP: {} {}", r.status, r.body));
    old.start_media();
    let viewer = scene.viewer("field-1", "dispatcher").await;
    let old_joined = watcher
        .wait_for(
            Duration::from_secs(10),
            "the first session's join",
            |e| match &e.kind {
                Some(Kind::ParticipantJoined(j))
                    if e.identity == "field-1" && j.role == pb::SessionRole::Publisher as i32 =>
                {
                    Some(e.id)
                }
                _ => None,
            },
        )
        .await;

    // The phone loses its network: it stops sending, and the server does
    // not know yet (no DELETE, no DTLS close, ICE not timed out).
    old.stop_media();
    let before = settled_video(&viewer).await;

    let mut new = Publisher::connect_as(&scene.base, ROOM, "field-1", &token)
        .await
        .unwrap_or_else(|r| {
            panic!(
                "WHIP by the same identity while its old session is up: {} {}",
                r.status, r.body
            )
        });
    new.start_media();

    // The old session is gone, closed by the server and reported.
    let get = request("GET", &old.session.url, &[], Bytes::new()).await;
    assert_eq!(get.status, 404, "the replaced session's resource is gone");
    let left = watcher
        .wait_for(
            Duration::from_secs(5),
            "ParticipantLeft of the old session",
            |e| match &e.kind {
                Some(Kind::ParticipantLeft(l))
                    if e.identity == "field-1" && l.role == pb::SessionRole::Publisher as i32 =>
                {
                    Some((e.id, l.reason))
                }
                _ => None,
            },
        )
        .await;
    assert!(left.0 > old_joined);
    assert_eq!(
        left.1,
        pb::LeaveReason::Replaced as i32,
        "the old session's leave reason"
    );
    watcher
        .wait_for(Duration::from_secs(5), "the new session's join", |e| {
            matches!(&e.kind, Some(Kind::ParticipantJoined(j))
                if e.identity == "field-1" && j.role == pb::SessionRole::Publisher as i32)
            .then_some(())
        })
        .await;
    old.peer.wait_left(Duration::from_secs(10)).await;

    // The viewer never reconnected: the same session plays the new media,
    // on the same SSRC, numbered on, starting at a keyframe.
    eventually(
        Duration::from_secs(10),
        "video from the new session",
        || async { (viewer.video().len() > before.len() + 30).then_some(()) },
    )
    .await;
    let after = viewer.video();
    let last_old = before.last().expect("video before the takeover");
    let first_new = &after[before.len()];
    assert_eq!(first_new.header.ssrc, last_old.header.ssrc, "same SSRC");
    assert_eq!(
        first_new.header.sequence_number,
        last_old.header.sequence_number.wrapping_add(1),
        "sequence numbers continue"
    );
    assert!(
        first_new.keyframe_start(),
        "the new media starts at a keyframe"
    );
    assert_eq!(
        *viewer.peer.state.borrow(),
        RTCPeerConnectionState::Connected
    );
    let get = request("GET", &viewer.session.url, &[], Bytes::new()).await;
    assert!(
        (200..300).contains(&get.status),
        "the viewer's session stays"
    );

    // Still listed as publishing, watched by the one viewer; the server
    // holds one publisher session.
    let participant = scene.participant("field-1").await;
    assert!(participant.publishing, "{participant:?}");
    assert_eq!(participant.viewer_count, 1, "{participant:?}");
    let stats = scene.vigil.sfu.stats().await.expect("stats");
    assert_eq!(stats.publishers, 1, "{stats:?}");
    scene.shutdown().await;
}

/// The viewer's video once nothing more has arrived for 300 ms: the old
/// publisher's last packets may still be in flight when it stops.
async fn settled_video(viewer: &Viewer) -> Vec<ReceivedPacket> {
    let mut seen = viewer.video();
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = viewer.video();
        if now.len() == seen.len() {
            return now;
        }
        seen = now;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_takeover_leaves_the_live_publisher_alone() {
    let mut scene = Scene::new(ROOM).await;
    let token = scene.token("field-1", publish_and_subscribe()).await;
    let mut live = Publisher::connect_as(&scene.base, ROOM, "field-1", &token)
        .await
        .unwrap_or_else(|r| panic!("first WHIP: {} {}", r.status, r.body));
    live.start_media();
    let viewer = scene.viewer("field-1", "dispatcher").await;

    // A takeover whose offer cannot be negotiated (no media at all).
    let bad_offer = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n";
    let response = request(
        "POST",
        &format!("{}/whip/{ROOM}/field-1", scene.base),
        &[
            ("content-type", "application/sdp"),
            ("authorization", &format!("Bearer {token}")),
        ],
        bad_offer.to_owned(),
    )
    .await;
    assert!(
        (400..500).contains(&response.status),
        "an unusable offer is refused: {} {}",
        response.status,
        response.body
    );

    let get = request("GET", &live.session.url, &[], Bytes::new()).await;
    assert!((200..300).contains(&get.status), "the live session stays");
    let seen = viewer.video().len();
    eventually(Duration::from_secs(5), "video still flowing", || async {
        (viewer.video().len() > seen + 30).then_some(())
    })
    .await;

    // And a real takeover still works afterwards.
    let _new = Publisher::connect_as(&scene.base, ROOM, "field-1", &token)
        .await
        .unwrap_or_else(|r| panic!("takeover after a failed one: {} {}", r.status, r.body));
    let get = request("GET", &live.session.url, &[], Bytes::new()).await;
    assert_eq!(get.status, 404, "replaced by the successful takeover");
    scene.shutdown().await;
}
