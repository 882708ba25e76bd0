//! Replays of clients that cannot run on this machine (OBS, FFmpeg, live777,
//! the Eyevinn and medooze browser libraries), after
//! ../shared/reference/whip-whep.md §2: a real webrtc-rs peer does the ICE,
//! DTLS and media, while the HTTP requests and the offer are rewritten into
//! exactly the shape that client puts on the wire. Each replay must end in
//! media arriving at a real viewer, not just in a 201.
//!
//! Assertion messages start with the client's name and the step, so a
//! failure says who would break and where.

use std::time::Duration;

use bytes::Bytes;
use webrtc::peer_connection::RTCSessionDescription;

use crate::http_client::{HttpResponse, request};
use crate::peers::{ClientPeer, Publisher, Viewer, assert_continuous_from_keyframe};

/// The content type of trickle and ICE-restart fragments.
pub const SDP_FRAG: &str = "application/trickle-ice-sdpfrag";

/// The SDP's lines without their line endings.
pub fn sdp_lines(sdp: &str) -> Vec<&str> {
    sdp.lines().map(str::trim_end).collect()
}

/// Joins lines into an SDP with CRLF endings.
pub fn to_sdp<S: AsRef<str>>(lines: &[S]) -> String {
    lines
        .iter()
        .map(|line| format!("{}\r\n", line.as_ref()))
        .collect()
}

/// The offer as clients that send no candidates have it (OBS, FFmpeg, the
/// browser libraries that POST before gathering): no `a=candidate`, no
/// `a=end-of-candidates`.
pub fn without_candidates(sdp: &str) -> String {
    let kept: Vec<&str> = sdp_lines(sdp)
        .into_iter()
        .filter(|l| !l.starts_with("a=candidate:") && *l != "a=end-of-candidates")
        .collect();
    to_sdp(&kept)
}

/// The first value of attribute `key` (say `a=ice-ufrag:`) in `sdp`.
pub fn attribute<'a>(sdp: &'a str, key: &str) -> &'a str {
    sdp.lines()
        .find_map(|l| l.trim_end().strip_prefix(key))
        .unwrap_or_else(|| panic!("no {key} in SDP:\n{sdp}"))
}

/// Every `a=candidate:` line of `sdp`.
pub fn candidate_lines(sdp: &str) -> Vec<String> {
    sdp.lines()
        .filter(|l| l.starts_with("a=candidate:"))
        .map(|l| l.trim_end().to_owned())
        .collect()
}

/// The `a=ssrc` of the first m-section of `kind` ("audio" or "video").
pub fn ssrc_of(sdp: &str, kind: &str) -> u32 {
    let section = sdp
        .split("\r\nm=")
        .find(|s| s.starts_with(kind))
        .unwrap_or_else(|| panic!("no {kind} section in:\n{sdp}"));
    section
        .lines()
        .find_map(|l| l.strip_prefix("a=ssrc:"))
        .and_then(|rest| rest.split(' ').next())
        .and_then(|ssrc| ssrc.parse().ok())
        .unwrap_or_else(|| panic!("no a=ssrc in the {kind} section:\n{sdp}"))
}

/// Asserts what every client's SDP parser relies on: CRLF line endings and
/// a body starting with `v=0`.
pub fn assert_answer_is_crlf_sdp(client: &str, answer: &str) {
    assert!(
        answer.starts_with("v=0\r\n"),
        "{client}: answer must start with v=0: {answer:?}"
    );
    let bare_lf = answer
        .match_indices('\n')
        .any(|(i, _)| i == 0 || answer.as_bytes()[i - 1] != b'\r');
    assert!(!bare_lf, "{client}: answer lines must end in CRLF");
}

/// Asserts the Location is usable by clients that rebuild it from the
/// endpoint's URL (OBS replaces the path and drops the query; live777 calls
/// `set_path`): an absolute path with no query.
pub fn assert_location_is_absolute_path(client: &str, response: &HttpResponse) {
    let location = response
        .header("location")
        .unwrap_or_else(|| panic!("{client}: 201 without Location"));
    assert!(
        location.starts_with('/') && !location.contains('?'),
        "{client}: Location {location:?} must be an absolute path without query"
    );
}

/// Plays `room/stream` with a fresh webrtc-rs viewer (with `token` as a
/// Bearer when given) and asserts that the publisher's video arrives intact
/// from a keyframe on, and audio too.
pub async fn assert_media_reaches_a_viewer(
    client: &str,
    base: &str,
    room: &str,
    stream: &str,
    publisher: &Publisher,
    token: Option<&str>,
) {
    let viewer = Viewer::connect_as(base, room, stream, token)
        .await
        .unwrap_or_else(|r| panic!("{client}: WHEP viewer refused: {} {}", r.status, r.body));
    assert_viewer_plays(client, &viewer).await;
    let sent = publisher.sent.lock().expect("sent log").video.clone();
    assert_continuous_from_keyframe(&viewer.video(), &sent);
    let _ = viewer.delete().await;
}

/// Asserts that `viewer` receives two keyframes and audio.
pub async fn assert_viewer_plays(client: &str, viewer: &Viewer) {
    let wait = tokio::time::timeout(Duration::from_secs(15), async {
        viewer.peer.wait_connected().await;
        viewer.wait_keyframes(2).await;
        crate::eventually(Duration::from_secs(5), "audio", || async {
            (viewer.audio_count() > 10).then_some(())
        })
        .await;
    });
    if wait.await.is_err() {
        panic!(
            "{client}: media did not reach the viewer: {} video packets, {} audio packets",
            viewer.video().len(),
            viewer.audio_count()
        );
    }
}

/// Asserts the session resource is gone (404), as after a DELETE.
pub async fn assert_session_gone(client: &str, url: &str) {
    let response = request("GET", url, &[], Bytes::new()).await;
    assert_eq!(
        response.status, 404,
        "{client}: session still there after DELETE"
    );
}

/// A trickle-ice-sdpfrag body as most clients write it: the SDP's
/// ufrag/pwd at session level, one `m=` line with `mid`, then `candidates`
/// (full `a=candidate:` lines) and `trailer` lines such as
/// `a=end-of-candidates`.
pub fn sdpfrag(
    sdp: &str,
    kind: &str,
    mid: &str,
    candidates: &[String],
    trailer: &[&str],
) -> String {
    let mut lines = vec![
        format!("a=ice-ufrag:{}", attribute(sdp, "a=ice-ufrag:")),
        format!("a=ice-pwd:{}", attribute(sdp, "a=ice-pwd:")),
        format!("m={kind} 9 UDP/TLS/RTP/SAVPF 0"),
        format!("a=mid:{mid}"),
    ];
    lines.extend(candidates.iter().cloned());
    lines.extend(trailer.iter().map(|l| l.to_string()));
    to_sdp(&lines)
}

/// An ICE restart as the browser libraries do it: new credentials from the
/// peer's restart offer PATCHed with `If-Match: *`; the server's 200
/// fragment (new ufrag, pwd, candidates) then becomes the peer's answer.
/// Returns the 200 response, already applied.
pub async fn ice_restart(client: &str, peer: &ClientPeer, session_url: &str) -> HttpResponse {
    let pc = &peer.pc;
    let old_answer = pc.remote_description().await.expect("remote").sdp;
    pc.restart_ice().await.expect("restart_ice");
    let offer = peer.offer().await;
    let body = sdpfrag(&offer, "video", "0", &candidate_lines(&offer), &[]);
    let response = request(
        "PATCH",
        session_url,
        &[("content-type", SDP_FRAG), ("if-match", "*")],
        body,
    )
    .await;
    assert_eq!(
        response.status, 200,
        "{client}: ICE restart PATCH: {}",
        response.body
    );
    let fragment = &response.body;
    let (ufrag, pwd) = (
        attribute(fragment, "a=ice-ufrag:"),
        attribute(fragment, "a=ice-pwd:"),
    );
    let server_candidates = candidate_lines(fragment);
    assert!(
        !server_candidates.is_empty(),
        "{client}: the restart answer carries candidates"
    );
    // The old answer with the server's new credentials and candidates.
    let mut answer = Vec::new();
    let mut candidates_written = false;
    for line in sdp_lines(&old_answer) {
        if line.starts_with("a=candidate:") || line == "a=end-of-candidates" {
            continue;
        }
        if line.starts_with("a=ice-ufrag:") {
            answer.push(format!("a=ice-ufrag:{ufrag}"));
        } else if line.starts_with("a=ice-pwd:") {
            answer.push(format!("a=ice-pwd:{pwd}"));
        } else {
            answer.push(line.to_owned());
        }
        if line.starts_with("a=mid:") && !candidates_written {
            answer.extend(server_candidates.iter().cloned());
            candidates_written = true;
        }
    }
    pc.set_remote_description(RTCSessionDescription::answer(to_sdp(&answer)).expect("answer"))
        .await
        .unwrap_or_else(|e| panic!("{client}: applying the restart answer: {e}"));
    response
}

/// Waits until `viewer` has `by` more video packets than now.
pub async fn video_grows(viewer: &Viewer, by: usize, what: &str) {
    let start = viewer.video().len();
    crate::eventually(Duration::from_secs(10), what, || async {
        (viewer.video().len() >= start + by).then_some(())
    })
    .await;
}
