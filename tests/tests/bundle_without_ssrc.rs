//! An offer no real client sends but JSEP allows: bundled sections with
//! neither `a=ssrc` nor `a=rid`. The shapes real clients do send are
//! replayed one client per file in `interop_replay_*.rs`.

use vigil_tests::{base_url, start_server};

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
