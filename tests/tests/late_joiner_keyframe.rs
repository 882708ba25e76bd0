//! A viewer joining mid-GOP gets a keyframe quickly: the server asks the
//! publisher for one (PLI) instead of waiting for the next scheduled IDR.

use std::time::Duration;

use vigil_tests::peers::{Publisher, Viewer};
use vigil_tests::{base_url, eventually, start_server};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_joiner_gets_a_keyframe_within_a_second() {
    let vigil = start_server(|_| {}).await;
    let base = base_url(&vigil);
    let mut publisher = Publisher::connect(&base, "r", "s").await;
    publisher.start_media();
    // Join well inside a GOP: the fixture's next scheduled IDR is up to 1 s away.
    tokio::time::sleep(Duration::from_millis(1400)).await;
    let requests_before = publisher.sent.lock().unwrap().keyframe_requests;

    let viewer = Viewer::connect(&base, "r", "s").await.expect("WHEP 201");
    let first = eventually(Duration::from_secs(5), "first video packet", || async {
        viewer.video().first().cloned()
    })
    .await;
    assert!(
        first.keyframe_start(),
        "first packet forwarded to a new viewer must start a keyframe"
    );
    let waited = first.at.duration_since(viewer.requested_at);
    eprintln!("late joiner: WHEP POST to first keyframe packet in {waited:?}");
    assert!(
        waited < Duration::from_secs(1),
        "keyframe took {waited:?} after the WHEP POST"
    );
    let requests_after = publisher.sent.lock().unwrap().keyframe_requests;
    assert!(
        requests_after > requests_before,
        "the server never sent PLI to the publisher"
    );
    vigil.shutdown().await;
}
