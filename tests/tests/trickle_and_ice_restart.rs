//! PATCH with trickle-ice-sdpfrag: candidates trickle in (204) and an ICE
//! restart (200, new credentials, new ETag) keeps media flowing.

use bytes::Bytes;
use vigil_tests::http_client::request;
use vigil_tests::peers::live_stream;
use vigil_tests::replay::{
    SDP_FRAG, attribute, candidate_lines, ice_restart, sdpfrag, video_grows,
};
use vigil_tests::{base_url, start_server};
use webrtc::peer_connection::RTCPeerConnectionState;

const FRAG: &str = SDP_FRAG;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trickled_candidates_are_accepted_and_media_flows() {
    let vigil = start_server(|_| {}).await;
    let base = base_url(&vigil);
    let (_publisher, viewer) = live_stream(&base, "r", "s").await;
    video_grows(&viewer, 20, "video before trickle").await;

    let local = viewer.peer.pc.local_description().await.expect("local").sdp;
    let body = sdpfrag(
        &local,
        "video",
        "0",
        &candidate_lines(&local),
        &["a=end-of-candidates"],
    );
    let response = request(
        "PATCH",
        &viewer.session.url,
        &[("content-type", FRAG), ("if-match", &viewer.session.etag)],
        body,
    )
    .await;
    assert_eq!(response.status, 204, "trickle PATCH: {}", response.body);
    assert!(response.body.is_empty(), "204 has no body");
    assert!(
        response.header("etag").is_none(),
        "a trickle PATCH returns no ETag"
    );
    video_grows(&viewer, 20, "video after trickle").await;
    vigil.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ice_restart_gets_new_credentials_and_media_continues() {
    let vigil = start_server(|_| {}).await;
    let base = base_url(&vigil);
    let (_publisher, viewer) = live_stream(&base, "r", "s").await;
    video_grows(&viewer, 20, "video before the restart").await;

    let old_answer = viewer
        .peer
        .pc
        .remote_description()
        .await
        .expect("remote")
        .sdp;
    let response = ice_restart("webrtc-rs", &viewer.peer, &viewer.session.url).await;
    assert_eq!(response.header("content-type"), Some(FRAG));
    let new_etag = response.header("etag").expect("new ETag");
    assert_ne!(
        new_etag, viewer.session.etag,
        "a restart makes a new entity-tag"
    );
    let frag = response.body.clone();
    assert!(frag.contains("\r\n"), "fragment uses CRLF");
    assert_ne!(
        attribute(&frag, "a=ice-ufrag:"),
        attribute(&old_answer, "a=ice-ufrag:"),
        "server ufrag changed"
    );

    // The stale ETag no longer works; the new one does.
    let stale = request(
        "PATCH",
        &viewer.session.url,
        &[("content-type", FRAG), ("if-match", &viewer.session.etag)],
        "a=end-of-candidates\r\n",
    )
    .await;
    assert_eq!(stale.status, 412, "old ETag after restart");
    let fresh = request(
        "PATCH",
        &viewer.session.url,
        &[("content-type", FRAG), ("if-match", new_etag)],
        Bytes::from_static(b"a=end-of-candidates\r\n"),
    )
    .await;
    assert_eq!(fresh.status, 204, "new ETag after restart: {}", fresh.body);

    video_grows(&viewer, 60, "video after the ICE restart").await;
    assert_eq!(
        *viewer.peer.state.borrow(),
        RTCPeerConnectionState::Connected
    );
    vigil.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_restart_keeps_the_session() {
    let vigil = start_server(|_| {}).await;
    let base = base_url(&vigil);
    let (_publisher, viewer) = live_stream(&base, "r", "s").await;
    video_grows(&viewer, 20, "video before").await;
    // New credentials, but a password too short to be valid ICE (RFC 8839: 22 chars).
    let response = request(
        "PATCH",
        &viewer.session.url,
        &[("content-type", FRAG), ("if-match", "*")],
        "a=ice-ufrag:abcd\r\na=ice-pwd:short\r\n",
    )
    .await;
    assert!(
        (400..500).contains(&response.status),
        "a restart that cannot be satisfied is a 4xx, got {}",
        response.status
    );
    let get = request("GET", &viewer.session.url, &[], Bytes::new()).await;
    assert!(
        (200..300).contains(&get.status),
        "session survives a failed restart"
    );
    video_grows(&viewer, 20, "video after the failed restart").await;
    vigil.shutdown().await;
}
