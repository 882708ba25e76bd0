//! Call over gRPC delivers the request to the callee's own event feed (read
//! with its participant token), the callee plays the caller's stream with
//! WHEP, and nobody else hears about the call.

use std::time::Duration;

use tonic::Code;
use vigil_proto::v1 as pb;
use vigil_proto::v1::event::Kind;
use vigil_tests::control::{Scene, Watcher, admin, publish_and_subscribe};
use vigil_tests::peers::Viewer;

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
