//! VP8 and VP9 from a WHIP publisher reach two WHEP viewers that offer
//! webrtc-rs's default codecs (like a browser): every packet of every frame
//! from a keyframe on, unaltered, at the payload type each viewer's own
//! offer gives the codec rather than the publisher's.

use std::collections::BTreeSet;
use std::time::Duration;

use vigil_tests::peers::{
    Publisher, ReceivedPacket, TestVideo, Viewer, assert_continuous_from_keyframe,
};
use vigil_tests::{base_url, eventually, start_server};

fn assert_payload_types(viewer: usize, received: &[ReceivedPacket], video: TestVideo, own_pt: u8) {
    let types: BTreeSet<u8> = received.iter().map(|p| p.header.payload_type).collect();
    assert_eq!(
        types,
        BTreeSet::from([own_pt]),
        "viewer {viewer} offered {video:?} at {own_pt}; the publisher sends it at {}",
        video.payload_type()
    );
}

async fn forwards_to_two_viewers(video: TestVideo) {
    let vigil = start_server(|_| {}).await;
    let base = base_url(&vigil);
    let mut publisher = Publisher::connect_video(&base, "site-1", "cam-1", video).await;
    publisher.start_media();

    let mut viewers = Vec::new();
    for _ in 0..2 {
        let viewer = Viewer::connect(&base, "site-1", "cam-1")
            .await
            .expect("WHEP 201");
        viewer.peer.wait_connected().await;
        viewers.push(viewer);
    }
    let mut own_pts = Vec::new();
    for (i, viewer) in viewers.iter().enumerate() {
        let offer = viewer
            .peer
            .pc
            .local_description()
            .await
            .expect("viewer's offer")
            .sdp;
        let own_pt = video
            .offered_payload_type(&offer)
            .unwrap_or_else(|| panic!("viewer {i} does not offer {video:?}"));
        assert_ne!(
            own_pt,
            video.payload_type(),
            "the publisher must use another payload type for this to test the rewrite"
        );
        viewer.wait_video().await;
        assert_payload_types(i, &viewer.video(), video, own_pt);
        viewer.wait_keyframes(3).await;
        // A join's PLI shortens a GOP: also wait for a second's worth of frames.
        vigil_tests::eventually(Duration::from_secs(10), "40 video frames", || async {
            let frames: BTreeSet<u32> = viewer.video().iter().map(|p| p.header.timestamp).collect();
            (frames.len() > 40).then_some(())
        })
        .await;
        own_pts.push(own_pt);
    }
    publisher.stop_media();

    let sent = publisher.sent.lock().unwrap().video.clone();
    let last_sent = sent.last().expect("video was sent").payload.clone();
    for (i, viewer) in viewers.iter().enumerate() {
        // Wait for what was in flight when the publisher stopped.
        eventually(
            Duration::from_secs(2),
            "the last video packet at the viewer",
            || async {
                let video = viewer.video();
                let first = video.first()?.header.sequence_number;
                let newest = video
                    .iter()
                    .max_by_key(|p| p.header.sequence_number.wrapping_sub(first))?;
                (newest.payload == last_sent).then_some(())
            },
        )
        .await;
        let received = viewer.video();
        assert_payload_types(i, &received, video, own_pts[i]);
        let compared = assert_continuous_from_keyframe(&received, &sent);
        // A keyframe request can shorten the GOP a viewer starts with, but
        // not the one after it.
        let frames: BTreeSet<u32> = received.iter().map(|p| p.header.timestamp).collect();
        assert!(
            frames.len() > 30,
            "viewer {i} got only {} frames in {compared} packets",
            frames.len()
        );
    }
    vigil.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vp8_reaches_two_viewers_unaltered_at_their_payload_type() {
    forwards_to_two_viewers(TestVideo::Vp8).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vp9_reaches_two_viewers_unaltered_at_their_payload_type() {
    forwards_to_two_viewers(TestVideo::Vp9).await;
}
