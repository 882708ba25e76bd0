//! Packet loss on purpose: an interceptor a test client places wire-most, so
//! the RTP it drops looks lost on the network to everything above it (the
//! NACK generator included).

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use rtc::interceptor::{Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::sansio::Protocol;
use rtc::shared::error::Error;

/// Where the loss sits in the chain: below every built-in interceptor.
pub const LOSS_SLOT: usize = 500;

/// Drops the first copy of every `every`-th inbound RTP packet of one
/// payload type; a retransmission of it gets through.
pub struct DropEveryNth {
    every: u16,
    payload_types: HashSet<u8>,
    dropped_seqs: HashSet<(u32, u16)>,
    dropped: Arc<AtomicUsize>,
    read: VecDeque<TaggedPacket>,
    write: VecDeque<TaggedPacket>,
}

impl DropEveryNth {
    /// Drops one in `every` packets of any of `payload_types`; counts drops in `dropped`.
    pub fn new(
        every: u16,
        payload_types: impl IntoIterator<Item = u8>,
        dropped: Arc<AtomicUsize>,
    ) -> Self {
        DropEveryNth {
            every,
            payload_types: payload_types.into_iter().collect(),
            dropped_seqs: HashSet::new(),
            dropped,
            read: VecDeque::new(),
            write: VecDeque::new(),
        }
    }
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for DropEveryNth {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, msg: TaggedPacket) -> Result<(), Error> {
        if let Packet::Rtp(rtp) = &msg.message.packet {
            let header = &rtp.header;
            let key = (header.ssrc, header.sequence_number);
            if self.payload_types.contains(&header.payload_type)
                && header.sequence_number % self.every == 0
                && self.dropped_seqs.insert(key)
            {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
        }
        self.read.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<TaggedPacket> {
        self.read.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Error> {
        self.write.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<TaggedPacket> {
        self.write.pop_front()
    }
}

impl Interceptor for DropEveryNth {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}
