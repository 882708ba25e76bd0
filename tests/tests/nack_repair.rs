//! Loss between the server and a viewer is repaired by retransmission from
//! the server (the viewer NACKs, the server resends from its stream history,
//! on the viewer's RTX stream), without a keyframe request reaching the
//! publisher.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use vigil_tests::loss::drop_every_nth;
use vigil_tests::peers::{Publisher, TestVideo, Viewer, assert_continuous_from_keyframe};
use vigil_tests::{base_url, eventually, start_server};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_packets_reach_the_viewer_by_retransmission() {
    let vigil = start_server(|_| {}).await;
    let base = base_url(&vigil);
    let mut publisher = Publisher::connect(&base, "r", "s").await;

    // The viewer's H264 payload types, whichever the server picks.
    let offer = vigil_tests::peers::viewer_peer().await.offer().await;
    let h264 = TestVideo::H264
        .offered_payload_type(&offer)
        .expect("a viewer offers H264");
    let dropped = Arc::new(AtomicUsize::new(0));
    let viewer =
        Viewer::connect_lossy(&base, "r", "s", drop_every_nth(10, [h264], dropped.clone()))
            .await
            .expect("WHEP 201");
    viewer.peer.wait_connected().await;
    // Media starts once the viewer is in, so it gets (nearly) the live
    // stream from its first packet. The engine may still start it on the
    // first keyframe from its shard's cache, sent twice, which shifts its
    // numbering by a few packets against the publisher's: the cutoff below
    // is then a few packets early or late, which the checks allow, and a
    // loss among those copies is repaired too.
    publisher.start_media();
    viewer.wait_keyframes(3).await;
    // Enough video for a dozen or more losses.
    eventually(Duration::from_secs(10), "200 video packets", || async {
        (viewer.video().len() >= 200).then_some(())
    })
    .await;
    let keyframe_requests = publisher.sent.lock().unwrap().keyframe_requests;
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Everything sent up to now must arrive, repairs included. Media keeps
    // flowing meanwhile: a loss is only noticed when a later packet arrives.
    let sent = publisher.sent.lock().unwrap().video.clone();
    let cutoff = sent.last().expect("video sent").seq;
    let upto_cutoff = || {
        let video = viewer.video();
        // The earliest sequence number (not the first arrival: that packet
        // may have been lost and repaired later).
        let arrival = video.first().map_or(0, |p| p.header.sequence_number);
        let first = video
            .iter()
            .map(|p| p.header.sequence_number)
            .min_by_key(|seq| seq.wrapping_sub(arrival) as i16)
            .unwrap_or(arrival);
        let span = cutoff.wrapping_sub(first);
        let received: Vec<_> = video
            .into_iter()
            .filter(|p| p.header.sequence_number.wrapping_sub(first) <= span)
            .collect();
        (received, usize::from(span) + 1)
    };
    eventually(
        Duration::from_secs(5),
        "every packet up to the cutoff",
        || async {
            let (received, expected) = upto_cutoff();
            let mut seqs: Vec<u16> = received.iter().map(|p| p.header.sequence_number).collect();
            seqs.sort_unstable();
            seqs.dedup();
            (seqs.len() == expected).then_some(())
        },
    )
    .await;
    publisher.stop_media();

    let lost = dropped.load(Ordering::Relaxed);
    assert!(lost >= 10, "the test dropped only {lost} packets");
    let (received, _) = upto_cutoff();
    let compared = assert_continuous_from_keyframe(&received, &sent);
    eprintln!("{lost} packets dropped on the way to the viewer, all repaired; {compared} compared");
    assert_eq!(
        publisher.sent.lock().unwrap().keyframe_requests,
        keyframe_requests,
        "repair must not cost the publisher a keyframe"
    );
    vigil.shutdown().await;
}
