//! An RTCP compound packet from a viewer or publisher, after SRTCP:
//! webrtc-rs's parser, then what Vigil reads from each packet (is it a
//! keyframe request, the loss a receiver report gives for a stream).
//! Property: never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vigil_gateway::sfu::rtcp::{fraction_lost, is_keyframe_request};

fuzz_target!(|data: &[u8]| {
    let Ok(packets) = rtc::rtcp::packet::unmarshal(&mut &data[..]) else {
        return;
    };
    for packet in &packets {
        let _ = is_keyframe_request(packet.as_ref());
        for ssrc in packet.destination_ssrc() {
            let _ = fraction_lost(packet.as_ref(), ssrc);
        }
    }
});
