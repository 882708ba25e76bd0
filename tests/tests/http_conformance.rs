//! HTTP conformance of the WHIP/WHEP surface (RFC 9725, WHEP draft): status
//! codes, headers and bodies for good and bad requests, checked over real
//! HTTP against a real gateway, with real WebRTC peers where a live session
//! is needed. The last test checks that bad input disturbs no other session.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::media_engine::{MIME_TYPE_H264, MIME_TYPE_OPUS};
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use tokio::task::JoinSet;
use vigil_gateway::config::IceServer;
use vigil_tests::http_client::{HttpResponse, post_sdp, request};
use vigil_tests::peers::{ClientCodecs, ClientPeer, H264_FMTP, Publisher, Viewer};
use vigil_tests::{base_url, eventually, start_server};
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

const SDP: &str = "application/sdp";
const SDP_FRAG: &str = "application/trickle-ice-sdpfrag";
const PROBLEM_JSON: &str = "application/problem+json";
/// A syntactically valid session id that no session has.
const UNKNOWN_ID: &str = "00000000000000000000000000000000";

/// An Opus-only audio section as OBS writes it (no mid, no ICE: added by
/// [`hand_offer`]).
const OPUS_SENDONLY: &str = "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n\
    a=sendonly\r\n\
    a=msid:obs audio\r\n\
    a=rtpmap:111 opus/48000/2\r\n\
    a=fmtp:111 minptime=10;useinbandfec=1\r\n\
    a=ssrc:1111 cname:obs\r\n\
    a=ssrc:1111 msid:obs audio\r\n";
/// An H264 (packetization-mode=1) video section as OBS writes it.
const H264_SENDONLY: &str = "m=video 9 UDP/TLS/RTP/SAVPF 96\r\n\
    a=sendonly\r\n\
    a=msid:obs video\r\n\
    a=rtpmap:96 H264/90000\r\n\
    a=rtcp-fb:96 nack\r\n\
    a=rtcp-fb:96 nack pli\r\n\
    a=fmtp:96 profile-level-id=42e01f;packetization-mode=1;level-asymmetry-allowed=1\r\n\
    a=ssrc:2222 cname:obs\r\n\
    a=ssrc:2222 msid:obs video\r\n";
/// A video section whose only codec (H263) Vigil does not take.
const H263_SENDONLY: &str = "m=video 9 UDP/TLS/RTP/SAVPF 34\r\n\
    a=sendonly\r\n\
    a=msid:obs video\r\n\
    a=rtpmap:34 H263/90000\r\n\
    a=ssrc:3333 cname:obs\r\n\
    a=ssrc:3333 msid:obs video\r\n";

/// A complete hand-written offer: session header, BUNDLE of every section,
/// and per section the ICE, DTLS, mid and rtcp-mux attributes a real offer
/// carries, so only the defect put into `sections` can make it fail.
/// Each section is an `m=` line followed by its own attributes.
fn hand_offer(sections: &[&str]) -> String {
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
fn obs_offer() -> String {
    hand_offer(&[OPUS_SENDONLY, H264_SENDONLY])
}

/// The same offer with every section `recvonly` and no sending track
/// (valid for WHEP only).
fn recvonly_offer() -> String {
    without_lines(&obs_offer(), &["a=ssrc:", "a=msid:"]).replace("a=sendonly", "a=recvonly")
}

/// An offer with two H264 video sections (distinct SSRCs, so that is its
/// only defect).
fn two_video_offer() -> String {
    let second = H264_SENDONLY.replace("2222", "4444");
    hand_offer(&[H264_SENDONLY, &second])
}

/// `sdp` without the lines that start with any of `prefixes`.
fn without_lines(sdp: &str, prefixes: &[&str]) -> String {
    sdp.split_inclusive("\r\n")
        .filter(|line| !prefixes.iter().any(|p| line.starts_with(p)))
        .collect()
}

/// A local track for a sendonly transceiver, as `Publisher::connect` makes.
fn local_track(kind: RtpCodecKind, codec: RTCRtpCodec) -> Arc<TrackLocalStaticRTP> {
    let name = format!("{kind}").to_lowercase();
    Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
        "publisher".to_owned(),
        name.clone(),
        name,
        kind,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(rand::random()),
                ..Default::default()
            },
            codec,
            ..Default::default()
        }],
    )))
}

/// A real webrtc-rs publisher's offer (sendonly H264 + Opus, all candidates),
/// with the peer that made it (keep it alive while the session matters).
async fn publisher_offer() -> (ClientPeer, String) {
    let peer = ClientPeer::new(ClientCodecs::H264AndOpus).await;
    let audio = local_track(
        RtpCodecKind::Audio,
        RTCRtpCodec {
            mime_type: MIME_TYPE_OPUS.to_owned(),
            clock_rate: 48_000,
            channels: 2,
            sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
            rtcp_feedback: vec![],
        },
    );
    let video = local_track(
        RtpCodecKind::Video,
        RTCRtpCodec {
            mime_type: MIME_TYPE_H264.to_owned(),
            clock_rate: 90_000,
            channels: 0,
            sdp_fmtp_line: H264_FMTP.to_owned(),
            rtcp_feedback: vec![],
        },
    );
    for track in [audio, video] {
        peer.pc
            .add_transceiver_from_track(
                track,
                Some(RTCRtpTransceiverInit {
                    direction: RTCRtpTransceiverDirection::Sendonly,
                    ..Default::default()
                }),
            )
            .await
            .expect("add sendonly transceiver");
    }
    let offer = peer.offer().await;
    (peer, offer)
}

/// A real webrtc-rs viewer's offer (recvonly video + audio, browser codecs).
async fn viewer_offer() -> (ClientPeer, String) {
    let peer = vigil_tests::peers::viewer_peer().await;
    let offer = peer.offer().await;
    (peer, offer)
}

/// `a=ice-ufrag` and `a=ice-pwd` of an SDP (the first of each).
fn ice_credentials(sdp: &str) -> (String, String) {
    let find = |key: &str| {
        sdp.lines()
            .find_map(|l| l.trim_end().strip_prefix(key).map(str::to_owned))
            .unwrap_or_else(|| panic!("no {key} in SDP:\n{sdp}"))
    };
    (find("a=ice-ufrag:"), find("a=ice-pwd:"))
}

/// The ufrag/pwd a live client peer offered: a fragment carrying them is a
/// trickle, not an ICE restart.
async fn offered_credentials(peer: &ClientPeer) -> (String, String) {
    let offer = peer
        .pc
        .local_description()
        .await
        .expect("client local description")
        .sdp;
    ice_credentials(&offer)
}

/// A trickle-ice-sdpfrag body as medooze whip.js sends it.
fn trickle_fragment(ufrag: &str, pwd: &str, candidates: &[&str]) -> String {
    let mut body = format!(
        "a=ice-ufrag:{ufrag}\r\na=ice-pwd:{pwd}\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\n"
    );
    for candidate in candidates {
        body.push_str(&format!("a=candidate:{candidate}\r\n"));
    }
    body.push_str("a=end-of-candidates\r\n");
    body
}

const HOST_CANDIDATE: &str = "1 1 udp 2130706431 127.0.0.1 9 typ host";

/// PATCHes `url` with a fragment body and the given extra headers.
async fn patch(url: &str, headers: &[(&str, &str)], body: &str) -> HttpResponse {
    let mut all = vec![("content-type", SDP_FRAG)];
    all.extend_from_slice(headers);
    request("PATCH", url, &all, body.to_owned()).await
}

/// A body over the 64 KiB limit.
fn oversized_offer() -> String {
    let mut body = String::from("v=0\r\n");
    while body.len() < 5 + 70_000 {
        body.push_str("a=x:yyyy\r\n");
    }
    body
}

/// Asserts an error response: the status, and an RFC 9457 problem document
/// that states the same status.
fn assert_problem(response: &HttpResponse, status: u16, step: &str) {
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

fn assert_2xx(response: &HttpResponse, step: &str) {
    assert!(
        (200..300).contains(&response.status),
        "{step}: expected 2xx, got {} with body {:?}",
        response.status,
        response.body
    );
}

/// Whether a comma-separated header value lists `item` (case-insensitive).
fn lists(value: Option<&str>, item: &str) -> bool {
    value.is_some_and(|v| {
        v.split(',')
            .any(|part| part.trim().eq_ignore_ascii_case(item))
    })
}

/// The m-sections of an SDP, each as its text from `m=` on.
fn media_sections(sdp: &str) -> Vec<&str> {
    let mut starts: Vec<usize> = sdp.match_indices("\r\nm=").map(|(i, _)| i + 2).collect();
    starts.push(sdp.len());
    starts.windows(2).map(|w| &sdp[w[0]..w[1]]).collect()
}

fn two_ice_servers() -> Vec<IceServer> {
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
fn assert_ice_server_links(response: &HttpResponse, step: &str) {
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

// ---------------------------------------------------------------------------
// 201 Created
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whip_publisher_connects_with_201() {
    let vigil = start_server(|_| {}).await;
    let base = base_url(&vigil);
    // Publisher::connect asserts the 201 and waits for the connection.
    let publisher = Publisher::connect(&base, "room", "cam").await;
    assert!(
        publisher
            .session
            .url
            .starts_with(&format!("{base}/sessions/")),
        "session URL {}",
        publisher.session.url
    );
    assert_eq!(publisher.delete().await, 200, "DELETE the publisher");
    vigil.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whip_201_has_the_headers_and_answer_clients_need() {
    let vigil = start_server(|_| {}).await;
    let base = base_url(&vigil);
    let (peer, offer) = publisher_offer().await;
    let response = post_sdp(&format!("{base}/whip/room/cam"), &offer).await;

    assert_eq!(response.status, 201, "WHIP POST: {}", response.body);
    assert_eq!(
        response.header("content-type"),
        Some(SDP),
        "201 Content-Type"
    );
    let location = response.header("location").expect("201 has a Location");
    let id = location
        .strip_prefix("/sessions/")
        .unwrap_or_else(|| panic!("Location {location:?} is under /sessions/"));
    assert!(
        id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "session id is 32 hex digits: {id:?}"
    );
    let etag = response.header("etag").expect("201 has an ETag");
    assert!(
        etag.starts_with('"') && etag.ends_with('"') && etag.len() > 2,
        "ETag {etag:?} is a quoted strong entity-tag"
    );
    assert!(!etag.starts_with("W/"), "ETag {etag:?} is not weak");
    let exposed = response.header("access-control-expose-headers");
    for name in ["Location", "ETag", "Link"] {
        assert!(
            lists(exposed, name),
            "Access-Control-Expose-Headers {exposed:?} exposes {name}"
        );
    }

    let answer = &response.body;
    assert!(answer.starts_with("v=0\r\n"), "answer starts with v=0");
    assert!(answer.ends_with("\r\n"), "answer ends with CRLF");
    assert!(
        !answer.replace("\r\n", "").contains('\n'),
        "answer uses CRLF line endings only"
    );
    assert!(
        answer.len() < 8192,
        "answer is {} bytes; FFmpeg takes at most 8192",
        answer.len()
    );
    assert!(
        answer.contains("\r\na=group:BUNDLE "),
        "answer has a=group:BUNDLE"
    );
    let sections = media_sections(answer);
    assert_eq!(sections.len(), 2, "answer has the offer's two m-sections");
    for (i, section) in sections.iter().enumerate() {
        for attribute in ["a=recvonly\r\n", "a=rtcp-mux\r\n", "a=rtcp-mux-only\r\n"] {
            assert!(
                section.contains(attribute),
                "answer m-section {i} lacks {attribute:?}:\n{section}"
            );
        }
    }
    let host_udp = answer
        .lines()
        .filter(|l| l.starts_with("a=candidate:"))
        .any(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            fields.get(2).is_some_and(|t| t.eq_ignore_ascii_case("udp"))
                && fields.get(4) == Some(&"127.0.0.1")
                && l.contains(" typ host")
        });
    assert!(
        host_udp,
        "answer has a UDP host candidate on 127.0.0.1:\n{answer}"
    );

    let _ = peer.pc.close().await;
    vigil.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hand_written_obs_offer_is_accepted() {
    // The control for the 422 tests: the hand-written offer is good as it is.
    let vigil = start_server(|_| {}).await;
    let base = base_url(&vigil);
    let response = post_sdp(&format!("{base}/whip/room/cam"), &obs_offer()).await;
    assert_eq!(
        response.status, 201,
        "hand-written OBS offer: {}",
        response.body
    );
    assert_eq!(
        response.header("content-type"),
        Some(SDP),
        "201 Content-Type"
    );
    assert!(response.header("location").is_some(), "201 has a Location");
    vigil.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bundled_offer_with_msid_but_no_ssrc_lines_is_422_not_500() {
    // JSEP (RFC 8829) does not require a=ssrc, but webrtc-rs 0.21 routes RTP
    // only by declared SSRC or RID: accepting this would make a session that
    // never plays. The client's offer is not the server's fault: 4xx, not 5xx.
    let vigil = start_server(|_| {}).await;
    let base = base_url(&vigil);
    let offer = without_lines(&obs_offer(), &["a=ssrc:"]).replace(
        "a=rtcp-mux\r\n",
        "a=rtcp-mux\r\na=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid\r\n",
    );
    let response = post_sdp(&format!("{base}/whip/room/cam"), &offer).await;
    assert_eq!(
        response.status, 422,
        "offer with a=msid and no a=ssrc: {}",
        response.body
    );
    vigil.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whep_answer_is_sendonly() {
    let vigil = start_server(|_| {}).await;
    let base = base_url(&vigil);
    let mut publisher = Publisher::connect(&base, "room", "cam").await;
    publisher.start_media();

    let (peer, offer) = viewer_offer().await;
    let response = post_sdp(&format!("{base}/whep/room/cam"), &offer).await;
    assert_eq!(response.status, 201, "WHEP POST: {}", response.body);
    assert_eq!(
        response.header("content-type"),
        Some(SDP),
        "WHEP 201 Content-Type"
    );
    assert!(
        response
            .header("location")
            .is_some_and(|l| l.starts_with("/sessions/")),
        "WHEP 201 Location: {:?}",
        response.header("location")
    );
    assert!(response.header("etag").is_some(), "WHEP 201 has an ETag");
    let answer = &response.body;
    assert!(answer.starts_with("v=0\r\n"), "WHEP answer starts with v=0");
    let sections = media_sections(answer);
    assert_eq!(sections.len(), 2, "WHEP answer has video and audio");
    for (i, section) in sections.iter().enumerate() {
        for attribute in ["a=sendonly\r\n", "a=rtcp-mux-only\r\n"] {
            assert!(
                section.contains(attribute),
                "WHEP answer m-section {i} lacks {attribute:?}:\n{section}"
            );
        }
        assert!(
            !section.contains("a=recvonly") && !section.contains("a=sendrecv"),
            "WHEP answer m-section {i} is only sendonly:\n{section}"
        );
    }

    let _ = peer.pc.close().await;
    vigil.shutdown().await;
}

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
// PATCH: conditional requests and trickle
// ---------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------
// DELETE, GET, HEAD
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_ends_the_session_once() {
    let vigil = start_server(|_| {}).await;
    let base = base_url(&vigil);
    let publisher = Publisher::connect(&base, "room", "cam").await;
    let response = request("DELETE", &publisher.session.url, &[], Bytes::new()).await;
    assert_eq!(
        response.status, 200,
        "DELETE a live session: {}",
        response.body
    );
    let response = request("DELETE", &publisher.session.url, &[], Bytes::new()).await;
    assert_problem(&response, 404, "second DELETE");
    let response = request("GET", &publisher.session.url, &[], Bytes::new()).await;
    assert_problem(&response, 404, "GET a deleted session");
    // The stream is free again.
    let response = post_sdp(&format!("{base}/whip/room/cam"), &obs_offer()).await;
    assert_eq!(
        response.status, 201,
        "publish again after DELETE: {}",
        response.body
    );
    vigil.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_ignores_if_match() {
    let vigil = start_server(|_| {}).await;
    let base = base_url(&vigil);
    let publisher = Publisher::connect(&base, "room", "cam").await;
    let response = request(
        "DELETE",
        &publisher.session.url,
        &[("if-match", "\"whatever\"")],
        Bytes::new(),
    )
    .await;
    assert_eq!(
        response.status, 200,
        "DELETE with a non-matching If-Match: {}",
        response.body
    );
    let response = request("GET", &publisher.session.url, &[], Bytes::new()).await;
    assert_problem(&response, 404, "GET after DELETE with If-Match");
    vigil.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_and_head_on_endpoints_are_2xx_without_content() {
    let vigil = start_server(|_| {}).await;
    let base = base_url(&vigil);
    for path in ["/whip/r/s", "/whep/r/s"] {
        for method in ["GET", "HEAD"] {
            let response = request(method, &format!("{base}{path}"), &[], Bytes::new()).await;
            assert_2xx(&response, &format!("{method} {path}"));
            assert!(
                response.body.is_empty(),
                "{method} {path} has no content: {:?}",
                response.body
            );
        }
    }
    let response = request("GET", &format!("{base}/healthz"), &[], Bytes::new()).await;
    assert_eq!(response.status, 200, "GET /healthz");
    vigil.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_and_head_on_a_live_session_are_2xx() {
    let vigil = start_server(|_| {}).await;
    let base = base_url(&vigil);
    let publisher = Publisher::connect(&base, "room", "cam").await;
    for method in ["GET", "HEAD"] {
        let response = request(method, &publisher.session.url, &[], Bytes::new()).await;
        assert_2xx(&response, &format!("{method} a live session"));
        assert!(
            response.body.is_empty(),
            "{method} a live session has no content"
        );
    }
    vigil.shutdown().await;
}

// ---------------------------------------------------------------------------
// OPTIONS, CORS and ICE servers
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_preflight_allows_whip_and_has_no_link() {
    let vigil = start_server(|c| c.ice_servers = two_ice_servers()).await;
    let base = base_url(&vigil);
    for path in ["/whip/r/s", "/whep/r/s"] {
        let response = request(
            "OPTIONS",
            &format!("{base}{path}"),
            &[
                ("origin", "http://example.com"),
                ("access-control-request-method", "POST"),
                (
                    "access-control-request-headers",
                    "authorization, content-type",
                ),
            ],
            Bytes::new(),
        )
        .await;
        let step = format!("preflight OPTIONS {path}");
        assert_eq!(response.status, 200, "{step}: {}", response.body);
        assert!(
            response.header("access-control-allow-origin").is_some(),
            "{step}: Access-Control-Allow-Origin"
        );
        let methods = response.header("access-control-allow-methods");
        assert!(
            lists(methods, "POST"),
            "{step}: Access-Control-Allow-Methods {methods:?} lists POST"
        );
        let headers = response.header("access-control-allow-headers");
        for name in ["Authorization", "Content-Type", "If-Match"] {
            assert!(
                lists(headers, name),
                "{step}: Access-Control-Allow-Headers {headers:?} lists {name}"
            );
        }
        assert_eq!(
            response.header("accept-post"),
            Some(SDP),
            "{step}: Accept-Post"
        );
        assert!(
            response.header_all("link").is_empty(),
            "{step}: no Link on a preflight: {:?}",
            response.header_all("link")
        );
    }
    vigil.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_options_lists_ice_servers_one_link_each() {
    let vigil = start_server(|c| c.ice_servers = two_ice_servers()).await;
    let base = base_url(&vigil);
    let response = request("OPTIONS", &format!("{base}/whip/r/s"), &[], Bytes::new()).await;
    assert_eq!(response.status, 200, "plain OPTIONS: {}", response.body);
    assert_eq!(
        response.header("accept-post"),
        Some(SDP),
        "plain OPTIONS Accept-Post"
    );
    assert_ice_server_links(&response, "plain OPTIONS");
    vigil.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whip_201_lists_ice_servers_one_link_each() {
    let vigil = start_server(|c| c.ice_servers = two_ice_servers()).await;
    let base = base_url(&vigil);
    let (peer, offer) = publisher_offer().await;
    let response = post_sdp(&format!("{base}/whip/room/cam"), &offer).await;
    assert_eq!(response.status, 201, "WHIP POST: {}", response.body);
    assert_ice_server_links(&response, "WHIP 201");
    let _ = peer.pc.close().await;
    vigil.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_link_headers_without_ice_servers() {
    let vigil = start_server(|_| {}).await;
    let base = base_url(&vigil);
    let response = request("OPTIONS", &format!("{base}/whip/r/s"), &[], Bytes::new()).await;
    assert_eq!(response.status, 200, "plain OPTIONS: {}", response.body);
    assert!(
        response.header_all("link").is_empty(),
        "no ICE servers configured, no Link: {:?}",
        response.header_all("link")
    );
    vigil.shutdown().await;
}

// ---------------------------------------------------------------------------
// Isolation
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_disturbs_no_other_session() {
    let vigil = start_server(|_| {}).await;
    let base = base_url(&vigil);
    let mut publisher = Publisher::connect(&base, "room", "cam").await;
    publisher.start_media();
    let viewer = Viewer::connect(&base, "room", "cam")
        .await
        .expect("WHEP 201");
    viewer.peer.wait_connected().await;
    eventually(Duration::from_secs(10), "video at the viewer", || async {
        (!viewer.video().is_empty()).then_some(())
    })
    .await;
    let (ufrag, pwd) = offered_credentials(&viewer.peer).await;
    let (second_peer, second_offer) = publisher_offer().await;

    // (step, method, url, headers, body, expected status)
    type Bad = (
        String,
        &'static str,
        String,
        Vec<(&'static str, String)>,
        String,
        u16,
    );
    let sdp = || vec![("content-type", SDP.to_owned())];
    let frag = |if_match: Option<&str>| {
        let mut headers = vec![("content-type", SDP_FRAG.to_owned())];
        if let Some(tag) = if_match {
            headers.push(("if-match", tag.to_owned()));
        }
        headers
    };
    let whip = format!("{base}/whip/room/cam");
    let viewer_url = viewer.session.url.clone();
    let publisher_url = publisher.session.url.clone();
    let trickle = trickle_fragment(&ufrag, &pwd, &[HOST_CANDIDATE]);
    let restart = trickle_fragment("Abcd", "Efghijklmnopqrstuvwxyz12", &[HOST_CANDIDATE]);
    let bad: Vec<Bad> = vec![
        (
            "POST text/plain".into(),
            "POST",
            whip.clone(),
            vec![("content-type", "text/plain".into())],
            obs_offer(),
            415,
        ),
        (
            "POST hello".into(),
            "POST",
            whip.clone(),
            sdp(),
            "hello".into(),
            400,
        ),
        (
            "POST v=0".into(),
            "POST",
            whip.clone(),
            sdp(),
            "v=0\r\n".into(),
            400,
        ),
        (
            "POST bad name".into(),
            "POST",
            format!("{base}/whip/bad%20name/s"),
            sdp(),
            obs_offer(),
            400,
        ),
        (
            "POST 70 kB".into(),
            "POST",
            whip.clone(),
            sdp(),
            oversized_offer(),
            413,
        ),
        (
            "POST H263".into(),
            "POST",
            format!("{base}/whip/room/other"),
            sdp(),
            hand_offer(&[H263_SENDONLY]),
            422,
        ),
        (
            "POST two videos".into(),
            "POST",
            format!("{base}/whip/room/other"),
            sdp(),
            two_video_offer(),
            422,
        ),
        (
            "POST recvonly WHIP".into(),
            "POST",
            format!("{base}/whip/room/other"),
            sdp(),
            recvonly_offer(),
            422,
        ),
        (
            "second WHIP to the live stream".into(),
            "POST",
            whip.clone(),
            sdp(),
            second_offer,
            409,
        ),
        (
            "hand-written second WHIP".into(),
            "POST",
            whip.clone(),
            sdp(),
            obs_offer(),
            409,
        ),
        (
            "WHEP unpublished".into(),
            "POST",
            format!("{base}/whep/room/nobody"),
            sdp(),
            recvonly_offer(),
            409,
        ),
        (
            "WHEP sendonly offer".into(),
            "POST",
            format!("{base}/whep/room/cam"),
            sdp(),
            obs_offer(),
            422,
        ),
        (
            "PUT endpoint".into(),
            "PUT",
            whip.clone(),
            sdp(),
            obs_offer(),
            405,
        ),
        (
            "POST JSON to viewer session".into(),
            "POST",
            viewer_url.clone(),
            vec![("content-type", "application/json".into())],
            r#"{"audio":true}"#.into(),
            405,
        ),
        (
            "viewer PATCH wrong If-Match".into(),
            "PATCH",
            viewer_url.clone(),
            frag(Some("\"wrong\"")),
            trickle.clone(),
            412,
        ),
        (
            "viewer PATCH restart wrong If-Match".into(),
            "PATCH",
            viewer_url.clone(),
            frag(Some("\"wrong\"")),
            restart.clone(),
            412,
        ),
        (
            "viewer PATCH no If-Match".into(),
            "PATCH",
            viewer_url.clone(),
            frag(None),
            trickle.clone(),
            428,
        ),
        (
            "viewer PATCH application/sdp".into(),
            "PATCH",
            viewer_url.clone(),
            sdp(),
            trickle.clone(),
            415,
        ),
        (
            "viewer PATCH hello".into(),
            "PATCH",
            viewer_url.clone(),
            frag(Some(viewer.session.etag.as_str())),
            "hello".into(),
            400,
        ),
        (
            "publisher PATCH wrong If-Match".into(),
            "PATCH",
            publisher_url.clone(),
            frag(Some("\"wrong\"")),
            trickle.clone(),
            412,
        ),
        (
            "publisher PATCH hello".into(),
            "PATCH",
            publisher_url.clone(),
            frag(Some(publisher.session.etag.as_str())),
            "hello".into(),
            400,
        ),
        (
            "PATCH unknown session".into(),
            "PATCH",
            format!("{base}/sessions/{UNKNOWN_ID}"),
            frag(Some("\"x\"")),
            trickle.clone(),
            404,
        ),
        (
            "DELETE unknown session".into(),
            "DELETE",
            format!("{base}/sessions/{UNKNOWN_ID}"),
            vec![],
            String::new(),
            404,
        ),
        (
            "DELETE not-an-id".into(),
            "DELETE",
            format!("{base}/sessions/not-an-id"),
            vec![],
            String::new(),
            404,
        ),
        (
            "GET /nope".into(),
            "GET",
            format!("{base}/nope"),
            vec![],
            String::new(),
            404,
        ),
    ];
    let mut barrage = JoinSet::new();
    for round in 0..2 {
        for (step, method, url, headers, body, expected) in bad.clone() {
            barrage.spawn(async move {
                let headers: Vec<(&str, &str)> =
                    headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
                let response = request(method, &url, &headers, body).await;
                (format!("{step} (round {round})"), expected, response)
            });
        }
    }
    while let Some(joined) = barrage.join_next().await {
        let (step, expected, response) = joined.expect("bad request task");
        assert_eq!(
            response.status, expected,
            "{step}: expected {expected}, got {} with body {:?}",
            response.status, response.body
        );
    }

    // Both sessions are untouched: still there, and video keeps flowing.
    for (url, who) in [(&publisher_url, "publisher"), (&viewer_url, "viewer")] {
        let response = request("GET", url, &[], Bytes::new()).await;
        assert_2xx(
            &response,
            &format!("GET the {who} session after the barrage"),
        );
    }
    let before = viewer.video().len();
    eventually(
        Duration::from_secs(10),
        "viewer video to keep growing after the barrage",
        || async { (viewer.video().len() > before + 100).then_some(()) },
    )
    .await;
    // A trickle with the right entity-tag still works: the tag did not change.
    let response = patch(
        &viewer_url,
        &[("if-match", viewer.session.etag.as_str())],
        &trickle,
    )
    .await;
    assert_eq!(
        response.status, 204,
        "viewer trickle with its own ETag after the barrage: {}",
        response.body
    );
    let _ = second_peer.pc.close().await;
    vigil.shutdown().await;
}
