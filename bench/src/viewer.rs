//! A WHEP viewer: what it received, when it started playing, and the
//! per-packet measurements it adds to the current window.

use std::time::Instant;

use str0m::rtp::RtpPacket;
use str0m::{Event, RtcError};

use crate::metrics::Histogram;
use crate::peer::{Peer, VIDEO_PT};
use crate::sent::{Sent, SentLog};

/// How a datagram arrived: when the kernel queued it, on the loop's clock
/// and on the wall clock, and its size on the wire.
#[derive(Debug, Clone, Copy)]
pub struct Arrival {
    pub at: Instant,
    pub wall_ns: u64,
    pub len: usize,
}

/// Everything all viewers measured since the window started.
#[derive(Default)]
pub struct Window {
    pub packets: u64,
    pub bytes: u64,
    /// Forwarding latency in µs, for packets of IDR access units and the rest.
    pub keyframe_latency: Histogram,
    pub delta_latency: Histogram,
    /// Video packets whose payload the publisher never sent (or sent twice).
    pub unmatched: u64,
    /// Each WHEP endpoint's share, by index, when the viewers are spread
    /// over several (empty with one: the totals above are its own).
    pub endpoints: Vec<EndpointWindow>,
}

/// What the viewers of one WHEP endpoint measured since the window started.
#[derive(Default, Clone)]
pub struct EndpointWindow {
    pub packets: u64,
    pub bytes: u64,
    pub keyframe_latency: Histogram,
    pub delta_latency: Histogram,
}

impl Window {
    /// Endpoint `index`'s share, created on first use.
    fn endpoint(&mut self, index: usize) -> &mut EndpointWindow {
        if self.endpoints.len() <= index {
            self.endpoints
                .resize_with(index + 1, EndpointWindow::default);
        }
        &mut self.endpoints[index]
    }
}

pub struct Viewer {
    pub peer: Peer,
    pub reception: Reception,
}

/// What a viewer got, apart from its connection.
pub struct Reception {
    pub posted_at: Instant,
    /// When the server's answer arrived.
    pub answered_at: Instant,
    /// When DTLS and SRTP were up (str0m's `Event::Connected`).
    pub connected_at: Option<Instant>,
    pub first_rtp: Option<Instant>,
    pub first_keyframe: Option<Instant>,
    /// Which WHEP endpoint it joined, when there are several.
    pub endpoint: Option<usize>,
    assembling: Vec<Assembly>,
    /// A keyframe not sent by this tool's publisher (`--whip` left out)
    /// has begun: an IDR slice arrived, its access unit not yet ended.
    foreign_keyframe: bool,
    pub video: Sequence,
    pub audio: Sequence,
}

/// A keyframe being received: which of its packets are in.
struct Assembly {
    frame: u64,
    seen: Vec<bool>,
    missing: usize,
}

/// Keyframes tracked at once: a server replaying a cached GOP start may
/// interleave it with the live one.
const ASSEMBLIES: usize = 4;

impl Viewer {
    /// `posted_at` is when the WHEP POST went out: joins are timed from it.
    pub fn new(peer: Peer, posted_at: Instant, answered_at: Instant) -> Viewer {
        Viewer {
            peer,
            reception: Reception {
                posted_at,
                answered_at,
                connected_at: None,
                first_rtp: None,
                first_keyframe: None,
                endpoint: None,
                foreign_keyframe: false,
                assembling: Vec::new(),
                video: Sequence::default(),
                audio: Sequence::default(),
            },
        }
    }

    /// Drains the Rtc after an input; `arrival` describes the datagram that
    /// input was (RTP packets only come out right after their datagram).
    pub fn drain(
        &mut self,
        arrival: Arrival,
        log: &SentLog,
        window: &mut Window,
    ) -> Result<Instant, RtcError> {
        self.peer.drain(|event| match event {
            Event::RtpPacket(p) => self.reception.on_rtp(&p, arrival, log, window),
            Event::Connected => {
                self.reception.connected_at.get_or_insert(arrival.at);
            }
            _ => {}
        })
    }
}

impl Reception {
    pub fn start_window(&mut self) {
        self.video.start_window();
        self.audio.start_window();
    }

    fn on_rtp(&mut self, packet: &RtpPacket, arrival: Arrival, log: &SentLog, window: &mut Window) {
        self.first_rtp.get_or_insert(arrival.at);
        window.packets += 1;
        window.bytes += arrival.len as u64;
        if let Some(e) = self.endpoint {
            let share = window.endpoint(e);
            share.packets += 1;
            share.bytes += arrival.len as u64;
        }
        if *packet.header.payload_type != VIDEO_PT {
            self.audio.record(*packet.seq_no);
            return;
        }
        self.video.record(*packet.seq_no);
        let Some(sent) = log.lookup(&packet.payload) else {
            window.unmatched += 1;
            if self.first_keyframe.is_none() {
                self.foreign_keyframe |= carries_idr(&packet.payload);
                if self.foreign_keyframe && packet.header.marker {
                    self.first_keyframe = Some(arrival.at);
                }
            }
            return;
        };
        let latency_us = arrival.wall_ns.saturating_sub(sent.sent_ns) / 1000;
        if let Some(e) = self.endpoint {
            let share = window.endpoint(e);
            if sent.keyframe {
                share.keyframe_latency.record(latency_us);
            } else {
                share.delta_latency.record(latency_us);
            }
        }
        if sent.keyframe {
            window.keyframe_latency.record(latency_us);
            if self.first_keyframe.is_none() {
                self.assemble(sent, arrival.at);
            }
        } else {
            window.delta_latency.record(latency_us);
        }
    }

    fn assemble(&mut self, sent: &Sent, at: Instant) {
        let position = self.assembling.iter().position(|a| a.frame == sent.frame);
        let assembly = match position {
            Some(i) => &mut self.assembling[i],
            None => {
                if self.assembling.len() == ASSEMBLIES {
                    self.assembling.remove(0);
                }
                self.assembling.push(Assembly {
                    frame: sent.frame,
                    seen: vec![false; sent.count.into()],
                    missing: sent.count.into(),
                });
                self.assembling.last_mut().expect("just pushed")
            }
        };
        let seen = &mut assembly.seen[usize::from(sent.index)];
        if !*seen {
            *seen = true;
            assembly.missing -= 1;
        }
        if assembly.missing == 0 {
            self.first_keyframe = Some(at);
            self.assembling = Vec::new();
        }
    }
}

/// Whether an H264 RTP payload (RFC 6184) carries an IDR slice or its
/// start: a single NAL unit, a STAP-A holding one, or an FU-A's first
/// fragment. For another publisher's stream, whose payloads this tool
/// cannot look up, a keyframe is an IDR start up to the packet with the
/// marker bit (its access unit's last, one slice per picture as cameras
/// send); a loss in between goes unnoticed.
fn carries_idr(payload: &[u8]) -> bool {
    const IDR: u8 = 5;
    let Some(&first) = payload.first() else {
        return false;
    };
    match first & 0x1f {
        IDR => true,
        // STAP-A: (16-bit size, NAL unit)*
        24 => {
            let mut rest = &payload[1..];
            while let [hi, lo, tail @ ..] = rest {
                let size = usize::from(u16::from_be_bytes([*hi, *lo]));
                match tail.first() {
                    Some(header) if size > 0 && header & 0x1f == IDR => return true,
                    _ => {}
                }
                rest = tail.get(size..).unwrap_or(&[]);
            }
            false
        }
        // FU-A: the start bit, and the fragmented unit's type
        28 => payload
            .get(1)
            .is_some_and(|fu| fu & 0x80 != 0 && fu & 0x1f == IDR),
        _ => false,
    }
}

/// One RTP stream's sequence numbers (extended, de-duplicated by str0m,
/// RTX repairs folded back in) within the current window.
#[derive(Debug, Default, Clone, Copy)]
pub struct Sequence {
    /// Highest sequence number seen, and the highest before the window.
    max: Option<u64>,
    base: Option<u64>,
    pub received: u64,
    /// Arrived after a higher sequence number.
    pub reordered: u64,
}

impl Sequence {
    fn record(&mut self, seq: u64) {
        match self.max {
            Some(max) if seq < max => self.reordered += 1,
            _ => self.max = Some(seq),
        }
        // The first packet of a stream opens it.
        let base = *self.base.get_or_insert(seq.saturating_sub(1));
        if seq > base {
            self.received += 1;
        }
    }

    fn start_window(&mut self) {
        self.base = self.max;
        self.received = 0;
        self.reordered = 0;
    }

    pub fn expected(&self) -> u64 {
        match (self.base, self.max) {
            (Some(base), Some(max)) => max - base,
            _ => 0,
        }
    }

    pub fn lost(&self) -> u64 {
        self.expected().saturating_sub(self.received)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_and_reordering_count_within_the_window() {
        let mut s = Sequence::default();
        for seq in [100, 101, 102] {
            s.record(seq);
        }
        s.start_window();
        // 103 and 106 lost, 105 late, 101 (before the window) ignored.
        for seq in [104, 101, 107, 105, 108] {
            s.record(seq);
        }
        assert_eq!(s.expected(), 6);
        assert_eq!(s.received, 4);
        assert_eq!(s.lost(), 2);
        assert_eq!(s.reordered, 2);
    }

    #[test]
    fn a_stream_starting_in_the_window_counts_from_its_first_packet() {
        let mut s = Sequence::default();
        s.start_window();
        for seq in [5000, 5001, 5003] {
            s.record(seq);
        }
        assert_eq!((s.expected(), s.lost()), (4, 1));
    }

    #[test]
    fn idr_starts_are_found_in_every_packetization() {
        // Single NAL units: IDR (type 5) yes, non-IDR slice (1) and SPS (7) no.
        assert!(carries_idr(&[0x65, 0x88]));
        assert!(!carries_idr(&[0x41, 0x9a]));
        assert!(!carries_idr(&[0x67, 0x42]));
        // STAP-A with SPS, PPS, then an IDR; and one with SPS and PPS only.
        assert!(carries_idr(&[
            0x78, 0, 2, 0x67, 0x42, 0, 2, 0x68, 0xce, 0, 2, 0x65, 0x88
        ]));
        assert!(!carries_idr(&[0x78, 0, 2, 0x67, 0x42, 0, 2, 0x68, 0xce]));
        // A truncated STAP-A is not read past its end.
        assert!(!carries_idr(&[0x78, 0, 9, 0x67]));
        // FU-A of an IDR: only the first fragment (start bit) counts.
        assert!(carries_idr(&[0x7c, 0x85, 0x88]));
        assert!(!carries_idr(&[0x7c, 0x05, 0x88]));
        assert!(!carries_idr(&[0x7c, 0x81, 0x9a]));
        assert!(!carries_idr(&[]));
    }
}
