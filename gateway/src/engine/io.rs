//! The outer layer of a shard: its thread, its one UDP socket, and the loop
//! that feeds the [`Shard`] and sends what it polls.
//!
//! One thread per shard runs a single-threaded tokio runtime: it waits for
//! the socket, a command, or the shard's next deadline, whichever comes
//! first, and after every input flushes the shard's transmits. Receiving
//! uses quinn-udp (GRO where the kernel has it: one `recvmsg` may carry many
//! datagrams). Sending groups consecutive datagrams to one destination of
//! equal size (the last may be shorter) into one UDP GSO `sendmsg`, up to
//! what the kernel accepts; anything else goes one datagram per call.
//!
//! With ICE-TCP on, the shard also listens for TCP on its socket's address
//! and takes frames from those connections like datagrams
//! ([`super::tcp`]).
//!
//! Commands come from other threads (the room owner, HTTP handlers) over an
//! unbounded channel with oneshot replies; none of them touches the
//! shard's state directly. Dropping the [`ShardHandle`] ends the loop.

use std::io;
use std::io::IoSliceMut;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use quinn_udp::{RecvMeta, Transmit as UdpTransmit, UdpSocketState};
use rtc::peer_connection::RTCPeerConnection;
use rtc::rtp;
use rtc::rtp_transceiver::RTCRtpSenderId;
use tokio::io::Interest;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{mpsc, oneshot};

use super::demux::Transport;
use super::shard::{
    ConnId, Event, LocalTrack, MediaCounters, Relay, RestartError, Shard, Source, TrackId,
};
use super::tcp::{TcpInput, TcpLinks};
use crate::sfu::MediaKind;
use crate::sfu::keyframe::VideoCodec;
use crate::sfu::layers::LayerChoice;
use crate::sfu::stream_counters::{StreamCounters, ViewerCounters};

/// A shard's socket takes a publisher's whole keyframe in one burst
/// (hundreds of packets at 8 Mbit/s) while the same thread is busy fanning
/// out; with Linux's default 208 KB receive buffer the kernel drops the
/// end of the burst and every viewer loses the same packets (vigil-bench
/// saw it at 8 Mbit/s). The kernel grants at most `net.core.rmem_max` /
/// `wmem_max` (docs/performance.md), and the buffer is only memory while
/// it is full.
/// Receive and send buffer asked for on each media socket.
pub const SOCKET_BUFFER_BYTES: usize = 4 << 20;

/// Receive buffers per `recvmsg` batch.
const RECV_BATCH: usize = 8;
/// The largest datagram expected (an MTU-sized packet, with room).
const MAX_DATAGRAM: usize = 2048;

enum Command {
    Add {
        pc: Box<RTCPeerConnection>,
        ufrag: String,
        reply: oneshot::Sender<ConnId>,
    },
    AddLocal {
        tracks: Vec<LocalTrack>,
        reply: oneshot::Sender<ConnId>,
    },
    LocalMedia {
        conn: ConnId,
        packets: Vec<rtp::Packet>,
    },
    Subscribe {
        track: TrackId,
        viewer: ConnId,
        sender: RTCRtpSenderId,
        ssrc: u32,
        choice: LayerChoice,
        reply: Option<oneshot::Sender<bool>>,
    },
    RelayTo {
        track: TrackId,
        shard: usize,
    },
    PublishedTracks {
        conn: ConnId,
        reply: oneshot::Sender<Vec<(TrackId, MediaKind)>>,
    },
    ForgetPublisher {
        shard: usize,
        conn: ConnId,
    },
    RequestKeyframe(Source),
    Watch(Source, VideoCodec),
    SetMuted(TrackId, bool),
    RestartIce {
        conn: ConnId,
        ufrag: String,
        pwd: Option<String>,
        reply: oneshot::Sender<Result<Option<String>, RestartError>>,
    },
    MoveViewers {
        from: TrackId,
        to: TrackId,
        reply: Option<oneshot::Sender<bool>>,
    },
    CountInto(ConnId, Arc<StreamCounters>),
    CountViewerInto(ConnId, Arc<ViewerCounters>),
    Remove(ConnId),
    /// Answered once everything the commands before it queued has been
    /// handed to the socket.
    Flush(oneshot::Sender<()>),
}

/// What a shard reports: its index and the event.
pub type ShardEvent = (usize, Event);

/// A running shard: its address and the way to command it.
pub struct ShardHandle {
    index: usize,
    local_addr: SocketAddr,
    ice_tcp: bool,
    commands: mpsc::UnboundedSender<Command>,
    stats: Arc<IoStats>,
}

/// What a shard's socket has done, counted with relaxed atomics.
#[derive(Debug, Default)]
pub struct IoStats {
    /// `recvmsg` calls that returned datagrams.
    pub receives: AtomicU64,
    /// Datagrams received.
    pub datagrams_in: AtomicU64,
    /// `sendmsg` calls (a GSO batch is one).
    pub sends: AtomicU64,
    /// Datagrams sent.
    pub datagrams_out: AtomicU64,
    /// Packets relayed to other shards (each once per shard with viewers
    /// of its stream).
    pub relayed: AtomicU64,
    /// ICE-TCP connections accepted.
    pub tcp_accepted: AtomicU64,
    /// ICE-TCP connections refused at a cap.
    pub tcp_refused: AtomicU64,
    /// ICE-TCP connections the shard has let go of since (closed by the
    /// client, or released by the shard).
    pub tcp_closed: AtomicU64,
    /// ICE-TCP frames received.
    pub tcp_frames_in: AtomicU64,
    /// ICE-TCP frames queued to send.
    pub tcp_frames_out: AtomicU64,
    /// ICE-TCP frames dropped because the connection's queue was full.
    pub tcp_dropped: AtomicU64,
    /// Datagrams a `sendmsg` refused (other than "try again"): lost.
    pub send_errors: AtomicU64,
    /// The shard's own counters as of its last turn.
    pub forwarded_packets: AtomicU64,
    /// See [`MediaCounters::forwarded_bytes`].
    pub forwarded_bytes: AtomicU64,
    /// See [`MediaCounters::retransmitted`].
    pub retransmitted: AtomicU64,
    /// See [`MediaCounters::nacks_received`].
    pub nacks_received: AtomicU64,
    /// See [`MediaCounters::plis_sent`].
    pub plis_sent: AtomicU64,
}

impl IoStats {
    /// Publishes the shard's counters (a few relaxed stores, once a turn).
    fn publish(&self, counters: MediaCounters) {
        let MediaCounters {
            forwarded_packets,
            forwarded_bytes,
            retransmitted,
            nacks_received,
            plis_sent,
        } = counters;
        self.forwarded_packets
            .store(forwarded_packets, Ordering::Relaxed);
        self.forwarded_bytes
            .store(forwarded_bytes, Ordering::Relaxed);
        self.retransmitted.store(retransmitted, Ordering::Relaxed);
        self.nacks_received.store(nacks_received, Ordering::Relaxed);
        self.plis_sent.store(plis_sent, Ordering::Relaxed);
    }
}

impl ShardHandle {
    /// Binds `bind` (UDP, and TCP too if `ice_tcp`) and starts a shard on
    /// its own (an engine of one). Returns the handle and the shard's
    /// events.
    pub fn spawn(
        bind: SocketAddr,
        ice_tcp: bool,
    ) -> io::Result<(ShardHandle, mpsc::UnboundedReceiver<ShardEvent>)> {
        let (events, event_rx) = mpsc::unbounded_channel();
        let (relay_tx, relay_rx) = mpsc::unbounded_channel();
        let handle = ShardHandle::spawn_in(
            ShardPlace {
                index: 0,
                relay_rx,
                peers: vec![relay_tx],
            },
            bind,
            ice_tcp,
            events,
        )?;
        Ok((handle, event_rx))
    }

    /// Binds `bind` (UDP; with `ice_tcp` also TCP at the same address)
    /// and starts shard `place.index` of an engine, reporting to `events`.
    pub(super) fn spawn_in(
        place: ShardPlace,
        bind: SocketAddr,
        ice_tcp: bool,
        events: mpsc::UnboundedSender<ShardEvent>,
    ) -> io::Result<ShardHandle> {
        let (socket, listener) = bind_sockets(bind, ice_tcp)?;
        // A publisher's keyframe burst and a fan-out's sends share it.
        enlarge_buffers(&socket, SOCKET_BUFFER_BYTES);
        let local_addr = socket.local_addr()?;
        let index = place.index;
        let (commands, command_rx) = mpsc::unbounded_channel();
        let stats = Arc::new(IoStats::default());
        let loop_stats = stats.clone();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        std::thread::Builder::new()
            // Short: Linux keeps 15 characters of a thread name.
            .name(format!("shard-{}", local_addr.port()))
            .spawn(move || {
                runtime.block_on(async move {
                    let shard = Shard::with_index(place.index, local_addr);
                    let sockets = (socket, listener);
                    match ShardLoop::new(sockets, shard, command_rx, events, place, loop_stats) {
                        Ok(shard_loop) => shard_loop.run().await,
                        Err(error) => tracing::error!(%error, "media shard could not start"),
                    }
                })
            })?;
        Ok(ShardHandle {
            index,
            local_addr,
            ice_tcp,
            commands,
            stats,
        })
    }

    /// Whether this shard takes ICE-TCP at [`ShardHandle::local_addr`].
    pub fn ice_tcp(&self) -> bool {
        self.ice_tcp
    }

    /// This shard's place among the engine's shards.
    pub fn index(&self) -> usize {
        self.index
    }

    /// The shard socket's counters.
    pub fn io_stats(&self) -> &IoStats {
        &self.stats
    }

    /// The address every connection of this shard is reached at.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Hands a negotiated connection (ICE credentials with `ufrag`) to the
    /// shard. `None` if the shard has stopped.
    pub async fn add_connection(&self, pc: RTCPeerConnection, ufrag: String) -> Option<ConnId> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Add {
                pc: Box::new(pc),
                ufrag,
                reply,
            })
            .ok()?;
        answer.await.ok()
    }

    /// Adds a local publisher of `tracks` (see [`Shard::add_local`]);
    /// `None` if the shard has stopped.
    pub async fn add_local(&self, tracks: Vec<LocalTrack>) -> Option<ConnId> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::AddLocal { tracks, reply })
            .ok()?;
        answer.await.ok()
    }

    /// Hands packets of local publisher `conn` to the shard (see
    /// [`Shard::handle_local_media`]); `false` if the shard has stopped.
    pub fn send_local(&self, conn: ConnId, packets: Vec<rtp::Packet>) -> bool {
        self.commands
            .send(Command::LocalMedia { conn, packets })
            .is_ok()
    }

    /// See [`Shard::subscribe`]; `false` if the viewer or its sender is
    /// gone.
    pub async fn subscribe(
        &self,
        track: TrackId,
        viewer: ConnId,
        sender: RTCRtpSenderId,
        ssrc: u32,
        choice: LayerChoice,
    ) -> bool {
        let (reply, answer) = oneshot::channel();
        let sent = self.commands.send(Command::Subscribe {
            track,
            viewer,
            sender,
            ssrc,
            choice,
            reply: Some(reply),
        });
        sent.is_ok() && answer.await.unwrap_or(false)
    }

    /// [`ShardHandle::subscribe`] without waiting: commands to one shard
    /// are applied in the order they are sent, so a later
    /// [`ShardHandle::move_viewers_now`] finds this subscription.
    pub fn subscribe_now(
        &self,
        track: TrackId,
        viewer: ConnId,
        sender: RTCRtpSenderId,
        ssrc: u32,
        choice: LayerChoice,
    ) {
        // A stopped shard has no viewer left to subscribe.
        let _stopped = self.commands.send(Command::Subscribe {
            track,
            viewer,
            sender,
            ssrc,
            choice,
            reply: None,
        });
    }

    /// See [`Shard::published_tracks`]; empty if the shard has stopped.
    pub async fn published_tracks(&self, conn: ConnId) -> Vec<(TrackId, MediaKind)> {
        let (reply, answer) = oneshot::channel();
        let sent = self.commands.send(Command::PublishedTracks { conn, reply });
        if sent.is_err() {
            return Vec::new();
        }
        answer.await.unwrap_or_default()
    }

    /// See [`Shard::relay_to`].
    pub fn relay_to(&self, track: TrackId, shard: usize) {
        // A stopped shard relays nothing any more.
        let _stopped = self.commands.send(Command::RelayTo { track, shard });
    }

    /// See [`Shard::forget_publisher`].
    pub fn forget_publisher(&self, shard: usize, conn: ConnId) {
        // A stopped shard has nothing left to forget.
        let _stopped = self.commands.send(Command::ForgetPublisher { shard, conn });
    }

    /// See [`Shard::watch`].
    pub fn watch(&self, source: Source, codec: VideoCodec) {
        // A stopped shard has no stream left to watch.
        let _stopped = self.commands.send(Command::Watch(source, codec));
    }

    /// See [`Shard::set_muted`].
    pub fn set_muted(&self, track: TrackId, muted: bool) {
        // A stopped shard sends nothing anyway.
        let _stopped = self.commands.send(Command::SetMuted(track, muted));
    }

    /// See [`Shard::move_viewers`]; `false` if none moved.
    pub async fn move_viewers(&self, from: TrackId, to: TrackId) -> bool {
        let (reply, answer) = oneshot::channel();
        let sent = self.commands.send(Command::MoveViewers {
            from,
            to,
            reply: Some(reply),
        });
        sent.is_ok() && answer.await.unwrap_or(false)
    }

    /// [`ShardHandle::move_viewers`] without waiting.
    pub fn move_viewers_now(&self, from: TrackId, to: TrackId) {
        // A stopped shard has no viewer left to move.
        let _stopped = self.commands.send(Command::MoveViewers {
            from,
            to,
            reply: None,
        });
    }

    /// See [`Shard::restart_ice`].
    pub async fn restart_ice(
        &self,
        conn: ConnId,
        ufrag: String,
        pwd: Option<String>,
    ) -> Result<Option<String>, RestartError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::RestartIce {
                conn,
                ufrag,
                pwd,
                reply,
            })
            .map_err(|_| RestartError::NoSuchConnection)?;
        answer.await.unwrap_or(Err(RestartError::NoSuchConnection))
    }

    /// See [`Shard::count_into`].
    pub fn count_into(&self, conn: ConnId, counters: Arc<StreamCounters>) {
        // A stopped shard has no publisher left to count.
        let _stopped = self.commands.send(Command::CountInto(conn, counters));
    }

    /// See [`Shard::count_viewer_into`].
    pub fn count_viewer_into(&self, conn: ConnId, counters: Arc<ViewerCounters>) {
        // A stopped shard has no viewer left to count.
        let _stopped = self.commands.send(Command::CountViewerInto(conn, counters));
    }

    /// See [`Shard::request_keyframe`].
    pub fn request_keyframe(&self, source: Source) {
        // A stopped shard has no publisher left to ask.
        let _stopped = self.commands.send(Command::RequestKeyframe(source));
    }

    /// Closes a connection.
    pub fn remove_connection(&self, id: ConnId) {
        // A stopped shard has no connections left to remove.
        let _stopped = self.commands.send(Command::Remove(id));
    }

    /// Returns once what the commands sent before it queued (a closed
    /// connection's DTLS `close_notify`, say) has been sent.
    pub async fn flush(&self) {
        let (reply, flushed) = oneshot::channel();
        if self.commands.send(Command::Flush(reply)).is_ok() {
            // A shard that stopped meanwhile has nothing left to send.
            let _stopped = flushed.await;
        }
    }
}

/// Asks for `bytes` of receive and send buffer on `socket`; what the kernel
/// grants is logged once, since a small `rmem_max` silently caps it.
/// The shard's UDP socket at `bind` and, with `ice_tcp`, a TCP listener at
/// the same address (its port is the UDP socket's: with port 0, the
/// ephemeral port UDP got, tried again on another if TCP has that one
/// taken).
fn bind_sockets(
    bind: SocketAddr,
    ice_tcp: bool,
) -> io::Result<(std::net::UdpSocket, Option<std::net::TcpListener>)> {
    let attempts = if bind.port() == 0 { 16 } else { 1 };
    let mut last_error = None;
    for _ in 0..attempts {
        let socket = std::net::UdpSocket::bind(bind)?;
        socket.set_nonblocking(true)?;
        if !ice_tcp {
            return Ok((socket, None));
        }
        match std::net::TcpListener::bind(socket.local_addr()?) {
            Ok(listener) => {
                listener.set_nonblocking(true)?;
                return Ok((socket, Some(listener)));
            }
            Err(error) if error.kind() == io::ErrorKind::AddrInUse => last_error = Some(error),
            Err(error) => return Err(error),
        }
    }
    Err(last_error.unwrap_or_else(|| io::Error::from(io::ErrorKind::AddrInUse)))
}

pub fn enlarge_buffers(socket: &std::net::UdpSocket, bytes: usize) {
    let sock = socket2::SockRef::from(socket);
    if let Err(e) = sock.set_recv_buffer_size(bytes) {
        tracing::debug!("SO_RCVBUF: {e}");
    }
    if let Err(e) = sock.set_send_buffer_size(bytes) {
        tracing::debug!("SO_SNDBUF: {e}");
    }
    static LOGGED: std::sync::Once = std::sync::Once::new();
    LOGGED.call_once(|| {
        let granted = sock.recv_buffer_size().unwrap_or_default();
        // Linux reports twice what it accounts for (bookkeeping overhead).
        if granted < bytes {
            tracing::info!(
                asked = bytes,
                granted,
                "media socket receive buffer capped by net.core.rmem_max"
            );
        }
    });
}

/// Where a shard sits among the engine's shards: its index, its inbox of
/// relayed packets, and every shard's inbox (its own included, unused).
pub(super) struct ShardPlace {
    pub(super) index: usize,
    pub(super) relay_rx: mpsc::UnboundedReceiver<Relay>,
    pub(super) peers: Vec<mpsc::UnboundedSender<Relay>>,
}

struct ShardLoop {
    socket: UdpSocket,
    state: UdpSocketState,
    /// ICE-TCP: the listener (if on), its connections, and their frames.
    listener: Option<TcpListener>,
    links: TcpLinks,
    tcp_inputs: mpsc::Receiver<TcpInput>,
    shard: Shard,
    commands: mpsc::UnboundedReceiver<Command>,
    events: mpsc::UnboundedSender<ShardEvent>,
    place: ShardPlace,
    recv_bufs: Vec<Vec<u8>>,
    /// One GSO batch being built.
    batch: GsoBatch,
    stats: Arc<IoStats>,
    /// [`Command::Flush`]es to answer after the next flush.
    flushed: Vec<oneshot::Sender<()>>,
}

impl ShardLoop {
    fn new(
        (socket, listener): (std::net::UdpSocket, Option<std::net::TcpListener>),
        shard: Shard,
        commands: mpsc::UnboundedReceiver<Command>,
        events: mpsc::UnboundedSender<ShardEvent>,
        place: ShardPlace,
        stats: Arc<IoStats>,
    ) -> io::Result<Self> {
        let state = UdpSocketState::new((&socket).into())?;
        let buf_len = MAX_DATAGRAM * state.gro_segments().max(1);
        let (links, tcp_inputs) = TcpLinks::new(stats.clone());
        Ok(ShardLoop {
            socket: UdpSocket::from_std(socket)?,
            state,
            listener: listener.map(TcpListener::from_std).transpose()?,
            links,
            tcp_inputs,
            shard,
            commands,
            events,
            place,
            recv_bufs: vec![vec![0; buf_len]; RECV_BATCH],
            batch: GsoBatch::default(),
            stats,
            flushed: Vec::new(),
        })
    }

    async fn run(mut self) {
        loop {
            self.flush().await;
            self.stats.publish(self.shard.counters());
            for reply in self.flushed.drain(..) {
                let _asker_gone = reply.send(());
            }
            while let Some((shard, relay)) = self.shard.poll_relay() {
                if let Some(peer) = self.place.peers.get(shard) {
                    self.stats
                        .relayed
                        .fetch_add(relay.packets.len() as u64, Ordering::Relaxed);
                    // That shard has stopped: the engine is shutting down.
                    let _stopped = peer.send(relay);
                }
            }
            while let Some(peer) = self.shard.poll_tcp_release() {
                self.links.close(peer);
            }
            let index = self.place.index;
            while let Some(event) = self.shard.poll_event() {
                // Nobody listening: the handle's owner is shutting down.
                let _unheard = self.events.send((index, event));
            }
            let deadline = self
                .shard
                .poll_timeout()
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                readable = self.socket.readable() => {
                    if readable.is_ok() {
                        self.receive();
                    }
                }
                command = self.commands.recv() => match command {
                    Some(command) => self.apply(command),
                    None => break,
                },
                Some(relay) = self.place.relay_rx.recv() => {
                    self.shard.handle_relay(Instant::now(), relay);
                }
                accepted = accept(self.listener.as_ref()) => match accepted {
                    Ok((stream, peer)) => self.links.accept(stream, peer),
                    // Out of descriptors, or a connection reset before it
                    // was taken: the listener goes on.
                    Err(error) => tracing::debug!(%error, "ICE-TCP accept"),
                },
                Some(input) = self.tcp_inputs.recv() => self.take_tcp(input),
                () = tokio::time::sleep_until(deadline.into()) => {
                    self.shard.handle_timeout(Instant::now());
                }
            }
        }
    }

    fn apply(&mut self, command: Command) {
        let now = Instant::now();
        match command {
            Command::Add { pc, ufrag, reply } => {
                let id = self.shard.add_connection(*pc, &ufrag, now);
                // The asker gave up: the connection times out unconnected.
                let _asker_gone = reply.send(id);
            }
            Command::AddLocal { tracks, reply } => {
                let id = self.shard.add_local(tracks);
                if let Err(id) = reply.send(id) {
                    // The asker gave up: nobody will feed or remove it.
                    self.shard.remove_connection(id, now);
                }
            }
            Command::LocalMedia { conn, packets } => {
                self.shard.handle_local_media(conn, packets, now)
            }
            Command::Subscribe {
                track,
                viewer,
                sender,
                ssrc,
                choice,
                reply,
            } => {
                let done = self
                    .shard
                    .subscribe(track, viewer, sender, ssrc, choice, Instant::now())
                    .is_some();
                if let Some(reply) = reply {
                    let _asker_gone = reply.send(done);
                }
            }
            Command::PublishedTracks { conn, reply } => {
                let _asker_gone = reply.send(self.shard.published_tracks(conn));
            }
            Command::RelayTo { track, shard } => self.shard.relay_to(track, shard),
            Command::ForgetPublisher { shard, conn } => self.shard.forget_publisher(shard, conn),
            Command::RequestKeyframe(source) => self.shard.request_keyframe(source, now),
            Command::Watch(source, codec) => self.shard.watch(source, codec),
            Command::SetMuted(track, muted) => self.shard.set_muted(track, muted, now),
            Command::MoveViewers { from, to, reply } => {
                let moved = self.shard.move_viewers(from, to);
                if let Some(reply) = reply {
                    let _gave_up = reply.send(moved);
                }
            }
            Command::RestartIce {
                conn,
                ufrag,
                pwd,
                reply,
            } => {
                let restarted = self.shard.restart_ice(conn, &ufrag, pwd.as_deref(), now);
                let _asker_gone = reply.send(restarted);
            }
            Command::CountInto(conn, counters) => self.shard.count_into(conn, counters),
            Command::CountViewerInto(conn, counters) => {
                self.shard.count_viewer_into(conn, counters)
            }
            Command::Remove(id) => self.shard.remove_connection(id, now),
            Command::Flush(reply) => self.flushed.push(reply),
        }
    }

    /// Hands what an ICE-TCP connection delivered to the shard, and what
    /// else has arrived meanwhile (a batch, as from `recvmsg`).
    fn take_tcp(&mut self, first: TcpInput) {
        let mut next = Some(first);
        let mut taken = 0;
        while let Some(input) = next.take() {
            match input {
                TcpInput::Frame(peer, frame) => {
                    self.stats.tcp_frames_in.fetch_add(1, Ordering::Relaxed);
                    if !self.shard.handle_tcp_frame(Instant::now(), peer, frame) {
                        // Serves no session: a stray or stale connection.
                        self.links.close(peer);
                    }
                }
                TcpInput::Closed(peer) => {
                    self.links.close(peer);
                    self.shard.handle_tcp_closed(peer);
                }
            }
            taken += 1;
            if taken < RECV_BATCH {
                next = self.tcp_inputs.try_recv().ok();
            }
        }
    }

    /// Reads one batch of datagrams (one `recvmsg`, up to [`RECV_BATCH`]
    /// buffers) and hands each to the shard. One batch, not all the socket
    /// has: the loop flushes between batches, so a keyframe burst's
    /// fan-out leaves a few packets at a time instead of queueing whole
    /// (the queue then stays a few thousand datagrams at N = 200), and a
    /// packet that arrives during a burst waits for less of it.
    fn receive(&mut self) {
        let mut meta = [RecvMeta::default(); RECV_BATCH];
        let mut slices: Vec<IoSliceMut<'_>> = self
            .recv_bufs
            .iter_mut()
            .map(|b| IoSliceMut::new(b))
            .collect();
        let received = self.socket.try_io(Interest::READABLE, || {
            self.state
                .recv((&self.socket).into(), &mut slices, &mut meta)
        });
        let count = match received {
            Ok(count) => count,
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => return,
            Err(error) => {
                tracing::debug!(%error, "media socket receive");
                return;
            }
        };
        drop(slices);
        self.stats.receives.fetch_add(1, Ordering::Relaxed);
        let datagrams = self
            .recv_bufs
            .iter()
            .zip(&meta)
            .take(count)
            .flat_map(|(buf, meta)| {
                buf[..meta.len]
                    .chunks(meta.stride.max(1))
                    .map(|datagram| (meta.addr, BytesMut::from(datagram)))
            })
            .inspect(|_| {
                self.stats.datagrams_in.fetch_add(1, Ordering::Relaxed);
            });
        self.shard.handle_datagrams(Instant::now(), datagrams);
    }

    /// Sends everything the shard has queued, batching runs for GSO.
    ///
    /// Each viewer's datagrams go together (in their order) so that a
    /// frame's packets to one viewer leave in one GSO `sendmsg`; each is
    /// sealed right before it joins its batch, so a batch leaves as soon as
    /// it is complete instead of after the whole fan-out is sealed.
    async fn flush(&mut self) {
        self.shard.order_transmits_by_destination();
        let max_segments = self.state.max_gso_segments().max(1);
        let mut batch = std::mem::take(&mut self.batch);
        batch.clear();
        loop {
            let start = batch.contents.len();
            let Some(peer) = self.shard.poll_transmit_into(&mut batch.contents) else {
                break;
            };
            if peer.transport == Transport::Tcp {
                // Framed onto its connection; no part of a UDP batch.
                self.links.send(peer.addr, &batch.contents[start..]);
                batch.contents.truncate(start);
                continue;
            }
            let to = peer.addr;
            let len = batch.contents.len() - start;
            if !batch.takes(to, len, max_segments) {
                // This datagram starts the next batch.
                self.send_batch(&batch, start).await;
                batch.contents.drain(..start);
                batch.restart();
            }
            batch.count(to, len);
        }
        let end = batch.contents.len();
        self.send_batch(&batch, end).await;
        // Keep the allocation for the next flush.
        self.batch = batch;
    }

    /// Sends the batch's first `end` bytes (its counted datagrams).
    async fn send_batch(&self, batch: &GsoBatch, end: usize) {
        let Some(destination) = batch.to else {
            return;
        };
        let transmit = UdpTransmit {
            destination,
            ecn: None,
            contents: &batch.contents[..end],
            segment_size: (batch.segments > 1).then_some(batch.segment_size),
            src_ip: None,
        };
        let lost = send(&self.socket, &self.state, &transmit).await;
        if lost > 0 {
            self.stats.send_errors.fetch_add(lost, Ordering::Relaxed);
        }
        self.stats.sends.fetch_add(1, Ordering::Relaxed);
        self.stats
            .datagrams_out
            .fetch_add(batch.segments as u64, Ordering::Relaxed);
    }
}

/// The most one GSO `sendmsg` carries, all segments together: a UDP
/// payload's limit over IPv4 (65,535 − 20 − 8). Past it the kernel refuses
/// the whole send with EMSGSIZE, which quinn-udp reports as sent (it
/// expects EMSGSIZE only from MTU probes): 54 full-size SRTP packets to one
/// viewer, e.g. a joining viewer's cached keyframe, would vanish.
const MAX_GSO_BYTES: usize = 65_507;

/// Datagrams for one GSO `sendmsg`: one destination, all of the first
/// one's size except the last, which may be shorter.
#[derive(Default)]
struct GsoBatch {
    to: Option<SocketAddr>,
    segment_size: usize,
    segments: usize,
    /// The counted datagrams' bytes together.
    bytes: usize,
    /// The last datagram is shorter than the first: nothing may follow.
    closed: bool,
    contents: Vec<u8>,
}

impl GsoBatch {
    /// Whether a datagram of `len` bytes to `to` can join this batch.
    fn takes(&self, to: SocketAddr, len: usize, max_segments: usize) -> bool {
        match self.to {
            None => true,
            Some(dest) => {
                dest == to
                    && !self.closed
                    && self.segments < max_segments
                    && len <= self.segment_size
                    && self.bytes + len <= MAX_GSO_BYTES
            }
        }
    }

    /// Counts a datagram of `len` bytes to `to` that was appended to
    /// `contents`.
    fn count(&mut self, to: SocketAddr, len: usize) {
        if self.to.is_none() {
            self.to = Some(to);
            self.segment_size = len;
        }
        self.closed = len < self.segment_size;
        self.segments += 1;
        self.bytes += len;
    }

    /// Forgets the counted datagrams (their bytes are gone from
    /// `contents`).
    fn restart(&mut self) {
        self.to = None;
        self.segments = 0;
        self.bytes = 0;
        self.closed = false;
    }

    fn clear(&mut self) {
        self.restart();
        self.contents.clear();
    }
}

/// The next connection `listener` accepts; never, without one.
async fn accept(listener: Option<&TcpListener>) -> io::Result<(tokio::net::TcpStream, SocketAddr)> {
    match listener {
        Some(listener) => listener.accept().await,
        None => std::future::pending().await,
    }
}

/// Sends `transmit`; returns how many of its datagrams were lost to an
/// error.
async fn send(socket: &UdpSocket, state: &UdpSocketState, transmit: &UdpTransmit<'_>) -> u64 {
    loop {
        let sent = socket.try_io(Interest::WRITABLE, || {
            state.try_send(socket.into(), transmit)
        });
        match sent {
            Ok(()) => return 0,
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                if socket.writable().await.is_err() {
                    return datagrams_in(transmit);
                }
            }
            Err(error) => {
                if let Some(size) = transmit.segment_size {
                    // A device without GSO (quinn-udp has turned it off for
                    // later batches): this batch goes one datagram at a time.
                    let mut lost = 0;
                    for datagram in transmit.contents.chunks(size) {
                        let single = UdpTransmit {
                            contents: datagram,
                            segment_size: None,
                            ..transmit.clone()
                        };
                        lost += Box::pin(send(socket, state, &single)).await;
                    }
                    return lost;
                }
                // One unreachable peer costs only its own datagrams.
                tracing::debug!(%error, to = %transmit.destination, "media socket send");
                return 1;
            }
        }
    }
}

/// How many datagrams a transmit carries.
fn datagrams_in(transmit: &UdpTransmit<'_>) -> u64 {
    match transmit.segment_size {
        Some(size) if size > 0 => transmit.contents.len().div_ceil(size) as u64,
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_sockets_get_a_bigger_receive_buffer_than_the_default() {
        let plain = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let default = socket2::SockRef::from(&plain)
            .recv_buffer_size()
            .expect("SO_RCVBUF");
        let media = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        enlarge_buffers(&media, SOCKET_BUFFER_BYTES);
        let granted = socket2::SockRef::from(&media)
            .recv_buffer_size()
            .expect("SO_RCVBUF");
        // Even where rmem_max is at its stock 208 KB the kernel doubles it.
        assert!(granted > default, "{granted} vs default {default}");
    }

    #[test]
    fn a_batch_is_one_destination_of_one_size_with_a_shorter_last() {
        let to = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
        let mut batch = GsoBatch::default();
        assert!(batch.takes(to(1), 1200, 3));
        batch.count(to(1), 1200);
        assert!(batch.takes(to(1), 1200, 3));
        assert!(!batch.takes(to(1), 1300, 3), "larger than the first");
        assert!(!batch.takes(to(2), 1200, 3), "another viewer");
        batch.count(to(1), 700);
        assert!(!batch.takes(to(1), 700, 3), "nothing after a shorter one");
        batch.clear();
        for _ in 0..3 {
            assert!(batch.takes(to(1), 1200, 3));
            batch.count(to(1), 1200);
        }
        assert!(!batch.takes(to(1), 1200, 3), "at most max segments");
        assert_eq!(batch.segments, 3);
    }

    /// Fills a batch with `len`-byte datagrams to `to` until it refuses one;
    /// its contents and segment count.
    fn full_batch(to: SocketAddr, len: usize, max_segments: usize) -> GsoBatch {
        let mut batch = GsoBatch::default();
        let mut i = 0u8;
        while batch.takes(to, len, max_segments) {
            batch.contents.extend(std::iter::repeat_n(i, len));
            batch.count(to, len);
            i = i.wrapping_add(1);
        }
        batch
    }

    #[tokio::test]
    async fn a_batch_never_exceeds_what_one_send_carries_and_all_of_it_arrives() {
        let receiver = std::net::UdpSocket::bind("127.0.0.1:0").expect("receiver");
        receiver
            .set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        enlarge_buffers(&receiver, SOCKET_BUFFER_BYTES);
        let to = receiver.local_addr().expect("address");
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("sender");
        socket.set_nonblocking(true).expect("nonblocking");
        let state = UdpSocketState::new((&socket).into()).expect("state");
        let socket = UdpSocket::from_std(socket).expect("tokio socket");
        // A full-size SRTP packet: 1,200 bytes of payload, header and tag.
        let len = 1228;
        let batch = full_batch(to, len, state.max_gso_segments().max(64));
        assert_eq!(batch.segments, 53, "65,507 bytes hold 53 of them");
        let transmit = UdpTransmit {
            destination: to,
            ecn: None,
            contents: &batch.contents,
            segment_size: Some(len),
            src_ip: None,
        };
        send(&socket, &state, &transmit).await;
        let mut buf = [0u8; 2000];
        for i in 0..batch.segments {
            let (n, _) = receiver
                .recv_from(&mut buf)
                .unwrap_or_else(|e| panic!("datagram {i} of {}: {e}", batch.segments));
            assert_eq!(n, len);
            assert!(
                buf[..n].iter().all(|b| *b == i as u8),
                "datagram {i} intact"
            );
        }
    }

    #[tokio::test]
    async fn a_gso_batch_arrives_as_separate_datagrams() {
        let receiver = std::net::UdpSocket::bind("127.0.0.1:0").expect("receiver");
        receiver
            .set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        let to = receiver.local_addr().expect("address");
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("sender");
        socket.set_nonblocking(true).expect("nonblocking");
        let state = UdpSocketState::new((&socket).into()).expect("state");
        let socket = UdpSocket::from_std(socket).expect("tokio socket");
        let mut contents = Vec::new();
        for i in 0..5u8 {
            contents.extend(std::iter::repeat_n(i, if i == 4 { 300 } else { 1000 }));
        }
        let batch = UdpTransmit {
            destination: to,
            ecn: None,
            contents: &contents,
            segment_size: Some(1000),
            src_ip: None,
        };
        send(&socket, &state, &batch).await;

        let mut buf = [0u8; 2000];
        for i in 0..5u8 {
            let (n, _) = receiver.recv_from(&mut buf).expect("a datagram");
            assert_eq!(n, if i == 4 { 300 } else { 1000 }, "datagram {i}");
            assert!(buf[..n].iter().all(|b| *b == i), "datagram {i} intact");
        }
    }
}
