//! PATCH of a session (RFC 9725 §4.3): conditional requests (If-Match,
//! 428, 412) and trickled candidates (204, discarded TCP and mDNS ones).

use bytes::Bytes;
use vigil_tests::conformance::{
    HOST_CANDIDATE, assert_2xx, assert_problem, offered_credentials, patch, trickle_fragment,
};
use vigil_tests::http_client::request;
use vigil_tests::peers::Publisher;
use vigil_tests::{base_url, start_server};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patch_without_if_match_is_428() {
    let vigil = start_server(|_| {}).await;
    let base = base_url(&vigil);
    let publisher = Publisher::connect(&base, "room", "cam").await;
    let (ufrag, pwd) = offered_credentials(&publisher.peer).await;
    let response = patch(
        &publisher.session.url,
        &[],
        &trickle_fragment(&ufrag, &pwd, &[HOST_CANDIDATE]),
    )
    .await;
    assert_problem(&response, 428, "PATCH without If-Match");
    vigil.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patch_with_wrong_if_match_is_412() {
    let vigil = start_server(|_| {}).await;
    let base = base_url(&vigil);
    let publisher = Publisher::connect(&base, "room", "cam").await;
    let (ufrag, pwd) = offered_credentials(&publisher.peer).await;
    let response = patch(
        &publisher.session.url,
        &[("if-match", "\"wrong\"")],
        &trickle_fragment(&ufrag, &pwd, &[HOST_CANDIDATE]),
    )
    .await;
    assert_problem(&response, 412, "PATCH with If-Match \"wrong\"");
    vigil.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trickle_patch_is_204_without_body_or_etag() {
    let vigil = start_server(|_| {}).await;
    let base = base_url(&vigil);
    let publisher = Publisher::connect(&base, "room", "cam").await;
    let (ufrag, pwd) = offered_credentials(&publisher.peer).await;
    let response = patch(
        &publisher.session.url,
        &[("if-match", publisher.session.etag.as_str())],
        &trickle_fragment(&ufrag, &pwd, &[HOST_CANDIDATE]),
    )
    .await;
    assert_eq!(
        response.status, 204,
        "trickle PATCH with the right If-Match: {}",
        response.body
    );
    assert!(response.body.is_empty(), "204 to a trickle has no body");
    assert!(
        response.header("etag").is_none(),
        "204 to a trickle has no ETag (RFC 9725 §4.3.2)"
    );
    // A trickle leaves the ICE session, and so the entity-tag, as it was.
    let response = patch(
        &publisher.session.url,
        &[("if-match", publisher.session.etag.as_str())],
        &trickle_fragment(&ufrag, &pwd, &[]),
    )
    .await;
    assert_eq!(
        response.status, 204,
        "end-of-candidates-only PATCH with the same If-Match: {}",
        response.body
    );
    vigil.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_and_mdns_candidates_are_discarded_silently() {
    let vigil = start_server(|_| {}).await;
    let base = base_url(&vigil);
    let publisher = Publisher::connect(&base, "room", "cam").await;
    let (ufrag, pwd) = offered_credentials(&publisher.peer).await;
    let candidates = [
        "2 1 tcp 1518280447 127.0.0.1 9 typ host tcptype active",
        "3 1 udp 2122260223 3f1c8a0e-8d6e-4b43-9bb6-6b0e5c6b1d2a.local 54321 typ host",
    ];
    let response = patch(
        &publisher.session.url,
        &[("if-match", publisher.session.etag.as_str())],
        &trickle_fragment(&ufrag, &pwd, &candidates),
    )
    .await;
    assert_eq!(
        response.status, 204,
        "PATCH with a TCP and an mDNS candidate: {}",
        response.body
    );
    assert!(response.body.is_empty(), "204 has no body");
    let response = request("GET", &publisher.session.url, &[], Bytes::new()).await;
    assert_2xx(&response, "GET the session after the discarded candidates");
    vigil.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etag_request_header_is_accepted_as_if_match() {
    let vigil = start_server(|_| {}).await;
    let base = base_url(&vigil);
    let publisher = Publisher::connect(&base, "room", "cam").await;
    let (ufrag, pwd) = offered_credentials(&publisher.peer).await;
    // @eyevinn/whip-web-client: one PATCH per candidate, component 0, RTP/AVP.
    let body = format!(
        "a=ice-ufrag:{ufrag}\r\na=ice-pwd:{pwd}\r\nm=audio 9 RTP/AVP 0\r\na=mid:0\r\n\
         a=candidate:1 0 udp 2130706431 127.0.0.1 9 typ host\r\n"
    );
    let response = patch(
        &publisher.session.url,
        &[("etag", publisher.session.etag.as_str())],
        &body,
    )
    .await;
    assert_eq!(
        response.status, 204,
        "PATCH with the entity-tag in an ETag request header: {}",
        response.body
    );
    let response = patch(&publisher.session.url, &[("etag", "\"wrong\"")], &body).await;
    assert_problem(&response, 412, "PATCH with a wrong ETag request header");
    vigil.shutdown().await;
}
