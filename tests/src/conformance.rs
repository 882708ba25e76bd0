//! Helpers for the HTTP conformance tests of the WHIP/WHEP surface
//! (`tests/tests/http_*.rs`, `bad_input_isolation.rs`): hand-written offers
//! shaped like OBS's, real client offers, trickle fragments, and assertions
//! on problem+json error responses and ICE-server `Link` headers.

use vigil_gateway::config::IceServer;

use crate::http_client::{HttpResponse, request};
use crate::peers::{ClientPeer, publisher_peer, viewer_peer};

/// The content type of an SDP offer or answer.
pub const SDP: &str = "application/sdp";
/// The content type of a trickle/ICE-restart PATCH body.
pub const SDP_FRAG: &str = "application/trickle-ice-sdpfrag";
/// The content type of an RFC 9457 problem document.
pub const PROBLEM_JSON: &str = "application/problem+json";
/// A syntactically valid session id that no session has.
pub const UNKNOWN_ID: &str = "00000000000000000000000000000000";

/// An Opus-only audio section as OBS writes it (no mid, no ICE: added by
/// [`hand_offer`]).
pub const OPUS_SENDONLY: &str = "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n\
    a=sendonly\r\n\
    a=msid:obs audio\r\n\
    a=rtpmap:111 opus/48000/2\r\n\
    a=fmtp:111 minptime=10;useinbandfec=1\r\n\
    a=ssrc:1111 cname:obs\r\n\
    a=ssrc:1111 msid:obs audio\r\n";
/// An H264 (packetization-mode=1) video section as OBS writes it.
pub const H264_SENDONLY: &str = "m=video 9 UDP/TLS/RTP/SAVPF 96\r\n\
    a=sendonly\r\n\
    a=msid:obs video\r\n\
    a=rtpmap:96 H264/90000\r\n\
    a=rtcp-fb:96 nack\r\n\
    a=rtcp-fb:96 nack pli\r\n\
    a=fmtp:96 profile-level-id=42e01f;packetization-mode=1;level-asymmetry-allowed=1\r\n\
    a=ssrc:2222 cname:obs\r\n\
    a=ssrc:2222 msid:obs video\r\n";
/// A video section whose only codec (H263) Vigil does not take.
pub const H263_SENDONLY: &str = "m=video 9 UDP/TLS/RTP/SAVPF 34\r\n\
    a=sendonly\r\n\
    a=msid:obs video\r\n\
    a=rtpmap:34 H263/90000\r\n\
    a=ssrc:3333 cname:obs\r\n\
    a=ssrc:3333 msid:obs video\r\n";

/// A complete hand-written offer: session header, BUNDLE of every section,
/// and per section the ICE, DTLS, mid and rtcp-mux attributes a real offer
/// carries, so only the defect put into `sections` can make it fail.
/// Each section is an `m=` line followed by its own attributes.
pub fn hand_offer(sections: &[&str]) -> String {
    let fingerprint: Vec<String> = (0..32u32)
        .map(|i| format!("{:02X}", (i * 37 + 11) % 256))
        .collect();
    let fingerprint = fingerprint.join(":");
    let mids: Vec<String> = (0..sections.len()).map(|i| i.to_string()).collect();
    let mut sdp = format!(
        "v=0\r\n\
         o=- 4489045141692799359 2 IN IP4 127.0.0.1\r\n\
         s=-\r\n\
         t=0 0\r\n\
         a=group:BUNDLE {}\r\n\
         a=msid-semantic: WMS obs\r\n",
        mids.join(" ")
    );
    for (mid, section) in sections.iter().enumerate() {
        let (m_line, attributes) = section
            .split_once("\r\n")
            .expect("a section starts with an m= line");
        sdp.push_str(&format!(
            "{m_line}\r\n\
             c=IN IP4 0.0.0.0\r\n\
             a=ice-ufrag:Hx7q\r\n\
             a=ice-pwd:Zp3kWm9vQe2rTy6uIo1pAs4d\r\n\
             a=ice-options:trickle\r\n\
             a=fingerprint:sha-256 {fingerprint}\r\n\
             a=setup:actpass\r\n\
             a=mid:{mid}\r\n\
             a=rtcp-mux\r\n\
             {attributes}"
        ));
    }
    sdp
}

/// The offer of a WHIP publisher from OBS: Opus + H264, sendonly.
pub fn obs_offer() -> String {
    hand_offer(&[OPUS_SENDONLY, H264_SENDONLY])
}

/// The same offer with every section `recvonly` and no sending track
/// (valid for WHEP only).
pub fn recvonly_offer() -> String {
    without_lines(&obs_offer(), &["a=ssrc:", "a=msid:"]).replace("a=sendonly", "a=recvonly")
}

/// An offer with two H264 video sections (distinct SSRCs, so that is its
/// only defect).
pub fn two_video_offer() -> String {
    let second = H264_SENDONLY.replace("2222", "4444");
    hand_offer(&[H264_SENDONLY, &second])
}

/// `sdp` without the lines that start with any of `prefixes`.
pub fn without_lines(sdp: &str, prefixes: &[&str]) -> String {
    sdp.split_inclusive("\r\n")
        .filter(|line| !prefixes.iter().any(|p| line.starts_with(p)))
        .collect()
}

/// A real webrtc-rs publisher's offer (sendonly H264 + Opus, all candidates),
/// with the peer that made it (keep it alive while the session matters).
pub async fn publisher_offer() -> (ClientPeer, String) {
    let (peer, _video, _audio) = publisher_peer().await;
    let offer = peer.offer().await;
    (peer, offer)
}

/// A real webrtc-rs viewer's offer (recvonly video + audio, browser codecs).
pub async fn viewer_offer() -> (ClientPeer, String) {
    let peer = viewer_peer().await;
    let offer = peer.offer().await;
    (peer, offer)
}

/// `a=ice-ufrag` and `a=ice-pwd` of an SDP (the first of each).
pub fn ice_credentials(sdp: &str) -> (String, String) {
    let find = |key: &str| {
        sdp.lines()
            .find_map(|l| l.trim_end().strip_prefix(key).map(str::to_owned))
            .unwrap_or_else(|| panic!("no {key} in SDP:\n{sdp}"))
    };
    (find("a=ice-ufrag:"), find("a=ice-pwd:"))
}

/// The ufrag/pwd a live client peer offered: a fragment carrying them is a
/// trickle, not an ICE restart.
pub async fn offered_credentials(peer: &ClientPeer) -> (String, String) {
    let offer = peer
        .pc
        .local_description()
        .await
        .expect("client local description")
        .sdp;
    ice_credentials(&offer)
}

/// A trickle-ice-sdpfrag body as medooze whip.js sends it.
pub fn trickle_fragment(ufrag: &str, pwd: &str, candidates: &[&str]) -> String {
    let mut body = format!(
        "a=ice-ufrag:{ufrag}\r\na=ice-pwd:{pwd}\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\n"
    );
    for candidate in candidates {
        body.push_str(&format!("a=candidate:{candidate}\r\n"));
    }
    body.push_str("a=end-of-candidates\r\n");
    body
}

/// A UDP host candidate on 127.0.0.1, for trickle fragments.
pub const HOST_CANDIDATE: &str = "1 1 udp 2130706431 127.0.0.1 9 typ host";

/// PATCHes `url` with a fragment body and the given extra headers.
pub async fn patch(url: &str, headers: &[(&str, &str)], body: &str) -> HttpResponse {
    let mut all = vec![("content-type", SDP_FRAG)];
    all.extend_from_slice(headers);
    request("PATCH", url, &all, body.to_owned()).await
}

/// A body over the 64 KiB limit.
pub fn oversized_offer() -> String {
    let mut body = String::from("v=0\r\n");
    while body.len() < 5 + 70_000 {
        body.push_str("a=x:yyyy\r\n");
    }
    body
}

/// Asserts an error response: the status, and an RFC 9457 problem document
/// that states the same status.
pub fn assert_problem(response: &HttpResponse, status: u16, step: &str) {
    assert_eq!(
        response.status, status,
        "{step}: expected {status}, got {} with body {:?}",
        response.status, response.body
    );
    assert_eq!(
        response.header("content-type"),
        Some(PROBLEM_JSON),
        "{step}: error responses are problem+json"
    );
    assert!(
        response.body.contains(&format!("\"status\":{status}")),
        "{step}: problem document names the status: {:?}",
        response.body
    );
}

/// Asserts a success response (any 2xx status).
pub fn assert_2xx(response: &HttpResponse, step: &str) {
    assert!(
        (200..300).contains(&response.status),
        "{step}: expected 2xx, got {} with body {:?}",
        response.status,
        response.body
    );
}

/// Whether a comma-separated header value lists `item` (case-insensitive).
pub fn lists(value: Option<&str>, item: &str) -> bool {
    value.is_some_and(|v| {
        v.split(',')
            .any(|part| part.trim().eq_ignore_ascii_case(item))
    })
}

/// The m-sections of an SDP, each as its text from `m=` on.
pub fn media_sections(sdp: &str) -> Vec<&str> {
    let mut starts: Vec<usize> = sdp.match_indices("\r\nm=").map(|(i, _)| i + 2).collect();
    starts.push(sdp.len());
    starts.windows(2).map(|w| &sdp[w[0]..w[1]]).collect()
}

/// A STUN and a TURN server (with credentials) for the ICE-server tests.
pub fn two_ice_servers() -> Vec<IceServer> {
    vec![
        IceServer {
            url: "stun:stun.example.net:3478".into(),
            username: None,
            credential: None,
        },
        IceServer {
            url: "turn:turn.example.net:3478?transport=udp".into(),
            username: Some("alice".into()),
            credential: Some("s3cret".into()),
        },
    ]
}

/// Checks the two `Link` header values for [`two_ice_servers`].
pub fn assert_ice_server_links(response: &HttpResponse, step: &str) {
    let links = response.header_all("link");
    assert_eq!(
        links.len(),
        2,
        "{step}: one Link header per ICE server, never joined: {links:?}"
    );
    assert_eq!(
        links[0], "<stun:stun.example.net:3478>; rel=\"ice-server\"",
        "{step}: STUN link"
    );
    let turn = &links[1];
    for part in [
        "<turn:turn.example.net:3478?transport=udp>",
        "rel=\"ice-server\"",
        "username=\"alice\"",
        "credential=\"s3cret\"",
        "credential-type=\"password\"",
    ] {
        assert!(
            turn.contains(part),
            "{step}: TURN link {turn:?} lacks {part}"
        );
    }
}
