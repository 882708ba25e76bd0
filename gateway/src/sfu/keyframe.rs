//! Decides, from a single RTP payload, whether that packet begins a video keyframe,
//! i.e. whether a decoder that joins now could start decoding from it.
//!
//! The payload is attacker-controlled and this runs on the forwarding hot path, so every
//! function here is allocation-free and never panics on any input: all reads go through
//! `get`, `split_at_checked` or slice patterns, and malformed input simply yields `false`.

/// Video codecs the forwarder understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VideoCodec {
    H264,
    Vp8,
    Vp9,
    Av1,
}

impl VideoCodec {
    /// From an SDP/MediaEngine mime type such as "video/H264" (case-insensitive). None for others.
    pub fn from_mime(mime: &str) -> Option<Self> {
        let (kind, name) = mime.split_once('/')?;
        if !kind.eq_ignore_ascii_case("video") {
            return None;
        }
        [
            ("H264", Self::H264),
            ("VP8", Self::Vp8),
            ("VP9", Self::Vp9),
            ("AV1", Self::Av1),
        ]
        .into_iter()
        .find_map(|(n, c)| name.eq_ignore_ascii_case(n).then_some(c))
    }
}

/// True when this RTP payload begins a keyframe (IDR / intra frame): the first packet a
/// decoder joining now can start from.
pub fn starts_keyframe(codec: VideoCodec, payload: &[u8]) -> bool {
    match codec {
        VideoCodec::H264 => h264(payload),
        VideoCodec::Vp8 => vp8(payload),
        VideoCodec::Vp9 => vp9(payload),
        VideoCodec::Av1 => av1(payload),
    }
}

/// IDR slice, or SPS: encoders send SPS/PPS immediately before an IDR, so the SPS is the
/// earliest packet a decoder can usefully start from.
fn h264_nal_starts_key(nal_type: u8) -> bool {
    matches!(nal_type, 5 | 7)
}

fn h264(payload: &[u8]) -> bool {
    let [header, rest @ ..] = payload else {
        return false;
    };
    match header & 0x1f {
        24 => stap_a(rest),
        // Only the FU-A fragment with the start bit carries the NAL's beginning.
        28 => matches!(rest.first(), Some(&fu) if fu & 0x80 != 0 && h264_nal_starts_key(fu & 0x1f)),
        t => h264_nal_starts_key(t),
    }
}

fn stap_a(mut rest: &[u8]) -> bool {
    while let [hi, lo, tail @ ..] = rest {
        let size = usize::from(u16::from_be_bytes([*hi, *lo]));
        // A size running past the packet means the aggregate is corrupt; trust nothing after it.
        let Some((nal, next)) = tail.split_at_checked(size) else {
            return false;
        };
        if matches!(nal.first(), Some(&h) if h264_nal_starts_key(h & 0x1f)) {
            return true;
        }
        rest = next;
    }
    false
}

fn vp8(payload: &[u8]) -> bool {
    vp8_frame_start(payload).is_some_and(|frame| frame.first().is_some_and(|tag| tag & 0x01 == 0))
}

/// The VP8 frame itself (after the RTP payload descriptor, RFC 7741 §4.2)
/// when this packet carries its first bytes: the first partition's first
/// packet (S=1, PID=0). `None` for any other packet or a truncated
/// descriptor.
pub(crate) fn vp8_frame_start(payload: &[u8]) -> Option<&[u8]> {
    let &b0 = payload.first()?;
    if b0 & 0x10 == 0 || b0 & 0x07 != 0 {
        return None;
    }
    let mut at = 1;
    if b0 & 0x80 != 0 {
        let &ext = payload.get(at)?;
        at += 1;
        if ext & 0x80 != 0 {
            let &pid = payload.get(at)?;
            at += if pid & 0x80 != 0 { 2 } else { 1 };
        }
        if ext & 0x40 != 0 {
            at += 1;
        }
        // T and K share one byte (TID/Y/KEYIDX).
        if ext & 0x30 != 0 {
            at += 1;
        }
    }
    payload.get(at..).filter(|frame| !frame.is_empty())
}

fn vp9(payload: &[u8]) -> bool {
    let Some(&b0) = payload.first() else {
        return false;
    };
    // P=1 means inter-predicted; B=0 means not the first packet of the layer frame.
    if b0 & 0x40 != 0 || b0 & 0x08 == 0 {
        return false;
    }
    let mut at = 1;
    if b0 & 0x80 != 0 {
        let Some(&pid) = payload.get(at) else {
            return false;
        };
        at += if pid & 0x80 != 0 { 2 } else { 1 };
    }
    if b0 & 0x20 == 0 {
        // No layer indices: single spatial layer, so this is the base layer. Still require
        // the picture ID to be present so truncated descriptors are rejected uniformly.
        return payload.len() >= at;
    }
    let Some(&layers) = payload.get(at) else {
        return false;
    };
    // Non-flexible mode carries TL0PICIDX after the layer byte; require it so the
    // descriptor is known to be complete.
    let needed = if b0 & 0x10 == 0 { at + 2 } else { at + 1 };
    // P=0 on an upper spatial layer can be inter-layer prediction of a non-key picture,
    // so only the base spatial layer counts as a keyframe start.
    (layers >> 1) & 0x07 == 0 && payload.len() >= needed
}

/// Unsigned LEB128 as used by AV1, bounded to 8 bytes. Returns (value, bytes consumed).
fn leb128(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (i, &b) in bytes.iter().take(8).enumerate() {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

const OBU_SEQUENCE_HEADER: u8 = 1;

fn av1(payload: &[u8]) -> bool {
    let [agg, rest @ ..] = payload else {
        return false;
    };
    if agg & 0x08 != 0 {
        return true;
    }
    // Z=1: the first element continues an OBU from the previous packet, so its first byte
    // is not an OBU header.
    if agg & 0x80 != 0 {
        return false;
    }
    let element = if (agg >> 4) & 0x03 == 0 {
        match leb128(rest) {
            Some((len, n)) if len > 0 => rest.get(n..).unwrap_or_default(),
            _ => return false,
        }
    } else {
        rest
    };
    // The forbidden bit (0x80) must be zero in a valid OBU header.
    matches!(element.first(), Some(&h) if h & 0x80 == 0 && (h >> 3) & 0x0f == OBU_SEQUENCE_HEADER)
}

#[cfg(test)]
mod tests {
    use super::VideoCodec::{Av1, H264, Vp8, Vp9};
    use super::*;

    #[test]
    fn mime() {
        assert_eq!(VideoCodec::from_mime("video/H264"), Some(H264));
        assert_eq!(VideoCodec::from_mime("video/h264"), Some(H264));
        assert_eq!(VideoCodec::from_mime("video/VP8"), Some(Vp8));
        assert_eq!(VideoCodec::from_mime("video/VP9"), Some(Vp9));
        assert_eq!(VideoCodec::from_mime("video/AV1"), Some(Av1));
        assert_eq!(VideoCodec::from_mime("VIDEO/av1"), Some(Av1));
        assert_eq!(VideoCodec::from_mime("audio/opus"), None);
        assert_eq!(VideoCodec::from_mime("audio/H264"), None);
        assert_eq!(VideoCodec::from_mime("H264"), None);
    }

    #[test]
    fn empty_is_never_keyframe() {
        for c in [H264, Vp8, Vp9, Av1] {
            assert!(!starts_keyframe(c, &[]));
        }
    }

    #[test]
    fn h264_single_nal() {
        assert!(starts_keyframe(H264, &[0x65, 0x88, 0x84]));
        assert!(starts_keyframe(H264, &[0x67, 0x42, 0x00, 0x1f]));
        assert!(!starts_keyframe(H264, &[0x41, 0x9a, 0x00]));
        assert!(!starts_keyframe(H264, &[0x68, 0xce]));
    }

    #[test]
    fn h264_stap_a() {
        let sps_pps = [
            0x78, 0x00, 0x04, 0x67, 0x42, 0x00, 0x1f, 0x00, 0x02, 0x68, 0xce,
        ];
        assert!(starts_keyframe(H264, &sps_pps));
        // IDR in the second aggregated unit.
        assert!(starts_keyframe(
            H264,
            &[0x78, 0x00, 0x01, 0x06, 0x00, 0x02, 0x65, 0x88]
        ));
        assert!(!starts_keyframe(H264, &[0x78, 0x00, 0x02, 0x41, 0x9a]));
        // Truncated size field, and a size running past the end.
        assert!(!starts_keyframe(H264, &[0x78, 0x00]));
        assert!(!starts_keyframe(H264, &[0x78]));
        assert!(!starts_keyframe(H264, &[0x78, 0x00, 0x09, 0x67]));
    }

    #[test]
    fn h264_fu_a() {
        assert!(starts_keyframe(H264, &[0x7c, 0x85, 0x88, 0x84]));
        assert!(!starts_keyframe(H264, &[0x7c, 0x05, 0x11, 0x22]));
        assert!(!starts_keyframe(H264, &[0x7c, 0x45, 0x11]));
        assert!(!starts_keyframe(H264, &[0x7c, 0x81, 0x9a]));
        assert!(!starts_keyframe(H264, &[0x7c]));
    }

    #[test]
    fn vp8() {
        // No extension, S=1, PID=0, frame tag 0x50 (P=0).
        assert!(starts_keyframe(
            Vp8,
            &[0x10, 0x50, 0x02, 0x00, 0x9d, 0x01, 0x2a]
        ));
        // X, I with 15-bit picture ID.
        assert!(starts_keyframe(Vp8, &[0x90, 0x80, 0x81, 0x23, 0x50]));
        // X, I (7-bit), L, T.
        assert!(starts_keyframe(Vp8, &[0x90, 0xe0, 0x12, 0x05, 0x40, 0x50]));
        // Only K set: still one extra byte.
        assert!(starts_keyframe(Vp8, &[0x90, 0x10, 0x40, 0x50]));
        // Interframe.
        assert!(!starts_keyframe(Vp8, &[0x90, 0x80, 0x81, 0x23, 0x51]));
        // S=0, and S=1 but PID=1.
        assert!(!starts_keyframe(Vp8, &[0x80, 0x80, 0x81, 0x23, 0x50]));
        assert!(!starts_keyframe(Vp8, &[0x11, 0x50]));
        // Truncated descriptors.
        for p in [
            &[0x90][..],
            &[0x90, 0x80],
            &[0x90, 0x80, 0x81],
            &[0x90, 0x80, 0x81, 0x23],
            &[0x10],
        ] {
            assert!(!starts_keyframe(Vp8, p), "{p:02x?}");
        }
    }

    #[test]
    fn vp9() {
        // I (15-bit pid) + B, no layers.
        assert!(starts_keyframe(Vp9, &[0x88, 0x81, 0x23, 0x00]));
        // I + L + B, non-flexible, SID=0, TL0PICIDX present.
        assert!(starts_keyframe(Vp9, &[0xa8, 0x05, 0x00, 0x07, 0x00]));
        // Inter, and not the start of the frame.
        assert!(!starts_keyframe(Vp9, &[0xc8, 0x81, 0x23, 0x00]));
        assert!(!starts_keyframe(Vp9, &[0x80, 0x81, 0x23, 0x00]));
        // SID=1 in non-flexible and flexible modes.
        assert!(!starts_keyframe(Vp9, &[0xa8, 0x05, 0x02, 0x07, 0x00]));
        assert!(!starts_keyframe(Vp9, &[0xb8, 0x05, 0x02, 0x00]));
        // Truncated: missing picture ID byte, missing layer byte, missing TL0PICIDX.
        assert!(!starts_keyframe(Vp9, &[0x88, 0x81]));
        assert!(!starts_keyframe(Vp9, &[0xa8, 0x05]));
        assert!(!starts_keyframe(Vp9, &[0xa8, 0x05, 0x00]));
    }

    #[test]
    fn av1() {
        // N=1 (with W=1).
        assert!(starts_keyframe(Av1, &[0x18, 0x32, 0x00]));
        // W=0: LEB128 length 11 then a sequence header OBU.
        assert!(starts_keyframe(Av1, &[0x00, 0x0b, 0x08, 0x00, 0x00]));
        // W=0 with a two-byte LEB128 length (128).
        assert!(starts_keyframe(Av1, &[0x00, 0x80, 0x01, 0x08, 0x00]));
        // W=1: no length, sequence header with has_size_field.
        assert!(starts_keyframe(Av1, &[0x10, 0x0a, 0x0b, 0x00]));
        // Ordinary OBU_FRAME, a continuation (Z=1), zero-length element, bad LEB128.
        assert!(!starts_keyframe(Av1, &[0x10, 0x32, 0x00]));
        assert!(!starts_keyframe(Av1, &[0x90, 0x0a, 0x0b]));
        assert!(!starts_keyframe(Av1, &[0x00, 0x00, 0x08]));
        assert!(!starts_keyframe(
            Av1,
            &[0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x08]
        ));
        assert!(!starts_keyframe(Av1, &[0x00, 0x0b]));
        assert!(!starts_keyframe(Av1, &[0x10]));
    }

    #[test]
    fn never_panics() {
        let codecs = [H264, Vp8, Vp9, Av1];
        for a in 0..=255u8 {
            for c in codecs {
                let _ = starts_keyframe(c, &[a]);
            }
            for b in 0..=255u8 {
                for c in codecs {
                    let _ = starts_keyframe(c, &[a, b]);
                }
            }
        }
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut buf = [0u8; 32];
        for _ in 0..5000 {
            let len = (next() % 33) as usize;
            for byte in buf.iter_mut() {
                *byte = next() as u8;
            }
            for c in codecs {
                let _ = starts_keyframe(c, buf.get(..len).unwrap_or_default());
            }
        }
    }
}
