//! Viewers' keyframe requests (PLI) reach the publisher, coalesced: however
//! many viewers ask at once, the publisher gets at most one PLI per 500 ms.

use std::time::Duration;

use vigil_tests::peers::{Publisher, Viewer};
use vigil_tests::{base_url, eventually, start_server};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewer_pli_is_forwarded_and_coalesced() {
    let vigil = start_server(|_| {}).await;
    let base = base_url(&vigil);
    let mut publisher = Publisher::connect(&base, "r", "s").await;
    publisher.start_media();
    let mut viewers = Vec::new();
    for _ in 0..3 {
        let viewer = Viewer::connect(&base, "r", "s").await.expect("WHEP 201");
        viewer.wait_video().await;
        viewers.push(viewer);
    }
    // Let the joins' own keyframe requests go out and their interval pass.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let before = publisher.sent.lock().unwrap().keyframe_requests;

    // Fifteen requests from three viewers within ~100 ms.
    for _ in 0..5 {
        for viewer in &viewers {
            viewer.request_keyframe().await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eventually(Duration::from_secs(3), "a PLI at the publisher", || async {
        (publisher.sent.lock().unwrap().keyframe_requests > before).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let forwarded = publisher.sent.lock().unwrap().keyframe_requests - before;
    assert!(
        (1..=2).contains(&forwarded),
        "15 viewer PLIs within 100 ms became {forwarded} PLIs upstream (want 1, or 2 across an interval edge)"
    );
    vigil.shutdown().await;
}
