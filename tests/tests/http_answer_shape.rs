//! The 201 Created to WHIP and WHEP offers: the status, Location, ETag and
//! CORS headers, and the shape of the SDP answer (BUNDLE, directions,
//! rtcp-mux, host candidates), checked over real HTTP against a real gateway.

use vigil_tests::conformance::{
    SDP, lists, media_sections, obs_offer, publisher_offer, viewer_offer, without_lines,
};
use vigil_tests::http_client::post_sdp;
use vigil_tests::peers::Publisher;
use vigil_tests::{base_url, start_server};

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
