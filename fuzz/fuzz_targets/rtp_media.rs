//! An RTP packet from a publisher, after SRTP: webrtc-rs's parser, then
//! what Vigil reads from it on the forwarding path (is it the start of a
//! keyframe, the picture size in a keyframe, for every video codec) and the
//! header rewrite each viewer gets. Property: never a panic.
#![no_main]
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use rtc::shared::marshal::Unmarshal;
use vigil_gateway::sfu::keyframe::{VideoCodec, starts_keyframe};
use vigil_gateway::sfu::picture_size::keyframe_size;
use vigil_gateway::sfu::rewrite::Rewriter;

fuzz_target!(|data: &[u8]| {
    let Ok(mut packet) = rtc::rtp::packet::Packet::unmarshal(&mut &data[..]) else {
        return;
    };
    for codec in [
        VideoCodec::H264,
        VideoCodec::Vp8,
        VideoCodec::Vp9,
        VideoCodec::Av1,
    ] {
        if starts_keyframe(codec, &packet.payload) {
            let _ = keyframe_size(codec, &packet.payload);
        }
    }
    let start = Instant::now();
    let mut rewriter = Rewriter::new(0x1234_5678, 96, 90_000);
    rewriter.rewrite(&mut packet.header.clone(), start);
    rewriter.rebase();
    rewriter.rewrite(&mut packet.header, start + Duration::from_millis(33));
    let _ = rewriter.source_seq(packet.header.sequence_number);
});
