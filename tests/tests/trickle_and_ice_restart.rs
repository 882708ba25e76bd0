//! PATCH with trickle-ice-sdpfrag: candidates trickle in (204) and an ICE
//! restart (200, new credentials, new ETag) keeps media flowing.

use std::time::Duration;

use bytes::Bytes;
use vigil_tests::http_client::request;
use vigil_tests::peers::{Viewer, live_stream};
use vigil_tests::{base_url, eventually, start_server};
use webrtc::peer_connection::{RTCPeerConnectionState, RTCSessionDescription};

const FRAG: &str = "application/trickle-ice-sdpfrag";

fn attr<'a>(sdp: &'a str, key: &str) -> &'a str {
    sdp.lines()
        .find_map(|l| l.trim_end().strip_prefix(key))
        .unwrap_or_else(|| panic!("no {key} in {sdp}"))
}

fn candidates(sdp: &str) -> Vec<String> {
    sdp.lines()
        .filter(|l| l.starts_with("a=candidate:"))
        .map(|l| l.trim_end().to_owned())
        .collect()
}

async fn video_grows(viewer: &Viewer, by: usize, what: &str) {
    let start = viewer.video().len();
    eventually(Duration::from_secs(10), what, || async {
        (viewer.video().len() >= start + by).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trickled_candidates_are_accepted_and_media_flows() {
    let vigil = start_server(|_| {}).await;
    let base = base_url(&vigil);
    let (_publisher, viewer) = live_stream(&base, "r", "s").await;
    video_grows(&viewer, 20, "video before trickle").await;

    let local = viewer.peer.pc.local_description().await.expect("local").sdp;
    let mut body = format!(
        "a=ice-ufrag:{}\r\na=ice-pwd:{}\r\nm=video 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\n",
        attr(&local, "a=ice-ufrag:"),
        attr(&local, "a=ice-pwd:")
    );
    for candidate in candidates(&local) {
        body.push_str(&candidate);
        body.push_str("\r\n");
    }
    body.push_str("a=end-of-candidates\r\n");
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

    let pc = &viewer.peer.pc;
    let old_answer = pc.remote_description().await.expect("remote").sdp;
    pc.restart_ice().await.expect("restart_ice");
    let offer = viewer.peer.offer().await;
    let (ufrag, pwd) = (attr(&offer, "a=ice-ufrag:"), attr(&offer, "a=ice-pwd:"));
    let mut body = format!(
        "a=ice-ufrag:{ufrag}\r\na=ice-pwd:{pwd}\r\nm=video 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\n"
    );
    for candidate in candidates(&offer) {
        body.push_str(&candidate);
        body.push_str("\r\n");
    }
    let response = request(
        "PATCH",
        &viewer.session.url,
        &[("content-type", FRAG), ("if-match", "*")],
        body,
    )
    .await;
    assert_eq!(response.status, 200, "restart PATCH: {}", response.body);
    assert_eq!(response.header("content-type"), Some(FRAG));
    let new_etag = response.header("etag").expect("new ETag");
    assert_ne!(
        new_etag, viewer.session.etag,
        "a restart makes a new entity-tag"
    );
    let frag = response.body.clone();
    assert!(frag.contains("\r\n"), "fragment uses CRLF");
    let (new_ufrag, new_pwd) = (attr(&frag, "a=ice-ufrag:"), attr(&frag, "a=ice-pwd:"));
    assert_ne!(
        new_ufrag,
        attr(&old_answer, "a=ice-ufrag:"),
        "server ufrag changed"
    );
    let server_candidates = candidates(&frag);
    assert!(
        !server_candidates.is_empty(),
        "restart answer carries candidates"
    );

    // Apply the server's new credentials as the answer to our restart offer.
    let mut answer = String::new();
    let mut candidates_written = false;
    for line in old_answer.lines().map(str::trim_end) {
        if line.starts_with("a=candidate:") || line == "a=end-of-candidates" {
            continue;
        }
        if line.starts_with("a=ice-ufrag:") {
            answer.push_str(&format!("a=ice-ufrag:{new_ufrag}\r\n"));
        } else if line.starts_with("a=ice-pwd:") {
            answer.push_str(&format!("a=ice-pwd:{new_pwd}\r\n"));
        } else {
            answer.push_str(line);
            answer.push_str("\r\n");
        }
        if line.starts_with("a=mid:") && !candidates_written {
            for c in &server_candidates {
                answer.push_str(c);
                answer.push_str("\r\n");
            }
            candidates_written = true;
        }
    }
    pc.set_remote_description(RTCSessionDescription::answer(answer).expect("answer"))
        .await
        .expect("apply restart answer");

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
