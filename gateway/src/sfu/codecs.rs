//! Reading WHIP/WHEP offers: which m-sections they carry and which codec
//! each one will use.
//!
//! The answer is built by webrtc-rs from a per-session `MediaEngine` that
//! holds exactly the codecs chosen here, with the offerer's own payload
//! types. That is how Vigil takes "H264, any profile": the profile the
//! client offers is the profile registered, so an OBS offer that says
//! `42e01f` while the encoder sends High still negotiates (RFC 9725 leaves
//! the mismatch to the decoder, which copes).

use std::io::Cursor;

use rtc::peer_connection::configuration::media_engine::{
    MIME_TYPE_AV1, MIME_TYPE_H264, MIME_TYPE_OPUS, MIME_TYPE_PCMA, MIME_TYPE_PCMU, MIME_TYPE_VP8,
    MIME_TYPE_VP9,
};
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RtpCodecKind,
};
use rtc::sdp::SessionDescription;

use crate::error::{Error, Result};

/// Media direction of an offered m-section, from the offerer's side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// `a=sendrecv` (or no direction attribute).
    SendRecv,
    /// `a=sendonly`.
    SendOnly,
    /// `a=recvonly`.
    RecvOnly,
    /// `a=inactive`.
    Inactive,
}

/// One m-section of an offer.
#[derive(Debug, Clone)]
pub struct OfferedSection {
    /// `audio`, `video` or `application` (others are kept for error messages).
    pub media: String,
    /// The offerer's direction.
    pub direction: Direction,
    /// Codecs in the offerer's order of preference.
    pub codecs: Vec<RTCRtpCodecParameters>,
    /// Whether the section names its RTP streams (`a=ssrc` or `a=rid`).
    pub declares_streams: bool,
}

impl OfferedSection {
    fn kind(&self) -> Option<RtpCodecKind> {
        match self.media.as_str() {
            "audio" => Some(RtpCodecKind::Audio),
            "video" => Some(RtpCodecKind::Video),
            _ => None,
        }
    }
}

/// The codec one track of a session will use, with the payload type of the
/// peer on that session.
#[derive(Debug, Clone, PartialEq)]
pub struct TrackCodec {
    /// Audio or video.
    pub kind: RtpCodecKind,
    /// Codec and payload type.
    pub params: RTCRtpCodecParameters,
    /// The peer's RTX (RFC 4588) entry for it, when one is used: a viewer
    /// that offers RTX, as browsers do, gets retransmissions on their own
    /// SSRC and payload type.
    pub rtx: Option<RTCRtpCodecParameters>,
}

/// Parses an SDP offer into its m-sections.
pub fn parse_offer(sdp: &str) -> Result<Vec<OfferedSection>> {
    if !sdp.trim_start().starts_with("v=") {
        return Err(Error::MalformedSdp("an SDP body starts with v=0".into()));
    }
    let parsed = SessionDescription::unmarshal(&mut Cursor::new(sdp.as_bytes()))
        .map_err(|e| Error::MalformedSdp(e.to_string()))?;
    if parsed.media_descriptions.is_empty() {
        return Err(Error::MalformedSdp("the offer has no m= section".into()));
    }
    let session_direction = direction_of(|key| parsed.attribute(key).is_some());
    Ok(parsed
        .media_descriptions
        .iter()
        .map(|media| {
            let codec_map = media.codecs();
            let codecs = media
                .media_name
                .formats
                .iter()
                .filter_map(|format| format.parse::<u8>().ok())
                .filter_map(|pt| codec_map.get(&pt))
                .map(|codec| RTCRtpCodecParameters {
                    rtp_codec: RTCRtpCodec {
                        mime_type: format!("{}/{}", media.media_name.media, codec.name),
                        clock_rate: codec.clock_rate,
                        channels: codec.encoding_parameters.parse().unwrap_or(0),
                        sdp_fmtp_line: codec.fmtp.clone(),
                        rtcp_feedback: Vec::new(),
                    },
                    payload_type: codec.payload_type,
                })
                .collect();
            let direction = direction_of(|key| media.has_attribute(key));
            let declares_streams = media.has_attribute("ssrc") || media.has_attribute("rid");
            OfferedSection {
                media: media.media_name.media.clone(),
                direction: if direction == Direction::SendRecv {
                    session_direction
                } else {
                    direction
                },
                codecs,
                declares_streams,
            }
        })
        .collect())
}

fn direction_of(has: impl Fn(&str) -> bool) -> Direction {
    if has("sendonly") {
        Direction::SendOnly
    } else if has("recvonly") {
        Direction::RecvOnly
    } else if has("inactive") {
        Direction::Inactive
    } else {
        Direction::SendRecv
    }
}

/// Chooses the codec of each track a WHIP publisher offers.
///
/// RFC 9725 §4.4.2: one audio and one video track at most; §4.4.3: reject
/// the whole offer (422) rather than a single m-section.
pub fn choose_for_publish(sections: &[OfferedSection]) -> Result<Vec<TrackCodec>> {
    let media = media_sections(sections)?;
    // webrtc-rs 0.21 maps incoming RTP to an m-section by declared SSRC or
    // RID only; with two sections and neither, media would be dropped
    // silently. Refuse rather than create a session that never plays.
    if media.len() > 1 && media.iter().any(|(_, section)| !section.declares_streams) {
        return Err(Error::UnsupportedMedia(
            "each m-section must declare its stream with a=ssrc (or a=rid for simulcast) \
             when audio and video are bundled; demultiplexing by MID alone is not supported"
                .into(),
        ));
    }
    let mut chosen = Vec::with_capacity(media.len());
    for (kind, section) in media {
        if matches!(section.direction, Direction::RecvOnly | Direction::Inactive) {
            return Err(Error::UnsupportedMedia(format!(
                "a WHIP {} section must be sendonly or sendrecv",
                section.media
            )));
        }
        let params = section
            .codecs
            .iter()
            .find(|codec| is_supported(&codec.rtp_codec))
            .ok_or_else(|| no_usable_codec(section))?;
        chosen.push(TrackCodec {
            kind,
            params: with_feedback(kind, params.clone()),
            rtx: None,
        });
    }
    Ok(chosen)
}

/// Chooses, for each published track, the codec a WHEP viewer will receive
/// it with: the same codec, at the viewer's payload type.
///
/// Sections the publisher has no track for are left to the WebRTC stack,
/// which answers them `inactive`.
pub fn choose_for_play(
    sections: &[OfferedSection],
    published: &[TrackCodec],
) -> Result<Vec<TrackCodec>> {
    let media = media_sections(sections)?;
    let mut chosen = Vec::new();
    for (kind, section) in media {
        if matches!(section.direction, Direction::SendOnly | Direction::Inactive) {
            return Err(Error::UnsupportedMedia(format!(
                "a WHEP {} section must be recvonly or sendrecv",
                section.media
            )));
        }
        let Some(source) = published.iter().find(|track| track.kind == kind) else {
            continue;
        };
        let candidates = section
            .codecs
            .iter()
            .filter(|codec| same_codec(&codec.rtp_codec, &source.params.rtp_codec));
        // Same profile first. H264 decoders play other profiles of the same
        // stream in practice, so any packetization-mode=1 entry will do after
        // that; a VP9 or AV1 profile is a different bitstream and must match.
        let best = candidates
            .clone()
            .find(|codec| profile_of(&codec.rtp_codec) == profile_of(&source.params.rtp_codec))
            .or_else(|| {
                let h264 = source
                    .params
                    .rtp_codec
                    .mime_type
                    .eq_ignore_ascii_case(MIME_TYPE_H264);
                candidates.clone().next().filter(|_| h264)
            });
        if let Some(params) = best {
            chosen.push(TrackCodec {
                kind,
                rtx: rtx_for(section, params.payload_type),
                params: with_feedback(kind, params.clone()),
            });
        }
    }
    if chosen.is_empty() {
        let names: Vec<_> = published
            .iter()
            .map(|track| track.params.rtp_codec.mime_type.as_str())
            .collect();
        return Err(Error::UnsupportedMedia(format!(
            "the offer accepts none of the stream's codecs ({})",
            names.join(", ")
        )));
    }
    Ok(chosen)
}

/// The section's `video/rtx` entry whose `apt` is `payload_type`.
fn rtx_for(section: &OfferedSection, payload_type: u8) -> Option<RTCRtpCodecParameters> {
    section
        .codecs
        .iter()
        .find(|codec| {
            codec.rtp_codec.mime_type.eq_ignore_ascii_case("video/rtx")
                && fmtp_param(&codec.rtp_codec.sdp_fmtp_line, "apt")
                    .and_then(|apt| apt.parse::<u8>().ok())
                    == Some(payload_type)
        })
        .cloned()
}

/// The audio and video sections, checked against "at most one of each".
fn media_sections(sections: &[OfferedSection]) -> Result<Vec<(RtpCodecKind, &OfferedSection)>> {
    let media: Vec<_> = sections
        .iter()
        .filter_map(|section| section.kind().map(|kind| (kind, section)))
        .collect();
    for kind in [RtpCodecKind::Audio, RtpCodecKind::Video] {
        if media.iter().filter(|(k, _)| *k == kind).count() > 1 {
            return Err(Error::UnsupportedMedia(format!(
                "more than one {kind} track; a session carries at most one audio and one video track"
            )));
        }
    }
    if media.is_empty() {
        return Err(Error::UnsupportedMedia(
            "the offer has no audio or video section".into(),
        ));
    }
    Ok(media)
}

fn no_usable_codec(section: &OfferedSection) -> Error {
    let offered: Vec<_> = section
        .codecs
        .iter()
        .map(|codec| codec.rtp_codec.mime_type.as_str())
        .collect();
    Error::UnsupportedMedia(format!(
        "no usable {} codec (offered: {}; supported: Opus, H264 packetization-mode=1, VP8, VP9, AV1)",
        section.media,
        if offered.is_empty() {
            "none".to_owned()
        } else {
            offered.join(", ")
        }
    ))
}

fn is_supported(codec: &RTCRtpCodec) -> bool {
    let mime = codec.mime_type.as_str();
    if mime.eq_ignore_ascii_case(MIME_TYPE_H264) {
        return fmtp_param(&codec.sdp_fmtp_line, "packetization-mode") == Some("1");
    }
    [MIME_TYPE_OPUS, MIME_TYPE_VP8, MIME_TYPE_VP9, MIME_TYPE_AV1]
        .iter()
        .any(|supported| mime.eq_ignore_ascii_case(supported))
}

/// What a viewer may be sent: what a publisher may send, and G.711,
/// which only IP cameras publish (docs/cameras.md).
fn is_playable(codec: &RTCRtpCodec) -> bool {
    is_supported(codec)
        || [MIME_TYPE_PCMU, MIME_TYPE_PCMA]
            .iter()
            .any(|g711| codec.mime_type.eq_ignore_ascii_case(g711))
}

fn same_codec(offered: &RTCRtpCodec, source: &RTCRtpCodec) -> bool {
    is_playable(offered)
        && offered.mime_type.eq_ignore_ascii_case(&source.mime_type)
        && offered.clock_rate == source.clock_rate
}

/// The bitstream profile a codec entry announces: `profile_idc` and
/// constraint flags of an H264 `profile-level-id` (the level does not change
/// what a decoder must support), VP9's `profile-id` and AV1's `profile`, both
/// 0 when absent (RFC 9628, AV1 RTP spec).
fn profile_of(codec: &RTCRtpCodec) -> Option<String> {
    let fmtp = &codec.sdp_fmtp_line;
    let mime = codec.mime_type.as_str();
    if mime.eq_ignore_ascii_case(MIME_TYPE_H264) {
        fmtp_param(fmtp, "profile-level-id")
            .and_then(|id| id.get(..4))
            .map(str::to_ascii_lowercase)
    } else if mime.eq_ignore_ascii_case(MIME_TYPE_VP9) {
        Some(fmtp_param(fmtp, "profile-id").unwrap_or("0").to_owned())
    } else if mime.eq_ignore_ascii_case(MIME_TYPE_AV1) {
        Some(fmtp_param(fmtp, "profile").unwrap_or("0").to_owned())
    } else {
        None
    }
}

fn fmtp_param<'a>(fmtp: &'a str, key: &str) -> Option<&'a str> {
    fmtp.split(';').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        k.trim().eq_ignore_ascii_case(key).then(|| v.trim())
    })
}

/// Keyframe requests by FIR too (OBS and GStreamer offer `ccm fir`); NACK and
/// PLI are added by the default interceptors.
fn with_feedback(kind: RtpCodecKind, mut params: RTCRtpCodecParameters) -> RTCRtpCodecParameters {
    if kind == RtpCodecKind::Video {
        params.rtp_codec.rtcp_feedback = vec![RTCPFeedback {
            typ: "ccm".into(),
            parameter: "fir".into(),
        }];
    }
    params
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(sections: &str) -> String {
        format!(
            "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\n{sections}"
        )
    }

    const OBS_AUDIO: &str = "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=sendonly\r\na=rtpmap:111 opus/48000/2\r\na=fmtp:111 minptime=10;useinbandfec=1\r\n";
    const OBS_VIDEO: &str = "m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:1\r\na=sendonly\r\na=rtpmap:96 H264/90000\r\na=fmtp:96 profile-level-id=42e01f;packetization-mode=1;level-asymmetry-allowed=1\r\n";

    #[test]
    fn bundle_without_declared_streams_is_refused() {
        let sections = parse_offer(&offer(&format!("{OBS_AUDIO}{OBS_VIDEO}"))).unwrap();
        assert!(matches!(
            choose_for_publish(&sections),
            Err(Error::UnsupportedMedia(_))
        ));
        let single = parse_offer(&offer(OBS_VIDEO)).unwrap();
        assert!(
            choose_for_publish(&single).is_ok(),
            "one section needs no SSRC"
        );
    }

    #[test]
    fn obs_offer_keeps_its_payload_types() {
        let sections = parse_offer(&offer(&format!(
            "{OBS_AUDIO}a=ssrc:1 cname:obs\r\n{OBS_VIDEO}a=ssrc:2 cname:obs\r\n"
        )))
        .unwrap();
        let chosen = choose_for_publish(&sections).unwrap();
        assert_eq!(chosen.len(), 2);
        assert_eq!(chosen[0].params.payload_type, 111);
        assert_eq!(chosen[1].params.payload_type, 96);
        assert_eq!(chosen[1].params.rtp_codec.mime_type, "video/H264");
    }

    #[test]
    fn h264_without_packetization_mode_1_is_not_usable() {
        let video = "m=video 9 UDP/TLS/RTP/SAVPF 97\r\na=mid:0\r\na=sendonly\r\na=rtpmap:97 H264/90000\r\na=fmtp:97 profile-level-id=42e01f;packetization-mode=0\r\n";
        let sections = parse_offer(&offer(video)).unwrap();
        assert!(matches!(
            choose_for_publish(&sections),
            Err(Error::UnsupportedMedia(_))
        ));
    }

    #[test]
    fn two_video_tracks_are_refused() {
        let sections = parse_offer(&offer(&format!("{OBS_VIDEO}{OBS_VIDEO}"))).unwrap();
        assert!(matches!(
            choose_for_publish(&sections),
            Err(Error::UnsupportedMedia(_))
        ));
    }

    #[test]
    fn recvonly_whip_offer_is_refused() {
        let sections = parse_offer(&offer(&OBS_AUDIO.replace("sendonly", "recvonly"))).unwrap();
        assert!(choose_for_publish(&sections).is_err());
    }

    #[test]
    fn viewer_gets_the_publisher_profile_at_its_own_payload_type() {
        let published = choose_for_publish(&parse_offer(&offer(OBS_VIDEO)).unwrap()).unwrap();
        let viewer = "m=video 9 UDP/TLS/RTP/SAVPF 96 102 106\r\na=mid:0\r\na=recvonly\r\na=rtpmap:96 VP8/90000\r\na=rtpmap:102 H264/90000\r\na=fmtp:102 profile-level-id=64001f;packetization-mode=1\r\na=rtpmap:106 H264/90000\r\na=fmtp:106 profile-level-id=42e01f;packetization-mode=1\r\n";
        let chosen = choose_for_play(&parse_offer(&offer(viewer)).unwrap(), &published).unwrap();
        assert_eq!(chosen.len(), 1);
        assert_eq!(chosen[0].params.payload_type, 106);
        assert_eq!(chosen[0].rtx, None, "no RTX offered");
    }

    #[test]
    fn viewer_rtx_is_the_one_repairing_the_chosen_codec() {
        let published = choose_for_publish(&parse_offer(&offer(OBS_VIDEO)).unwrap()).unwrap();
        let viewer = "m=video 9 UDP/TLS/RTP/SAVPF 102 103 106 107\r\na=mid:0\r\na=recvonly\r\na=rtpmap:102 H264/90000\r\na=fmtp:102 profile-level-id=42e01f;packetization-mode=1\r\na=rtpmap:103 rtx/90000\r\na=fmtp:103 apt=102\r\na=rtpmap:106 H264/90000\r\na=fmtp:106 profile-level-id=64001f;packetization-mode=1\r\na=rtpmap:107 rtx/90000\r\na=fmtp:107 apt=106\r\n";
        let chosen = choose_for_play(&parse_offer(&offer(viewer)).unwrap(), &published).unwrap();
        assert_eq!(chosen[0].params.payload_type, 102);
        assert_eq!(chosen[0].rtx.as_ref().map(|r| r.payload_type), Some(103));
    }

    #[test]
    fn vp9_profile_must_match() {
        let vp9 = |profile: &str| {
            format!(
                "m=video 9 UDP/TLS/RTP/SAVPF 98 100\r\na=mid:0\r\na={profile}\r\na=rtpmap:98 VP9/90000\r\na=fmtp:98 profile-id=2\r\na=rtpmap:100 VP9/90000\r\na=fmtp:100 profile-id=0\r\n"
            )
        };
        let published = choose_for_publish(
            &parse_offer(&offer(&vp9("sendonly").replace("98 100", "100"))).unwrap(),
        )
        .unwrap();
        assert_eq!(
            published[0].params.payload_type, 100,
            "publisher's profile 0"
        );
        let chosen =
            choose_for_play(&parse_offer(&offer(&vp9("recvonly"))).unwrap(), &published).unwrap();
        assert_eq!(
            chosen[0].params.payload_type, 100,
            "profile 0, not the first VP9 entry"
        );
        let only_profile_2 = vp9("recvonly")
            .replace(" 98 100", " 98")
            .replace("a=rtpmap:100 VP9/90000\r\na=fmtp:100 profile-id=0\r\n", "");
        assert!(
            choose_for_play(&parse_offer(&offer(&only_profile_2)).unwrap(), &published).is_err()
        );
    }

    #[test]
    fn viewer_without_a_common_codec_is_refused() {
        let published = choose_for_publish(&parse_offer(&offer(OBS_VIDEO)).unwrap()).unwrap();
        let viewer =
            "m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:0\r\na=recvonly\r\na=rtpmap:96 VP8/90000\r\n";
        assert!(matches!(
            choose_for_play(&parse_offer(&offer(viewer)).unwrap(), &published),
            Err(Error::UnsupportedMedia(_))
        ));
    }

    #[test]
    fn garbage_is_malformed() {
        for body in ["", "hello", "v=0\r\nthis is not sdp"] {
            assert!(
                matches!(parse_offer(body), Err(Error::MalformedSdp(_))),
                "{body:?}"
            );
        }
    }
}
