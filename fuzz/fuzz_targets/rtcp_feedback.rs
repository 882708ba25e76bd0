//! An RTCP compound packet from a viewer or publisher, after SRTCP:
//! webrtc-rs's parser, then what Vigil reads from each packet (is it a
//! keyframe request, the reception report a receiver report gives for a
//! stream, and the round trip its LSR/DLSR make against a clock taken from
//! the input too).
//! Property: never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vigil_gateway::sfu::reception::round_trip;
use vigil_gateway::sfu::rtcp::{is_keyframe_request, reception_report};

fuzz_target!(|data: &[u8]| {
    let Ok(packets) = rtc::rtcp::packet::unmarshal(&mut &data[..]) else {
        return;
    };
    // The server's NTP clock at the report: any value, from the input.
    let ntp_now = data
        .iter()
        .rev()
        .take(8)
        .fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
    for packet in &packets {
        let _ = is_keyframe_request(packet.as_ref());
        for ssrc in packet.destination_ssrc() {
            if let Some(report) = reception_report(packet.as_ref(), ssrc) {
                let _ = round_trip(ntp_now, report.last_sender_report, report.delay);
            }
        }
    }
});
