//! The sans-IO media engine behind [`crate::sfu`] (issue 12): all WebRTC
//! media on one UDP port per shard, webrtc-rs's `rtc` connections driven
//! directly, a shard per core. The room owner ([`crate::sfu::registry`])
//! tells it who gets which track; it forwards.
//!
//! Its parts, each tested packet by packet without sockets:
//! - [`demux`]: which connection a datagram on the shared port belongs to
//!   (STUN by the server ufrag, everything else by an address that passed a
//!   check) and where a connection's media goes (its last checked address,
//!   so a NAT rebinding heals at the next check).
//! - [`shard::Shard`]: the connections of one shard behind that
//!   demultiplexer, their timers in one heap, and the fan-out of a
//!   publisher's RTP to its viewers (rewritten per viewer by
//!   [`crate::sfu::rewrite::Rewriter`]) and relayed once per packet to
//!   other shards with viewers of it, with inputs in and outputs polled.
//! - [`fast`]: viewers' RTP sealed by the shard itself, beside `rtc`, with
//!   the keys the vendored `rtc` exports, and their sender reports.
//! - [`session::answer`]: an engine connection (ICE-lite, engine-chosen
//!   credentials, the shard's address as its one candidate, slim chain)
//!   answered from a client's offer.
//! - [`io::ShardHandle`]: the shard's thread and socket loop, with batched
//!   receive (GRO) and GSO sends, commanded over a channel.
//! - [`tcp`]: ICE over TCP (RFC 6544): a shard's TCP listener beside its
//!   UDP socket, whose connections' frames the shard routes like
//!   datagrams.
//! - [`shards::Engine`]: a shard per thread, one socket each, and the
//!   commands that span shards (subscribing a viewer to a publisher on
//!   another shard).
//!
//! `examples/rtc_write_path.rs` measures `rtc`'s write path alone,
//! `examples/engine_fanout.rs` the shards end to end, and vigil-bench the
//! whole server (docs/performance.md).

pub mod demux;
pub mod fast;
mod feedback;
pub mod io;
pub mod outbox;
pub mod session;
pub mod shard;
pub mod shards;
pub mod srtp_gcm;
pub mod tcp;

use std::net::SocketAddr;

use rtc::ice::tcp_type::TcpType;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::RTCPeerConnection;
use rtc::peer_connection::transport::{CandidateConfig, CandidateHostConfig, RTCIceCandidate};
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use rtc::shared::error::Error;

pub use feedback::{FEEDBACK_SLOT, feedback_tap};

/// Gives `pc` one UDP host candidate at `addr`. On the shared media port
/// every connection of a shard gets the same one: rtc matches a received
/// datagram's local address against its candidates exactly, so `addr` must
/// be the address the socket is bound to.
pub fn add_host_candidate(pc: &mut RTCPeerConnection, addr: SocketAddr) -> Result<(), Error> {
    add_candidate(pc, addr, "udp", TcpType::Unspecified)
}

/// Gives `pc` a passive ICE-TCP host candidate at `addr` (the shard's TCP
/// listener, at its UDP socket's address). RFC 6544 §4.2 ranks it below
/// the UDP one (local preference 40959 against 65535), so a client uses
/// it only when UDP fails.
pub fn add_tcp_candidate(pc: &mut RTCPeerConnection, addr: SocketAddr) -> Result<(), Error> {
    add_candidate(pc, addr, "tcp", TcpType::Passive)
}

fn add_candidate(
    pc: &mut RTCPeerConnection,
    addr: SocketAddr,
    network: &str,
    tcp_type: TcpType,
) -> Result<(), Error> {
    let candidate = CandidateHostConfig {
        base_config: CandidateConfig {
            network: network.to_owned(),
            address: addr.ip().to_string(),
            port: addr.port(),
            component: 1,
            ..Default::default()
        },
        tcp_type,
    }
    .new_candidate_host()?;
    pc.add_local_candidate(RTCIceCandidate::from(&candidate).to_json()?)
}

#[cfg(test)]
mod one_port_tests;

/// A track a connection sends with one encoding: `codec` on `ssrc`, the
/// SSRC the engine writes its packets with.
pub fn send_track(id: &str, kind: RtpCodecKind, ssrc: u32, codec: RTCRtpCodec) -> MediaStreamTrack {
    MediaStreamTrack::new(
        "vigil".to_owned(),
        id.to_owned(),
        id.to_owned(),
        kind,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(ssrc),
                ..Default::default()
            },
            codec,
            ..Default::default()
        }],
    )
}

/// H.264 Constrained Baseline 3.1 with packetization mode 1: the H.264 that
/// OBS, FFmpeg, GStreamer and every browser offer.
pub fn h264_baseline() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: rtc::peer_connection::configuration::media_engine::MIME_TYPE_H264.to_owned(),
        clock_rate: 90_000,
        channels: 0,
        sdp_fmtp_line: "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"
            .to_owned(),
        rtcp_feedback: Vec::new(),
    }
}
