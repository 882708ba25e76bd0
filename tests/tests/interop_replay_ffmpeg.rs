//! FFmpeg 8's `whip` muxer, replayed (FFmpeg 8 is not in Debian 12): its
//! hand-written offer (`o=FFmpeg`, `a=setup:passive`, `rtcp-mux` only, H264
//! at PT 106 with the High profile its SPS declares, Opus at 111, no
//! rtcp-fb, no candidates), its request headers, and what its parser needs
//! from the answer (starts with `v=`, at most 8192 bytes, `a=setup:active`,
//! a `udp … typ host` candidate in the first m-section). FFmpeg's ICE agent
//! sends checks without PRIORITY or ICE-CONTROLLING; the second test sends
//! exactly such a check and wants a success response. See
//! ../shared/reference/whip-whep.md §2.3.

use std::net::SocketAddr;
use std::time::Duration;

use rtc::peer_connection::configuration::media_engine::MIME_TYPE_H264;
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodec, RTCRtpCodecParameters};
use rtc::stun::attributes::{ATTR_USE_CANDIDATE, ATTR_USERNAME};
use rtc::stun::fingerprint::FINGERPRINT;
use rtc::stun::integrity::MessageIntegrity;
use rtc::stun::message::{BINDING_REQUEST, BINDING_SUCCESS, Message, Setter, TransactionId};
use rtc::stun::textattrs::TextAttribute;
use rtc::stun::xoraddr::XorMappedAddress;
use tokio::net::UdpSocket;
use vigil_tests::conformance::hand_offer;
use vigil_tests::http_client::request;
use vigil_tests::peers::{PublishRequest, Publisher, TestVideo};
use vigil_tests::replay::{
    assert_answer_is_crlf_sdp, assert_media_reaches_a_viewer, assert_session_gone, attribute,
    candidate_lines, ssrc_of,
};
use vigil_tests::{base_url, start_server};

const CLIENT: &str = "FFmpeg 8 whip muxer (replayed)";
/// FFmpeg's `MAX_SDP_SIZE`: a longer answer is "Answer exceed max size".
const MAX_ANSWER: usize = 8192;

/// H264 as FFmpeg declares it: PT 106, profile-level-id from the SPS (High
/// here), no rtcp-fb at all.
fn ffmpeg_h264() -> RTCRtpCodecParameters {
    RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec {
            mime_type: MIME_TYPE_H264.to_owned(),
            clock_rate: 90_000,
            channels: 0,
            sdp_fmtp_line: "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=64001f"
                .to_owned(),
            rtcp_feedback: vec![],
        },
        payload_type: 106,
    }
}

/// FFmpeg's offer template (libavformat/whip.c), filled with the real
/// peer's ICE credentials, fingerprint and SSRCs so that peer can do the
/// ICE, DTLS and media behind it.
fn ffmpeg_offer(offer: String) -> String {
    let ufrag = attribute(&offer, "a=ice-ufrag:");
    let pwd = attribute(&offer, "a=ice-pwd:");
    let fingerprint = attribute(&offer, "a=fingerprint:");
    let (audio_ssrc, video_ssrc) = (ssrc_of(&offer, "audio"), ssrc_of(&offer, "video"));
    let section = |mid: u8, m_line: &str, kind: &str, ssrc: u32, codec: &str| {
        format!(
            "{m_line}\r\n\
             c=IN IP4 0.0.0.0\r\n\
             a=ice-ufrag:{ufrag}\r\n\
             a=ice-pwd:{pwd}\r\n\
             a=fingerprint:{fingerprint}\r\n\
             a=setup:passive\r\n\
             a=mid:{mid}\r\n\
             a=sendonly\r\n\
             a=msid:FFmpeg {kind}\r\n\
             a=rtcp-mux\r\n\
             {codec}\
             a=ssrc:{ssrc} cname:FFmpeg\r\n\
             a=ssrc:{ssrc} msid:FFmpeg {kind}\r\n"
        )
    };
    let audio = section(
        0,
        "m=audio 9 UDP/TLS/RTP/SAVPF 111",
        "audio",
        audio_ssrc,
        "a=rtpmap:111 opus/48000/2\r\n",
    );
    let video = section(
        1,
        "m=video 9 UDP/TLS/RTP/SAVPF 106",
        "video",
        video_ssrc,
        "a=rtpmap:106 H264/90000\r\n\
         a=fmtp:106 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=64001f\r\n",
    );
    format!(
        "v=0\r\n\
         o=FFmpeg 4489045141692799359 2 IN IP4 127.0.0.1\r\n\
         s=FFmpegPublishSession\r\n\
         t=0 0\r\n\
         a=group:BUNDLE 0 1\r\n\
         a=extmap-allow-mixed\r\n\
         a=msid-semantic: WMS\r\n\
         {audio}{video}"
    )
}

/// The first `udp … typ host` candidate of the answer's first m-section, as
/// FFmpeg's parser finds it (it ignores every other candidate).
fn ffmpeg_host_candidate(answer: &str) -> (String, u16) {
    let first_section = answer.split("\r\nm=").nth(1).unwrap_or_else(|| {
        panic!("{CLIENT}: answer has no m-section:\n{answer}");
    });
    candidate_lines(&format!("\r\nm={first_section}"))
        .iter()
        .find_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            // foundation comp udp prio ip port typ host
            (fields.len() >= 8
                && fields[2].eq_ignore_ascii_case("udp")
                && fields[6] == "typ"
                && fields[7] == "host")
                .then(|| (fields[4].to_owned(), fields[5].parse().expect("port")))
        })
        .unwrap_or_else(|| panic!("{CLIENT}: No ice candidate parsed:\n{answer}"))
}

fn ffmpeg_request() -> PublishRequest<'static> {
    PublishRequest {
        video: TestVideo::H264,
        video_codec: Some(ffmpeg_h264()),
        headers: vec![
            ("cache-control", "no-cache".to_owned()),
            ("content-type", "application/sdp".to_owned()),
        ],
        munge: Box::new(ffmpeg_offer),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ffmpeg_passive_offer_publishes_and_a_viewer_plays_it() {
    let vigil = start_server(|_| {}).await;
    let base = base_url(&vigil);
    let whip = format!("{base}/whip/live/ffmpeg");
    let (mut publisher, created) = Publisher::publish(&base, &whip, ffmpeg_request())
        .await
        .unwrap_or_else(|r| panic!("{CLIENT}: POST failed with {}: {}", r.status, r.body));
    let answer = &created.body;
    assert_answer_is_crlf_sdp(CLIENT, answer);
    assert!(
        answer.len() <= MAX_ANSWER,
        "{CLIENT}: Answer exceed max size ({} > {MAX_ANSWER} bytes)",
        answer.len()
    );
    assert!(
        answer.contains("a=setup:active\r\n"),
        "{CLIENT}: FFmpeg is the DTLS server; the answer must be active"
    );
    ffmpeg_host_candidate(answer);

    publisher.start_media();
    assert_media_reaches_a_viewer(CLIENT, &base, "live", "ffmpeg", &publisher, None).await;

    // deinit: DELETE with Cache-Control, body read to EOF; any 4xx/5xx is
    // an error to FFmpeg.
    let deleted = request(
        "DELETE",
        &publisher.session.url,
        &[("cache-control", "no-cache")],
        "",
    )
    .await;
    assert!(
        (200..300).contains(&deleted.status),
        "{CLIENT}: DELETE returned {}",
        deleted.status
    );
    assert_session_gone(CLIENT, &publisher.session.url).await;
    vigil.shutdown().await;
}

/// FFmpeg's connectivity check: USERNAME, USE-CANDIDATE, MESSAGE-INTEGRITY
/// and FINGERPRINT, but no PRIORITY and no ICE-CONTROLLING, retransmitted
/// until a success response arrives, while FFmpeg answers the server's own
/// checks. A server that insists on the missing attributes never answers.
///
/// webrtc-rs answers a USE-CANDIDATE check on a pair that has not yet
/// succeeded only with its own triggered check, not with a success response
/// (RFC 8445 §7.3.1.4 wants both); FFmpeg still gets through because it
/// answers that check and retransmits, as this test does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ffmpeg_style_stun_check_without_priority_is_answered() {
    let vigil = start_server(|_| {}).await;
    let base = base_url(&vigil);
    let (ffmpeg_ufrag, ffmpeg_pwd) = ("a1b2c3d4", "Zp3kWm9vQe2rTy6uIo1pAs4d");
    let offer = hand_offer(&[vigil_tests::conformance::H264_SENDONLY])
        .replace("a=setup:actpass", "a=setup:passive")
        .replace("a=ice-ufrag:Hx7q", &format!("a=ice-ufrag:{ffmpeg_ufrag}"));
    assert!(offer.contains(&format!("a=ice-pwd:{ffmpeg_pwd}")));
    let created = request(
        "POST",
        &format!("{base}/whip/live/ffmpeg"),
        &[("content-type", "application/sdp")],
        offer,
    )
    .await;
    assert_eq!(created.status, 201, "{CLIENT}: POST: {}", created.body);
    let server_ufrag = attribute(&created.body, "a=ice-ufrag:");
    let server_pwd = attribute(&created.body, "a=ice-pwd:");
    let (ip, port) = ffmpeg_host_candidate(&created.body);
    let server: SocketAddr = format!("{ip}:{port}").parse().expect("candidate address");

    let provider = rtc::crypto::default_provider().expect("crypto provider");
    let crypto = provider.crypto();
    let mut check = Message::new();
    let setters: Vec<Box<dyn Setter + '_>> = vec![
        Box::new(BINDING_REQUEST),
        Box::new(TransactionId::new()),
        Box::new(TextAttribute::new(
            ATTR_USERNAME,
            format!("{server_ufrag}:{ffmpeg_ufrag}"),
        )),
        Box::new(UseCandidate),
        Box::new(MessageIntegrity::new_short_term_integrity_with_provider(
            server_pwd.to_owned(),
            crypto,
        )),
        Box::new(FINGERPRINT),
    ];
    check.build(&setters).expect("build STUN check");

    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let answered = tokio::time::timeout(Duration::from_secs(5), async {
        let mut retransmit = tokio::time::interval(Duration::from_millis(100));
        let mut buf = vec![0u8; 1500];
        loop {
            tokio::select! {
                _ = retransmit.tick() => {
                    socket.send_to(&check.raw, server).await.expect("send check");
                }
                received = socket.recv_from(&mut buf) => {
                    let (n, from) = received.expect("recv");
                    let mut message = Message::new();
                    message.raw = buf[..n].to_vec();
                    if message.decode().is_err() {
                        continue;
                    }
                    if message.typ == BINDING_REQUEST {
                        // The server's check: answer it, as FFmpeg does.
                        let mut success = Message::new();
                        let setters: Vec<Box<dyn Setter + '_>> = vec![
                            Box::new(BINDING_SUCCESS),
                            Box::new(TransactionId(message.transaction_id.0)),
                            Box::new(XorMappedAddress { ip: from.ip(), port: from.port() }),
                            Box::new(MessageIntegrity::new_short_term_integrity_with_provider(
                                ffmpeg_pwd.to_owned(),
                                crypto,
                            )),
                            Box::new(FINGERPRINT),
                        ];
                        success.build(&setters).expect("build success");
                        socket.send_to(&success.raw, from).await.expect("send success");
                    } else if message.transaction_id == check.transaction_id {
                        return message;
                    }
                }
            }
        }
    })
    .await;
    let reply = answered.unwrap_or_else(|_| {
        panic!("{CLIENT}: the server never answered a check without PRIORITY/ICE-CONTROLLING")
    });
    assert_eq!(
        reply.typ, BINDING_SUCCESS,
        "{CLIENT}: the check was refused: {reply}"
    );
    vigil.shutdown().await;
}

/// USE-CANDIDATE: an attribute with no value.
struct UseCandidate;

impl Setter for UseCandidate {
    fn add_to(&self, m: &mut Message) -> rtc::shared::error::Result<()> {
        m.add(ATTR_USE_CANDIDATE, &[]);
        Ok(())
    }
}
