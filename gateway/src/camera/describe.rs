//! What a camera's description offers, and what of it viewers can play.
//!
//! WebRTC viewers (browsers) play H.264 video and Opus, PCMU or PCMA
//! audio; anything else a camera offers (H.265, MJPEG, AAC, G.726…) is
//! reported per track as unplayable and not set up. The first playable
//! track of each kind is published.

use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodec, RTCRtpCodecParameters, RtpCodecKind};
use vigil_control::camera::CameraTrack;
use vigil_control::event::TrackKind;

use crate::engine::shard::LocalTrack;
use crate::sfu::MediaKind;
use crate::sfu::codecs::TrackCodec;

/// One stream of the camera's description, as retina parsed it.
#[derive(Debug, Clone, Default)]
pub struct Offered {
    /// `video`, `audio`, `application`…
    pub media: String,
    /// The encoding name, any case (`H264`, `PCMU`, `opus`, `H265`).
    pub encoding: String,
    /// RTP clock rate.
    pub clock_rate: u32,
    /// Audio channels, if given.
    pub channels: Option<u16>,
    /// For H.264: the profile-level-id (six hex digits) and the parameter
    /// sets from the SDP, when the camera gave them.
    pub h264: Option<H264Params>,
}

/// H.264 parameters from the description.
#[derive(Debug, Clone, Default)]
pub struct H264Params {
    /// `profile-level-id`, six hex digits.
    pub profile_level_id: String,
    /// Sequence parameter set (NAL unit, no start code).
    pub sps: Vec<u8>,
    /// Picture parameter set.
    pub pps: Vec<u8>,
}

/// A track chosen for publishing.
#[derive(Debug, Clone)]
pub struct Chosen {
    /// Its index in the description (retina's stream index).
    pub stream: usize,
    /// Audio or video.
    pub kind: MediaKind,
    /// Our mime type.
    pub mime: &'static str,
    /// Its clock rate.
    pub clock_rate: u32,
    /// H.264's parameter sets.
    pub h264: Option<H264Params>,
}

/// What a description comes to: every track as reported, and those
/// published.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// Every audio and video track the camera offers.
    pub tracks: Vec<CameraTrack>,
    /// The ones published (at most one per kind).
    pub chosen: Vec<Chosen>,
}

/// Decides what to publish of `offered`.
pub fn plan(offered: &[Offered]) -> Plan {
    let mut plan = Plan::default();
    for (i, o) in offered.iter().enumerate() {
        let kind = match o.media.to_ascii_lowercase().as_str() {
            "video" => MediaKind::Video,
            "audio" => MediaKind::Audio,
            _ => continue, // ONVIF metadata and the like
        };
        let encoding = o.encoding.to_ascii_lowercase();
        let playable = match (kind, encoding.as_str()) {
            (MediaKind::Video, "h264") => Some("video/H264"),
            (MediaKind::Audio, "pcmu") if o.clock_rate == 8000 => Some("audio/PCMU"),
            (MediaKind::Audio, "pcma") if o.clock_rate == 8000 => Some("audio/PCMA"),
            (MediaKind::Audio, "opus") if o.clock_rate == 48000 => Some("audio/opus"),
            _ => None,
        };
        let taken = plan.chosen.iter().any(|c| c.kind == kind);
        let publish = playable.filter(|_| !taken);
        plan.tracks.push(CameraTrack {
            kind: kind.into(),
            codec: match playable {
                Some(mime) => mime.to_owned(),
                None => format!(
                    "{}/{}",
                    o.media.to_ascii_lowercase(),
                    o.encoding.to_ascii_uppercase()
                ),
            },
            playable: publish.is_some(),
        });
        if let Some(mime) = publish {
            plan.chosen.push(Chosen {
                stream: i,
                kind,
                mime,
                clock_rate: o.clock_rate,
                h264: o.h264.clone().filter(|_| kind == MediaKind::Video),
            });
        }
    }
    plan
}

impl Plan {
    /// Why nothing is published, for a person: the tracks offered, and
    /// what viewers play.
    pub fn unsupported(&self) -> String {
        let offered: Vec<&str> = self.tracks.iter().map(|t| t.codec.as_str()).collect();
        format!(
            "the camera offers {}; WebRTC viewers play H264 video and Opus, PCMU or PCMA audio",
            if offered.is_empty() {
                "no audio or video".to_owned()
            } else {
                offered.join(", ")
            }
        )
    }

    /// A short description of what is published (`video/H264, audio/PCMU`).
    pub fn published(&self) -> String {
        let names: Vec<&str> = self.chosen.iter().map(|c| c.mime).collect();
        names.join(", ")
    }
}

impl Chosen {
    /// The codec viewers negotiate for it.
    pub fn codec(&self) -> TrackCodec {
        let (kind, payload_type, channels, fmtp) = match self.mime {
            "video/H264" => {
                let profile = self
                    .h264
                    .as_ref()
                    .map(|p| p.profile_level_id.as_str())
                    .filter(|p| p.len() == 6 && p.bytes().all(|b| b.is_ascii_hexdigit()))
                    .unwrap_or("42e01f");
                (
                    RtpCodecKind::Video,
                    96,
                    0,
                    format!(
                        "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id={}",
                        profile.to_ascii_lowercase()
                    ),
                )
            }
            "audio/opus" => (
                RtpCodecKind::Audio,
                111,
                2,
                "minptime=10;useinbandfec=1".into(),
            ),
            "audio/PCMA" => (RtpCodecKind::Audio, 8, 0, String::new()),
            _ => (RtpCodecKind::Audio, 0, 0, String::new()),
        };
        TrackCodec {
            kind,
            params: RTCRtpCodecParameters {
                rtp_codec: RTCRtpCodec {
                    mime_type: self.mime.to_owned(),
                    clock_rate: self.clock_rate,
                    channels,
                    sdp_fmtp_line: fmtp,
                    rtcp_feedback: Vec::new(),
                },
                payload_type,
            },
            rtx: None,
        }
    }

    /// The engine's view of it, sending on `ssrc`.
    pub fn local_track(&self, ssrc: u32) -> LocalTrack {
        LocalTrack {
            kind: self.kind,
            mime: self.mime.to_owned(),
            clock_rate: self.clock_rate,
            ssrc,
        }
    }

    /// Its control-plane kind.
    pub fn track_kind(&self) -> TrackKind {
        self.kind.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offered(media: &str, encoding: &str, clock_rate: u32) -> Offered {
        Offered {
            media: media.into(),
            encoding: encoding.into(),
            clock_rate,
            ..Offered::default()
        }
    }

    #[test]
    fn h264_and_g711_or_opus_are_published_the_rest_reported() {
        let p = plan(&[
            offered("video", "H264", 90_000),
            offered("audio", "PCMU", 8_000),
            offered("application", "vnd.onvif.metadata", 90_000),
        ]);
        assert_eq!(p.published(), "video/H264, audio/PCMU");
        assert_eq!(p.chosen[1].stream, 1);
        let p = plan(&[
            offered("video", "H265", 90_000),
            offered("audio", "MPEG4-GENERIC", 16_000),
            offered("audio", "opus", 48_000),
        ]);
        assert_eq!(p.published(), "audio/opus");
        let reported: Vec<_> = p
            .tracks
            .iter()
            .map(|t| (t.codec.as_str(), t.playable))
            .collect();
        assert_eq!(
            reported,
            [
                ("video/H265", false),
                ("audio/MPEG4-GENERIC", false),
                ("audio/opus", true)
            ]
        );
    }

    #[test]
    fn nothing_playable_says_what_was_offered() {
        let p = plan(&[
            offered("video", "H265", 90_000),
            offered("audio", "mpeg4-generic", 44_100),
        ]);
        assert!(p.chosen.is_empty());
        assert!(p.unsupported().contains("video/H265, audio/MPEG4-GENERIC"));
    }

    #[test]
    fn a_second_track_of_a_kind_is_reported_not_published() {
        let p = plan(&[
            offered("video", "H264", 90_000),
            offered("video", "H264", 90_000),
        ]);
        assert_eq!(p.chosen.len(), 1);
        assert!(p.tracks[0].playable && !p.tracks[1].playable);
    }

    #[test]
    fn the_viewers_codec_carries_the_cameras_profile() {
        let mut p = plan(&[offered("video", "h264", 90_000)]);
        p.chosen[0].h264 = Some(H264Params {
            profile_level_id: "640028".into(),
            ..H264Params::default()
        });
        let codec = p.chosen[0].codec();
        assert!(
            codec
                .params
                .rtp_codec
                .sdp_fmtp_line
                .contains("profile-level-id=640028")
        );
        assert!(
            codec
                .params
                .rtp_codec
                .sdp_fmtp_line
                .contains("packetization-mode=1")
        );
    }
}
