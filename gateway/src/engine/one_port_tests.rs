//! A [`Shard`] with many `rtc` connections behind its one address, driven
//! packet by packet with a fake clock and no sockets.
//!
//! Server side: ICE-lite connections with ICE credentials the test chose
//! and one host candidate, the same for all ([`SERVER`]), handed to the
//! shard. Client side: full-ICE `rtc` connections shaped like WHEP players
//! (receive-only offer) or WHIP publishers (send-only offer). A small NAT in
//! the harness can move a client to a new public address, as a rebinding
//! does.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rtc::interceptor::{Registry, Slot};
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::configuration::interceptor_registry::{
    configure_rtcp_reports, register_default_interceptors,
};
use rtc::peer_connection::configuration::media_engine::MediaEngine;
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::event::RTCPeerConnectionEvent;
use rtc::peer_connection::message::{RTCMessage, TaggedRTCMessage};
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::sender_report::SenderReport;
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use rtc::rtp_transceiver::{RTCRtpSenderId, RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};

use super::fast::srtp_context;
use super::shard::{ConnId, Event, LocalTrack, Shard, TrackId};
use super::{FEEDBACK_SLOT, add_host_candidate, feedback_tap, h264_baseline, send_track};
use crate::sfu::MediaKind;
use crate::sfu::layers::LayerChoice;
use crate::sfu::stream_counters::StreamCounters;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::interceptor_registry::configure_simulcast_extension_headers;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodingParameters, RTCRtpEncodingParameters, RTCRtpRtxParameters,
};
use rtc::sdp::extmap::{SDES_MID_URI, SDES_RTP_STREAM_ID_URI};

/// The one media address of the shard.
const SERVER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), 8189);

/// A connection: the server's get the engine's slim chain (keyframe
/// requests and reports to the engine, RR/SR), clients rtc's default one.
fn build(setting_engine: SettingEngineBuilder, server: bool, now: Instant) -> RTCPeerConnection {
    let mut media_engine = MediaEngine::default();
    media_engine
        .register_default_codecs()
        .expect("default codecs");
    configure_simulcast_extension_headers(&mut media_engine).expect("simulcast extensions");
    let registry = if server {
        configure_rtcp_reports(Registry::new().with(Slot::from(FEEDBACK_SLOT), feedback_tap()))
    } else {
        register_default_interceptors(Registry::new(), &mut media_engine).expect("interceptors")
    };
    RTCPeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_setting_engine(setting_engine.build())
        .with_media_engine(media_engine)
        .with_interceptor_registry(registry)
        .build(now)
        .expect("peer connection")
}

/// What a client does.
#[derive(Clone, Copy, PartialEq)]
enum Role {
    /// Receives one video track (WHEP).
    Viewer,
    /// Sends one video track on this SSRC (WHIP).
    Publisher(u32),
    /// Sends one video track in simulcast: a layer per (rid, SSRC).
    Simulcast(&'static [(&'static str, u32)]),
}

struct Client {
    pc: RTCPeerConnection,
    /// Its own address (its host candidate).
    addr: SocketAddr,
    /// Where its datagrams appear to come from, after the NAT.
    public_addr: SocketAddr,
    connected: bool,
    /// `false` once it vanished (a phone that lost its network): nothing
    /// it sends arrives, nothing reaches it.
    alive: bool,
    /// RTP it received: (SSRC, sequence number, payload).
    received: Vec<(u32, u16, Bytes)>,
    /// The payload type of each packet in `received`.
    payload_types: Vec<u8>,
}

/// The server end of a client's session, in the shard.
struct ServerEnd {
    conn: ConnId,
    /// For a viewer: its send track's sender and SSRC.
    sender: Option<(RTCRtpSenderId, u32)>,
}

/// The shard, its clients and a fake clock.
struct World {
    shard: Shard,
    clients: Vec<Client>,
    ends: Vec<ServerEnd>,
    now: Instant,
    events: Vec<Event>,
    /// Datagrams to a client address nobody holds any more.
    lost_to_old_addresses: usize,
    /// Loss on the way to one client: (client, k, n): k of every n RTP
    /// datagrams are dropped, below SRTP, as a network loses them.
    lose: Option<(usize, usize, usize)>,
    /// STUN Binding requests the clients sent, and the shard's Binding
    /// requests and success responses.
    checks_in: usize,
    checks_out: usize,
    successes_out: usize,
    /// Every RTCP datagram the shard sent, still sealed: (to, datagram).
    rtcp_sent: Vec<(SocketAddr, BytesMut)>,
    /// Viewers that join from now on send their track with an RTX SSRC.
    viewer_rtx: bool,
    /// RTP datagrams the shard sent, by SSRC (in the clear in SRTP).
    rtp_out: std::collections::HashMap<u32, usize>,
    /// RTP datagrams dropped by `lose`, and the RTP datagrams it counted.
    dropped: usize,
    rtp_to_lossy: usize,
}

impl World {
    fn new() -> World {
        World {
            shard: Shard::new(SERVER),
            clients: Vec::new(),
            ends: Vec::new(),
            now: Instant::now(),
            events: Vec::new(),
            lost_to_old_addresses: 0,
            lose: None,
            checks_in: 0,
            checks_out: 0,
            successes_out: 0,
            rtcp_sent: Vec::new(),
            viewer_rtx: false,
            rtp_out: std::collections::HashMap::new(),
            dropped: 0,
            rtp_to_lossy: 0,
        }
    }

    /// Negotiates a client with a new server connection and hands the
    /// latter to the shard. Returns the client's index.
    fn join(&mut self, role: Role) -> usize {
        let index = self.clients.len();
        let now = self.now;
        let ufrag = format!("vigil{index}");
        let lite = SettingEngineBuilder::new()
            .with_lite(true)
            .with_ice_credentials(ufrag.clone(), format!("password-of-session-{index:03}-xx"));
        let mut server = build(lite, true, now);
        add_host_candidate(&mut server, SERVER).expect("host candidate");

        let addr = SocketAddr::from(([10, 1, 0, index as u8 + 1], 5000));
        let mut client = build(SettingEngineBuilder::new(), false, now);
        add_host_candidate(&mut client, addr).expect("host candidate");
        match role {
            Role::Viewer => {
                client
                    .add_transceiver_from_kind(
                        RtpCodecKind::Video,
                        Some(RTCRtpTransceiverInit {
                            direction: RTCRtpTransceiverDirection::Recvonly,
                            ..Default::default()
                        }),
                    )
                    .expect("recvonly");
            }
            Role::Publisher(ssrc) => {
                client
                    .add_track(send_track(
                        "camera",
                        RtpCodecKind::Video,
                        ssrc,
                        h264_baseline(),
                    ))
                    .expect("send track");
            }
            Role::Simulcast(layers) => {
                let codings = layers
                    .iter()
                    .map(|&(rid, ssrc)| RTCRtpEncodingParameters {
                        rtp_coding_parameters: RTCRtpCodingParameters {
                            rid: rid.to_owned(),
                            ssrc: Some(ssrc),
                            ..Default::default()
                        },
                        codec: h264_baseline(),
                        ..Default::default()
                    })
                    .collect();
                client
                    .add_track(MediaStreamTrack::new(
                        "vigil".to_owned(),
                        "camera".to_owned(),
                        "camera".to_owned(),
                        RtpCodecKind::Video,
                        codings,
                    ))
                    .expect("simulcast track");
            }
        }
        let offer = client.create_offer(None).expect("offer");
        client
            .set_local_description(now, offer.clone())
            .expect("client local description");

        let sender = match role {
            Role::Viewer => {
                let ssrc = 0x7000 + index as u32;
                let mut track = send_track(
                    &format!("video-{index}"),
                    RtpCodecKind::Video,
                    ssrc,
                    h264_baseline(),
                );
                if self.viewer_rtx {
                    let mut codings = track.codings().to_vec();
                    codings[0].rtp_coding_parameters.rtx = Some(RTCRtpRtxParameters {
                        ssrc: ssrc + 0x1000,
                    });
                    track = MediaStreamTrack::new(
                        "vigil".to_owned(),
                        format!("video-{index}"),
                        format!("video-{index}"),
                        RtpCodecKind::Video,
                        codings,
                    );
                }
                Some((server.add_track(track).expect("track"), ssrc))
            }
            Role::Publisher(_) | Role::Simulcast(_) => None,
        };
        server.set_remote_description(now, offer).expect("offer");
        let answer = server.create_answer(None).expect("answer");
        server
            .set_local_description(now, answer.clone())
            .expect("server local description");
        assert!(answer.sdp.contains(&format!("a=ice-ufrag:{ufrag}")));
        assert!(answer.sdp.contains("a=ice-lite"));
        client.set_remote_description(now, answer).expect("answer");

        let conn = self.shard.add_connection(server, &ufrag, now);
        self.ends.push(ServerEnd { conn, sender });
        self.clients.push(Client {
            pc: client,
            addr,
            public_addr: addr,
            connected: false,
            alive: true,
            received: Vec::new(),
            payload_types: Vec::new(),
        });
        index
    }

    /// Moves every pending datagram once, runs due timers, then advances the
    /// clock by `step`.
    fn step(&mut self, step: Duration) {
        let now = self.now;
        for i in 0..self.clients.len() {
            while let Some(out) = self.clients[i].pc.poll_write() {
                if !self.clients[i].alive {
                    continue;
                }
                assert_eq!(out.transport.peer_addr, SERVER, "clients know one address");
                let from = self.clients[i].public_addr;
                if out.message.starts_with(&[0x00, 0x01]) {
                    self.checks_in += 1;
                }
                self.shard.handle_datagram(now, from, out.message);
            }
        }
        if self.shard.poll_timeout().is_some_and(|at| at <= now) {
            self.shard.handle_timeout(now);
        }
        while let Some(transmit) = self.shard.poll_transmit() {
            let to = transmit.to;
            if transmit.payload.starts_with(&[0x00, 0x01]) {
                self.checks_out += 1;
            } else if transmit.payload.starts_with(&[0x01, 0x01]) {
                self.successes_out += 1;
            }
            if transmit.payload.len() > 8 && (192..=223).contains(&transmit.payload[1]) {
                self.rtcp_sent.push((to, transmit.payload.clone()));
            }
            if transmit.payload.len() > 12
                && transmit.payload[0] >> 6 == 2
                && !(192..=223).contains(&transmit.payload[1])
            {
                let ssrc = u32::from_be_bytes([
                    transmit.payload[8],
                    transmit.payload[9],
                    transmit.payload[10],
                    transmit.payload[11],
                ]);
                *self.rtp_out.entry(ssrc).or_default() += 1;
            }
            if let Some((lossy, k, n)) = self.lose {
                let is_rtp = transmit.payload.len() > 12
                    && transmit.payload[0] >> 6 == 2
                    && !(192..=223).contains(&transmit.payload[1]);
                if is_rtp && self.clients[lossy].public_addr == to {
                    self.rtp_to_lossy += 1;
                    if self.rtp_to_lossy % n < k {
                        self.dropped += 1;
                        continue;
                    }
                }
            }
            match self
                .clients
                .iter_mut()
                .find(|c| c.alive && c.public_addr == to)
            {
                Some(client) => {
                    let read = TaggedBytesMut {
                        now,
                        transport: TransportContext {
                            local_addr: client.addr,
                            peer_addr: SERVER,
                            transport_protocol: TransportProtocol::UDP,
                            ecn: None,
                        },
                        message: transmit.payload,
                    };
                    let _dropped_if_refused = client.pc.handle_read(read);
                }
                None => self.lost_to_old_addresses += 1,
            }
        }
        while let Some(event) = self.shard.poll_event() {
            self.events.push(event);
        }
        for c in &mut self.clients {
            while let Some(event) = c.pc.poll_event() {
                if let RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) = event {
                    c.connected = state == RTCPeerConnectionState::Connected;
                }
            }
            if c.pc.poll_timeout().is_some_and(|at| at <= now) {
                let _ended_by_state_events = c.pc.handle_timeout(now);
            }
            while let Some(TaggedRTCMessage { message, .. }) = c.pc.poll_read() {
                if let RTCMessage::RtpPacket(_, p) = message {
                    c.payload_types.push(p.header.payload_type);
                    c.received
                        .push((p.header.ssrc, p.header.sequence_number, p.payload));
                }
            }
        }
        self.now += step;
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

    fn connect_all(&mut self) {
        self.run_until("ICE and DTLS", Duration::from_secs(10), |w| {
            w.clients.iter().all(|c| c.connected)
                && w.ends
                    .iter()
                    .all(|e| w.events.contains(&Event::Connected(e.conn)))
        });
    }

    /// A connected publisher sending on `camera` and two connected viewers
    /// subscribed to it: (world, publisher, viewers).
    fn stream_with_two_viewers(camera: u32) -> (World, usize, [usize; 2]) {
        let mut world = World::new();
        let publisher = world.join(Role::Publisher(camera));
        let viewers = [world.join(Role::Viewer), world.join(Role::Viewer)];
        world.connect_all();
        for v in viewers {
            world.subscribe(v, publisher, camera);
        }
        (world, publisher, viewers)
    }

    /// Subscribes viewer client `viewer` to what publisher client
    /// `publisher` sends on `ssrc`.
    fn subscribe(&mut self, viewer: usize, publisher: usize, ssrc: u32) {
        let (sender, viewer_ssrc) = self.ends[viewer].sender.expect("a viewer");
        let track = self.track(publisher);
        assert_eq!(track.layer(ssrc).conn, self.ends[publisher].conn);
        self.shard
            .subscribe(
                track,
                self.ends[viewer].conn,
                sender,
                viewer_ssrc,
                LayerChoice::High,
                self.now,
            )
            .expect("subscribe");
    }

    /// Publisher client `publisher`'s video track, as negotiated.
    fn track(&mut self, publisher: usize) -> TrackId {
        self.shard
            .published_tracks(self.ends[publisher].conn)
            .into_iter()
            .find(|(_, kind)| *kind == MediaKind::Video)
            .expect("a video track")
            .0
    }

    /// Publisher client `index` sends one packet.
    /// The publisher at `index` sends `seqs` on `ssrc`, one packet every
    /// `every` of fake time.
    fn publish(&mut self, index: usize, ssrc: u32, seqs: std::ops::Range<u16>, every: Duration) {
        for seq in seqs {
            self.client_sends(index, ssrc, seq);
            self.step(every);
        }
    }

    /// PLIs for `ssrc` the shard sent to publisher client `publisher`, read
    /// off the wire and opened with the publisher connection's keys (rtc's
    /// receiving side does not show a sender's feedback to the
    /// application).
    fn plis_sent(&self, publisher: usize, ssrc: u32) -> usize {
        let keys = self
            .shard
            .local_srtp_keys(self.ends[publisher].conn)
            .expect("DTLS is up");
        let to = self.clients[publisher].public_addr;
        let mut open = srtp_context(&keys).expect("context");
        self.rtcp_sent
            .iter()
            .filter(|(a, _)| *a == to)
            .map(|(_, sealed)| {
                let plain = open.decrypt_rtcp(sealed).expect("sealed with its keys");
                rtc::rtcp::packet::unmarshal(&mut &plain[..])
                    .expect("RTCP")
                    .iter()
                    .filter(|p| {
                        p.as_any()
                            .downcast_ref::<PictureLossIndication>()
                            .is_some_and(|pli| pli.media_ssrc == ssrc)
                    })
                    .count()
            })
            .sum()
    }

    fn client_sends(&mut self, index: usize, ssrc: u32, seq: u16) {
        self.client_sends_packet(index, packet(ssrc, seq));
    }

    /// Publisher client `index` sends `p` with its negotiated payload type;
    /// a simulcast layer's packet carries the MID and rid extensions (RFC
    /// 8852), as browsers send them.
    fn client_sends_packet(&mut self, index: usize, mut p: rtp::Packet) {
        let now = self.now;
        let pc = &mut self.clients[index].pc;
        let sender = pc.get_senders().next().expect("a sender");
        let mut sender = pc.rtp_sender(sender).expect("sender");
        let parameters = sender.get_parameters();
        p.header.payload_type = parameters.rtp_parameters.codecs[0].payload_type;
        let rid = parameters
            .encodings
            .iter()
            .find(|e| e.rtp_coding_parameters.ssrc == Some(p.header.ssrc))
            .map(|e| e.rtp_coding_parameters.rid.clone())
            .filter(|rid| !rid.is_empty());
        if let Some(rid) = rid {
            let id = |uri: &str| {
                parameters
                    .rtp_parameters
                    .header_extensions
                    .iter()
                    .find(|e| e.uri == uri)
                    .map(|e| e.id as u8)
                    .expect("negotiated extension")
            };
            let (mid, rid_id) = (id(SDES_MID_URI), id(SDES_RTP_STREAM_ID_URI));
            p.header
                .set_extension(mid, Bytes::from_static(b"0"))
                .expect("mid");
            p.header
                .set_extension(rid_id, Bytes::from(rid.into_bytes()))
                .expect("rid");
        }
        sender.write_rtp(now, p).expect("write_rtp");
    }
}

/// The payload type an SDP gives Constrained Baseline H.264 with
/// packetization mode 1 (the engine's track codec).
fn h264_payload_type(sdp: &str) -> u8 {
    sdp.lines()
        .filter_map(|l| l.strip_prefix("a=fmtp:"))
        .find(|l| l.contains("profile-level-id=42e01f") && l.contains("packetization-mode=1"))
        .and_then(|l| l.split(' ').next())
        .and_then(|pt| pt.parse().ok())
        .expect("H.264 in the answer")
}

/// [`packet`] of a two-layer simulcast stream: 100 bytes on the first
/// layer of `layers`, 1,000 on the other.
fn layer_packet(layers: &[(&str, u32)], ssrc: u32, seq: u16) -> rtp::Packet {
    let mut p = packet(ssrc, seq);
    let size = if ssrc == layers[0].1 { 100 } else { 1_000 };
    let mut payload = p.payload.to_vec();
    payload.resize(size, ssrc as u8);
    p.payload = Bytes::from(payload);
    p
}

fn packet(ssrc: u32, seq: u16) -> rtp::Packet {
    rtp::Packet {
        header: rtp::header::Header {
            version: 2,
            payload_type: 96,
            sequence_number: seq,
            timestamp: u32::from(seq) * 3000,
            marker: true,
            ssrc,
            ..Default::default()
        },
        // Every hundredth packet is a whole H.264 IDR, the rest P slices:
        // video viewers start at a keyframe.
        payload: Bytes::from(vec![
            if seq.is_multiple_of(100) { 0x65 } else { 0x41 },
            0x9a,
            (seq >> 8) as u8,
            seq as u8,
        ]),
    }
}

#[test]
fn sessions_sharing_one_address_connect_and_get_only_their_own_media() {
    let mut world = World::new();
    let cameras = [0x00ca_0001, 0x00ca_0002, 0x00ca_0003];
    let publishers: Vec<usize> = cameras
        .iter()
        .map(|&ssrc| world.join(Role::Publisher(ssrc)))
        .collect();
    let viewers: Vec<usize> = cameras.iter().map(|_| world.join(Role::Viewer)).collect();
    world.connect_all();
    assert_eq!(world.shard.connections(), 6);
    for i in 0..3 {
        world.subscribe(viewers[i], publishers[i], cameras[i]);
    }

    for seq in 0..20 {
        for i in 0..3 {
            world.client_sends(publishers[i], cameras[i], seq + 100 * i as u16);
        }
        world.step(Duration::from_millis(5));
    }
    world.run_until("media", Duration::from_secs(1), |w| {
        viewers.iter().all(|&v| w.clients[v].received.len() >= 20)
    });
    for i in 0..3 {
        let expected: Vec<Bytes> = (0..20)
            .map(|seq| packet(cameras[i], seq + 100 * i as u16).payload)
            .collect();
        let got: Vec<Bytes> = world.clients[viewers[i]]
            .received
            .iter()
            .map(|(_, _, p)| p.clone())
            .collect();
        assert_eq!(
            got, expected,
            "viewer {i} got exactly its publisher's packets"
        );
    }
}

#[test]
fn a_publishers_packets_reach_every_viewer_renumbered() {
    const CAMERA: u32 = 0x00ca_fe01;
    let mut world = World::new();
    let publisher = world.join(Role::Publisher(CAMERA));
    let viewers: Vec<usize> = (0..3).map(|_| world.join(Role::Viewer)).collect();
    world.connect_all();
    for &v in &viewers {
        world.subscribe(v, publisher, CAMERA);
    }

    world.publish(publisher, CAMERA, 1000..1050, Duration::from_millis(5));
    world.run_until("fan-out", Duration::from_secs(1), |w| {
        viewers.iter().all(|&v| w.clients[v].received.len() >= 50)
    });
    for &v in &viewers {
        let (_, ssrc) = world.ends[v].sender.expect("viewer");
        let got = &world.clients[v].received;
        assert!(
            got.iter().all(|(s, _, _)| *s == ssrc),
            "the viewer's own SSRC"
        );
        // The viewer offered every codec rtc knows (VP8 first); the
        // engine's track is H.264, so its packets carry the viewer's H.264
        // payload type, not the first one negotiated.
        let answer = world.clients[v].pc.remote_description().expect("answer");
        let h264 = h264_payload_type(&answer.sdp);
        assert!(
            world.clients[v].payload_types.iter().all(|pt| *pt == h264),
            "H.264's payload type {h264}: {:?}",
            world.clients[v].payload_types
        );
        let payloads: Vec<&Bytes> = got.iter().map(|(_, _, p)| p).collect();
        let sent: Vec<Bytes> = (1000..1050)
            .map(|seq| packet(CAMERA, seq).payload)
            .collect();
        assert_eq!(
            payloads,
            sent.iter().collect::<Vec<_>>(),
            "every packet, in order, unaltered"
        );
        assert!(
            got.windows(2).all(|w| w[1].1 == w[0].1.wrapping_add(1)),
            "continuous numbering"
        );
    }
}

#[test]
fn a_padded_packet_reaches_the_viewer_whole() {
    const CAMERA: u32 = 0x00ca_fe0d;
    let (mut world, publisher, viewers) = World::stream_with_two_viewers(CAMERA);
    // A keyframe first (viewers start there), then P slices padded to a
    // multiple of four as some encoders and SRTP senders do. Each
    // payload's last byte is small: a padding flag left on the forwarded
    // packet would make the viewer cut that many bytes off.
    world.client_sends(publisher, CAMERA, 1000);
    let padded: Vec<Bytes> = (1001..1011u16)
        .map(|seq| Bytes::from(vec![0x41, 0x9a, seq as u8, 1 + (seq % 3) as u8, 0x01]))
        .collect();
    for (seq, payload) in (1001..).zip(&padded) {
        let mut p = packet(CAMERA, seq);
        p.header.padding = true;
        p.payload = payload.clone();
        world.client_sends_packet(publisher, p);
        world.step(Duration::from_millis(5));
    }
    world.run_until("padded packets", Duration::from_secs(1), |w| {
        viewers.iter().all(|&v| w.clients[v].received.len() >= 11)
    });
    for &v in &viewers {
        let got: Vec<&Bytes> = world.clients[v].received[1..]
            .iter()
            .map(|(_, _, p)| p)
            .collect();
        assert_eq!(got, padded.iter().collect::<Vec<_>>(), "viewer {v}");
    }
}

#[test]
fn a_viewers_keyframe_request_names_its_source() {
    const CAMERA: u32 = 0x00ca_fe02;
    let mut world = World::new();
    let publisher = world.join(Role::Publisher(CAMERA));
    let viewer = world.join(Role::Viewer);
    world.connect_all();
    let source = world.shard.source(world.ends[publisher].conn, CAMERA);
    let (_, ssrc) = world.ends[viewer].sender.expect("viewer");
    let viewer_conn = world.ends[viewer].conn;
    world.subscribe(viewer, publisher, CAMERA);
    // The viewer plays, then loses a picture.
    world.publish(publisher, CAMERA, 0..3, Duration::from_millis(5));

    let now = world.now;
    let pc = &mut world.clients[viewer].pc;
    let receiver = pc.get_receivers().next().expect("a receiver");
    pc.rtp_receiver(receiver)
        .expect("receiver")
        .write_rtcp(
            now,
            vec![Box::new(PictureLossIndication {
                sender_ssrc: 1,
                media_ssrc: ssrc,
            })],
        )
        .expect("PLI");
    let request = Event::KeyframeRequest {
        viewer: viewer_conn,
        source,
    };
    world.run_until("the PLI", Duration::from_secs(1), |w| {
        w.events.contains(&request)
    });
}

#[test]
fn a_datagram_from_an_unchecked_address_is_ignored() {
    let mut world = World::new();
    world.join(Role::Viewer);
    world.join(Role::Viewer);
    world.connect_all();

    // Anything from an address that passed no check of a connection, even
    // shaped like SRTP or DTLS, goes nowhere: no output, nobody disturbed.
    let now = world.now;
    let spoofed = BytesMut::from(&[0x80u8, 0x60, 0, 9, 0, 0, 0, 9, 0, 0, 0x70, 0x01][..]);
    world
        .shard
        .handle_datagram(now, SocketAddr::from(([203, 0, 113, 9], 5000)), spoofed);
    let dtls_like = BytesMut::from(&[21u8, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0][..]);
    world
        .shard
        .handle_datagram(now, SocketAddr::from(([10, 1, 0, 1], 5001)), dtls_like);
    assert!(world.shard.poll_transmit().is_none());
    for _ in 0..100 {
        world.step(Duration::from_millis(10));
    }
    assert!(
        world.clients.iter().all(|c| c.connected),
        "nobody was disturbed"
    );
    assert!(
        !world
            .events
            .iter()
            .any(|e| matches!(e, Event::Closed(_) | Event::Failed(_)))
    );
}

#[test]
fn a_rebound_client_keeps_playing_after_its_next_check() {
    const CAMERA: u32 = 0x00ca_fe03;
    let (mut world, publisher, viewers) = World::stream_with_two_viewers(CAMERA);

    // Viewer 0's NAT gives it a new public port; the old mapping is gone.
    let rebound = SocketAddr::from(([198, 51, 100, 7], 40_000));
    world.clients[viewers[0]].public_addr = rebound;
    let conn = world.ends[viewers[0]].conn;
    world.run_until("the viewer's next check", Duration::from_secs(5), |w| {
        w.shard.peer_addr(conn) == Some(rebound)
    });
    world.publish(publisher, CAMERA, 0..10, Duration::from_millis(5));
    world.run_until("media to the new address", Duration::from_secs(1), |w| {
        viewers.iter().all(|&v| w.clients[v].received.len() >= 10)
    });
    assert!(world.clients.iter().all(|c| c.connected));
}

#[test]
fn removing_a_connection_forgets_it() {
    let mut world = World::new();
    world.join(Role::Viewer);
    world.connect_all();
    let conn = world.ends[0].conn;
    let addr = world.shard.peer_addr(conn).expect("checked address");
    let now = world.now;
    world.shard.remove_connection(conn, now);
    assert_eq!(world.shard.connections(), 0);
    assert_eq!(world.shard.peer_addr(conn), None);
    while world.shard.poll_transmit().is_some() {} // its DTLS close_notify
    let media = BytesMut::from(&[0x80u8, 0x60, 0, 9, 0, 0, 0, 9, 0, 0, 0x70, 0x01][..]);
    world.shard.handle_datagram(now, addr, media);
    assert!(world.shard.poll_transmit().is_none(), "routes nowhere");
}

#[test]
fn a_publishers_packet_leaves_for_every_viewer_within_the_same_input() {
    const CAMERA: u32 = 0x00ca_fe04;
    let mut world = World::new();
    let publisher = world.join(Role::Publisher(CAMERA));
    let viewers: Vec<usize> = (0..3).map(|_| world.join(Role::Viewer)).collect();
    world.connect_all();
    for &v in &viewers {
        world.subscribe(v, publisher, CAMERA);
    }
    while world.shard.poll_transmit().is_some() {}

    // One datagram in; no timer runs: the viewers' SRTP is already out.
    world.client_sends(publisher, CAMERA, 0);
    let from = world.clients[publisher].public_addr;
    let now = world.now;
    while let Some(out) = world.clients[publisher].pc.poll_write() {
        world.shard.handle_datagram(now, from, out.message);
    }
    let mut to = Vec::new();
    while let Some(transmit) = world.shard.poll_transmit() {
        to.push(transmit.to);
    }
    for &v in &viewers {
        assert!(
            to.contains(&world.clients[v].public_addr),
            "viewer {v} got nothing from this input: {to:?}"
        );
    }
}

#[test]
fn a_client_that_vanishes_is_closed_and_forgotten() {
    let mut world = World::new();
    world.join(Role::Viewer);
    world.join(Role::Viewer);
    world.connect_all();
    let (gone, stays) = (world.ends[0].conn, world.ends[1].conn);

    // Client 0 vanishes without a goodbye.
    world.clients[0].alive = false;
    world.run_until("the shard closing it", Duration::from_secs(60), |w| {
        w.events.contains(&Event::Failed(gone))
    });
    assert_eq!(world.shard.connections(), 1);
    assert_eq!(world.shard.peer_addr(gone), None);
    assert!(!world.events.contains(&Event::Failed(stays)));
    assert!(world.clients[1].connected, "the other client is untouched");
}

#[test]
fn a_viewers_lost_packets_come_again_from_the_streams_history() {
    const CAMERA: u32 = 0x00ca_fe05;
    let (mut world, publisher, viewers) = World::stream_with_two_viewers(CAMERA);
    // One RTP datagram in seven to viewer 0 is lost on the network.
    world.lose = Some((viewers[0], 1, 7));

    world.publish(publisher, CAMERA, 0..70, Duration::from_millis(5));
    let sent: std::collections::HashSet<Bytes> =
        (0..70).map(|seq| packet(CAMERA, seq).payload).collect();
    world.run_until(
        "every packet at both viewers",
        Duration::from_secs(3),
        |w| {
            viewers.iter().all(|&v| {
                let got: std::collections::HashSet<&Bytes> =
                    w.clients[v].received.iter().map(|(_, _, p)| p).collect();
                sent.iter().all(|p| got.contains(p))
            })
        },
    );
    assert!(
        world.dropped >= 9,
        "the network lost {} packets",
        world.dropped
    );
    assert!(
        world.shard.retransmitted() >= world.dropped as u64,
        "{} resent for {} lost",
        world.shard.retransmitted(),
        world.dropped
    );
    let (_, ssrc) = world.ends[viewers[0]].sender.expect("viewer");
    assert!(
        world.clients[viewers[0]]
            .received
            .iter()
            .all(|(s, _, _)| *s == ssrc),
        "repairs come on the viewer's own SSRC"
    );
}

/// Forwarded media leaves on the fast path, which rtc's own reporter never
/// sees: the engine's sender reports must go to the viewer, sealed with its
/// keys, carry what it was sent, and an RTP time that moves with the
/// stream. (They are read off the wire: rtc's receiving side consumes
/// sender reports and shows none to its application.)
#[test]
fn viewers_get_sender_reports_for_what_the_fast_path_sent() {
    const CAMERA: u32 = 0x00ca_fe07;
    let (mut world, publisher, viewers) = World::stream_with_two_viewers(CAMERA);
    world.publish(publisher, CAMERA, 0..300, Duration::from_millis(10));
    world.run_until("the last packets", Duration::from_secs(1), |w| {
        viewers.iter().all(|&v| w.clients[v].received.len() == 300)
    });
    for v in viewers {
        let (_, ssrc) = world.ends[v].sender.expect("viewer");
        let keys = world
            .shard
            .local_srtp_keys(world.ends[v].conn)
            .expect("DTLS is up");
        let mut open = srtp_context(&keys).expect("context");
        let to = world.clients[v].public_addr;
        let mut reports = Vec::new();
        for (_, sealed) in world.rtcp_sent.iter().filter(|(a, _)| *a == to) {
            let plain = open
                .decrypt_rtcp(sealed)
                .expect("sealed with the viewer's keys");
            let packets = rtc::rtcp::packet::unmarshal(&mut &plain[..]).expect("RTCP");
            reports.extend(
                packets
                    .iter()
                    .filter_map(|p| p.as_any().downcast_ref::<SenderReport>().cloned())
                    .filter(|r| r.ssrc == ssrc),
            );
        }
        // 3 s of media: one report at the first packet, then one a second.
        assert!(
            (3..=5).contains(&reports.len()),
            "viewer {v}: {} reports",
            reports.len()
        );
        assert_eq!(
            reports[0].packet_count, 1,
            "the first follows the first packet"
        );
        assert!(
            reports
                .windows(2)
                .all(|w| w[1].packet_count > w[0].packet_count)
        );
        let last = reports.last().expect("a report");
        assert!(last.packet_count >= 200, "counts what was sent: {last:?}");
        // The test's packets carry 3000 ticks per 10 ms of fake time, so
        // reports a second apart differ by about 300,000 ticks.
        let step = reports[2].rtp_time.wrapping_sub(reports[1].rtp_time);
        assert!((250_000..350_000).contains(&step), "RTP time step {step}");
    }
}

/// A viewer that starts mid-stream gets the stream's last complete
/// keyframe at once (twice, for decoders that close a frame only at the
/// next one), then the live stream from its next keyframe, numbered
/// continuously; and the shard asks for a fresh keyframe on its behalf.
#[test]
fn a_late_viewer_starts_from_the_cached_keyframe() {
    const CAMERA: u32 = 0x00ca_fe08;
    let (mut world, publisher, _) = World::stream_with_two_viewers(CAMERA);
    world.publish(publisher, CAMERA, 0..150, Duration::from_millis(5));
    let late = world.join(Role::Viewer);
    world.connect_all();
    world.subscribe(late, publisher, CAMERA);
    world.publish(publisher, CAMERA, 150..250, Duration::from_millis(5));
    world.run_until("the late viewer's packets", Duration::from_secs(1), |w| {
        w.clients[late].received.len() >= 52
    });
    let got = &world.clients[late].received;
    let payloads: Vec<Bytes> = got.iter().map(|(_, _, p)| p.clone()).collect();
    let mut expected = vec![packet(CAMERA, 100).payload, packet(CAMERA, 100).payload];
    expected.extend((200..250).map(|seq| packet(CAMERA, seq).payload));
    assert_eq!(
        payloads, expected,
        "keyframe 100 twice, then live from keyframe 200"
    );
    assert!(
        got.windows(2).all(|w| w[1].1 == w[0].1.wrapping_add(1)),
        "continuous numbering"
    );
    let source = world.shard.source(world.ends[publisher].conn, CAMERA);
    assert!(world.events.contains(&Event::KeyframeRequest {
        viewer: world.ends[late].conn,
        source,
    }));
}

/// A viewer of a stream that has gone quiet (a relay's, between the
/// origin's cached keyframe and the publisher's next) starts from the
/// cached keyframe on a layer tick, without waiting for the stream's next
/// packet; the live stream follows from its next keyframe.
#[test]
fn a_viewer_of_a_silent_stream_starts_from_the_cached_keyframe_on_a_tick() {
    const CAMERA: u32 = 0x00ca_fe09;
    let (mut world, publisher, _) = World::stream_with_two_viewers(CAMERA);
    world.publish(publisher, CAMERA, 0..150, Duration::from_millis(5));
    let late = world.join(Role::Viewer);
    world.connect_all();
    world.subscribe(late, publisher, CAMERA);
    // No packet of the stream for a while: the tick starts the viewer.
    world.run_until("the cached keyframe", Duration::from_secs(1), |w| {
        w.clients[late].received.len() >= 2
    });
    let got: Vec<Bytes> = world.clients[late]
        .received
        .iter()
        .map(|(_, _, p)| p.clone())
        .collect();
    assert_eq!(
        got,
        vec![packet(CAMERA, 100).payload, packet(CAMERA, 100).payload],
        "keyframe 100 twice, with no packet of the stream meanwhile"
    );
    // Then the live stream from its next keyframe, numbered on.
    world.publish(publisher, CAMERA, 150..250, Duration::from_millis(5));
    world.run_until("the live stream", Duration::from_secs(1), |w| {
        w.clients[late].received.len() >= 52
    });
    let got = &world.clients[late].received;
    assert_eq!(got[2].2, packet(CAMERA, 200).payload);
    assert!(
        got.windows(2).all(|w| w[1].1 == w[0].1.wrapping_add(1)),
        "continuous numbering"
    );
}

/// Keyframe requests for one stream reach its publisher as at most one PLI
/// per interval, however many viewers (or shards) ask. (Read off the wire,
/// opened with the publisher connection's keys: rtc's receiving side does
/// not show a sender's feedback to the application here.)
#[test]
fn keyframe_requests_coalesce_into_one_pli_per_interval() {
    const CAMERA: u32 = 0x00ca_fe09;
    let (mut world, publisher, _) = World::stream_with_two_viewers(CAMERA);
    let source = world.shard.source(world.ends[publisher].conn, CAMERA);
    let plis = |world: &World| world.plis_sent(publisher, CAMERA);
    for _ in 0..5 {
        world.shard.request_keyframe(source, world.now);
        world.step(Duration::from_millis(50));
    }
    assert_eq!(plis(&world), 1, "five requests in 250 ms");
    world.step(Duration::from_millis(300));
    world.shard.request_keyframe(source, world.now);
    world.step(Duration::from_millis(5));
    assert_eq!(plis(&world), 2, "a request after the interval");
}

/// The engine's connections are ICE-lite: they send no connectivity check
/// of their own (RFC 8445 §2.5) and answer every check, a nominating one
/// included, at once. (rtc-ice 0.21 sent triggered checks from lite agents
/// and left a nomination unanswered until that check had succeeded, so a
/// client that nominated quickly waited for its own retransmission: the
/// vendored patch, vendor/README.md.)
#[test]
fn lite_connections_answer_every_check_and_send_none() {
    let mut world = World::new();
    let _publisher = world.join(Role::Publisher(0x00ca_fe0a));
    let _viewer = world.join(Role::Viewer);
    world.connect_all();
    world.step(Duration::from_secs(3)); // consent checks after connecting
    world.step(Duration::from_millis(5));
    assert!(world.checks_in >= 2, "clients checked: {}", world.checks_in);
    assert_eq!(world.checks_out, 0, "a lite agent sends no checks");
    assert_eq!(world.successes_out, world.checks_in, "every check answered");
}

/// A publisher's stream is reported at its first packet, with its kind and
/// codec, and its keyframes are kept from then on: the first viewer starts
/// from one without anybody having asked the shard to watch the stream.
#[test]
fn a_publishers_first_packet_reports_its_track_and_its_keyframes_are_kept() {
    const CAMERA: u32 = 0x00ca_fe0b;
    let mut world = World::new();
    let publisher = world.join(Role::Publisher(CAMERA));
    world.connect_all();
    world.publish(publisher, CAMERA, 0..150, Duration::from_millis(5));
    let tracks: Vec<_> = world
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Track(track) => Some(track.clone()),
            _ => None,
        })
        .collect();
    let source = world.shard.source(world.ends[publisher].conn, CAMERA);
    assert_eq!(tracks.len(), 1, "{tracks:?}");
    assert_eq!(tracks[0].source, source);
    assert_eq!(tracks[0].kind, MediaKind::Video);
    assert!(
        tracks[0].mime.eq_ignore_ascii_case("video/H264"),
        "{}",
        tracks[0].mime
    );
    assert_eq!(tracks[0].rid, None);

    let viewer = world.join(Role::Viewer);
    world.connect_all();
    world.subscribe(viewer, publisher, CAMERA);
    world.publish(publisher, CAMERA, 150..152, Duration::from_millis(5));
    world.run_until("the cached keyframe", Duration::from_secs(1), |w| {
        w.clients[viewer].received.len() >= 2
    });
    let first: Vec<Bytes> = world.clients[viewer].received[..2]
        .iter()
        .map(|(_, _, p)| p.clone())
        .collect();
    assert_eq!(first, vec![packet(CAMERA, 100).payload; 2]);
}

/// A muted stream reaches no viewer, though its publisher is still counted
/// for the alarms; on unmute the publisher is asked for a keyframe and
/// viewers resume at the next one, numbered on from where they stopped (no
/// gap for them to ask to be repaired with what was muted).
#[test]
fn a_muted_stream_reaches_nobody_and_resumes_at_a_keyframe_numbered_on() {
    const CAMERA: u32 = 0x00ca_fe0c;
    let (mut world, publisher, viewers) = World::stream_with_two_viewers(CAMERA);
    let counters = Arc::new(StreamCounters::default());
    world
        .shard
        .count_into(world.ends[publisher].conn, counters.clone());
    world.publish(publisher, CAMERA, 0..50, Duration::from_millis(5));
    world.run_until("the first 50", Duration::from_secs(1), |w| {
        viewers.iter().all(|&v| w.clients[v].received.len() >= 50)
    });
    let track = world.track(publisher);
    world.shard.set_muted(track, true, world.now);
    world.publish(publisher, CAMERA, 50..150, Duration::from_millis(5));
    world.step(Duration::from_millis(50));
    for &v in &viewers {
        assert_eq!(world.clients[v].received.len(), 50, "nothing while muted");
    }
    let counted = counters.snapshot(true);
    assert_eq!(
        (counted.packets, counted.keyframes),
        (150, 2),
        "muted still counts"
    );

    let plis_before = world.plis_sent(publisher, CAMERA);
    world.shard.set_muted(track, false, world.now);
    world.step(Duration::from_millis(5));
    assert_eq!(
        world.plis_sent(publisher, CAMERA),
        plis_before + 1,
        "a keyframe is asked for"
    );
    world.publish(publisher, CAMERA, 150..250, Duration::from_millis(5));
    world.run_until("live again", Duration::from_secs(1), |w| {
        viewers.iter().all(|&v| w.clients[v].received.len() >= 100)
    });
    for &v in &viewers {
        let got = &world.clients[v].received;
        let payloads: Vec<Bytes> = got[50..].iter().map(|(_, _, p)| p.clone()).collect();
        let expected: Vec<Bytes> = (200..250).map(|seq| packet(CAMERA, seq).payload).collect();
        assert_eq!(payloads, expected, "from keyframe 200 on");
        assert!(
            got.windows(2).all(|w| w[1].1 == w[0].1.wrapping_add(1)),
            "numbered on across the mute"
        );
    }
}

/// A publisher that leaves and one that takes its place (a republish):
/// its viewers stay subscribed meanwhile, and once moved they play the new
/// publisher from its first keyframe, on the SSRC they had, numbered on.
#[test]
fn viewers_move_to_a_new_publisher_numbered_on() {
    const FIRST: u32 = 0x00ca_fe0d;
    const SECOND: u32 = 0x00ca_fe0e;
    let (mut world, first, viewers) = World::stream_with_two_viewers(FIRST);
    world.publish(first, FIRST, 0..50, Duration::from_millis(5));
    let from = world.track(first);
    let now = world.now;
    world.shard.remove_connection(world.ends[first].conn, now);
    world.clients[first].alive = false;

    let second = world.join(Role::Publisher(SECOND));
    world.run_until("the new publisher", Duration::from_secs(10), |w| {
        w.clients[second].connected
    });
    let to_track = world.track(second);
    let to = to_track.layer(SECOND);
    assert!(world.shard.move_viewers(from, to_track));
    assert!(
        !world.shard.move_viewers(from, to_track),
        "nobody is left to move"
    );
    world.publish(second, SECOND, 0..150, Duration::from_millis(5));
    world.run_until("the new stream", Duration::from_secs(1), |w| {
        viewers.iter().all(|&v| w.clients[v].received.len() >= 200)
    });
    for &v in &viewers {
        let got = &world.clients[v].received;
        let payloads: Vec<Bytes> = got.iter().map(|(_, _, p)| p.clone()).collect();
        let expected: Vec<Bytes> = (0..50)
            .map(|seq| packet(FIRST, seq).payload)
            .chain((0..150).map(|seq| packet(SECOND, seq).payload))
            .collect();
        assert_eq!(payloads, expected);
        assert!(got.iter().all(|(ssrc, _, _)| *ssrc == got[0].0), "one SSRC");
        assert!(
            got.windows(2).all(|w| w[1].1 == w[0].1.wrapping_add(1)),
            "numbered on across publishers"
        );
        assert!(world.events.contains(&Event::KeyframeRequest {
            viewer: world.ends[v].conn,
            source: to,
        }));
    }
}

/// A simulcast publisher's layers, each reported with its rid: a viewer
/// asking for `high` gets only the big layer and one asking for `low` only
/// the small one, each on its own SSRC, numbered without a gap; a viewer
/// asking for a rid gets that layer.
#[test]
fn simulcast_viewers_get_the_layer_they_ask_for() {
    const LAYERS: &[(&str, u32)] = &[("q", 0x00ca_fe10), ("f", 0x00ca_fe11)];
    let mut world = World::new();
    let publisher = world.join(Role::Simulcast(LAYERS));
    let viewers: Vec<usize> = (0..3).map(|_| world.join(Role::Viewer)).collect();
    world.connect_all();
    let track = world.track(publisher);
    for (&v, choice) in viewers.iter().zip([
        LayerChoice::High,
        LayerChoice::Low,
        LayerChoice::Rid("q".to_owned()),
    ]) {
        let (sender, ssrc) = world.ends[v].sender.expect("a viewer");
        world
            .shard
            .subscribe(track, world.ends[v].conn, sender, ssrc, choice, world.now)
            .expect("subscribe");
    }
    // q carries 100 bytes a packet, f 1,000: f ranks first. An IDR on
    // each every 100 packets, so that viewers switch at keyframes.
    for seq in 0..400u16 {
        for &(_, ssrc) in LAYERS {
            world.client_sends_packet(publisher, layer_packet(LAYERS, ssrc, seq));
        }
        world.step(Duration::from_millis(10));
    }
    let rids: Vec<_> = world
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Track(t) => Some((t.rid.clone(), t.source.ssrc, t.track)),
            _ => None,
        })
        .collect();
    assert_eq!(
        rids,
        vec![
            (Some("q".to_owned()), LAYERS[0].1, track),
            (Some("f".to_owned()), LAYERS[1].1, track)
        ]
    );
    for (&v, wanted) in viewers.iter().zip([LAYERS[1].1, LAYERS[0].1, LAYERS[0].1]) {
        let got = &world.clients[v].received;
        assert!(got.len() >= 100, "viewer {v} got {} packets", got.len());
        // After the first layer it was given (whichever ranked first), the
        // viewer settles on its layer: the last 100 are all of it.
        let tail = &got[got.len() - 100..];
        let expected_len = if wanted == LAYERS[0].1 { 100 } else { 1_000 };
        assert!(
            tail.iter().all(|(_, _, p)| p.len() == expected_len),
            "viewer {v} ends on the layer it asked for"
        );
        assert!(got.iter().all(|(ssrc, _, _)| *ssrc == got[0].0), "one SSRC");
        assert!(
            got.windows(2).all(|w| w[1].1 == w[0].1.wrapping_add(1)),
            "viewer {v}: numbered without a gap across layer switches"
        );
    }
}

/// A viewer whose reception reports show heavy loss steps down from the
/// big layer to the small one (and only it: the others keep theirs).
#[test]
fn a_lossy_simulcast_viewer_steps_down_a_layer() {
    const LAYERS: &[(&str, u32)] = &[("q", 0x00ca_fe12), ("f", 0x00ca_fe13)];
    let mut world = World::new();
    let publisher = world.join(Role::Simulcast(LAYERS));
    let viewers = [world.join(Role::Viewer), world.join(Role::Viewer)];
    world.connect_all();
    let track = world.track(publisher);
    for &v in &viewers {
        let (sender, ssrc) = world.ends[v].sender.expect("a viewer");
        world
            .shard
            .subscribe(
                track,
                world.ends[v].conn,
                sender,
                ssrc,
                LayerChoice::High,
                world.now,
            )
            .expect("subscribe");
    }
    // Two datagrams in three lost: even with repairs the reports show
    // more than 10 % lost (one in two lost is repaired down to 9 %).
    world.lose = Some((viewers[1], 2, 3));
    for seq in 0..800u16 {
        for &(_, ssrc) in LAYERS {
            world.client_sends_packet(publisher, layer_packet(LAYERS, ssrc, seq));
        }
        world.step(Duration::from_millis(10));
    }
    let tail_sizes = |v: usize| {
        let got = &world.clients[v].received;
        got[got.len() - 20..]
            .iter()
            .map(|(_, _, p)| p.len())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        tail_sizes(viewers[0]),
        vec![1_000; 20],
        "no loss: the big layer"
    );
    assert_eq!(
        tail_sizes(viewers[1]),
        vec![100; 20],
        "heavy loss: the small one"
    );
}

/// An ICE restart (a client's PATCH with new credentials): the connection
/// answers with new credentials of its own, the client's checks of the new
/// generation reach it through the shared port, and media goes on past
/// the point where the old generation's consent would have expired.
#[test]
fn an_ice_restart_changes_credentials_and_media_goes_on() {
    const CAMERA: u32 = 0x00ca_fe14;
    let (mut world, publisher, viewers) = World::stream_with_two_viewers(CAMERA);
    let viewer = viewers[0];
    world.publish(publisher, CAMERA, 0..20, Duration::from_millis(5));
    let old_local = world.clients[viewer]
        .pc
        .remote_description()
        .expect("answer")
        .sdp
        .clone();

    let now = world.now;
    let client = &mut world.clients[viewer].pc;
    client.restart_ice();
    let offer = client.create_offer(None).expect("restart offer");
    client
        .set_local_description(now, offer.clone())
        .expect("client restart");
    let (ufrag, pwd) = crate::sfu::ice::ice_credentials(&offer.sdp).expect("new credentials");
    let conn = world.ends[viewer].conn;
    let (old_remote, _) = crate::sfu::ice::ice_credentials(&offer.sdp).expect("offer");
    assert_eq!(
        world.shard.restart_ice(conn, "abcd", Some("short"), now),
        Err(super::shard::RestartError::Malformed(
            "ice-ufrag must be 4-256 and ice-pwd 22-256 characters".into()
        )),
        "invalid credentials are refused, the session kept"
    );
    let _ = old_remote;
    let answer = world
        .shard
        .restart_ice(conn, &ufrag, Some(&pwd), now)
        .expect("restarted")
        .expect("new credentials: a restart");
    assert_eq!(
        world.shard.restart_ice(conn, &ufrag, Some(&pwd), now),
        Ok(None),
        "the same credentials again: nothing to restart"
    );
    let old = crate::sfu::ice::ice_credentials(&old_local).expect("old");
    let new = crate::sfu::ice::ice_credentials(&answer).expect("new");
    assert_ne!(old.0, new.0, "a new ufrag");
    assert_ne!(old.1, new.1, "a new password");
    world.clients[viewer]
        .pc
        .set_remote_description(now, RTCSessionDescription::answer(answer).expect("answer"))
        .expect("client takes the restart answer");

    // 40 s of media at 10 packets a second: well past consent expiry
    // (30 s) for a connection whose checks went nowhere.
    for seq in 20..420u16 {
        world.client_sends(publisher, CAMERA, seq);
        for _ in 0..20 {
            world.step(Duration::from_millis(5));
        }
    }
    assert!(
        !world
            .events
            .iter()
            .any(|e| matches!(e, Event::Closed(_) | Event::Failed(_))),
        "no connection closed"
    );
    let got = &world.clients[viewer].received;
    assert_eq!(
        got.last().map(|(_, _, p)| p.clone()),
        Some(packet(CAMERA, 419).payload)
    );
}

/// A viewer that negotiated RTX (RFC 4588), as browsers do, gets its
/// repairs on its RTX SSRC, and its client restores them as the packets it
/// lost.
#[test]
fn a_viewer_with_rtx_gets_its_repairs_on_rtx() {
    const CAMERA: u32 = 0x00ca_fe15;
    let mut world = World::new();
    let publisher = world.join(Role::Publisher(CAMERA));
    world.viewer_rtx = true;
    let viewer = world.join(Role::Viewer);
    world.connect_all();
    world.subscribe(viewer, publisher, CAMERA);
    world.lose = Some((viewer, 1, 7));
    world.publish(publisher, CAMERA, 0..70, Duration::from_millis(5));
    let sent: std::collections::HashSet<Bytes> =
        (0..70).map(|seq| packet(CAMERA, seq).payload).collect();
    world.run_until("every packet", Duration::from_secs(3), |w| {
        let got: std::collections::HashSet<&Bytes> = w.clients[viewer]
            .received
            .iter()
            .map(|(_, _, p)| p)
            .collect();
        sent.iter().all(|p| got.contains(p))
    });
    assert!(world.dropped >= 9, "the network lost {}", world.dropped);
    let (_, ssrc) = world.ends[viewer].sender.expect("a viewer");
    let repairs = world.rtp_out.get(&(ssrc + 0x1000)).copied().unwrap_or(0);
    assert!(
        repairs >= world.dropped,
        "{repairs} repairs on RTX for {} lost",
        world.dropped
    );
}

/// A local publisher (an IP camera's puller) has no connection: its
/// packets come in by [`Shard::handle_local_media`]. It reports connected
/// and its track at its first packet, its packets reach every viewer
/// renumbered and unaltered, a late viewer starts from the cached keyframe,
/// and removing it closes it like a connection.
#[test]
fn a_local_publishers_packets_reach_viewers_like_a_connections() {
    const CAMERA: u32 = 0x00ca_fe20;
    let mut world = World::new();
    let local = world.shard.add_local(vec![LocalTrack {
        kind: MediaKind::Video,
        mime: "video/H264".into(),
        clock_rate: 90_000,
        ssrc: CAMERA,
    }]);
    let viewers = [world.join(Role::Viewer), world.join(Role::Viewer)];
    world.connect_all();
    let (track, kind) = world.shard.published_tracks(local)[0];
    assert_eq!((track.conn, kind), (local, MediaKind::Video));
    for v in viewers {
        let (sender, ssrc) = world.ends[v].sender.expect("a viewer");
        world
            .shard
            .subscribe(
                track,
                world.ends[v].conn,
                sender,
                ssrc,
                LayerChoice::High,
                world.now,
            )
            .expect("subscribe");
    }
    let feed = |world: &mut World, seqs: std::ops::Range<u16>| {
        for seq in seqs {
            let now = world.now;
            world
                .shard
                .handle_local_media(local, vec![packet(CAMERA, seq)], now);
            world.step(Duration::from_millis(5));
        }
    };
    feed(&mut world, 100..150);
    world.run_until("fan-out", Duration::from_secs(1), |w| {
        viewers.iter().all(|&v| w.clients[v].received.len() >= 50)
    });
    assert!(world.events.contains(&Event::Connected(local)));
    assert!(world.events.iter().any(|e| matches!(
        e,
        Event::Track(t) if t.track == track && t.mime == "video/H264" && t.source.ssrc == CAMERA
    )));
    for v in viewers {
        let got: Vec<Bytes> = world.clients[v]
            .received
            .iter()
            .map(|(_, _, p)| p.clone())
            .collect();
        let sent: Vec<Bytes> = (100..150).map(|seq| packet(CAMERA, seq).payload).collect();
        assert_eq!(got, sent, "every packet, in order, unaltered");
    }

    let late = world.join(Role::Viewer);
    world.connect_all();
    let (sender, ssrc) = world.ends[late].sender.expect("a viewer");
    world
        .shard
        .subscribe(
            track,
            world.ends[late].conn,
            sender,
            ssrc,
            LayerChoice::High,
            world.now,
        )
        .expect("subscribe");
    feed(&mut world, 150..160);
    world.run_until("the late viewer's keyframe", Duration::from_secs(1), |w| {
        w.clients[late].received.len() >= 2
    });
    assert_eq!(
        world.clients[late].received[0].2,
        packet(CAMERA, 100).payload,
        "the cached keyframe first"
    );

    let now = world.now;
    world.shard.remove_connection(local, now);
    world.step(Duration::from_millis(5));
    assert!(world.events.contains(&Event::Closed(local)));
    assert!(world.shard.published_tracks(local).is_empty());
}
