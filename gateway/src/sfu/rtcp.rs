//! Interceptors of Vigil's own: a generic inbound filter, and the tap that
//! lets viewers' keyframe requests and reception reports reach the
//! forwarder (for coalesced PLIs and simulcast step-down).
//!
//! In webrtc-rs 0.21 inbound RTCP ends at the interceptor chain unless an
//! interceptor marks it `DeliverToApplication`. An SFU must relay a viewer's
//! PLI/FIR to the publisher (coalesced) and see how much each viewer loses,
//! so the tap, placed last in the chain (application-most, after NACK and
//! report handling have seen everything), marks exactly those packets and
//! lets the rest stop.

use std::collections::VecDeque;
use std::time::Instant;

use rtc::interceptor::{Attribute, Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::receiver_report::ReceiverReport;
use rtc::rtcp::reception_report::ReceptionReport;
use rtc::rtcp::sender_report::SenderReport;
use rtc::sansio::Protocol;
use rtc::shared::error::Error;

/// Slot after every built-in interceptor (the last built-in is 13 000).
pub const KEYFRAME_REQUEST_SLOT: usize = 14_000;

/// The reception report a receiver or sender report gives about `ssrc`,
/// if it reports on it.
pub fn reception_report(packet: &dyn rtc::rtcp::Packet, ssrc: u32) -> Option<ReceptionReport> {
    let any = packet.as_any();
    let reports = if let Some(rr) = any.downcast_ref::<ReceiverReport>() {
        &rr.reports
    } else if let Some(sr) = any.downcast_ref::<SenderReport>() {
        &sr.reports
    } else {
        return None;
    };
    reports.iter().find(|r| r.ssrc == ssrc).cloned()
}

/// Whether a viewer's RTCP packet is for the forwarder: a keyframe
/// request, or a report on what it receives.
fn is_viewer_feedback(packet: &dyn rtc::rtcp::Packet) -> bool {
    let any = packet.as_any();
    is_keyframe_request(packet) || any.is::<ReceiverReport>() || any.is::<SenderReport>()
}

/// Whether an RTCP packet asks for a keyframe.
pub fn is_keyframe_request(packet: &dyn rtc::rtcp::Packet) -> bool {
    let any = packet.as_any();
    any.is::<PictureLossIndication>() || any.is::<FullIntraRequest>()
}

/// An interceptor whose function sees each inbound packet, may change it,
/// and returns whether it goes on; outbound packets pass untouched.
pub struct ReadFilter<F> {
    filter: F,
    read: VecDeque<TaggedPacket>,
    write: VecDeque<TaggedPacket>,
}

impl<F> ReadFilter<F>
where
    F: FnMut(&mut TaggedPacket) -> bool + Send + Sync + 'static,
{
    /// Wraps `filter`.
    pub fn new(filter: F) -> Self {
        ReadFilter {
            filter,
            read: VecDeque::new(),
            write: VecDeque::new(),
        }
    }
}

impl<F> Protocol<TaggedPacket, TaggedPacket, ()> for ReadFilter<F>
where
    F: FnMut(&mut TaggedPacket) -> bool + Send + Sync + 'static,
{
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Error> {
        if (self.filter)(&mut msg) {
            self.read.push_back(msg);
        }
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

impl<F> Interceptor for ReadFilter<F>
where
    F: FnMut(&mut TaggedPacket) -> bool + Send + Sync + 'static,
{
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

/// Marks inbound PLI, FIR and reception reports for the application and
/// stops all other inbound RTCP here; RTP passes through.
pub fn keyframe_request_tap() -> impl Interceptor + 'static {
    marking_tap(is_viewer_feedback)
}

/// Marks the inbound RTCP packets `wanted` picks for the application and
/// stops the others here; RTP passes through.
pub fn marking_tap(wanted: fn(&dyn rtc::rtcp::Packet) -> bool) -> impl Interceptor + 'static {
    ReadFilter::new(move |msg: &mut TaggedPacket| {
        if let Packet::Rtcp(packets) = &msg.message.packet {
            let kept: Vec<_> = packets
                .iter()
                .filter(|p| wanted(p.as_ref()))
                .cloned()
                .collect();
            if kept.is_empty() {
                return false;
            }
            msg.message.packet = Packet::Rtcp(kept);
            msg.message.add(Attribute::DeliverToApplication);
        }
        true
    })
}
