//! A PATCH body (`application/trickle-ice-sdpfrag`, RFC 8840): parsed, and
//! when it parses, its candidates are what the handler checks.
//! Property: never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vigil_gateway::http::sdpfrag::SdpFrag;

fuzz_target!(|data: &[u8]| {
    let Ok(body) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(frag) = SdpFrag::parse(body) {
        let _ = format!("{frag:?}");
    }
});
