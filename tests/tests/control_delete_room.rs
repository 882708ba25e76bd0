//! DeleteRoom over gRPC hangs up every session in the room, reports each
//! leave and then the room's deletion, and the room stays gone.

use std::time::Duration;

use bytes::Bytes;
use vigil_proto::v1 as pb;
use vigil_proto::v1::event::Kind;
use vigil_tests::base_url;
use vigil_tests::control::{
    ADMIN_KEY, Watcher, admin, clients, create_room, publish_and_subscribe, secure_server,
    subscribe_only, token,
};
use vigil_tests::http_client::request;
use vigil_tests::peers::{Publisher, Viewer};

const ROOM: &str = "site-1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_room_hangs_up_everyone() {
    let vigil = secure_server(|_| {}).await;
    let base = base_url(&vigil);
    let mut c = clients(&vigil).await;
    create_room(&mut c, ROOM).await;
    let field_token = token(&mut c, ROOM, "field-1", publish_and_subscribe()).await;
    let viewer_tokens = [
        token(&mut c, ROOM, "dispatcher", subscribe_only()).await,
        token(&mut c, ROOM, "supervisor", subscribe_only()).await,
    ];
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
    let mut viewers = Vec::new();
    for viewer_token in &viewer_tokens {
        let viewer = Viewer::connect_as(&base, ROOM, "field-1", Some(viewer_token))
            .await
            .unwrap_or_else(|r| panic!("WHEP: {} {}", r.status, r.body));
        viewer.peer.wait_connected().await;
        viewer.wait_video().await;
        viewers.push(viewer);
    }
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

    let closed = c
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

    let again = Publisher::connect_as(&base, ROOM, "field-1", &field_token).await;
    match again {
        Ok(_) => panic!("WHIP to the deleted room was accepted"),
        Err(response) => assert_eq!(
            response.status, 404,
            "WHIP to the deleted room: {}",
            response.body
        ),
    }
    vigil.shutdown().await;
}
