//! An IP camera's H.264 RTP payloads as the puller fits them for WebRTC
//! (parameter sets before IDRs, big NAL units and fragments cut up). The
//! input is a run of records: a 16-bit length, a byte whose low bit is the
//! marker, then that many payload bytes. Properties: never a panic, and
//! no output payload bigger than WebRTC's limit.
#![no_main]
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use vigil_gateway::camera::h264::{Fitter, MAX_PAYLOAD};

fuzz_target!(|data: &[u8]| {
    let mut fitter = Fitter::new(&[0x67, 0x42, 0xc0, 0x1e], &[0x68, 0xce, 0x3c, 0x80]);
    let mut out = Vec::new();
    let mut rest = data;
    let mut timestamp = 0u32;
    while rest.len() >= 3 {
        let len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
        let marker = rest[2] & 1 == 1;
        let end = (3 + len).min(rest.len());
        let payload = Bytes::copy_from_slice(&rest[3..end]);
        rest = &rest[end..];
        out.clear();
        fitter.push(payload, timestamp, marker, &mut out);
        assert!(out.iter().all(|o| o.payload.len() <= MAX_PAYLOAD));
        if marker {
            timestamp = timestamp.wrapping_add(3000);
        }
    }
});
