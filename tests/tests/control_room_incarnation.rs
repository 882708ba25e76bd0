//! A room deleted and created again under the same name is a new room: the
//! tokens issued for the first one are refused everywhere a token is
//! accepted (WHIP/WHEP 401, room-admin RPCs and Watch UNAUTHENTICATED), with
//! a message that says why, and the new room's tokens work. Without
//! authentication nothing changes.

use tonic::Code;
use vigil_proto::v1 as pb;
use vigil_tests::conformance::{assert_problem, obs_offer, recvonly_offer};
use vigil_tests::control::{
    Scene, admin, clients, create_room, publish_and_subscribe, subscribe_only, with_bearer,
};
use vigil_tests::http_client::post_sdp_as;
use vigil_tests::peers::Publisher;
use vigil_tests::{base_url, start_server};

const ROOM: &str = "site-1";
const EARLIER: &str = "issued for an earlier room named site-1";

/// A room admin token (a dispatcher's).
fn dispatcher() -> pb::Grants {
    pb::Grants {
        subscribe: true,
        admin: true,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recreated_room_refuses_the_earlier_rooms_tokens() {
    let mut scene = Scene::new(ROOM).await;
    let first = scene.room_state().await;
    assert_ne!(first.incarnation, 0, "a new room has an incarnation");
    let old_publisher = scene.token("cam-1", publish_and_subscribe()).await;
    let old_viewer = scene.token("viewer-1", subscribe_only()).await;
    let old_dispatcher = scene.token("dispatcher-1", dispatcher()).await;

    scene
        .clients
        .rooms
        .delete_room(admin(pb::DeleteRoomRequest { name: ROOM.into() }))
        .await
        .expect("DeleteRoom");
    let second = create_room(&mut scene.clients, ROOM).await;
    assert_ne!(second.incarnation, first.incarnation);

    // WHIP and WHEP: 401 with the reason, in the body and the challenge.
    let whip = post_sdp_as(
        &format!("{}/whip/{ROOM}/cam-1", scene.base),
        &obs_offer(),
        Some(&old_publisher),
    )
    .await;
    assert_problem(&whip, 401, "WHIP with the earlier room's token");
    assert!(whip.body.contains(EARLIER), "{}", whip.body);
    let challenge = whip.header("www-authenticate").unwrap_or_default();
    assert!(
        challenge.starts_with("Bearer ") && challenge.contains(EARLIER),
        "{challenge:?}"
    );
    let whep = post_sdp_as(
        &format!("{}/whep/{ROOM}/cam-1", scene.base),
        &recvonly_offer(),
        Some(&old_viewer),
    )
    .await;
    assert_problem(&whep, 401, "WHEP with the earlier room's token");
    assert!(whep.body.contains(EARLIER), "{}", whep.body);

    // The room-admin RPCs and the event feed.
    let refused = scene
        .clients
        .rooms
        .get_room(with_bearer(
            pb::GetRoomRequest { name: ROOM.into() },
            &old_dispatcher,
        ))
        .await
        .expect_err("GetRoom with the earlier room's admin token");
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused}");
    assert!(refused.message().contains(EARLIER), "{refused}");
    for token in [&old_viewer, &old_dispatcher] {
        let refused = scene
            .clients
            .events
            .watch(with_bearer(pb::WatchRequest::default(), token))
            .await
            .expect_err("Watch with the earlier room's token");
        assert_eq!(refused.code(), Code::Unauthenticated, "{refused}");
        assert!(refused.message().contains(EARLIER), "{refused}");
    }

    // The new room's tokens work.
    let publisher = scene.publisher("cam-1").await;
    let new_dispatcher = scene.token("dispatcher-1", dispatcher()).await;
    scene
        .clients
        .rooms
        .get_room(with_bearer(
            pb::GetRoomRequest { name: ROOM.into() },
            &new_dispatcher,
        ))
        .await
        .expect("GetRoom with the new room's admin token");
    assert!(scene.participant("cam-1").await.publishing);
    assert_eq!(publisher.delete().await, 200);
    scene.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_authentication_a_recreated_room_takes_publishers_as_before() {
    let vigil = start_server(|_| {}).await;
    let mut c = clients(&vigil).await;
    create_room(&mut c, ROOM).await;
    c.rooms
        .delete_room(pb::DeleteRoomRequest { name: ROOM.into() })
        .await
        .expect("DeleteRoom");
    create_room(&mut c, ROOM).await;
    let publisher = Publisher::connect(&base_url(&vigil), ROOM, "cam-1").await;
    assert_eq!(publisher.delete().await, 200);
    vigil.shutdown().await;
}
