//! A WHIP/WHEP POST body: the SDP parser Vigil runs on an untrusted offer
//! and the codec choice made from it, for publishing and for playing.
//! Property: never a panic; an offer either parses into sections or is
//! refused with an error (a 400/422 to the client).
#![no_main]
use libfuzzer_sys::fuzz_target;
use vigil_gateway::sfu::codecs;

fuzz_target!(|data: &[u8]| {
    let Ok(sdp) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(sections) = codecs::parse_offer(sdp) else {
        return;
    };
    if let Ok(published) = codecs::choose_for_publish(&sections) {
        // A viewer offering the same sections plays what was published.
        let _ = codecs::choose_for_play(&sections, &published);
    }
});
