//! A viewer that stops reading, and one that vanishes without DELETE, do not
//! slow the others: they keep receiving every packet.

use std::time::Duration;

use vigil_tests::peers::{Publisher, Viewer, assert_continuous_from_keyframe};
use vigil_tests::{base_url, eventually, start_server};

/// The first sequence number a viewer saw, to order its packets across a wrap.
fn sent_base(video: &[vigil_tests::peers::ReceivedPacket]) -> u16 {
    video.first().map_or(0, |p| p.header.sequence_number)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_and_vanished_viewers_do_not_slow_the_others() {
    let vigil = start_server(|_| {}).await;
    let base = base_url(&vigil);
    let mut publisher = Publisher::connect(&base, "r", "s").await;
    publisher.start_media();

    let mut viewers = Vec::new();
    for _ in 0..4 {
        let viewer = Viewer::connect(&base, "r", "s").await.expect("WHEP 201");
        viewer.peer.wait_connected().await;
        viewers.push(viewer);
    }
    for viewer in &viewers {
        viewer.wait_video().await;
    }
    let stalled = viewers.pop().expect("viewer");
    let vanished = viewers.pop().expect("viewer");
    stalled.paused.send_replace(true);
    vanished.peer.pc.close().await.expect("close");

    // The vanished viewer is reaped without a DELETE.
    eventually(
        Duration::from_secs(15),
        "vanished viewer reaped",
        || async {
            let stats = vigil.sfu.stats().await.ok()?;
            (stats.viewers == 3).then_some(())
        },
    )
    .await;
    // Keep streaming with one viewer stalled for two more GOPs.
    let healthy_before: Vec<usize> = viewers.iter().map(|v| v.video().len()).collect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    publisher.stop_media();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let sent = publisher.sent.lock().unwrap().video.clone();
    for (i, viewer) in viewers.iter().enumerate() {
        let compared = assert_continuous_from_keyframe(&viewer.video(), &sent);
        assert!(
            compared > healthy_before[i] + 40,
            "viewer {i} kept receiving: {compared} packets, {} before the stall",
            healthy_before[i]
        );
        let last_sent = &sent.last().expect("sent").payload;
        let newest = viewer
            .video()
            .into_iter()
            .max_by_key(|p| {
                p.header
                    .sequence_number
                    .wrapping_sub(sent_base(&viewer.video()))
            })
            .expect("video");
        assert!(
            newest.payload == *last_sent,
            "viewer {i} got everything up to the last packet sent"
        );
    }
    let stats = vigil.sfu.stats().await.expect("stats");
    assert_eq!(
        stats.viewers, 3,
        "the stalled viewer is still a session (its ICE is alive)"
    );
    vigil.shutdown().await;
}
