//! Fast start: a viewer that joins mid-GOP gets the track's last keyframe
//! from the server's cache at once, without waiting for the publisher. The
//! publisher here ignores PLI (a fixed 1 s GOP, like many encoders), so a
//! keyframe that arrives before the publisher's next scheduled one can only
//! have come from the cache.

use std::time::Duration;

use vigil_tests::peers::{Publisher, Viewer};
use vigil_tests::{base_url, eventually, start_server};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_viewer_starts_on_the_cached_keyframe() {
    let vigil = start_server(|_| {}).await;
    let base = base_url(&vigil);
    let mut publisher = Publisher::connect(&base, "r", "s").await;
    publisher.ignore_keyframe_requests();
    publisher.start_media();
    // Well inside a GOP: the fixture's IDRs come every 30 frames (1 s).
    tokio::time::sleep(Duration::from_millis(1400)).await;

    let viewer = Viewer::connect(&base, "r", "s").await.expect("WHEP 201");
    let first = eventually(Duration::from_secs(5), "first video packet", || async {
        viewer.video().first().cloned()
    })
    .await;
    assert!(first.keyframe_start(), "a new viewer starts on a keyframe");

    let sent = publisher.sent.lock().unwrap().video.clone();
    // The keyframe the viewer got is one the publisher sent before the WHEP
    // request, and the publisher sent no keyframe between that request and
    // the packet's arrival: it came from the cache.
    assert!(
        sent.iter()
            .any(|p| p.payload == first.payload && p.at < viewer.requested_at),
        "the first keyframe packet was sent before the viewer joined"
    );
    // It opens the access unit with the parameter sets (SPS, alone or first
    // in a STAP-A), without which the IDR cannot be decoded.
    let nal = |byte: u8| byte & 0x1f;
    let carries_sps = match first.payload.first().map(|b| nal(*b)) {
        Some(7) => true,
        Some(24) => first.payload.get(3).is_some_and(|b| nal(*b) == 7),
        _ => false,
    };
    assert!(carries_sps, "the cached keyframe starts with its SPS");
    let fresh = sent
        .iter()
        .filter(|p| p.keyframe_start && p.at > viewer.requested_at && p.at < first.at)
        .count();
    assert_eq!(
        fresh, 0,
        "no newer keyframe existed when the viewer got one"
    );
    let requests = publisher.sent.lock().unwrap().keyframe_requests;
    assert!(requests > 0, "the server still asked for a fresh keyframe");

    eprintln!(
        "fast start: WHEP POST to first keyframe packet in {:?}",
        first.at.duration_since(viewer.requested_at)
    );

    // The whole keyframe arrived (up to its marker bit, numbering without
    // holes), then the stream goes on live from the publisher's next one.
    eventually(Duration::from_secs(3), "the next live keyframe", || async {
        let video = viewer.video();
        let keyframes = video.iter().filter(|p| p.keyframe_start()).count();
        (keyframes >= 2).then_some(())
    })
    .await;
    let video = viewer.video();
    assert!(
        video
            .iter()
            .any(|p| p.header.marker && p.header.timestamp == first.header.timestamp),
        "the cached keyframe arrived whole"
    );
    let seqs: Vec<u16> = video.iter().map(|p| p.header.sequence_number).collect();
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0].wrapping_add(1)),
        "sequence numbers continue across the skipped delta frames: {seqs:?}"
    );
    vigil.shutdown().await;
}
