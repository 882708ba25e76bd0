//! SRTP with AEAD_AES_128_GCM (RFC 7714) for the fast path's RTP, sealed
//! in place into the caller's buffer.
//!
//! `rtc-srtp`'s `Context` seals into a fresh buffer of its own (the packet
//! is copied into it, then the caller copies the result into its send
//! batch) and looks each SSRC's rollover state up in a map. The fast path
//! seals tens of thousands of datagrams a second straight into its GSO
//! batch, so for the profile `rtc` negotiates first it does the AEAD
//! itself: the session key and salt derived as RFC 3711 §4.3.1 says (the
//! AES-CM PRF, one block each), the header written into the batch as the
//! associated data, the payload copied once after it and encrypted in
//! place, the tag appended. Other profiles keep going through `Context`.
//! A test checks every byte against `Context` across a sequence-number
//! wrap and a retransmission from before it.

use rtc::crypto::{AeadAlgorithm, AeadCipher, BlockCipherAlgorithm, RTCCrypto};
use rtc::rtp::header::Header;
use rtc::shared::error::{Error, Result};
use rtc::shared::marshal::{Marshal, MarshalSize};

/// The authentication tag's length (RFC 7714 §14.2: 16 octets).
pub const TAG_LEN: usize = 16;
const KEY_LEN: usize = 16;
const SALT_LEN: usize = 12;
/// RFC 3711 §4.3.2 labels.
const LABEL_ENCRYPTION: u8 = 0x00;
const LABEL_SALT: u8 = 0x02;

/// A sender's AEAD_AES_128_GCM context for RTP.
pub struct GcmSealer {
    cipher: Box<dyn AeadCipher>,
    salt: [u8; SALT_LEN],
    /// Each SSRC sent, with the highest packet index (rollover counter and
    /// sequence number) sealed for it. A viewer has a handful of SSRCs.
    streams: Vec<(u32, u64)>,
}

impl GcmSealer {
    /// A context for the master `key` (16 octets) and `salt` (12 octets)
    /// that DTLS exported.
    pub fn new(crypto: &dyn RTCCrypto, key: &[u8], salt: &[u8]) -> Result<Self> {
        if key.len() != KEY_LEN || salt.len() != SALT_LEN {
            return Err(Error::Other(format!(
                "AEAD_AES_128_GCM wants a {KEY_LEN}-octet key and {SALT_LEN}-octet salt, got {} and {}",
                key.len(),
                salt.len()
            )));
        }
        let session_key = derive(crypto, LABEL_ENCRYPTION, key, salt)?;
        let session_salt = derive(crypto, LABEL_SALT, key, salt)?;
        let cipher = crypto
            .new_aead(AeadAlgorithm::Aes128Gcm, &session_key)
            .map_err(|e| Error::Other(format!("AES-128-GCM: {e:?}")))?;
        let mut salt = [0; SALT_LEN];
        salt.copy_from_slice(&session_salt[..SALT_LEN]);
        Ok(GcmSealer {
            cipher,
            salt,
            streams: Vec::new(),
        })
    }

    /// Appends the SRTP datagram of the RTP packet `header` + `payload` to
    /// `out`: header, encrypted payload, tag. On error `out` is as it was.
    pub fn seal_into(&mut self, header: &Header, payload: &[u8], out: &mut Vec<u8>) -> Result<()> {
        let roc = self.rollover_counter(header.ssrc, header.sequence_number);
        let start = out.len();
        let header_len = header.marshal_size();
        out.resize(start + header_len, 0);
        if let Err(e) = header.marshal_to(&mut out[start..]) {
            out.truncate(start);
            return Err(e);
        }
        out.extend_from_slice(payload);
        let mut nonce = [0u8; SALT_LEN];
        nonce[2..6].copy_from_slice(&header.ssrc.to_be_bytes());
        nonce[6..10].copy_from_slice(&roc.to_be_bytes());
        nonce[10..12].copy_from_slice(&header.sequence_number.to_be_bytes());
        for (n, s) in nonce.iter_mut().zip(self.salt) {
            *n ^= s;
        }
        let mut tag = [0u8; TAG_LEN];
        let (aad, body) = out[start..].split_at_mut(header_len);
        if let Err(e) = self.cipher.seal_in_place(&nonce, aad, body, &mut tag) {
            out.truncate(start);
            return Err(Error::Other(format!("AES-128-GCM seal: {e:?}")));
        }
        out.extend_from_slice(&tag);
        Ok(())
    }

    /// The rollover counter of `seq` on `ssrc` (RFC 3711 §3.3.1: the index
    /// closest to the highest one sealed, so a retransmission from before a
    /// wrap keeps the counter it was first sent with), remembering the
    /// highest index.
    fn rollover_counter(&mut self, ssrc: u32, seq: u16) -> u32 {
        let stream = match self.streams.iter().position(|(s, _)| *s == ssrc) {
            Some(i) => &mut self.streams[i],
            None => {
                // The first packet of a stream starts its counter at zero.
                self.streams.push((ssrc, u64::from(seq)));
                return 0;
            }
        };
        let highest = stream.1;
        let roc = highest >> 16;
        let index = [roc.wrapping_sub(1), roc, roc + 1]
            .into_iter()
            .filter(|r| *r <= u64::from(u32::MAX))
            .map(|r| (r << 16) | u64::from(seq))
            .min_by_key(|i| i.abs_diff(highest))
            .expect("the current counter is always a candidate");
        stream.1 = highest.max(index);
        (index >> 16) as u32
    }
}

/// One session key or salt: the AES-CM PRF of RFC 3711 §4.3.3 keyed with
/// the master key, its input the master salt with `label` at octet 7
/// (key derivation rate 0, as DTLS-SRTP uses). One block covers both the
/// 16-octet key and the 12-octet salt.
fn derive(crypto: &dyn RTCCrypto, label: u8, key: &[u8], salt: &[u8]) -> Result<[u8; 16]> {
    let mut block = [0u8; 16];
    block[..salt.len()].copy_from_slice(salt);
    block[7] ^= label;
    crypto
        .block_encrypt(BlockCipherAlgorithm::Aes128, key, &mut block)
        .map_err(|e| Error::Other(format!("AES-CM PRF: {e:?}")))?;
    Ok(block)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::srtp::context::Context;
    use rtc::srtp::protection_profile::ProtectionProfile;

    const KEY: [u8; 16] = [
        0x0d, 0xcd, 0x21, 0x3e, 0x4c, 0xbc, 0xf2, 0x8f, 0x01, 0x7f, 0x69, 0x94, 0x40, 0x1e, 0x28,
        0x89,
    ];
    const SALT: [u8; 12] = [
        0x62, 0x77, 0x60, 0x38, 0xc0, 0x6d, 0xc9, 0x41, 0x9f, 0x6d, 0xd9, 0x43,
    ];

    fn header(ssrc: u32, seq: u16, marker: bool) -> Header {
        Header {
            version: 2,
            marker,
            payload_type: 102,
            sequence_number: seq,
            timestamp: u32::from(seq).wrapping_mul(3000),
            ssrc,
            ..Default::default()
        }
    }

    #[test]
    fn every_byte_matches_rtc_srtp_across_a_wrap_and_a_late_repair() {
        let provider = rtc::crypto::default_provider().expect("crypto provider");
        let mut ours = GcmSealer::new(provider.crypto(), &KEY, &SALT).expect("sealer");
        let mut theirs = Context::new(
            &KEY,
            &SALT,
            ProtectionProfile::AeadAes128Gcm,
            None,
            None,
            provider.crypto(),
        )
        .expect("context");
        // Two streams; the video one wraps, then an audio packet, then a
        // repair of a packet from before the wrap, then more after it.
        let sends = [
            (1, 65533),
            (1, 65534),
            (2, 7),
            (1, 65535),
            (1, 0),
            (1, 1),
            (2, 8),
            (1, 65534),
            (1, 2),
        ];
        for (i, (ssrc, seq)) in sends.into_iter().enumerate() {
            let header = header(ssrc, seq, i % 3 == 0);
            let payload: Vec<u8> = (0..200 + i).map(|b| b as u8).collect();
            let mut plain = vec![0u8; header.marshal_size()];
            header.marshal_to(&mut plain).expect("header");
            plain.extend_from_slice(&payload);
            let expected = theirs
                .encrypt_rtp_with_header(&plain, &header)
                .expect("rtc-srtp seals");

            let mut out = b"earlier datagram".to_vec();
            ours.seal_into(&header, &payload, &mut out).expect("seals");
            assert_eq!(&out[..16], b"earlier datagram", "appends");
            assert_eq!(&out[16..], &expected[..], "send {i}: ssrc {ssrc} seq {seq}");
        }
    }

    #[test]
    fn rollover_counter_follows_the_highest_index_sealed() {
        let provider = rtc::crypto::default_provider().expect("crypto provider");
        let mut s = GcmSealer::new(provider.crypto(), &KEY, &SALT).expect("sealer");
        assert_eq!(s.rollover_counter(9, 65000), 0);
        assert_eq!(s.rollover_counter(9, 10), 1, "wrapped");
        assert_eq!(
            s.rollover_counter(9, 65100),
            0,
            "late, from before the wrap"
        );
        assert_eq!(s.rollover_counter(9, 20), 1);
        assert_eq!(
            s.rollover_counter(7, 20),
            0,
            "another stream starts at zero"
        );
    }

    #[test]
    fn wrong_key_sizes_are_refused() {
        let provider = rtc::crypto::default_provider().expect("crypto provider");
        assert!(GcmSealer::new(provider.crypto(), &KEY[..15], &SALT).is_err());
        assert!(GcmSealer::new(provider.crypto(), &KEY, &[0; 14]).is_err());
    }
}
