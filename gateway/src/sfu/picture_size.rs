//! A video keyframe's picture size, read from its first RTP packet.
//!
//! Simulcast layers are ranked by what they carry; the picture size is the
//! one measure that cannot flip while an encoder ramps a layer up (its byte
//! rate can: a browser starts a 640x360 layer below the bitrate of its
//! 320x180 one). VP8 keyframes carry the size right after the frame tag;
//! H.264 carries it in the SPS that encoders send before every IDR. VP9 and
//! AV1 are not read here: their layers fall back to the byte rate.
//!
//! Like `keyframe`, this reads attacker-controlled bytes: no allocation on
//! the common path, no panic on any input, `None` for anything malformed.

use crate::sfu::keyframe::{VideoCodec, vp8_frame_start};

/// Width and height in pixels.
pub type Size = (u32, u32);

/// The picture size announced by this packet, if it starts a keyframe of a
/// codec whose size is read here.
pub fn keyframe_size(codec: VideoCodec, payload: &[u8]) -> Option<Size> {
    match codec {
        VideoCodec::Vp8 => vp8(payload),
        VideoCodec::H264 => h264(payload),
        VideoCodec::Vp9 | VideoCodec::Av1 => None,
    }
}

/// RFC 6386 §9.1: a keyframe's 3-byte frame tag, the start code
/// 9d 01 2a, then 14-bit width and height (little endian, 2 bits of
/// scaling above each).
fn vp8(payload: &[u8]) -> Option<Size> {
    let frame = vp8_frame_start(payload)?;
    let [tag, _, _, 0x9d, 0x01, 0x2a, w0, w1, h0, h1, ..] = *frame else {
        return None;
    };
    if tag & 0x01 != 0 {
        return None;
    }
    let width = u32::from(u16::from_le_bytes([w0, w1]) & 0x3fff);
    let height = u32::from(u16::from_le_bytes([h0, h1]) & 0x3fff);
    (width > 0 && height > 0).then_some((width, height))
}

const NAL_SPS: u8 = 7;
const NAL_STAP_A: u8 = 24;
const NAL_FU_A: u8 = 28;

/// The SPS in a single NAL unit, a STAP-A (RFC 6184 §5.7.1) or the first
/// fragment of an FU-A.
fn h264(payload: &[u8]) -> Option<Size> {
    let (&header, rest) = payload.split_first()?;
    match header & 0x1f {
        NAL_SPS => sps_size(rest),
        NAL_STAP_A => {
            let mut rest = rest;
            while let [hi, lo, tail @ ..] = rest {
                let size = usize::from(u16::from_be_bytes([*hi, *lo]));
                let (nal, next) = tail.split_at_checked(size)?;
                if let Some((&h, sps)) = nal.split_first()
                    && h & 0x1f == NAL_SPS
                {
                    return sps_size(sps);
                }
                rest = next;
            }
            None
        }
        NAL_FU_A => match rest {
            [fu, sps @ ..] if fu & 0x80 != 0 && fu & 0x1f == NAL_SPS => sps_size(sps),
            _ => None,
        },
        _ => None,
    }
}

/// Profiles whose SPS carries chroma format, bit depths and scaling lists
/// (ITU-T H.264 §7.3.2.1.1).
const HIGH_PROFILES: [u8; 12] = [100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134];

/// Reads the picture size from an SPS's RBSP (after the NAL header byte).
fn sps_size(sps: &[u8]) -> Option<Size> {
    let mut r = BitReader::new(sps);
    let profile = r.bits(8)? as u8;
    r.bits(16)?; // constraint flags, level
    r.ue()?; // seq_parameter_set_id
    let mut chroma_format = 1;
    let mut separate_planes = false;
    if HIGH_PROFILES.contains(&profile) || profile == 135 {
        chroma_format = r.ue()?;
        if chroma_format == 3 {
            separate_planes = r.bit()?;
        }
        r.ue()?; // bit_depth_luma_minus8
        r.ue()?; // bit_depth_chroma_minus8
        r.bit()?; // qpprime_y_zero_transform_bypass
        if r.bit()? {
            let lists = if chroma_format == 3 { 12 } else { 8 };
            for i in 0..lists {
                if r.bit()? {
                    skip_scaling_list(&mut r, if i < 6 { 16 } else { 64 })?;
                }
            }
        }
    }
    r.ue()?; // log2_max_frame_num_minus4
    match r.ue()? {
        0 => {
            r.ue()?; // log2_max_pic_order_cnt_lsb_minus4
        }
        1 => {
            r.bit()?; // delta_pic_order_always_zero
            r.se()?; // offset_for_non_ref_pic
            r.se()?; // offset_for_top_to_bottom_field
            let cycle = r.ue()?;
            if cycle > 255 {
                return None;
            }
            for _ in 0..cycle {
                r.se()?;
            }
        }
        _ => {}
    }
    r.ue()?; // max_num_ref_frames
    r.bit()?; // gaps_in_frame_num_value_allowed
    let width_mbs = r.ue()?.checked_add(1)?;
    let height_units = r.ue()?.checked_add(1)?;
    let frame_mbs_only = r.bit()?;
    if !frame_mbs_only {
        r.bit()?; // mb_adaptive_frame_field
    }
    r.bit()?; // direct_8x8_inference
    let field_factor = if frame_mbs_only { 1 } else { 2 };
    let mut width = width_mbs.checked_mul(16)?;
    let mut height = height_units.checked_mul(16 * field_factor)?;
    if r.bit()? {
        let (left, right, top, bottom) = (r.ue()?, r.ue()?, r.ue()?, r.ue()?);
        // Crop units (Table 6-1 and equations 7-19 to 7-22).
        let (unit_x, unit_y) = match (chroma_format, separate_planes) {
            (0, _) | (3, true) => (1, field_factor),
            (1, _) => (2, 2 * field_factor),
            (2, _) => (2, field_factor),
            _ => (1, field_factor),
        };
        width = width.checked_sub(left.checked_add(right)?.checked_mul(unit_x)?)?;
        height = height.checked_sub(top.checked_add(bottom)?.checked_mul(unit_y)?)?;
    }
    (width > 0 && height > 0 && width <= 16_384 && height <= 16_384).then_some((width, height))
}

fn skip_scaling_list(r: &mut BitReader, size: usize) -> Option<()> {
    let (mut last, mut next) = (8i64, 8i64);
    for _ in 0..size {
        if next != 0 {
            next = (last + r.se()? + 256).rem_euclid(256);
        }
        if next != 0 {
            last = next;
        }
    }
    Some(())
}

/// Reads bits of an RBSP, skipping emulation-prevention bytes
/// (00 00 03 → 00 00).
struct BitReader<'a> {
    bytes: &'a [u8],
    at: usize,
    bit: u8,
    zeros: u8,
    current: u8,
}

impl<'a> BitReader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        BitReader {
            bytes,
            at: 0,
            bit: 8,
            zeros: 0,
            current: 0,
        }
    }

    fn bit(&mut self) -> Option<bool> {
        if self.bit == 8 {
            let mut byte = *self.bytes.get(self.at)?;
            self.at += 1;
            if self.zeros >= 2 && byte == 3 {
                byte = *self.bytes.get(self.at)?;
                self.at += 1;
                self.zeros = 0;
            }
            self.zeros = if byte == 0 { self.zeros + 1 } else { 0 };
            self.current = byte;
            self.bit = 0;
        }
        let value = self.current & (0x80 >> self.bit) != 0;
        self.bit += 1;
        Some(value)
    }

    fn bits(&mut self, count: u32) -> Option<u32> {
        let mut value = 0;
        for _ in 0..count {
            value = (value << 1) | u32::from(self.bit()?);
        }
        Some(value)
    }

    /// Unsigned Exp-Golomb (§9.1), at most 32 bits of value.
    fn ue(&mut self) -> Option<u32> {
        let mut zeros = 0;
        while !self.bit()? {
            zeros += 1;
            if zeros > 31 {
                return None;
            }
        }
        let rest = self.bits(zeros)?;
        ((1u64 << zeros) - 1 + u64::from(rest)).try_into().ok()
    }

    /// Signed Exp-Golomb (§9.1.1).
    fn se(&mut self) -> Option<i64> {
        let k = i64::from(self.ue()?);
        Some(if k % 2 == 1 { (k + 1) / 2 } else { -(k / 2) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A VP8 keyframe's first packet: descriptor with a 15-bit picture ID,
    /// then frame tag, start code and size.
    fn vp8_key(width: u16, height: u16) -> Vec<u8> {
        let mut p = vec![0x90, 0x80, 0x81, 0x23, 0x50, 0x02, 0x00, 0x9d, 0x01, 0x2a];
        p.extend_from_slice(&width.to_le_bytes());
        p.extend_from_slice(&height.to_le_bytes());
        p
    }

    #[test]
    fn vp8_keyframes_give_their_size() {
        assert_eq!(
            keyframe_size(VideoCodec::Vp8, &vp8_key(640, 360)),
            Some((640, 360))
        );
        // Scaling bits above the 14-bit size are ignored.
        assert_eq!(
            keyframe_size(VideoCodec::Vp8, &vp8_key(0x4000 | 320, 0x8000 | 180)),
            Some((320, 180))
        );
        // An interframe, a wrong start code, a cut-off header.
        let mut inter = vp8_key(640, 360);
        inter[4] |= 0x01;
        assert_eq!(keyframe_size(VideoCodec::Vp8, &inter), None);
        let mut bad = vp8_key(640, 360);
        bad[7] = 0x9c;
        assert_eq!(keyframe_size(VideoCodec::Vp8, &bad), None);
        assert_eq!(
            keyframe_size(VideoCodec::Vp8, &vp8_key(640, 360)[..12]),
            None
        );
    }

    /// SPS NAL units written by x264 (GStreamer `x264enc`, the encoder
    /// behind OBS's and FFmpeg's software H.264), with their picture sizes.
    const SPS: &[(&[u8], Size)] = &[
        // Baseline 3.1, 1280x720.
        (
            &[
                0x67, 0x42, 0xc0, 0x1f, 0xd9, 0x00, 0x50, 0x05, 0xbb, 0x01, 0x6a, 0x02, 0x02, 0x02,
                0x80, 0x00, 0x00, 0x03, 0x00, 0x80, 0x00, 0x00, 0x1e, 0x47, 0x8c, 0x19, 0x24,
            ],
            (1280, 720),
        ),
        // High 4.0, 1920x1080 (1088 cropped by 8).
        (
            &[
                0x67, 0x64, 0x00, 0x28, 0xac, 0xd9, 0x40, 0x78, 0x02, 0x27, 0xe5, 0xc0, 0x5a, 0x80,
                0x80, 0x80, 0xa0, 0x00, 0x00, 0x03, 0x00, 0x20, 0x00, 0x00, 0x07, 0x91, 0xe3, 0x06,
                0x32, 0xc0,
            ],
            (1920, 1080),
        ),
        // Main 3.0, 640x360 (368 cropped by 8).
        (
            &[
                0x67, 0x4d, 0x40, 0x1e, 0xec, 0xa0, 0x50, 0x17, 0xfc, 0xb8, 0x0b, 0x50, 0x60, 0x60,
                0x6a, 0x50, 0x00, 0x00, 0x03, 0x00, 0x10, 0x00, 0x00, 0x03, 0x03, 0xc8, 0xf1, 0x62,
                0xd9, 0x60,
            ],
            (640, 360),
        ),
        // Constrained baseline 2.1, 320x180 (192 cropped by 12).
        (
            &[
                0x67, 0x42, 0xc0, 0x15, 0xd9, 0x01, 0x41, 0x9f, 0x9f, 0x01, 0x6a, 0x0c, 0x0c, 0x0d,
                0x4a, 0x00, 0x00, 0x03, 0x00, 0x02, 0x00, 0x00, 0x03, 0x00, 0x79, 0x1e, 0x2c, 0x5c,
                0x90,
            ],
            (320, 180),
        ),
    ];

    #[test]
    fn h264_sps_gives_the_cropped_size() {
        for (nal, size) in SPS {
            assert_eq!(
                keyframe_size(VideoCodec::H264, nal),
                Some(*size),
                "{nal:02x?}"
            );
            // The same SPS inside a STAP-A after an SEI, and as an FU-A start.
            let mut stap = vec![0x78, 0x00, 0x02, 0x06, 0x05];
            stap.extend_from_slice(&(nal.len() as u16).to_be_bytes());
            stap.extend_from_slice(nal);
            assert_eq!(keyframe_size(VideoCodec::H264, &stap), Some(*size));
            let mut fu = vec![0x7c, 0x80 | NAL_SPS];
            fu.extend_from_slice(&nal[1..]);
            assert_eq!(keyframe_size(VideoCodec::H264, &fu), Some(*size));
        }
    }

    #[test]
    fn other_packets_give_nothing() {
        assert_eq!(keyframe_size(VideoCodec::H264, &[0x65, 0x88, 0x84]), None);
        assert_eq!(
            keyframe_size(VideoCodec::H264, &[0x68, 0xce, 0x3c, 0x80]),
            None
        );
        assert_eq!(
            keyframe_size(VideoCodec::Vp9, &[0x88, 0x81, 0x23, 0x00]),
            None
        );
        // A cut SPS gives its size only if the cut is past the size fields.
        for (nal, size) in SPS {
            for end in 0..nal.len() {
                let got = keyframe_size(VideoCodec::H264, &nal[..end]);
                assert!(got.is_none() || got == Some(*size), "cut at {end}: {got:?}");
            }
            assert_eq!(keyframe_size(VideoCodec::H264, &nal[..5]), None);
        }
    }

    #[test]
    fn never_panics() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut buf = [0u8; 48];
        for round in 0..20_000 {
            for b in &mut buf {
                *b = next() as u8;
            }
            // Aim some rounds at the SPS parser, some at the VP8 header.
            if round % 2 == 0 {
                buf[0] = 0x67;
            } else {
                buf[..4].copy_from_slice(&[0x10, 0x50, 0x02, 0x00]);
                buf[4..7].copy_from_slice(&[0x9d, 0x01, 0x2a]);
            }
            let len = (next() % 49) as usize;
            for codec in [VideoCodec::H264, VideoCodec::Vp8] {
                let _ = keyframe_size(codec, &buf[..len]);
            }
        }
    }
}
