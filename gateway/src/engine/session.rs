//! A server-side connection for the engine, answered from a client's offer.
//!
//! Every engine connection is ICE-lite (a server with a public address has
//! nothing to discover: it answers checks and never sends them), carries
//! ICE credentials the engine chose (their ufrag is how the shard's
//! demultiplexer finds it), has the shard's address as its only host
//! candidate, and runs the slim interceptor chain: the engine's feedback
//! tap (viewers' PLI/FIR, NACK and reports to the engine), and on a
//! publisher's connection receiver reports, NACKs for its lost packets and
//! TWCC feedback (a viewer's sender reports come from the shard,
//! `super::fast`). No NACK responder (the shard answers NACKs from one
//! history per stream) and no TWCC on viewers' connections (performance.md,
//! "The rtc write path").
//!
//! All engine connections share one DTLS certificate, made once per
//! process: a key pair and certificate per connection cost a keygen on
//! every POST and tens of kilobytes each, and a server's fingerprint
//! identifies the server, not a session (mediasoup shares one per worker).

use std::net::{IpAddr, SocketAddr};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use rtc::crypto::SignatureScheme;
use rtc::interceptor::{NackGeneratorBuilder, ReceiverReportBuilder, Registry, Slot};
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::certificate::{CertificateParams, RTCCertificate};
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::configuration::interceptor_registry::{
    configure_simulcast_extension_headers, configure_twcc_receiver_only,
};
use rtc::peer_connection::configuration::media_engine::MIME_TYPE_RTX;
use rtc::peer_connection::configuration::media_engine::MediaEngine;
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtp_transceiver::RTCRtpSenderId;
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpHeaderExtensionCapability,
    RtpCodecKind, TYPE_RTCP_FB_NACK,
};
use rtc::shared::error::Error;

use super::{FEEDBACK_SLOT, add_host_candidate, add_tcp_candidate, feedback_tap};

/// A connection ready for [`super::shard::Shard::add_connection`].
pub struct Answered {
    /// The connection, its answer set as local description.
    pub pc: RTCPeerConnection,
    /// The ICE ufrag it answers checks for.
    pub ufrag: String,
    /// The answer, to send back (`201` body).
    pub answer: String,
    /// The senders of `tracks`, in their order.
    pub senders: Vec<RTCRtpSenderId>,
}

/// How a connection is set up beyond its offer and tracks.
#[derive(Debug, Clone, Default)]
pub struct SessionOptions {
    /// The IPs the answer's candidate carries instead of the shard's
    /// (a 1:1 NAT, or a shard bound to the unspecified address): one
    /// candidate per IP, all with the shard's port.
    pub advertise: Vec<IpAddr>,
    /// A publisher's codecs, as chosen from its offer (`sfu::codecs`):
    /// the only ones its connection accepts. Empty: every codec rtc knows.
    pub receive: Vec<(RTCRtpCodecParameters, RtpCodecKind)>,
    /// ICE's disconnected and failed timeouts; `None`: rtc's defaults.
    pub ice_timeouts: Option<(Duration, Duration)>,
    /// Whether the answer offers a passive ICE-TCP candidate at the
    /// shard's address too (the shard listens for TCP there).
    pub ice_tcp: bool,
}

/// Answers `offer` with a new engine connection reached at `local` (the
/// shard's address) that sends `tracks` (none for a publisher).
pub fn answer(
    offer: &str,
    local: SocketAddr,
    tracks: Vec<MediaStreamTrack>,
    options: &SessionOptions,
    now: Instant,
) -> Result<Answered, Error> {
    let ufrag = random_token(16);
    let mut setting_engine = SettingEngineBuilder::new()
        .with_lite(true)
        // The ICE agent's tick while connecting: 50 ms (RFC 8445's Ta)
        // rather than rtc's 200 ms, since a lite connection turns
        // connected, and starts DTLS, only on that tick after the client's
        // nomination. Same 1.4 s of attempts as rtc's default.
        .with_ice_connection_attempts(Some(Duration::from_millis(50)), Some(28))
        .with_ice_credentials(ufrag.clone(), random_token(32));
    if let Some((disconnected, failed)) = options.ice_timeouts {
        setting_engine = setting_engine.with_ice_timeouts(Some(disconnected), Some(failed), None);
    }
    let setting_engine = setting_engine.build();
    // A publisher may send any codec rtc knows; a viewer's connection
    // needs only its tracks' codecs (the answer takes the offer's payload
    // types for them). Every codec registered is per-connection state:
    // 233 -> 205 KB per viewer in the vigil-bench sweep.
    let mut media_engine = MediaEngine::default();
    if tracks.is_empty() {
        if options.receive.is_empty() {
            media_engine.register_default_codecs()?;
        }
        for (codec, kind) in &options.receive {
            media_engine.register_codec(codec.clone(), *kind)?;
        }
        publisher_extensions(&mut media_engine)?;
    } else {
        for (i, track) in tracks.iter().enumerate() {
            for coding in track.codings() {
                let payload_type = 96 + 2 * i as u8;
                media_engine.register_codec(
                    RTCRtpCodecParameters {
                        rtp_codec: coding.codec.clone(),
                        payload_type,
                    },
                    track.kind(),
                )?;
                // RTX (RFC 4588) for a track with an RTX SSRC: the shard
                // sends its repairs there (offered by browsers; a repair
                // on the media SSRC is a replay to an SRTP receiver that
                // saw the first copy and dropped it above SRTP).
                if coding.rtp_coding_parameters.rtx.is_some() {
                    media_engine.register_codec(
                        RTCRtpCodecParameters {
                            rtp_codec: RTCRtpCodec {
                                mime_type: MIME_TYPE_RTX.to_owned(),
                                clock_rate: coding.codec.clock_rate,
                                channels: 0,
                                sdp_fmtp_line: format!("apt={payload_type}"),
                                rtcp_feedback: Vec::new(),
                            },
                            payload_type: payload_type + 1,
                        },
                        track.kind(),
                    )?;
                }
            }
        }
        // Viewers repair loss with NACK and ask for keyframes with PLI
        // (a client sends neither unless the answer says so).
        register_video_feedback(&mut media_engine);
    }
    // A viewer connection carries only the fast path's media, whose sender
    // reports the shard writes itself: rtc's reporters would only tick. A
    // publisher's connection sends receiver reports for what it gets.
    let registry = Registry::new().with(Slot::from(FEEDBACK_SLOT), feedback_tap());
    let registry = if tracks.is_empty() {
        let registry = registry
            .with(Slot::ReceiverReport, ReceiverReportBuilder::new().build())
            .with(Slot::NackGenerator, NackGeneratorBuilder::new().build());
        configure_twcc_receiver_only(registry, &mut media_engine)?
    } else {
        registry
    };
    let mut pc = RTCPeerConnectionBuilder::new()
        .with_configuration(
            RTCConfigurationBuilder::new()
                .with_certificates(vec![certificate()?])
                .build(),
        )
        .with_setting_engine(setting_engine)
        .with_media_engine(media_engine)
        .with_interceptor_registry(registry)
        .build(now)?;
    add_host_candidate(&mut pc, local)?;
    if options.ice_tcp {
        add_tcp_candidate(&mut pc, local)?;
    }
    let mut senders = Vec::with_capacity(tracks.len());
    for track in tracks {
        senders.push(pc.add_track(track)?);
    }
    let offer = with_explicit_directions(offer);
    pc.set_remote_description(now, RTCSessionDescription::offer(offer)?)?;
    let answer = pc.create_answer(None)?;
    // The text only: cloning the description deep-copies its parsed SDP.
    let sdp = advertised(&answer.sdp, &options.advertise);
    pc.set_local_description(now, answer)?;
    Ok(Answered {
        pc,
        ufrag,
        answer: sdp,
        senders,
    })
}

/// What a publisher's connection negotiates beyond codecs: the MID and rid
/// header extensions (a simulcast offer names its layers by rid and may
/// signal no SSRC; audio needs MID for the same reason), and NACK for
/// video, which the connection's NACK generator sends for lost packets.
/// Its TWCC feedback (configured with the chain) is what lets a browser's
/// congestion control raise the bitrate, and with it its simulcast layers.
fn publisher_extensions(media_engine: &mut MediaEngine) -> Result<(), Error> {
    configure_simulcast_extension_headers(media_engine)?;
    media_engine.register_header_extension(
        RTCRtpHeaderExtensionCapability {
            uri: rtc::sdp::extmap::SDES_MID_URI.to_owned(),
        },
        RtpCodecKind::Audio,
        None,
    )?;
    register_video_feedback(media_engine);
    Ok(())
}

/// NACK and PLI (`nack`, `nack pli`) on every video codec registered so
/// far.
fn register_video_feedback(media_engine: &mut MediaEngine) {
    for parameter in ["", "pli"] {
        media_engine.register_feedback(
            RTCPFeedback {
                typ: TYPE_RTCP_FB_NACK.to_owned(),
                parameter: parameter.to_owned(),
            },
            RtpCodecKind::Video,
        );
    }
}

/// The direction attributes SDP has (RFC 8866 §6.7).
const DIRECTIONS: [&str; 4] = ["sendrecv", "sendonly", "recvonly", "inactive"];

/// `offer` with a direction attribute in every audio and video section:
/// the session-level one where the section has none, else `sendrecv`
/// (RFC 3264 §5.1, RFC 8866 §6.7). rtc 0.21 reads directions from media
/// sections only and skips a section without one, answering no media at
/// all; some hand-written and older clients leave `sendrecv` out.
fn with_explicit_directions(offer: &str) -> String {
    fn direction_of(line: &str) -> Option<&str> {
        let attribute = line.trim_end().strip_prefix("a=")?;
        DIRECTIONS.iter().copied().find(|d| *d == attribute)
    }
    let lines: Vec<&str> = offer.split_inclusive('\n').collect();
    let first_media = lines
        .iter()
        .position(|l| l.starts_with("m="))
        .unwrap_or(lines.len());
    let session_direction = lines[..first_media]
        .iter()
        .find_map(|l| direction_of(l))
        .unwrap_or("sendrecv");
    let mut out = String::with_capacity(offer.len() + 32);
    let mut section_start = 0;
    for (i, line) in lines.iter().enumerate() {
        out.push_str(line);
        let section_ends = lines.get(i + 1).is_none_or(|next| next.starts_with("m="));
        if i >= first_media && section_ends {
            let section = &lines[section_start.max(first_media)..=i];
            let is_rtp = section[0].starts_with("m=audio") || section[0].starts_with("m=video");
            if is_rtp && !section.iter().any(|l| direction_of(l).is_some()) {
                if !out.ends_with('\n') {
                    out.push_str("\r\n");
                }
                out.push_str("a=");
                out.push_str(session_direction);
                out.push_str("\r\n");
            }
            section_start = i + 1;
        }
    }
    out
}

/// `sdp` with each candidate line repeated once per IP of `ips`, carrying
/// that IP instead of its own; `sdp` itself when `ips` is empty.
pub(crate) fn advertised(sdp: &str, ips: &[IpAddr]) -> String {
    if ips.is_empty() {
        return sdp.to_owned();
    }
    let mut out = String::with_capacity(sdp.len() + 64 * ips.len());
    for line in sdp.split_inclusive("\r\n") {
        if !line.starts_with("a=candidate:") {
            out.push_str(line);
            continue;
        }
        for ip in ips {
            let mut fields: Vec<&str> = line.trim_end().split(' ').collect();
            let ip = ip.to_string();
            if let Some(address) = fields.get_mut(4) {
                *address = &ip;
            }
            out.push_str(&fields.join(" "));
            out.push_str("\r\n");
        }
    }
    out
}

/// The engine's DTLS certificate, made at first use.
fn certificate() -> Result<RTCCertificate, Error> {
    static CERTIFICATE: OnceLock<RTCCertificate> = OnceLock::new();
    if let Some(certificate) = CERTIFICATE.get() {
        return Ok(certificate.clone());
    }
    let provider = rtc::crypto::default_provider()
        .map_err(|e| Error::Other(format!("crypto provider: {e:?}")))?;
    let made = RTCCertificate::generate(
        provider.crypto(),
        SignatureScheme::EcdsaP256Sha256,
        CertificateParams::new(vec!["vigil".to_owned()])
            .map_err(|e| Error::Other(format!("certificate parameters: {e}")))?,
    )?;
    // Two first sessions at once may both make one; the first kept wins.
    Ok(CERTIFICATE.get_or_init(|| made).clone())
}

/// ICE ufrag and password characters (RFC 8839 `ice-char`, without `+/`).
fn random_token(len: usize) -> String {
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    // A u32 modulo 62: a bias of under 2e-8, irrelevant for a nonce.
    (0..len)
        .map(|_| char::from(CHARS[rand::random::<u32>() as usize % CHARS.len()]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_without_a_direction_get_the_session_one_or_sendrecv() {
        let offer = "v=0\r\ns=-\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n\
                     m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\na=recvonly\r\n\
                     m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:2\r\n";
        assert_eq!(
            with_explicit_directions(offer),
            "v=0\r\ns=-\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=sendrecv\r\n\
             m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\na=recvonly\r\n\
             m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:2\r\n"
        );
        let session_level = "v=0\r\na=sendonly\r\nm=video 9 RTP/SAVPF 96\na=mid:0";
        assert_eq!(
            with_explicit_directions(session_level),
            "v=0\r\na=sendonly\r\nm=video 9 RTP/SAVPF 96\na=mid:0\r\na=sendonly\r\n"
        );
        let complete = "v=0\r\nm=video 9 RTP/SAVPF 96\r\na=sendonly\r\n";
        assert_eq!(with_explicit_directions(complete), complete);
    }

    #[test]
    fn advertised_ips_replace_the_candidate_address() {
        let sdp = "v=0\r\na=candidate:1 1 udp 2130706431 0.0.0.0 8189 typ host\r\na=end-of-candidates\r\n";
        assert_eq!(advertised(sdp, &[]), sdp);
        let ips = [
            "203.0.113.7".parse().expect("ip"),
            "2001:db8::7".parse().expect("ip"),
        ];
        assert_eq!(
            advertised(sdp, &ips),
            "v=0\r\n\
             a=candidate:1 1 udp 2130706431 203.0.113.7 8189 typ host\r\n\
             a=candidate:1 1 udp 2130706431 2001:db8::7 8189 typ host\r\n\
             a=end-of-candidates\r\n"
        );
    }
}

#[cfg(test)]
mod direction_tests {
    use super::*;
    use crate::engine::{h264_baseline, send_track};
    use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
    use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};

    const LOCAL: SocketAddr = SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8189);

    /// A browser-shaped offer of one video section, a viewer's (recvonly)
    /// or a publisher's (a track), with the section's direction attribute
    /// removed (RFC 3264 §5.1: then it is sendrecv) when `strip` is set;
    /// optionally given as a session-level attribute instead (RFC 8866
    /// §6.7).
    fn offer(publisher: bool, strip: bool, session_level: bool) -> String {
        let now = Instant::now();
        let mut media_engine = MediaEngine::default();
        media_engine.register_default_codecs().expect("codecs");
        let mut client = RTCPeerConnectionBuilder::new()
            .with_setting_engine(SettingEngineBuilder::new().build())
            .with_media_engine(media_engine)
            .build(now)
            .expect("client");
        if publisher {
            client
                .add_track(send_track(
                    "camera",
                    RtpCodecKind::Video,
                    0xca,
                    h264_baseline(),
                ))
                .expect("track");
        } else {
            client
                .add_transceiver_from_kind(
                    RtpCodecKind::Video,
                    Some(RTCRtpTransceiverInit {
                        direction: RTCRtpTransceiverDirection::Recvonly,
                        ..Default::default()
                    }),
                )
                .expect("transceiver");
        }
        let sdp = client.create_offer(None).expect("offer").sdp;
        let attribute = DIRECTIONS
            .iter()
            .map(|d| format!("a={d}\r\n"))
            .find(|a| sdp.contains(a.as_str()))
            .expect("a direction");
        if !strip {
            return sdp;
        }
        let sdp = sdp.replace(&attribute, "");
        if session_level {
            // Session attributes come before the first m= line.
            sdp.replacen("m=", &format!("{attribute}m="), 1)
        } else {
            sdp
        }
    }

    fn answered(offer: &str, tracks: Vec<MediaStreamTrack>) -> String {
        answer(
            offer,
            LOCAL,
            tracks,
            &SessionOptions::default(),
            Instant::now(),
        )
        .expect("answered")
        .answer
    }

    #[test]
    fn a_viewer_offer_without_direction_is_sent_to() {
        for (strip, session_level) in [(false, false), (true, false), (true, true)] {
            let sdp = offer(false, strip, session_level);
            let track = send_track("video", RtpCodecKind::Video, 0x5eed, h264_baseline());
            let answer = answered(&sdp, vec![track]);
            assert!(
                answer.contains("a=sendonly") || answer.contains("a=sendrecv"),
                "strip {strip}, session level {session_level}: {answer}"
            );
            assert!(
                answer.contains("a=ssrc:24301"),
                "the track's SSRC: {answer}"
            );
        }
    }

    #[test]
    fn a_publisher_offer_without_direction_is_received() {
        for (strip, session_level) in [(false, false), (true, false), (true, true)] {
            let sdp = offer(true, strip, session_level);
            let answer = answered(&sdp, Vec::new());
            assert!(
                answer.contains("a=recvonly") || answer.contains("a=sendrecv"),
                "strip {strip}, session level {session_level}: {answer}"
            );
        }
    }
}
