//! What the media engine's shard spends per forwarded packet: one
//! publisher fanned out to N viewers through one shard on one UDP port,
//! over loopback, the shard thread's own CPU time divided by the packets
//! the viewers received.
//!
//! The clients are `rtc` connections on their own sockets, driven by one
//! thread of this program (pin the program so that thread and the shard's
//! do not share a core). The publisher sends 1,200-byte H.264-shaped
//! packets at `--mbps`, in bursts of one frame (`--fps`), as an encoder
//! does. The publisher's packets go through its `rtc` connection on the
//! shard; each viewer's copy leaves on the engine's fast path beside `rtc`
//! (rewritten and sealed by the shard, `engine/fast.rs`), in GSO sends.
//!
//! ```text
//! cargo build --release -p vigil-gateway --example engine_fanout
//! target/release/examples/engine_fanout [--viewers 200] [--mbps 2.5] [--fps 30] [--seconds 10] [--shards 1] [--counters 1]
//! ```
//!
//! `--counters 1` (the default, as the server runs) has the shards count
//! the publisher's packets and each viewer's sends and reports, for the
//! alarms and the stream statistics; `--counters 0` counts nothing, to
//! measure what counting costs.
//!
//! With `--shards 2` the publisher sits on shard 0 and the viewers
//! alternate between the shards, so half of them get each packet through
//! a relay from shard 0 to shard 1; the CPU figure is both shards' threads.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rtc::interceptor::Registry;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::configuration::interceptor_registry::register_default_interceptors;
use rtc::peer_connection::configuration::media_engine::MediaEngine;
use rtc::peer_connection::event::RTCPeerConnectionEvent;
use rtc::peer_connection::message::{RTCMessage, TaggedRTCMessage};
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use vigil_gateway::engine::io::ShardHandle;
use vigil_gateway::engine::shards::Engine;
use vigil_gateway::engine::{add_host_candidate, h264_baseline, send_track, session};
use vigil_gateway::sfu::MediaKind;
use vigil_gateway::sfu::layers::LayerChoice;
use vigil_gateway::sfu::stream_counters::ViewerCounters;

const PACKET: usize = 1_200;
const CAMERA: u32 = 0x00ca_fe00;

/// A client connection on its own socket.
struct Client {
    pc: RTCPeerConnection,
    socket: UdpSocket,
    addr: SocketAddr,
    connected: bool,
    received: Arc<AtomicU64>,
}

fn client(publisher: bool) -> (Client, String) {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("client socket");
    socket.set_nonblocking(true).expect("nonblocking");
    let addr = socket.local_addr().expect("address");
    let mut media_engine = MediaEngine::default();
    media_engine
        .register_default_codecs()
        .expect("default codecs");
    let registry =
        register_default_interceptors(Registry::new(), &mut media_engine).expect("interceptors");
    let mut pc = RTCPeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_media_engine(media_engine)
        .with_interceptor_registry(registry)
        .build(Instant::now())
        .expect("client connection");
    add_host_candidate(&mut pc, addr).expect("host candidate");
    if publisher {
        pc.add_track(send_track(
            "camera",
            RtpCodecKind::Video,
            CAMERA,
            h264_baseline(),
        ))
        .expect("send track");
    } else {
        pc.add_transceiver_from_kind(
            RtpCodecKind::Video,
            Some(RTCRtpTransceiverInit {
                direction: RTCRtpTransceiverDirection::Recvonly,
                ..Default::default()
            }),
        )
        .expect("recvonly");
    }
    let offer = pc.create_offer(None).expect("offer");
    pc.set_local_description(Instant::now(), offer.clone())
        .expect("local description");
    let client = Client {
        pc,
        socket,
        addr,
        connected: false,
        received: Arc::new(AtomicU64::new(0)),
    };
    (client, offer.sdp)
}

impl Client {
    /// Reads what arrived, sends what is pending, runs due timers.
    fn pump(&mut self, buf: &mut [u8]) {
        let now = Instant::now();
        while let Ok((n, from)) = self.socket.recv_from(buf) {
            let read = TaggedBytesMut {
                now,
                transport: TransportContext {
                    local_addr: self.addr,
                    peer_addr: from,
                    transport_protocol: TransportProtocol::UDP,
                    ecn: None,
                },
                message: BytesMut::from(&buf[..n]),
            };
            let _refused = self.pc.handle_read(read);
        }
        while let Some(TaggedRTCMessage { message, .. }) = self.pc.poll_read() {
            if matches!(message, RTCMessage::RtpPacket(..)) {
                self.received.fetch_add(1, Ordering::Relaxed);
            }
        }
        if self.pc.poll_timeout().is_some_and(|at| at <= now) {
            let _state_events = self.pc.handle_timeout(now);
        }
        while let Some(event) = self.pc.poll_event() {
            if let RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) = event {
                self.connected = state == RTCPeerConnectionState::Connected;
            }
        }
        while let Some(out) = self.pc.poll_write() {
            let _lost_like_udp = self.socket.send_to(&out.message, out.transport.peer_addr);
        }
    }

    fn send(&mut self, seq: u16, timestamp: u32, marker: bool, payload: &Bytes) {
        let now = Instant::now();
        let id = self.pc.get_senders().next().expect("a sender");
        let mut sender = self.pc.rtp_sender(id).expect("sender");
        let payload_type = sender.get_parameters().rtp_parameters.codecs[0].payload_type;
        let packet = rtp::Packet {
            header: rtp::header::Header {
                version: 2,
                payload_type,
                sequence_number: seq,
                timestamp,
                marker,
                ssrc: CAMERA,
                ..Default::default()
            },
            payload: payload.clone(),
        };
        let _counted_at_the_viewers = sender.write_rtp(now, packet);
    }
}

/// The shard thread's CPU time so far, (user, system), from /proc.
fn thread_cpu(name: &str) -> (Duration, Duration) {
    let tasks = std::fs::read_dir("/proc/self/task").expect("/proc/self/task");
    for task in tasks.flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim() == name {
            let stat = std::fs::read_to_string(task.path().join("stat")).expect("stat");
            let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split(' ').collect();
            // After "pid (comm)": state is field 3, utime 14 and stime 15.
            let ticks = |i: usize| fields[i].parse::<u64>().unwrap_or(0);
            return (
                Duration::from_millis(ticks(12) * 10),
                Duration::from_millis(ticks(13) * 10),
            );
        }
    }
    panic!("no thread named {name}");
}

struct Args {
    viewers: usize,
    mbps: f64,
    fps: u32,
    seconds: u64,
    shards: usize,
    counters: bool,
}

fn args() -> Args {
    let mut args = Args {
        viewers: 200,
        mbps: 2.5,
        fps: 30,
        seconds: 10,
        shards: 1,
        counters: true,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--viewers" => args.viewers = value.parse().expect("--viewers"),
            "--mbps" => args.mbps = value.parse().expect("--mbps"),
            "--fps" => args.fps = value.parse().expect("--fps"),
            "--seconds" => args.seconds = value.parse().expect("--seconds"),
            "--shards" => args.shards = value.parse().expect("--shards"),
            "--counters" => args.counters = value != "0",
            other => panic!("unknown flag {other}"),
        }
    }
    args
}

fn main() {
    let args = args();
    let control = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (engine, _events) =
        Engine::start("127.0.0.1:0".parse().expect("address"), args.shards, false).expect("engine");
    let shard_threads: Vec<String> = engine
        .shards()
        .iter()
        .map(|s| format!("shard-{}", s.local_addr().port()))
        .collect();
    let shards_cpu = || {
        shard_threads
            .iter()
            .map(|name| thread_cpu(name))
            .fold((Duration::ZERO, Duration::ZERO), |a, b| {
                (a.0 + b.0, a.1 + b.1)
            })
    };

    // Negotiates a client with a new connection on shard `on` sending `tracks`.
    let join = |client: &mut Client, offer: &str, tracks, on: usize| {
        let shard = &engine.shards()[on];
        let answered = session::answer(
            offer,
            shard.local_addr(),
            tracks,
            &Default::default(),
            Instant::now(),
        )
        .expect("answer");
        let conn = control
            .block_on(shard.add_connection(answered.pc, answered.ufrag))
            .expect("connection added");
        let answer = RTCSessionDescription::answer(answered.answer).expect("answer");
        client
            .pc
            .set_remote_description(Instant::now(), answer)
            .expect("answer applied");
        (conn, answered.senders)
    };
    let (mut publisher, offer) = client(true);
    let (publisher_conn, _) = join(&mut publisher, &offer, Vec::new(), 0);
    if args.counters {
        engine.shards()[0].count_into(publisher_conn, Arc::default());
    }
    let (track, _) = control
        .block_on(engine.shards()[0].published_tracks(publisher_conn))
        .into_iter()
        .find(|(_, kind)| *kind == MediaKind::Video)
        .expect("the publisher's video track");

    let mut viewers = Vec::with_capacity(args.viewers);
    let mut subscriptions = Vec::with_capacity(args.viewers);
    for i in 0..args.viewers {
        let (mut viewer, offer) = client(false);
        let ssrc = 0x5000_0000 + i as u32;
        let track = send_track("video", RtpCodecKind::Video, ssrc, h264_baseline());
        let on = i % engine.shards().len();
        let (conn, senders) = join(&mut viewer, &offer, vec![track], on);
        if args.counters {
            engine.shards()[on].count_viewer_into(conn, Arc::new(ViewerCounters::default()));
        }
        subscriptions.push((on, conn, senders[0], ssrc));
        viewers.push(viewer);
    }

    let connected = Arc::new(AtomicUsize::new(0));
    let sending = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let counters: Vec<Arc<AtomicU64>> = viewers.iter().map(|v| v.received.clone()).collect();
    let packets_per_frame =
        ((args.mbps * 1e6 / 8.0 / f64::from(args.fps)) / PACKET as f64).ceil() as usize;
    let frame_interval = Duration::from_secs_f64(1.0 / f64::from(args.fps));
    let clients = {
        let (connected, sending, stop, sent) = (
            connected.clone(),
            sending.clone(),
            stop.clone(),
            sent.clone(),
        );
        std::thread::spawn(move || {
            // H.264 FU-A fragments: every 60th frame (2 s) starts with an
            // IDR's first fragment, so viewers (who start at a keyframe)
            // get going and the shard's keyframe cache has one.
            let fragment = |fu_header: u8| {
                let mut payload = vec![0x7c; PACKET - 12];
                payload[1] = fu_header;
                Bytes::from(payload)
            };
            let (idr_start, middle) = (fragment(0x85), fragment(0x05));
            let mut buf = vec![0u8; 2048];
            let (mut seq, mut frame, mut next_frame) = (0u16, 0u32, Instant::now());
            while !stop.load(Ordering::Relaxed) {
                publisher.pump(&mut buf);
                for v in &mut viewers {
                    v.pump(&mut buf);
                }
                let up = usize::from(publisher.connected)
                    + viewers.iter().filter(|v| v.connected).count();
                connected.store(up, Ordering::Relaxed);
                if sending.load(Ordering::Relaxed) && Instant::now() >= next_frame {
                    for i in 0..packets_per_frame {
                        let last = i + 1 == packets_per_frame;
                        let payload = if i == 0 && frame % 60 == 0 {
                            &idr_start
                        } else {
                            &middle
                        };
                        publisher.send(seq, frame * 3000, last, payload);
                        seq = seq.wrapping_add(1);
                    }
                    sent.fetch_add(packets_per_frame as u64, Ordering::Relaxed);
                    frame += 1;
                    next_frame += frame_interval;
                }
            }
        })
    };

    let deadline = Instant::now() + Duration::from_secs(60);
    while connected.load(Ordering::Relaxed) < args.viewers + 1 {
        assert!(
            Instant::now() < deadline,
            "only {} of {} connected",
            connected.load(Ordering::Relaxed),
            args.viewers + 1
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    for (on, conn, sender, ssrc) in subscriptions {
        assert!(control.block_on(engine.subscribe(
            track,
            on,
            conn,
            sender,
            ssrc,
            LayerChoice::High
        )));
    }
    sending.store(true, Ordering::Relaxed);
    std::thread::sleep(Duration::from_secs(2)); // warm-up

    let total = |c: &[Arc<AtomicU64>]| c.iter().map(|c| c.load(Ordering::Relaxed)).sum::<u64>();
    let io = |shards: &[ShardHandle]| {
        let mut sum = [0u64; 4];
        for s in shards {
            let st = s.io_stats();
            sum[0] += st.receives.load(Ordering::Relaxed);
            sum[1] += st.datagrams_in.load(Ordering::Relaxed);
            sum[2] += st.sends.load(Ordering::Relaxed);
            sum[3] += st.datagrams_out.load(Ordering::Relaxed);
        }
        sum
    };
    let io0 = io(engine.shards());
    let (cpu0, got0, sent0) = (shards_cpu(), total(&counters), sent.load(Ordering::Relaxed));
    std::thread::sleep(Duration::from_secs(args.seconds));
    let (cpu1, got1, sent1) = (shards_cpu(), total(&counters), sent.load(Ordering::Relaxed));
    let io1 = io(engine.shards());
    stop.store(true, Ordering::Relaxed);
    let _ = clients.join();

    let forwarded = got1 - got0;
    let expected = (sent1 - sent0) * args.viewers as u64;
    let (user, system) = (cpu1.0 - cpu0.0, cpu1.1 - cpu0.1);
    let cpu = user + system;
    println!(
        "{} viewers on {} shard(s), {:.1} Mbit/s ({} packets of {} B per frame, {} fps), {} s",
        args.viewers, args.shards, args.mbps, packets_per_frame, PACKET, args.fps, args.seconds
    );
    println!(
        "shard threads: {:.2} s CPU ({:.0} % of a core; user {:.2} s, system {:.2} s); {} packets forwarded of {} expected ({:.2} % short)",
        cpu.as_secs_f64(),
        100.0 * cpu.as_secs_f64() / args.seconds as f64,
        user.as_secs_f64(),
        system.as_secs_f64(),
        forwarded,
        expected,
        100.0 * (expected.saturating_sub(forwarded)) as f64 / expected.max(1) as f64
    );
    let d: Vec<f64> = io1.iter().zip(io0).map(|(b, a)| (b - a) as f64).collect();
    println!(
        "socket: {:.2} datagrams per receive, {:.2} datagrams per send (GSO)",
        d[1] / d[0].max(1.0),
        d[3] / d[2].max(1.0)
    );
    let per_packet = |d: Duration| d.as_secs_f64() * 1e6 / forwarded.max(1) as f64;
    println!(
        "server CPU per forwarded packet: {:.2} µs (user {:.2}, system {:.2})",
        per_packet(cpu),
        per_packet(user),
        per_packet(system)
    );
}
