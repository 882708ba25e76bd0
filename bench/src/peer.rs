//! One str0m `Rtc` with its own UDP socket on 127.0.0.1: how publishers and
//! viewers are offered and answered, and how the media loop drives them.
//!
//! Media runs in str0m's RTP mode: the publisher writes the RTP packets it
//! built itself, and viewers see every packet as it arrives (sequence
//! number, marker, payload), with no jitter buffer in between.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use mio::net::UdpSocket;
use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::config::DtlsCert;
use str0m::error::{IceError, SdpError};
use str0m::media::{Direction, MediaKind, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc, RtcConfig, RtcError};

use crate::udp::{self, Datagram};

/// H264 Constrained Baseline 3.1, packetization-mode 1, with RTX: what
/// browsers offer first. Only this and Opus are offered, so these are the
/// payload types on the wire in both directions (the answerer keeps them).
pub const VIDEO_PT: u8 = 102;
const VIDEO_RTX_PT: u8 = 103;
const H264_PROFILE: u32 = 0x42e01f;

#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// Binding or configuring the UDP socket failed.
    #[error("socket: {0}")]
    Socket(#[from] io::Error),
    /// str0m refused our host candidate.
    #[error("local candidate: {0}")]
    Candidate(#[from] IceError),
    /// The answer is not SDP str0m can read.
    #[error("answer: {0}")]
    Sdp(#[from] SdpError),
    /// str0m refused the answer.
    #[error("applying the answer: {0}")]
    Rtc(#[from] RtcError),
    /// Nothing to connect to without leaving loopback.
    #[error("the answer has no UDP candidate on a loopback address")]
    NoLoopbackCandidate,
}

#[derive(Debug, Clone, Copy)]
pub enum Role {
    Publish,
    Play,
}

pub struct Peer {
    pub rtc: Rtc,
    socket: UdpSocket,
    local: SocketAddr,
    pub audio: Mid,
    pub video: Mid,
    /// Datagrams str0m wanted sent that were not: off loopback, or the
    /// socket refused them.
    pub unsent: u64,
}

/// A peer whose offer is out, waiting for the server's answer.
pub struct Offer {
    peer: Peer,
    pending: SdpPendingOffer,
    pub sdp: String,
}

impl Offer {
    /// Sets up a peer with one audio and one video m-line in `role`'s
    /// direction. `cert` is shared: generating one per viewer is wasted work.
    pub fn new(role: Role, cert: &DtlsCert) -> Result<Offer, PeerError> {
        let socket = udp::bind_loopback()?;
        let local = socket.local_addr()?;
        let mut config = RtcConfig::new()
            .set_rtp_mode(true)
            .set_crypto_provider(crate::dtls::provider())
            .set_dtls_cert(cert.clone())
            .clear_codecs()
            .enable_opus(true, false);
        config.codec_config().add_h264(
            Pt::new_with_value(VIDEO_PT),
            Some(Pt::new_with_value(VIDEO_RTX_PT)),
            true,
            H264_PROFILE,
        );
        let mut rtc = config.build(Instant::now());
        rtc.add_local_candidate(Candidate::host(local, "udp")?);

        let direction = match role {
            Role::Publish => Direction::SendOnly,
            Role::Play => Direction::RecvOnly,
        };
        let mut change = rtc.sdp_api();
        let audio = change.add_media(MediaKind::Audio, direction, None, None, None);
        let video = change.add_media(MediaKind::Video, direction, None, None, None);
        let (offer, pending) = change.apply().expect("two new m-lines make an offer");
        Ok(Offer {
            peer: Peer {
                rtc,
                socket,
                local,
                audio,
                video,
                unsent: 0,
            },
            pending,
            sdp: offer.to_sdp_string(),
        })
    }

    /// Applies the server's answer, keeping only its loopback candidates.
    pub fn accept(self, answer: &str) -> Result<Peer, PeerError> {
        let answer = loopback_candidates_only(answer).ok_or(PeerError::NoLoopbackCandidate)?;
        let answer = SdpAnswer::from_sdp_string(&answer)?;
        let mut peer = self.peer;
        peer.rtc.sdp_api().accept_answer(self.pending, answer)?;
        Ok(peer)
    }
}

impl Peer {
    pub fn socket(&self) -> &UdpSocket {
        &self.socket
    }

    pub fn socket_mut(&mut self) -> &mut UdpSocket {
        &mut self.socket
    }

    pub fn receive(
        &mut self,
        now: Instant,
        datagram: &Datagram,
        buf: &[u8],
    ) -> Result<(), RtcError> {
        // Neither STUN, DTLS nor (S)RTP: not for us.
        let Ok(contents) = buf[..datagram.len].try_into() else {
            return Ok(());
        };
        self.rtc.handle_input(Input::Receive(
            now,
            Receive {
                proto: Protocol::Udp,
                source: datagram.source,
                destination: self.local,
                contents,
            },
        ))
    }

    pub fn timeout(&mut self, now: Instant) -> Result<(), RtcError> {
        self.rtc.handle_input(Input::Timeout(now))
    }

    /// Sends everything str0m has to send and hands its events to
    /// `on_event`, until it asks for a timeout, which is returned. str0m
    /// requires this after every input or write.
    pub fn drain(&mut self, mut on_event: impl FnMut(Event)) -> Result<Instant, RtcError> {
        loop {
            match self.rtc.poll_output()? {
                Output::Timeout(at) => return Ok(at),
                Output::Event(event) => on_event(event),
                Output::Transmit(t) => {
                    let sent = t.destination.ip().is_loopback()
                        && self.socket.send_to(&t.contents, t.destination).is_ok();
                    if !sent {
                        self.unsent += 1;
                    }
                }
            }
        }
    }
}

/// The answer with every candidate dropped that is not UDP on a loopback
/// address; `None` if that leaves none.
fn loopback_candidates_only(sdp: &str) -> Option<String> {
    let mut kept = 0;
    let mut out = String::with_capacity(sdp.len());
    for line in sdp.split_inclusive('\n') {
        if let Some(candidate) = line.trim_end().strip_prefix("a=candidate:") {
            // foundation component transport priority address port typ ...
            let fields: Vec<&str> = candidate.split_whitespace().collect();
            let usable = fields.len() >= 6
                && fields[2].eq_ignore_ascii_case("udp")
                && fields[4].parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
            if !usable {
                continue;
            }
            kept += 1;
        }
        out.push_str(line);
    }
    (kept > 0).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_udp_candidates_survive() {
        let sdp = "v=0\r\n\
                   m=video 9 UDP/TLS/RTP/SAVPF 102\r\n\
                   a=candidate:1 1 udp 2130706431 127.0.0.1 40001 typ host\r\n\
                   a=candidate:2 1 udp 2130706431 192.168.1.5 40002 typ host\r\n\
                   a=candidate:3 1 tcp 1671430143 127.0.0.1 9 typ host tcptype active\r\n\
                   a=candidate:4 1 udp 2130706431 abcd.local 40004 typ host\r\n\
                   a=end-of-candidates\r\n";
        let kept = loopback_candidates_only(sdp).unwrap();
        assert!(kept.contains("127.0.0.1 40001"));
        assert!(!kept.contains("192.168.1.5"));
        assert!(!kept.contains("tcptype"));
        assert!(!kept.contains(".local"));
        assert!(kept.ends_with("a=end-of-candidates\r\n"));
        assert_eq!(
            loopback_candidates_only("a=candidate:2 1 udp 1 10.0.0.1 5 typ host\r\n"),
            None
        );
    }

    #[test]
    fn offers_declare_their_send_streams() {
        let cert = crate::dtls::provider()
            .dtls_provider
            .generate_certificate()
            .unwrap();
        let offer = Offer::new(Role::Publish, &cert).unwrap();
        // Servers on webrtc-rs route bundled RTP by a=ssrc.
        assert_eq!(offer.sdp.matches("a=sendonly").count(), 2);
        assert!(offer.sdp.contains("a=ssrc:"));
        assert!(offer.sdp.contains(" 127.0.0.1 "));
        assert!(offer.sdp.contains("H264/90000"));
        let play = Offer::new(Role::Play, &cert).unwrap();
        assert_eq!(play.sdp.matches("a=recvonly").count(), 2);
    }
}
