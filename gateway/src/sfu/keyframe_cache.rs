//! The last complete keyframe of a video track, so a viewer that joins
//! mid-GOP decodes a picture at once instead of waiting for the publisher's
//! next keyframe (which a PLI hurries, but an encoder may not honour).
//!
//! The forwarder feeds it every packet; it keeps the packets of the latest
//! keyframe's access unit (same RTP timestamp, consecutive sequence numbers,
//! up to the marker bit) and drops them if one is missing, since a broken
//! keyframe is worse than none.

use rtc::rtp;

/// Largest keyframe kept, in payload bytes (a 4K IDR at high quality).
const MAX_BYTES: usize = 2 << 20;

/// The latest keyframe's packets, once complete.
#[derive(Debug, Default)]
pub struct KeyframeCache {
    packets: Vec<rtp::Packet>,
    bytes: usize,
    complete: bool,
}

impl KeyframeCache {
    /// Notes one packet of the track (extensions already stripped).
    pub fn observe(&mut self, packet: &rtp::Packet, keyframe_start: bool) {
        // SPS/PPS in a STAP-A and then the IDR's first fragment both "start"
        // a keyframe: within one access unit, the second one continues it.
        if keyframe_start && !(self.in_progress() && self.continues(packet)) {
            self.packets.clear();
            self.bytes = 0;
            self.complete = false;
        } else if self.complete || self.packets.is_empty() {
            return;
        } else if !self.continues(packet) {
            // A lost or reordered packet inside the keyframe: unusable.
            self.packets.clear();
            return;
        }
        self.bytes += packet.payload.len();
        if self.bytes > MAX_BYTES {
            self.packets.clear();
            return;
        }
        self.packets.push(packet.clone());
        self.complete = packet.header.marker;
    }

    fn in_progress(&self) -> bool {
        !self.complete && !self.packets.is_empty()
    }

    fn continues(&self, packet: &rtp::Packet) -> bool {
        self.packets.last().is_some_and(|last| {
            packet.header.timestamp == last.header.timestamp
                && packet.header.sequence_number == last.header.sequence_number.wrapping_add(1)
        })
    }

    /// The latest complete keyframe, in sending order.
    pub fn keyframe(&self) -> Option<&[rtp::Packet]> {
        (self.complete && !self.packets.is_empty()).then_some(&self.packets[..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn packet(seq: u16, timestamp: u32, marker: bool) -> rtp::Packet {
        rtp::Packet {
            header: rtp::header::Header {
                version: 2,
                sequence_number: seq,
                timestamp,
                marker,
                ..Default::default()
            },
            payload: Bytes::from_static(&[0; 100]),
        }
    }

    fn seqs(cache: &KeyframeCache) -> Option<Vec<u16>> {
        cache
            .keyframe()
            .map(|k| k.iter().map(|p| p.header.sequence_number).collect())
    }

    #[test]
    fn keeps_the_latest_complete_keyframe() {
        let mut cache = KeyframeCache::default();
        cache.observe(&packet(65534, 9000, false), true);
        assert_eq!(seqs(&cache), None, "incomplete until the marker");
        cache.observe(&packet(65535, 9000, false), false);
        cache.observe(&packet(0, 9000, true), false);
        cache.observe(&packet(1, 12000, true), false);
        assert_eq!(
            seqs(&cache),
            Some(vec![65534, 65535, 0]),
            "delta frames are not kept"
        );

        cache.observe(&packet(2, 15000, false), true);
        assert_eq!(seqs(&cache), None, "a newer keyframe replaces it");
        cache.observe(&packet(3, 15000, true), false);
        assert_eq!(seqs(&cache), Some(vec![2, 3]));
    }

    #[test]
    fn parameter_sets_and_the_idr_are_one_keyframe() {
        let mut cache = KeyframeCache::default();
        cache.observe(&packet(7, 3000, false), true); // STAP-A: SPS, PPS
        cache.observe(&packet(8, 3000, false), true); // FU-A start of the IDR
        cache.observe(&packet(9, 3000, true), false);
        assert_eq!(seqs(&cache), Some(vec![7, 8, 9]));
    }

    #[test]
    fn a_keyframe_with_a_hole_is_not_kept() {
        let mut cache = KeyframeCache::default();
        cache.observe(&packet(10, 3000, false), true);
        cache.observe(&packet(12, 3000, true), false);
        assert_eq!(seqs(&cache), None);
        // The next delta frame does not revive it either.
        cache.observe(&packet(13, 6000, true), false);
        assert_eq!(seqs(&cache), None);
    }

    #[test]
    fn an_oversized_keyframe_is_not_kept() {
        let mut cache = KeyframeCache::default();
        let big = |seq, marker| rtp::Packet {
            payload: Bytes::from(vec![0; MAX_BYTES / 2 + 1]),
            ..packet(seq, 3000, marker)
        };
        cache.observe(&big(1, false), true);
        cache.observe(&big(2, true), false);
        assert_eq!(seqs(&cache), None);
    }
}
