//! Offers shaped like the clients that break servers reading only the spec
//! (../shared/reference/whip-whep.md §2): OBS sends no candidates and never
//! trickles, FFmpeg offers `setup:passive`; neither sends `rtcp-mux-only`.
//! Each must complete a real media session.

use std::time::Duration;

use vigil_tests::peers::{Publisher, Viewer, assert_continuous_from_keyframe};
use vigil_tests::{base_url, start_server};

fn without_candidates(offer: String) -> String {
    offer
        .lines()
        .filter(|l| !l.starts_with("a=candidate:") && !l.starts_with("a=end-of-candidates"))
        .map(|l| format!("{}\r\n", l.trim_end()))
        .collect()
}

fn without_mux_only(offer: String) -> String {
    offer.replace("a=rtcp-mux-only\r\n", "")
}

async fn publish_and_check(munge: fn(String) -> String) {
    let vigil = start_server(|_| {}).await;
    let base = base_url(&vigil);
    let mut publisher = Publisher::connect_with(&base, "r", "s", munge).await;
    publisher.start_media();
    let viewer = Viewer::connect(&base, "r", "s").await.expect("WHEP 201");
    viewer.wait_keyframes(2).await;
    publisher.stop_media();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let sent = publisher.sent.lock().unwrap().video.clone();
    assert_continuous_from_keyframe(&viewer.video(), &sent);
    vigil.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn obs_style_offer_without_candidates_connects_by_peer_reflexive_checks() {
    publish_and_check(|offer| without_mux_only(without_candidates(offer))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ffmpeg_style_passive_offer_gets_an_active_answer() {
    publish_and_check(|offer| {
        without_mux_only(without_candidates(offer)).replace("a=setup:actpass", "a=setup:passive")
    })
    .await;
}

fn without_ssrc_lines(offer: String) -> String {
    offer
        .lines()
        .filter(|l| !l.starts_with("a=ssrc"))
        .map(|l| format!("{}\r\n", l.trim_end()))
        .collect()
}

/// JSEP does not require `a=ssrc`, but webrtc-rs 0.21 can only route RTP by
/// declared SSRC or RID. A bundled offer declaring neither would be a session
/// that never plays, so it is refused with a 422 that says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bundle_without_ssrc_lines_is_refused_clearly() {
    let vigil = start_server(|_| {}).await;
    let base = base_url(&vigil);
    let (peer, _video, _audio) = vigil_tests::peers::publisher_peer().await;
    let offer = without_ssrc_lines(peer.offer().await);
    let response = vigil_tests::http_client::post_sdp(&format!("{base}/whip/r/s"), &offer).await;
    assert_eq!(response.status, 422, "{}", response.body);
    assert!(
        response.body.contains("a=ssrc"),
        "the error says what to change: {}",
        response.body
    );
    assert_eq!(
        vigil.sfu.stats().await.expect("stats"),
        Default::default(),
        "nothing left reserved"
    );
    vigil.shutdown().await;
}
