//! When a publisher leaves, its viewers stay connected for the republish
//! grace; a new publisher of the same stream continues their tracks with
//! continuous sequence numbers and timestamps, under the same SSRC. When the
//! grace runs out, the viewers' sessions are ended.

use std::time::Duration;

use bytes::Bytes;
use vigil_tests::http_client::request;
use vigil_tests::peers::{Publisher, Viewer};
use vigil_tests::{base_url, eventually, start_server};
use webrtc::peer_connection::RTCPeerConnectionState;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn republish_continues_the_viewers_stream() {
    let vigil = start_server(|c| c.republish_grace = Duration::from_secs(20)).await;
    let base = base_url(&vigil);
    let mut first = Publisher::connect(&base, "r", "s").await;
    first.start_media();
    let viewer = Viewer::connect(&base, "r", "s").await.expect("WHEP 201");
    viewer.peer.wait_connected().await;
    eventually(
        Duration::from_secs(10),
        "video from the first publisher",
        || async { (viewer.video().len() > 30).then_some(()) },
    )
    .await;
    first.stop_media();
    assert_eq!(first.delete().await, 200);
    let before = viewer.video();

    // Nobody publishes now: new viewers are told to retry, the old one waits.
    let early = Viewer::connect(&base, "r", "s")
        .await
        .err()
        .expect("409 while unpublished");
    assert_eq!(early.status, 409);
    let get = request("GET", &viewer.session.url, &[], Bytes::new()).await;
    assert!(
        (200..300).contains(&get.status),
        "viewer session survives the publisher leaving"
    );

    let mut second = Publisher::connect(&base, "r", "s").await;
    second.start_media();
    eventually(
        Duration::from_secs(10),
        "video from the second publisher",
        || async { (viewer.video().len() > before.len() + 30).then_some(()) },
    )
    .await;
    let after = viewer.video();
    let last_old = before.last().expect("old video");
    let first_new = &after[before.len()];
    assert_eq!(
        first_new.header.ssrc, last_old.header.ssrc,
        "same SSRC across publishers"
    );
    assert_eq!(
        first_new.header.sequence_number,
        last_old.header.sequence_number.wrapping_add(1),
        "sequence numbers continue across publishers"
    );
    let ts_step = first_new
        .header
        .timestamp
        .wrapping_sub(last_old.header.timestamp);
    assert!(
        ts_step > 0 && ts_step < 90_000 * 10,
        "timestamps move forward across publishers (step {ts_step})"
    );
    assert!(
        first_new.keyframe_start(),
        "the new publisher's stream starts at a keyframe"
    );
    assert_eq!(
        *viewer.peer.state.borrow(),
        RTCPeerConnectionState::Connected
    );
    vigil.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_are_closed_when_the_publisher_does_not_return() {
    let vigil = start_server(|c| c.republish_grace = Duration::from_secs(1)).await;
    let base = base_url(&vigil);
    let mut publisher = Publisher::connect(&base, "r", "s").await;
    publisher.start_media();
    let viewer = Viewer::connect(&base, "r", "s").await.expect("WHEP 201");
    viewer.peer.wait_connected().await;
    viewer.wait_video().await;
    publisher.stop_media();
    assert_eq!(publisher.delete().await, 200);

    viewer.peer.wait_left(Duration::from_secs(15)).await;
    let get = request("GET", &viewer.session.url, &[], Bytes::new()).await;
    assert_eq!(
        get.status, 404,
        "the viewer's session is gone after the grace"
    );
    eventually(Duration::from_secs(5), "nothing left", || async {
        (vigil.sfu.stats().await.ok()?.rooms == 0).then_some(())
    })
    .await;
    vigil.shutdown().await;
}
