//! The room owner: the single task that holds every room's state.
//!
//! HTTP handlers and the media engine's shards never touch this state; they
//! send a [`Msg`] and, for requests, await a oneshot reply. Everything that
//! can be slow — negotiating a connection — is done outside, so each message
//! is handled in microseconds and the owner never awaits anything but its
//! inbox. Media never passes through it: the owner tells the engine
//! ([`crate::engine::shards::Engine`]) who gets which track, and the
//! shards forward.
//!
//! Lifecycle of a session:
//! 1. *reserved*: a WHIP POST claimed the stream (a second one gets 409)
//!    while its connection is negotiated outside;
//! 2. *committed*: the answer is out, the connection is on a shard, and the
//!    session resource exists;
//! 3. *connected*: ICE and DTLS are up (a session that does not get there
//!    within `connect_timeout` is reaped); a viewer is then subscribed to
//!    the stream's tracks;
//! 4. *closed*: by DELETE, by the peer (DTLS close), by ICE failure or
//!    consent expiry, by the publisher leaving for good, or at shutdown.
//!    Its connection is removed from its shard, and an empty stream or room
//!    is dropped.
//!
//! When a publisher goes away its viewers stay subscribed to its (silent)
//! tracks for `republish_grace`: a new publisher of the same stream (with
//! the same codec) has them moved onto its tracks at its first packet of
//! each kind, numbered on; when the grace runs out they are closed.
//!
//! *Takeover*: a WHIP POST for a live stream by the same authenticated
//! identity (a phone that lost its network and comes back with its token
//! before its old session timed out) reserves the stream as the current
//! publisher's *successor*; when the successor commits, the old session is
//! closed (`Replaced`) and the new one takes its place, its viewers moved
//! over as on a republish. Without authentication (open mode) nothing
//! proves two POSTs come from the same publisher, so the second gets 409.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rtc::rtp_transceiver::RTCRtpSenderId;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use tokio::sync::{mpsc, oneshot};
use vigil_control::Facts;

use crate::admission::SessionSlot;
use vigil_control::event::{LeaveReason, SessionRole, TrackKind};
use vigil_control::media::{StreamSample, ViewerSample};
use vigil_control::{RoomName, StreamName};

use crate::engine::io::ShardEvent;
use crate::engine::shard::{ConnId, Event, PublishedTrack, TrackId};
use crate::engine::shards::Engine;
use crate::error::{Error, Result};
use crate::sfu::codecs::TrackCodec;
use crate::sfu::layers::LayerChoice;
use crate::sfu::local::LocalOptions;
use crate::sfu::stream_counters::{StreamCounters, ViewerCounters};
use crate::sfu::{MediaKind, SessionId, Stats, Totals};

/// A reply channel.
pub type Reply<T> = oneshot::Sender<T>;

/// Why a session ended (logged, and reported to the control plane).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// DELETE on the session resource.
    Deleted,
    /// The peer closed DTLS.
    PeerClosed,
    /// ICE failed or consent expired.
    IceFailed,
    /// ICE/DTLS did not come up in time.
    ConnectTimeout,
    /// Negotiation failed before the session was committed.
    NegotiationFailed,
    /// The stream's publisher left and did not come back in time.
    PublisherGone,
    /// The stream came back with a codec this viewer did not negotiate.
    CodecChanged,
    /// The server is shutting down.
    Shutdown,
    /// The same identity published the stream again (takeover).
    Replaced,
    /// An admin ended the call this session carried.
    CallEnded,
    /// An admin hung up the participant.
    HungUp,
    /// The room was deleted.
    RoomClosed,
    /// A viewer connected into a room its other viewers already filled.
    RoomFull,
}

impl CloseReason {
    /// Every reason, in the order of [`crate::sfu::Totals::closed`].
    pub const ALL: [CloseReason; 13] = [
        CloseReason::Deleted,
        CloseReason::PeerClosed,
        CloseReason::IceFailed,
        CloseReason::ConnectTimeout,
        CloseReason::NegotiationFailed,
        CloseReason::PublisherGone,
        CloseReason::CodecChanged,
        CloseReason::Shutdown,
        CloseReason::Replaced,
        CloseReason::CallEnded,
        CloseReason::HungUp,
        CloseReason::RoomClosed,
        CloseReason::RoomFull,
    ];

    /// Its name as a metric label (`reason="ice_failed"`).
    pub fn label(self) -> &'static str {
        match self {
            CloseReason::Deleted => "deleted",
            CloseReason::PeerClosed => "peer_closed",
            CloseReason::IceFailed => "ice_failed",
            CloseReason::ConnectTimeout => "connect_timeout",
            CloseReason::NegotiationFailed => "negotiation_failed",
            CloseReason::PublisherGone => "publisher_gone",
            CloseReason::CodecChanged => "codec_changed",
            CloseReason::Shutdown => "shutdown",
            CloseReason::Replaced => "replaced",
            CloseReason::CallEnded => "call_ended",
            CloseReason::HungUp => "hung_up",
            CloseReason::RoomClosed => "room_closed",
            CloseReason::RoomFull => "room_full",
        }
    }

    fn index(self) -> usize {
        CloseReason::ALL
            .iter()
            .position(|r| *r == self)
            .unwrap_or_default()
    }

    /// How the control plane words it; `None` for a session it never saw
    /// start (negotiation failed before the answer).
    pub fn leave_reason(self) -> Option<LeaveReason> {
        Some(match self {
            CloseReason::Deleted | CloseReason::PeerClosed => LeaveReason::Left,
            CloseReason::IceFailed | CloseReason::ConnectTimeout => LeaveReason::TimedOut,
            CloseReason::NegotiationFailed => return None,
            CloseReason::PublisherGone | CloseReason::CodecChanged => LeaveReason::PublisherGone,
            CloseReason::Shutdown => LeaveReason::ServerShutdown,
            CloseReason::Replaced => LeaveReason::Replaced,
            CloseReason::CallEnded => LeaveReason::CallEnded,
            CloseReason::HungUp => LeaveReason::HungUp,
            CloseReason::RoomClosed => LeaveReason::RoomClosed,
            CloseReason::RoomFull => LeaveReason::RoomFull,
        })
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CloseReason::Deleted => "deleted",
            CloseReason::PeerClosed => "closed by peer",
            CloseReason::IceFailed => "ICE failed",
            CloseReason::ConnectTimeout => "did not connect in time",
            CloseReason::NegotiationFailed => "negotiation failed",
            CloseReason::PublisherGone => "publisher gone",
            CloseReason::CodecChanged => "publisher changed codec",
            CloseReason::Shutdown => "server shutting down",
            CloseReason::Replaced => "replaced by a new session of the same identity",
            CloseReason::CallEnded => "call ended by an admin",
            CloseReason::HungUp => "hung up by an admin",
            CloseReason::RoomClosed => "room deleted",
            CloseReason::RoomFull => "room full",
        })
    }
}

/// A session's connection in the engine: its shard and its id there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EngineConn {
    /// The shard it lives on.
    pub shard: usize,
    /// Its id on that shard.
    pub conn: ConnId,
}

/// One track a viewer's connection sends: what it carries and where the
/// engine writes it.
#[derive(Debug, Clone)]
pub struct ViewerTrack {
    /// Audio or video.
    pub kind: MediaKind,
    /// The codec negotiated for it (it can carry only this one).
    pub mime: String,
    /// Its sender in the viewer's connection.
    pub sender: RTCRtpSenderId,
    /// The SSRC it is sent with.
    pub ssrc: u32,
    /// Which simulcast layer the viewer asked for.
    pub choice: LayerChoice,
    /// The published track it is subscribed to, once it is.
    subscribed_to: Option<TrackId>,
}

impl ViewerTrack {
    /// A viewer's track, not yet subscribed.
    pub fn new(
        kind: MediaKind,
        mime: String,
        sender: RTCRtpSenderId,
        ssrc: u32,
        choice: LayerChoice,
    ) -> Self {
        ViewerTrack {
            kind,
            mime,
            sender,
            ssrc,
            choice,
            subscribed_to: None,
        }
    }
}

/// A negotiated viewer session, ready to be committed.
pub struct NewViewer {
    /// Room played.
    pub room: RoomName,
    /// Stream played.
    pub stream: StreamName,
    /// Session id.
    pub session: SessionId,
    /// Who plays it.
    pub identity: String,
    /// Its connection.
    pub conn: EngineConn,
    /// The tracks it sends, to be subscribed once it connects.
    pub tracks: Vec<ViewerTrack>,
    /// ICE session entity-tag.
    pub etag: String,
    /// Its place in the admission counters.
    pub slot: Option<SessionSlot>,
    /// Its span ([`crate::telemetry::spans`]).
    pub span: tracing::Span,
}

/// What a PATCH needs to know about a session.
pub struct SessionView {
    /// Its connection.
    pub conn: EngineConn,
    /// The current ICE session's entity-tag.
    pub etag: String,
}

/// Messages to the owner: requests (with a reply) and facts (without).
pub enum Msg {
    /// Claim `stream` for a new publisher session; with `may_replace`
    /// (the identity is authenticated) a live session of the same identity
    /// is replaced once this one commits.
    ReservePublish {
        room: RoomName,
        stream: StreamName,
        session: SessionId,
        identity: String,
        may_replace: bool,
        /// How a local publisher differs (a relay); default for WHIP.
        local: LocalOptions,
        span: tracing::Span,
        reply: Reply<Result<()>>,
    },
    /// The publisher's answer is ready and its connection is on a shard.
    CommitPublish {
        session: SessionId,
        conn: EngineConn,
        codecs: Vec<TrackCodec>,
        etag: String,
        slot: Option<SessionSlot>,
        reply: Reply<Result<()>>,
    },
    /// Negotiation failed: drop the reservation.
    Cancel { session: SessionId },
    /// The codecs of the stream's live publisher, for a viewer to match.
    PublishedCodecs {
        room: RoomName,
        stream: StreamName,
        reply: Reply<Result<Vec<TrackCodec>>>,
    },
    /// A viewer's answer is ready: it is subscribed once it connects.
    CommitPlay {
        viewer: NewViewer,
        reply: Reply<Result<()>>,
    },
    /// Look a session up.
    Lookup {
        session: SessionId,
        reply: Reply<Option<SessionView>>,
    },
    /// An ICE restart produced a new entity-tag.
    SetEtag { session: SessionId, etag: String },
    /// End a session; replies whether it existed.
    Close {
        session: SessionId,
        reason: CloseReason,
        reply: Option<Reply<bool>>,
    },
    /// What a shard reported.
    Engine(ShardEvent),
    /// Counts, for tests and diagnostics.
    Stats { reply: Reply<Stats> },
    /// Counts now and totals since the start, for metrics.
    Metrics { reply: Reply<(Stats, Totals)> },
    /// Close every session of `identity` in `room` (or of everyone, with
    /// `None`); replies how many.
    CloseParticipant {
        room: RoomName,
        identity: Option<String>,
        reason: CloseReason,
        reply: Reply<usize>,
    },
    /// End a call's media: `callee`'s sessions playing `caller`, and with
    /// `stop_caller` the caller's publisher session; replies how many.
    EndCall {
        room: RoomName,
        caller: StreamName,
        callee: String,
        stop_caller: bool,
        reply: Reply<usize>,
    },
    /// Stop or resume forwarding one track; replies whether it exists.
    Mute {
        room: RoomName,
        stream: StreamName,
        kind: MediaKind,
        muted: bool,
        reply: Reply<bool>,
    },
    /// Counters of every published stream.
    Sample { reply: Reply<Vec<StreamSample>> },
    /// Close a stream's publisher (`PeerClosed`) and viewers
    /// (`PublisherGone`) at once: a camera was removed. Replies how many.
    CloseStream {
        room: RoomName,
        stream: StreamName,
        reply: Reply<usize>,
    },
    /// How many viewer sessions a stream has.
    Viewers {
        room: RoomName,
        stream: StreamName,
        reply: Reply<usize>,
    },
    /// Close everything and stop.
    Shutdown { reply: Reply<()> },
}

/// Timings the owner enforces.
#[derive(Debug, Clone, Copy)]
pub struct Timings {
    /// How long viewers wait for a publisher to come back.
    pub republish_grace: Duration,
    /// How long a session may take to connect.
    pub connect_timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Publisher,
    Viewer,
}

impl Role {
    /// Its place in [`Totals`]' arrays ([`crate::sfu::ROLES`]).
    fn index(self) -> usize {
        match self {
            Role::Publisher => 0,
            Role::Viewer => 1,
        }
    }
}

struct Session {
    room: RoomName,
    stream: StreamName,
    identity: String,
    role: Role,
    conn: Option<EngineConn>,
    etag: String,
    created: Instant,
    connected: bool,
    /// A viewer's tracks.
    tracks: Vec<ViewerTrack>,
    /// Its place in the admission counters, given back when it ends.
    slot: Option<SessionSlot>,
    /// Its span, which ends when the session does
    /// ([`crate::telemetry::spans`]).
    span: tracing::Span,
    /// A viewer's statistics, counted by its shard.
    viewer_counters: Option<Arc<ViewerCounters>>,
    /// Plumbing (a relay): the control plane is told nothing about it.
    quiet: bool,
    /// Where keyframe requests for a local publisher's tracks go.
    keyframe_requests: Option<mpsc::UnboundedSender<()>>,
}

/// A published track of a stream: the engine's track and its codec.
#[derive(Debug, Clone)]
struct Published {
    track: TrackId,
    mime: String,
    /// The stream's current publisher sends it (`false`: its publisher
    /// left; its viewers wait on it for the next one).
    live: bool,
}

#[derive(Default)]
struct Stream {
    publisher: Option<SessionId>,
    /// A reserved session of the publisher's identity that replaces it
    /// when it commits (takeover).
    successor: Option<SessionId>,
    /// Codecs of the committed publisher; empty while nobody publishes.
    codecs: Vec<TrackCodec>,
    /// The track of each kind the viewers are (or will be) subscribed to.
    tracks: HashMap<MediaKind, Published>,
    viewers: HashSet<SessionId>,
    orphaned_since: Option<Instant>,
    /// What the current publisher sent, for alarms; new per publisher.
    counters: Arc<StreamCounters>,
}

impl Stream {
    fn is_empty(&self) -> bool {
        self.publisher.is_none() && self.successor.is_none() && self.viewers.is_empty()
    }
}

/// The owner's state.
pub struct Owner {
    rooms: HashMap<RoomName, HashMap<StreamName, Stream>>,
    sessions: HashMap<SessionId, Session>,
    /// Sessions by their engine connection, for the shards' events.
    conns: HashMap<EngineConn, SessionId>,
    engine: Arc<Engine>,
    timings: Timings,
    facts: Facts,
    totals: Totals,
}

/// Runs the owner until shutdown.
pub async fn run(
    timings: Timings,
    engine: Arc<Engine>,
    facts: Facts,
    mut inbox: mpsc::UnboundedReceiver<Msg>,
) {
    let mut owner = Owner {
        rooms: HashMap::new(),
        sessions: HashMap::new(),
        conns: HashMap::new(),
        engine,
        timings,
        facts,
        totals: Totals::default(),
    };
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            msg = inbox.recv() => match msg {
                Some(Msg::Shutdown { reply }) => {
                    owner.close_all(CloseReason::Shutdown);
                    let _ = reply.send(());
                    break;
                }
                Some(msg) => owner.handle(msg),
                // Every sender is gone (the Sfu handle was dropped).
                None => {
                    owner.close_all(CloseReason::Shutdown);
                    break;
                }
            },
            _ = tick.tick() => owner.handle_tick(Instant::now()),
        }
    }
}

impl Owner {
    fn stream_mut(&mut self, room: &RoomName, stream: &StreamName) -> Option<&mut Stream> {
        self.rooms.get_mut(room)?.get_mut(stream)
    }

    /// Handles one message. Replies are best effort: a requester that gave up
    /// (client hung up) simply drops its receiver.
    pub fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::ReservePublish {
                room,
                stream,
                session,
                identity,
                may_replace,
                local,
                span,
                reply,
            } => {
                let reserved = self.reserve_publish(
                    room,
                    stream,
                    session.clone(),
                    identity,
                    may_replace,
                    span,
                );
                if let Some(s) = self.sessions.get_mut(&session).filter(|_| reserved.is_ok()) {
                    s.quiet = local.quiet;
                    s.keyframe_requests = local.keyframe_requests;
                }
                let _ = reply.send(reserved);
            }
            Msg::CommitPublish {
                session,
                conn,
                codecs,
                etag,
                slot,
                reply,
            } => {
                let committed = self.commit_publish(&session, conn, codecs, etag, slot);
                if committed.is_err() {
                    self.engine.remove_connection(conn.shard, conn.conn);
                }
                let _ = reply.send(committed);
            }
            Msg::Cancel { session } => {
                self.close(&session, CloseReason::NegotiationFailed);
            }
            Msg::PublishedCodecs {
                room,
                stream,
                reply,
            } => {
                let _ = reply.send(self.published_codecs(&room, &stream));
            }
            Msg::CommitPlay { viewer, reply } => {
                let conn = viewer.conn;
                let committed = self.commit_play(viewer);
                if committed.is_err() {
                    self.engine.remove_connection(conn.shard, conn.conn);
                }
                let _ = reply.send(committed);
            }
            Msg::Lookup { session, reply } => {
                let view = self.sessions.get(&session).and_then(|s| {
                    s.conn.map(|conn| SessionView {
                        conn,
                        etag: s.etag.clone(),
                    })
                });
                let _ = reply.send(view);
            }
            Msg::SetEtag { session, etag } => {
                if let Some(s) = self.sessions.get_mut(&session) {
                    s.etag = etag;
                }
            }
            Msg::Close {
                session,
                reason,
                reply,
            } => {
                let existed = self.close(&session, reason);
                if let Some(reply) = reply {
                    let _ = reply.send(existed);
                }
            }
            Msg::Engine((shard, event)) => self.engine_event(shard, event),
            Msg::Stats { reply } => {
                let _ = reply.send(self.stats());
            }
            Msg::CloseStream {
                room,
                stream,
                reply,
            } => {
                let (publisher, viewers) = self
                    .rooms
                    .get(&room)
                    .and_then(|streams| streams.get(&stream))
                    .map(|st| {
                        let publisher = st.publisher.iter().chain(&st.successor).cloned();
                        (
                            publisher.collect::<Vec<_>>(),
                            st.viewers.iter().cloned().collect::<Vec<_>>(),
                        )
                    })
                    .unwrap_or_default();
                let mut closed = 0;
                for session in publisher {
                    closed += usize::from(self.close(&session, CloseReason::PeerClosed));
                }
                for session in viewers {
                    closed += usize::from(self.close(&session, CloseReason::PublisherGone));
                }
                let _ = reply.send(closed);
            }
            Msg::Viewers {
                room,
                stream,
                reply,
            } => {
                let viewers = self
                    .rooms
                    .get(&room)
                    .and_then(|streams| streams.get(&stream))
                    .map_or(0, |st| st.viewers.len());
                let _ = reply.send(viewers);
            }
            Msg::Metrics { reply } => {
                let _ = reply.send((self.stats(), self.totals.clone()));
            }
            Msg::CloseParticipant {
                room,
                identity,
                reason,
                reply,
            } => {
                let _ = reply.send(self.close_participant(&room, identity.as_deref(), reason));
            }
            Msg::EndCall {
                room,
                caller,
                callee,
                stop_caller,
                reply,
            } => {
                let closed = self.end_call(&room, &caller, &callee, stop_caller);
                let _ = reply.send(closed);
            }
            Msg::Mute {
                room,
                stream,
                kind,
                muted,
                reply,
            } => {
                let track = self
                    .stream_mut(&room, &stream)
                    .and_then(|st| st.tracks.get(&kind))
                    .filter(|p| p.live)
                    .map(|p| p.track);
                if let Some(track) = track {
                    self.engine.set_muted(track, muted);
                }
                let _ = reply.send(track.is_some());
            }
            Msg::Sample { reply } => {
                let _ = reply.send(self.sample());
            }
            Msg::Shutdown { reply } => {
                self.close_all(CloseReason::Shutdown);
                let _ = reply.send(());
            }
        }
    }

    fn reserve_publish(
        &mut self,
        room: RoomName,
        stream: StreamName,
        session: SessionId,
        identity: String,
        may_replace: bool,
        span: tracing::Span,
    ) -> Result<()> {
        let entry = self
            .rooms
            .entry(room.clone())
            .or_default()
            .entry(stream.clone())
            .or_default();
        match &entry.publisher {
            None if entry.successor.is_none() => {
                entry.publisher = Some(session.clone());
                entry.counters = Arc::default();
            }
            // Only a committed session is replaced, and by one successor at
            // a time: two POSTs racing each other still get one 409.
            Some(current)
                if may_replace
                    && entry.successor.is_none()
                    && self
                        .sessions
                        .get(current)
                        .is_some_and(|s| s.identity == identity && s.conn.is_some()) =>
            {
                entry.successor = Some(session.clone());
            }
            _ => {
                return Err(Error::AlreadyPublished {
                    room: room.to_string(),
                    stream: stream.to_string(),
                });
            }
        }
        self.sessions.insert(
            session,
            Session {
                room,
                stream,
                identity,
                role: Role::Publisher,
                conn: None,
                etag: String::new(),
                created: Instant::now(),
                connected: false,
                tracks: Vec::new(),
                slot: None,
                span,
                viewer_counters: None,
                quiet: false,
                keyframe_requests: None,
            },
        );
        Ok(())
    }

    fn commit_publish(
        &mut self,
        session: &SessionId,
        conn: EngineConn,
        codecs: Vec<TrackCodec>,
        etag: String,
        slot: Option<SessionSlot>,
    ) -> Result<()> {
        let s = self.sessions.get_mut(session).ok_or(Error::ShuttingDown)?;
        s.conn = Some(conn);
        s.etag = etag;
        s.slot = slot;
        let (room, stream, identity) = (s.room.clone(), s.stream.clone(), s.identity.clone());
        let (span, quiet) = (s.span.clone(), s.quiet);
        // A takeover: the old session ends first (its viewers wait for the
        // new tracks as on a republish), then this one becomes the publisher.
        let replaced = self
            .stream_mut(&room, &stream)
            .filter(|st| st.successor.as_ref() == Some(session))
            .and_then(|st| st.publisher.clone());
        if let Some(old) = replaced {
            tracing::info!(%room, %stream, %old, new = %session, "publisher replaced by the same identity");
            self.close(&old, CloseReason::Replaced);
        }
        let st = self
            .stream_mut(&room, &stream)
            .ok_or(Error::SessionNotFound)?;
        if st.successor.as_ref() == Some(session) {
            st.successor = None;
            st.publisher = Some(session.clone());
            st.counters = Arc::default();
        }
        st.codecs = codecs;
        st.orphaned_since = None;
        let counters = st.counters.clone();
        self.conns.insert(conn, session.clone());
        if let Some(shard) = self.engine.shards().get(conn.shard) {
            shard.count_into(conn.conn, counters);
        }
        tracing::info!(parent: &span, %room, %stream, %session, shard = conn.shard, "publisher session created");
        self.totals.started[Role::Publisher.index()] += 1;
        if !quiet {
            self.facts.session_started(
                session.as_str(),
                &room,
                &stream,
                SessionRole::Publisher,
                &identity,
            );
        }
        Ok(())
    }

    fn published_codecs(&self, room: &RoomName, stream: &StreamName) -> Result<Vec<TrackCodec>> {
        self.rooms
            .get(room)
            .and_then(|streams| streams.get(stream))
            .filter(|st| !st.codecs.is_empty())
            .map(|st| st.codecs.clone())
            .ok_or_else(|| Error::NotPublished {
                room: room.to_string(),
                stream: stream.to_string(),
            })
    }

    fn commit_play(&mut self, viewer: NewViewer) -> Result<()> {
        let NewViewer {
            room,
            stream,
            session,
            identity,
            conn,
            tracks,
            etag,
            slot,
            span,
        } = viewer;
        let not_published = || Error::NotPublished {
            room: room.to_string(),
            stream: stream.to_string(),
        };
        let st = self
            .rooms
            .get_mut(&room)
            .and_then(|streams| streams.get_mut(&stream))
            .filter(|st| !st.codecs.is_empty())
            .ok_or_else(not_published)?;
        st.viewers.insert(session.clone());
        tracing::info!(parent: &span, %room, %stream, %session, %identity, viewers = st.viewers.len(), shard = conn.shard, "viewer session created");
        if let Some(publisher) = st.publisher.as_ref().and_then(|p| self.sessions.get(p)) {
            crate::telemetry::spans::link(&span, &publisher.span);
        }
        self.totals.started[Role::Viewer.index()] += 1;
        self.facts.session_started(
            session.as_str(),
            &room,
            &stream,
            SessionRole::Viewer,
            &identity,
        );
        self.conns.insert(conn, session.clone());
        let viewer_counters = Arc::new(ViewerCounters::default());
        if let Some(shard) = self.engine.shards().get(conn.shard) {
            shard.count_viewer_into(conn.conn, viewer_counters.clone());
        }
        self.sessions.insert(
            session,
            Session {
                room,
                stream,
                identity,
                role: Role::Viewer,
                conn: Some(conn),
                etag,
                created: Instant::now(),
                connected: false,
                tracks,
                slot,
                span,
                viewer_counters: Some(viewer_counters),
                quiet: false,
                keyframe_requests: None,
            },
        );
        Ok(())
    }

    /// What a shard reported.
    fn engine_event(&mut self, shard: usize, event: Event) {
        let session = |conn: ConnId| EngineConn { shard, conn };
        match event {
            Event::Connected(conn) => {
                if let Some(id) = self.conns.get(&session(conn)).cloned() {
                    self.connected(&id);
                }
            }
            Event::IceConnected(conn) => {
                if let Some(s) = self
                    .conns
                    .get(&session(conn))
                    .and_then(|id| self.sessions.get(id))
                {
                    tracing::info!(parent: &s.span, "ICE connected");
                }
            }
            Event::Closed(conn) => {
                if let Some(id) = self.conns.get(&session(conn)).cloned() {
                    self.close(&id, CloseReason::PeerClosed);
                }
            }
            Event::Failed(conn) => {
                if let Some(id) = self.conns.get(&session(conn)).cloned() {
                    self.close(&id, CloseReason::IceFailed);
                }
            }
            Event::KeyframeRequest { source, .. } => {
                // A relay's tracks are asked at their origin (the relay
                // sends the PLI); the engine cannot reach that publisher.
                let relay = self
                    .conns
                    .get(&EngineConn {
                        shard: source.shard,
                        conn: source.conn,
                    })
                    .and_then(|id| self.sessions.get(id))
                    .and_then(|s| s.keyframe_requests.as_ref());
                match relay {
                    // A relay that is going away has no one to ask.
                    Some(requests) => drop(requests.send(())),
                    None => self.engine.request_keyframe(source),
                }
            }
            Event::Track(track) => self.track_started(track),
        }
    }

    /// ICE and DTLS are up: a viewer is subscribed to what is published.
    fn connected(&mut self, session: &SessionId) {
        let Some(s) = self.sessions.get_mut(session) else {
            return;
        };
        s.connected = true;
        if let Some(slot) = &mut s.slot {
            slot.connected();
        }
        if !s.quiet {
            self.facts.session_connected(session.as_str());
        }
        tracing::info!(parent: &s.span, %session, "DTLS up: session connected");
        if s.role == Role::Viewer {
            self.subscribe_pending(session);
        }
    }

    /// Subscribes a connected viewer's tracks that are not yet to the
    /// stream's live tracks of their kind.
    fn subscribe_pending(&mut self, session: &SessionId) {
        let Some(s) = self.sessions.get(session) else {
            return;
        };
        let Some(conn) = s.conn.filter(|_| s.connected) else {
            return;
        };
        let (room, stream) = (s.room.clone(), s.stream.clone());
        let Some(published) = self
            .rooms
            .get(&room)
            .and_then(|streams| streams.get(&stream))
            .map(|st| st.tracks.clone())
        else {
            return;
        };
        let mut incompatible = false;
        let Some(s) = self.sessions.get_mut(session) else {
            return;
        };
        for track in &mut s.tracks {
            let Some(p) = published.get(&track.kind).filter(|p| p.live) else {
                continue;
            };
            if track.subscribed_to.is_some() {
                continue;
            }
            if !track.mime.eq_ignore_ascii_case(&p.mime) {
                incompatible = true;
                continue;
            }
            track.subscribed_to = Some(p.track);
            self.engine.subscribe_now(
                p.track,
                conn.shard,
                conn.conn,
                track.sender,
                track.ssrc,
                track.choice.clone(),
            );
        }
        if incompatible {
            self.close(session, CloseReason::CodecChanged);
        }
    }

    /// A publisher's stream started (a track's first packet, or a further
    /// simulcast layer of it).
    fn track_started(&mut self, started: PublishedTrack) {
        let owner = EngineConn {
            shard: started.track.shard,
            conn: started.track.conn,
        };
        let Some(session) = self.conns.get(&owner).cloned() else {
            return;
        };
        let Some(s) = self.sessions.get(&session) else {
            return;
        };
        if s.role != Role::Publisher {
            return;
        }
        let (room, stream) = (s.room.clone(), s.stream.clone());
        let (span, quiet) = (s.span.clone(), s.quiet);
        let Some(st) = self.stream_mut(&room, &stream) else {
            return;
        };
        if st.publisher.as_ref() != Some(&session) {
            return;
        }
        let kind = started.kind;
        if st
            .tracks
            .get(&kind)
            .is_some_and(|p| p.track == started.track && p.live)
        {
            return; // another layer of a track already forwarded
        }
        let previous = st.tracks.insert(
            kind,
            Published {
                track: started.track,
                mime: started.mime.clone(),
                live: true,
            },
        );
        let viewers: Vec<SessionId> = st.viewers.iter().cloned().collect();
        tracing::info!(parent: &span, %room, %stream, %session, ?kind, mime = %started.mime, "first packet: forwarding track");
        if !quiet {
            self.facts
                .track_published(session.as_str(), kind.into(), &started.mime);
        }

        // Viewers that played the previous publisher's track move onto this
        // one (same codec) or are closed (another codec); the others are
        // subscribed once connected.
        let mut moved_shards: Vec<usize> = Vec::new();
        let mut incompatible = Vec::new();
        for viewer in &viewers {
            let Some(v) = self.sessions.get_mut(viewer) else {
                continue;
            };
            let shard = v.conn.map(|c| c.shard);
            for track in v.tracks.iter_mut().filter(|t| t.kind == kind) {
                if !track.mime.eq_ignore_ascii_case(&started.mime) {
                    incompatible.push(viewer.clone());
                } else if previous
                    .as_ref()
                    .is_some_and(|p| track.subscribed_to == Some(p.track))
                {
                    track.subscribed_to = Some(started.track);
                    if let Some(shard) = shard.filter(|s| !moved_shards.contains(s)) {
                        moved_shards.push(shard);
                    }
                }
            }
        }
        for viewer in incompatible {
            self.close(&viewer, CloseReason::CodecChanged);
        }
        if let Some(old) = previous.filter(|_| !moved_shards.is_empty()) {
            // In order with the subscriptions sent before, shard by shard.
            self.engine
                .move_viewers_now(old.track, started.track, &moved_shards);
        }
        for viewer in &viewers {
            self.subscribe_pending(viewer);
        }
    }

    /// Ends a session. Returns whether it existed.
    fn close(&mut self, session: &SessionId, reason: CloseReason) -> bool {
        let Some(s) = self.sessions.remove(session) else {
            return false;
        };
        s.span.record("vigil.close_reason", reason.label());
        tracing::info!(parent: &s.span, room = %s.room, stream = %s.stream, %session, %reason, role = ?s.role, "session closed");
        self.totals.closed[s.role.index()][reason.index()] += 1;
        if let Some(conn) = s.conn {
            // Only a committed session (it has a connection) was reported
            // as started, and a quiet one not at all.
            if let Some(leave) = reason.leave_reason().filter(|_| !s.quiet) {
                self.facts.session_ended(session.as_str(), leave);
            }
            self.conns.remove(&conn);
            self.engine.remove_connection(conn.shard, conn.conn);
        }
        let now = Instant::now();
        if let Some(st) = self.stream_mut(&s.room, &s.stream) {
            match s.role {
                Role::Publisher => {
                    if st.successor.as_ref() == Some(session) {
                        st.successor = None;
                    } else if st.publisher.as_ref() == Some(session) {
                        st.publisher = None;
                        st.codecs.clear();
                        st.orphaned_since = Some(now);
                        for published in st.tracks.values_mut() {
                            published.live = false;
                        }
                    }
                }
                Role::Viewer => {
                    st.viewers.remove(session);
                }
            }
            if st.viewers.is_empty() && st.publisher.is_none() {
                st.tracks.clear();
            }
        }
        self.drop_if_empty(&s.room, &s.stream);
        true
    }

    fn drop_if_empty(&mut self, room: &RoomName, stream: &StreamName) {
        if let Some(streams) = self.rooms.get_mut(room) {
            if streams.get(stream).is_some_and(Stream::is_empty) {
                streams.remove(stream);
            }
            if streams.is_empty() {
                self.rooms.remove(room);
            }
        }
    }

    /// Reaps sessions that never connected and viewers whose publisher did
    /// not come back.
    pub fn handle_tick(&mut self, now: Instant) {
        let connect_timeout = self.timings.connect_timeout;
        let stale: Vec<_> = self
            .sessions
            .iter()
            .filter(|(_, s)| {
                s.conn.is_some()
                    && !s.connected
                    && now.saturating_duration_since(s.created) > connect_timeout
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in stale {
            self.close(&id, CloseReason::ConnectTimeout);
        }

        let grace = self.timings.republish_grace;
        let abandoned: Vec<_> = self
            .rooms
            .values()
            .flat_map(|streams| streams.values())
            .filter(|st| {
                st.publisher.is_none()
                    && st
                        .orphaned_since
                        .is_some_and(|since| now.saturating_duration_since(since) > grace)
            })
            .flat_map(|st| st.viewers.iter().cloned())
            .collect();
        for id in abandoned {
            self.close(&id, CloseReason::PublisherGone);
        }
    }

    fn close_all(&mut self, reason: CloseReason) {
        let all: Vec<_> = self.sessions.keys().cloned().collect();
        for id in all {
            self.close(&id, reason);
        }
    }

    /// Closes every session of `identity` in `room`, or every session in it.
    fn close_participant(
        &mut self,
        room: &RoomName,
        identity: Option<&str>,
        reason: CloseReason,
    ) -> usize {
        let matching: Vec<_> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.room == *room && identity.is_none_or(|id| s.identity == id))
            .map(|(id, s)| (id.clone(), s.quiet))
            .collect();
        for (id, _) in &matching {
            self.close(id, reason);
        }
        // A relay's session closes with its room but is nobody's: not
        // counted among the participants' sessions.
        matching.iter().filter(|(_, quiet)| !quiet).count()
    }

    fn end_call(
        &mut self,
        room: &RoomName,
        caller: &StreamName,
        callee: &str,
        stop_caller: bool,
    ) -> usize {
        let matching: Vec<_> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.room == *room && s.stream == *caller)
            .filter(|(_, s)| match s.role {
                Role::Viewer => s.identity == callee,
                // A relay of the caller's stream ends with the stream at
                // its origin, not here.
                Role::Publisher => stop_caller && !s.quiet,
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in &matching {
            self.close(id, CloseReason::CallEnded);
        }
        matching.len()
    }

    /// Counters of every stream that has a committed publisher.
    fn sample(&self) -> Vec<StreamSample> {
        self.rooms
            .iter()
            .flat_map(|(room, streams)| {
                streams
                    .iter()
                    .filter(|(_, st)| !st.codecs.is_empty())
                    // A relayed stream's alarms are the origin's to raise.
                    .filter(|(_, st)| {
                        !st.publisher
                            .as_ref()
                            .and_then(|p| self.sessions.get(p))
                            .is_some_and(|s| s.quiet)
                    })
                    .map(move |(stream, st)| StreamSample {
                        room: room.clone(),
                        stream: stream.clone(),
                        counters: st
                            .counters
                            .snapshot(st.codecs.iter().any(|c| c.kind == RtpCodecKind::Video)),
                        tracks: st.counters.tracks(|kind| {
                            let kind = match kind {
                                TrackKind::Audio => RtpCodecKind::Audio,
                                TrackKind::Video => RtpCodecKind::Video,
                            };
                            st.codecs
                                .iter()
                                .find(|c| c.kind == kind)
                                .map(|c| c.params.rtp_codec.mime_type.clone())
                        }),
                        viewers: self.viewer_samples(st),
                    })
            })
            .collect()
    }

    /// The statistics of `st`'s viewers, by identity.
    fn viewer_samples(&self, st: &Stream) -> Vec<ViewerSample> {
        let mut viewers: Vec<ViewerSample> = st
            .viewers
            .iter()
            .filter_map(|id| self.sessions.get(id))
            .filter_map(|s| {
                let conn = s.conn?;
                Some(ViewerSample {
                    key: (conn.shard as u64) << 32 | u64::from(conn.conn.index()),
                    identity: s.identity.clone(),
                    tracks: s.viewer_counters.as_ref()?.snapshot(),
                })
            })
            .collect();
        viewers.sort_by(|a, b| (&a.identity, a.key).cmp(&(&b.identity, b.key)));
        viewers
    }

    fn stats(&self) -> Stats {
        let publishers = self
            .sessions
            .values()
            .filter(|s| s.role == Role::Publisher)
            .count();
        let forwarded = self
            .rooms
            .values()
            .flat_map(|streams| streams.values())
            .map(|st| st.tracks.values().filter(|p| p.live).count())
            .sum();
        let subscribed = self
            .sessions
            .values()
            .flat_map(|s| &s.tracks)
            .filter(|t| t.subscribed_to.is_some())
            .count();
        Stats {
            rooms: self.rooms.len(),
            streams: self.rooms.values().map(HashMap::len).sum(),
            publishers,
            viewers: self.sessions.len() - publishers,
            forwarders: forwarded,
            viewer_writers: subscribed,
        }
    }
}
