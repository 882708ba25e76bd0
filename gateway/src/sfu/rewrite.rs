//! Per-viewer RTP header rewriting.
//!
//! A viewer negotiates its own SSRC and payload type, and must see one
//! continuous stream even when the publisher behind it reconnects and starts
//! over with a fresh SSRC, sequence number and timestamp. The rewriter keeps
//! the offsets that map the current source onto the viewer's numbering and
//! recomputes them at each change of source ("rebase"), so that sequence
//! numbers continue at +1 and timestamps advance by the wall-clock time that
//! passed.

use std::time::Instant;

use rtc::rtp::header::Header;

/// Rewrites headers of one source for one viewer.
#[derive(Debug)]
pub struct Rewriter {
    ssrc: u32,
    payload_type: u8,
    clock_rate: u32,
    seq_offset: u16,
    ts_offset: u32,
    last: Option<LastSent>,
    rebase_pending: bool,
}

#[derive(Debug, Clone, Copy)]
struct LastSent {
    seq: u16,
    ts: u32,
    at: Instant,
}

impl Rewriter {
    /// A rewriter onto `ssrc`/`payload_type`, for a codec ticking at `clock_rate` Hz.
    pub fn new(ssrc: u32, payload_type: u8, clock_rate: u32) -> Self {
        Rewriter {
            ssrc,
            payload_type,
            clock_rate: clock_rate.max(1),
            seq_offset: 0,
            ts_offset: 0,
            last: None,
            rebase_pending: true,
        }
    }

    /// The viewer-side SSRC.
    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    /// The next packet comes from a new source: continue the viewer's
    /// numbering after what it has already received.
    pub fn rebase(&mut self) {
        self.rebase_pending = true;
    }

    /// Maps a viewer-side sequence number back to the source's, for NACKs.
    pub fn source_seq(&self, viewer_seq: u16) -> u16 {
        viewer_seq.wrapping_sub(self.seq_offset)
    }

    /// Rewrites `header` in place for this viewer. Header extensions are
    /// dropped: their ids were negotiated with the publisher, not the viewer.
    pub fn rewrite(&mut self, header: &mut Header, now: Instant) {
        if self.rebase_pending {
            self.rebase_pending = false;
            if let Some(last) = self.last {
                let elapsed = now.saturating_duration_since(last.at);
                let ticks = (elapsed.as_secs_f64() * f64::from(self.clock_rate)) as u32;
                self.seq_offset = last
                    .seq
                    .wrapping_add(1)
                    .wrapping_sub(header.sequence_number);
                self.ts_offset = last
                    .ts
                    .wrapping_add(ticks.max(1))
                    .wrapping_sub(header.timestamp);
            }
        }
        header.ssrc = self.ssrc;
        header.payload_type = self.payload_type;
        header.sequence_number = header.sequence_number.wrapping_add(self.seq_offset);
        header.timestamp = header.timestamp.wrapping_add(self.ts_offset);
        header.extension = false;
        header.extension_profile = 0;
        header.extensions.clear();
        header.extensions_padding = 0;

        // Only a newer packet moves the reference: a late or retransmitted one
        // must not make the next rebase reuse numbers already sent.
        let newer = match self.last {
            None => true,
            Some(last) => (header.sequence_number.wrapping_sub(last.seq) as i16) > 0,
        };
        if newer {
            self.last = Some(LastSent {
                seq: header.sequence_number,
                ts: header.timestamp,
                at: now,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn header(ssrc: u32, seq: u16, ts: u32) -> Header {
        Header {
            version: 2,
            payload_type: 100,
            sequence_number: seq,
            timestamp: ts,
            ssrc,
            ..Default::default()
        }
    }

    #[test]
    fn first_source_keeps_its_numbering_under_the_viewer_ssrc() {
        let mut rw = Rewriter::new(7, 96, 90_000);
        let now = Instant::now();
        let mut h = header(1, 500, 9000);
        rw.rewrite(&mut h, now);
        assert_eq!(
            (h.ssrc, h.payload_type, h.sequence_number, h.timestamp),
            (7, 96, 500, 9000)
        );
    }

    #[test]
    fn new_source_continues_sequence_and_advances_time() {
        let mut rw = Rewriter::new(7, 96, 90_000);
        let t0 = Instant::now();
        for i in 0..10u16 {
            let mut h = header(1, 65_530u16.wrapping_add(i), 1000 + u32::from(i) * 3000);
            rw.rewrite(&mut h, t0);
        }
        // Publisher reconnects 2 s later with unrelated numbering.
        rw.rebase();
        let t1 = t0 + Duration::from_secs(2);
        let mut h = header(2, 17, 4_000_000_000);
        rw.rewrite(&mut h, t1);
        assert_eq!(h.sequence_number, 65_530u16.wrapping_add(10));
        assert_eq!(h.timestamp, 1000 + 9 * 3000 + 180_000);
        let mut next = header(2, 18, 4_000_003_000);
        rw.rewrite(&mut next, t1);
        assert_eq!(next.sequence_number, h.sequence_number.wrapping_add(1));
        assert_eq!(next.timestamp, h.timestamp + 3000);
        assert_eq!(rw.source_seq(next.sequence_number), 18);
    }

    #[test]
    fn late_packets_do_not_move_the_reference() {
        let mut rw = Rewriter::new(7, 96, 48_000);
        let now = Instant::now();
        rw.rewrite(&mut header(1, 10, 0), now);
        rw.rewrite(&mut header(1, 12, 1920), now);
        rw.rewrite(&mut header(1, 11, 960), now);
        rw.rebase();
        let mut h = header(1, 1000, 0);
        rw.rewrite(&mut h, now);
        assert_eq!(h.sequence_number, 13);
    }

    #[test]
    fn extensions_are_dropped() {
        let mut rw = Rewriter::new(7, 96, 90_000);
        let mut h = header(1, 1, 1);
        h.extension = true;
        h.extension_profile = 0xBEDE;
        h.extensions.push(rtc::rtp::header::Extension {
            id: 3,
            payload: bytes::Bytes::from_static(&[1]),
        });
        rw.rewrite(&mut h, Instant::now());
        assert!(!h.extension && h.extensions.is_empty());
    }
}
