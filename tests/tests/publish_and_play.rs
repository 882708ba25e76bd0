//! One WHIP publisher, three WHEP viewers: every viewer gets every packet of
//! every frame from a keyframe on, and the audio.

use std::time::Duration;

use vigil_tests::peers::{H264_PT, Publisher, TestVideo, Viewer, assert_continuous_from_keyframe};
use vigil_tests::{base_url, start_server};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_viewers_receive_every_frame() {
    let vigil = start_server(|_| {}).await;
    let base = base_url(&vigil);
    let mut publisher = Publisher::connect(&base, "site-1", "cam-1").await;
    publisher.start_media();

    let mut viewers = Vec::new();
    for _ in 0..3 {
        let viewer = Viewer::connect(&base, "site-1", "cam-1")
            .await
            .expect("WHEP 201");
        viewer.peer.wait_connected().await;
        viewers.push(viewer);
    }
    // Let two whole GOPs (2 s) flow to every viewer.
    // Several keyframes and a few seconds' worth of packets at every viewer
    // (each join's PLI shortens a GOP, so keyframes alone can come quickly).
    for viewer in &viewers {
        viewer.wait_keyframes(3).await;
        vigil_tests::eventually(Duration::from_secs(10), "150 video packets", || async {
            (viewer.video().len() >= 150).then_some(())
        })
        .await;
    }
    publisher.stop_media();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let sent = publisher.sent.lock().unwrap().video.clone();
    for (i, viewer) in viewers.iter().enumerate() {
        let compared = assert_continuous_from_keyframe(&viewer.video(), &sent);
        assert!(
            compared > 100,
            "viewer {i} compared only {compared} packets"
        );
        assert!(
            viewer.audio_count() > 50,
            "viewer {i} got {} audio packets",
            viewer.audio_count()
        );
        // Each viewer gets H264 at the payload type its own offer gave it.
        let offer = viewer.peer.pc.local_description().await.expect("offer").sdp;
        let own_pt = TestVideo::H264
            .offered_payload_type(&offer)
            .expect("viewer offers H264");
        assert_ne!(own_pt, H264_PT, "the test must make the rewrite visible");
        assert!(
            viewer
                .video()
                .iter()
                .all(|p| p.header.payload_type == own_pt),
            "viewer {i} received H264 at its own payload type {own_pt}"
        );
        let codecs = viewer.received.lock().unwrap().codecs.clone();
        assert!(codecs.len() == 2, "viewer {i} got tracks {codecs:?}");
    }
    vigil.shutdown().await;
}
