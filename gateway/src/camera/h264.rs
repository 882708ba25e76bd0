//! A camera's H.264 RTP payloads (RFC 6184) made fit for WebRTC viewers,
//! without reassembling frames:
//!
//! - **Parameter sets with every keyframe.** Many cameras send SPS and PPS
//!   only in the SDP (`sprop-parameter-sets`), or only now and then. A
//!   browser needs them in band before the IDR it starts from, and so do
//!   the shard's keyframe cache and fast start (a keyframe they keep must
//!   decode on its own). The latest SPS/PPS (from the SDP, then from the
//!   stream) go in a STAP-A before each IDR whose access unit did not
//!   carry them.
//! - **Packets no larger than WebRTC's.** Over interleaved TCP a camera
//!   may send a whole NAL unit in one packet (tens of kilobytes). A packet
//!   whose payload exceeds [`MAX_PAYLOAD`] is split: a single NAL unit into
//!   FU-A fragments, an FU-A fragment into smaller ones (start and end bits
//!   kept on the first and last), a STAP-A into its NAL units.
//! - **Packetization mode 1 only.** STAP-B, MTAP and FU-B (interleaved
//!   mode) are dropped and counted; WebRTC does not negotiate mode 2.
//!
//! Pure: payloads in, payloads out, unit-tested and fuzzed.

use bytes::{BufMut, Bytes, BytesMut};

/// The most payload bytes a packet to a viewer carries: with the RTP
/// header (12), the SRTP tag (16) and IPv6/UDP headers (48) a datagram
/// stays under 1,280 bytes, the smallest IPv6 MTU.
pub const MAX_PAYLOAD: usize = 1200;

const NAL_IDR: u8 = 5;
const NAL_SPS: u8 = 7;
const NAL_PPS: u8 = 8;
const STAP_A: u8 = 24;
const FU_A: u8 = 28;

/// One output payload and whether it ends its access unit (the marker).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Out {
    /// RTP payload.
    pub payload: Bytes,
    /// Carries the RTP marker bit.
    pub marker: bool,
}

/// The state of one H.264 stream.
#[derive(Debug, Default)]
pub struct Fitter {
    sps: Option<Bytes>,
    pps: Option<Bytes>,
    /// The RTP timestamp of the access unit that carried SPS and PPS in
    /// band (no STAP-A is added to it).
    params_seen_at: Option<u32>,
    /// Packets dropped: malformed, or of interleaved mode.
    pub dropped: u64,
}

impl Fitter {
    /// A stream whose SDP gave these parameter sets (either may be empty).
    pub fn new(sps: &[u8], pps: &[u8]) -> Self {
        let keep = |nal: &[u8]| (!nal.is_empty()).then(|| Bytes::copy_from_slice(nal));
        Fitter {
            sps: keep(sps),
            pps: keep(pps),
            params_seen_at: None,
            dropped: 0,
        }
    }

    /// The payloads to send for one received payload, in order.
    pub fn push(&mut self, payload: Bytes, timestamp: u32, marker: bool, out: &mut Vec<Out>) {
        let Some(&first) = payload.first() else {
            self.dropped += 1;
            return;
        };
        let nal_type = first & 0x1f;
        let start = out.len();
        match nal_type {
            1..=23 => {
                self.learn(&payload, timestamp);
                if nal_type == NAL_IDR {
                    self.parameter_sets(timestamp, out);
                }
                fragment_nal(&payload, out);
            }
            STAP_A => {
                let Some(nals) = stap_a_units(&payload) else {
                    self.dropped += 1;
                    return;
                };
                for nal in &nals {
                    self.learn(nal, timestamp);
                }
                if nals.iter().any(|nal| nal[0] & 0x1f == NAL_IDR) {
                    self.parameter_sets(timestamp, out);
                }
                if payload.len() <= MAX_PAYLOAD {
                    out.push(Out {
                        payload,
                        marker: false,
                    });
                } else {
                    for nal in &nals {
                        fragment_nal(nal, out);
                    }
                }
            }
            FU_A => {
                if payload.len() < 2 {
                    self.dropped += 1;
                    return;
                }
                let fu_header = payload[1];
                let starts = fu_header & 0x80 != 0;
                if starts && fu_header & 0x1f == NAL_IDR {
                    self.parameter_sets(timestamp, out);
                }
                refragment(&payload, out);
            }
            _ => {
                // 0, 25 (STAP-B), 26 (MTAP16), 27 (MTAP24), 29 (FU-B), 30, 31.
                self.dropped += 1;
                return;
            }
        }
        if marker && let Some(last) = out[start..].last_mut() {
            last.marker = true;
        }
    }

    /// Keeps in-band parameter sets (the latest win).
    fn learn(&mut self, nal: &[u8], timestamp: u32) {
        match nal[0] & 0x1f {
            NAL_SPS => {
                self.sps = Some(Bytes::copy_from_slice(nal));
                self.params_seen_at = Some(timestamp);
            }
            NAL_PPS => {
                self.pps = Some(Bytes::copy_from_slice(nal));
                self.params_seen_at = Some(timestamp);
            }
            _ => {}
        }
    }

    /// A STAP-A of SPS and PPS before an IDR, unless its access unit had
    /// them in band.
    fn parameter_sets(&mut self, timestamp: u32, out: &mut Vec<Out>) {
        if self.params_seen_at == Some(timestamp) {
            return;
        }
        let (Some(sps), Some(pps)) = (&self.sps, &self.pps) else {
            return; // nothing known yet: the IDR goes alone
        };
        self.params_seen_at = Some(timestamp);
        if 1 + 4 + sps.len() + pps.len() > MAX_PAYLOAD {
            // Parameter sets that big are not a camera's, but keep the
            // packet size promise: each goes on its own.
            let (sps, pps) = (sps.clone(), pps.clone());
            fragment_nal(&sps, out);
            fragment_nal(&pps, out);
            return;
        }
        let mut stap = BytesMut::with_capacity(1 + 4 + sps.len() + pps.len());
        // F=0, NRI = the highest of the two, type 24.
        stap.put_u8((sps[0] | pps[0]) & 0x60 | STAP_A);
        for nal in [sps, pps] {
            stap.put_u16(nal.len() as u16);
            stap.put_slice(nal);
        }
        out.push(Out {
            payload: stap.freeze(),
            marker: false,
        });
    }
}

/// The NAL units of a STAP-A payload; `None` if a length overruns it.
fn stap_a_units(payload: &Bytes) -> Option<Vec<Bytes>> {
    let mut units = Vec::new();
    let mut at = 1;
    while at < payload.len() {
        let len_bytes = payload.get(at..at + 2)?;
        let len = usize::from(u16::from_be_bytes([len_bytes[0], len_bytes[1]]));
        at += 2;
        if len == 0 || at + len > payload.len() {
            return None;
        }
        units.push(payload.slice(at..at + len));
        at += len;
    }
    (!units.is_empty()).then_some(units)
}

/// One NAL unit as a single-NAL packet, or as FU-A fragments if it is too
/// big for one.
fn fragment_nal(nal: &Bytes, out: &mut Vec<Out>) {
    if nal.len() <= MAX_PAYLOAD {
        out.push(Out {
            payload: nal.clone(),
            marker: false,
        });
        return;
    }
    let header = nal[0];
    let indicator = header & 0xe0 | FU_A;
    let nal_type = header & 0x1f;
    fu_pieces(indicator, nal_type, &nal[1..], true, true, out);
}

/// An FU-A fragment, split again if it is too big.
fn refragment(payload: &Bytes, out: &mut Vec<Out>) {
    if payload.len() <= MAX_PAYLOAD {
        out.push(Out {
            payload: payload.clone(),
            marker: false,
        });
        return;
    }
    let (indicator, fu_header) = (payload[0], payload[1]);
    let starts = fu_header & 0x80 != 0;
    let ends = fu_header & 0x40 != 0;
    fu_pieces(
        indicator,
        fu_header & 0x1f,
        &payload[2..],
        starts,
        ends,
        out,
    );
}

/// `data` (a NAL unit's bytes after its header, or part of them) as FU-A
/// fragments; the first carries the start bit if `starts`, the last the
/// end bit if `ends`.
fn fu_pieces(
    indicator: u8,
    nal_type: u8,
    data: &[u8],
    starts: bool,
    ends: bool,
    out: &mut Vec<Out>,
) {
    let room = MAX_PAYLOAD - 2;
    let count = data.len().div_ceil(room).max(1);
    for (i, chunk) in data.chunks(room).enumerate() {
        let mut fu_header = nal_type;
        if starts && i == 0 {
            fu_header |= 0x80;
        }
        if ends && i + 1 == count {
            fu_header |= 0x40;
        }
        let mut piece = BytesMut::with_capacity(2 + chunk.len());
        piece.put_u8(indicator);
        piece.put_u8(fu_header);
        piece.put_slice(chunk);
        out.push(Out {
            payload: piece.freeze(),
            marker: false,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPS: &[u8] = &[0x67, 0x42, 0xc0, 0x1e, 0xd9];
    const PPS: &[u8] = &[0x68, 0xce, 0x3c, 0x80];

    fn nal(header: u8, len: usize) -> Bytes {
        let mut v = vec![header];
        v.extend((0..len - 1).map(|i| (i % 251) as u8));
        Bytes::from(v)
    }

    /// Reassembles what the fitter sent into NAL units, as a receiver
    /// would (RFC 6184 §5.8).
    fn reassemble(out: &[Out]) -> Vec<Bytes> {
        let mut nals = Vec::new();
        let mut partial: Option<Vec<u8>> = None;
        for o in out {
            let p = &o.payload;
            assert!(p.len() <= MAX_PAYLOAD, "packet of {} bytes", p.len());
            match p[0] & 0x1f {
                STAP_A => nals.extend(stap_a_units(p).unwrap()),
                FU_A => {
                    let h = p[1];
                    if h & 0x80 != 0 {
                        assert!(partial.is_none(), "a fragment started inside another");
                        partial = Some(vec![p[0] & 0xe0 | h & 0x1f]);
                    }
                    partial
                        .as_mut()
                        .expect("fragment without start")
                        .extend(&p[2..]);
                    if h & 0x40 != 0 {
                        nals.push(Bytes::from(partial.take().unwrap()));
                    }
                }
                _ => nals.push(p.clone()),
            }
        }
        assert!(partial.is_none(), "a fragment never ended");
        nals
    }

    #[test]
    fn an_idr_gets_the_sdps_parameter_sets_once_per_access_unit() {
        let mut f = Fitter::new(SPS, PPS);
        let mut out = Vec::new();
        let idr = nal(0x65, 500);
        f.push(idr.clone(), 1000, false, &mut out);
        f.push(nal(0x65, 300), 1000, true, &mut out); // second slice, same AU
        f.push(nal(0x41, 200), 4000, true, &mut out); // P frame
        let nals = reassemble(&out);
        assert_eq!(nals.len(), 5);
        assert_eq!(&nals[0][..], SPS);
        assert_eq!(&nals[1][..], PPS);
        assert_eq!(nals[2], idr);
        assert_eq!((nals[3][0] & 0x1f, nals[4][0] & 0x1f), (NAL_IDR, 1));
        // Markers: the end of each access unit only.
        let markers: Vec<_> = out.iter().map(|o| o.marker).collect();
        assert_eq!(markers, [false, false, true, true]);
    }

    #[test]
    fn in_band_parameter_sets_are_not_repeated_and_replace_the_sdps() {
        let mut f = Fitter::new(SPS, PPS);
        let mut out = Vec::new();
        let new_sps = Bytes::from_static(&[0x67, 0x64, 0x00, 0x28, 0xac]);
        f.push(new_sps.clone(), 9000, false, &mut out);
        f.push(Bytes::from_static(PPS), 9000, false, &mut out);
        f.push(nal(0x65, 100), 9000, true, &mut out);
        assert_eq!(reassemble(&out).len(), 3, "no STAP-A added to this AU");
        out.clear();
        f.push(nal(0x65, 100), 12000, true, &mut out);
        let nals = reassemble(&out);
        assert_eq!(nals[0], new_sps, "the latest SPS goes with the next IDR");
    }

    #[test]
    fn big_nal_units_and_fragments_are_cut_to_size_and_reassemble_whole() {
        let mut f = Fitter::new(&[], &[]);
        let mut out = Vec::new();
        let big = nal(0x65, 5000);
        f.push(big.clone(), 1, true, &mut out);
        assert!(out.len() >= 5);
        assert!(out.last().unwrap().marker);
        assert_eq!(reassemble(&out), vec![big.clone()]);
        // The same NAL unit sent by the camera as two big FU-A fragments.
        let (first, second) = big[1..].split_at(3000);
        let fu = |h: u8, d: &[u8]| {
            let mut v = vec![0x60 | FU_A, h];
            v.extend_from_slice(d);
            Bytes::from(v)
        };
        out.clear();
        f.push(fu(0x80 | NAL_IDR, first), 2, false, &mut out);
        f.push(fu(0x40 | NAL_IDR, second), 2, true, &mut out);
        assert_eq!(reassemble(&out), vec![big]);
        assert!(out.last().unwrap().marker && !out[0].marker);
    }

    #[test]
    fn a_big_stap_a_is_broken_into_its_units() {
        let mut f = Fitter::new(&[], &[]);
        let units = [
            Bytes::from_static(SPS),
            Bytes::from_static(PPS),
            nal(0x65, 1400),
        ];
        let mut stap = vec![STAP_A | 0x60];
        for u in &units {
            stap.extend((u.len() as u16).to_be_bytes());
            stap.extend_from_slice(u);
        }
        let mut out = Vec::new();
        f.push(Bytes::from(stap), 7, true, &mut out);
        assert_eq!(reassemble(&out), units.to_vec());
    }

    #[test]
    fn interleaved_mode_and_junk_are_dropped_without_panicking() {
        let mut f = Fitter::new(SPS, PPS);
        let mut out = Vec::new();
        for junk in [
            &[][..],
            &[25, 0, 1],
            &[29, 0x85, 1],
            &[STAP_A, 0, 9, 1],
            &[STAP_A, 0],
            &[FU_A],
            &[0],
        ] {
            f.push(Bytes::copy_from_slice(junk), 0, true, &mut out);
        }
        assert!(out.is_empty());
        assert_eq!(f.dropped, 7);
    }
}
