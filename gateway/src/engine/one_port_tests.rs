//! Many `rtc` connections behind one address, driven packet by packet with
//! a fake clock and no sockets: the [`Demux`] is the only thing that tells
//! their datagrams apart.
//!
//! Server side: ICE-lite connections, each with ICE credentials the engine
//! chose, one H.264 send track, and one host candidate, the same for all
//! ([`SERVER`]). Client side: full-ICE `rtc` connections shaped like WHEP
//! players (receive-only offer). A small NAT in the harness can move a
//! client to a new public address, as a rebinding does.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::configuration::interceptor_registry::register_default_interceptors;
use rtc::peer_connection::configuration::media_engine::{MIME_TYPE_H264, MediaEngine};
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::event::RTCPeerConnectionEvent;
use rtc::peer_connection::message::{RTCMessage, TaggedRTCMessage};
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodec, RtpCodecKind};
use rtc::rtp_transceiver::{RTCRtpSenderId, RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};

use super::demux::Demux;
use super::{add_host_candidate, send_track};

/// The one media address every server connection shares.
const SERVER: SocketAddr = SocketAddr::new(
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1)),
    8189,
);

fn build(setting_engine: SettingEngineBuilder, now: Instant) -> RTCPeerConnection {
    let mut media_engine = MediaEngine::default();
    media_engine
        .register_default_codecs()
        .expect("default codecs");
    let registry =
        register_default_interceptors(Default::default(), &mut media_engine).expect("interceptors");
    RTCPeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_setting_engine(setting_engine.build())
        .with_media_engine(media_engine)
        .with_interceptor_registry(registry)
        .build(now)
        .expect("peer connection")
}

struct Session {
    server: RTCPeerConnection,
    client: RTCPeerConnection,
    /// The client's own address (its host candidate).
    client_addr: SocketAddr,
    /// Where the client's datagrams appear to come from, after the NAT.
    public_addr: SocketAddr,
    sender: RTCRtpSenderId,
    ssrc: u32,
    connected: [bool; 2],
    /// SSRCs of the RTP the client received, in order.
    received: Vec<u32>,
}

impl Session {
    fn new(index: u8, now: Instant) -> Session {
        let ufrag = format!("vigil{index}");
        let lite = SettingEngineBuilder::new()
            .with_lite(true)
            .with_ice_credentials(ufrag, format!("password-of-session-{index:03}-xx"));
        let mut server = build(lite, now);
        add_host_candidate(&mut server, SERVER).expect("host candidate");

        let client_addr = SocketAddr::from(([10, 1, 0, index], 5000));
        let mut client = build(SettingEngineBuilder::new(), now);
        add_host_candidate(&mut client, client_addr).expect("host candidate");
        client
            .add_transceiver_from_kind(
                RtpCodecKind::Video,
                Some(RTCRtpTransceiverInit {
                    direction: RTCRtpTransceiverDirection::Recvonly,
                    ..Default::default()
                }),
            )
            .expect("recvonly");
        let offer = client.create_offer(None).expect("offer");
        client
            .set_local_description(now, offer.clone())
            .expect("client local description");

        let ssrc = 0x7000 + u32::from(index);
        let codec = RTCRtpCodec {
            mime_type: MIME_TYPE_H264.to_owned(),
            clock_rate: 90_000,
            channels: 0,
            sdp_fmtp_line: "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"
                .to_owned(),
            rtcp_feedback: Vec::new(),
        };
        let track = send_track(&format!("video-{index}"), RtpCodecKind::Video, ssrc, codec);
        let sender = server.add_track(track).expect("track");
        server.set_remote_description(now, offer).expect("offer");
        let answer = server.create_answer(None).expect("answer");
        server
            .set_local_description(now, answer.clone())
            .expect("server local description");
        client.set_remote_description(now, answer).expect("answer");
        Session {
            server,
            client,
            client_addr,
            public_addr: client_addr,
            sender,
            ssrc,
            connected: [false, false],
            received: Vec::new(),
        }
    }

    /// Sends one RTP packet on the session's track.
    fn send_rtp(&mut self, now: Instant, seq: u16) {
        let mut sender = self.server.rtp_sender(self.sender).expect("sender");
        let payload_type = sender
            .get_parameters()
            .rtp_parameters
            .codecs
            .iter()
            .find(|c| c.rtp_codec.mime_type.eq_ignore_ascii_case(MIME_TYPE_H264))
            .expect("H264 negotiated")
            .payload_type;
        sender
            .write_rtp(
                now,
                rtp::Packet {
                    header: rtp::header::Header {
                        version: 2,
                        payload_type,
                        sequence_number: seq,
                        timestamp: u32::from(seq) * 3000,
                        marker: true,
                        ssrc: self.ssrc,
                        ..Default::default()
                    },
                    payload: Bytes::from_static(&[0x41, 0x9a, 0, 0]),
                },
            )
            .expect("write_rtp");
    }
}

/// The sessions, the demultiplexer in front of their one address, and a
/// fake clock.
struct World {
    sessions: Vec<Session>,
    demux: Demux<usize>,
    now: Instant,
    /// Datagrams to the server that the demultiplexer routed nowhere.
    unrouted: usize,
    /// Datagrams to a client address nobody holds any more.
    lost_to_old_addresses: usize,
}

impl World {
    fn new(sessions: u8) -> World {
        let now = Instant::now();
        let sessions: Vec<Session> = (1..=sessions).map(|i| Session::new(i, now)).collect();
        let mut demux = Demux::new();
        for (i, s) in sessions.iter().enumerate() {
            demux.add_ufrag(i, &format!("vigil{}", i + 1));
            // The engine routes by the ufrag it chose; the SDP must carry it.
            let answer = s.server.local_description().expect("answer").sdp.clone();
            assert!(answer.contains(&format!("a=ice-ufrag:vigil{}", i + 1)));
            assert!(answer.contains("a=ice-lite"));
        }
        World {
            sessions,
            demux,
            now,
            unrouted: 0,
            lost_to_old_addresses: 0,
        }
    }

    /// Moves every pending datagram once, runs due timers, then advances the
    /// clock by `step`.
    fn step(&mut self, step: Duration) {
        let now = self.now;
        // Clients → the shared server address, through the demultiplexer.
        let mut to_server = Vec::new();
        for s in &mut self.sessions {
            while let Some(out) = s.client.poll_write() {
                assert_eq!(
                    out.transport.peer_addr, SERVER,
                    "clients only know one address"
                );
                to_server.push((s.public_addr, out.message));
            }
        }
        for (from, datagram) in to_server {
            self.deliver_to_server(from, datagram);
        }
        // Server connections → wherever the demultiplexer says.
        for i in 0..self.sessions.len() {
            while let Some(out) = self.sessions[i].server.poll_write() {
                let to = self
                    .demux
                    .on_transmit(i, out.transport.peer_addr, &out.message);
                match self.sessions.iter_mut().find(|s| s.public_addr == to) {
                    Some(client) => {
                        let read = TaggedBytesMut {
                            now,
                            transport: TransportContext {
                                local_addr: client.client_addr,
                                peer_addr: SERVER,
                                transport_protocol: TransportProtocol::UDP,
                                ecn: None,
                            },
                            message: out.message,
                        };
                        let _dropped_if_refused = client.client.handle_read(read);
                    }
                    None => self.lost_to_old_addresses += 1,
                }
            }
        }
        for s in &mut self.sessions {
            for (side, pc) in [&mut s.server, &mut s.client].into_iter().enumerate() {
                while let Some(event) = pc.poll_event() {
                    if let RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) = event {
                        s.connected[side] = state == RTCPeerConnectionState::Connected;
                    }
                }
                if pc.poll_timeout().is_some_and(|at| at <= now) {
                    let _ended_by_state_events = pc.handle_timeout(now);
                }
            }
            while s.server.poll_read().is_some() {}
            while let Some(TaggedRTCMessage { message, .. }) = s.client.poll_read() {
                if let RTCMessage::RtpPacket(_, packet) = message {
                    s.received.push(packet.header.ssrc);
                }
            }
        }
        self.now += step;
    }

    fn deliver_to_server(&mut self, from: SocketAddr, datagram: bytes::BytesMut) {
        let Some(i) = self.demux.route(from, &datagram) else {
            self.unrouted += 1;
            return;
        };
        let read = TaggedBytesMut {
            now: self.now,
            transport: TransportContext {
                local_addr: SERVER,
                peer_addr: from,
                transport_protocol: TransportProtocol::UDP,
                ecn: None,
            },
            message: datagram,
        };
        let _dropped_if_refused = self.sessions[i].server.handle_read(read);
    }

    fn run_until(&mut self, what: &str, limit: Duration, done: impl Fn(&World) -> bool) {
        let deadline = self.now + limit;
        while !done(self) {
            assert!(
                self.now < deadline,
                "{what}: not within {limit:?} of fake time"
            );
            self.step(Duration::from_millis(5));
        }
    }

    fn all_connected(&self) -> bool {
        self.sessions.iter().all(|s| s.connected == [true, true])
    }
}

#[test]
fn sessions_sharing_one_address_connect_and_get_only_their_own_media() {
    let mut world = World::new(3);
    world.run_until(
        "ICE and DTLS",
        Duration::from_secs(10),
        World::all_connected,
    );

    for seq in 0..20 {
        let now = world.now;
        for s in &mut world.sessions {
            s.send_rtp(now, seq);
        }
        world.step(Duration::from_millis(5));
    }
    world.run_until("media", Duration::from_secs(1), |w| {
        w.sessions.iter().all(|s| s.received.len() >= 20)
    });
    for s in &world.sessions {
        assert!(
            s.received.iter().all(|ssrc| *ssrc == s.ssrc),
            "client of SSRC {:#x} got {:?}",
            s.ssrc,
            s.received
        );
    }
}

#[test]
fn a_datagram_from_an_unchecked_address_is_not_routed() {
    let mut world = World::new(2);
    world.run_until(
        "ICE and DTLS",
        Duration::from_secs(10),
        World::all_connected,
    );

    // Anything from an address that passed no check of this connection,
    // even a copy of a real client's datagram, goes nowhere.
    let before = world.unrouted;
    let spoofed = bytes::BytesMut::from(&[0x80u8, 0x60, 0, 9, 0, 0, 0, 9, 0, 0, 0x70, 0x01][..]);
    world.deliver_to_server(SocketAddr::from(([203, 0, 113, 9], 5000)), spoofed);
    assert_eq!(world.unrouted, before + 1);
    let dtls_like = bytes::BytesMut::from(&[22u8, 0xfe, 0xfd, 0, 0][..]);
    world.deliver_to_server(SocketAddr::from(([10, 1, 0, 1], 5001)), dtls_like);
    assert_eq!(world.unrouted, before + 2);
    assert!(world.all_connected(), "nobody was disturbed");
}

#[test]
fn a_rebound_client_keeps_playing_after_its_next_check() {
    let mut world = World::new(2);
    world.run_until(
        "ICE and DTLS",
        Duration::from_secs(10),
        World::all_connected,
    );

    // Client 0's NAT gives it a new public port; the old mapping is gone.
    let rebound = SocketAddr::from(([198, 51, 100, 7], 40_000));
    world.sessions[0].public_addr = rebound;
    let received_before = world.sessions[0].received.len();
    world.run_until(
        "media after the client's next check",
        Duration::from_secs(5),
        |w| w.demux.current_addr(0) == Some(rebound),
    );
    for seq in 100..110 {
        let now = world.now;
        for s in &mut world.sessions {
            s.send_rtp(now, seq);
        }
        world.step(Duration::from_millis(5));
    }
    world.run_until("media to the new address", Duration::from_secs(1), |w| {
        w.sessions[0].received.len() >= received_before + 10
    });
    assert!(
        world.sessions[1].received.len() >= 10,
        "the other client is untouched"
    );
    assert!(world.all_connected());
    let by_ssrc: HashMap<u32, usize> =
        world.sessions[0]
            .received
            .iter()
            .fold(HashMap::new(), |mut counts, ssrc| {
                *counts.entry(*ssrc).or_default() += 1;
                counts
            });
    assert_eq!(by_ssrc.len(), 1, "only its own track");
}
