//! A watcher that reconnects with `after_id` gets exactly the events it
//! missed, then the live feed.

use std::time::Duration;

use vigil_proto::v1 as pb;
use vigil_proto::v1::event::Kind;
use vigil_tests::control::{ADMIN_KEY, Watcher, clients, create_room, secure_server};

fn room_created(e: &pb::Event) -> Option<(u64, String)> {
    matches!(e.kind, Some(Kind::RoomCreated(_))).then(|| (e.id, e.room.clone()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnecting_watcher_resumes_after_the_last_id() {
    let vigil = secure_server(|_| {}).await;
    let mut c = clients(&vigil).await;

    let mut first = Watcher::start(&vigil, ADMIN_KEY, pb::WatchRequest::default()).await;
    create_room(&mut c, "room-a").await;
    let (last_seen, room) = first
        .wait_for(Duration::from_secs(5), "RoomCreated room-a", room_created)
        .await;
    assert_eq!(room, "room-a");
    drop(first);

    create_room(&mut c, "room-b").await;
    create_room(&mut c, "room-c").await;

    let mut resumed = Watcher::start(
        &vigil,
        ADMIN_KEY,
        pb::WatchRequest {
            after_id: Some(last_seen),
            ..Default::default()
        },
    )
    .await;
    create_room(&mut c, "room-d").await;

    let mut received = Vec::new();
    for n in 0..3 {
        let event = resumed
            .wait_for(Duration::from_secs(5), &format!("event {n}"), |e| {
                Some(e.clone())
            })
            .await;
        received.push(event);
    }
    let rooms: Vec<_> = received
        .iter()
        .map(|e| room_created(e).unwrap_or_else(|| panic!("not a RoomCreated: {e:?}")))
        .collect();
    let names: Vec<_> = rooms.iter().map(|(_, room)| room.as_str()).collect();
    assert_eq!(
        names,
        ["room-b", "room-c", "room-d"],
        "the two missed rooms replayed first (no repeat of room-a), then the live one"
    );
    assert!(
        rooms.iter().all(|(id, _)| *id > last_seen),
        "ids after the resume point: {rooms:?}"
    );
    assert!(
        rooms.windows(2).all(|w| w[0].0 < w[1].0),
        "ids increase: {rooms:?}"
    );
    assert!(resumed.drain().is_empty(), "nothing else in the feed yet");
    vigil.shutdown().await;
}
