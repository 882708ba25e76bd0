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
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rtc::peer_connection::RTCPeerConnection;
use rtc::peer_connection::event::{RTCPeerConnectionEvent, RTCTrackEvent, RTCTrackEventInit};
use rtc::peer_connection::message::{RTCMessage, TaggedRTCMessage};
use rtc::peer_connection::state::{RTCIceConnectionState, RTCPeerConnectionState};
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use rtc::rtp_transceiver::{RTCRtpReceiverId, RTCRtpSenderId};
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};

use super::demux::{Demux, Peer, Transport};
use super::fast::{FastPath, SenderStats};
use super::outbox::{Datagram, Outbox, OutgoingRtp};
use crate::sfu::MediaKind;
use crate::sfu::ice::{ice_credentials, restart_remote};
use crate::sfu::keyframe::{VideoCodec, starts_keyframe};
use crate::sfu::keyframe_cache::KeyframeCache;
use crate::sfu::layers::{LayerChoice, Layers, StepDown};
use crate::sfu::picture_size::keyframe_size;
use crate::sfu::reception::{Reception, round_trip};
use crate::sfu::rewrite::Rewriter;
use crate::sfu::rtcp::{is_keyframe_request, reception_report};
use crate::sfu::stream_counters::{StreamCounters, ViewerCounters, ViewerReport};
use rtc::peer_connection::configuration::media_engine::MIME_TYPE_RTX;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::reception_report::ReceptionReport;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;

mod local;
use local::Local;
pub use local::LocalTrack;

/// A connection of this shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(u32);

impl ConnId {
    /// Its number on its shard.
    pub fn index(self) -> u32 {
        self.0
    }
}

/// A published track, named across shards: the publisher connection's
/// shard, its id there, and the receiver the track arrives on. A simulcast
/// track has a stream per layer, each a [`Source`]; any other track has one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TrackId {
    /// The shard the publisher's connection lives on.
    pub shard: usize,
    /// The publisher's connection on that shard.
    pub conn: ConnId,
    /// The receiver (m-section) of the track in that connection.
    pub receiver: RTCRtpReceiverId,
}

impl TrackId {
    /// The stream of this track that the publisher sends on `ssrc`.
    pub fn layer(&self, ssrc: u32) -> Source {
        Source {
            shard: self.shard,
            conn: self.conn,
            ssrc,
        }
    }
}

/// A published stream (one layer of a track), named across shards: the
/// publisher connection's shard, its id there, and the publisher's SSRC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Source {
    /// The shard the publisher's connection lives on.
    pub shard: usize,
    /// The publisher's connection on that shard.
    pub conn: ConnId,
    /// The publisher's SSRC.
    pub ssrc: u32,
}

/// What a publisher's shard sends a shard with viewers of its tracks:
/// each published packet once per such shard, never once per viewer, and
/// the rids of the tracks' layers as they become known.
#[derive(Debug, Default)]
pub struct Relay {
    /// The packets, in arrival order, each with its track.
    pub packets: Vec<(TrackId, rtp::Packet)>,
    /// Cached keyframes of the tracks, for that shard's cache only (its
    /// viewers start from them, as from a local cache, and are not sent
    /// them as live packets).
    pub keyframes: Vec<(TrackId, VideoCodec, rtp::Packet)>,
    /// Layers' rids: (track, SSRC, rid).
    pub rids: Vec<(TrackId, u32, String)>,
}

/// A datagram to send from the shard's socket (or, framed, on an ICE-TCP
/// connection).
#[derive(Debug)]
pub struct Transmit {
    /// Where to.
    pub to: SocketAddr,
    /// UDP, or the TCP connection from `to`.
    pub transport: Transport,
    /// The bytes, SRTP/DTLS/STUN already applied.
    pub payload: BytesMut,
}

/// A stream a publisher started sending: reported at its first packet,
/// by which time the shard keeps its keyframes (video).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedTrack {
    /// The track it belongs to.
    pub track: TrackId,
    /// The stream, on this shard.
    pub source: Source,
    /// Audio or video.
    pub kind: MediaKind,
    /// The negotiated codec's mime type (`video/H264`, `audio/opus`).
    pub mime: String,
    /// Its rid, for a simulcast layer.
    pub rid: Option<String>,
}

/// What a shard has forwarded and repaired since it started, counted as
/// plain numbers on its own thread; the I/O loop publishes them
/// ([`super::io::IoStats`]) once per turn.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MediaCounters {
    /// RTP packets sent to viewers (retransmissions included).
    pub forwarded_packets: u64,
    /// Their payload bytes.
    pub forwarded_bytes: u64,
    /// Packets resent for viewers' NACKs.
    pub retransmitted: u64,
    /// NACK messages received from viewers.
    pub nacks_received: u64,
    /// Keyframe requests (PLI) sent to publishers, after coalescing.
    pub plis_sent: u64,
}

/// What happened, for the room owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// ICE is connected (DTLS may still be on its way).
    IceConnected(ConnId),
    /// ICE and DTLS are up.
    Connected(ConnId),
    /// A publisher's stream started.
    Track(PublishedTrack),
    /// The peer closed the connection (DTLS close_notify), or it was
    /// removed; the shard has dropped it.
    Closed(ConnId),
    /// ICE failed or consent expired (the peer vanished); the shard has
    /// dropped the connection.
    Failed(ConnId),
    /// A viewer needs a keyframe of `source` (it asked with a PLI or FIR,
    /// it starts, or it switches to that layer). The owner passes it to
    /// the publisher's shard ([`Shard::request_keyframe`]), which
    /// coalesces.
    KeyframeRequest {
        /// The viewer.
        viewer: ConnId,
        /// The stream (layer) it needs a keyframe of, perhaps on another
        /// shard.
        source: Source,
    },
}

/// Why an ICE restart was not done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestartError {
    /// The connection is gone (or never had a remote description).
    NoSuchConnection,
    /// The fragment cannot be a restart (credentials missing or invalid).
    Malformed(String),
    /// The connection refused the new credentials; it runs on unchanged.
    Refused(String),
}

/// Packets a publisher's stream kept for retransmission, shared by all its
/// viewers: one copy per packet (its payload shared by reference), not one
/// per viewer connection as rtc's NACK responder keeps.
struct History {
    slots: Vec<Option<rtp::Packet>>,
}

/// Packets kept per published stream: 0.7 s at 8 Mbit/s.
pub const HISTORY: usize = 512;

/// Least time between two PLIs sent to a publisher, per stream (layer).
pub const MIN_PLI_INTERVAL: Duration = Duration::from_millis(500);

/// How long a viewer's start copies stay answerable to its NACKs.
const COPIES_KEPT: Duration = Duration::from_secs(2);

/// How often each track's layers are re-ranked and its viewers re-aimed.
pub const LAYER_TICK: Duration = Duration::from_millis(100);

/// How long a viewer has been subscribed (connected) before a layer tick
/// may start it from the cached keyframe without a packet of its stream
/// ([`Shard::start_silent`]).
pub const SILENT_START_AFTER: Duration = Duration::from_millis(50);

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

/// A viewer's end of a subscription: which of a track's layers it gets,
/// and how its packets are rewritten for it.
struct Sink {
    viewer: ConnId,
    sender: RTCRtpSenderId,
    rewriter: Rewriter,
    clock_rate: u32,
    /// The video codec the viewer gets (`None` for audio).
    video: Option<VideoCodec>,
    /// The layer it asked for (its ceiling).
    choice: LayerChoice,
    /// Layers below its choice it is held for loss.
    step_down: StepDown,
    /// The layer (publisher SSRC) it gets now.
    layer: Option<u32>,
    /// The layer it switches to at that layer's next keyframe.
    next: Option<u32>,
    /// Started: the viewer is connected and was given the cached keyframe
    /// (if any).
    started: bool,
    /// Video skipped until a keyframe starts (after the start).
    waiting_for_keyframe: bool,
    /// What went out on the viewer's SSRC, for its sender reports.
    stats: SenderStats,
    /// What went out on the viewer's SSRC since it was subscribed, for the
    /// statistics (the sender reports' counts are 32 bits and wrap).
    sent_packets: u64,
    sent_bytes: u64,
    /// Where repairs go, if the viewer negotiated RTX.
    rtx: Option<Rtx>,
    /// The cached keyframe's copies it was started with, as sent (its
    /// numbering moved on after them, so a NACK for one is answered from
    /// here, not the history); dropped after [`COPIES_KEPT`].
    copies: Vec<rtp::Packet>,
    copies_at: Option<Instant>,
    /// When it subscribed (see [`Shard::start_silent`]).
    subscribed_at: Instant,
}

/// A viewer track's RTX stream (RFC 4588): its SSRC, payload type, and the
/// next sequence number.
struct Rtx {
    ssrc: u32,
    payload_type: u8,
    seq: u16,
}

impl Sink {
    fn kind(&self) -> MediaKind {
        if self.video.is_some() {
            MediaKind::Video
        } else {
            MediaKind::Audio
        }
    }

    /// Whether this packet of layer `ssrc` goes to the viewer: it moves to
    /// a pending layer at that layer's keyframe (at once, for audio), and
    /// video waits for a keyframe after any break.
    fn admits(&mut self, ssrc: u32, keyframe_start: bool) -> bool {
        if self.next == Some(ssrc) && (keyframe_start || self.video.is_none()) {
            if self.layer.is_some() {
                // Continue the viewer's numbering across the change.
                self.rewriter.rebase();
            }
            self.layer = Some(ssrc);
            self.next = None;
            self.waiting_for_keyframe = false;
        }
        if self.layer != Some(ssrc) {
            return false;
        }
        if self.waiting_for_keyframe {
            if !keyframe_start {
                return false;
            }
            self.waiting_for_keyframe = false;
        }
        true
    }

    /// Aims the sink at `target` (the layer its choice and step-down give
    /// now). Returns the layer it now waits for a keyframe of, if any.
    fn aim(&mut self, target: u32) -> Option<u32> {
        if self.layer == Some(target) {
            self.next = None;
        } else {
            self.next = Some(target);
        }
        let waiting = self.video.is_some() && (self.waiting_for_keyframe || self.next.is_some());
        waiting.then(|| self.next.or(self.layer)).flatten()
    }
}

/// A track's viewers on this shard and its layers as seen here.
struct Fanout {
    /// The video codec of its viewers (`None` for audio).
    video: Option<VideoCodec>,
    layers: Layers,
    /// When its layers were last ranked.
    ranked_at: Option<Instant>,
    /// When it got its first packet.
    first_packet: Option<Instant>,
    /// Its layers have been ranked with all of them heard: viewers may
    /// start.
    warm: bool,
    sinks: Vec<Sink>,
}

impl Fanout {
    /// Ranks the layers now, from what they sent since the last ranking.
    fn rank(&mut self, now: Instant) {
        let elapsed = self
            .ranked_at
            .map_or(LAYER_TICK, |at| now.saturating_duration_since(at));
        self.layers.tick(elapsed, now);
        self.ranked_at = Some(now);
    }
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
    /// A publisher's counters for alarms and statistics: what it sent,
    /// muted or not.
    counters: Option<Arc<StreamCounters>>,
    /// A publisher's streams' reception, for the statistics.
    reception: Received,
    /// A viewer's counters for the statistics: what it was sent and what
    /// it reported.
    viewer_counters: Option<Arc<ViewerCounters>>,
}

impl Conn {
    /// The connection's fast path, made from its SRTP keys at first use;
    /// `None` before DTLS is done.
    fn fast_path(&mut self) -> Option<&mut FastPath> {
        if self.fast.is_none() {
            self.fast = self
                .pc
                .local_srtp_keys()
                .and_then(|keys| FastPath::new(keys).ok());
        }
        self.fast.as_mut()
    }
}

/// The connections of one shard and everything between them.
pub struct Shard {
    /// This shard's place among the engine's shards.
    index: usize,
    local: SocketAddr,
    next_id: u32,
    /// Boxed: an `rtc` connection is kilobytes inline, which a map's
    /// spare slots and its moves on growth would otherwise pay for.
    conns: HashMap<ConnId, Box<Conn>>,
    /// Local publishers (cameras), numbered with the connections.
    locals: HashMap<ConnId, Local>,
    demux: Demux<ConnId>,
    /// Deadlines, earliest first; an entry whose connection has since moved
    /// its deadline is stale and skipped.
    timers: BinaryHeap<Reverse<(Instant, ConnId)>>,
    /// Fan-out: a track (local or relayed from another shard) → this
    /// shard's viewers of it.
    tracks: HashMap<TrackId, Fanout>,
    /// A local publisher's stream → its track.
    track_of: HashMap<Source, TrackId>,
    /// Layers' rids by track and SSRC, as the publisher's shard learnt
    /// them.
    rids: HashMap<(TrackId, u32), String>,
    /// Recent packets of each stream this shard's viewers get, for their
    /// NACKs.
    histories: HashMap<Source, History>,
    /// The last complete keyframe of each video stream this shard's
    /// viewers get, for viewers that start mid-GOP.
    keyframes: HashMap<Source, (VideoCodec, KeyframeCache)>,
    /// When each local publisher's stream was last asked for a keyframe.
    keyframe_asked: HashMap<(ConnId, u32), Instant>,
    /// A local publisher's track → the other shards that have viewers of
    /// it.
    relay_targets: HashMap<TrackId, Vec<usize>>,
    /// Relayed packets of the current input, per destination shard.
    relays: Vec<(usize, Relay)>,
    /// Tracks whose packets reach no viewer (nor other shard) for now.
    muted: HashSet<TrackId>,
    /// When the layers are next ranked (while any track has viewers).
    next_layer_tick: Option<Instant>,
    /// Packets resent from a history.
    retransmitted: u64,
    /// NACKs (RTCP generic NACK messages) from viewers.
    nacks_received: u64,
    /// PLIs sent to publishers (after coalescing).
    plis_sent: u64,
    /// Viewers written to during the current input, drained at its end.
    dirty: Vec<ConnId>,
    transmits: Outbox,
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
            locals: HashMap::new(),
            demux: Demux::new(),
            timers: BinaryHeap::new(),
            tracks: HashMap::new(),
            track_of: HashMap::new(),
            rids: HashMap::new(),
            histories: HashMap::new(),
            keyframes: HashMap::new(),
            keyframe_asked: HashMap::new(),
            relay_targets: HashMap::new(),
            relays: Vec::new(),
            muted: HashSet::new(),
            next_layer_tick: None,
            retransmitted: 0,
            nacks_received: 0,
            plis_sent: 0,
            dirty: Vec::new(),
            transmits: Outbox::default(),
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
            Box::new(Conn {
                pc,
                fast: None,
                deadline: None,
                connected: false,
                dirty: false,
                counters: None,
                reception: Received::default(),
                viewer_counters: None,
            }),
        );
        self.drain(id, now);
        id
    }

    /// The tracks a local publisher connection receives, by receiver, with
    /// their kind: known from negotiation, before any packet.
    pub fn published_tracks(&mut self, conn: ConnId) -> Vec<(TrackId, MediaKind)> {
        let index = self.index;
        if let Some(tracks) = self.local_tracks(conn) {
            return tracks;
        }
        let Some(c) = self.conns.get_mut(&conn) else {
            return Vec::new();
        };
        let receivers: Vec<_> = c.pc.get_receivers().collect();
        receivers
            .into_iter()
            .filter_map(|receiver| {
                let kind = match c.pc.rtp_receiver(receiver)?.track().kind() {
                    RtpCodecKind::Audio => MediaKind::Audio,
                    RtpCodecKind::Video => MediaKind::Video,
                    _ => return None,
                };
                let track = TrackId {
                    shard: index,
                    conn,
                    receiver,
                };
                Some((track, kind))
            })
            .collect()
    }

    /// Counts everything publisher connection `conn` sends into
    /// `counters` (packets, payload bytes, keyframes), muted or not: the
    /// alarms judge the publisher, not what viewers get.
    pub fn count_into(&mut self, conn: ConnId, counters: Arc<StreamCounters>) {
        if let Some(local) = self.locals.get_mut(&conn) {
            local.counters = Some(counters);
        } else if let Some(conn) = self.conns.get_mut(&conn) {
            conn.counters = Some(counters);
        }
    }

    /// Counts what viewer connection `conn` is sent and reports (its
    /// reception reports, NACKs and keyframe requests) into `counters`,
    /// for the statistics.
    pub fn count_viewer_into(&mut self, conn: ConnId, counters: Arc<ViewerCounters>) {
        if let Some(conn) = self.conns.get_mut(&conn) {
            conn.viewer_counters = Some(counters);
        }
    }

    /// Stops (`true`) or resumes sending `track` to this shard's viewers
    /// and, on its own shard, to other shards. While muted its packets are
    /// neither sent, kept for repairs nor cached as a keyframe. On resume
    /// each viewer continues its numbering where it stopped and, for
    /// video, waits for a keyframe, which the publisher is asked for.
    pub fn set_muted(&mut self, track: TrackId, muted: bool, now: Instant) {
        if muted {
            self.muted.insert(track);
            return;
        }
        if !self.muted.remove(&track) {
            return;
        }
        let mut wanted = Vec::new();
        for sink in self
            .tracks
            .get_mut(&track)
            .into_iter()
            .flat_map(|f| &mut f.sinks)
        {
            if sink.started {
                sink.rewriter.rebase();
                sink.waiting_for_keyframe = sink.video.is_some();
                if let Some(layer) = sink.video.and(sink.next.or(sink.layer)) {
                    wanted.push((sink.viewer, track.layer(layer)));
                }
            }
        }
        if track.shard == self.index {
            // Without viewers here, still ask: other shards' viewers wait.
            let own: Vec<Source> = self
                .keyframes
                .keys()
                .filter(|s| self.track_of.get(s) == Some(&track))
                .copied()
                .collect();
            for source in own {
                self.request_keyframe(source, now);
            }
        } else {
            wanted.dedup_by_key(|(_, source)| *source);
            for (viewer, source) in wanted {
                self.events
                    .push_back(Event::KeyframeRequest { viewer, source });
            }
        }
    }

    /// Takes the ICE credentials of a client's PATCH (RFC 9725 §4.3) for
    /// connection `conn`. The same as the current remote ones (or none):
    /// `Ok(None)`, nothing to do (an ICE-lite server learns addresses from
    /// checks, not trickled candidates). New ones: an ICE restart, in
    /// which the connection takes them and makes its own new ones, which
    /// the demultiplexer learns, so checks of the new generation reach it
    /// (the old ufrag keeps routing to this connection until it goes).
    /// Returns the connection's new local description, whose credentials
    /// and candidate answer the client. On any error the running ICE
    /// session is untouched.
    pub fn restart_ice(
        &mut self,
        conn: ConnId,
        ufrag: &str,
        pwd: Option<&str>,
        now: Instant,
    ) -> Result<Option<String>, RestartError> {
        let c = self
            .conns
            .get_mut(&conn)
            .ok_or(RestartError::NoSuchConnection)?;
        let remote =
            c.pc.remote_description()
                .ok_or(RestartError::NoSuchConnection)?
                .sdp
                .clone();
        let (remote_ufrag, remote_pwd) = ice_credentials(&remote).unwrap_or_default();
        if ufrag == remote_ufrag && pwd.is_none_or(|p| p == remote_pwd) {
            return Ok(None);
        }
        let Some(pwd) = pwd else {
            return Err(RestartError::Malformed(
                "an ICE restart needs both a=ice-ufrag and a=ice-pwd".into(),
            ));
        };
        // RFC 8839 §5.4: refuse credentials ICE would reject before the
        // restart is applied, so the running ICE session is kept.
        if !(4..=256).contains(&ufrag.len()) || !(22..=256).contains(&pwd.len()) {
            return Err(RestartError::Malformed(
                "ice-ufrag must be 4-256 and ice-pwd 22-256 characters".into(),
            ));
        }
        let refused = |e: rtc::shared::error::Error| RestartError::Refused(e.to_string());
        let offer =
            RTCSessionDescription::offer(restart_remote(&remote, ufrag, pwd)).map_err(refused)?;
        c.pc.set_remote_description(now, offer).map_err(refused)?;
        let answer = c.pc.create_answer(None).map_err(refused)?;
        c.pc.set_local_description(now, answer.clone())
            .map_err(refused)?;
        let (new_ufrag, _) = ice_credentials(&answer.sdp)
            .ok_or_else(|| RestartError::Refused("the answer has no ICE credentials".into()))?;
        self.demux.add_ufrag(conn, &new_ufrag);
        self.drain(conn, now);
        Ok(Some(answer.sdp))
    }

    /// Closes and drops a connection, and every subscription to or from it.
    pub fn remove_connection(&mut self, id: ConnId, now: Instant) {
        if self.locals.contains_key(&id) {
            self.forget(id);
            self.events.push_back(Event::Closed(id));
            return;
        }
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

    /// Sends `track` (a local publisher's, or one relayed from the shard it
    /// lives on, see [`Shard::relay_to`]) to `viewer`'s sender `sender`, as
    /// `ssrc` at the payload type the viewer negotiated for the sender's
    /// codec, numbered continuously for the viewer. Of a simulcast track
    /// the viewer gets the layer `choice` names, lower while it reports
    /// heavy loss.
    pub fn subscribe(
        &mut self,
        track: TrackId,
        viewer: ConnId,
        sender: RTCRtpSenderId,
        ssrc: u32,
        choice: LayerChoice,
        now: Instant,
    ) -> Option<()> {
        let pc = &mut self.conns.get_mut(&viewer)?.pc;
        let mut rtp_sender = pc.rtp_sender(sender)?;
        let parameters = rtp_sender.get_parameters();
        let codec = sent_codec(parameters)?;
        let (payload_type, clock_rate) = (codec.payload_type, codec.rtp_codec.clock_rate);
        let video = VideoCodec::from_mime(&codec.rtp_codec.mime_type);
        let rtx = rtx_of(parameters, payload_type);
        let sink = Sink {
            viewer,
            sender,
            rewriter: Rewriter::new(ssrc, payload_type, clock_rate),
            clock_rate,
            video,
            choice,
            step_down: StepDown::default(),
            layer: None,
            next: None,
            started: false,
            waiting_for_keyframe: false,
            stats: SenderStats::default(),
            sent_packets: 0,
            sent_bytes: 0,
            rtx,
            copies: Vec::new(),
            copies_at: None,
            subscribed_at: now,
        };
        self.fanout(track, video).sinks.push(sink);
        // The layer tick starts it if its stream stays silent.
        if self.next_layer_tick.is_none() {
            self.next_layer_tick = Some(now + LAYER_TICK);
        }
        Some(())
    }

    /// Starts a viewer of `track` that is still waiting for its stream's
    /// next packet from the cached keyframe, when it can: connected for
    /// [`SILENT_START_AFTER`] (packets sealed the moment the server's DTLS
    /// is up can reach a client still finishing its own, and be lost),
    /// video, one layer (a simulcast track waits for its ranking), a
    /// complete keyframe cached. A stream may be silent for a while: a
    /// relay's, from the origin's cached keyframe to the publisher's next
    /// one (the origin holds back the deltas in between, which refer to
    /// frames the relay never had), which made the first viewers of a relay
    /// wait for the publisher's next keyframe. Called on the layer tick.
    fn start_silent(&mut self, track: TrackId, viewer: ConnId, now: Instant) {
        let Some(fanout) = self.tracks.get_mut(&track) else {
            return;
        };
        if fanout.layers.named() {
            return;
        }
        let Some(sink) = fanout.sinks.iter_mut().rev().find(|s| s.viewer == viewer) else {
            return;
        };
        if sink.started
            || sink.video.is_none()
            || now.saturating_duration_since(sink.subscribed_at) < SILENT_START_AFTER
        {
            return;
        }
        let ssrc = if fanout.warm {
            fanout.layers.pick(&sink.choice, sink.step_down.steps())
        } else {
            // The first viewer here: the fan-out has heard nothing yet,
            // but a keyframe of the publisher's video may be cached (its
            // own, or relayed from its shard); exactly one cached stream
            // means no simulcast.
            let mut sources = self
                .keyframes
                .keys()
                .filter(|s| s.shard == track.shard && s.conn == track.conn)
                .map(|s| s.ssrc);
            match (sources.next(), sources.next()) {
                (Some(ssrc), None) => Some(ssrc),
                _ => None,
            }
        };
        let Some(ssrc) = ssrc else {
            return;
        };
        let source = track.layer(ssrc);
        let Some(cached) = self.keyframes.get(&source).and_then(|(_, c)| c.keyframe()) else {
            return;
        };
        let Some(conn) = self.conns.get_mut(&viewer).filter(|c| c.connected) else {
            return;
        };
        let Some(to) = self.demux.current_addr(viewer) else {
            return;
        };
        sink.started = true;
        sink.next = Some(ssrc);
        Self::start_from(&mut self.transmits, conn, sink, to, Some(cached), now);
        self.events
            .push_back(Event::KeyframeRequest { viewer, source });
    }

    /// `track`'s fan-out on this shard, made with the rids known so far.
    fn fanout(&mut self, track: TrackId, video: Option<VideoCodec>) -> &mut Fanout {
        let rids = &self.rids;
        let fanout = self.tracks.entry(track).or_insert_with(|| {
            let mut layers = Layers::default();
            for ((of, ssrc), rid) in rids {
                if *of == track {
                    layers.set_rid(*ssrc, Some(rid.clone()));
                }
            }
            Fanout {
                video,
                layers,
                ranked_at: None,
                first_packet: None,
                warm: false,
                sinks: Vec::new(),
            }
        });
        fanout.video = fanout.video.or(video);
        fanout
    }

    /// Keeps the last complete keyframe of `source` (a local publisher's
    /// video stream in `codec`) from now on, before anyone watches it, so
    /// that its first viewer starts at once.
    pub fn watch(&mut self, source: Source, codec: VideoCodec) {
        self.keyframes
            .entry(source)
            .or_insert_with(|| (codec, KeyframeCache::default()));
    }

    /// Copies every packet of a local publisher's `track` to shard `shard`
    /// (which has viewers of it), once per packet, as a [`Relay`] polled
    /// with [`Shard::poll_relay`]. The rids of its layers and their cached
    /// keyframes go first, so that shard's viewers start from one.
    pub fn relay_to(&mut self, track: TrackId, shard: usize) {
        let targets = self.relay_targets.entry(track).or_default();
        if shard == self.index || targets.contains(&shard) {
            return;
        }
        targets.push(shard);
        let mut relay = Relay::default();
        for ((of, ssrc), rid) in &self.rids {
            if *of == track {
                relay.rids.push((track, *ssrc, rid.clone()));
            }
        }
        for (source, (codec, cache)) in &self.keyframes {
            if self.track_of.get(source) == Some(&track)
                && let Some(keyframe) = cache.keyframe()
            {
                relay
                    .keyframes
                    .extend(keyframe.iter().map(|p| (track, *codec, p.clone())));
            }
        }
        self.relays.push((shard, relay));
    }

    /// What another shard relayed: its layers' rids learnt, its packets
    /// fanned out to this shard's viewers as if their publisher were local.
    pub fn handle_relay(&mut self, now: Instant, relay: Relay) {
        for (track, ssrc, rid) in relay.rids {
            self.learn_rid(track, ssrc, rid);
        }
        // The codec comes along: the relay may overtake the subscription
        // it was sent for (another channel), so no fan-out may exist yet.
        for (track, codec, packet) in relay.keyframes {
            let keyframe_start = starts_keyframe(codec, &packet.payload);
            let (_, cache) = self
                .keyframes
                .entry(track.layer(packet.header.ssrc))
                .or_insert_with(|| (codec, KeyframeCache::default()));
            cache.observe(&packet, keyframe_start);
        }
        for (track, packet) in relay.packets {
            self.fan_out(track, packet, now);
        }
        self.settle(now);
    }

    /// Notes the rid of `track`'s layer `ssrc`, for viewers that ask for a
    /// layer by rid.
    fn learn_rid(&mut self, track: TrackId, ssrc: u32, rid: String) {
        if let Some(fanout) = self.tracks.get_mut(&track) {
            fanout.layers.set_rid(ssrc, Some(rid.clone()));
        }
        self.rids.insert((track, ssrc), rid);
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
                    self.plis_sent += 1;
                    // Every request reaches the publisher here (joins,
                    // viewers' PLI/FIR, layer switches, unmutes): the
                    // keyframe alarm waits for the answer to it.
                    if let Some(counters) = &conn.counters {
                        counters.count_keyframe_request();
                    }
                }
                break;
            }
        }
        self.drain(source.conn, now);
    }

    /// Moves this shard's viewers of `from` (a track whose publisher left)
    /// onto `to` (the track of the publisher that replaced it, in the same
    /// codec): each starts again as a new viewer would, from `to`'s cached
    /// keyframe or its next one, on the same SSRC with its numbering
    /// continued. Returns whether any viewer moved.
    pub fn move_viewers(&mut self, from: TrackId, to: TrackId) -> bool {
        let Some(old) = self.tracks.remove(&from).filter(|f| !f.sinks.is_empty()) else {
            return false;
        };
        let mut moved = old.sinks;
        for sink in &mut moved {
            sink.rewriter.rebase();
            sink.started = false;
            sink.waiting_for_keyframe = false;
            sink.layer = None;
            sink.next = None;
        }
        self.fanout(to, old.video).sinks.extend(moved);
        true
    }

    /// Drops this shard's history, keyframes and relays of every track of
    /// publisher connection `conn` on shard `shard` (it has gone). Its
    /// viewers stay subscribed, getting nothing, until they are moved to
    /// a new publisher ([`Shard::move_viewers`]) or removed.
    pub fn forget_publisher(&mut self, shard: usize, conn: ConnId) {
        let gone = |source: &Source| source.shard == shard && source.conn == conn;
        self.histories.retain(|source, _| !gone(source));
        self.keyframes.retain(|source, _| !gone(source));
        self.rids
            .retain(|(track, _), _| !(track.shard == shard && track.conn == conn));
        self.track_of.retain(|source, _| !gone(source));
        self.muted
            .retain(|track| !(track.shard == shard && track.conn == conn));
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
        self.read(now, Peer::udp(from), payload);
        self.settle(now);
    }

    /// A frame (RFC 4571) arrived on the ICE-TCP connection from `from`.
    /// `false` if it belongs to no connection: then the TCP connection
    /// serves no session (a check for an unknown ufrag, or traffic before
    /// any check), and the socket loop closes it.
    pub fn handle_tcp_frame(&mut self, now: Instant, from: SocketAddr, frame: BytesMut) -> bool {
        let routed = self.read(now, Peer::tcp(from), frame);
        self.settle(now);
        routed
    }

    /// The ICE-TCP connection from `from` has closed: its connection's
    /// media goes to its previous path, if it has one (else ICE notices
    /// the silence and the connection fails).
    pub fn handle_tcp_closed(&mut self, from: SocketAddr) {
        self.demux.forget_path(Peer::tcp(from));
    }

    /// The next ICE-TCP connection that no connection uses any more (its
    /// session ended, or the client chose another path), for the socket
    /// loop to close.
    pub fn poll_tcp_release(&mut self) -> Option<SocketAddr> {
        self.demux.poll_released()
    }

    /// Datagrams that arrived together (one receive batch). Viewers that
    /// several of them fan out to are drained once, at the end.
    pub fn handle_datagrams(
        &mut self,
        now: Instant,
        datagrams: impl IntoIterator<Item = (SocketAddr, BytesMut)>,
    ) {
        for (from, payload) in datagrams {
            self.read(now, Peer::udp(from), payload);
        }
        self.settle(now);
    }

    /// Hands a datagram to its connection; `false` if it has none.
    fn read(&mut self, now: Instant, from: Peer, payload: BytesMut) -> bool {
        let Some(id) = self.demux.route(from, &payload) else {
            return false; // not a checked source of any connection: dropped
        };
        let Some(conn) = self.conns.get_mut(&id) else {
            return false;
        };
        let read = TaggedBytesMut {
            now,
            transport: TransportContext {
                // The ICE-TCP listener has the UDP socket's address, so
                // rtc finds the matching candidate of either transport.
                local_addr: self.local,
                peer_addr: from.addr,
                transport_protocol: match from.transport {
                    Transport::Udp => TransportProtocol::UDP,
                    Transport::Tcp => TransportProtocol::TCP,
                },
                ecn: None,
            },
            message: payload,
        };
        // A datagram rtc refuses (bad SRTP auth, a stray DTLS record) costs
        // only itself.
        let _refused = conn.pc.handle_read(read);
        self.drain(id, now);
        true
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

    /// Runs every connection timer due at `now`, and the layer tick.
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
        if self.next_layer_tick.is_some_and(|at| at <= now) {
            self.tick_layers(now);
        }
        self.settle(now);
    }

    /// Every [`LAYER_TICK`]: ranks each track's layers again, steps
    /// viewers back up after quiet, aims each viewer at its layer, and asks
    /// for keyframes for the viewers waiting for one (one request per
    /// layer; the publisher's shard coalesces them further).
    fn tick_layers(&mut self, now: Instant) {
        self.tracks.retain(|_, fanout| !fanout.sinks.is_empty());
        self.next_layer_tick = (!self.tracks.is_empty()).then_some(now + LAYER_TICK);
        let mut wanted: Vec<(ConnId, Source)> = Vec::new();
        for (track, fanout) in &mut self.tracks {
            if !fanout.warm {
                continue; // a simulcast track still being heard: see fan_out
            }
            fanout.rank(now);
            for sink in fanout.sinks.iter_mut().filter(|s| s.started) {
                if sink
                    .copies_at
                    .is_some_and(|at| now.saturating_duration_since(at) > COPIES_KEPT)
                {
                    sink.copies = Vec::new();
                    sink.copies_at = None;
                }
                sink.step_down.poll_step_up(now);
                let Some(target) = fanout.layers.pick(&sink.choice, sink.step_down.steps()) else {
                    continue;
                };
                if let Some(layer) = sink.aim(target) {
                    let source = track.layer(layer);
                    if !wanted.iter().any(|(_, s)| *s == source) {
                        wanted.push((sink.viewer, source));
                    }
                }
            }
        }
        for (viewer, source) in wanted {
            self.events
                .push_back(Event::KeyframeRequest { viewer, source });
        }
        let waiting: Vec<(TrackId, ConnId)> = self
            .tracks
            .iter()
            .flat_map(|(track, fanout)| {
                fanout
                    .sinks
                    .iter()
                    .filter(|s| !s.started && s.video.is_some())
                    .map(|s| (*track, s.viewer))
            })
            .collect();
        for (track, viewer) in waiting {
            self.start_silent(track, viewer, now);
        }
    }

    /// The next datagram to send, sealed.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        let mut payload = Vec::new();
        let to = self.poll_transmit_into(&mut payload)?;
        Some(Transmit {
            to: to.addr,
            transport: to.transport,
            payload: BytesMut::from(&payload[..]),
        })
    }

    /// Appends the next datagram to send to `out`, sealed there if it is a
    /// viewer's forwarded RTP (see [`super::outbox`]), and says where it
    /// goes. A datagram whose connection is gone since is skipped.
    pub fn poll_transmit_into(&mut self, out: &mut Vec<u8>) -> Option<Peer> {
        while let Some(pending) = self.transmits.pop() {
            match pending.datagram {
                Datagram::Ready(bytes) => {
                    out.extend_from_slice(&bytes);
                    return Some(pending.to);
                }
                Datagram::Rtp { conn, packet } => {
                    let Some(fast) = self.conns.get_mut(&conn).and_then(|c| c.fast.as_mut()) else {
                        continue;
                    };
                    if fast
                        .seal_into(&packet.header(), &packet.payload, out)
                        .is_ok()
                    {
                        return Some(pending.to);
                    }
                }
            }
        }
        None
    }

    /// Orders the datagrams queued so far by destination (see
    /// [`Outbox::order_by_destination`]), so that [`Shard::poll_transmit`]
    /// gives each viewer's datagrams together: the socket loop's GSO
    /// batches.
    pub fn order_transmits_by_destination(&mut self) {
        self.transmits.order_by_destination();
    }

    /// The next event for the room owner.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Shard::handle_timeout`] is next due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let timer = self.timers.peek().map(|Reverse((at, _))| *at);
        match (timer, self.next_layer_tick) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// How many connections the shard holds.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// The address `id`'s media goes to, once it has passed a check.
    pub fn peer_addr(&self, id: ConnId) -> Option<SocketAddr> {
        self.demux.current_addr(id).map(|peer| peer.addr)
    }

    /// Empties connection `id` after an input: datagrams, events, received
    /// media (fanned out to its viewers), then its next deadline.
    fn drain(&mut self, id: ConnId, now: Instant) {
        let mut closed = None;
        let mut media = Vec::new();
        let mut keyframe_requests = Vec::new();
        let mut nacks = Vec::new();
        let mut losses = Vec::new();
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
                        RTCPeerConnectionState::Failed => closed = Some(Event::Failed(id)),
                        RTCPeerConnectionState::Closed => {
                            closed = closed.or(Some(Event::Closed(id)));
                        }
                        _ => {}
                    },
                    RTCPeerConnectionEvent::OnIceConnectionStateChangeEvent(
                        RTCIceConnectionState::Connected,
                    ) => self.events.push_back(Event::IceConnected(id)),
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
                            } else {
                                for ssrc in p.destination_ssrc() {
                                    if let Some(report) = reception_report(p.as_ref(), ssrc) {
                                        losses.push(report);
                                    }
                                }
                            }
                        }
                    }
                    _ => {} // data channels: none are negotiated
                }
            }
            if closed.is_none() {
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
            self.nacks_received += 1;
            self.retransmit(id, &nack, now);
        }
        for viewer_ssrc in keyframe_requests {
            if let Some(source) = self.source_of(id, viewer_ssrc) {
                if let Some(counters) = self.conns.get(&id).and_then(|c| c.viewer_counters.as_ref())
                {
                    counters.keyframe_request(MediaKind::Video);
                }
                self.events
                    .push_back(Event::KeyframeRequest { viewer: id, source });
            }
        }
        for report in losses {
            self.loss(id, &report, now);
        }
        for init in opened {
            self.track_opened(id, init);
        }
        if !media.is_empty() {
            self.publish(id, media, now);
        }
        if let Some(event) = closed {
            self.forget(id);
            self.events.push_back(event);
        }
    }

    /// A viewer's reception report about one of its SSRCs: counted for
    /// the statistics (with the round trip it gives against our sender
    /// reports), and heavy loss steps it down a layer, if the track has a
    /// lower one.
    fn loss(&mut self, viewer: ConnId, report: &ReceptionReport, now: Instant) {
        let fraction_lost = report.fraction_lost;
        for (track, fanout) in &mut self.tracks {
            let Some(sink) = fanout
                .sinks
                .iter_mut()
                .find(|s| s.viewer == viewer && s.rewriter.ssrc() == report.ssrc)
            else {
                continue;
            };
            if let Some(counters) = self
                .conns
                .get(&viewer)
                .and_then(|c| c.viewer_counters.as_ref())
            {
                let rtt = sink
                    .stats
                    .ntp(now)
                    .and_then(|ntp| round_trip(ntp, report.last_sender_report, report.delay));
                counters.report(
                    sink.kind(),
                    ViewerReport {
                        fraction_lost,
                        cumulative_lost: cumulative_lost(report.total_lost),
                        jitter: Duration::from_secs_f64(
                            f64::from(report.jitter) / f64::from(sink.clock_rate.max(1)),
                        ),
                        rtt,
                    },
                );
            }
            let steps = sink.step_down.steps();
            let lower_exists = fanout.layers.pick(&sink.choice, steps + 1)
                != fanout.layers.pick(&sink.choice, steps);
            if sink.step_down.report(fraction_lost, lower_exists, now)
                && let Some(target) = fanout.layers.pick(&sink.choice, steps + 1)
                && let Some(layer) = sink.aim(target)
            {
                self.events.push_back(Event::KeyframeRequest {
                    viewer,
                    source: track.layer(layer),
                });
            }
            return;
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
        let Some((mime, clock_rate)) = track
            .codec(init.ssrc)
            .map(|c| (c.mime_type.clone(), c.clock_rate))
        else {
            return;
        };
        conn.reception.open(init.ssrc, kind, clock_rate);
        let track = TrackId {
            shard: self.index,
            conn: id,
            receiver: init.receiver_id,
        };
        let source = track.layer(init.ssrc);
        self.track_of.insert(source, track);
        if let Some(codec) = VideoCodec::from_mime(&mime) {
            self.watch(source, codec);
        }
        let rid = init.rid.filter(|rid| !rid.is_empty());
        if let Some(rid) = &rid {
            self.learn_rid(track, init.ssrc, rid.clone());
            for &shard in self.relay_targets.get(&track).into_iter().flatten() {
                self.relays.push((
                    shard,
                    Relay {
                        rids: vec![(track, init.ssrc, rid.clone())],
                        ..Relay::default()
                    },
                ));
            }
        }
        self.events.push_back(Event::Track(PublishedTrack {
            track,
            source,
            kind,
            mime,
            rid,
        }));
    }

    /// A local publisher's packets of one input: counted, then relayed
    /// and fanned out unless their track is muted.
    fn publish(&mut self, id: ConnId, media: Vec<rtp::Packet>, now: Instant) {
        // Which map the publisher is in is looked up once per input, not
        // per packet: a connection's packets pay no lookup for cameras.
        let local = self.locals.get(&id);
        let is_local = local.is_some();
        let counters = match local {
            Some(local) => local.counters.clone(),
            None => self.conns.get(&id).and_then(|c| c.counters.clone()),
        };
        for packet in media {
            let source = self.source(id, packet.header.ssrc);
            if let Some(counters) = &counters {
                let codec = self.keyframes.get(&source).map(|(codec, _)| *codec);
                let keyframe = codec.is_some_and(|codec| starts_keyframe(codec, &packet.payload));
                counters.count(packet.payload.len(), keyframe);
                let reception = if is_local {
                    self.locals.get_mut(&id).map(|l| &mut l.reception)
                } else {
                    self.conns.get_mut(&id).map(|c| &mut c.reception)
                };
                if let Some(reception) = reception {
                    let size = codec
                        .filter(|_| keyframe)
                        .and_then(|codec| keyframe_size(codec, &packet.payload));
                    reception.count(counters, &packet, size, now);
                }
            }
            let Some(&track) = self.track_of.get(&source) else {
                continue; // no track opened for it (rtc reports each)
            };
            if self.muted.contains(&track) {
                continue;
            }
            self.relay(track, &packet);
            self.fan_out(track, packet, now);
        }
    }

    /// Queues what `pc` (connection `id`) has to send.
    fn write_out(
        demux: &mut Demux<ConnId>,
        transmits: &mut Outbox,
        id: ConnId,
        pc: &mut RTCPeerConnection,
    ) {
        while let Some(out) = pc.poll_write() {
            let from_rtc = Peer {
                addr: out.transport.peer_addr,
                transport: if out.transport.transport_protocol == TransportProtocol::TCP {
                    Transport::Tcp
                } else {
                    Transport::Udp
                },
            };
            let to = demux.on_transmit(id, from_rtc, &out.message);
            transmits.push_ready(to, out.message);
        }
    }

    /// Sends a publisher's packet to each viewer of its track that gets
    /// its layer, on the fast path: rewritten and queued here (sealed when
    /// the socket loop takes it, [`Shard::poll_transmit_into`]), without
    /// entering the viewer's `rtc` connection. Only a viewer whose
    /// sender report falls due is written to (the report goes through
    /// `rtc`, as all RTCP does) and drained at the end of the input
    /// ([`Shard::settle`]).
    fn fan_out(&mut self, track: TrackId, packet: rtp::Packet, now: Instant) {
        if self.muted.contains(&track) {
            return; // a relay that left its shard before the mute reached it
        }
        let ssrc = packet.header.ssrc;
        let source = track.layer(ssrc);
        let fanout = self.tracks.get_mut(&track);
        // One lookup of the stream's keyframe cache per packet (made for a
        // video track with viewers here), used for the keyframe test, the
        // viewers that start now, and then fed.
        let entry = match fanout.as_ref().and_then(|f| f.video) {
            Some(codec) => Some(
                self.keyframes
                    .entry(source)
                    .or_insert_with(|| (codec, KeyframeCache::default())),
            ),
            None => self.keyframes.get_mut(&source),
        };
        let mut cache = entry.map(|(codec, cache)| (*codec, cache));
        let keyframe_start = cache
            .as_ref()
            .is_some_and(|(codec, _)| starts_keyframe(*codec, &packet.payload));
        let Some(fanout) = fanout.filter(|f| !f.sinks.is_empty()) else {
            // Nobody watches yet; a watched stream's keyframe is kept for
            // the first viewer.
            if let Some((_, cache)) = cache {
                cache.observe(&packet, keyframe_start);
            }
            return;
        };
        let new_layer = !fanout.layers.knows(ssrc);
        let layer = fanout.layers.get_or_add(ssrc);
        layer.saw_packet(packet.payload.len(), now);
        // A layer's size from its keyframes: this one, or for a layer new
        // to this fan-out, the cached one.
        let size = cache.as_ref().and_then(|(codec, cache)| {
            let sized = |p: &rtp::Packet| keyframe_size(*codec, &p.payload);
            if keyframe_start {
                sized(&packet)
            } else if new_layer {
                cache.keyframe()?.iter().find_map(sized)
            } else {
                None
            }
        });
        if let Some(size) = size {
            layer.saw_keyframe_size(size);
        }
        let first_packet = *fanout.first_packet.get_or_insert(now);
        if fanout.layers.named() {
            // Simulcast: the layers are ranked first after a tick of
            // hearing them all; no viewer starts before (it would start on
            // whichever layer came first).
            if !fanout.warm && now.saturating_duration_since(first_packet) >= LAYER_TICK {
                fanout.warm = true;
                fanout.rank(now);
            }
        } else if fanout.layers.active_count() == 0 {
            // One layer: it ranks at its first packet (or the first after
            // a silence) rather than at the next tick.
            fanout.warm = true;
            fanout.rank(now);
        }
        if self.next_layer_tick.is_none() {
            self.next_layer_tick = Some(now + LAYER_TICK);
        }
        let cached = cache.as_ref().and_then(|(_, cache)| cache.keyframe());
        for sink in fanout.sinks.iter_mut() {
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
                // A viewer starts at a packet of the layer it is to get.
                if !fanout.warm
                    || fanout.layers.pick(&sink.choice, sink.step_down.steps()) != Some(ssrc)
                {
                    continue;
                }
                sink.started = true;
                sink.next = Some(ssrc);
                if sink.video.is_some() {
                    Self::start_from(&mut self.transmits, conn, sink, to, cached, now);
                    self.events.push_back(Event::KeyframeRequest {
                        viewer: sink.viewer,
                        source,
                    });
                }
            }
            if !sink.admits(ssrc, keyframe_start) {
                continue;
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
            .entry(source)
            .or_insert_with(History::new)
            .keep(&packet);
    }

    /// A video viewer's first packets: the stream's last complete keyframe
    /// (if one is cached), twice, so that decoders which finish a frame only
    /// at the next one's first packet (aiortc, FFmpeg) show it at once;
    /// then live packets from the next keyframe on. Numbering stays
    /// continuous: each copy and the live stream after them are rebased.
    fn start_from(
        transmits: &mut Outbox,
        conn: &mut Conn,
        sink: &mut Sink,
        to: Peer,
        keyframe: Option<&[rtp::Packet]>,
        now: Instant,
    ) {
        sink.waiting_for_keyframe = true;
        sink.copies.clear();
        let Some(keyframe) = keyframe else {
            return;
        };
        sink.copies_at = Some(now);
        sink.copies.reserve_exact(2 * keyframe.len());
        for _ in 0..2 {
            for packet in keyframe {
                let mut header = bare_header(&packet.header);
                sink.rewriter.rewrite(&mut header, now);
                let copy = rtp::Packet {
                    header,
                    payload: packet.payload.clone(),
                };
                Self::seal_out(transmits, conn, sink, to, &copy.header, &copy.payload, now);
                sink.copies.push(copy);
            }
            sink.rewriter.rebase();
        }
    }

    /// Queues a local publisher's packet for every other shard with
    /// viewers of its track: one copy per shard (the payload shared by
    /// reference), gathered per input.
    fn relay(&mut self, track: TrackId, packet: &rtp::Packet) {
        let Some(targets) = self.relay_targets.get(&track) else {
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
            relay.packets.push((track, packet.clone()));
        }
    }

    /// Rewrites `packet` for `sink`'s viewer and queues it to `to`, to be
    /// sealed with the viewer's keys. `false` if the viewer has none yet.
    fn send_fast(
        transmits: &mut Outbox,
        conn: &mut Conn,
        sink: &mut Sink,
        to: Peer,
        packet: &rtp::Packet,
        now: Instant,
    ) -> bool {
        let mut header = bare_header(&packet.header);
        sink.rewriter.rewrite(&mut header, now);
        Self::seal_out(transmits, conn, sink, to, &header, &packet.payload, now)
    }

    /// Queues a packet already rewritten for `sink`'s viewer (`header`,
    /// `payload`) to be sealed with the viewer's keys. `false` if the
    /// viewer has no keys yet.
    fn seal_out(
        transmits: &mut Outbox,
        conn: &mut Conn,
        sink: &mut Sink,
        to: Peer,
        header: &rtp::header::Header,
        payload: &Bytes,
        now: Instant,
    ) -> bool {
        if conn.fast_path().is_none() {
            return false; // no keys (DTLS not done): the packet is lost
        }
        sink.stats.on_sent(header, payload.len(), now);
        sink.sent_packets += 1;
        sink.sent_bytes += payload.len() as u64;
        if let Some(counters) = &conn.viewer_counters {
            counters.sent(sink.kind(), sink.sent_packets, sink.sent_bytes);
        }
        transmits.push_rtp(to, sink.viewer, OutgoingRtp::new(header, payload.clone()));
        true
    }

    /// Resends `packet` to `sink`'s viewer on its RTX stream: the viewer's
    /// header (its numbering) moved onto the RTX SSRC and payload type with
    /// the RTX stream's own sequence number, the original sequence number
    /// first in the payload (RFC 4588 §4).
    fn send_rtx(
        transmits: &mut Outbox,
        conn: &mut Conn,
        sink: &mut Sink,
        to: Peer,
        packet: &rtp::Packet,
        now: Instant,
    ) -> bool {
        let mut header = bare_header(&packet.header);
        sink.rewriter.rewrite(&mut header, now);
        let rewritten = rtp::Packet {
            header,
            payload: packet.payload.clone(),
        };
        Self::send_rtx_of(transmits, conn, sink, to, &rewritten)
    }

    /// Sends `rewritten` (a packet as the viewer was sent it) again on the
    /// viewer's RTX stream.
    fn send_rtx_of(
        transmits: &mut Outbox,
        conn: &mut Conn,
        sink: &mut Sink,
        to: Peer,
        rewritten: &rtp::Packet,
    ) -> bool {
        let (Some(_keys), Some(rtx)) = (conn.fast.as_ref(), sink.rtx.as_mut()) else {
            return false;
        };
        let mut header = rewritten.header.clone();
        let mut payload = Vec::with_capacity(2 + rewritten.payload.len());
        payload.extend_from_slice(&header.sequence_number.to_be_bytes());
        payload.extend_from_slice(&rewritten.payload);
        header.ssrc = rtx.ssrc;
        header.payload_type = rtx.payload_type;
        header.sequence_number = rtx.seq;
        rtx.seq = rtx.seq.wrapping_add(1);
        transmits.push_rtp(to, sink.viewer, OutgoingRtp::new(&header, payload.into()));
        true
    }

    /// Answers a viewer's NACK from the history of the layer it gets: each
    /// lost packet it still has goes out again on the viewer's SSRC, with
    /// the viewer's numbering, on the fast path like the first send.
    fn retransmit(&mut self, viewer: ConnId, nack: &TransportLayerNack, now: Instant) {
        let Some(to) = self.demux.current_addr(viewer) else {
            return;
        };
        let Some(conn) = self.conns.get_mut(&viewer) else {
            return;
        };
        let found = self.tracks.iter_mut().find_map(|(track, fanout)| {
            fanout
                .sinks
                .iter_mut()
                .find(|s| s.viewer == viewer && s.rewriter.ssrc() == nack.media_ssrc)
                .map(|sink| (*track, sink))
        });
        let Some((track, sink)) = found else {
            return;
        };
        if let Some(counters) = &conn.viewer_counters {
            counters.nack(sink.kind());
        }
        let Some(history) = sink.layer.and_then(|l| self.histories.get(&track.layer(l))) else {
            return;
        };
        for pair in &nack.nacks {
            for viewer_seq in pair.packet_list() {
                if let Some(copy) = sink
                    .copies
                    .iter()
                    .find(|c| c.header.sequence_number == viewer_seq)
                    .cloned()
                {
                    let sent = if sink.rtx.is_some() {
                        Self::send_rtx_of(&mut self.transmits, conn, sink, to, &copy)
                    } else {
                        Self::seal_out(
                            &mut self.transmits,
                            conn,
                            sink,
                            to,
                            &copy.header,
                            &copy.payload,
                            now,
                        )
                    };
                    if sent {
                        self.retransmitted += 1;
                    }
                    continue;
                }
                let Some(packet) = history.get(sink.rewriter.source_seq(viewer_seq)) else {
                    continue; // too old: the viewer will ask for a keyframe
                };
                let sent = if sink.rtx.is_some() {
                    Self::send_rtx(&mut self.transmits, conn, sink, to, packet, now)
                } else {
                    Self::send_fast(&mut self.transmits, conn, sink, to, packet, now)
                };
                if sent {
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

    /// What this shard has forwarded and repaired since it started.
    pub fn counters(&self) -> MediaCounters {
        let (forwarded_packets, forwarded_bytes) = self.transmits.rtp_sent();
        MediaCounters {
            forwarded_packets,
            forwarded_bytes,
            retransmitted: self.retransmitted,
            nacks_received: self.nacks_received,
            plis_sent: self.plis_sent,
        }
    }

    /// The stream (layer) a viewer's SSRC gets, or is about to.
    fn source_of(&self, viewer: ConnId, viewer_ssrc: u32) -> Option<Source> {
        self.tracks.iter().find_map(|(track, fanout)| {
            let sink = fanout
                .sinks
                .iter()
                .find(|s| s.viewer == viewer && s.rewriter.ssrc() == viewer_ssrc)?;
            let layer = sink
                .next
                .or(sink.layer)
                .or_else(|| fanout.layers.pick(&sink.choice, sink.step_down.steps()))?;
            Some(track.layer(layer))
        })
    }

    fn forget(&mut self, id: ConnId) {
        self.conns.remove(&id);
        self.locals.remove(&id);
        self.demux.remove(id);
        self.forget_publisher(self.index, id);
        self.relay_targets.retain(|track, _| track.conn != id);
        for fanout in self.tracks.values_mut() {
            fanout.sinks.retain(|s| s.viewer != id);
        }
        // A gone publisher's fan-out keeps its viewers (for a republish).
        self.tracks.retain(|_, fanout| !fanout.sinks.is_empty());
    }
}

/// A publisher connection's streams as received, for the statistics: each
/// SSRC's sequence and jitter state from its first packet, and which video
/// layer is the top one (the largest picture; the first layer heard while
/// no size is known), whose frames and picture size the track reports.
#[derive(Default)]
struct Received {
    streams: HashMap<u32, Stream>,
    top: Option<u32>,
}

struct Stream {
    kind: MediaKind,
    reception: Reception,
    /// Its last keyframe's picture size.
    size: Option<(u32, u32)>,
}

impl Received {
    /// `rtc` opened stream `ssrc` (RTX streams are never opened: their
    /// repairs arrive de-encapsulated, under the media SSRC).
    fn open(&mut self, ssrc: u32, kind: MediaKind, clock_rate: u32) {
        let stream = Stream {
            kind,
            reception: Reception::new(clock_rate),
            size: None,
        };
        self.streams.insert(ssrc, stream);
    }

    /// Counts one of the publisher's packets into its track's counters;
    /// `size` is the picture size it starts a keyframe of, if any.
    fn count(
        &mut self,
        counters: &StreamCounters,
        packet: &rtp::Packet,
        size: Option<(u32, u32)>,
        now: Instant,
    ) {
        let h = &packet.header;
        let Some(stream) = self.streams.get_mut(&h.ssrc) else {
            return;
        };
        let arrival = stream
            .reception
            .on_packet(h.sequence_number, h.timestamp, now);
        let (kind, jitter_us) = (stream.kind, stream.reception.jitter_us());
        let track = counters.track(kind);
        if let Some(size) = size {
            stream.size = Some(size);
            // Only a keyframe can change which layer is on top.
            self.top = self
                .streams
                .iter()
                .filter(|(_, s)| s.kind == MediaKind::Video)
                .filter_map(|(ssrc, s)| Some((*ssrc, s.size?)))
                .max_by_key(|(_, (w, h))| u64::from(*w) * u64::from(*h))
                .map(|(ssrc, _)| ssrc)
                .or(self.top);
            if let Some(top) = self.top.and_then(|top| self.streams.get(&top)?.size) {
                track.picture_size(top.0, top.1);
            }
        }
        if kind == MediaKind::Video && self.top.is_none() {
            self.top = Some(h.ssrc);
        }
        let frame_end = kind == MediaKind::Video && h.marker && self.top == Some(h.ssrc);
        track.count(packet.payload.len(), arrival, frame_end, jitter_us);
    }
}

/// A reception report's cumulative number of packets lost: 24 bits, signed
/// (RFC 3550 §6.4.1; duplicates can make it negative).
fn cumulative_lost(total_lost: u32) -> i64 {
    let bits = total_lost & 0x00FF_FFFF;
    if bits & 0x0080_0000 != 0 {
        i64::from(bits) - 0x0100_0000
    } else {
        i64::from(bits)
    }
}

/// `source`'s header without its extensions (their ids were negotiated
/// with the publisher; [`Rewriter::rewrite`] drops them anyway), so that
/// making a viewer's header never copies them.
///
/// Nor its padding flag: parsing took the padding off the payload, and
/// the fast path seals header and payload as they are, so a flag left
/// set would make the viewer cut the payload's last bytes as padding.
fn bare_header(source: &rtp::header::Header) -> rtp::header::Header {
    rtp::header::Header {
        version: source.version,
        padding: false,
        marker: source.marker,
        payload_type: source.payload_type,
        sequence_number: source.sequence_number,
        timestamp: source.timestamp,
        ssrc: source.ssrc,
        csrc: source.csrc.clone(),
        ..Default::default()
    }
}

/// A viewer track's RTX stream, if its answer negotiated RTX for the
/// track's codec (payload type `apt`) and its encoding has an RTX SSRC.
fn rtx_of(
    parameters: &rtc::rtp_transceiver::rtp_sender::RTCRtpSendParameters,
    apt: u8,
) -> Option<Rtx> {
    let ssrc = parameters
        .encodings
        .first()?
        .rtp_coding_parameters
        .rtx
        .as_ref()?
        .ssrc;
    let apt = format!("apt={apt}");
    let codec = parameters.rtp_parameters.codecs.iter().find(|c| {
        c.rtp_codec.mime_type.eq_ignore_ascii_case(MIME_TYPE_RTX)
            && c.rtp_codec
                .sdp_fmtp_line
                .split(';')
                .any(|p| p.trim() == apt)
    })?;
    Some(Rtx {
        ssrc,
        payload_type: codec.payload_type,
        seq: rand::random(),
    })
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

#[cfg(test)]
mod received_tests {
    use super::*;

    fn packet(ssrc: u32, seq: u16, marker: bool) -> rtp::Packet {
        rtp::Packet {
            header: rtp::header::Header {
                ssrc,
                sequence_number: seq,
                timestamp: u32::from(seq) * 3000,
                marker,
                ..Default::default()
            },
            payload: Bytes::from_static(&[0; 100]),
        }
    }

    /// A simulcast track's frames and picture size are its top layer's:
    /// the first heard until keyframes give sizes, then the largest.
    #[test]
    fn a_simulcast_track_reports_its_top_layer() {
        let (low, high) = (1, 2);
        let counters = StreamCounters::default();
        let mut received = Received::default();
        received.open(low, MediaKind::Video, 90_000);
        received.open(high, MediaKind::Video, 90_000);
        let now = Instant::now();
        let frames = |counters: &StreamCounters| counters.tracks(|_| Some(String::new()))[1].frames;
        // One frame of each layer: only the first heard counts for now.
        received.count(&counters, &packet(low, 1, true), None, now);
        received.count(&counters, &packet(high, 1, true), None, now);
        assert_eq!(frames(&counters), 1);
        // Keyframes tell the sizes: the high layer is on top from then on.
        received.count(&counters, &packet(low, 2, true), Some((320, 180)), now);
        received.count(&counters, &packet(high, 2, true), Some((640, 360)), now);
        received.count(&counters, &packet(low, 3, true), None, now);
        let video = &counters.tracks(|_| Some(String::new()))[1];
        assert_eq!((video.width, video.height), (640, 360));
        assert_eq!(video.frames, 3, "low 1, low 2, then high 2 only");
        // Both layers' packets are the track's, and none was lost.
        assert_eq!((video.packets, video.expected, video.late), (5, 5, 0));
    }
}
