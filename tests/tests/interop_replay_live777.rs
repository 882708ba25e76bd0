//! live777's `whipinto` and `whepfrom` (v0.9, libwish on webrtc-rs),
//! replayed: non-trickle offers that carry the candidates gathered so far
//! and never a PATCH, a Bearer token, exactly 201 with a Location it applies
//! with `Url::set_path`, every `Link` header parsed on its own, and
//! whepfrom's extra `control` data channel (an `m=application` section in a
//! WHEP offer). See ../shared/reference/whip-whep.md §2.5.
//!
//! live777 expects 204 to DELETE; Vigil answers 200 as RFC 9725 and OBS
//! want, so whipinto logs an error on exit although the session is gone.

use vigil_tests::conformance::two_ice_servers;
use vigil_tests::control::{Scene, publish_and_subscribe, subscribe_only};
use vigil_tests::http_client::request;
use vigil_tests::peers::{PublishRequest, Publisher, TestVideo, Viewer, viewer_peer};
use vigil_tests::replay::{
    assert_answer_is_crlf_sdp, assert_location_is_absolute_path, assert_session_gone,
    assert_viewer_plays,
};

const WHIPINTO: &str = "live777 whipinto (replayed)";
const WHEPFROM: &str = "live777 whepfrom (replayed)";

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// Each `Link` header on its own must hold exactly one ICE server, which is
/// how libwish reads them.
fn assert_one_server_per_link(client: &str, links: &[String]) {
    assert!(!links.is_empty(), "{client}: no Link headers");
    for link in links {
        assert_eq!(
            link.matches('<').count(),
            1,
            "{client}: Link {link:?} holds more than one server"
        );
        assert!(
            link.contains("rel=\"ice-server\""),
            "{client}: Link {link:?} is not an ICE server"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whipinto_publishes_and_whepfrom_with_its_data_channel_plays() {
    let mut scene = Scene::with_room("relay", Default::default(), |config| {
        config.ice_servers = two_ice_servers();
    })
    .await;
    let token = scene.token("cam", publish_and_subscribe()).await;
    let whip = format!("{}/whip/relay/cam", scene.base);

    // whipinto: the offer as webrtc-rs makes it, with candidates, and no
    // PATCH afterwards.
    let (mut publisher, created) = Publisher::publish(
        &scene.base,
        &whip,
        PublishRequest {
            video: TestVideo::H264,
            video_codec: None,
            headers: vec![
                ("content-type", "application/sdp".to_owned()),
                ("authorization", bearer(&token)),
            ],
            munge: Box::new(|offer| offer),
        },
    )
    .await
    .unwrap_or_else(|r| {
        panic!(
            "{WHIPINTO}: POST needs exactly 201, got {}: {}",
            r.status, r.body
        )
    });
    assert_location_is_absolute_path(WHIPINTO, &created);
    assert_answer_is_crlf_sdp(WHIPINTO, &created.body);
    assert_one_server_per_link(WHIPINTO, &created.header_all("link"));
    publisher.start_media();

    // whepfrom: recvonly audio and video plus the `control` data channel.
    let viewer_token = scene.token("player", subscribe_only()).await;
    let peer = viewer_peer().await;
    peer.pc
        .create_data_channel("control", None)
        .await
        .expect("control data channel");
    let whep = format!("{}/whep/relay/cam", scene.base);
    let auth = bearer(&viewer_token);
    let (viewer, played) = Viewer::play(
        &scene.base,
        &whep,
        peer,
        &[
            ("content-type", "application/sdp"),
            ("authorization", &auth),
        ],
        |offer| {
            assert!(
                offer.contains("m=application"),
                "{WHEPFROM}: the offer should carry the data channel"
            );
            offer
        },
    )
    .await
    .unwrap_or_else(|r| {
        panic!(
            "{WHEPFROM}: an offer with a data channel section was refused: {} {}",
            r.status, r.body
        )
    });
    assert_location_is_absolute_path(WHEPFROM, &played);
    assert_answer_is_crlf_sdp(WHEPFROM, &played.body);
    assert!(
        played.body.contains("m=application"),
        "{WHEPFROM}: the answer must answer every offered m-section (RFC 3264)"
    );
    assert_viewer_plays(WHEPFROM, &viewer).await;
    let sent = publisher.sent.lock().expect("sent").video.clone();
    vigil_tests::peers::assert_continuous_from_keyframe(&viewer.video(), &sent);

    // Both stop with a DELETE carrying the token.
    for (client, url, auth) in [
        (WHEPFROM, &viewer.session.url, &auth),
        (WHIPINTO, &publisher.session.url, &bearer(&token)),
    ] {
        let deleted = request("DELETE", url, &[("authorization", auth)], "").await;
        assert_eq!(deleted.status, 200, "{client}: DELETE");
        assert_session_gone(client, url).await;
    }
    scene.shutdown().await;
}
