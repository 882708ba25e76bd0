//! One relayed stream's task: pull it from its origin, publish it here,
//! forward its packets and keyframe requests, and when the origin goes
//! away find the stream again.
//!
//! Lifecycle: the task starts at a WHEP demand with the origin the lookup
//! found. While it is pulled, its packets go from webrtc-rs's tracks
//! straight into the local publisher (a reader task per track), and
//! keyframe requests of the viewers here come back from the room owner
//! and leave as a PLI to the origin, at most one per
//! [`MIN_PLI_INTERVAL`]. When the origin's session ends (closed, failed,
//! or silent for [`SILENCE`]) the local publisher is dropped: viewers here
//! wait for a republish as for any publisher, while the task locates the
//! stream again after 1, 2, 4… up to [`MAX_BACKOFF`] seconds, maybe at
//! another node, and publishes it again (the owner moves the viewers over).
//! [`LINGER`] after the last viewer here left, or when its commands close
//! (shutdown), the task ends, deleting its session at the origin.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use vigil_control::{RoomName, StreamName};
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::RTCPeerConnectionState;

use super::client::{self, Connection, PcEvent};
use super::{LINGER, MAX_BACKOFF, MIN_PLI_INTERVAL, Origin, Origins, SILENCE};
use crate::engine::shard::LocalTrack;
use crate::error::Error;
use crate::sfu::local::{LocalOptions, LocalPublisher};
use crate::sfu::{MediaKind, Sfu};

/// The most packets of one video frame handed to the engine at once (a
/// GSO batch holds 64).
const MAX_FRAME_BATCH: usize = 64;

/// What a relay task is told.
pub enum Command {
    /// A viewer wants the stream: answered once it is published here (or
    /// the attempt failed).
    Demand(oneshot::Sender<()>),
    /// The deployment found this node dead: a relay pulling from it stops
    /// waiting for its silence and looks the stream up again.
    OriginLost(String),
}

/// What every relay task needs.
#[derive(Clone)]
pub struct Context {
    /// Where the stream is published here.
    pub sfu: Sfu,
    /// Where it is published elsewhere.
    pub origins: Arc<dyn Origins>,
    /// The address the relay's WebRTC client binds.
    pub relay_ip: IpAddr,
}

/// Why a pull ended.
enum Ended {
    /// Shutdown: the commands closed.
    Stopped,
    /// Nobody watched for [`LINGER`].
    Unwatched,
    /// The origin's session ended or never started.
    Lost(String),
}

/// The relay's own state across pulls.
struct Relay {
    /// The node pulled from now, if any.
    pulling_from: Option<String>,
    context: Context,
    room: RoomName,
    stream: StreamName,
    commands: mpsc::UnboundedReceiver<Command>,
    /// Viewers' requests waiting for the stream to be published here.
    waiters: Vec<oneshot::Sender<()>>,
    /// Since when no viewer here plays the stream.
    unwatched_since: Option<Instant>,
}

/// Runs the relay of `key` until nobody watches it or its commands close.
pub async fn run(
    context: Context,
    key: (RoomName, StreamName),
    first: Origin,
    commands: mpsc::UnboundedReceiver<Command>,
) {
    let (room, stream) = key;
    let mut relay = Relay {
        pulling_from: None,
        context,
        room,
        stream,
        commands,
        waiters: Vec::new(),
        unwatched_since: None,
    };
    let mut origin = Some(first);
    let mut backoff = Duration::from_secs(1);
    loop {
        let ended = match origin.take() {
            Some(origin) => {
                let since = Instant::now();
                let ended = relay.pull(&origin).await;
                if since.elapsed() >= Duration::from_secs(10) {
                    backoff = Duration::from_secs(1); // it was live a while
                }
                ended
            }
            None => Ended::Lost("no node publishes the stream".into()),
        };
        // Whoever waited is told: the WHEP request proceeds (and is
        // answered as for any stream without a publisher).
        relay.waiters.clear();
        match ended {
            Ended::Stopped => return,
            Ended::Unwatched if !relay.demanded() => {
                tracing::info!(room = %relay.room, stream = %relay.stream, "relay ended: nobody watches");
                return;
            }
            Ended::Unwatched => {}
            Ended::Lost(why) => {
                tracing::info!(room = %relay.room, stream = %relay.stream, %why, retry_in_secs = backoff.as_secs(), "relay lost its origin");
                if let Some(ended) = relay.wait(backoff).await {
                    if let Ended::Unwatched = ended {
                        tracing::info!(room = %relay.room, stream = %relay.stream, "relay ended: nobody watches");
                    }
                    return;
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
        origin = relay
            .context
            .origins
            .locate(&relay.room, &relay.stream)
            .await;
    }
}

impl Relay {
    /// Takes the demands that arrived meanwhile; whether there were any.
    fn demanded(&mut self) -> bool {
        let mut any = false;
        while let Ok(Command::Demand(reply)) = self.commands.try_recv() {
            self.waiters.push(reply);
            any = true;
        }
        if any {
            self.unwatched_since = None;
        }
        any
    }

    /// Notes a demand or a closed channel; `Some` ends the relay.
    fn command(&mut self, command: Option<Command>) -> Option<Ended> {
        match command {
            Some(Command::OriginLost(node)) => {
                if self.pulling_from.as_deref() == Some(node.as_str()) {
                    return Some(Ended::Lost(format!("node {node} was found dead")));
                }
                None
            }
            Some(Command::Demand(reply)) => {
                self.waiters.push(reply);
                self.unwatched_since = None;
                None
            }
            None => Some(Ended::Stopped),
        }
    }

    /// Whether nobody has played the stream here for [`LINGER`] (and
    /// nobody asked for it meanwhile).
    async fn unwatched(&mut self) -> bool {
        if !self.waiters.is_empty()
            || self
                .context
                .sfu
                .viewer_count(&self.room, &self.stream)
                .await
                > 0
        {
            self.unwatched_since = None;
            return false;
        }
        self.unwatched_since
            .get_or_insert_with(Instant::now)
            .elapsed()
            >= LINGER
    }

    /// Waits out a backoff; `Some` if the relay is to end meanwhile.
    async fn wait(&mut self, backoff: Duration) -> Option<Ended> {
        let until = tokio::time::Instant::now() + backoff;
        let mut check = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(until) => return None,
                command = self.commands.recv() => {
                    if let Some(ended) = self.command(command) {
                        return Some(ended);
                    }
                }
                _ = check.tick() => {
                    if self.unwatched().await && !self.demanded() {
                        return Some(Ended::Unwatched);
                    }
                }
            }
        }
    }

    /// One session at `origin`, from the WHEP POST until it ends.
    async fn pull(&mut self, origin: &Origin) -> Ended {
        self.pulling_from = Some(origin.node.clone());
        let ended = self.pull_from(origin).await;
        self.pulling_from = None;
        ended
    }

    async fn pull_from(&mut self, origin: &Origin) -> Ended {
        let (room, stream) = (self.room.clone(), self.stream.clone());
        let connecting = client::connect(origin, &room, &stream, self.context.relay_ip);
        tokio::pin!(connecting);
        let connection = loop {
            tokio::select! {
                connected = &mut connecting => match connected {
                    Ok(connection) => break connection,
                    Err(e) => return Ended::Lost(format!("{} ({}): {e}", origin.node, origin.base_url)),
                },
                command = self.commands.recv() => {
                    if let Some(ended) = self.command(command) {
                        return ended; // the connection under way is dropped
                    }
                }
            }
        };
        let (requests_tx, requests) = mpsc::unbounded_channel();
        let ssrcs: Vec<(MediaKind, u32)> = connection
            .codecs
            .iter()
            .filter_map(|c| Some((kind_of(c.kind)?, rand::random())))
            .collect();
        let tracks = connection
            .codecs
            .iter()
            .zip(&ssrcs)
            .map(|(codec, (kind, ssrc))| LocalTrack {
                kind: *kind,
                mime: codec.params.rtp_codec.mime_type.clone(),
                clock_rate: codec.params.rtp_codec.clock_rate,
                ssrc: *ssrc,
            })
            .collect();
        let published = self
            .context
            .sfu
            .publish_local(
                self.room.clone(),
                self.stream.clone(),
                format!("relay:{}", origin.node),
                connection.codecs.clone(),
                tracks,
                LocalOptions {
                    quiet: true,
                    keyframe_requests: Some(requests_tx),
                },
            )
            .await;
        let publisher = match published {
            Ok(publisher) => Arc::new(publisher),
            Err(e) => {
                connection.close().await;
                return match e {
                    Error::ShuttingDown => Ended::Stopped,
                    e => Ended::Lost(format!("cannot publish the stream here: {e}")),
                };
            }
        };
        tracing::info!(room = %self.room, stream = %self.stream, origin = %origin.node, session = %publisher.session(), "relay publishing");
        for waiter in self.waiters.drain(..) {
            let _ = waiter.send(());
        }
        self.context
            .origins
            .relaying(&self.room, &self.stream, true);
        let forwarding = Forwarding {
            publisher,
            ssrcs,
            readers: Vec::new(),
            video: None,
            epoch: Instant::now(),
            last_rtp: Arc::new(AtomicU64::new(0)),
            last_pli: None,
        };
        let ended = self.forward(connection, forwarding, requests).await;
        self.context
            .origins
            .relaying(&self.room, &self.stream, false);
        ended
    }

    /// Forwards until the session ends; then closes it.
    async fn forward(
        &mut self,
        mut connection: Connection,
        mut forwarding: Forwarding,
        mut requests: mpsc::UnboundedReceiver<()>,
    ) -> Ended {
        for track in std::mem::take(&mut connection.early_tracks) {
            forwarding.attach(track).await;
        }
        let mut check = tokio::time::interval(Duration::from_secs(1));
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let ended = loop {
            tokio::select! {
                command = self.commands.recv() => {
                    if let Some(ended) = self.command(command) {
                        break ended;
                    }
                    // Published already: the viewer goes on at once.
                    for waiter in self.waiters.drain(..) {
                        let _ = waiter.send(());
                    }
                }
                event = connection.events.recv() => match event {
                    Some(PcEvent::Track(track)) => forwarding.attach(track).await,
                    Some(PcEvent::State(
                        state @ (RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed),
                    )) => break Ended::Lost(format!("the connection is {state}")),
                    Some(PcEvent::State(_)) => {}
                    None => break Ended::Lost("the connection went away".into()),
                },
                Some(()) = requests.recv() => forwarding.request_keyframe().await,
                _ = check.tick() => {
                    if forwarding.silent_for() >= SILENCE {
                        break Ended::Lost(format!("no media for {} s", SILENCE.as_secs()));
                    }
                    if self.unwatched().await {
                        break Ended::Unwatched;
                    }
                }
            }
        };
        // The local session ends before anything else can publish the
        // stream here (the owner gets its close before a new reservation).
        forwarding.stop().await;
        connection.close().await;
        ended
    }
}

/// A pull's forwarding state.
struct Forwarding {
    publisher: Arc<LocalPublisher>,
    /// The SSRC each kind is published with here.
    ssrcs: Vec<(MediaKind, u32)>,
    readers: Vec<JoinHandle<()>>,
    /// The video track and its SSRC at the origin, for PLIs.
    video: Option<(Arc<dyn TrackRemote>, u32)>,
    epoch: Instant,
    /// Milliseconds after `epoch` of the last RTP packet.
    last_rtp: Arc<AtomicU64>,
    last_pli: Option<Instant>,
}

impl Forwarding {
    /// Starts forwarding a track of the origin's.
    async fn attach(&mut self, track: Arc<dyn TrackRemote>) {
        let kind = track.kind().await;
        let Some(ssrc) = kind_of(kind).and_then(|kind| {
            self.ssrcs
                .iter()
                .find(|(k, _)| *k == kind)
                .map(|(_, ssrc)| *ssrc)
        }) else {
            // Not in the answer: nothing is published for it here, but it
            // is read so webrtc-rs's buffers never fill.
            self.readers.push(tokio::spawn(async move {
                while track.poll().await.is_some() {}
            }));
            return;
        };
        if kind == RtpCodecKind::Video
            && let Some(origin_ssrc) = track.ssrcs().await.first().copied()
        {
            self.video = Some((track.clone(), origin_ssrc));
        }
        let publisher = self.publisher.clone();
        let last_rtp = self.last_rtp.clone();
        let epoch = self.epoch;
        let video = kind == RtpCodecKind::Video;
        self.readers.push(tokio::spawn(async move {
            // A video frame's packets go into the engine together, as a
            // WHIP publisher's arrive in one receive batch: the shard then
            // sends each viewer the frame in one GSO call instead of a
            // call per packet. The frame ends at its marker bit, or when
            // the next frame's first packet shows the marker was lost.
            let mut frame: Vec<rtc::rtp::Packet> = Vec::new();
            while let Some(event) = track.poll().await {
                let TrackRemoteEvent::OnRtpPacket(mut packet) = event else {
                    continue;
                };
                last_rtp.store(epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
                if packet.payload.is_empty() {
                    continue; // padding only (probing): nothing to forward
                }
                // Published here on our SSRC, numbered as the origin
                // numbers (continuous across its republishes), without
                // the hop's header extensions.
                let header = &mut packet.header;
                header.ssrc = ssrc;
                header.padding = false;
                header.extension = false;
                header.extension_profile = 0;
                header.extensions.clear();
                header.extensions_padding = 0;
                if !video {
                    if !publisher.send(vec![packet]) {
                        return; // the engine stopped: shutdown
                    }
                    continue;
                }
                if frame
                    .first()
                    .is_some_and(|first| first.header.timestamp != packet.header.timestamp)
                    && !publisher.send(std::mem::take(&mut frame))
                {
                    return;
                }
                let ends = packet.header.marker;
                frame.push(packet);
                if (ends || frame.len() >= MAX_FRAME_BATCH)
                    && !publisher.send(std::mem::take(&mut frame))
                {
                    return;
                }
            }
        }));
    }

    /// How long since the last packet (or since the pull started).
    fn silent_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_rtp.load(Ordering::Relaxed));
        self.epoch.elapsed().saturating_sub(last)
    }

    /// A viewer here needs a keyframe: a PLI to the origin, coalesced.
    async fn request_keyframe(&mut self) {
        let Some((track, media_ssrc)) = &self.video else {
            return;
        };
        let now = Instant::now();
        if self
            .last_pli
            .is_some_and(|at| now.duration_since(at) < MIN_PLI_INTERVAL)
        {
            return;
        }
        self.last_pli = Some(now);
        let pli = PictureLossIndication {
            sender_ssrc: 0,
            media_ssrc: *media_ssrc,
        };
        if let Err(e) = track.write_rtcp(vec![Box::new(pli)]).await {
            tracing::debug!("relay: PLI to the origin not sent: {e}");
        }
    }

    /// Stops the readers and ends the local publisher's session.
    async fn stop(self) {
        for reader in self.readers {
            reader.abort();
            // Aborted (or already done): either way its publisher is gone.
            let _ = reader.await;
        }
        drop(self.publisher);
    }
}

fn kind_of(kind: RtpCodecKind) -> Option<MediaKind> {
    match kind {
        RtpCodecKind::Audio => Some(MediaKind::Audio),
        RtpCodecKind::Video => Some(MediaKind::Video),
        _ => None,
    }
}
