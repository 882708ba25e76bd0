//! What one forwarded RTP packet costs inside webrtc-rs's sans-IO core,
//! `rtc` 0.21: the measurement that decides the media engine's shape
//! (docs/performance.md, "The rtc write path").
//!
//! It connects pairs of peer connections entirely in memory (no sockets:
//! each datagram one `RTCPeerConnection` polls out is handed to the other's
//! `handle_read`), a sending side shaped like a WHEP viewer's connection on
//! the server and a receiving side like the viewer. Then, for each
//! interceptor chain on the sending side, it times what forwarding costs per
//! packet and per viewer: `RTCRtpSender::write_rtp` of a clone of a
//! 1,200-byte H.264 packet, then draining `poll_write` until the SRTP
//! datagram comes out. It also counts heap allocations per packet and the
//! live heap each connected sending connection holds once its NACK history
//! (if any) is full (the sending connections share one DTLS certificate). For comparison it times the parts a fast path beside
//! `rtc` would still pay: cloning the packet, and SRTP through `rtc-srtp`'s
//! public `Context::encrypt_rtp`.
//!
//! Chains: `default` (`register_default_interceptors`: NACK responder and
//! generator, RR/SR, TWCC, as the `webrtc` crate uses today), `slim`
//! (Vigil's tap that hands viewers' PLI/FIR and reports to the engine, plus
//! RR/SR: what a viewer's connection needs), `none` (an empty registry).
//! `--codecs h264` gives the sending side a media engine with H.264 alone
//! instead of every codec rtc knows, which is most of its heap.
//!
//! ```text
//! cargo run --release -p vigil-gateway --example rtc_write_path -- [--packets 5000] [--viewers 50]
//!     [--chain all|default|slim|none] [--codecs all|h264] [--compare 100000]
//! ```
//!
//! Wall-clock figures move with the machine's load; instruction counts do
//! not. For those, run one chain under callgrind and read the inclusive cost
//! of `measure_write` (divide by packets × viewers) and `measure_srtp_gcm`
//! (divide by --compare):
//!
//! ```text
//! valgrind --tool=callgrind --callgrind-out-file=cg.out target/release/examples/rtc_write_path --packets 1000 --viewers 10 --chain slim --compare 10000
//! callgrind_annotate --inclusive=yes cg.out | grep -E 'measure_(write|srtp_gcm|clone)'
//! ```
//!
//! (valgrind's CPU has no SHA extensions, so the AES-CM/HMAC-SHA1 profile's
//! count there is not what the hardware does; rtc negotiates AES-GCM first.)

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rtc::crypto::SignatureScheme;
use rtc::crypto::{AeadAlgorithm, AeadCipher};
use rtc::interceptor::{Registry, Slot};
use rtc::peer_connection::certificate::{CertificateParams, RTCCertificate};
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::configuration::interceptor_registry::{
    configure_rtcp_reports, register_default_interceptors,
};
use rtc::peer_connection::configuration::media_engine::{MIME_TYPE_H264, MediaEngine};
use rtc::peer_connection::event::RTCPeerConnectionEvent;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodecParameters, RtpCodecKind};
use rtc::rtp_transceiver::{RTCRtpSenderId, RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use rtc::sansio::Protocol;
use rtc::shared::marshal::Marshal;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use rtc::srtp::context::Context as SrtpContext;
use rtc::srtp::protection_profile::ProtectionProfile;
use vigil_gateway::engine::{add_host_candidate, h264_baseline, send_track};
use vigil_gateway::sfu::rewrite::Rewriter;
use vigil_gateway::sfu::rtcp::{KEYFRAME_REQUEST_SLOT, keyframe_request_tap};

// ---- heap accounting ---------------------------------------------------------

/// The system allocator, counting allocations and live bytes.
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static LIVE_BYTES: AtomicI64 = AtomicI64::new(0);

// SAFETY: every call is passed to `System` unchanged; the counters are
// relaxed atomics that no allocation depends on.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        LIVE_BYTES.fetch_add(layout.size() as i64, Ordering::Relaxed);
        // SAFETY: the caller's layout contract is System's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size() as i64, Ordering::Relaxed);
        // SAFETY: `ptr` came from `alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        LIVE_BYTES.fetch_add(new_size as i64 - layout.size() as i64, Ordering::Relaxed);
        // SAFETY: as for `dealloc`, and `new_size` is the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> u64 {
    ALLOCATIONS.load(Ordering::Relaxed)
}

fn live_bytes() -> i64 {
    LIVE_BYTES.load(Ordering::Relaxed)
}

// ---- the chains --------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq)]
enum Chain {
    Default,
    Slim,
    None,
}

impl Chain {
    fn name(self) -> &'static str {
        match self {
            Chain::Default => "default",
            Chain::Slim => "slim",
            Chain::None => "none",
        }
    }

    fn registry(self, media_engine: &mut MediaEngine) -> Registry {
        match self {
            Chain::Default => register_default_interceptors(Registry::new(), media_engine)
                .expect("default interceptors"),
            Chain::Slim => configure_rtcp_reports(
                Registry::new().with(Slot::from(KEYFRAME_REQUEST_SLOT), keyframe_request_tap()),
            ),
            Chain::None => Registry::new(),
        }
    }
}

// ---- connections in memory ---------------------------------------------------

/// One peer connection and the address its host candidate claims.
struct Peer {
    pc: RTCPeerConnection,
    addr: SocketAddr,
    connected: bool,
}

/// One DTLS certificate for every sending connection, as an engine would
/// share its own (each connection otherwise generates a key pair).
fn shared_certificate() -> RTCCertificate {
    static CERTIFICATE: OnceLock<RTCCertificate> = OnceLock::new();
    CERTIFICATE
        .get_or_init(|| {
            let provider = rtc::crypto::default_provider().expect("crypto provider");
            RTCCertificate::generate(
                provider.crypto(),
                SignatureScheme::EcdsaP256Sha256,
                CertificateParams::new(vec!["vigil".to_owned()]).expect("certificate params"),
            )
            .expect("certificate")
        })
        .clone()
}

/// The codecs a connection's media engine knows.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Codecs {
    /// `register_default_codecs`: every codec rtc knows.
    All,
    /// H.264 alone: what one viewer of one H.264 track needs.
    H264,
}

fn media_engine(codecs: Codecs) -> MediaEngine {
    let mut media_engine = MediaEngine::default();
    match codecs {
        Codecs::All => media_engine
            .register_default_codecs()
            .expect("default codecs"),
        Codecs::H264 => media_engine
            .register_codec(
                RTCRtpCodecParameters {
                    rtp_codec: h264_baseline(),
                    payload_type: 102,
                },
                RtpCodecKind::Video,
            )
            .expect("H264"),
    }
    media_engine
}

fn peer(
    addr: SocketAddr,
    chain: Chain,
    codecs: Codecs,
    certificate: Option<RTCCertificate>,
) -> Peer {
    let mut media_engine = media_engine(codecs);
    let registry = chain.registry(&mut media_engine);
    let configuration = match certificate {
        Some(certificate) => RTCConfigurationBuilder::new().with_certificates(vec![certificate]),
        None => RTCConfigurationBuilder::new(),
    };
    let mut pc = RTCPeerConnectionBuilder::new()
        .with_configuration(configuration.build())
        .with_media_engine(media_engine)
        .with_interceptor_registry(registry)
        .build(Instant::now())
        .expect("peer connection");
    add_host_candidate(&mut pc, addr).expect("host candidate");
    Peer {
        pc,
        addr,
        connected: false,
    }
}

/// A sending connection (server side, `chain`) and its viewer, negotiated
/// as WHEP does: the viewer offers receive-only video, the server answers
/// with one H.264 track.
struct Pair {
    sender: Peer,
    /// Dropped once connected, so the heap left is the sending side's.
    viewer: Option<Peer>,
    sender_id: RTCRtpSenderId,
    ssrc: u32,
}

fn pair(index: u16, chain: Chain, codecs: Codecs) -> Pair {
    let mut viewer = peer(
        SocketAddr::from(([10, 1, 0, 1], 20_000 + index)),
        Chain::Default,
        Codecs::All,
        None,
    );
    let mut sender = peer(
        SocketAddr::from(([10, 0, 0, 1], 20_000 + index)),
        chain,
        codecs,
        Some(shared_certificate()),
    );
    viewer
        .pc
        .add_transceiver_from_kind(
            RtpCodecKind::Video,
            Some(RTCRtpTransceiverInit {
                direction: RTCRtpTransceiverDirection::Recvonly,
                ..Default::default()
            }),
        )
        .expect("recvonly transceiver");
    let offer = viewer.pc.create_offer(None).expect("offer");
    viewer
        .pc
        .set_local_description(Instant::now(), offer.clone())
        .expect("viewer local description");

    let codec = h264_baseline();
    let ssrc = 0x5e00_0000 + u32::from(index);
    let track = send_track(&format!("video-{index}"), RtpCodecKind::Video, ssrc, codec);
    let sender_id = sender.pc.add_track(track).expect("track");
    sender
        .pc
        .set_remote_description(Instant::now(), offer)
        .expect("offer applied");
    let answer = sender.pc.create_answer(None).expect("answer");
    sender
        .pc
        .set_local_description(Instant::now(), answer.clone())
        .expect("sender local description");
    viewer
        .pc
        .set_remote_description(Instant::now(), answer)
        .expect("answer applied");
    Pair {
        sender,
        viewer: Some(viewer),
        sender_id,
        ssrc,
    }
}

/// Hands `from`'s pending datagrams to `to`; returns how many moved.
fn deliver(from: &mut Peer, to: &mut Peer, now: Instant) -> usize {
    let mut moved = 0;
    while let Some(datagram) = from.pc.poll_write() {
        if datagram.transport.peer_addr != to.addr {
            continue;
        }
        moved += 1;
        let _ignored_if_rejected = to.pc.handle_read(TaggedBytesMut {
            now,
            transport: TransportContext {
                local_addr: to.addr,
                peer_addr: from.addr,
                transport_protocol: TransportProtocol::UDP,
                ecn: None,
            },
            message: datagram.message,
        });
    }
    moved
}

fn settle(peer: &mut Peer, now: Instant) {
    while let Some(event) = peer.pc.poll_event() {
        if let RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) = event {
            peer.connected = state == RTCPeerConnectionState::Connected;
        }
    }
    while peer.pc.poll_read().is_some() {}
    if peer.pc.poll_timeout().is_some_and(|at| at <= now) {
        let _timer_errors_end_in_state_events = peer.pc.handle_timeout(now);
    }
}

/// Runs ICE and DTLS for every pair until all are connected.
fn connect(pairs: &mut [Pair]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = Instant::now();
        let mut moved = 0;
        for p in pairs.iter_mut() {
            let viewer = p.viewer.as_mut().expect("viewer until connected");
            moved += deliver(viewer, &mut p.sender, now);
            moved += deliver(&mut p.sender, viewer, now);
            settle(viewer, now);
            settle(&mut p.sender, now);
        }
        if pairs
            .iter()
            .all(|p| p.sender.connected && p.viewer.as_ref().is_some_and(|v| v.connected))
        {
            return;
        }
        assert!(now < deadline, "pairs not connected within 30 s");
        if moved == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

// ---- measurements ------------------------------------------------------------

const PAYLOAD: usize = 1_188; // + 12-byte header = 1,200 bytes of RTP

/// Distinct payloads, shared by every viewer as an SFU shares a
/// publisher's packet (enough to fill any NACK history).
fn payloads() -> Vec<Bytes> {
    (0..1024u32)
        .map(|i| {
            let mut payload = vec![(i % 251) as u8; PAYLOAD];
            // FU-A of a non-IDR slice: what most video packets are.
            payload[0] = 0x7c;
            payload[1] = 0x01;
            Bytes::from(payload)
        })
        .collect()
}

fn packet(payload_type: u8, ssrc: u32, seq: u16, payload: &Bytes) -> rtp::Packet {
    rtp::Packet {
        header: rtp::header::Header {
            version: 2,
            payload_type,
            sequence_number: seq,
            timestamp: u32::from(seq / 8) * 3000,
            marker: seq % 8 == 7,
            ssrc,
            ..Default::default()
        },
        payload: payload.clone(),
    }
}

struct WriteCost {
    ns_per_packet: f64,
    allocations_per_packet: f64,
    bytes_out: u64,
}

/// `packets` packets to every pair's viewer: write_rtp + drain poll_write.
#[inline(never)]
fn measure_write(pairs: &mut [Pair], packets: u16, payloads: &[Bytes]) -> WriteCost {
    let payload_type = payload_type(&mut pairs[0]);
    let allocations_before = allocations();
    let started = Instant::now();
    let mut bytes_out = 0u64;
    for seq in 0..packets {
        let now = Instant::now();
        let payload = &payloads[usize::from(seq) % payloads.len()];
        for p in pairs.iter_mut() {
            let mut sender = p.sender.pc.rtp_sender(p.sender_id).expect("sender");
            sender
                .write_rtp(now, packet(payload_type, p.ssrc, seq, payload))
                .expect("write_rtp");
            while let Some(datagram) = p.sender.pc.poll_write() {
                bytes_out += datagram.message.len() as u64;
            }
        }
    }
    let writes = f64::from(packets) * pairs.len() as f64;
    WriteCost {
        ns_per_packet: started.elapsed().as_nanos() as f64 / writes,
        allocations_per_packet: (allocations() - allocations_before) as f64 / writes,
        bytes_out,
    }
}

fn payload_type(p: &mut Pair) -> u8 {
    let mut sender = p.sender.pc.rtp_sender(p.sender_id).expect("sender");
    sender
        .get_parameters()
        .rtp_parameters
        .codecs
        .iter()
        .find(|c| c.rtp_codec.mime_type.eq_ignore_ascii_case(MIME_TYPE_H264))
        .expect("H264 negotiated")
        .payload_type
}

/// One viewer's state on a fast path beside rtc: its SRTP session (an
/// AES-128-GCM key, the salt, the rollover counter) and its rewriter.
struct FastViewer {
    cipher: Box<dyn AeadCipher>,
    salt: [u8; 12],
    roc: u32,
    rewriter: Rewriter,
}

/// The work of a fast path beside rtc, per packet per viewer, as RFC 7714
/// frames SRTP with AES-GCM: the viewer's header rewritten and written with
/// the payload into a reused send buffer, the 12-byte IV made from the salt,
/// SSRC, ROC and sequence number, then sealed in place with the header as
/// AAD and the tag appended. A model of the cost, not a working path: the
/// keys here are made up, so no viewer could decrypt it.
#[inline(never)]
fn measure_fast_path(viewers: usize, packets: u16, payloads: &[Bytes]) -> f64 {
    let provider = rtc::crypto::default_provider().expect("crypto provider");
    let mut fan: Vec<FastViewer> = (0..viewers)
        .map(|i| FastViewer {
            cipher: provider
                .crypto()
                .new_aead(AeadAlgorithm::Aes128Gcm, &[i as u8; 16])
                .expect("AES-GCM"),
            salt: [i as u8 ^ 0x5a; 12],
            roc: 0,
            rewriter: Rewriter::new(0x5000_0000 + i as u32, 102, 90_000),
        })
        .collect();
    let mut buf = vec![0u8; 1500 * viewers];
    let started = Instant::now();
    let now = Instant::now();
    for seq in 0..packets {
        let source = packet(96, 1, seq, &payloads[usize::from(seq) % payloads.len()]);
        for (viewer, out) in fan.iter_mut().zip(buf.chunks_mut(1500)) {
            let mut header = source.header.clone();
            viewer.rewriter.rewrite(&mut header, now);
            let header_len = header.marshal_to(out).expect("header");
            let body = header_len + source.payload.len();
            out[header_len..body].copy_from_slice(&source.payload);
            let mut iv = viewer.salt;
            for (i, b) in header.ssrc.to_be_bytes().iter().enumerate() {
                iv[2 + i] ^= b;
            }
            for (i, b) in viewer.roc.to_be_bytes().iter().enumerate() {
                iv[6 + i] ^= b;
            }
            for (i, b) in header.sequence_number.to_be_bytes().iter().enumerate() {
                iv[10 + i] ^= b;
            }
            let (head, rest) = out.split_at_mut(header_len);
            let (plain, tag) = rest.split_at_mut(body - header_len);
            viewer
                .cipher
                .seal_in_place(&iv, head, plain, &mut tag[..16])
                .expect("seal");
            if header.sequence_number == u16::MAX {
                viewer.roc = viewer.roc.wrapping_add(1);
            }
        }
        std::hint::black_box(&buf);
    }
    started.elapsed().as_nanos() as f64 / (f64::from(packets) * viewers as f64)
}

/// Cloning the packet alone, per packet.
#[inline(never)]
fn measure_clone(packets: u32, payloads: &[Bytes]) -> f64 {
    let started = Instant::now();
    let mut sink = 0usize;
    for i in 0..packets {
        let p = packet(96, 1, i as u16, &payloads[i as usize % payloads.len()]);
        sink += std::hint::black_box(p.clone()).payload.len();
    }
    std::hint::black_box(sink);
    started.elapsed().as_nanos() as f64 / f64::from(packets)
}

/// SRTP through rtc-srtp's public API (marshal the packet, then
/// `encrypt_rtp`), per packet, with the profile rtc negotiates first.
#[inline(never)]
fn measure_srtp_gcm(packets: u32, payloads: &[Bytes]) -> f64 {
    measure_srtp(ProtectionProfile::AeadAes128Gcm, packets, payloads)
}

/// As [`measure_srtp_gcm`], with the profile every WebRTC stack supports.
#[inline(never)]
fn measure_srtp_cm(packets: u32, payloads: &[Bytes]) -> f64 {
    measure_srtp(ProtectionProfile::Aes128CmHmacSha1_80, packets, payloads)
}

fn measure_srtp(profile: ProtectionProfile, packets: u32, payloads: &[Bytes]) -> f64 {
    let provider = rtc::crypto::default_provider().expect("crypto provider");
    let key = vec![7u8; profile.key_len()];
    let salt = vec![9u8; profile.salt_len()];
    let mut context = SrtpContext::new(&key, &salt, profile, None, None, provider.crypto())
        .expect("srtp context");
    let started = Instant::now();
    for i in 0..packets {
        let p = packet(96, 1, i as u16, &payloads[i as usize % payloads.len()]);
        let raw = rtc::shared::marshal::Marshal::marshal(&p).expect("marshal");
        let sealed = context.encrypt_rtp(&raw).expect("encrypt");
        std::hint::black_box(sealed);
    }
    started.elapsed().as_nanos() as f64 / f64::from(packets)
}

// ---- main --------------------------------------------------------------------

struct Args {
    codecs: Codecs,
    packets: u16,
    compare: u32,
    viewers: u16,
    chains: Vec<Chain>,
}

fn args() -> Args {
    let mut args = Args {
        codecs: Codecs::All,
        packets: 5_000,
        compare: 100_000,
        viewers: 50,
        chains: vec![Chain::Default, Chain::Slim, Chain::None],
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--packets" => args.packets = value.parse().expect("--packets: a number ≤ 65535"),
            "--viewers" => args.viewers = value.parse().expect("--viewers: a number"),
            "--compare" => args.compare = value.parse().expect("--compare: a number"),
            "--codecs" => {
                args.codecs = match value.as_str() {
                    "all" => Codecs::All,
                    "h264" => Codecs::H264,
                    other => panic!("--codecs {other}: all or h264"),
                }
            }
            "--chain" => {
                args.chains = match value.as_str() {
                    "all" => args.chains,
                    "default" => vec![Chain::Default],
                    "slim" => vec![Chain::Slim],
                    "none" => vec![Chain::None],
                    other => panic!("--chain {other}: all, default, slim or none"),
                }
            }
            other => panic!("unknown flag {other}"),
        }
    }
    args
}

fn main() {
    let args = args();
    let payloads = payloads();
    println!(
        "rtc 0.21 write path: {} packets of 1,200 B to each of {} viewers (sending side's codecs: {:?})",
        args.packets, args.viewers, args.codecs
    );
    println!(
        "{:<8} {:>14} {:>16} {:>22} {:>22}",
        "chain", "ns/packet", "allocs/packet", "heap/conn connected", "heap/conn after send"
    );
    for chain in &args.chains {
        shared_certificate();
        let heap_before = live_bytes();
        let mut pairs: Vec<Pair> = (0..args.viewers)
            .map(|i| pair(i, *chain, args.codecs))
            .collect();
        connect(&mut pairs);
        // What the sending side holds alone: let the viewers go.
        for p in &mut pairs {
            p.viewer = None;
        }
        let per_sender = |pairs: &[Pair]| (live_bytes() - heap_before) as f64 / pairs.len() as f64;
        let connected = per_sender(&pairs);
        let cost = measure_write(&mut pairs, args.packets, &payloads);
        let after = per_sender(&pairs);
        assert!(
            cost.bytes_out >= u64::from(args.packets) * u64::from(args.viewers) * 1_200,
            "every packet left as an SRTP datagram"
        );
        println!(
            "{:<8} {:>14.0} {:>16.1} {:>19.0} KB {:>19.0} KB",
            chain.name(),
            cost.ns_per_packet,
            cost.allocations_per_packet,
            connected / 1024.0,
            after / 1024.0,
        );
    }
    let n = args.compare;
    println!(
        "fast path beside rtc (modelled: rewrite, copy, AES-GCM seal in place), {} viewers: {:.0} ns per packet per viewer",
        args.viewers,
        measure_fast_path(usize::from(args.viewers), args.packets, &payloads)
    );
    println!("for comparison, per packet ({n} packets):");
    println!(
        "  clone an rtp::Packet:                      {:>6.0} ns",
        measure_clone(n, &payloads)
    );
    println!(
        "  marshal + SRTP AEAD AES-128-GCM:           {:>6.0} ns",
        measure_srtp_gcm(n, &payloads)
    );
    println!(
        "  marshal + SRTP AES-128-CM + HMAC-SHA1-80:  {:>6.0} ns",
        measure_srtp_cm(n, &payloads)
    );
}
