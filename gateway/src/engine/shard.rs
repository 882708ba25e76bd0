//! One shard of the media engine: the connections it owns, the shared
//! port's demultiplexer, their timers and the fan-out of publishers' RTP to
//! viewers, as plain data.
//!
//! Inputs come in with the time they happen ([`Shard::handle_datagram`],
//! [`Shard::handle_timeout`], and commands such as
//! [`Shard::add_connection`] and [`Shard::subscribe`]); outputs are polled
//! ([`Shard::poll_transmit`], [`Shard::poll_event`],
//! [`Shard::poll_timeout`]). No socket, thread or clock: the I/O loop
//! around it owns those, and tests drive it packet by packet.
//!
//! The run-loop invariant: after any input, every connection it touched has
//! been drained (its datagrams are in the transmit queue, its events in the
//! event queue, its RTP fanned out) and its next deadline is in the timer
//! heap. Within one input (a batch of datagrams, say) a viewer that several
//! packets fan out to has its datagrams queued at each packet but is
//! drained once, at the end. So an I/O loop only sends what it polls and sleeps until
//! [`Shard::poll_timeout`].

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use rtc::peer_connection::RTCPeerConnection;
use rtc::peer_connection::event::{RTCPeerConnectionEvent, RTCTrackEvent, RTCTrackEventInit};
use rtc::peer_connection::message::{RTCMessage, TaggedRTCMessage};
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::rtp;
use rtc::rtp_transceiver::RTCRtpSenderId;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};

use super::demux::Demux;
use super::fast::{FastPath, SenderStats};
use crate::sfu::MediaKind;
use crate::sfu::forwarder::{MIN_PLI_INTERVAL, StreamCounters};
use crate::sfu::keyframe::{VideoCodec, starts_keyframe};
use crate::sfu::keyframe_cache::KeyframeCache;
use crate::sfu::rewrite::Rewriter;
use crate::sfu::rtcp::is_keyframe_request;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;

/// A connection of this shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(u32);

/// A published stream, named across shards: the publisher connection's
/// shard, its id there, and the publisher's SSRC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Source {
    /// The shard the publisher's connection lives on.
    pub shard: usize,
    /// The publisher's connection on that shard.
    pub conn: ConnId,
    /// The publisher's SSRC.
    pub ssrc: u32,
}

/// Packets of one input bound for another shard: each published packet
/// once per shard that has viewers of it, never once per viewer.
#[derive(Debug, Default)]
pub struct Relay {
    /// The packets, in arrival order, each with the stream it belongs to.
    pub packets: Vec<(Source, rtp::Packet)>,
}

/// A datagram to send from the shard's socket.
#[derive(Debug)]
pub struct Transmit {
    /// Where to.
    pub to: SocketAddr,
    /// The bytes, SRTP/DTLS/STUN already applied.
    pub payload: BytesMut,
}

/// A stream a publisher started sending: reported at its first packet,
/// by which time the shard keeps its keyframes (video).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedTrack {
    /// The stream, on this shard.
    pub source: Source,
    /// Audio or video.
    pub kind: MediaKind,
    /// The negotiated codec's mime type (`video/H264`, `audio/opus`).
    pub mime: String,
    /// Its rid, for a simulcast layer.
    pub rid: Option<String>,
}

/// What happened, for the room owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// ICE and DTLS are up.
    Connected(ConnId),
    /// A publisher's stream started.
    Track(PublishedTrack),
    /// The connection failed or closed; the shard has dropped it.
    Closed(ConnId),
    /// A viewer asked for a keyframe (PLI or FIR) of the stream it gets
    /// from `source`.
    KeyframeRequest {
        /// The viewer.
        viewer: ConnId,
        /// The stream the viewer is subscribed to (perhaps on another
        /// shard).
        source: Source,
    },
}

/// Packets a publisher's stream kept for retransmission, shared by all its
/// viewers: one copy per packet (its payload shared by reference), not one
/// per viewer connection as rtc's NACK responder keeps.
struct History {
    slots: Vec<Option<rtp::Packet>>,
}

/// Packets kept per published stream: 0.7 s at 8 Mbit/s.
pub const HISTORY: usize = 512;

impl History {
    fn new() -> Self {
        History {
            slots: vec![None; HISTORY],
        }
    }

    fn keep(&mut self, packet: &rtp::Packet) {
        self.slots[usize::from(packet.header.sequence_number) % HISTORY] = Some(packet.clone());
    }

    fn get(&self, seq: u16) -> Option<&rtp::Packet> {
        self.slots[usize::from(seq) % HISTORY]
            .as_ref()
            .filter(|p| p.header.sequence_number == seq)
    }
}

/// A viewer's end of a subscription: where one source SSRC goes.
struct Sink {
    viewer: ConnId,
    sender: RTCRtpSenderId,
    rewriter: Rewriter,
    clock_rate: u32,
    /// The video codec the viewer gets (`None` for audio).
    video: Option<VideoCodec>,
    /// Started: the viewer is connected and was given the cached keyframe
    /// (if any).
    started: bool,
    /// Video skipped until a keyframe starts (after the start).
    waiting_for_keyframe: bool,
    /// What went out on the viewer's SSRC, for its sender reports.
    stats: SenderStats,
}

struct Conn {
    pc: RTCPeerConnection,
    /// The viewer's outgoing SRTP on the fast path, from its first
    /// forwarded packet after DTLS ([`super::fast`]).
    fast: Option<FastPath>,
    /// The deadline this connection has in the heap, if any.
    deadline: Option<Instant>,
    connected: bool,
    /// Written to by a fan-out and not drained since (it is in `dirty`).
    dirty: bool,
    /// A publisher's counters for alarms: what it sent, muted or not.
    counters: Option<Arc<StreamCounters>>,
}

/// The connections of one shard and everything between them.
pub struct Shard {
    /// This shard's place among the engine's shards.
    index: usize,
    local: SocketAddr,
    next_id: u32,
    conns: HashMap<ConnId, Conn>,
    demux: Demux<ConnId>,
    /// Deadlines, earliest first; an entry whose connection has since moved
    /// its deadline is stale and skipped.
    timers: BinaryHeap<Reverse<(Instant, ConnId)>>,
    /// Fan-out: a stream (local or relayed from another shard) → this
    /// shard's viewers of it.
    sinks: HashMap<Source, Vec<Sink>>,
    /// Recent packets of each stream this shard's viewers get, for their
    /// NACKs.
    histories: HashMap<Source, History>,
    /// The last complete keyframe of each video stream this shard's
    /// viewers get, for viewers that start mid-GOP.
    keyframes: HashMap<Source, (VideoCodec, KeyframeCache)>,
    /// When each local publisher's stream was last asked for a keyframe.
    keyframe_asked: HashMap<(ConnId, u32), Instant>,
    /// A local publisher's stream → the other shards that have viewers of
    /// it.
    relay_targets: HashMap<(ConnId, u32), Vec<usize>>,
    /// Relayed packets of the current input, per destination shard.
    relays: Vec<(usize, Relay)>,
    /// Streams whose packets reach no viewer (nor other shard) for now.
    muted: HashSet<Source>,
    /// Packets resent from a history.
    retransmitted: u64,
    /// Viewers written to during the current input, drained at its end.
    dirty: Vec<ConnId>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
}

impl Shard {
    /// A shard whose socket is bound to `local` (the address every
    /// connection's host candidate carries), alone.
    pub fn new(local: SocketAddr) -> Self {
        Shard::with_index(0, local)
    }

    /// Shard number `index` of an engine, its socket bound to `local`.
    pub fn with_index(index: usize, local: SocketAddr) -> Self {
        Shard {
            index,
            local,
            next_id: 0,
            conns: HashMap::new(),
            demux: Demux::new(),
            timers: BinaryHeap::new(),
            sinks: HashMap::new(),
            histories: HashMap::new(),
            keyframes: HashMap::new(),
            keyframe_asked: HashMap::new(),
            relay_targets: HashMap::new(),
            relays: Vec::new(),
            muted: HashSet::new(),
            retransmitted: 0,
            dirty: Vec::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// Takes over a negotiated connection whose ICE credentials use `ufrag`
    /// (see [`super::add_host_candidate`] for its candidate).
    pub fn add_connection(&mut self, pc: RTCPeerConnection, ufrag: &str, now: Instant) -> ConnId {
        let id = ConnId(self.next_id);
        self.next_id += 1;
        self.demux.add_ufrag(id, ufrag);
        self.conns.insert(
            id,
            Conn {
                pc,
                fast: None,
                deadline: None,
                connected: false,
                dirty: false,
                counters: None,
            },
        );
        self.drain(id, now);
        id
    }

    /// Counts everything publisher connection `conn` sends into
    /// `counters` (packets, payload bytes, keyframes), muted or not: the
    /// alarms judge the publisher, not what viewers get.
    pub fn count_into(&mut self, conn: ConnId, counters: Arc<StreamCounters>) {
        if let Some(conn) = self.conns.get_mut(&conn) {
            conn.counters = Some(counters);
        }
    }

    /// Stops (`true`) or resumes sending `source` to this shard's viewers
    /// and, on its own shard, to other shards. While muted its packets are
    /// neither sent, kept for repairs nor cached as a keyframe. On resume
    /// each viewer continues its numbering where it stopped and, for
    /// video, waits for a keyframe, which the publisher is asked for.
    pub fn set_muted(&mut self, source: Source, muted: bool, now: Instant) {
        if muted {
            self.muted.insert(source);
            return;
        }
        if !self.muted.remove(&source) {
            return;
        }
        let mut video = false;
        for sink in self.sinks.get_mut(&source).into_iter().flatten() {
            if sink.started {
                sink.rewriter.rebase();
                sink.waiting_for_keyframe = sink.video.is_some();
                video |= sink.video.is_some();
            }
        }
        if video || self.keyframes.contains_key(&source) {
            self.request_keyframe(source, now);
        }
    }

    /// Closes and drops a connection, and every subscription to or from it.
    pub fn remove_connection(&mut self, id: ConnId, now: Instant) {
        if let Some(conn) = self.conns.get_mut(&id) {
            let _closing_anyway = conn.pc.close();
            self.drain(id, now);
        }
        self.forget(id);
    }

    /// This shard's place among the engine's shards.
    pub fn index(&self) -> usize {
        self.index
    }

    /// The stream a local publisher connection sends on `ssrc`.
    pub fn source(&self, conn: ConnId, ssrc: u32) -> Source {
        Source {
            shard: self.index,
            conn,
            ssrc,
        }
    }

    /// Sends `source` (a local publisher's stream, or one relayed from the
    /// shard it lives on, see [`Shard::relay_to`]) to `viewer`'s sender
    /// `sender`, as `ssrc` at the payload type the viewer negotiated for the
    /// sender's codec, numbered continuously for the viewer.
    pub fn subscribe(
        &mut self,
        source: Source,
        viewer: ConnId,
        sender: RTCRtpSenderId,
        ssrc: u32,
    ) -> Option<()> {
        let pc = &mut self.conns.get_mut(&viewer)?.pc;
        let mut rtp_sender = pc.rtp_sender(sender)?;
        let codec = sent_codec(rtp_sender.get_parameters())?;
        let (payload_type, clock_rate) = (codec.payload_type, codec.rtp_codec.clock_rate);
        let video = VideoCodec::from_mime(&codec.rtp_codec.mime_type);
        if let Some(codec) = video {
            self.keyframes
                .entry(source)
                .or_insert_with(|| (codec, KeyframeCache::default()));
        }
        self.sinks.entry(source).or_default().push(Sink {
            viewer,
            sender,
            rewriter: Rewriter::new(ssrc, payload_type, clock_rate),
            clock_rate,
            video,
            started: false,
            waiting_for_keyframe: false,
            stats: SenderStats::default(),
        });
        Some(())
    }

    /// Keeps the last complete keyframe of `source` (a local publisher's
    /// video stream in `codec`) from now on, before anyone watches it, so
    /// that its first viewer starts at once.
    pub fn watch(&mut self, source: Source, codec: VideoCodec) {
        self.keyframes
            .entry(source)
            .or_insert_with(|| (codec, KeyframeCache::default()));
    }

    /// Copies every packet a local publisher sends on `ssrc` to shard
    /// `shard` (which has viewers of it), once per packet, as a [`Relay`]
    /// polled with [`Shard::poll_relay`]. The stream's cached keyframe goes
    /// first, so that shard's viewers start from it.
    pub fn relay_to(&mut self, conn: ConnId, ssrc: u32, shard: usize) {
        let targets = self.relay_targets.entry((conn, ssrc)).or_default();
        if shard == self.index || targets.contains(&shard) {
            return;
        }
        targets.push(shard);
        let source = self.source(conn, ssrc);
        if let Some(keyframe) = self.keyframes.get(&source).and_then(|(_, c)| c.keyframe()) {
            let packets = keyframe.iter().map(|p| (source, p.clone())).collect();
            self.relays.push((shard, Relay { packets }));
        }
    }

    /// Packets another shard relayed: fanned out to this shard's viewers
    /// of their streams, as if their publisher were local.
    pub fn handle_relay(&mut self, now: Instant, relay: Relay) {
        for (source, packet) in relay.packets {
            self.fan_out(source, packet, now);
        }
        self.settle(now);
    }

    /// Asks a local publisher for a keyframe of `source` (a PLI through its
    /// connection), at most once per [`MIN_PLI_INTERVAL`] per stream: the
    /// requests of many viewers, and of other shards, coalesce here.
    pub fn request_keyframe(&mut self, source: Source, now: Instant) {
        if source.shard != self.index {
            return;
        }
        let key = (source.conn, source.ssrc);
        if self
            .keyframe_asked
            .get(&key)
            .is_some_and(|at| now.saturating_duration_since(*at) < MIN_PLI_INTERVAL)
        {
            return;
        }
        let Some(conn) = self.conns.get_mut(&source.conn) else {
            return;
        };
        let receivers: Vec<_> = conn.pc.get_receivers().collect();
        for id in receivers {
            let Some(mut receiver) = conn.pc.rtp_receiver(id) else {
                continue;
            };
            if receiver.track().ssrcs().any(|ssrc| ssrc == source.ssrc) {
                let pli = PictureLossIndication {
                    sender_ssrc: 0,
                    media_ssrc: source.ssrc,
                };
                if receiver.write_rtcp(now, vec![Box::new(pli)]).is_ok() {
                    self.keyframe_asked.insert(key, now);
                }
                break;
            }
        }
        self.drain(source.conn, now);
    }

    /// Moves this shard's viewers of `from` (a stream whose publisher left)
    /// onto `to` (the stream of the publisher that replaced it, in the same
    /// codec): each starts again as a new viewer would, from `to`'s cached
    /// keyframe or its next one, on the same SSRC with its numbering
    /// continued. Returns whether any viewer moved.
    pub fn move_viewers(&mut self, from: Source, to: Source) -> bool {
        let Some(mut moved) = self.sinks.remove(&from).filter(|s| !s.is_empty()) else {
            return false;
        };
        for sink in &mut moved {
            sink.rewriter.rebase();
            sink.started = false;
            sink.waiting_for_keyframe = false;
            if let Some(codec) = sink.video {
                self.keyframes
                    .entry(to)
                    .or_insert_with(|| (codec, KeyframeCache::default()));
            }
        }
        self.sinks.entry(to).or_default().extend(moved);
        true
    }

    /// Drops this shard's history, keyframe and relays of every stream of
    /// publisher connection `conn` on shard `shard` (it has gone). Its
    /// viewers stay subscribed, getting nothing, until they are moved to
    /// a new publisher ([`Shard::move_viewers`]) or removed.
    pub fn forget_publisher(&mut self, shard: usize, conn: ConnId) {
        let gone = |source: &Source| source.shard == shard && source.conn == conn;
        self.histories.retain(|source, _| !gone(source));
        self.keyframes.retain(|source, _| !gone(source));
        self.muted.retain(|source| !gone(source));
        if shard == self.index {
            self.keyframe_asked.retain(|(c, _), _| *c != conn);
        }
    }

    /// Packets for another shard: (its index, the packets).
    pub fn poll_relay(&mut self) -> Option<(usize, Relay)> {
        self.relays.pop()
    }

    /// A datagram arrived on the shard's socket from `from`.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, payload: BytesMut) {
        self.read(now, from, payload);
        self.settle(now);
    }

    /// Datagrams that arrived together (one receive batch). Viewers that
    /// several of them fan out to are drained once, at the end.
    pub fn handle_datagrams(
        &mut self,
        now: Instant,
        datagrams: impl IntoIterator<Item = (SocketAddr, BytesMut)>,
    ) {
        for (from, payload) in datagrams {
            self.read(now, from, payload);
        }
        self.settle(now);
    }

    fn read(&mut self, now: Instant, from: SocketAddr, payload: BytesMut) {
        let Some(id) = self.demux.route(from, &payload) else {
            return; // not a checked source of any connection: dropped
        };
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        let read = TaggedBytesMut {
            now,
            transport: TransportContext {
                local_addr: self.local,
                peer_addr: from,
                transport_protocol: TransportProtocol::UDP,
                ecn: None,
            },
            message: payload,
        };
        // A datagram rtc refuses (bad SRTP auth, a stray DTLS record) costs
        // only itself.
        let _refused = conn.pc.handle_read(read);
        self.drain(id, now);
    }

    /// Drains the viewers the current input wrote to.
    fn settle(&mut self, now: Instant) {
        while let Some(id) = self.dirty.pop() {
            if let Some(conn) = self.conns.get_mut(&id) {
                conn.dirty = false;
                self.drain(id, now);
            }
        }
    }

    /// Runs every connection timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(Reverse((at, id))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            let Some(conn) = self.conns.get_mut(&id) else {
                continue;
            };
            if conn.deadline != Some(at) {
                continue; // stale: the connection has a newer deadline
            }
            conn.deadline = None;
            let _reported_as_state_events = conn.pc.handle_timeout(now);
            self.drain(id, now);
        }
        self.settle(now);
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event for the room owner.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Shard::handle_timeout`] is next due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((at, _))| *at)
    }

    /// How many connections the shard holds.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// The address `id`'s media goes to, once it has passed a check.
    pub fn peer_addr(&self, id: ConnId) -> Option<SocketAddr> {
        self.demux.current_addr(id)
    }

    /// Empties connection `id` after an input: datagrams, events, received
    /// media (fanned out to its viewers), then its next deadline.
    fn drain(&mut self, id: ConnId, now: Instant) {
        let mut closed = false;
        let mut media = Vec::new();
        let mut keyframe_requests = Vec::new();
        let mut nacks = Vec::new();
        let mut opened = Vec::new();
        {
            let Some(conn) = self.conns.get_mut(&id) else {
                return;
            };
            Self::write_out(&mut self.demux, &mut self.transmits, id, &mut conn.pc);
            while let Some(event) = conn.pc.poll_event() {
                match event {
                    RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) => match state {
                        RTCPeerConnectionState::Connected if !conn.connected => {
                            conn.connected = true;
                            self.events.push_back(Event::Connected(id));
                        }
                        RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed => {
                            closed = true;
                        }
                        _ => {}
                    },
                    RTCPeerConnectionEvent::OnTrack(RTCTrackEvent::OnOpen(init)) => {
                        opened.push(init);
                    }
                    _ => {}
                }
            }
            while let Some(TaggedRTCMessage { message, .. }) = conn.pc.poll_read() {
                match message {
                    RTCMessage::RtpPacket(_, packet) => media.push(packet),
                    RTCMessage::RtcpPacket(_, packets) => {
                        for p in &packets {
                            if is_keyframe_request(p.as_ref()) {
                                keyframe_requests.extend(p.destination_ssrc());
                            } else if let Some(nack) =
                                p.as_any().downcast_ref::<TransportLayerNack>()
                            {
                                nacks.push(nack.clone());
                            }
                        }
                    }
                    _ => {} // data channels: none are negotiated
                }
            }
            if !closed {
                let deadline = conn.pc.poll_timeout();
                if deadline != conn.deadline {
                    conn.deadline = deadline;
                    if let Some(at) = deadline {
                        self.timers.push(Reverse((at, id)));
                    }
                }
            }
        }
        for nack in nacks {
            self.retransmit(id, &nack, now);
        }
        for viewer_ssrc in keyframe_requests {
            if let Some(source) = self.source_of(id, viewer_ssrc) {
                self.events
                    .push_back(Event::KeyframeRequest { viewer: id, source });
            }
        }
        for init in opened {
            self.track_opened(id, init);
        }
        if !media.is_empty() {
            self.publish(id, media, now);
        }
        if closed {
            self.forget(id);
            self.events.push_back(Event::Closed(id));
        }
    }

    /// Reports a publisher's new stream, and keeps its keyframes from its
    /// first packet on (video).
    fn track_opened(&mut self, id: ConnId, init: RTCTrackEventInit) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        let Some(receiver) = conn.pc.rtp_receiver(init.receiver_id) else {
            return;
        };
        let track = receiver.track();
        let kind = match track.kind() {
            RtpCodecKind::Audio => MediaKind::Audio,
            RtpCodecKind::Video => MediaKind::Video,
            _ => return,
        };
        let Some(mime) = track.codec(init.ssrc).map(|c| c.mime_type.clone()) else {
            return;
        };
        let source = self.source(id, init.ssrc);
        if let Some(codec) = VideoCodec::from_mime(&mime) {
            self.watch(source, codec);
        }
        self.events.push_back(Event::Track(PublishedTrack {
            source,
            kind,
            mime,
            rid: init.rid.filter(|rid| !rid.is_empty()),
        }));
    }

    /// A local publisher's packets of one input: counted, then relayed
    /// and fanned out unless their stream is muted.
    fn publish(&mut self, id: ConnId, media: Vec<rtp::Packet>, now: Instant) {
        let counters = self.conns.get(&id).and_then(|c| c.counters.clone());
        for packet in media {
            let source = self.source(id, packet.header.ssrc);
            if let Some(counters) = &counters {
                let keyframe = self
                    .keyframes
                    .get(&source)
                    .is_some_and(|(codec, _)| starts_keyframe(*codec, &packet.payload));
                counters.count(packet.payload.len(), keyframe);
            }
            if self.muted.contains(&source) {
                continue;
            }
            self.relay(source, &packet);
            self.fan_out(source, packet, now);
        }
    }

    /// Queues what `pc` (connection `id`) has to send.
    fn write_out(
        demux: &mut Demux<ConnId>,
        transmits: &mut VecDeque<Transmit>,
        id: ConnId,
        pc: &mut RTCPeerConnection,
    ) {
        while let Some(out) = pc.poll_write() {
            let to = demux.on_transmit(id, out.transport.peer_addr, &out.message);
            transmits.push_back(Transmit {
                to,
                payload: out.message,
            });
        }
    }

    /// Sends a publisher's packet to each of its viewers on the fast path:
    /// rewritten, sealed and queued here, without entering the viewer's
    /// `rtc` connection. Only a viewer whose sender report falls due is
    /// written to (the report goes through `rtc`, as all RTCP does) and
    /// drained at the end of the input ([`Shard::settle`]).
    fn fan_out(&mut self, key: Source, packet: rtp::Packet, now: Instant) {
        if self.muted.contains(&key) {
            return; // a relay that left its shard before the mute reached it
        }
        // One lookup of the stream's keyframe cache per packet, used for
        // the keyframe test, the viewers that start now, and then fed.
        let mut cache = self
            .keyframes
            .get_mut(&key)
            .map(|(codec, cache)| (*codec, cache));
        let keyframe_start = cache
            .as_ref()
            .is_some_and(|(codec, _)| starts_keyframe(*codec, &packet.payload));
        let Some(sinks) = self.sinks.get_mut(&key) else {
            // Nobody watches yet; a watched stream's keyframe is kept for
            // the first viewer.
            if let Some((_, cache)) = cache {
                cache.observe(&packet, keyframe_start);
            }
            return;
        };
        let cached = cache.as_ref().and_then(|(_, cache)| cache.keyframe());
        for sink in sinks.iter_mut() {
            let Some(conn) = self.conns.get_mut(&sink.viewer) else {
                continue;
            };
            if !conn.connected {
                continue; // before DTLS there are no keys to seal with
            }
            let Some(to) = self.demux.current_addr(sink.viewer) else {
                continue;
            };
            if !sink.started {
                sink.started = true;
                if sink.video.is_some() {
                    Self::start_from(&mut self.transmits, conn, sink, to, cached, now);
                    self.events.push_back(Event::KeyframeRequest {
                        viewer: sink.viewer,
                        source: key,
                    });
                }
            }
            if sink.waiting_for_keyframe {
                if !keyframe_start {
                    continue;
                }
                sink.waiting_for_keyframe = false;
            }
            Self::send_fast(&mut self.transmits, conn, sink, to, &packet, now);
            if let Some(report) = sink
                .stats
                .report_due(sink.rewriter.ssrc(), sink.clock_rate, now)
                && let Some(mut sender) = conn.pc.rtp_sender(sink.sender)
            {
                let _written_or_connection_closing = sender.write_rtcp(now, vec![Box::new(report)]);
                if !conn.dirty {
                    conn.dirty = true;
                    self.dirty.push(sink.viewer);
                }
            }
        }
        // After the sinks: a viewer starting at this packet is given the
        // keyframe before it, never one that this packet is part of.
        if let Some((_, cache)) = cache.as_mut() {
            cache.observe(&packet, keyframe_start);
        }
        self.histories
            .entry(key)
            .or_insert_with(History::new)
            .keep(&packet);
    }

    /// A video viewer's first packets: the stream's last complete keyframe
    /// (if one is cached), twice, so that decoders which finish a frame only
    /// at the next one's first packet (aiortc, FFmpeg) show it at once;
    /// then live packets from the next keyframe on. Numbering stays
    /// continuous: each copy and the live stream after them are rebased.
    fn start_from(
        transmits: &mut VecDeque<Transmit>,
        conn: &mut Conn,
        sink: &mut Sink,
        to: SocketAddr,
        keyframe: Option<&[rtp::Packet]>,
        now: Instant,
    ) {
        sink.waiting_for_keyframe = true;
        let Some(keyframe) = keyframe else {
            return;
        };
        for _ in 0..2 {
            for packet in keyframe {
                Self::send_fast(transmits, conn, sink, to, packet, now);
            }
            sink.rewriter.rebase();
        }
    }

    /// Queues a local publisher's packet for every other shard with
    /// viewers of its stream: one copy per shard (the payload shared by
    /// reference), gathered per input.
    fn relay(&mut self, source: Source, packet: &rtp::Packet) {
        let Some(targets) = self.relay_targets.get(&(source.conn, source.ssrc)) else {
            return;
        };
        for &shard in targets {
            let relay = match self.relays.iter_mut().find(|(s, _)| *s == shard) {
                Some((_, relay)) => relay,
                None => {
                    self.relays.push((shard, Relay::default()));
                    &mut self.relays.last_mut().expect("just pushed").1
                }
            };
            relay.packets.push((source, packet.clone()));
        }
    }

    /// Rewrites `packet` for `sink`'s viewer, seals it with the viewer's
    /// keys and queues it to `to`. `false` if it could not be sealed.
    fn send_fast(
        transmits: &mut VecDeque<Transmit>,
        conn: &mut Conn,
        sink: &mut Sink,
        to: SocketAddr,
        packet: &rtp::Packet,
        now: Instant,
    ) -> bool {
        if conn.fast.is_none() {
            conn.fast = conn
                .pc
                .local_srtp_keys()
                .and_then(|keys| FastPath::new(keys).ok());
        }
        let Some(fast) = conn.fast.as_mut() else {
            return false; // no keys (DTLS not done): the packet is lost
        };
        let mut header = bare_header(&packet.header);
        sink.rewriter.rewrite(&mut header, now);
        let Ok(payload) = fast.seal(&header, &packet.payload) else {
            return false;
        };
        sink.stats.on_sent(&header, packet.payload.len(), now);
        transmits.push_back(Transmit { to, payload });
        true
    }

    /// Answers a viewer's NACK from the history of the stream it gets: each
    /// lost packet it still has goes out again on the viewer's SSRC, with
    /// the viewer's numbering, on the fast path like the first send.
    fn retransmit(&mut self, viewer: ConnId, nack: &TransportLayerNack, now: Instant) {
        let Some(source) = self.source_of(viewer, nack.media_ssrc) else {
            return;
        };
        let Some(to) = self.demux.current_addr(viewer) else {
            return;
        };
        let (Some(history), Some(sinks), Some(conn)) = (
            self.histories.get(&source),
            self.sinks.get_mut(&source),
            self.conns.get_mut(&viewer),
        ) else {
            return;
        };
        let Some(sink) = sinks
            .iter_mut()
            .find(|s| s.viewer == viewer && s.rewriter.ssrc() == nack.media_ssrc)
        else {
            return;
        };
        for pair in &nack.nacks {
            for viewer_seq in pair.packet_list() {
                let Some(packet) = history.get(sink.rewriter.source_seq(viewer_seq)) else {
                    continue; // too old: the viewer will ask for a keyframe
                };
                if Self::send_fast(&mut self.transmits, conn, sink, to, packet, now) {
                    self.retransmitted += 1;
                }
            }
        }
    }

    /// The local SRTP keys of connection `id`, for tests that open what it
    /// sends.
    #[cfg(test)]
    pub(super) fn local_srtp_keys(
        &self,
        id: ConnId,
    ) -> Option<rtc::peer_connection::LocalSrtpKeys> {
        self.conns.get(&id)?.pc.local_srtp_keys().cloned()
    }

    /// Packets resent from the shared histories so far.
    pub fn retransmitted(&self) -> u64 {
        self.retransmitted
    }

    /// The source a viewer's SSRC is subscribed to.
    fn source_of(&self, viewer: ConnId, viewer_ssrc: u32) -> Option<Source> {
        self.sinks.iter().find_map(|(source, sinks)| {
            sinks
                .iter()
                .any(|s| s.viewer == viewer && s.rewriter.ssrc() == viewer_ssrc)
                .then_some(*source)
        })
    }

    fn forget(&mut self, id: ConnId) {
        self.conns.remove(&id);
        self.demux.remove(id);
        self.forget_publisher(self.index, id);
        self.relay_targets.retain(|(conn, _), _| *conn != id);
        self.sinks.retain(|_, sinks| {
            sinks.retain(|s| s.viewer != id);
            !sinks.is_empty()
        });
    }
}

/// `source`'s header without its extensions (their ids were negotiated
/// with the publisher; [`Rewriter::rewrite`] drops them anyway), so that
/// making a viewer's header never copies them.
fn bare_header(source: &rtp::header::Header) -> rtp::header::Header {
    rtp::header::Header {
        version: source.version,
        padding: source.padding,
        marker: source.marker,
        payload_type: source.payload_type,
        sequence_number: source.sequence_number,
        timestamp: source.timestamp,
        ssrc: source.ssrc,
        csrc: source.csrc.clone(),
        ..Default::default()
    }
}

/// The negotiated codec (with the viewer's payload type) of the track a
/// sender sends: the transceiver lists every codec both sides know, in
/// preference order, and the track's own codec is the one that counts.
fn sent_codec(
    parameters: &rtc::rtp_transceiver::rtp_sender::RTCRtpSendParameters,
) -> Option<&rtc::rtp_transceiver::rtp_sender::RTCRtpCodecParameters> {
    let track = &parameters.encodings.first()?.codec;
    let same_mime = |c: &&rtc::rtp_transceiver::rtp_sender::RTCRtpCodecParameters| {
        c.rtp_codec.mime_type.eq_ignore_ascii_case(&track.mime_type)
    };
    let codecs = &parameters.rtp_parameters.codecs;
    codecs
        .iter()
        .filter(same_mime)
        .find(|c| c.rtp_codec.sdp_fmtp_line == track.sdp_fmtp_line)
        .or_else(|| codecs.iter().find(same_mime))
}
