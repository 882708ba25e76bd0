//! The Eyevinn browser libraries, replayed with their bugs: see
//! ../shared/reference/whip-whep.md §2.4.
//!
//! - `@eyevinn/whip-web-client` 1.1.6 sends OPTIONS first (with the literal
//!   `Bearer undefined` when it has no key) and trickles only if the
//!   readable `Access-Control-Allow-Methods` lists PATCH; its offer is
//!   `sendrecv`; it PATCHes one candidate at a time with the entity-tag in an
//!   `ETag` request header (not If-Match), one `m=audio 9 RTP/AVP 0` per mid
//!   and candidate component 0; DELETE carries no Authorization.
//! - `@eyevinn/webrtc-player` 0.13.1 (WHEP) sends its key verbatim in
//!   `Authorization` (no `Bearer `), offers video before audio and injects
//!   `a=rtcp-fb:<opus> nack`.

use vigil_tests::conformance::lists;
use vigil_tests::control::{Scene, subscribe_only};
use vigil_tests::http_client::request;
use vigil_tests::peers::{PublishRequest, Publisher, TestVideo, Viewer, viewer_peer};
use vigil_tests::replay::{
    SDP_FRAG, assert_answer_is_crlf_sdp, assert_media_reaches_a_viewer, assert_session_gone,
    assert_viewer_plays, attribute, candidate_lines, sdp_lines, to_sdp, without_candidates,
};
use vigil_tests::{base_url, start_server};

const WHIP_CLIENT: &str = "Eyevinn whip-web-client 1.1.6 (replayed)";
const PLAYER: &str = "Eyevinn webrtc-player 0.13.1 (replayed)";
const ORIGIN: &str = "http://localhost:1234";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whip_web_client_learns_trickle_from_options_and_trickles_its_way() {
    // Without a key configured, the client sends `Bearer undefined`; an
    // open server ignores credentials.
    let vigil = start_server(|_| {}).await;
    let base = base_url(&vigil);
    let whip = format!("{base}/whip/cams/phone");
    let undefined = "Bearer undefined";

    // 1. OPTIONS, cross-origin: the browser preflights it, then sends it.
    let preflight = request(
        "OPTIONS",
        &whip,
        &[
            ("origin", ORIGIN),
            ("access-control-request-method", "OPTIONS"),
            ("access-control-request-headers", "authorization"),
        ],
        "",
    )
    .await;
    assert!(
        (200..300).contains(&preflight.status),
        "{WHIP_CLIENT}: preflight of OPTIONS: {}",
        preflight.status
    );
    assert!(
        lists(
            preflight.header("access-control-allow-headers"),
            "authorization"
        ),
        "{WHIP_CLIENT}: preflight must allow Authorization explicitly"
    );
    let options = request(
        "OPTIONS",
        &whip,
        &[("origin", ORIGIN), ("authorization", undefined)],
        "",
    )
    .await;
    assert!(
        (200..300).contains(&options.status),
        "{WHIP_CLIENT}: OPTIONS: {}",
        options.status
    );
    assert!(
        lists(options.header("access-control-allow-methods"), "PATCH"),
        "{WHIP_CLIENT}: trickle stays off unless Access-Control-Allow-Methods lists PATCH"
    );
    assert!(
        lists(
            options.header("access-control-expose-headers"),
            "Access-Control-Allow-Methods"
        ),
        "{WHIP_CLIENT}: cross-origin JS can only read Allow-Methods if it is exposed"
    );

    // 2. POST: a sendrecv offer (addTrack) without candidates.
    let (mut publisher, created) = Publisher::publish(
        &base,
        &whip,
        PublishRequest {
            video: TestVideo::H264,
            video_codec: None,
            headers: vec![
                ("content-type", "application/sdp".to_owned()),
                ("authorization", undefined.to_owned()),
                ("origin", ORIGIN.to_owned()),
            ],
            munge: Box::new(|offer| without_candidates(&offer).replace("a=sendonly", "a=sendrecv")),
        },
    )
    .await
    .unwrap_or_else(|r| panic!("{WHIP_CLIENT}: POST: {} {}", r.status, r.body));
    assert_answer_is_crlf_sdp(WHIP_CLIENT, &created.body);
    let etag = created.header("etag").expect("ETag").to_owned();

    // 3. One PATCH per candidate: ETag request header, an `m=audio` line
    // for every mid, component 0.
    let local = publisher
        .peer
        .pc
        .local_description()
        .await
        .expect("local description")
        .sdp;
    let (ufrag, pwd) = (
        attribute(&local, "a=ice-ufrag:"),
        attribute(&local, "a=ice-pwd:"),
    );
    let mids: Vec<&str> = sdp_lines(&local)
        .into_iter()
        .filter_map(|l| l.strip_prefix("a=mid:"))
        .collect();
    let candidates = candidate_lines(&local);
    assert!(!candidates.is_empty(), "the peer gathered candidates");
    for candidate in &candidates {
        let mut fields: Vec<&str> = candidate.split(' ').collect();
        fields[1] = "0";
        let candidate = fields.join(" ");
        let mut body = vec![format!("a=ice-ufrag:{ufrag}"), format!("a=ice-pwd:{pwd}")];
        for mid in &mids {
            body.push("m=audio 9 RTP/AVP 0".to_owned());
            body.push(format!("a=mid:{mid}"));
            body.push(candidate.clone());
        }
        let patched = request(
            "PATCH",
            &publisher.session.url,
            &[
                ("content-type", SDP_FRAG),
                ("etag", &etag),
                ("authorization", undefined),
                ("origin", ORIGIN),
            ],
            to_sdp(&body),
        )
        .await;
        assert_eq!(
            patched.status, 204,
            "{WHIP_CLIENT}: trickle PATCH of {candidate}: {}",
            patched.body
        );
    }

    publisher.start_media();
    assert_media_reaches_a_viewer(WHIP_CLIENT, &base, "cams", "phone", &publisher, None).await;

    // 4. DELETE without Authorization: the session URL is the capability.
    let deleted = request("DELETE", &publisher.session.url, &[("origin", ORIGIN)], "").await;
    assert_eq!(deleted.status, 200, "{WHIP_CLIENT}: DELETE");
    assert_session_gone(WHIP_CLIENT, &publisher.session.url).await;
    vigil.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webrtc_player_with_a_raw_authorization_key_plays() {
    let mut scene = Scene::new("cams").await;
    let _publisher = scene.publisher("phone").await;
    let key = scene.token("wall", subscribe_only()).await;

    // Video first, then audio (viewer_peer's order), with nack on Opus.
    let peer = viewer_peer().await;
    let whep = format!("{}/whep/cams/phone", scene.base);
    let (viewer, played) = Viewer::play(
        &scene.base,
        &whep,
        peer,
        &[("content-type", "application/sdp"), ("authorization", &key)],
        |offer| {
            let video_at = offer.find("m=video").expect("video section");
            let audio_at = offer.find("m=audio").expect("audio section");
            assert!(video_at < audio_at, "{PLAYER}: video comes first");
            let mut lines: Vec<String> = Vec::new();
            for line in sdp_lines(&offer) {
                lines.push(line.to_owned());
                if line.starts_with("a=rtpmap:111 opus/48000/2") {
                    lines.push("a=rtcp-fb:111 nack".to_owned());
                }
            }
            to_sdp(&lines)
        },
    )
    .await
    .unwrap_or_else(|r| {
        panic!(
            "{PLAYER}: a verbatim Authorization key was refused: {} {}",
            r.status, r.body
        )
    });
    assert_answer_is_crlf_sdp(PLAYER, &played.body);
    assert_viewer_plays(PLAYER, &viewer).await;

    let deleted = request(
        "DELETE",
        &viewer.session.url,
        &[("authorization", &key)],
        "",
    )
    .await;
    assert_eq!(deleted.status, 200, "{PLAYER}: DELETE");
    assert_session_gone(PLAYER, &viewer.session.url).await;
    scene.shutdown().await;
}
