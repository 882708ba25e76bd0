//! H.264 for the publisher: Annex-B parsing into access units, RTP
//! packetization (RFC 6184 single NAL unit and FU-A), and padding NAL units
//! that bring a frame up to the chosen bitrate.

/// RTP payload budget per packet, as browsers use.
pub const MAX_PAYLOAD: usize = 1200;

const NAL_SLICE: u8 = 1;
const NAL_IDR: u8 = 5;
const NAL_SEI: u8 = 6;
const STAP_A: u8 = 24;
const FU_A: u8 = 28;

/// The smallest padding NAL unit [`padding_sei`] builds.
pub const MIN_PADDING: usize = 3 + UUID.len() + COUNTER_BYTES + 1;

/// Marks our user-data SEI; decoders skip user data with a UUID they do not know.
const UUID: [u8; 16] = *b"vigil-bench-pad!";
/// A 63-bit counter, 7 bits per byte with the high bit set: never a zero
/// byte, so never a start-code emulation.
const COUNTER_BYTES: usize = 9;

/// One coded picture: its non-VCL NAL units (SPS, PPS, SEI), then its slice.
#[derive(Debug)]
pub struct AccessUnit {
    pub prefix: Vec<Vec<u8>>,
    pub slice: Vec<u8>,
}

impl AccessUnit {
    pub fn is_keyframe(&self) -> bool {
        self.slice[0] & 0x1f == NAL_IDR
    }

    /// NAL unit bytes, the measure the publisher pads against.
    pub fn len(&self) -> usize {
        self.prefix.iter().map(Vec::len).sum::<usize>() + self.slice.len()
    }
}

/// The NAL units of an Annex-B stream, without start codes.
pub fn nal_units(stream: &[u8]) -> Vec<&[u8]> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= stream.len() {
        if stream[i..i + 3] == [0, 0, 1] {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    let mut nals = Vec::with_capacity(starts.len());
    for (k, &start) in starts.iter().enumerate() {
        let mut end = starts.get(k + 1).map_or(stream.len(), |next| next - 3);
        // A 4-byte start code leaves its leading zero on the previous unit.
        while end > start && stream[end - 1] == 0 {
            end -= 1;
        }
        if end > start {
            nals.push(&stream[start..end]);
        }
    }
    nals
}

/// Groups NAL units into access units. Assumes one slice per picture, which
/// holds for the fixture (x264 without `slices`); a trailing run of non-VCL
/// units with no slice after it is dropped.
pub fn access_units(stream: &[u8]) -> Vec<AccessUnit> {
    let mut units = Vec::new();
    let mut prefix = Vec::new();
    for nal in nal_units(stream) {
        match nal[0] & 0x1f {
            NAL_SLICE | NAL_IDR => units.push(AccessUnit {
                prefix: std::mem::take(&mut prefix),
                slice: nal.to_vec(),
            }),
            _ => prefix.push(nal.to_vec()),
        }
    }
    units
}

/// Appends the RTP payloads carrying `nal`: the unit itself when it fits,
/// FU-A fragments otherwise.
pub fn packetize(nal: &[u8], out: &mut Vec<Vec<u8>>) {
    if nal.len() <= MAX_PAYLOAD {
        out.push(nal.to_vec());
        return;
    }
    let indicator = (nal[0] & 0xe0) | FU_A;
    let kind = nal[0] & 0x1f;
    let body = &nal[1..];
    let chunks = body.chunks(MAX_PAYLOAD - 2);
    let last = chunks.len() - 1;
    for (i, chunk) in chunks.enumerate() {
        let mut header = kind;
        if i == 0 {
            header |= 0x80;
        }
        if i == last {
            header |= 0x40;
        }
        let mut payload = Vec::with_capacity(chunk.len() + 2);
        payload.extend_from_slice(&[indicator, header]);
        payload.extend_from_slice(chunk);
        out.push(payload);
    }
}

/// One STAP-A payload aggregating `nals`, if it fits in a packet.
pub fn stap_a(nals: &[&[u8]]) -> Option<Vec<u8>> {
    let len = 1 + nals.iter().map(|n| 2 + n.len()).sum::<usize>();
    if len > MAX_PAYLOAD {
        return None;
    }
    // F is 0; NRI is the highest of the aggregated units'.
    let nri = nals.iter().map(|n| n[0] & 0x60).max().unwrap_or(0);
    let mut payload = Vec::with_capacity(len);
    payload.push(nri | STAP_A);
    for nal in nals {
        payload.extend_from_slice(&(nal.len() as u16).to_be_bytes());
        payload.extend_from_slice(nal);
    }
    Some(payload)
}

/// A user-data-unregistered SEI NAL unit of `max_len` bytes, or one less
/// where the size field's length steps up (`max_len` from [`MIN_PADDING`] to
/// [`MAX_PAYLOAD`]). It carries `counter`, so no two padding packets have the
/// same payload.
pub fn padding_sei(max_len: usize, counter: u64) -> Vec<u8> {
    debug_assert!((MIN_PADDING..=MAX_PAYLOAD).contains(&max_len));
    // NAL header, payload type, size (255s then the rest), payload, trailing bits.
    let size_bytes = |payload: usize| payload / 255 + 1;
    let mut payload = max_len - 3;
    while 2 + size_bytes(payload) + payload + 1 > max_len {
        payload -= 1;
    }
    let mut sei = Vec::with_capacity(max_len);
    sei.extend_from_slice(&[NAL_SEI, 5]);
    sei.extend(std::iter::repeat_n(0xff, payload / 255));
    sei.push((payload % 255) as u8);
    let end = sei.len() + payload;
    sei.extend_from_slice(&UUID);
    for i in 0..COUNTER_BYTES {
        sei.push(0x80 | ((counter >> (7 * i)) & 0x7f) as u8);
    }
    sei.resize(end, 0xaa);
    sei.push(0x80);
    sei
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether an RTP payload starts an IDR picture: its SPS, or the first
    /// fragment of its slice.
    fn starts_keyframe(payload: &[u8]) -> bool {
        match payload.first().map(|b| b & 0x1f) {
            Some(7) | Some(NAL_IDR) => true,
            Some(FU_A) => payload
                .get(1)
                .is_some_and(|h| h & 0x80 != 0 && h & 0x1f == NAL_IDR),
            _ => false,
        }
    }

    const FIXTURE: &[u8] = include_bytes!("../fixtures/video.h264");

    #[test]
    fn fixture_has_120_pictures_and_an_idr_every_60() {
        let units = access_units(FIXTURE);
        assert_eq!(units.len(), 120);
        let keys: Vec<usize> = (0..units.len())
            .filter(|&i| units[i].is_keyframe())
            .collect();
        assert_eq!(keys, [0, 60]);
        // SPS and PPS precede each IDR.
        for &k in &keys {
            let kinds: Vec<u8> = units[k].prefix.iter().map(|n| n[0] & 0x1f).collect();
            assert!(kinds.starts_with(&[7, 8]), "{kinds:?}");
        }
    }

    #[test]
    fn four_byte_start_codes_do_not_leak_zeros() {
        let stream = [
            0, 0, 0, 1, 0x67, 1, 2, 0, 0, 0, 1, 0x68, 3, 0, 0, 1, 0x65, 4,
        ];
        let nals = nal_units(&stream);
        assert_eq!(nals, [&[0x67, 1, 2][..], &[0x68, 3], &[0x65, 4]]);
    }

    #[test]
    fn fu_a_fragments_reassemble() {
        let nal: Vec<u8> = std::iter::once(0x65)
            .chain((0..3000u32).map(|i| (i % 251) as u8))
            .collect();
        let mut out = Vec::new();
        packetize(&nal, &mut out);
        assert_eq!(out.len(), 3);
        assert!(out.iter().all(|p| p.len() <= MAX_PAYLOAD));
        assert!(starts_keyframe(&out[0]));
        assert!(!starts_keyframe(&out[1]));
        assert_eq!(out[2][1] & 0x40, 0x40);
        let mut back = vec![(out[0][0] & 0xe0) | (out[0][1] & 0x1f)];
        for p in &out {
            back.extend_from_slice(&p[2..]);
        }
        assert_eq!(back, nal);
    }

    #[test]
    fn stap_a_carries_sizes_and_the_highest_nri() {
        let sps = [0x67, 1, 2, 3];
        let sei = [0x06, 5, 1, 0x80];
        let stap = stap_a(&[&sps, &sei]).unwrap();
        assert_eq!(stap, [0x78, 0, 4, 0x67, 1, 2, 3, 0, 4, 0x06, 5, 1, 0x80]);
        assert!(stap_a(&[&[0x65; MAX_PAYLOAD]]).is_none());
    }

    #[test]
    fn padding_has_the_asked_length_and_no_start_code_emulation() {
        for len in [MIN_PADDING, 100, 257, 258, 259, 260, 1000, MAX_PAYLOAD] {
            let sei = padding_sei(len, u64::MAX >> 1);
            assert!(sei.len() == len || sei.len() == len - 1, "len {len}");
            assert_eq!(sei[0] & 0x1f, NAL_SEI);
            assert!(
                sei.windows(3)
                    .all(|w| !(w[0] == 0 && w[1] == 0 && w[2] <= 3))
            );
            // The declared payload size matches what follows.
            let mut i = 2;
            let mut size = 0;
            while sei[i] == 0xff {
                size += 255;
                i += 1;
            }
            size += sei[i] as usize;
            assert_eq!(i + 1 + size + 1, sei.len(), "len {len}");
        }
        assert_ne!(padding_sei(100, 1), padding_sei(100, 2));
    }
}
