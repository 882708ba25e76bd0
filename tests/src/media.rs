//! The committed test media: H264 access units and Opus packets.

use bytes::Bytes;
use rtc::rtp::codec::h264::H264Payloader;
use rtc::rtp::packetizer::Payloader;

/// MTU used to packetize video (FFmpeg's and OBS's default size class).
pub const VIDEO_MTU: usize = 1200;

/// One encoded video frame, already split into RTP payloads.
#[derive(Debug, Clone)]
pub struct VideoFrame {
    /// RTP payloads of this frame, in order.
    pub payloads: Vec<Bytes>,
    /// Whether the frame is an IDR (with SPS/PPS before it).
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixture_has_120_frames_with_an_idr_every_30() {
        let frames = h264_frames();
        assert_eq!(frames.len(), 120);
        let keyframes: Vec<_> = frames
            .iter()
            .enumerate()
            .filter(|(_, f)| f.keyframe)
            .map(|(i, _)| i)
            .collect();
        assert_eq!(keyframes, vec![0, 30, 60, 90]);
        assert!(frames.iter().all(|f| !f.payloads.is_empty()));
    }

    #[test]
    fn fixture_has_4_seconds_of_opus() {
        let packets = opus_packets();
        assert!((195..=201).contains(&packets.len()), "{}", packets.len());
    }
}
