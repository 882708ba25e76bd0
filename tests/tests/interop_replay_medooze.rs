//! medooze whip-whep-js 1.2.0 (also `@binbat/whip-whep`, live777's web UI),
//! replayed: see ../shared/reference/whip-whep.md §2.4. A cross-origin page
//! POSTs an offer made before gathering (no candidates), needs `Location`,
//! `ETag` and `Link` exposed by CORS, reads `Link` through `fetch`'s joined
//! header (split on `/,\s+(?=<)/`), trickles each tick's candidates in one
//! PATCH with If-Match and ends with a PATCH holding only
//! `a=end-of-candidates`, restarts ICE with `If-Match: *` and regex-parses
//! the CRLF answer, and its `mute()` POSTs JSON to the session URL, which
//! must be refused without harming the session.

use vigil_tests::conformance::{lists, two_ice_servers};
use vigil_tests::control::{Scene, publish_and_subscribe, subscribe_only};
use vigil_tests::http_client::{HttpResponse, request};
use vigil_tests::peers::{ClientPeer, PublishRequest, Publisher, TestVideo, Viewer, viewer_peer};
use vigil_tests::replay::{
    SDP_FRAG, assert_answer_is_crlf_sdp, assert_session_gone, assert_viewer_plays, attribute,
    candidate_lines, ice_restart, sdpfrag, video_grows, without_candidates,
};

const WHIP_JS: &str = "medooze whip.js 1.2.0 (replayed)";
const WHEP_JS: &str = "medooze whep.js 1.2.0 (replayed)";
const ORIGIN: &str = "https://console.example";

/// Checks the CORS and Link handling of a 201 as the library reads it.
fn assert_readable_cross_origin(client: &str, created: &HttpResponse) {
    assert!(
        created.header("access-control-allow-origin").is_some(),
        "{client}: no Access-Control-Allow-Origin"
    );
    for exposed in ["Location", "ETag", "Link"] {
        assert!(
            lists(created.header("access-control-expose-headers"), exposed),
            "{client}: {exposed} is not exposed: the library fails with \
             'Response missing location header'"
        );
    }
    // fetch's Headers joins repeated headers with ", "; the library splits
    // the result on /,\s+(?=<)/.
    let joined = created.header_all("link").join(", ");
    let servers: Vec<&str> = joined.split(", <").collect();
    assert_eq!(
        servers.len(),
        2,
        "{client}: {joined:?} does not split back into the two ICE servers"
    );
    assert!(servers[1].starts_with("turn:"), "{client}: {servers:?}");
}

/// The library's trickle: every candidate of one tick in one PATCH, then a
/// PATCH with only `a=end-of-candidates`.
async fn trickle_like_medooze(client: &str, peer: &ClientPeer, session_url: &str, etag: &str) {
    let local = peer.pc.local_description().await.expect("local").sdp;
    let mid = attribute(&local, "a=mid:");
    let candidates = candidate_lines(&local);
    assert!(!candidates.is_empty(), "the peer gathered candidates");
    for (step, body) in [
        (
            "candidates",
            sdpfrag(&local, "audio", mid, &candidates, &[]),
        ),
        (
            "end-of-candidates",
            sdpfrag(&local, "audio", mid, &[], &["a=end-of-candidates"]),
        ),
    ] {
        let patched = request(
            "PATCH",
            session_url,
            &[
                ("content-type", SDP_FRAG),
                ("if-match", etag),
                ("origin", ORIGIN),
            ],
            body,
        )
        .await;
        assert_eq!(
            patched.status, 204,
            "{client}: trickle PATCH ({step}): {}",
            patched.body
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whip_js_publishes_cross_origin_trickles_and_survives_mute() {
    let mut scene = Scene::with_room("ops", Default::default(), |config| {
        config.ice_servers = two_ice_servers();
    })
    .await;
    let token = scene.token("unit-7", publish_and_subscribe()).await;
    let auth = format!("Bearer {token}");
    let whip = format!("{}/whip/ops/unit-7", scene.base);

    let (mut publisher, created) = Publisher::publish(
        &scene.base,
        &whip,
        PublishRequest {
            video: TestVideo::Vp8,
            video_codec: None,
            headers: vec![
                ("content-type", "application/sdp".to_owned()),
                ("authorization", auth.clone()),
                ("origin", ORIGIN.to_owned()),
            ],
            munge: Box::new(|offer| without_candidates(&offer)),
        },
    )
    .await
    .unwrap_or_else(|r| panic!("{WHIP_JS}: POST: {} {}", r.status, r.body));
    assert_answer_is_crlf_sdp(WHIP_JS, &created.body);
    assert_readable_cross_origin(WHIP_JS, &created);
    let etag = created.header("etag").expect("ETag").to_owned();
    trickle_like_medooze(WHIP_JS, &publisher.peer, &publisher.session.url, &etag).await;

    publisher.start_media();
    let viewer = scene.viewer("unit-7", "wall").await;
    video_grows(&viewer, 30, "video before mute()").await;

    // mute(): a JSON POST to the session URL, which WHIP does not define.
    let muted = request(
        "POST",
        &publisher.session.url,
        &[
            ("content-type", "application/json"),
            ("authorization", &auth),
            ("origin", ORIGIN),
        ],
        r#"{"kind":"video","muted":true}"#,
    )
    .await;
    assert_eq!(
        muted.status, 405,
        "{WHIP_JS}: mute() POST should be refused as a method the session lacks"
    );
    video_grows(&viewer, 30, "video after the refused mute()").await;

    let deleted = request(
        "DELETE",
        &publisher.session.url,
        &[("authorization", &auth), ("origin", ORIGIN)],
        "",
    )
    .await;
    assert_eq!(deleted.status, 200, "{WHIP_JS}: DELETE");
    assert_session_gone(WHIP_JS, &publisher.session.url).await;
    scene.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whep_js_plays_trickles_and_restarts_ice() {
    let mut scene = Scene::with_room("ops", Default::default(), |config| {
        config.ice_servers = two_ice_servers();
    })
    .await;
    let _publisher = scene.publisher("unit-7").await;
    let token = scene.token("wall", subscribe_only()).await;
    let auth = format!("Bearer {token}");
    let whep = format!("{}/whep/ops/unit-7", scene.base);

    let (viewer, played) = Viewer::play(
        &scene.base,
        &whep,
        viewer_peer().await,
        &[
            ("content-type", "application/sdp"),
            ("authorization", &auth),
            ("origin", ORIGIN),
        ],
        |offer| without_candidates(&offer),
    )
    .await
    .unwrap_or_else(|r| panic!("{WHEP_JS}: POST: {} {}", r.status, r.body));
    assert_answer_is_crlf_sdp(WHEP_JS, &played.body);
    assert_readable_cross_origin(WHEP_JS, &played);
    let etag = played.header("etag").expect("ETag").to_owned();
    trickle_like_medooze(WHEP_JS, &viewer.peer, &viewer.session.url, &etag).await;
    assert_viewer_plays(WHEP_JS, &viewer).await;

    // restart(): If-Match "*", 200, CRLF fragment read by regex, new ETag.
    let restarted = ice_restart(WHEP_JS, &viewer.peer, &viewer.session.url).await;
    for key in ["a=ice-ufrag:", "a=ice-pwd:"] {
        let line = restarted.body.split(key).nth(1).unwrap_or_default();
        assert!(
            line.contains("\r\n"),
            "{WHEP_JS}: /{key}(.*)\\r\\n/ does not match the restart answer"
        );
    }
    let new_etag = restarted.header("etag").expect("new ETag");
    assert_ne!(new_etag, etag, "{WHEP_JS}: a restart makes a new ETag");
    video_grows(&viewer, 60, "video after the ICE restart").await;

    let deleted = request(
        "DELETE",
        &viewer.session.url,
        &[("authorization", &auth), ("origin", ORIGIN)],
        "",
    )
    .await;
    assert_eq!(deleted.status, 200, "{WHEP_JS}: DELETE");
    assert_session_gone(WHEP_JS, &viewer.session.url).await;
    scene.shutdown().await;
}
