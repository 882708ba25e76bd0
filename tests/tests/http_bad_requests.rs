//! Refused requests to the WHIP/WHEP surface: 415, 400, 413, 422, 404, 405
//! and 409, each with a problem+json body stating its status, checked over
//! real HTTP against a real gateway.

use bytes::Bytes;
use vigil_tests::conformance::{
    H263_SENDONLY, HOST_CANDIDATE, SDP, SDP_FRAG, UNKNOWN_ID, assert_2xx, assert_problem,
    hand_offer, lists, obs_offer, offered_credentials, oversized_offer, patch, publisher_offer,
    recvonly_offer, trickle_fragment, two_video_offer, viewer_offer,
};
use vigil_tests::http_client::{post_sdp, request};
use vigil_tests::peers::Publisher;
use vigil_tests::{base_url, start_server};

// ---------------------------------------------------------------------------
// 415, 400, 413, 422
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_content_type_is_415() {
    let vigil = start_server(|_| {}).await;
    let base = base_url(&vigil);

    let response = request(
        "POST",
        &format!("{base}/whip/room/cam"),
        &[("content-type", "text/plain")],
        obs_offer(),
    )
    .await;
    assert_problem(&response, 415, "POST with text/plain");
    assert_eq!(
        response.header("accept-post"),
        Some(SDP),
        "415 to a POST says Accept-Post: application/sdp"
    );

    let response = request("POST", &format!("{base}/whip/room/cam"), &[], obs_offer()).await;
    assert_problem(&response, 415, "POST without Content-Type");

    let publisher = Publisher::connect(&base, "room", "cam").await;
    let (ufrag, pwd) = offered_credentials(&publisher.peer).await;
    let response = request(
        "PATCH",
        &publisher.session.url,
        &[
            ("content-type", SDP),
            ("if-match", publisher.session.etag.as_str()),
        ],
        trickle_fragment(&ufrag, &pwd, &[HOST_CANDIDATE]),
    )
    .await;
    assert_problem(&response, 415, "PATCH with application/sdp");
    assert_eq!(
        response.header("accept-patch"),
        Some(SDP_FRAG),
        "415 to a PATCH says Accept-Patch"
    );
    vigil.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_sdp_is_400() {
    let vigil = start_server(|_| {}).await;
    let base = base_url(&vigil);
    for (body, step) in [
        ("hello", "POST \"hello\""),
        ("v=0\r\n", "POST v=0 with no m-line"),
        ("", "POST with an empty body"),
    ] {
        let response = post_sdp(&format!("{base}/whip/room/cam"), body).await;
        assert_problem(&response, 400, step);
        let response = post_sdp(&format!("{base}/whep/room/cam"), body).await;
        assert_problem(&response, 400, &format!("WHEP {step}"));
    }
    vigil.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_room_or_stream_name_is_400() {
    let vigil = start_server(|_| {}).await;
    let base = base_url(&vigil);
    let too_long = "a".repeat(65);
    for path in [
        "/whip/bad%20name/s".to_owned(),
        "/whip/r/bad%2Fname".to_owned(),
        "/whep/bad%20name/s".to_owned(),
        format!("/whip/{too_long}/s"),
        format!("/whip/r/{too_long}"),
    ] {
        let response = post_sdp(&format!("{base}{path}"), &obs_offer()).await;
        assert_problem(&response, 400, &format!("POST {path}"));
    }
    // The longest and most varied legal names are fine.
    let longest = "a".repeat(64);
    let response = post_sdp(&format!("{base}/whip/{longest}/A-z_0.9"), &obs_offer()).await;
    assert_eq!(
        response.status, 201,
        "64-character room and [A-Za-z0-9_.-] stream: {}",
        response.body
    );
    vigil.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_patch_fragment_is_400() {
    let vigil = start_server(|_| {}).await;
    let base = base_url(&vigil);
    let publisher = Publisher::connect(&base, "room", "cam").await;
    let if_match = [("if-match", publisher.session.etag.as_str())];
    let (ufrag, pwd) = offered_credentials(&publisher.peer).await;

    let response = patch(&publisher.session.url, &if_match, "hello").await;
    assert_problem(&response, 400, "PATCH \"hello\"");

    let bad_candidate =
        trickle_fragment(&ufrag, &pwd, &["1 1 udp notanumber 127.0.0.1 9 typ host"]);
    let response = patch(&publisher.session.url, &if_match, &bad_candidate).await;
    assert_problem(
        &response,
        400,
        "PATCH with a candidate whose priority is not a number",
    );

    // Nothing can reach port 0; accepted, it made the engine log write
    // errors for as long as the session lived.
    let port_zero = trickle_fragment(&ufrag, &pwd, &["1 1 udp 2130706431 127.0.0.1 0 typ host"]);
    let response = patch(&publisher.session.url, &if_match, &port_zero).await;
    assert_problem(&response, 400, "PATCH with a candidate on port 0");

    // Bad input changed nothing: the session is still there and connected.
    let response = request("GET", &publisher.session.url, &[], Bytes::new()).await;
    assert_2xx(&response, "GET the session after the 400s");
    vigil.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_over_64_kib_is_413() {
    let vigil = start_server(|_| {}).await;
    let base = base_url(&vigil);
    let response = post_sdp(&format!("{base}/whip/room/cam"), &oversized_offer()).await;
    assert_problem(&response, 413, "POST of 70 kB");
    vigil.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offer_without_a_usable_codec_is_422() {
    let vigil = start_server(|_| {}).await;
    let base = base_url(&vigil);
    let response = post_sdp(
        &format!("{base}/whip/room/cam"),
        &hand_offer(&[H263_SENDONLY]),
    )
    .await;
    assert_problem(&response, 422, "WHIP offer with only H263");
    vigil.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offer_with_two_video_sections_is_422() {
    let vigil = start_server(|_| {}).await;
    let base = base_url(&vigil);
    let offer = two_video_offer();
    let response = post_sdp(&format!("{base}/whip/room/cam"), &offer).await;
    assert_problem(&response, 422, "WHIP offer with two video sections");
    vigil.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recvonly_whip_offer_is_422() {
    let vigil = start_server(|_| {}).await;
    let base = base_url(&vigil);
    let response = post_sdp(&format!("{base}/whip/room/cam"), &recvonly_offer()).await;
    assert_problem(&response, 422, "recvonly WHIP offer");
    // And the stream was not left reserved by the refused offer.
    let response = post_sdp(&format!("{base}/whip/room/cam"), &obs_offer()).await;
    assert_eq!(
        response.status, 201,
        "a good offer after the 422: {}",
        response.body
    );
    vigil.shutdown().await;
}

// ---------------------------------------------------------------------------
// 404, 405
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_session_or_route_is_404() {
    let vigil = start_server(|_| {}).await;
    let base = base_url(&vigil);
    let fragment = trickle_fragment("Hx7q", "Zp3kWm9vQe2rTy6uIo1pAs4d", &[HOST_CANDIDATE]);
    for id in [UNKNOWN_ID, "not-an-id"] {
        let url = format!("{base}/sessions/{id}");
        let response = patch(&url, &[("if-match", "\"abc\"")], &fragment).await;
        assert_problem(&response, 404, &format!("PATCH /sessions/{id}"));
        let response = request("DELETE", &url, &[], Bytes::new()).await;
        assert_problem(&response, 404, &format!("DELETE /sessions/{id}"));
        let response = request("GET", &url, &[], Bytes::new()).await;
        assert_problem(&response, 404, &format!("GET /sessions/{id}"));
        let response = request("HEAD", &url, &[], Bytes::new()).await;
        assert_eq!(response.status, 404, "HEAD /sessions/{id}");
        assert!(response.body.is_empty(), "HEAD /sessions/{id} has no body");
    }
    for path in ["/nope", "/whip/room", "/whip/room/cam/extra", "/sessions"] {
        let response = request("GET", &format!("{base}{path}"), &[], Bytes::new()).await;
        assert_problem(&response, 404, &format!("GET {path}"));
    }
    let response = post_sdp(&format!("{base}/nope"), &obs_offer()).await;
    assert_problem(&response, 404, "POST /nope");
    vigil.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_method_is_405_with_allow() {
    let vigil = start_server(|_| {}).await;
    let base = base_url(&vigil);

    let response = request(
        "PUT",
        &format!("{base}/whip/room/cam"),
        &[("content-type", SDP)],
        obs_offer(),
    )
    .await;
    assert_problem(&response, 405, "PUT /whip/room/cam");
    let allow = response.header("allow");
    assert!(lists(allow, "POST"), "endpoint Allow {allow:?} lists POST");
    assert!(!lists(allow, "PUT"), "endpoint Allow {allow:?} omits PUT");

    // medooze whip.js mute(): JSON POSTed to the session URL.
    let publisher = Publisher::connect(&base, "room", "cam").await;
    let response = request(
        "POST",
        &publisher.session.url,
        &[("content-type", "application/json")],
        r#"{"audio":true}"#,
    )
    .await;
    assert_problem(&response, 405, "POST JSON to a live session");
    let allow = response.header("allow");
    for method in ["PATCH", "DELETE"] {
        assert!(
            lists(allow, method),
            "session Allow {allow:?} lists {method}"
        );
    }
    assert!(!lists(allow, "POST"), "session Allow {allow:?} omits POST");
    let response = request("GET", &publisher.session.url, &[], Bytes::new()).await;
    assert_2xx(&response, "GET the session after the 405");
    vigil.shutdown().await;
}

// ---------------------------------------------------------------------------
// 409
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whep_for_an_unpublished_stream_is_409_with_retry_after() {
    let vigil = start_server(|_| {}).await;
    let base = base_url(&vigil);
    let (peer, offer) = viewer_offer().await;
    let response = post_sdp(&format!("{base}/whep/room/nobody"), &offer).await;
    assert_problem(&response, 409, "WHEP for a stream nobody publishes");
    let retry_after = response
        .header("retry-after")
        .expect("409 for an unpublished stream has Retry-After");
    assert!(
        retry_after.parse::<u64>().is_ok_and(|s| s > 0),
        "Retry-After {retry_after:?} is a positive number of seconds"
    );
    let _ = peer.pc.close().await;
    vigil.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_whip_to_a_live_stream_is_409_and_keeps_the_first() {
    let vigil = start_server(|_| {}).await;
    let base = base_url(&vigil);
    let publisher = Publisher::connect(&base, "room", "cam").await;

    let (peer, offer) = publisher_offer().await;
    let response = post_sdp(&format!("{base}/whip/room/cam"), &offer).await;
    assert_problem(&response, 409, "second WHIP to a live stream");
    assert!(
        response.header("location").is_none(),
        "a 409 creates no session"
    );

    let response = request("GET", &publisher.session.url, &[], Bytes::new()).await;
    assert_2xx(&response, "GET the first publisher's session after the 409");
    assert_eq!(
        *publisher.peer.state.borrow(),
        webrtc::peer_connection::RTCPeerConnectionState::Connected,
        "the first publisher is still connected"
    );
    let _ = peer.pc.close().await;
    vigil.shutdown().await;
}
