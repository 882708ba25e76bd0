//! Simulcast: a WHIP publisher sends three layers (rid q, h, f) of one video
//! track; each WHEP viewer gets exactly one of them, the one it asked for
//! with `?layer=`, the best one by default; a viewer whose receiver reports
//! heavy loss is stepped down a layer (others are not) and comes back up
//! after a quiet period; a layer the publisher stops sending is left for
//! the next one.
//!
//! Every packet the publisher sends names its layer in its payload, so the
//! assertions are on what arrived at each viewer over real UDP.

use std::time::Duration;

use rtc::rtcp::receiver_report::ReceiverReport;
use rtc::rtcp::reception_report::ReceptionReport;
use vigil_tests::peers::{Viewer, viewer_peer};
use vigil_tests::simulcast::{
    LAYERS, SimulcastPublisher, layer_counts, layers_received, simulcast_recv_rids,
};
use vigil_tests::{base_url, eventually, start_server};

const Q: usize = 0;
const H: usize = 1;
const F: usize = 2;

async fn viewer(base: &str, query: &str) -> Viewer {
    let url = format!("{base}/whep/site/cam{query}");
    let (viewer, _) = Viewer::play(
        base,
        &url,
        viewer_peer().await,
        &[("content-type", "application/sdp")],
        |offer| offer,
    )
    .await
    .unwrap_or_else(|r| panic!("WHEP {url}: {} {}", r.status, r.body));
    viewer.peer.wait_connected().await;
    viewer
}

/// Waits until `viewer` has received `n` packets of `layer` after its
/// first packet of another one (or from the start).
async fn wait_packets_of(viewer: &Viewer, layer: usize, n: usize, what: &str) {
    eventually(Duration::from_secs(10), what, || async {
        let got = layers_received(&viewer.video());
        let tail = got.iter().rev().take_while(|p| p.1 == layer).count();
        (tail >= n).then_some(())
    })
    .await;
}

/// Checks a viewer's video: sequence numbers without a gap, and every change
/// of layer (and the start) on a keyframe of the new layer.
fn assert_clean_switches(received: &[(u16, usize, bool)]) {
    assert!(received[0].2, "the first packet is a keyframe");
    for pair in received.windows(2) {
        assert_eq!(
            pair[1].0,
            pair[0].0.wrapping_add(1),
            "numbering continues across layers"
        );
        if pair[1].1 != pair[0].1 {
            assert!(
                pair[1].2,
                "a switch from {} to {} lands on a keyframe",
                LAYERS[pair[0].1].0, LAYERS[pair[1].1].0
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whip_answer_accepts_every_offered_layer() {
    let vigil = start_server(|_| {}).await;
    let base = base_url(&vigil);
    let publisher = SimulcastPublisher::connect(&base, "site", "cam").await;
    let answer = &publisher.response.body;
    // OBS counts the `;`-separated entries of this line up to CRLF and
    // gives up if one is missing (whip-whep.md, OBS).
    let rids = simulcast_recv_rids(answer);
    assert_eq!(
        rids.as_deref(),
        Some(&["f", "h", "q"].map(String::from)[..]),
        "a=simulcast:recv with every rid, CRLF-terminated:\n{answer}"
    );
    for (rid, _) in LAYERS {
        assert!(
            answer.contains(&format!("a=rid:{rid} recv")),
            "a=rid:{rid} recv missing:\n{answer}"
        );
    }
    vigil.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_viewer_gets_only_the_layer_it_asked_for() {
    let vigil = start_server(|_| {}).await;
    let base = base_url(&vigil);
    let _publisher = SimulcastPublisher::connect(&base, "site", "cam").await;
    // Let the server see each layer's rate before it ranks them.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let cases = [
        ("", F),
        ("?layer=high", F),
        ("?layer=mid", H),
        ("?layer=low", Q),
        ("?layer=h", H),
        ("?other=1&layer=q", Q),
    ];
    let mut viewers = Vec::new();
    for (query, _) in cases {
        viewers.push(viewer(&base, query).await);
    }
    for ((query, layer), viewer) in cases.iter().zip(&viewers) {
        wait_packets_of(
            viewer,
            *layer,
            60,
            &format!("2 s of layer {} for {query:?}", LAYERS[*layer].0),
        )
        .await;
    }
    for ((query, layer), viewer) in cases.iter().zip(&viewers) {
        let got = layers_received(&viewer.video());
        assert_clean_switches(&got);
        assert!(
            got.iter().all(|p| p.1 == *layer),
            "{query:?} wants only {}, got {:?}",
            LAYERS[*layer].0,
            layer_counts(&got)
        );
    }

    let bad = vigil_tests::http_client::request(
        "POST",
        &format!("{base}/whep/site/cam?layer=a%20b"),
        &[("content-type", "application/sdp")],
        viewer_peer().await.offer().await,
    )
    .await;
    assert_eq!(
        bad.status, 400,
        "a layer that cannot be a rid: {}",
        bad.body
    );
    vigil.shutdown().await;
}

/// Sends a receiver report from `viewer` saying it lost `fraction` (of 256)
/// of its video.
async fn report_loss(viewer: &Viewer, fraction: u8) {
    let track = viewer
        .received
        .lock()
        .expect("received")
        .video_track
        .clone()
        .expect("video track");
    let media_ssrc = *track.ssrcs().await.first().expect("video ssrc");
    let report = ReceiverReport {
        ssrc: 1,
        reports: vec![ReceptionReport {
            ssrc: media_ssrc,
            fraction_lost: fraction,
            ..Default::default()
        }],
        ..Default::default()
    };
    track
        .write_rtcp(vec![Box::new(report)])
        .await
        .expect("send receiver report");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_reporting_loss_steps_down_alone_and_comes_back() {
    let vigil = start_server(|_| {}).await;
    let base = base_url(&vigil);
    let _publisher = SimulcastPublisher::connect(&base, "site", "cam").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let lossy = viewer(&base, "").await;
    let clean = viewer(&base, "").await;
    wait_packets_of(&lossy, F, 30, "the lossy viewer on f").await;
    wait_packets_of(&clean, F, 30, "the clean viewer on f").await;

    report_loss(&lossy, 64).await; // 25 %
    wait_packets_of(&lossy, H, 30, "a step down to h").await;
    report_loss(&lossy, 128).await;
    wait_packets_of(&lossy, Q, 30, "a second step down to q").await;
    report_loss(&lossy, 128).await;
    // Nothing lower: it stays on q. After 8 s without heavy loss (its own
    // stack keeps sending clean reports) it climbs one layer at a time.
    wait_packets_of(&lossy, H, 30, "a step back up to h").await;
    wait_packets_of(&lossy, F, 30, "and up to f").await;

    let got = layers_received(&lossy.video());
    assert_clean_switches(&got);
    let order: Vec<usize> = got.iter().map(|p| p.1).fold(Vec::new(), |mut seen, l| {
        if seen.last() != Some(&l) {
            seen.push(l);
        }
        seen
    });
    assert_eq!(order, [F, H, Q, H, F], "{:?}", layer_counts(&got));
    let clean_got = layers_received(&clean.video());
    assert!(
        clean_got.iter().all(|p| p.1 == F),
        "the other viewer is not stepped down: {:?}",
        layer_counts(&clean_got)
    );
    vigil.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_layer_is_left_for_the_next_one() {
    let vigil = start_server(|_| {}).await;
    let base = base_url(&vigil);
    let publisher = SimulcastPublisher::connect(&base, "site", "cam").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let best = viewer(&base, "").await;
    let by_rid = viewer(&base, "?layer=f").await;
    wait_packets_of(&best, F, 30, "the viewer on f").await;
    wait_packets_of(&by_rid, F, 30, "the viewer of rid f").await;

    publisher.pause_layer(F, true);
    wait_packets_of(&best, H, 30, "h while f is paused").await;
    wait_packets_of(&by_rid, H, 30, "h for rid f while f is paused").await;
    publisher.pause_layer(F, false);
    wait_packets_of(&best, F, 30, "f again once it is back").await;
    wait_packets_of(&by_rid, F, 30, "rid f again once it is back").await;
    for viewer in [&best, &by_rid] {
        assert_clean_switches(&layers_received(&viewer.video()));
    }
    let requests = *publisher.keyframe_requests.lock().expect("requests");
    assert!(
        requests[H] >= 1,
        "moving to h asked h for a keyframe: {requests:?}"
    );
    vigil.shutdown().await;
}
