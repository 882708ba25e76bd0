//! A shard's queue of datagrams to send.
//!
//! A viewer's forwarded RTP waits here unsealed, as the few header fields
//! its rewrite set and the payload shared with every other viewer of the
//! packet; the shard seals it only when it is taken ([`super::shard::Shard::seal`]).
//! A fan-out queues one datagram per viewer and packet, so this keeps no
//! sealed copy of a whole keyframe burst waiting in memory, and the first
//! viewers' sends leave before the last viewers' packets are sealed.
//!
//! The socket loop orders the queue by destination before it drains it,
//! in place, so that each viewer's datagrams of one input are adjacent and
//! leave in one GSO `sendmsg`; datagrams to one address keep the order they
//! were queued in (their SRTP rollover counters follow it).

use bytes::{Bytes, BytesMut};
use rtc::rtp::header::Header;
use std::collections::VecDeque;

use super::demux::Peer;
use super::shard::ConnId;

/// A datagram queued to be sent.
#[derive(Debug)]
pub struct Pending {
    /// Where to.
    pub to: Peer,
    /// Its place in the queue: ties between equal destinations.
    order: u64,
    pub(super) datagram: Datagram,
}

#[derive(Debug)]
pub(super) enum Datagram {
    /// From `rtc` (STUN, DTLS, SRTCP): ready as it is.
    Ready(BytesMut),
    /// An RTP packet for connection `conn`'s fast path, rewritten already.
    Rtp { conn: ConnId, packet: OutgoingRtp },
}

/// What a forwarded RTP packet's header carries once rewritten for its
/// viewer (no header extensions: the engine sends none on the fast path),
/// and its payload. A quarter of a full [`Header`]'s size, since a
/// keyframe burst queues thousands at once.
#[derive(Debug, Clone)]
pub(super) struct OutgoingRtp {
    pub(super) payload: Bytes,
    csrc: Option<Box<[u32]>>,
    timestamp: u32,
    ssrc: u32,
    sequence_number: u16,
    payload_type: u8,
    marker: bool,
    padding: bool,
}

impl OutgoingRtp {
    /// The fields of `header` a forwarded packet keeps, and `payload`.
    pub(super) fn new(header: &Header, payload: Bytes) -> Self {
        OutgoingRtp {
            payload,
            csrc: (!header.csrc.is_empty()).then(|| header.csrc.as_slice().into()),
            timestamp: header.timestamp,
            ssrc: header.ssrc,
            sequence_number: header.sequence_number,
            payload_type: header.payload_type,
            marker: header.marker,
            padding: header.padding,
        }
    }

    /// The header to seal it with.
    pub(super) fn header(&self) -> Header {
        Header {
            version: 2,
            padding: self.padding,
            marker: self.marker,
            payload_type: self.payload_type,
            sequence_number: self.sequence_number,
            timestamp: self.timestamp,
            ssrc: self.ssrc,
            csrc: self
                .csrc
                .as_deref()
                .map(<[u32]>::to_vec)
                .unwrap_or_default(),
            ..Default::default()
        }
    }
}

/// How many queued datagrams' room the queue keeps between bursts: a few
/// flushes' worth at a few hundred viewers (≈ 0.5 MB).
const KEPT_CAPACITY: usize = 4096;

/// The queue.
#[derive(Debug, Default)]
pub struct Outbox {
    queue: VecDeque<Pending>,
    queued: u64,
    /// RTP packets queued for viewers' fast paths, and their payload
    /// bytes, since the start (for `/metrics`).
    rtp_packets: u64,
    rtp_bytes: u64,
}

impl Outbox {
    /// Queues a datagram `rtc` produced.
    pub(super) fn push_ready(&mut self, to: Peer, datagram: BytesMut) {
        self.push(to, Datagram::Ready(datagram));
    }

    /// Queues a rewritten RTP packet for connection `conn`'s fast path.
    pub(super) fn push_rtp(&mut self, to: Peer, conn: ConnId, packet: OutgoingRtp) {
        self.rtp_packets += 1;
        self.rtp_bytes += packet.payload.len() as u64;
        self.push(to, Datagram::Rtp { conn, packet });
    }

    /// RTP packets queued for viewers so far, and their payload bytes.
    pub(super) fn rtp_sent(&self) -> (u64, u64) {
        (self.rtp_packets, self.rtp_bytes)
    }

    fn push(&mut self, to: Peer, datagram: Datagram) {
        self.queue.push_back(Pending {
            to,
            order: self.queued,
            datagram,
        });
        self.queued += 1;
    }

    /// The oldest datagram, unless the queue was ordered by destination
    /// since: then the first in that order.
    ///
    /// Once empty, the queue gives back room beyond [`KEPT_CAPACITY`]: a
    /// join storm's keyframe starts (two copies of the cached keyframe per
    /// starting viewer) can queue tens of thousands of datagrams in one
    /// turn, which would otherwise stay allocated for good (≈ 9 KB per
    /// viewer at N = 200).
    pub fn pop(&mut self) -> Option<Pending> {
        let pending = self.queue.pop_front();
        if pending.is_none() && self.queue.capacity() > KEPT_CAPACITY {
            self.queue.shrink_to(KEPT_CAPACITY);
        }
        pending
    }

    /// Orders what is queued by destination, in place (no allocation), each
    /// destination's datagrams in the order they were queued.
    pub fn order_by_destination(&mut self) {
        self.queue
            .make_contiguous()
            .sort_unstable_by_key(|p| (p.to, p.order));
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> Peer {
        Peer::udp(std::net::SocketAddr::from(([127, 0, 0, 1], port)))
    }

    #[test]
    fn ordering_groups_destinations_and_keeps_each_ones_order() {
        let mut outbox = Outbox::default();
        for (port, byte) in [(2, 1), (1, 2), (2, 3), (1, 4), (3, 5), (1, 6)] {
            outbox.push_ready(addr(port), BytesMut::from(&[byte][..]));
        }
        outbox.order_by_destination();
        let mut drained = Vec::new();
        while let Some(p) = outbox.pop() {
            let Datagram::Ready(bytes) = p.datagram else {
                panic!("only ready datagrams queued");
            };
            drained.push((p.to.addr.port(), bytes[0]));
        }
        assert_eq!(
            drained,
            [(1, 2), (1, 4), (1, 6), (2, 1), (2, 3), (3, 5)],
            "by destination, then in queue order"
        );
        assert!(outbox.is_empty());
    }

    #[test]
    fn a_burst_gives_back_its_room_once_sent() {
        let mut outbox = Outbox::default();
        for i in 0..4 * KEPT_CAPACITY {
            outbox.push_ready(addr(1 + (i % 7) as u16), BytesMut::new());
        }
        assert!(outbox.queue.capacity() >= 4 * KEPT_CAPACITY);
        let mut sent = 0;
        while outbox.pop().is_some() {
            sent += 1;
        }
        assert_eq!(sent, 4 * KEPT_CAPACITY);
        assert!(
            outbox.queue.capacity() <= KEPT_CAPACITY,
            "kept {} after the burst",
            outbox.queue.capacity()
        );
    }

    #[test]
    fn a_forwarded_header_keeps_what_a_viewer_is_sent() {
        let header = Header {
            version: 2,
            padding: true,
            marker: true,
            payload_type: 102,
            sequence_number: 65535,
            timestamp: 0xdead_beef,
            ssrc: 0x1234_5678,
            csrc: vec![7, 8],
            ..Default::default()
        };
        let out = OutgoingRtp::new(&header, Bytes::from_static(b"x"));
        assert_eq!(out.header(), header);
        let plain = Header {
            csrc: Vec::new(),
            ..header
        };
        assert_eq!(OutgoingRtp::new(&plain, Bytes::new()).header(), plain);
    }
}
