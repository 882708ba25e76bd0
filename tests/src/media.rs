//! The committed test media: H264 access units, VP8 and VP9 frames, and
//! Opus packets.

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use rtc::media::io::ivf_reader::IVFReader;
use rtc::rtp::codec::h264::H264Payloader;
use rtc::rtp::codec::vp8::Vp8Payloader;
use rtc::rtp::codec::vp9::Vp9Payloader;
use rtc::rtp::packetizer::Payloader;

/// MTU used to packetize video (FFmpeg's and OBS's default size class).
pub const VIDEO_MTU: usize = 1200;

/// One encoded video frame, already split into RTP payloads.
#[derive(Debug, Clone)]
pub struct VideoFrame {
    /// RTP payloads of this frame, in order.
    pub payloads: Vec<Bytes>,
    /// Whether the frame is a keyframe (for H264 an IDR with SPS/PPS
    /// before it).
    pub keyframe: bool,
}

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

/// Splits Annex-B into NAL units (without start codes).
fn nal_units(data: &[u8]) -> Vec<&[u8]> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= data.len() {
        if data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1 {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    starts
        .iter()
        .enumerate()
        .map(|(n, &start)| {
            let mut end = starts.get(n + 1).map_or(data.len(), |&next| next - 3);
            // A 4-byte start code leaves a zero at the end of the previous unit.
            while end > start && data[end - 1] == 0 {
                end -= 1;
            }
            &data[start..end]
        })
        .collect()
}

/// The fixture's frames (120 at 30 fps, an IDR every 30), packetized.
pub fn h264_frames() -> Vec<VideoFrame> {
    let data = fixture("video.h264");
    let mut frames: Vec<Vec<&[u8]>> = Vec::new();
    let mut current: Vec<&[u8]> = Vec::new();
    let mut has_slice = false;
    for nal in nal_units(&data) {
        let Some(&header) = nal.first() else { continue };
        let kind = header & 0x1f;
        let is_slice = kind == 1 || kind == 5;
        // A new access unit starts at a non-VCL unit or slice after a slice.
        if has_slice {
            frames.push(std::mem::take(&mut current));
            has_slice = false;
        }
        current.push(nal);
        has_slice |= is_slice;
    }
    if !current.is_empty() {
        frames.push(current);
    }
    let mut payloader = H264Payloader::default();
    frames
        .into_iter()
        .map(|nals| {
            let keyframe = nals
                .iter()
                .any(|n| n.first().is_some_and(|h| h & 0x1f == 5));
            let mut annex_b = Vec::new();
            for nal in &nals {
                annex_b.extend_from_slice(&[0, 0, 0, 1]);
                annex_b.extend_from_slice(nal);
            }
            let payloads = payloader
                .payload(VIDEO_MTU, &Bytes::from(annex_b))
                .expect("packetize H264");
            VideoFrame { payloads, keyframe }
        })
        .collect()
}

/// The frames of an IVF fixture, in order.
fn ivf_frames(name: &str, four_cc: &[u8; 4]) -> Vec<Bytes> {
    let (mut reader, header) =
        IVFReader::new(std::io::Cursor::new(fixture(name))).expect("IVF header");
    assert_eq!(&header.four_cc, four_cc, "{name} holds another codec");
    let mut frames = Vec::new();
    while let Ok((frame, _)) = reader.parse_next_frame() {
        frames.push(frame.freeze());
    }
    frames
}

/// The VP8 fixture's frames (120 at 30 fps, a keyframe every 30), packetized
/// with a 7-bit picture ID as browsers send it.
pub fn vp8_frames() -> Vec<VideoFrame> {
    let mut payloader = Vp8Payloader::default();
    payloader.enable_picture_id = true;
    ivf_frames("video.vp8.ivf", b"VP80")
        .into_iter()
        .map(|frame| {
            // RFC 6386 §9.1: the frame tag's lowest bit is 0 for a key frame.
            let keyframe = frame.first().is_some_and(|tag| tag & 0x01 == 0);
            let payloads = payloader.payload(VIDEO_MTU, &frame).expect("packetize VP8");
            VideoFrame { payloads, keyframe }
        })
        .collect()
}

/// Whether a VP9 frame is a key frame, from its uncompressed header:
/// frame_marker (2 bits), profile_low_bit, profile_high_bit, a reserved
/// zero in profile 3, show_existing_frame, then frame_type (0 = KEY_FRAME).
fn vp9_is_keyframe(frame: &[u8]) -> bool {
    let Some(&byte) = frame.first() else {
        return false;
    };
    let bit = |i: usize| (byte >> (7 - i)) & 1;
    if byte >> 6 != 0b10 {
        return false;
    }
    let profile = bit(2) | (bit(3) << 1);
    let show_existing_frame = if profile == 3 { 5 } else { 4 };
    bit(show_existing_frame) == 0 && bit(show_existing_frame + 1) == 0
}

/// The VP9 fixture's frames (120 at 30 fps, a keyframe every 30), packetized
/// in flexible mode with a 15-bit picture ID.
///
/// rtc's `Vp9Payloader` writes P=0 (not inter-predicted) on every frame, so
/// every frame would look like a keyframe to a receiver. Inter frames are
/// marked as a real sender marks them: P=1 with one reference index
/// (P_DIFF=1, the previous picture), which flexible mode then requires in
/// every packet of the picture.
pub fn vp9_frames() -> Vec<VideoFrame> {
    const DESCRIPTOR: usize = 3; // I|P|L|F|B|E|V|Z, M|PID, PID
    let mut payloader = Vp9Payloader::default();
    payloader.initial_picture_id_fn = Some(Arc::new(|| 0));
    ivf_frames("video.vp9.ivf", b"VP90")
        .into_iter()
        .map(|frame| {
            let keyframe = vp9_is_keyframe(&frame);
            if keyframe {
                let payloads = payloader.payload(VIDEO_MTU, &frame).expect("packetize VP9");
                return VideoFrame { payloads, keyframe };
            }
            let payloads = payloader
                .payload(VIDEO_MTU - 1, &frame)
                .expect("packetize VP9")
                .into_iter()
                .map(|packet| {
                    let mut out = BytesMut::with_capacity(packet.len() + 1);
                    out.put_u8(packet[0] | 0x40); // P=1
                    out.put_slice(&packet[1..DESCRIPTOR]);
                    out.put_u8(1 << 1); // P_DIFF=1, N=0
                    out.put_slice(&packet[DESCRIPTOR..]);
                    out.freeze()
                })
                .collect();
            VideoFrame { payloads, keyframe }
        })
        .collect()
}

/// The fixture's Opus packets, 20 ms each.
pub fn opus_packets() -> Vec<Bytes> {
    let data = fixture("audio.ogg");
    let (mut reader, _header) =
        rtc::media::io::ogg_reader::OggReader::new(std::io::Cursor::new(data), true)
            .expect("ogg header");
    let mut packets = Vec::new();
    while let Ok((page, _)) = reader.parse_next_page() {
        if !page.starts_with(b"OpusTags") {
            packets.push(page.freeze());
        }
    }
    packets
}

/// The H264 RTP payloads `payloads` (single NAL units, STAP-A, FU-A; in
/// order, starting at a keyframe) as an Annex-B elementary stream, for a
/// decoder to read.
pub fn h264_annexb<'a>(payloads: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    const START: [u8; 4] = [0, 0, 0, 1];
    let mut out = Vec::new();
    for payload in payloads {
        let Some(&first) = payload.first() else {
            continue;
        };
        match first & 0x1f {
            // STAP-A: 16-bit sizes, then the units.
            24 => {
                let mut rest = &payload[1..];
                while rest.len() >= 2 {
                    let size = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
                    let Some(unit) = rest.get(2..2 + size) else {
                        break;
                    };
                    out.extend_from_slice(&START);
                    out.extend_from_slice(unit);
                    rest = &rest[2 + size..];
                }
            }
            // FU-A: the start fragment rebuilds the unit's header.
            28 => {
                let Some(&fu) = payload.get(1) else {
                    continue;
                };
                if fu & 0x80 != 0 {
                    out.extend_from_slice(&START);
                    out.push((first & 0xe0) | (fu & 0x1f));
                }
                out.extend_from_slice(&payload[2..]);
            }
            _ => {
                out.extend_from_slice(&START);
                out.extend_from_slice(payload);
            }
        }
    }
    out
}

/// How many frames FFmpeg decodes from the Annex-B H264 `stream`, and
/// whether it reported any decoding error (Debian's `ffmpeg`, installed
/// by test.sh).
pub fn ffmpeg_decodes_h264(stream: &[u8]) -> (usize, bool) {
    let dir = std::env::temp_dir().join(format!(
        "vigil-decode-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let input = dir.join("video.h264");
    std::fs::write(&input, stream).expect("write the stream");
    let out = std::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-v", "error", "-f", "h264", "-i"])
        .arg(&input)
        .args(["-f", "framemd5", "-"])
        .output()
        .expect("ffmpeg runs (test.sh installs it)");
    let _ = std::fs::remove_dir_all(&dir);
    let frames = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .count();
    let errors = !out.stderr.is_empty() || !out.status.success();
    if errors {
        eprintln!("ffmpeg: {}", String::from_utf8_lossy(&out.stderr));
    }
    (frames, errors)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::rtp::codec::vp9::Vp9Packet;
    use rtc::rtp::packetizer::Depacketizer;
    use vigil_gateway::sfu::keyframe::{VideoCodec, starts_keyframe};

    fn keyframe_indices(frames: &[VideoFrame]) -> Vec<usize> {
        frames
            .iter()
            .enumerate()
            .filter(|(_, f)| f.keyframe)
            .map(|(i, _)| i)
            .collect()
    }

    /// The server's keyframe detection fires on a keyframe's first packet
    /// and nowhere else.
    fn assert_keyframe_starts(codec: VideoCodec, frames: &[VideoFrame]) {
        for (n, frame) in frames.iter().enumerate() {
            for (i, payload) in frame.payloads.iter().enumerate() {
                assert_eq!(
                    starts_keyframe(codec, payload),
                    frame.keyframe && i == 0,
                    "{codec:?} frame {n} packet {i}"
                );
                assert!(payload.len() <= VIDEO_MTU, "{codec:?} frame {n} packet {i}");
            }
        }
    }

    #[test]
    fn fixture_has_120_frames_with_an_idr_every_30() {
        let frames = h264_frames();
        assert_eq!(frames.len(), 120);
        assert_eq!(keyframe_indices(&frames), vec![0, 30, 60, 90]);
        assert!(frames.iter().all(|f| !f.payloads.is_empty()));
    }

    #[test]
    fn vp8_fixture_has_120_frames_with_a_keyframe_every_30() {
        let frames = vp8_frames();
        assert_eq!(frames.len(), 120);
        assert_eq!(keyframe_indices(&frames), vec![0, 30, 60, 90]);
        assert!(frames.iter().all(|f| !f.payloads.is_empty()));
        assert!(
            frames.iter().any(|f| f.payloads.len() > 1),
            "no frame spans packets"
        );
        assert_keyframe_starts(VideoCodec::Vp8, &frames);
    }

    #[test]
    fn vp9_fixture_has_120_frames_with_a_keyframe_every_30() {
        let frames = vp9_frames();
        assert_eq!(frames.len(), 120);
        assert_eq!(keyframe_indices(&frames), vec![0, 30, 60, 90]);
        assert!(frames.iter().all(|f| !f.payloads.is_empty()));
        assert!(
            frames.iter().any(|f| f.payloads.len() > 1),
            "no frame spans packets"
        );
        assert_keyframe_starts(VideoCodec::Vp9, &frames);
    }

    #[test]
    fn vp9_descriptors_parse_as_the_frames_they_carry() {
        let encoded = ivf_frames("video.vp9.ivf", b"VP90");
        for (n, frame) in vp9_frames().iter().enumerate() {
            let last = frame.payloads.len() - 1;
            let mut reassembled = Vec::new();
            for (i, payload) in frame.payloads.iter().enumerate() {
                let mut packet = Vp9Packet::default();
                reassembled
                    .extend_from_slice(&packet.depacketize(payload).expect("VP9 descriptor"));
                assert_eq!(packet.p, !frame.keyframe, "frame {n} packet {i}");
                assert_eq!(packet.b, i == 0, "frame {n} packet {i}");
                assert_eq!(packet.e, i == last, "frame {n} packet {i}");
                assert_eq!(usize::from(packet.picture_id), n, "frame {n} packet {i}");
                let refs: &[u8] = if frame.keyframe { &[] } else { &[1] };
                assert_eq!(packet.pdiff, refs, "frame {n} packet {i}");
            }
            assert_eq!(reassembled, encoded[n], "frame {n}");
        }
    }

    #[test]
    fn fixture_has_4_seconds_of_opus() {
        let packets = opus_packets();
        assert!((195..=201).contains(&packets.len()), "{}", packets.len());
    }
}
