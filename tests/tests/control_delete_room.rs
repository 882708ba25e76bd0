//! DeleteRoom over gRPC hangs up every session in the room, reports each
//! leave and then the room's deletion, and the room stays gone: its
//! tokens neither publish nor watch its events.

use std::time::Duration;

use bytes::Bytes;
use vigil_proto::v1 as pb;
use vigil_proto::v1::event::Kind;
use vigil_proto::v1::event_service_client::EventServiceClient;
use vigil_tests::control::{Scene, admin, channel, publish_and_subscribe, with_bearer};
use vigil_tests::http_client::request;
use vigil_tests::peers::Publisher;

const ROOM: &str = "site-1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_room_hangs_up_everyone() {
    let mut scene = Scene::new(ROOM).await;
    // For a WHIP after the room is gone, when no token can be issued for it.
    let field_token = scene.token("field-1", publish_and_subscribe()).await;
    let mut watcher = scene.watch_room().await;
    let publisher = scene.publisher("field-1").await;
    let viewers = [
        scene.viewer("field-1", "dispatcher").await,
        scene.viewer("field-1", "supervisor").await,
    ];
    // All three sessions are known to the control plane.
    let mut joined = 0;
    watcher
        .wait_for(Duration::from_secs(5), "three ParticipantJoined", |e| {
            if matches!(e.kind, Some(Kind::ParticipantJoined(_))) {
                joined += 1;
            }
            (joined == 3).then_some(())
        })
        .await;

    let closed = scene
        .clients
        .rooms
        .delete_room(admin(pb::DeleteRoomRequest { name: ROOM.into() }))
        .await
        .expect("DeleteRoom")
        .into_inner()
        .sessions_closed;
    assert_eq!(closed, 3, "publisher and two viewers hung up");

    let urls = [
        &publisher.session.url,
        &viewers[0].session.url,
        &viewers[1].session.url,
    ];
    for url in urls {
        let get = request("GET", url, &[], Bytes::new()).await;
        assert_eq!(get.status, 404, "GET {url} after DeleteRoom");
    }

    let mut left = Vec::new();
    watcher
        .wait_for(Duration::from_secs(5), "RoomDeleted", |e| match &e.kind {
            Some(Kind::ParticipantLeft(l)) => {
                left.push((e.identity.clone(), l.reason));
                None
            }
            Some(Kind::RoomDeleted(_)) => Some(()),
            _ => None,
        })
        .await;
    left.sort();
    let closed_reason = pb::LeaveReason::RoomClosed as i32;
    assert_eq!(
        left,
        [
            ("dispatcher".to_owned(), closed_reason),
            ("field-1".to_owned(), closed_reason),
            ("supervisor".to_owned(), closed_reason),
        ],
        "three ParticipantLeft with ROOM_CLOSED before RoomDeleted"
    );

    let again = Publisher::connect_as(&scene.base, ROOM, "field-1", &field_token).await;
    match again {
        Ok(_) => panic!("WHIP to the deleted room was accepted"),
        Err(response) => assert_eq!(
            response.status, 404,
            "WHIP to the deleted room: {}",
            response.body
        ),
    }

    // Its join page learns it up front: the token's event feed is refused.
    let mut events = EventServiceClient::new(channel(&scene.vigil).await);
    let refused = events
        .watch(with_bearer(
            pb::WatchRequest {
                room: ROOM.into(),
                ..Default::default()
            },
            &field_token,
        ))
        .await
        .map(|_| ())
        .expect_err("Watch of the deleted room with its token");
    assert_eq!(refused.code(), tonic::Code::NotFound, "{refused}");
    scene.shutdown().await;
}
