//! The selective forwarding core.
//!
//! [`Sfu`] is the cloneable handle the HTTP layer uses. It negotiates each
//! session's connection itself (an answer from the offer, on the media
//! engine's next shard: [`crate::engine`]) and tells the room owner
//! ([`registry`]) what happened; the owner holds all room and session state
//! and is the only code that changes it. Media never passes through the
//! owner: it tells the engine which viewer gets which track, and the
//! engine's shards forward.
//!
//! Panic policy: nothing here panics on anything a client sends; a panic is
//! a bug.

pub mod answer;
pub mod codecs;
pub(crate) mod ice;
pub mod keyframe;
pub mod keyframe_cache;
pub mod layers;
pub mod local;
pub mod media_plane;
pub mod picture_size;
pub mod reception;
pub mod registry;
pub mod rewrite;
pub mod rtcp;
pub mod stream_counters;

use crate::admission::SessionSlot;
use std::fmt;
use std::sync::Arc;

use std::time::Instant;

use rtc::media_stream::MediaStreamTrack;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodingParameters, RTCRtpEncodingParameters, RTCRtpRtxParameters, RtpCodecKind,
};
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument as _;
use vigil_control::Facts;
use vigil_control::{RoomName, StreamName};

use crate::config::Config;
use crate::engine::session::{self, SessionOptions};
use crate::engine::shards::Engine;
use crate::error::{Error, Result};
use crate::http::sdpfrag::SdpFrag;
use crate::sfu::codecs::TrackCodec;
use crate::sfu::layers::LayerChoice;
use crate::sfu::registry::{CloseReason, EngineConn, Msg, NewViewer, Timings, ViewerTrack};

/// An unguessable session id (128 random bits, hex), used in the session URL.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SessionId(Arc<str>);

impl SessionId {
    fn random() -> Self {
        let bytes: [u8; 16] = rand::random();
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        SessionId(hex.into())
    }

    /// Accepts only ids of the shape we issue, so junk never reaches the owner.
    pub fn parse(s: &str) -> Option<Self> {
        (s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| SessionId(s.to_ascii_lowercase().into()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Audio or video: the two kinds of track a session carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MediaKind {
    /// Audio.
    Audio,
    /// Video.
    Video,
}

impl MediaKind {
    fn of(kind: RtpCodecKind) -> Option<Self> {
        match kind {
            RtpCodecKind::Audio => Some(MediaKind::Audio),
            RtpCodecKind::Video => Some(MediaKind::Video),
            _ => None,
        }
    }
}

impl From<MediaKind> for vigil_control::event::TrackKind {
    fn from(kind: MediaKind) -> Self {
        match kind {
            MediaKind::Audio => vigil_control::event::TrackKind::Audio,
            MediaKind::Video => vigil_control::event::TrackKind::Video,
        }
    }
}

impl From<vigil_control::event::TrackKind> for MediaKind {
    fn from(kind: vigil_control::event::TrackKind) -> Self {
        match kind {
            vigil_control::event::TrackKind::Audio => MediaKind::Audio,
            vigil_control::event::TrackKind::Video => MediaKind::Video,
        }
    }
}

/// A snapshot of what the SFU holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Rooms with at least one stream.
    pub rooms: usize,
    /// Streams with a publisher or viewers.
    pub streams: usize,
    /// Publisher sessions (including ones still negotiating).
    pub publishers: usize,
    /// Viewer sessions.
    pub viewers: usize,
    /// Published tracks being forwarded.
    pub forwarders: usize,
    /// Viewer tracks subscribed to a published track.
    pub viewer_writers: usize,
}

/// The roles of [`Totals`]' arrays, as metric labels.
pub const ROLES: [&str; 2] = ["publisher", "viewer"];

/// Sessions started and ended since the start, for metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Totals {
    /// Sessions committed (the 201 sent), by role ([`ROLES`]).
    pub started: [u64; 2],
    /// Sessions ended, by role ([`ROLES`]) and reason
    /// ([`registry::CloseReason::ALL`]'s order).
    pub closed: [[u64; registry::CloseReason::ALL.len()]; 2],
}

/// A session the POST created.
#[derive(Debug)]
pub struct Created {
    /// The session id (the last segment of its URL).
    pub session: SessionId,
    /// The SDP answer.
    pub answer: String,
    /// Entity-tag of the ICE session.
    pub etag: String,
}

/// What a PATCH did.
#[derive(Debug)]
pub enum PatchOutcome {
    /// Candidates were added (204).
    Trickled,
    /// ICE restarted (200 with this fragment and entity-tag).
    Restarted {
        /// The answer fragment (new ufrag, pwd, candidates).
        fragment: String,
        /// The new entity-tag.
        etag: String,
    },
}

/// Handle to the forwarding core.
#[derive(Clone)]
pub struct Sfu {
    owner: mpsc::UnboundedSender<Msg>,
    engine: Arc<Engine>,
    options: Arc<SessionOptions>,
}

impl Sfu {
    /// Starts the media engine on `config.media_listen` (a shard per
    /// `config.media_threads`) and the room owner.
    pub fn start(config: &Config, facts: Facts) -> std::io::Result<Sfu> {
        let (engine, mut events) =
            Engine::start(config.media_listen, config.media_threads, config.ice_tcp)?;
        let engine = Arc::new(engine);
        let (tx, rx) = mpsc::unbounded_channel();
        let timings = Timings {
            republish_grace: config.republish_grace,
            connect_timeout: config.connect_timeout,
        };
        tokio::spawn(registry::run(timings, engine.clone(), facts, rx));
        let owner = tx.clone();
        tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                if owner.send(Msg::Engine(event)).is_err() {
                    break; // the owner stopped: shutdown
                }
            }
        });
        let mut advertise = config.advertise_ips.clone();
        if advertise.is_empty() && config.media_listen.ip().is_unspecified() {
            tracing::warn!(
                listen = %config.media_listen,
                "media listens on every address but none is advertised (--advertise-ip): answers will offer an unusable candidate"
            );
        }
        advertise.dedup();
        Ok(Sfu {
            owner: tx,
            engine,
            options: Arc::new(SessionOptions {
                advertise,
                receive: Vec::new(),
                ice_timeouts: Some((config.ice_disconnected_timeout, config.ice_failed_timeout)),
                ice_tcp: config.ice_tcp,
            }),
        })
    }

    /// The address of each media shard (one UDP port each).
    pub fn media_addrs(&self) -> Vec<std::net::SocketAddr> {
        self.engine
            .shards()
            .iter()
            .map(|s| s.local_addr())
            .collect()
    }

    /// ICE-TCP frames the media shards have received and queued to send,
    /// in all.
    pub fn ice_tcp_frames(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        self.engine.shards().iter().fold((0, 0), |(i, o), shard| {
            let stats = shard.io_stats();
            (
                i + stats.tcp_frames_in.load(Relaxed),
                o + stats.tcp_frames_out.load(Relaxed),
            )
        })
    }

    /// ICE-TCP connections the media shards hold open, in all.
    pub fn ice_tcp_connections(&self) -> u64 {
        use std::sync::atomic::Ordering::Relaxed;
        self.engine
            .shards()
            .iter()
            .map(|shard| {
                let stats = shard.io_stats();
                stats.tcp_accepted.load(Relaxed) - stats.tcp_closed.load(Relaxed)
            })
            .sum()
    }

    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Msg) -> Result<T> {
        let (tx, rx) = oneshot::channel();
        self.owner.send(make(tx)).map_err(|_| Error::ShuttingDown)?;
        rx.await.map_err(|_| Error::ShuttingDown)
    }

    fn tell(&self, msg: Msg) {
        // Fails only after shutdown, when there is nobody left to tell.
        let _ = self.owner.send(msg);
    }

    /// Answers `offer` with a connection on the next shard that sends
    /// `tracks` (none for a publisher, which receives `receive`), and hands
    /// it to that shard.
    async fn negotiate(
        &self,
        offer: &str,
        tracks: Vec<MediaStreamTrack>,
        receive: &[TrackCodec],
    ) -> Result<(
        EngineConn,
        String,
        Vec<rtc::rtp_transceiver::RTCRtpSenderId>,
    )> {
        let shard = self.engine.next_shard();
        let mut options = (*self.options).clone();
        options.receive = receive
            .iter()
            .flat_map(|c| {
                std::iter::once(&c.params)
                    .chain(&c.rtx)
                    .map(|p| (p.clone(), c.kind))
            })
            .collect();
        let answered = session::answer(offer, shard.local_addr(), tracks, &options, Instant::now())
            .map_err(|e| Error::UnsupportedMedia(format!("cannot answer the offer: {e}")))?;
        let answer = answer::finish_answer(&answered.answer);
        let conn = shard
            .add_connection(answered.pc, answered.ufrag)
            .await
            .ok_or(Error::ShuttingDown)?;
        Ok((
            EngineConn {
                shard: shard.index(),
                conn,
            },
            answer,
            answered.senders,
        ))
    }

    /// WHIP: negotiates a publisher session for `room`/`stream`, published
    /// by `identity`. With `may_replace` (the identity was authenticated),
    /// a live session of the same identity is replaced by this one instead
    /// of refusing it.
    pub async fn publish(
        &self,
        room: RoomName,
        stream: StreamName,
        identity: String,
        may_replace: bool,
        offer: String,
        slot: Option<SessionSlot>,
    ) -> Result<Created> {
        let sections = codecs::parse_offer(&offer)?;
        let chosen = codecs::choose_for_publish(&sections)?;
        let session = SessionId::random();
        let span = crate::telemetry::spans::session(
            "publisher",
            &room,
            &stream,
            session.as_str(),
            &identity,
        );
        let created = async {
            self.ask(|reply| Msg::ReservePublish {
                room,
                stream,
                session: session.clone(),
                identity,
                may_replace,
                local: local::LocalOptions::default(),
                span: span.clone(),
                reply,
            })
            .await??;
            let negotiated = self
                .negotiate(&offer, Vec::new(), &chosen)
                .instrument(tracing::info_span!(parent: &span, "negotiate"))
                .await;
            let (conn, answer, _) = match negotiated {
                Ok(ok) => ok,
                Err(e) => {
                    self.tell(Msg::Cancel { session });
                    return Err(e);
                }
            };
            let etag = new_etag();
            self.ask(|reply| Msg::CommitPublish {
                session: session.clone(),
                conn,
                codecs: chosen,
                etag: etag.clone(),
                slot,
                reply,
            })
            .await??;
            Ok(Created {
                session,
                answer,
                etag,
            })
        }
        .await;
        if let Err(e) = &created {
            crate::telemetry::spans::not_started(&span, e);
        }
        created
    }

    /// WHEP: negotiates a viewer session of `room`/`stream` for `identity`,
    /// getting the simulcast layer `layer` of its video (if the publisher
    /// sends several).
    pub async fn play(
        &self,
        room: RoomName,
        stream: StreamName,
        identity: String,
        offer: String,
        layer: LayerChoice,
        slot: Option<SessionSlot>,
    ) -> Result<Created> {
        let sections = codecs::parse_offer(&offer)?;
        let published = self
            .ask(|reply| Msg::PublishedCodecs {
                room: room.clone(),
                stream: stream.clone(),
                reply,
            })
            .await??;
        let chosen = codecs::choose_for_play(&sections, &published)?;
        let session = SessionId::random();
        let span =
            crate::telemetry::spans::session("viewer", &room, &stream, session.as_str(), &identity);
        let created = async {
            let mut sends = Vec::with_capacity(chosen.len());
            let mut tracks = Vec::with_capacity(chosen.len());
            for codec in &chosen {
                let Some(kind) = MediaKind::of(codec.kind) else {
                    continue;
                };
                let ssrc: u32 = rand::random();
                let label = format!("{stream}-{kind:?}").to_lowercase();
                sends.push(MediaStreamTrack::new(
                    format!("vigil-{stream}"),
                    label.clone(),
                    label,
                    codec.kind,
                    vec![RTCRtpEncodingParameters {
                        rtp_coding_parameters: RTCRtpCodingParameters {
                            ssrc: Some(ssrc),
                            // Repairs on RTX when the viewer offers it.
                            rtx: codec.rtx.as_ref().map(|_| RTCRtpRtxParameters {
                                ssrc: rand::random(),
                            }),
                            ..Default::default()
                        },
                        codec: codec.params.rtp_codec.clone(),
                        ..Default::default()
                    }],
                ));
                tracks.push((kind, codec.params.rtp_codec.mime_type.clone(), ssrc));
            }
            let (conn, answer, senders) = self
                .negotiate(&offer, sends, &[])
                .instrument(tracing::info_span!(parent: &span, "negotiate"))
                .await?;
            let tracks = tracks
                .into_iter()
                .zip(senders)
                .map(|((kind, mime, ssrc), sender)| {
                    ViewerTrack::new(kind, mime, sender, ssrc, layer.clone())
                })
                .collect();
            let etag = new_etag();
            self.ask(|reply| Msg::CommitPlay {
                viewer: NewViewer {
                    room,
                    stream,
                    session: session.clone(),
                    identity,
                    conn,
                    tracks,
                    etag: etag.clone(),
                    slot,
                    span: span.clone(),
                },
                reply,
            })
            .await??;
            Ok(Created {
                session,
                answer,
                etag,
            })
        }
        .await;
        if let Err(e) = &created {
            crate::telemetry::spans::not_started(&span, e);
        }
        created
    }

    /// PATCH: trickles candidates or restarts ICE (RFC 9725 §4.3).
    pub async fn patch(
        &self,
        session: &SessionId,
        frag: SdpFrag,
        if_match: Option<&str>,
    ) -> Result<PatchOutcome> {
        let view = self
            .ask(|reply| Msg::Lookup {
                session: session.clone(),
                reply,
            })
            .await?
            .ok_or(Error::SessionNotFound)?;
        let if_match = if_match.ok_or(Error::PreconditionRequired)?;
        if if_match != "*" && if_match != view.etag {
            return Err(Error::PreconditionFailed);
        }
        let shard = self
            .engine
            .shards()
            .get(view.conn.shard)
            .ok_or(Error::SessionNotFound)?;
        match ice::apply_fragment(shard, view.conn.conn, &frag, &self.options.advertise).await? {
            ice::Applied::Trickled => Ok(PatchOutcome::Trickled),
            ice::Applied::Restarted { fragment } => {
                let etag = new_etag();
                self.tell(Msg::SetEtag {
                    session: session.clone(),
                    etag: etag.clone(),
                });
                Ok(PatchOutcome::Restarted { fragment, etag })
            }
        }
    }

    /// DELETE: ends a session. `false` if there was none.
    pub async fn delete(&self, session: &SessionId) -> Result<bool> {
        self.ask(|reply| Msg::Close {
            session: session.clone(),
            reason: CloseReason::Deleted,
            reply: Some(reply),
        })
        .await
    }

    /// Whether a session exists (GET/HEAD on its URL).
    pub async fn exists(&self, session: &SessionId) -> Result<bool> {
        Ok(self
            .ask(|reply| Msg::Lookup {
                session: session.clone(),
                reply,
            })
            .await?
            .is_some())
    }

    /// Counts of rooms, sessions and tracks.
    pub async fn stats(&self) -> Result<Stats> {
        self.ask(|reply| Msg::Stats { reply }).await
    }

    /// Counts now and totals since the start, for metrics.
    pub async fn metrics(&self) -> Result<(Stats, Totals)> {
        self.ask(|reply| Msg::Metrics { reply }).await
    }

    /// Each media shard's counters.
    pub fn io_stats(&self) -> impl Iterator<Item = &crate::engine::io::IoStats> {
        self.engine.shards().iter().map(|s| s.io_stats())
    }

    /// Closes every session, as DELETE does, stops the owner, and returns
    /// once the engine has sent every peer its DTLS `close_notify`.
    pub async fn shutdown(&self) {
        let _ = self.ask(|reply| Msg::Shutdown { reply }).await;
        self.engine.flush().await;
    }
}

fn new_etag() -> String {
    let bytes: [u8; 12] = rand::random();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("\"{hex}\"")
}
