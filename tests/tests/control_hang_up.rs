//! HangUp over gRPC closes a participant's real WebRTC sessions, tells the
//! event feed why, and leaves everyone else connected.

use std::time::{Duration, Instant};

use bytes::Bytes;
use tonic::Code;
use vigil_proto::v1 as pb;
use vigil_proto::v1::event::Kind;
use vigil_tests::control::{Scene, Watcher, admin, now_unix, publish_and_subscribe};
use vigil_tests::eventually;
use vigil_tests::http_client::request;
use vigil_tests::peers::{Publisher, Viewer};
use webrtc::peer_connection::RTCPeerConnectionState;

const ROOM: &str = "site-1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hang_up_closes_the_publisher_and_says_why() {
    let mut scene = Scene::new(ROOM).await;
    let mut watcher = scene.watch_room().await;
    let publisher = scene.publisher("field-1").await;
    let _viewer = scene.viewer("field-1", "dispatcher").await;
    // Both tracks are known to the control plane before hanging up.
    let mut published = 0;
    watcher
        .wait_for(Duration::from_secs(10), "both TrackPublished", |e| {
            if e.identity == "field-1" && matches!(e.kind, Some(Kind::TrackPublished(_))) {
                published += 1;
            }
            (published == 2).then_some(())
        })
        .await;

    let closed = scene.hang_up("field-1", 0).await;
    assert!(closed >= 1, "HangUp closed {closed} sessions");
    let hung_up = Instant::now();

    let state = publisher.peer.wait_left(Duration::from_secs(10)).await;
    eprintln!(
        "publisher's peer connection {state:?} {:?} after HangUp",
        hung_up.elapsed()
    );

    let get = request("GET", &publisher.session.url, &[], Bytes::new()).await;
    assert_eq!(get.status, 404, "GET on the hung-up WHIP session");

    let mut unpublished = Vec::new();
    let left = watcher
        .wait_for(Duration::from_secs(5), "ParticipantLeft of field-1", |e| {
            if e.identity != "field-1" {
                return None;
            }
            match &e.kind {
                Some(Kind::TrackUnpublished(t)) => {
                    unpublished.push(t.kind);
                    None
                }
                Some(Kind::ParticipantLeft(left)) => Some(left.clone()),
                _ => None,
            }
        })
        .await;
    assert_eq!(
        left.reason,
        pb::LeaveReason::HungUp as i32,
        "ParticipantLeft reason: {left:?}"
    );
    assert_eq!(left.role, pb::SessionRole::Publisher as i32);
    assert_eq!(left.stream, "field-1");
    unpublished.sort_unstable();
    assert_eq!(
        unpublished,
        [pb::TrackKind::Audio as i32, pb::TrackKind::Video as i32],
        "TrackUnpublished for both tracks before ParticipantLeft"
    );

    let unknown = scene
        .clients
        .rooms
        .hang_up(admin(pb::HangUpRequest {
            room: ROOM.into(),
            identity: "nobody".into(),
            ..Default::default()
        }))
        .await
        .expect_err("HangUp of an unknown identity");
    assert_eq!(unknown.code(), Code::NotFound, "{unknown}");
    scene.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hang_up_of_a_viewer_closes_only_that_viewer() {
    let mut scene = Scene::new(ROOM).await;
    let mut watcher = scene.watch_room().await;
    let publisher = scene.publisher("field-1").await;
    let dispatcher = scene.viewer("field-1", "dispatcher").await;
    let supervisor = scene.viewer("field-1", "supervisor").await;

    let closed = scene.hang_up("dispatcher", 0).await;
    assert_eq!(closed, 1, "only the dispatcher's one session");

    dispatcher.peer.wait_left(Duration::from_secs(10)).await;
    let get = request("GET", &dispatcher.session.url, &[], Bytes::new()).await;
    assert_eq!(get.status, 404, "GET on the hung-up WHEP session");

    let left = watcher
        .wait_for(
            Duration::from_secs(5),
            "ParticipantLeft of dispatcher",
            |e| match &e.kind {
                Some(Kind::ParticipantLeft(left)) if e.identity == "dispatcher" => {
                    Some(left.clone())
                }
                _ => None,
            },
        )
        .await;
    assert_eq!(left.reason, pb::LeaveReason::HungUp as i32, "{left:?}");
    assert_eq!(left.role, pb::SessionRole::Viewer as i32);
    assert_eq!(left.stream, "field-1");

    // The others are untouched: the publisher's and the supervisor's
    // sessions exist and the supervisor keeps receiving video.
    for (who, url) in [
        ("publisher", &publisher.session.url),
        ("supervisor", &supervisor.session.url),
    ] {
        let get = request("GET", url, &[], Bytes::new()).await;
        assert_eq!(get.status, 204, "GET on the {who}'s session");
    }
    assert_eq!(
        *publisher.peer.state.borrow(),
        RTCPeerConnectionState::Connected
    );
    let before = supervisor.video().len();
    eventually(
        Duration::from_secs(5),
        "more video at the supervisor",
        || async { (supervisor.video().len() > before + 30).then_some(()) },
    )
    .await;
    scene.shutdown().await;
}

/// A hang-up with a ban is a kick that sticks: the field user's reload (a
/// new WHIP with the same token) is refused with a clear 403 until the ban
/// ends, and then it is welcome again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hang_up_with_a_ban_keeps_the_identity_out_until_it_ends() {
    let mut scene = Scene::new(ROOM).await;
    let token = scene.token("field-1", publish_and_subscribe()).await;
    let mut publisher = Publisher::connect_as(&scene.base, ROOM, "field-1", &token)
        .await
        .unwrap_or_else(|r| panic!("WHIP: {} {}", r.status, r.body));
    publisher.start_media();

    let closed = scene.hang_up("field-1", 3).await;
    assert_eq!(closed, 1);
    let banned_at = Instant::now();

    let refused = Publisher::connect_as(&scene.base, ROOM, "field-1", &token)
        .await
        .err()
        .expect("the reload is refused while banned");
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert!(refused.body.contains("kept out"), "{}", refused.body);
    let watch = Viewer::connect_as(&scene.base, ROOM, "field-2", Some(&token))
        .await
        .err()
        .expect("playing is refused too");
    assert_eq!(watch.status, 403, "{}", watch.body);
    // Someone else is not affected.
    let _other = scene.publisher("field-2").await;

    tokio::time::sleep(Duration::from_secs(3).saturating_sub(banned_at.elapsed())).await;
    let _back = Publisher::connect_as(&scene.base, ROOM, "field-1", &token)
        .await
        .unwrap_or_else(|r| panic!("after the ban: {} {}", r.status, r.body));
    scene.shutdown().await;
}

/// The bans in a BansChanged event, as (identity, until).
async fn next_bans(watcher: &mut Watcher) -> Vec<(String, i64)> {
    watcher
        .wait_for(Duration::from_secs(5), "BansChanged", |e| match &e.kind {
            Some(Kind::BansChanged(b)) => Some(
                b.bans
                    .iter()
                    .map(|b| (b.identity.clone(), b.until_unix_ms))
                    .collect(),
            ),
            _ => None,
        })
        .await
}

/// A hang-up by mistake: LiftBan lets the identity back in at once, and
/// says whether there was a ban to lift. GetRoom lists the bans in force,
/// and the room's watchers hear of each change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lift_ban_lets_the_identity_back_at_once() {
    let mut scene = Scene::new(ROOM).await;
    let mut watcher = scene.watch_room().await;
    let token = scene.token("field-1", publish_and_subscribe()).await;
    let lift = |identity: &str| {
        admin(pb::LiftBanRequest {
            room: ROOM.into(),
            identity: identity.into(),
        })
    };
    let mut rooms = scene.clients.rooms.clone();
    let none = rooms.lift_ban(lift("field-1")).await.expect("LiftBan");
    assert!(!none.into_inner().lifted, "nobody was banned yet");

    let before = now_unix() as i64 * 1000;
    scene.hang_up("field-1", 600).await;
    let bans = next_bans(&mut watcher).await;
    assert_eq!(bans.len(), 1, "{bans:?}");
    let (identity, until) = &bans[0];
    assert_eq!(identity, "field-1");
    assert!(
        (before + 599_000..=before + 602_000).contains(until),
        "ends in ten minutes: {until} vs now {before}"
    );
    let listed = scene.room_state().await.bans;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].until_unix_ms, *until);
    let refused = Publisher::connect_as(&scene.base, ROOM, "field-1", &token)
        .await
        .err()
        .expect("refused while banned");
    assert_eq!(refused.status, 403, "{}", refused.body);

    let lifted = rooms.lift_ban(lift("field-1")).await.expect("LiftBan");
    assert!(lifted.into_inner().lifted);
    assert_eq!(next_bans(&mut watcher).await, []);
    assert!(scene.room_state().await.bans.is_empty());
    let _back = Publisher::connect_as(&scene.base, ROOM, "field-1", &token)
        .await
        .unwrap_or_else(|r| panic!("after LiftBan: {} {}", r.status, r.body));
    let again = rooms.lift_ban(lift("field-1")).await.expect("LiftBan");
    assert!(!again.into_inner().lifted, "lifted already");

    let unknown = rooms
        .lift_ban(admin(pb::LiftBanRequest {
            room: "no-such-room".into(),
            identity: "field-1".into(),
        }))
        .await
        .expect_err("LiftBan in a missing room");
    assert_eq!(unknown.code(), Code::NotFound, "{unknown}");
    scene.shutdown().await;
}
