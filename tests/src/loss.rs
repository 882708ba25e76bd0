//! Packet loss on purpose: an interceptor a test client places wire-most, so
//! the RTP it drops looks lost on the network to everything above it (the
//! NACK generator included).

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use rtc::interceptor::{Interceptor, Packet, TaggedPacket};
use vigil_gateway::sfu::rtcp::ReadFilter;

/// Where the loss sits in the chain: below every built-in interceptor.
pub const LOSS_SLOT: usize = 500;

/// The type of "no loss", for callers that pass none.
pub type Lossless = ReadFilter<fn(&mut TaggedPacket) -> bool>;

/// Drops the first copy of every `every`-th inbound RTP packet of the given
/// payload types (a retransmission on RTX gets through); counts the drops.
/// Never a stream's first packet: nothing before it shows a gap, so no
/// receiver can NACK it (a stream starting on a multiple of `every` failed
/// `nack_repair` now and then).
pub fn drop_every_nth(
    every: u16,
    payload_types: impl IntoIterator<Item = u8>,
    dropped: Arc<AtomicUsize>,
) -> impl Interceptor + 'static {
    let payload_types: HashSet<u8> = payload_types.into_iter().collect();
    let mut dropped_seqs = HashSet::new();
    let mut seen_ssrcs = HashSet::new();
    ReadFilter::new(move |msg: &mut TaggedPacket| {
        let Packet::Rtp(rtp) = &msg.message.packet else {
            return true;
        };
        let header = &rtp.header;
        let first_of_stream = seen_ssrcs.insert(header.ssrc);
        let drop = !first_of_stream
            && payload_types.contains(&header.payload_type)
            && header.sequence_number % every == 0
            && dropped_seqs.insert((header.ssrc, header.sequence_number));
        if drop {
            dropped.fetch_add(1, Ordering::Relaxed);
        }
        !drop
    })
}
