//! A bearer token from `Authorization` (WHIP/WHEP, gRPC): verified against
//! the server's key. Property: never a panic, and nothing the fuzzer makes
//! verifies unless it carries a signature made with the key (the seed
//! corpus holds such tokens; their claims must then be well-formed).
#![no_main]
use libfuzzer_sys::fuzz_target;
use vigil_control::token::TokenSigner;

/// The key the seed tokens were signed with (fuzz/run.sh's seeds).
const SECRET: &[u8] = b"vigil-fuzz-signing-secret-0123456789";

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    let signer = TokenSigner::new(SECRET);
    if let Ok(claims) = signer.verify(token, 1_700_000_000) {
        // A verified token re-signs and verifies to the same claims.
        let again = signer.sign(&claims).expect("claims that verified sign");
        let back = signer
            .verify(&again, 1_700_000_000)
            .expect("re-signed verifies");
        assert_eq!(format!("{claims:?}"), format!("{back:?}"));
    }
});
