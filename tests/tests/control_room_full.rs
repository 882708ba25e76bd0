//! Room limits: a publisher or viewer over `max_publishers`/`max_viewers` is
//! refused with 503 and Retry-After, an admin watcher sees a RoomFull alarm
//! raised, and once a slot frees the alarm clears and the refused one gets in.

use std::time::Duration;

use vigil_proto::v1 as pb;
use vigil_tests::base_url;
use vigil_tests::conformance::assert_problem;
use vigil_tests::conformance::{publisher_offer, recvonly_offer};
use vigil_tests::control::{Scene, Watcher, admin, clients, secure_server, subscribe_only, token};
use vigil_tests::http_client::{HttpResponse, post_sdp_as};
use vigil_tests::peers::{Publisher, Viewer};

const ROOM: &str = "site-1";
const EVENT_WAIT: Duration = Duration::from_secs(10);

fn publish_only() -> pb::Grants {
    pb::Grants {
        publish: true,
        ..Default::default()
    }
}

/// Room settings with these limits.
fn limited(max_publishers: Option<u32>, max_viewers: Option<u32>) -> pb::CreateRoomRequest {
    pb::CreateRoomRequest {
        limits: Some(pb::RoomLimits {
            max_publishers,
            max_viewers,
        }),
        ..Default::default()
    }
}

/// Waits for the RoomFull alarm to be raised; returns the event.
async fn room_full_raised(watcher: &mut Watcher) -> pb::Event {
    watcher
        .wait_for(EVENT_WAIT, "AlarmRaised RoomFull", |e| match &e.kind {
            Some(pb::event::Kind::AlarmRaised(raised))
                if raised.kind == pb::AlarmKind::RoomFull as i32 =>
            {
                Some(e.clone())
            }
            _ => None,
        })
        .await
}

/// Waits for the RoomFull alarm to clear; returns the event.
async fn room_full_cleared(watcher: &mut Watcher) -> pb::Event {
    watcher
        .wait_for(EVENT_WAIT, "AlarmCleared RoomFull", |e| match &e.kind {
            Some(pb::event::Kind::AlarmCleared(cleared))
                if cleared.kind == pb::AlarmKind::RoomFull as i32 =>
            {
                Some(e.clone())
            }
            _ => None,
        })
        .await
}

fn assert_room_wide(event: &pb::Event) {
    assert_eq!(event.room, ROOM);
    let stream = match &event.kind {
        Some(pb::event::Kind::AlarmRaised(a)) => &a.stream,
        Some(pb::event::Kind::AlarmCleared(a)) => &a.stream,
        other => panic!("not an alarm: {other:?}"),
    };
    assert_eq!(stream, "", "RoomFull is a room-wide alarm: {event:?}");
}

fn refused(result: Result<impl Sized, HttpResponse>, step: &str) -> HttpResponse {
    match result {
        Ok(_) => panic!("{step}: admitted over the room's limit"),
        Err(response) => response,
    }
}

/// A Retry-After of delay-seconds (RFC 9110 §10.2.3).
fn assert_retry_after(response: &HttpResponse, step: &str) {
    assert_eq!(response.status, 503, "{step}: {}", response.body);
    let retry_after = response.header("retry-after");
    assert!(
        retry_after.is_some_and(|v| v.parse::<u32>().is_ok()),
        "{step}: 503 without a Retry-After of seconds (got {retry_after:?})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publisher_over_the_limit_gets_in_once_a_slot_frees() {
    let mut scene = Scene::with_room(ROOM, limited(Some(1), None), |_| {}).await;
    let mut watcher = scene.watch_room().await;
    let alice_token = scene.token("alice", publish_only()).await;
    let bob_token = scene.token("bob", publish_only()).await;

    let alice = Publisher::connect_as(&scene.base, ROOM, "alice", &alice_token)
        .await
        .unwrap_or_else(|r| panic!("first publisher: {} {}", r.status, r.body));
    let response = refused(
        Publisher::connect_as(&scene.base, ROOM, "bob", &bob_token).await,
        "second publisher",
    );
    assert_problem(&response, 503, "second publisher in a room of one");
    let raised = room_full_raised(&mut watcher).await;
    assert_room_wide(&raised);
    assert_eq!(raised.identity, "bob", "the alarm names who was refused");

    assert_eq!(alice.delete().await, 200, "first publisher leaves");
    let bob = Publisher::connect_as(&scene.base, ROOM, "bob", &bob_token)
        .await
        .unwrap_or_else(|r| {
            panic!(
                "second publisher after a slot freed: {} {}",
                r.status, r.body
            )
        });
    let cleared = room_full_cleared(&mut watcher).await;
    assert_room_wide(&cleared);
    assert!(cleared.id > raised.id);

    let room = scene.room_state().await;
    assert_eq!(room.publishers, 1);
    drop(bob);
    scene.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewer_over_the_limit_gets_in_once_a_slot_frees() {
    let mut scene = Scene::with_room(ROOM, limited(None, Some(1)), |_| {}).await;
    let mut watcher = scene.watch_room().await;
    let alice_token = scene.token("alice", publish_only()).await;
    let first_token = scene.token("viewer-1", subscribe_only()).await;
    let second_token = scene.token("viewer-2", subscribe_only()).await;

    let mut alice = Publisher::connect_as(&scene.base, ROOM, "alice", &alice_token)
        .await
        .unwrap_or_else(|r| panic!("publisher: {} {}", r.status, r.body));
    alice.start_media();
    let first = Viewer::connect_as(&scene.base, ROOM, "alice", Some(&first_token))
        .await
        .unwrap_or_else(|r| panic!("first viewer: {} {}", r.status, r.body));
    // A viewer takes its seat when it connects (its video flowing says so).
    first.wait_video().await;
    let response = refused(
        Viewer::connect_as(&scene.base, ROOM, "alice", Some(&second_token)).await,
        "second viewer",
    );
    assert_problem(&response, 503, "second viewer in a room of one viewer");
    let raised = room_full_raised(&mut watcher).await;
    assert_room_wide(&raised);
    assert_eq!(
        raised.identity, "viewer-2",
        "the alarm names who was refused"
    );

    assert_eq!(first.delete().await, 200, "first viewer leaves");
    let second = Viewer::connect_as(&scene.base, ROOM, "alice", Some(&second_token))
        .await
        .unwrap_or_else(|r| panic!("second viewer after a slot freed: {} {}", r.status, r.body));
    second.wait_video().await;
    let cleared = room_full_cleared(&mut watcher).await;
    assert_room_wide(&cleared);
    assert!(cleared.id > raised.id);
    scene.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_full_refusals_say_when_to_retry() {
    let mut scene = Scene::with_room(ROOM, limited(Some(1), Some(1)), |_| {}).await;
    let alice_token = scene.token("alice", publish_only()).await;
    let bob_token = scene.token("bob", publish_only()).await;
    let first_token = scene.token("viewer-1", subscribe_only()).await;
    let second_token = scene.token("viewer-2", subscribe_only()).await;

    let mut alice = Publisher::connect_as(&scene.base, ROOM, "alice", &alice_token)
        .await
        .unwrap_or_else(|r| panic!("publisher: {} {}", r.status, r.body));
    alice.start_media();
    let first = Viewer::connect_as(&scene.base, ROOM, "alice", Some(&first_token))
        .await
        .unwrap_or_else(|r| panic!("first viewer: {} {}", r.status, r.body));
    first.wait_video().await;
    let publisher = refused(
        Publisher::connect_as(&scene.base, ROOM, "bob", &bob_token).await,
        "second publisher",
    );
    let viewer = refused(
        Viewer::connect_as(&scene.base, ROOM, "alice", Some(&second_token)).await,
        "second viewer",
    );
    assert_retry_after(&publisher, "second publisher");
    assert_retry_after(&viewer, "second viewer");
    scene.shutdown().await;
}

/// Seats go to viewers that connect: offers that never connect (a flood,
/// or a client that gave up) cannot keep a real viewer out, and of two
/// viewers admitted together into the last seat, the one that connects
/// second is turned away with `ROOM_FULL`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_that_never_connect_hold_no_seat() {
    let mut scene = Scene::with_room(ROOM, limited(None, Some(2)), |_| {}).await;
    let mut watcher = scene.watch_room().await;
    let _publisher = scene.publisher("cam").await;
    for i in 0..3 {
        let token = scene.token(&format!("junk-{i}"), subscribe_only()).await;
        let url = format!("{}/whep/{ROOM}/cam", scene.base);
        let junk = post_sdp_as(&url, &recvonly_offer(), Some(&token)).await;
        assert_eq!(junk.status, 201, "an offer that will never connect");
    }
    // Three unconnected sessions, two seats: a real viewer plays at once.
    let real = scene.viewer("cam", "real-1").await;

    // Two more admitted for the last seat; both connect, one is turned away.
    let mut pair = Vec::new();
    for who in ["late-1", "late-2"] {
        let token = scene.token(who, subscribe_only()).await;
        let viewer = Viewer::connect_as(&scene.base, ROOM, "cam", Some(&token))
            .await
            .unwrap_or_else(|r| panic!("{who}: {} {}", r.status, r.body));
        pair.push((who, viewer));
    }
    let turned_away = watcher
        .wait_for(EVENT_WAIT, "ParticipantLeft ROOM_FULL", |e| match &e.kind {
            Some(pb::event::Kind::ParticipantLeft(left))
                if left.reason == pb::LeaveReason::RoomFull as i32 =>
            {
                Some(e.identity.clone())
            }
            _ => None,
        })
        .await;
    let (_, seated) = pair
        .iter()
        .find(|(who, _)| *who != turned_away)
        .expect("one of the pair is seated");
    let (_, refused) = pair
        .iter()
        .find(|(who, _)| *who == turned_away)
        .expect("the turned-away viewer is one of the pair");
    seated.wait_video().await;
    let state = refused.peer.wait_left(EVENT_WAIT).await;
    eprintln!("{turned_away} turned away, its connection {state:?}");
    // The real viewer still plays.
    let before = real.video().len();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(real.video().len() > before);
    scene.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_publishers_cannot_exceed_the_limit() {
    let vigil = secure_server(|_| {}).await;
    let base = base_url(&vigil);
    let mut c = clients(&vigil).await;
    // Several rounds, each in a fresh room of one, so that an interleaving
    // that breaks the limit is met whatever the scheduling of one round.
    for round in 1..=5 {
        let room = format!("race-{round}");
        c.rooms
            .create_room(admin(pb::CreateRoomRequest {
                name: room.clone(),
                ..limited(Some(1), None)
            }))
            .await
            .expect("CreateRoom");
        // Offers and tokens are ready first, so the POSTs arrive together:
        // the limit must hold however the requests interleave.
        let mut attempts = Vec::new();
        for identity in ["cam-1", "cam-2", "cam-3", "cam-4"] {
            let token = token(&mut c, &room, identity, publish_only()).await;
            let (peer, offer) = publisher_offer().await;
            attempts.push((identity, token, peer, offer));
        }
        let requests: Vec<_> = attempts
            .iter()
            .map(|(identity, token, _, offer)| {
                let url = format!("{base}/whip/{room}/{identity}");
                let (token, offer) = (token.clone(), offer.clone());
                tokio::spawn(async move { post_sdp_as(&url, &offer, Some(&token)).await.status })
            })
            .collect();
        let mut statuses = Vec::new();
        for request in requests {
            statuses.push(request.await.expect("WHIP POST task"));
        }
        let admitted = statuses.iter().filter(|&&s| s == 201).count();
        let full = statuses.iter().filter(|&&s| s == 503).count();
        let counted = c
            .rooms
            .get_room(admin(pb::GetRoomRequest { name: room.clone() }))
            .await
            .expect("GetRoom")
            .into_inner()
            .publishers;
        assert_eq!(
            (admitted, full, counted),
            (1, 3, 1),
            "round {round}: four simultaneous publishers in a room of one got \
             {statuses:?} and GetRoom counts {counted} publishers"
        );
        for (_, _, peer, _) in attempts {
            let _ = peer.pc.close().await;
        }
    }
    vigil.shutdown().await;
}
