//! The room owner: the single task that holds every room's state.
//!
//! HTTP handlers and webrtc callbacks never touch this state; they send a
//! [`Msg`] and, for requests, await a oneshot reply. Everything that can be
//! slow — building peer connections, gathering candidates, closing DTLS — is
//! done outside, so each message is handled in microseconds and the owner
//! never awaits anything but its inbox.
//!
//! Lifecycle of a session:
//! 1. *reserved*: a WHIP POST claimed the stream (a second one gets 409)
//!    while its peer connection is negotiated outside;
//! 2. *committed*: the answer is out and the session resource exists;
//! 3. *connected*: ICE and DTLS are up (a session that does not get there
//!    within `connect_timeout` is reaped);
//! 4. *closed*: by DELETE, by the peer (DTLS close), by ICE failure or
//!    consent expiry, by the publisher leaving for good, or at shutdown.
//!    Its peer connection is closed, its forwarder entries removed, and an
//!    empty stream or room is dropped.
//!
//! When a publisher goes away its viewers stay connected for
//! `republish_grace`: a new publisher of the same stream (with the same
//! codec) is spliced into their existing tracks with continuous numbering;
//! when the grace runs out they are closed.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use vigil_control::{RoomName, StreamName};
use webrtc::media_stream::track_remote::TrackRemote;
use webrtc::peer_connection::RTCPeerConnectionState;

use crate::error::{Error, Result};
use crate::sfu::codecs::TrackCodec;
use crate::sfu::forwarder::StreamCounters;
use crate::sfu::forwarder::{
    self, ForwarderCommand, ForwarderHandle, ForwarderSpec, ViewerFeedback, ViewerSink,
};
use crate::sfu::keyframe::VideoCodec;
use crate::sfu::peer::Peer;
use crate::sfu::{Gauges, MediaKind, SessionId, Stats};
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use vigil_control::Facts;
use vigil_control::event::{LeaveReason, SessionRole};
use vigil_control::media::StreamSample;

/// A reply channel.
pub type Reply<T> = oneshot::Sender<T>;

/// A published track, described once by the callback that saw it.
pub struct NewTrack {
    /// The track.
    pub track: Arc<dyn TrackRemote>,
    /// Audio or video.
    pub kind: MediaKind,
    /// The publisher's SSRC.
    pub ssrc: u32,
    /// The negotiated codec's mime type.
    pub mime: String,
}

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
    /// An admin hung up the participant.
    HungUp,
    /// The room was deleted.
    RoomClosed,
}

impl CloseReason {
    /// How the control plane words it; `None` for a session it never saw
    /// start (negotiation failed before the answer).
    pub fn leave_reason(self) -> Option<LeaveReason> {
        Some(match self {
            CloseReason::Deleted | CloseReason::PeerClosed => LeaveReason::Left,
            CloseReason::IceFailed | CloseReason::ConnectTimeout => LeaveReason::TimedOut,
            CloseReason::NegotiationFailed => return None,
            CloseReason::PublisherGone | CloseReason::CodecChanged => LeaveReason::PublisherGone,
            CloseReason::Shutdown => LeaveReason::ServerShutdown,
            CloseReason::HungUp => LeaveReason::HungUp,
            CloseReason::RoomClosed => LeaveReason::RoomClosed,
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
            CloseReason::HungUp => "hung up by an admin",
            CloseReason::RoomClosed => "room deleted",
        })
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
    pub peer: Arc<Peer>,
    /// One sink per track, for the forwarders.
    pub sinks: Vec<ViewerSink>,
    /// ICE session entity-tag.
    pub etag: String,
}

/// What a PATCH needs to know about a session.
pub struct SessionView {
    /// Its peer connection.
    pub peer: Arc<Peer>,
    /// The current ICE session's entity-tag.
    pub etag: String,
}

/// Messages to the owner: requests (with a reply) and facts (without).
pub enum Msg {
    /// Claim `stream` for a new publisher session.
    ReservePublish {
        room: RoomName,
        stream: StreamName,
        session: SessionId,
        identity: String,
        reply: Reply<Result<()>>,
    },
    /// The publisher's answer is ready.
    CommitPublish {
        session: SessionId,
        peer: Arc<Peer>,
        codecs: Vec<TrackCodec>,
        etag: String,
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
    /// A viewer's answer is ready: its sinks attach once it connects.
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
    /// A viewer's RTCP about its `kind` track (PLI/FIR, loss).
    ViewerFeedback {
        session: SessionId,
        kind: MediaKind,
        feedback: ViewerFeedback,
    },
    /// A peer connection changed state.
    PeerState {
        session: SessionId,
        state: RTCPeerConnectionState,
    },
    /// A publisher's track started.
    Track { session: SessionId, track: NewTrack },
    /// A forwarder ended and hands back its viewers.
    ForwarderEnded {
        room: RoomName,
        stream: StreamName,
        publisher: SessionId,
        kind: MediaKind,
        sinks: Vec<ViewerSink>,
    },
    /// Counts, for tests and diagnostics.
    Stats { reply: Reply<Stats> },
    /// Close every session of `identity` in `room` (or of everyone, with
    /// `None`); replies how many.
    CloseParticipant {
        room: RoomName,
        identity: Option<String>,
        reason: CloseReason,
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
    /// Close everything and stop.
    Shutdown { reply: Reply<()> },
}

impl Msg {
    /// The message a forwarder sends when its track ends, still to be given its sinks.
    fn forwarder_ended(
        room: RoomName,
        stream: StreamName,
        publisher: SessionId,
        kind: MediaKind,
    ) -> impl FnOnce(Vec<ViewerSink>) -> Msg + Send {
        move |sinks| Msg::ForwarderEnded {
            room,
            stream,
            publisher,
            kind,
            sinks,
        }
    }
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

struct Session {
    room: RoomName,
    stream: StreamName,
    identity: String,
    role: Role,
    peer: Option<Arc<Peer>>,
    etag: String,
    created: Instant,
    connected: bool,
    /// A viewer's sinks, attached once it connects: packets written before
    /// DTLS is up would be dropped, and the keyframe with them.
    pending_sinks: Vec<ViewerSink>,
}

#[derive(Default)]
struct Stream {
    publisher: Option<SessionId>,
    /// Codecs of the committed publisher; empty while nobody publishes.
    codecs: Vec<TrackCodec>,
    forwarders: HashMap<MediaKind, (SessionId, ForwarderHandle)>,
    /// Viewers' sinks waiting for a publisher's track.
    parked: Vec<ViewerSink>,
    viewers: HashSet<SessionId>,
    orphaned_since: Option<Instant>,
    /// What the current publisher sent, for alarms; new per publisher.
    counters: Arc<StreamCounters>,
}

impl Stream {
    fn is_empty(&self) -> bool {
        self.publisher.is_none() && self.viewers.is_empty()
    }
}

/// The owner's state.
pub struct Owner {
    rooms: HashMap<RoomName, HashMap<StreamName, Stream>>,
    sessions: HashMap<SessionId, Session>,
    inbox: mpsc::UnboundedSender<Msg>,
    timings: Timings,
    gauges: Gauges,
    facts: Facts,
}

/// Runs the owner until shutdown.
pub async fn run(
    timings: Timings,
    gauges: Gauges,
    facts: Facts,
    inbox_tx: mpsc::UnboundedSender<Msg>,
    mut inbox: mpsc::UnboundedReceiver<Msg>,
) {
    let mut owner = Owner {
        rooms: HashMap::new(),
        sessions: HashMap::new(),
        inbox: inbox_tx,
        timings,
        gauges,
        facts,
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
                // Every sender is gone (the Sfu handle and all peers were dropped).
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
                reply,
            } => {
                let _ = reply.send(self.reserve_publish(room, stream, session, identity));
            }
            Msg::CommitPublish {
                session,
                peer,
                codecs,
                etag,
                reply,
            } => {
                let _ = reply.send(self.commit_publish(&session, peer, codecs, etag));
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
                let _ = reply.send(self.commit_play(viewer));
            }
            Msg::Lookup { session, reply } => {
                let view = self.sessions.get(&session).and_then(|s| {
                    s.peer.as_ref().map(|peer| SessionView {
                        peer: peer.clone(),
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
            Msg::ViewerFeedback {
                session,
                kind,
                feedback,
            } => {
                if let Some(s) = self.sessions.get(&session) {
                    let (room, stream) = (s.room.clone(), s.stream.clone());
                    if let Some((_, fwd)) = self
                        .stream_mut(&room, &stream)
                        .and_then(|st| st.forwarders.get(&kind))
                    {
                        fwd.send(ForwarderCommand::Feedback(session, feedback));
                    }
                }
            }
            Msg::PeerState { session, state } => self.peer_state(&session, state),
            Msg::Track { session, track } => self.track_started(session, track),
            Msg::ForwarderEnded {
                room,
                stream,
                publisher,
                kind,
                sinks,
            } => self.forwarder_ended(room, stream, publisher, kind, sinks),
            Msg::Stats { reply } => {
                let _ = reply.send(self.stats());
            }
            Msg::CloseParticipant {
                room,
                identity,
                reason,
                reply,
            } => {
                let _ = reply.send(self.close_participant(&room, identity.as_deref(), reason));
            }
            Msg::Mute {
                room,
                stream,
                kind,
                muted,
                reply,
            } => {
                let found = self
                    .stream_mut(&room, &stream)
                    .and_then(|st| st.forwarders.get(&kind))
                    .map(|(_, fwd)| fwd.send(ForwarderCommand::SetMuted(muted)))
                    .is_some();
                let _ = reply.send(found);
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
    ) -> Result<()> {
        let entry = self
            .rooms
            .entry(room.clone())
            .or_default()
            .entry(stream.clone())
            .or_default();
        if entry.publisher.is_some() {
            return Err(Error::AlreadyPublished {
                room: room.to_string(),
                stream: stream.to_string(),
            });
        }
        entry.publisher = Some(session.clone());
        entry.counters = Arc::default();
        self.sessions.insert(
            session,
            Session {
                room,
                stream,
                identity,
                role: Role::Publisher,
                peer: None,
                etag: String::new(),
                created: Instant::now(),
                connected: false,
                pending_sinks: Vec::new(),
            },
        );
        Ok(())
    }

    fn commit_publish(
        &mut self,
        session: &SessionId,
        peer: Arc<Peer>,
        codecs: Vec<TrackCodec>,
        etag: String,
    ) -> Result<()> {
        let s = self.sessions.get_mut(session).ok_or(Error::ShuttingDown)?;
        s.peer = Some(peer);
        s.etag = etag;
        let (room, stream) = (s.room.clone(), s.stream.clone());
        let st = self
            .stream_mut(&room, &stream)
            .ok_or(Error::SessionNotFound)?;
        st.codecs = codecs;
        st.orphaned_since = None;
        tracing::info!(%room, %stream, %session, "publisher session created");
        let identity = self
            .sessions
            .get(session)
            .map(|s| s.identity.clone())
            .unwrap_or_default();
        self.facts.session_started(
            session.as_str(),
            &room,
            &stream,
            SessionRole::Publisher,
            &identity,
        );
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
            peer,
            sinks,
            etag,
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
        tracing::info!(%room, %stream, %session, %identity, viewers = st.viewers.len(), "viewer session created");
        self.facts.session_started(
            session.as_str(),
            &room,
            &stream,
            SessionRole::Viewer,
            &identity,
        );
        self.sessions.insert(
            session,
            Session {
                room,
                stream,
                identity,
                role: Role::Viewer,
                peer: Some(peer),
                etag,
                created: Instant::now(),
                connected: false,
                pending_sinks: sinks,
            },
        );
        Ok(())
    }

    fn peer_state(&mut self, session: &SessionId, state: RTCPeerConnectionState) {
        match state {
            RTCPeerConnectionState::Connected => {
                let Some(s) = self.sessions.get_mut(session) else {
                    return;
                };
                s.connected = true;
                tracing::debug!(%session, "connected");
                let sinks = std::mem::take(&mut s.pending_sinks);
                let (room, stream) = (s.room.clone(), s.stream.clone());
                if let Some(st) = self.stream_mut(&room, &stream) {
                    for sink in sinks {
                        match st.forwarders.get(&sink.kind()) {
                            Some((_, fwd)) => fwd.send(ForwarderCommand::AddSink(sink)),
                            None => st.parked.push(sink),
                        }
                    }
                }
            }
            RTCPeerConnectionState::Failed => {
                self.close(session, CloseReason::IceFailed);
            }
            RTCPeerConnectionState::Closed => {
                self.close(session, CloseReason::PeerClosed);
            }
            _ => {}
        }
    }

    fn track_started(&mut self, session: SessionId, new: NewTrack) {
        let Some(s) = self.sessions.get(&session) else {
            return;
        };
        if s.role != Role::Publisher {
            return;
        }
        let (room, stream) = (s.room.clone(), s.stream.clone());
        let inbox = self.inbox.clone();
        let gauge = self.gauges.forwarders.clone();
        let Some(st) = self.stream_mut(&room, &stream) else {
            return;
        };
        let (waiting, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut st.parked)
            .into_iter()
            .partition(|sink| sink.kind() == new.kind);
        st.parked = rest;
        let (compatible, incompatible): (Vec<_>, Vec<_>) = waiting
            .into_iter()
            .partition(|sink| sink.accepts(&new.mime));
        let ended = Msg::forwarder_ended(room.clone(), stream.clone(), session.clone(), new.kind);
        let handle = forwarder::spawn(ForwarderSpec {
            track: new.track,
            video: VideoCodec::from_mime(&new.mime),
            media_ssrc: new.ssrc,
            sinks: compatible,
            counters: st.counters.clone(),
            on_end: Box::new(move |sinks| {
                // The owner is gone only at shutdown; then the sinks die with it.
                let _ = inbox.send(ended(sinks));
            }),
            gauge,
        });
        st.forwarders.insert(new.kind, (session.clone(), handle));
        tracing::info!(%room, %stream, %session, kind = ?new.kind, mime = %new.mime, "forwarding track");
        self.facts
            .track_published(session.as_str(), new.kind.into(), &new.mime);
        for sink in incompatible {
            let viewer = sink.session().clone();
            self.close(&viewer, CloseReason::CodecChanged);
        }
    }

    fn forwarder_ended(
        &mut self,
        room: RoomName,
        stream: StreamName,
        publisher: SessionId,
        kind: MediaKind,
        sinks: Vec<ViewerSink>,
    ) {
        let live: Vec<_> = sinks
            .into_iter()
            .filter(|sink| self.sessions.contains_key(sink.session()))
            .collect();
        let Some(st) = self.stream_mut(&room, &stream) else {
            return;
        };
        if st
            .forwarders
            .get(&kind)
            .is_some_and(|(p, _)| *p == publisher)
        {
            st.forwarders.remove(&kind);
        }
        for sink in live {
            match st.forwarders.get(&kind) {
                // A new publisher's track is already running: move over.
                Some((_, fwd)) => fwd.send(ForwarderCommand::AddSink(sink)),
                None => st.parked.push(sink),
            }
        }
    }

    /// Ends a session. Returns whether it existed.
    fn close(&mut self, session: &SessionId, reason: CloseReason) -> bool {
        let Some(s) = self.sessions.remove(session) else {
            return false;
        };
        tracing::info!(room = %s.room, stream = %s.stream, %session, %reason, role = ?s.role, "session closed");
        if let Some(peer) = s.peer {
            // Only a committed session (it has a peer) was reported as started.
            if let Some(leave) = reason.leave_reason() {
                self.facts.session_ended(session.as_str(), leave);
            }
            tokio::spawn(async move { peer.close().await });
        }
        let now = Instant::now();
        if let Some(st) = self.stream_mut(&s.room, &s.stream) {
            match s.role {
                Role::Publisher => {
                    if st.publisher.as_ref() == Some(session) {
                        st.publisher = None;
                        st.codecs.clear();
                        st.orphaned_since = Some(now);
                    }
                }
                Role::Viewer => {
                    st.viewers.remove(session);
                    st.parked.retain(|sink| sink.session() != session);
                    for (_, fwd) in st.forwarders.values() {
                        fwd.send(ForwarderCommand::RemoveSink(session.clone()));
                    }
                }
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
                s.peer.is_some()
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
            .map(|(id, _)| id.clone())
            .collect();
        for id in &matching {
            self.close(id, reason);
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
                    .map(move |(stream, st)| StreamSample {
                        room: room.clone(),
                        stream: stream.clone(),
                        counters: st
                            .counters
                            .snapshot(st.codecs.iter().any(|c| c.kind == RtpCodecKind::Video)),
                    })
            })
            .collect()
    }

    fn stats(&self) -> Stats {
        let publishers = self
            .sessions
            .values()
            .filter(|s| s.role == Role::Publisher)
            .count();
        Stats {
            rooms: self.rooms.len(),
            streams: self.rooms.values().map(HashMap::len).sum(),
            publishers,
            viewers: self.sessions.len() - publishers,
            forwarders: self.gauges.forwarders.get(),
            viewer_writers: self.gauges.writers.get(),
        }
    }
}
