//! OBS Studio 30+ WHIP output, replayed (OBS cannot run here): its exact
//! requests (libcurl headers, Bearer token, OBS's User-Agent), its offer
//! (libdatachannel: no candidates, no `rtcp-mux-only`, `a=group:LS`, a
//! session-level fingerprint, Opus stereo fmtp, one H264 codec at PT 96 with
//! `nack`/`nack pli`/`ccm fir`/`goog-remb`, no RTX), and what it needs back
//! (exactly 201, a Location it can rebuild, one ICE server per `Link`
//! header, a CRLF answer, 200 to DELETE). ICE completes by peer-reflexive
//! checks only, as OBS never trickles. See ../shared/reference/whip-whep.md
//! §2.1.

use rtc::peer_connection::configuration::media_engine::MIME_TYPE_H264;
use rtc::rtp_transceiver::rtp_sender::{RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters};
use vigil_tests::conformance::{assert_ice_server_links, two_ice_servers};
use vigil_tests::control::{Scene, publish_and_subscribe, subscribe_only};
use vigil_tests::http_client::request;
use vigil_tests::peers::{PublishRequest, Publisher, TestVideo};
use vigil_tests::replay::{
    assert_answer_is_crlf_sdp, assert_location_is_absolute_path, assert_media_reaches_a_viewer,
    assert_session_gone, sdp_lines, to_sdp, without_candidates,
};

const CLIENT: &str = "OBS 31 (replayed)";
const USER_AGENT: &str = "Mozilla/5.0 (OBS-Studio/31.0.2; Linux x86_64; en-US)";

/// OBS offers exactly one video codec, H264 at PT 96, always with this
/// fmtp, whatever profile its encoder produces.
fn obs_h264() -> RTCRtpCodecParameters {
    let feedback = |typ: &str, parameter: &str| RTCPFeedback {
        typ: typ.to_owned(),
        parameter: parameter.to_owned(),
    };
    RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec {
            mime_type: MIME_TYPE_H264.to_owned(),
            clock_rate: 90_000,
            channels: 0,
            sdp_fmtp_line: "profile-level-id=42e01f;packetization-mode=1;level-asymmetry-allowed=1"
                .to_owned(),
            rtcp_feedback: vec![
                feedback("nack", ""),
                feedback("nack", "pli"),
                feedback("ccm", "fir"),
                feedback("goog-remb", ""),
            ],
        },
        payload_type: 96,
    }
}

/// Rewrites a webrtc-rs offer into libdatachannel's shape as OBS sends it.
fn obs_offer(offer: String) -> String {
    let offer = without_candidates(&offer);
    let lines = sdp_lines(&offer);
    let fingerprint = lines
        .iter()
        .find(|l| l.starts_with("a=fingerprint:"))
        .expect("offer has a fingerprint")
        .to_string();
    let mut out: Vec<String> = Vec::new();
    let mut in_session = true;
    for line in lines {
        if line.starts_with("m=") && in_session {
            // libdatachannel writes the fingerprint once, at session level.
            out.push(fingerprint.clone());
            in_session = false;
        }
        match line {
            l if l.starts_with("a=group:BUNDLE") => {
                out.push(l.to_owned());
                out.push("a=group:LS 0 1".to_owned());
                out.push("a=msid-semantic:WMS *".to_owned());
                out.push("a=ice-options:trickle".to_owned());
            }
            // Only the mid and rid header extensions; no transport-cc.
            l if l.starts_with("a=extmap:") && !l.contains("sdes:mid") && !l.contains(":rtp-stream-id") => {}
            l if l.ends_with(" transport-cc") => {}
            l if l.starts_with("a=fingerprint:")
                || l.starts_with("a=msid-semantic")
                || l == "a=rtcp-mux-only" => {}
            l if l.starts_with("a=fmtp:111 ") => out.push(
                "a=fmtp:111 minptime=10;maxaveragebitrate=96000;stereo=1;sprop-stereo=1;useinbandfec=1"
                    .to_owned(),
            ),
            l => out.push(l.to_owned()),
        }
    }
    to_sdp(&out)
}

fn obs_request(token: &str) -> PublishRequest<'static> {
    PublishRequest {
        video: TestVideo::H264,
        video_codec: Some(obs_h264()),
        headers: vec![
            ("content-type", "application/sdp".to_owned()),
            ("authorization", format!("Bearer {token}")),
            ("user-agent", USER_AGENT.to_owned()),
            ("accept", "*/*".to_owned()),
        ],
        munge: Box::new(obs_offer),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn obs_publishes_with_a_bearer_token_and_a_viewer_plays_it() {
    let mut scene = Scene::with_room("site-1", Default::default(), |config| {
        config.ice_servers = two_ice_servers();
    })
    .await;
    let token = scene.token("cam-1", publish_and_subscribe()).await;
    let whip = format!("{}/whip/site-1/cam-1", scene.base);

    let (mut publisher, created) = Publisher::publish(&scene.base, &whip, obs_request(&token))
        .await
        .unwrap_or_else(|r| {
            panic!(
                "{CLIENT}: POST needs exactly 201, got {}: {}",
                r.status, r.body
            )
        });
    assert_location_is_absolute_path(CLIENT, &created);
    assert_answer_is_crlf_sdp(CLIENT, &created.body);
    // OBS's Link parser reads one server per header line, starting `<stun:`
    // or `<turn:`; a comma-joined header would lose all but the first.
    assert_ice_server_links(&created, CLIENT);
    for link in created.header_all("link") {
        assert!(
            link.starts_with("<stun:") || link.starts_with("<turn:"),
            "{CLIENT}: Link {link:?} is not one OBS recognises"
        );
    }

    publisher.start_media();
    let viewer_token = scene.token("wall", subscribe_only()).await;
    assert_media_reaches_a_viewer(
        CLIENT,
        &scene.base,
        "site-1",
        "cam-1",
        &publisher,
        Some(&viewer_token),
    )
    .await;

    // Stop: DELETE with the token and User-Agent; OBS expects 200.
    let auth = format!("Bearer {token}");
    let deleted = request(
        "DELETE",
        &publisher.session.url,
        &[("authorization", &auth), ("user-agent", USER_AGENT)],
        "",
    )
    .await;
    assert_eq!(deleted.status, 200, "{CLIENT}: DELETE");
    assert_session_gone(CLIENT, &publisher.session.url).await;
    scene.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn obs_with_a_wrong_token_gets_a_401_it_can_show() {
    let scene = Scene::new("site-1").await;
    let whip = format!("{}/whip/site-1/cam-1", scene.base);
    let refused = Publisher::publish(&scene.base, &whip, obs_request("not-a-token"))
        .await
        .map(|_| ())
        .expect_err("a wrong token must be refused");
    // OBS shows "HTTP endpoint returned response code 401".
    assert_eq!(refused.status, 401, "{CLIENT}: {}", refused.body);
    assert!(
        refused
            .header("www-authenticate")
            .is_some_and(|v| v.starts_with("Bearer")),
        "{CLIENT}: 401 without WWW-Authenticate: Bearer"
    );
    scene.shutdown().await;
}
