//! The selective forwarding core.
//!
//! [`Sfu`] is the cloneable handle the HTTP layer uses. It negotiates peer
//! connections itself (that is the slow part: socket bind, candidate
//! gathering) and tells the room owner ([`registry`]) what happened; the
//! owner holds all room and session state and is the only code that changes
//! it. Media never passes through the owner: each published track has a
//! forwarder task ([`forwarder`]) that writes straight into per-viewer
//! queues.
//!
//! Panic policy: nothing here panics on anything a client sends; a panic is
//! a bug.

pub mod codecs;
pub mod forwarder;
pub(crate) mod ice;
pub mod keyframe;
pub mod keyframe_cache;
pub mod layers;
mod media_plane;
pub mod media_runtime;
pub mod peer;
pub mod picture_size;
pub mod registry;
pub mod rewrite;
pub mod rtcp;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use rtc::media_stream::MediaStreamTrack;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodingParameters, RTCRtpEncodingParameters, RTCRtpRtxParameters, RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use tokio::sync::{mpsc, oneshot};
use vigil_control::{RoomName, StreamName};
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::http::sdpfrag::SdpFrag;
use crate::sfu::codecs::TrackCodec;
use crate::sfu::forwarder::{VIEWER_QUEUE, ViewerSink};
use crate::sfu::layers::LayerChoice;
use crate::sfu::peer::{EventSink, Peer, PeerEvent, PeerSettings};
use crate::sfu::registry::{CloseReason, Msg, NewTrack, NewViewer, Timings};
use crate::sfu::rewrite::Rewriter;
use vigil_control::Facts;

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

/// A count of live tasks of one sort; the guard decrements on drop, so a
/// task that ends by any path is uncounted.
#[derive(Debug, Clone, Default)]
pub struct Gauge(Arc<AtomicUsize>);

/// Held by a counted task for its lifetime.
pub struct GaugeGuard(Arc<AtomicUsize>);

impl Gauge {
    /// Counts one more until the guard drops.
    pub fn enter(&self) -> GaugeGuard {
        self.0.fetch_add(1, Ordering::Relaxed);
        GaugeGuard(self.0.clone())
    }

    /// Current count.
    pub fn get(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Live task counts shared by the forwarding core.
#[derive(Debug, Clone, Default)]
pub struct Gauges {
    forwarders: Gauge,
    writers: Gauge,
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
    /// Running forwarder tasks.
    pub forwarders: usize,
    /// Running viewer writer tasks.
    pub viewer_writers: usize,
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
    settings: Arc<PeerSettings>,
    gauges: Gauges,
    dropped: Arc<AtomicU64>,
}

impl Sfu {
    /// Starts the room owner.
    pub fn start(config: &Config, facts: Facts) -> Sfu {
        let (tx, rx) = mpsc::unbounded_channel();
        let gauges = Gauges::default();
        let timings = Timings {
            republish_grace: config.republish_grace,
            connect_timeout: config.connect_timeout,
        };
        tokio::spawn(registry::run(
            timings,
            gauges.clone(),
            facts,
            tx.clone(),
            rx,
        ));
        Sfu {
            owner: tx,
            settings: Arc::new(PeerSettings::from(config)),
            gauges,
            dropped: Arc::default(),
        }
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

    fn event_sink(&self, session: &SessionId) -> EventSink {
        let owner = self.owner.clone();
        let session = session.clone();
        Arc::new(move |event| {
            let msg = match event {
                PeerEvent::State(state) => Msg::PeerState {
                    session: session.clone(),
                    state,
                },
                PeerEvent::Track(track) => {
                    // Describing the track needs awaits; do it off the driver's callback.
                    let owner = owner.clone();
                    let session = session.clone();
                    tokio::spawn(async move {
                        if let Some(new) = describe_track(track).await {
                            let _ = owner.send(Msg::Track {
                                session,
                                track: new,
                            });
                        }
                    });
                    return;
                }
            };
            let _ = owner.send(msg);
        })
    }

    /// WHIP: negotiates a publisher session for `room`/`stream`, published
    /// by `identity`.
    pub async fn publish(
        &self,
        room: RoomName,
        stream: StreamName,
        identity: String,
        offer: String,
    ) -> Result<Created> {
        let sections = codecs::parse_offer(&offer)?;
        let chosen = codecs::choose_for_publish(&sections)?;
        let session = SessionId::random();
        self.ask(|reply| Msg::ReservePublish {
            room,
            stream,
            session: session.clone(),
            identity,
            reply,
        })
        .await??;
        let negotiated = self
            .negotiate(&session, &chosen, async |peer| {
                for codec in &chosen {
                    let init = RTCRtpTransceiverInit {
                        direction: RTCRtpTransceiverDirection::Recvonly,
                        ..Default::default()
                    };
                    peer.pc()
                        .add_transceiver_from_kind(codec.kind, Some(init))
                        .await
                        .map_err(|e| Error::Internal(format!("adding transceiver: {e}")))?;
                }
                peer.answer(offer).await
            })
            .await;
        let (peer, answer) = match negotiated {
            Ok(ok) => ok,
            Err(e) => {
                self.tell(Msg::Cancel { session });
                return Err(e);
            }
        };
        let etag = new_etag();
        self.commit(&peer, |reply| Msg::CommitPublish {
            session: session.clone(),
            peer: peer.clone(),
            codecs: chosen,
            etag: etag.clone(),
            reply,
        })
        .await?;
        Ok(Created {
            session,
            answer,
            etag,
        })
    }

    /// Builds a peer for `chosen` and lets `prepare` add its transceivers and
    /// answer; the peer is closed if that fails.
    async fn negotiate<T>(
        &self,
        session: &SessionId,
        chosen: &[TrackCodec],
        prepare: impl AsyncFnOnce(&Arc<Peer>) -> Result<T>,
    ) -> Result<(Arc<Peer>, T)> {
        let peer = Arc::new(Peer::build(&self.settings, chosen, self.event_sink(session)).await?);
        match prepare(&peer).await {
            Ok(value) => Ok((peer, value)),
            Err(e) => {
                peer.close().await;
                Err(e)
            }
        }
    }

    /// Hands a negotiated session to the owner; the peer is closed if the
    /// owner refuses it (the stream went away meanwhile, or shutdown).
    async fn commit(
        &self,
        peer: &Arc<Peer>,
        msg: impl FnOnce(oneshot::Sender<Result<()>>) -> Msg,
    ) -> Result<()> {
        let committed = self.ask(msg).await.and_then(|r| r);
        if committed.is_err() {
            peer.close().await;
        }
        committed
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
        let (peer, (answer, sinks)) = self
            .negotiate(&session, &chosen, async |peer| {
                self.prepare_viewer(peer, &session, &stream, &chosen, offer, layer)
                    .await
            })
            .await?;
        let etag = new_etag();
        self.commit(&peer, |reply| Msg::CommitPlay {
            viewer: NewViewer {
                room,
                stream,
                session: session.clone(),
                identity,
                peer: peer.clone(),
                sinks,
                etag: etag.clone(),
            },
            reply,
        })
        .await?;
        Ok(Created {
            session,
            answer,
            etag,
        })
    }

    /// Adds one sending track per chosen codec, answers, and starts a writer
    /// task per track. Returns the answer and the sinks for the forwarders.
    async fn prepare_viewer(
        &self,
        peer: &Arc<Peer>,
        session: &SessionId,
        stream: &StreamName,
        chosen: &[TrackCodec],
        offer: String,
        layer: LayerChoice,
    ) -> Result<(String, Vec<ViewerSink>)> {
        let mut tracks = Vec::with_capacity(chosen.len());
        for codec in chosen {
            let Some(kind) = MediaKind::of(codec.kind) else {
                continue;
            };
            let ssrc: u32 = rand::random();
            let label = format!("{}-{kind:?}", stream).to_lowercase();
            let track = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
                format!("vigil-{stream}"),
                label.clone(),
                label,
                codec.kind,
                vec![RTCRtpEncodingParameters {
                    rtp_coding_parameters: RTCRtpCodingParameters {
                        ssrc: Some(ssrc),
                        rtx: codec.rtx.as_ref().map(|_| RTCRtpRtxParameters {
                            ssrc: rand::random(),
                        }),
                        ..Default::default()
                    },
                    codec: codec.params.rtp_codec.clone(),
                    ..Default::default()
                }],
            )));
            let init = RTCRtpTransceiverInit {
                direction: RTCRtpTransceiverDirection::Sendonly,
                ..Default::default()
            };
            peer.pc()
                .add_transceiver_from_track(track.clone(), Some(init))
                .await
                .map_err(|e| Error::Internal(format!("adding track: {e}")))?;
            tracks.push((kind, codec, ssrc, track));
        }
        let answer = peer.answer(offer).await?;
        let mut sinks = Vec::with_capacity(tracks.len());
        for (kind, codec, ssrc, track) in tracks {
            let (tx, rx) = mpsc::channel(VIEWER_QUEUE);
            // The media engine holds only this codec, at the viewer's own
            // payload type, so that is what the sender negotiated.
            let rewriter = Rewriter::new(
                ssrc,
                codec.params.payload_type,
                codec.params.rtp_codec.clock_rate,
            );
            sinks.push(ViewerSink::new(
                session.clone(),
                kind,
                codec.params.rtp_codec.mime_type.clone(),
                rewriter,
                tx,
                self.dropped.clone(),
                layer.clone(),
            ));
            let owner = self.owner.clone();
            let viewer = session.clone();
            tokio::spawn(forwarder::run_writer(
                track,
                ssrc,
                rx,
                move |feedback| {
                    let _ = owner.send(Msg::ViewerFeedback {
                        session: viewer.clone(),
                        kind,
                        feedback,
                    });
                },
                self.gauges.writers.clone(),
            ));
        }
        Ok((answer, sinks))
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
        let outcome = ice::apply_fragment(&view.peer, &frag).await?;
        if let ice::Applied::Restarted { fragment } = outcome {
            let etag = new_etag();
            self.tell(Msg::SetEtag {
                session: session.clone(),
                etag: etag.clone(),
            });
            return Ok(PatchOutcome::Restarted { fragment, etag });
        }
        Ok(PatchOutcome::Trickled)
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

    /// Counts of rooms, sessions and tasks.
    pub async fn stats(&self) -> Result<Stats> {
        self.ask(|reply| Msg::Stats { reply }).await
    }

    /// Packets dropped because a viewer's queue was full, since start.
    pub fn dropped_packets(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Closes every session and stops the owner.
    pub async fn shutdown(&self) {
        let _ = self.ask(|reply| Msg::Shutdown { reply }).await;
    }
}

async fn describe_track(
    track: Arc<dyn webrtc::media_stream::track_remote::TrackRemote>,
) -> Option<NewTrack> {
    let kind = MediaKind::of(track.kind().await)?;
    let ssrc = *track.ssrcs().await.first()?;
    let mime = track.codec(ssrc).await?.mime_type;
    Some(NewTrack {
        track,
        kind,
        ssrc,
        mime,
    })
}

fn new_etag() -> String {
    let bytes: [u8; 12] = rand::random();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("\"{hex}\"")
}
