//! Call over gRPC delivers the request to the callee's own event feed (read
//! with its participant token), the callee plays the caller's stream with
//! WHEP, and nobody else hears about the call. The server owns the call's
//! state: it refuses calls that cannot connect, reports ringing, connected
//! and ended as events, lets the callee play its caller without the
//! subscribe grant only during the call, and EndCall stops both sides'
//! media.

use std::time::Duration;

use tonic::Code;
use vigil_proto::v1 as pb;
use vigil_proto::v1::event::Kind;
use vigil_tests::control::{Scene, Watcher, admin, publish_and_subscribe};
use vigil_tests::peers::{Publisher, Viewer};
use webrtc::peer_connection::RTCPeerConnectionState;

const ROOM: &str = "site-1";

fn call_request(caller: &str, callee: &str) -> tonic::Request<pb::CallRequest> {
    admin(pb::CallRequest {
        room: ROOM.into(),
        caller: caller.into(),
        callee: callee.into(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_reaches_the_callee_who_plays_the_caller() {
    let mut scene = Scene::new(ROOM).await;
    let _dispatcher = scene.publisher("dispatcher").await;
    let _field = scene.publisher("field-1").await;
    // field-1 reads its own feed with its own token, not the admin key.
    let field_token = scene.token("field-1", publish_and_subscribe()).await;
    let mut field_feed =
        Watcher::start(&scene.vigil, &field_token, pb::WatchRequest::default()).await;

    let whep_path = scene
        .clients
        .rooms
        .call(call_request("dispatcher", "field-1"))
        .await
        .expect("Call")
        .into_inner()
        .whep_path;
    assert_eq!(whep_path, format!("/whep/{ROOM}/dispatcher"));

    let (event, requested) = field_feed
        .wait_for(Duration::from_secs(5), "CallRequested", |e| match &e.kind {
            Some(Kind::CallRequested(call)) => Some((e.clone(), call.clone())),
            _ => None,
        })
        .await;
    assert_eq!(event.room, ROOM);
    assert_eq!(event.identity, "field-1");
    assert_eq!(requested.caller, "dispatcher");
    assert_eq!(requested.callee, "field-1");
    assert_eq!(requested.whep_path, whep_path);

    // The call-back: field-1 plays the path it was given, as itself.
    let (room, stream) = requested
        .whep_path
        .strip_prefix("/whep/")
        .and_then(|rest| rest.split_once('/'))
        .unwrap_or_else(|| panic!("not a WHEP path: {}", requested.whep_path));
    let viewer = Viewer::connect_as(&scene.base, room, stream, Some(&field_token))
        .await
        .unwrap_or_else(|r| panic!("WHEP {}: {} {}", requested.whep_path, r.status, r.body));
    viewer.peer.wait_connected().await;
    viewer.wait_video().await;
    scene.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_from_a_caller_who_is_not_publishing_fails() {
    let mut scene = Scene::new(ROOM).await;
    let refused = scene
        .clients
        .rooms
        .call(call_request("dispatcher", "field-1"))
        .await
        .expect_err("Call without publishing");
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused}");
    scene.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_participant_does_not_see_another_participants_call() {
    let mut scene = Scene::new(ROOM).await;
    let _dispatcher = scene.publisher("dispatcher").await;
    let _field_1 = scene.publisher("field-1").await;
    let _field_2 = scene.publisher("field-2").await;
    let field_token = scene.token("field-1", publish_and_subscribe()).await;
    let other_token = scene.token("field-2", publish_and_subscribe()).await;
    let mut field_feed =
        Watcher::start(&scene.vigil, &field_token, pb::WatchRequest::default()).await;
    let mut other_feed =
        Watcher::start(&scene.vigil, &other_token, pb::WatchRequest::default()).await;

    scene
        .clients
        .rooms
        .call(call_request("dispatcher", "field-1"))
        .await
        .expect("Call");
    field_feed
        .wait_for(Duration::from_secs(5), "CallRequested at field-1", |e| {
            matches!(e.kind, Some(Kind::CallRequested(_))).then_some(())
        })
        .await;
    // The one bounded wait for absence: field-2's feed had a second to
    // deliver the call after field-1's did.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut leaked: Vec<_> = other_feed
        .drain()
        .into_iter()
        .filter(|e| matches!(e.kind, Some(Kind::CallRequested(_))))
        .collect();
    // field-2's feed works: its own call arrives, and the feed is in bus
    // order, so a leaked call to field-1 would have come before it.
    scene
        .clients
        .rooms
        .call(call_request("dispatcher", "field-2"))
        .await
        .expect("Call field-2");
    other_feed
        .wait_for(
            Duration::from_secs(5),
            "CallRequested at field-2",
            |e| match &e.kind {
                Some(Kind::CallRequested(call)) if call.callee == "field-2" => Some(()),
                Some(Kind::CallRequested(_)) => {
                    leaked.push(e.clone());
                    None
                }
                _ => None,
            },
        )
        .await;
    assert!(leaked.is_empty(), "field-2 saw field-1's call: {leaked:?}");
    scene.shutdown().await;
}

fn end_call_request(callee: &str) -> tonic::Request<pb::EndCallRequest> {
    admin(pb::EndCallRequest {
        room: ROOM.into(),
        callee: callee.into(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_that_cannot_connect_are_refused() {
    let mut scene = Scene::new(ROOM).await;
    let _a = scene.publisher("dispatcher-a").await;
    let _b = scene.publisher("dispatcher-b").await;
    let _field = scene.publisher("field-1").await;

    let absent = scene
        .clients
        .rooms
        .call(call_request("dispatcher-a", "nobody"))
        .await
        .expect_err("Call to someone not in the room");
    assert_eq!(absent.code(), Code::NotFound, "{absent}");

    scene
        .clients
        .rooms
        .call(call_request("dispatcher-a", "field-1"))
        .await
        .expect("Call");
    let busy = scene
        .clients
        .rooms
        .call(call_request("dispatcher-b", "field-1"))
        .await
        .expect_err("a second caller");
    assert_eq!(busy.code(), Code::FailedPrecondition, "{busy}");
    assert!(busy.message().contains("dispatcher-a"), "{busy}");

    let none = scene
        .clients
        .rooms
        .end_call(end_call_request("dispatcher-b"))
        .await
        .expect_err("EndCall of someone in no call");
    assert_eq!(none.code(), Code::NotFound, "{none}");
    scene.shutdown().await;
}

/// README's field token is publish-only: the call itself lets the callee
/// play its caller, and only its caller, and only while the call lasts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_connects_a_publish_only_callee_and_end_call_stops_both_sides() {
    let mut scene = Scene::new(ROOM).await;
    let mut watcher = scene.watch_room().await;
    let dispatcher = scene.publisher("dispatcher").await;
    let _other = scene.publisher("field-2").await;
    let field_token = scene
        .token(
            "field-1",
            pb::Grants {
                publish: true,
                ..Default::default()
            },
        )
        .await;
    let mut field = Publisher::connect_as(&scene.base, ROOM, "field-1", &field_token)
        .await
        .unwrap_or_else(|r| panic!("field-1 WHIP: {} {}", r.status, r.body));
    field.start_media();

    let before = Viewer::connect_as(&scene.base, ROOM, "dispatcher", Some(&field_token))
        .await
        .err()
        .expect("no call yet: no subscribe grant");
    assert_eq!(before.status, 403, "{}", before.body);

    let call = scene
        .clients
        .rooms
        .call(call_request("dispatcher", "field-1"))
        .await
        .expect("Call")
        .into_inner();
    let player = Viewer::connect_as(&scene.base, ROOM, "dispatcher", Some(&field_token))
        .await
        .unwrap_or_else(|r| panic!("the callee plays its caller: {} {}", r.status, r.body));
    player.peer.wait_connected().await;
    player.wait_video().await;
    let other = Viewer::connect_as(&scene.base, ROOM, "field-2", Some(&field_token))
        .await
        .err()
        .expect("the call grants the caller's stream only");
    assert_eq!(other.status, 403, "{}", other.body);

    let mut states = Vec::new();
    watcher
        .wait_for(Duration::from_secs(10), "CallConnected", |e| {
            match &e.kind {
                Some(Kind::CallRequested(r)) => {
                    assert_eq!(r.call_id, call.call_id);
                    states.push("ringing");
                    None
                }
                Some(Kind::CallConnected(c)) => {
                    assert_eq!(c.call_id, call.call_id);
                    assert_eq!(e.identity, "field-1");
                    states.push("connected");
                    Some(())
                }
                _ => None,
            }
        })
        .await;
    assert_eq!(states, ["ringing", "connected"]);

    let closed_sessions = scene
        .clients
        .rooms
        .end_call(end_call_request("field-1"))
        .await
        .expect("EndCall")
        .into_inner()
        .sessions_closed;
    assert_eq!(
        closed_sessions, 2,
        "the callee's player and the caller's stream"
    );
    let ended = watcher
        .wait_for(Duration::from_secs(5), "CallEnded", |e| match &e.kind {
            Some(Kind::CallEnded(c)) => Some(c.clone()),
            _ => None,
        })
        .await;
    assert_eq!(ended.call_id, call.call_id);
    assert_eq!(ended.reason, pb::CallEndReason::Ended as i32);
    let mut left = Vec::new();
    watcher
        .wait_for(Duration::from_secs(5), "both sides' ParticipantLeft", |e| {
            if let Some(Kind::ParticipantLeft(l)) = &e.kind {
                left.push((e.identity.clone(), l.reason));
            }
            (left.len() == 2).then_some(())
        })
        .await;
    left.sort();
    let call_ended = pb::LeaveReason::CallEnded as i32;
    assert_eq!(
        left,
        [
            ("dispatcher".to_owned(), call_ended),
            ("field-1".to_owned(), call_ended)
        ]
    );
    // Both sides' media stopped: the callee's player and the caller's
    // camera; the callee's own stream goes on.
    player.peer.wait_left(Duration::from_secs(10)).await;
    dispatcher.peer.wait_left(Duration::from_secs(10)).await;
    assert_eq!(
        *field.peer.state.borrow(),
        RTCPeerConnectionState::Connected
    );

    let after = Viewer::connect_as(&scene.base, ROOM, "dispatcher", Some(&field_token))
        .await
        .err()
        .expect("the call is over: no grant any more");
    assert!(
        matches!(after.status, 403 | 409),
        "{} {}",
        after.status,
        after.body
    );
    scene.shutdown().await;
}

/// A dispatcher (a wall's identity, joined with the room's admin grant) is
/// told apart from field cameras: in its join event and in the list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dispatchers_are_marked_apart_from_cameras() {
    let mut scene = Scene::new(ROOM).await;
    let mut watcher = scene.watch_room().await;
    let admin_token = scene
        .token(
            "dispatcher",
            pb::Grants {
                admin: true,
                ..Default::default()
            },
        )
        .await;
    let mut dispatcher = Publisher::connect_as(&scene.base, ROOM, "dispatcher", &admin_token)
        .await
        .unwrap_or_else(|r| panic!("dispatcher WHIP: {} {}", r.status, r.body));
    dispatcher.start_media();
    let _field = scene.publisher("field-1").await;

    let mut joined = Vec::new();
    watcher
        .wait_for(Duration::from_secs(10), "both publishers' joins", |e| {
            if let Some(Kind::ParticipantJoined(j)) = &e.kind {
                joined.push((e.identity.clone(), j.dispatcher));
            }
            (joined.len() == 2).then_some(())
        })
        .await;
    joined.sort();
    assert_eq!(
        joined,
        [
            ("dispatcher".to_owned(), true),
            ("field-1".to_owned(), false)
        ]
    );
    let mut listed: Vec<(String, bool)> = scene
        .participants()
        .await
        .into_iter()
        .map(|p| (p.identity, p.dispatcher))
        .collect();
    listed.sort();
    assert_eq!(
        listed,
        [
            ("dispatcher".to_owned(), true),
            ("field-1".to_owned(), false)
        ]
    );
    scene.shutdown().await;
}
