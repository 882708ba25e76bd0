//! The one interceptor of the engine's own in a viewer connection's chain:
//! it hands the engine what viewers report about the media they get.
//!
//! Inbound RTCP ends in rtc's interceptor chain unless an interceptor marks
//! it for the application. The engine needs keyframe requests (PLI, FIR,
//! coalesced toward the publisher), NACKs (answered from one history per
//! published stream, since the engine's chain has no NACK responder) and
//! reception reports (loss, for simulcast step-down). This tap marks those
//! and stops the rest.

use rtc::interceptor::Interceptor;
use rtc::rtcp::receiver_report::ReceiverReport;
use rtc::rtcp::sender_report::SenderReport;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;

use crate::sfu::rtcp::{is_keyframe_request, marking_tap};

/// Slot after every built-in interceptor (the last built-in is 13 000).
pub const FEEDBACK_SLOT: usize = 14_000;

fn is_feedback(packet: &dyn rtc::rtcp::Packet) -> bool {
    let any = packet.as_any();
    is_keyframe_request(packet)
        || any.is::<TransportLayerNack>()
        || any.is::<ReceiverReport>()
        || any.is::<SenderReport>()
}

/// Marks inbound PLI, FIR, NACK and reception reports for the engine and
/// stops all other inbound RTCP here; RTP passes through.
pub fn feedback_tap() -> impl Interceptor + 'static {
    marking_tap(is_feedback)
}
