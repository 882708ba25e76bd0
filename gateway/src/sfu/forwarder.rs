//! The hot path: one task per published track, fanning its RTP out to the
//! viewers of that track.
//!
//! The forwarder owns its viewer list ([`ViewerSink`]s) outright and takes
//! add/remove commands on a small channel, so there is no lock per packet.
//! Each sink is a bounded queue to that viewer's writer task: a viewer whose
//! connection cannot keep up fills only its own queue, loses packets
//! (counted), and waits for the next keyframe instead of slowing anyone
//! else. Keyframe requests from joins, stalled viewers and viewers' own
//! PLI/FIR are coalesced into at most one PLI upstream per interval. A video
//! viewer that joins mid-GOP starts on the track's last keyframe, kept in a
//! [`KeyframeCache`](crate::sfu::keyframe_cache::KeyframeCache), so it
//! shows a picture without waiting for the publisher. A simulcast track has
//! several layers (one SSRC each, see [`crate::sfu::layers`]); each viewer
//! follows one of them and switches at a keyframe of the next.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};

use crate::sfu::keyframe::{VideoCodec, starts_keyframe};
use crate::sfu::layers::{LayerChoice, Layers, StepDown};
use crate::sfu::picture_size::keyframe_size;
use crate::sfu::rewrite::Rewriter;
use crate::sfu::rtcp::{fraction_lost, is_keyframe_request};
use crate::sfu::{Gauge, MediaKind, SessionId};

/// Packets queued per viewer track before that viewer starts losing them.
/// Sized for a large keyframe burst at 8 Mbit/s.
pub const VIEWER_QUEUE: usize = 512;

/// Least time between two PLIs sent to a publisher (per layer).
pub const MIN_PLI_INTERVAL: Duration = Duration::from_millis(500);

/// How often rates are sampled and waiting viewers re-checked.
const TICK: Duration = Duration::from_millis(100);

/// One viewer's end of a forwarder.
pub struct ViewerSink {
    session: SessionId,
    kind: MediaKind,
    mime: String,
    rewriter: Rewriter,
    tx: mpsc::Sender<rtp::Packet>,
    waiting_for_keyframe: bool,
    dropped: Arc<AtomicU64>,
    /// The layer the viewer asked for.
    choice: LayerChoice,
    /// The layer (SSRC) it is being sent.
    layer: Option<u32>,
    /// The layer it moves to at that layer's next keyframe.
    next: Option<u32>,
    step_down: StepDown,
}

impl ViewerSink {
    /// A sink for `session`'s `kind` track, negotiated as `mime`, following
    /// the simulcast layer `choice`.
    pub fn new(
        session: SessionId,
        kind: MediaKind,
        mime: String,
        rewriter: Rewriter,
        tx: mpsc::Sender<rtp::Packet>,
        dropped: Arc<AtomicU64>,
        choice: LayerChoice,
    ) -> Self {
        ViewerSink {
            session,
            kind,
            mime,
            rewriter,
            tx,
            waiting_for_keyframe: true,
            dropped,
            choice,
            layer: None,
            next: None,
            step_down: StepDown::default(),
        }
    }

    /// The viewer session.
    pub fn session(&self) -> &SessionId {
        &self.session
    }

    /// Audio or video.
    pub fn kind(&self) -> MediaKind {
        self.kind
    }

    /// Whether this sink can carry a track encoded as `mime`.
    pub fn accepts(&self, mime: &str) -> bool {
        self.mime.eq_ignore_ascii_case(mime)
    }

    /// Prepares the sink for a new source: continue numbering, wait for a
    /// keyframe, pick a layer again.
    pub fn rebase(&mut self) {
        self.rewriter.rebase();
        self.waiting_for_keyframe = true;
        self.layer = None;
        self.next = None;
    }

    /// The layer it is sent, or will be.
    fn wanted_layer(&self) -> Option<u32> {
        self.next.or(self.layer)
    }

    /// Points the sink at the layer it should get; `true` if that is a
    /// change (the caller hurries a keyframe of it).
    fn retarget(&mut self, layers: &Layers) -> bool {
        let Some(target) = layers.pick(&self.choice, self.step_down.steps()) else {
            return false;
        };
        if self.layer == Some(target) {
            self.next = None;
            false
        } else if self.next == Some(target) {
            false
        } else {
            self.next = Some(target);
            true
        }
    }

    /// Starts a joining viewer on a cached keyframe, so it decodes a picture
    /// at once. It then resumes live at the next keyframe (the delta frames
    /// in between refer to frames it never had), with its sequence numbers
    /// and timestamps continuing across the skip.
    ///
    /// The keyframe goes out twice, the second copy a tick later. A receiver
    /// that ends a frame only when a packet of the next one arrives (aiortc's
    /// jitter buffer, FFmpeg's H.264 parser: the marker bit is not enough
    /// for them) would otherwise hold the first copy until the next live
    /// keyframe, which a publisher that ignores PLI, as OBS does, sends only
    /// at its next GOP. The second copy closes the first, and is itself a
    /// whole keyframe that any decoder takes.
    fn start_from(&mut self, keyframe: &[rtp::Packet], now: Instant) {
        'copies: for _ in 0..2 {
            for packet in keyframe {
                let mut out = packet.clone();
                self.rewriter.rewrite(&mut out.header, now);
                if self.tx.try_send(out).is_err() {
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                    break 'copies;
                }
            }
            self.rewriter.rebase();
        }
        self.rewriter.rebase();
        self.waiting_for_keyframe = true;
    }

    /// Whether the sink takes this packet of `layer`: it switches to a
    /// pending layer at that layer's keyframe (or first packet, for audio),
    /// and video waits for a keyframe after any break.
    fn admits(&mut self, layer: u32, keyframe_start: bool, video: bool) -> bool {
        if self.next == Some(layer) && (keyframe_start || !video) {
            if self.layer.is_some() {
                // Continue the viewer's numbering across the change of source.
                self.rewriter.rebase();
            }
            self.layer = Some(layer);
            self.next = None;
            self.waiting_for_keyframe = false;
        }
        if self.layer != Some(layer) {
            return false;
        }
        if self.waiting_for_keyframe && video {
            if !keyframe_start {
                return false;
            }
            self.waiting_for_keyframe = false;
        }
        true
    }
}

/// What a publisher has sent, counted on the hot path with relaxed atomics
/// and sampled for alarms (shared by the stream's forwarders).
#[derive(Debug, Default)]
pub struct StreamCounters {
    packets: AtomicU64,
    bytes: AtomicU64,
    keyframes: AtomicU64,
}

impl StreamCounters {
    pub(crate) fn count(&self, payload_len: usize, keyframe: bool) {
        self.packets.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(payload_len as u64, Ordering::Relaxed);
        if keyframe {
            self.keyframes.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The counters now, for the alarm rules.
    pub fn snapshot(&self, has_video: bool) -> vigil_control::alarms::StreamCounters {
        vigil_control::alarms::StreamCounters {
            packets: self.packets.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            keyframes: self.keyframes.load(Ordering::Relaxed),
            has_video,
        }
    }
}

/// Commands to a running forwarder.
pub enum ForwarderCommand {
    /// Stop (`true`) or resume forwarding; packets are still counted.
    SetMuted(bool),
    /// Start sending to this viewer (from its next keyframe, for video).
    AddSink(ViewerSink),
    /// Stop sending to this viewer.
    RemoveSink(SessionId),
    /// A viewer's RTCP about what it receives.
    Feedback(SessionId, ViewerFeedback),
}

/// What a viewer's receiver tells about its track.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ViewerFeedback {
    /// PLI or FIR: it needs a keyframe.
    KeyframeRequest,
    /// A reception report: the fraction (of 256) of packets lost since the
    /// previous one.
    Loss(u8),
}

/// A handle to a forwarder task; dropping every handle does not stop it
/// (the publisher's track ending does).
#[derive(Clone)]
pub struct ForwarderHandle {
    tx: mpsc::UnboundedSender<ForwarderCommand>,
}

impl ForwarderHandle {
    /// Sends a command; a forwarder that has already ended ignores it, and
    /// its sinks come back through its end callback.
    pub fn send(&self, command: ForwarderCommand) {
        // A send error means the task ended; it returned its sinks on the way out.
        let _ = self.tx.send(command);
    }
}

/// Coalesces keyframe requests into at most one per `min_interval`.
#[derive(Debug)]
pub struct KeyframeRequests {
    min_interval: Duration,
    pending: bool,
    last_sent: Option<Instant>,
}

impl KeyframeRequests {
    /// No request pending.
    pub fn new(min_interval: Duration) -> Self {
        KeyframeRequests {
            min_interval,
            pending: false,
            last_sent: None,
        }
    }

    /// Notes that someone wants a keyframe.
    pub fn request(&mut self) {
        self.pending = true;
    }

    /// Whether a PLI should go out now; if so, it is counted as sent.
    pub fn poll_send(&mut self, now: Instant) -> bool {
        let ready = self
            .last_sent
            .is_none_or(|last| now.saturating_duration_since(last) >= self.min_interval);
        if self.pending && ready {
            self.pending = false;
            self.last_sent = Some(now);
            true
        } else {
            false
        }
    }
}

/// What a forwarder needs to start.
pub struct ForwarderSpec {
    /// The publisher's track.
    pub track: Arc<dyn TrackRemote>,
    /// `Some` for video: which codec, to find keyframes.
    pub video: Option<VideoCodec>,
    /// The publisher's first SSRC (the first layer, with simulcast).
    pub media_ssrc: u32,
    /// Viewers waiting for this track.
    pub sinks: Vec<ViewerSink>,
    /// Where the publisher's packets are counted.
    pub counters: Arc<StreamCounters>,
    /// Receives the sinks back when the track ends, so the viewers can wait
    /// for the next publisher.
    pub on_end: Box<dyn FnOnce(Vec<ViewerSink>) + Send>,
    /// Counts live forwarder tasks.
    pub gauge: Gauge,
}

/// Starts a forwarder task.
pub fn spawn(spec: ForwarderSpec) -> ForwarderHandle {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(run(spec, rx));
    ForwarderHandle { tx }
}

/// A forwarder's state, owned by its task.
struct Forwarder {
    video: Option<VideoCodec>,
    sinks: Vec<ViewerSink>,
    layers: Layers,
    muted: bool,
}

impl Forwarder {
    fn is_video(&self) -> bool {
        self.video.is_some()
    }

    /// Asks the publisher for a keyframe of `layer` (coalesced; video only).
    fn request_keyframe(&mut self, layer: Option<u32>) {
        if self.is_video() {
            self.layers.request_keyframe(layer);
        }
    }

    /// Points every sink at the layer it should get now.
    fn retarget_all(&mut self) {
        for i in 0..self.sinks.len() {
            self.retarget(i);
        }
    }

    fn retarget(&mut self, i: usize) {
        if self.sinks[i].retarget(&self.layers) {
            let next = self.sinks[i].next;
            self.request_keyframe(next);
        }
    }

    fn add_sink(&mut self, mut sink: ViewerSink, now: Instant) {
        sink.rebase();
        if let Some(target) = self.layers.pick(&sink.choice, sink.step_down.steps()) {
            let cached = self
                .layers
                .get(target)
                .and_then(|layer| layer.cache.keyframe())
                .filter(|_| self.is_video() && !self.muted);
            match cached {
                Some(keyframe) => {
                    sink.start_from(keyframe, now);
                    sink.layer = Some(target);
                }
                None => sink.next = Some(target),
            }
            // Live from the next keyframe, which this hurries.
            self.request_keyframe(Some(target));
        }
        self.sinks.push(sink);
    }

    fn feedback(&mut self, session: &SessionId, feedback: ViewerFeedback, now: Instant) {
        let Some(i) = self.sinks.iter().position(|s| &s.session == session) else {
            return;
        };
        match feedback {
            ViewerFeedback::KeyframeRequest => {
                let layer = self.sinks[i].wanted_layer();
                self.request_keyframe(layer);
            }
            ViewerFeedback::Loss(fraction_lost) => {
                let sink = &mut self.sinks[i];
                let steps = sink.step_down.steps();
                let lower_exists = self.layers.pick(&sink.choice, steps + 1)
                    != self.layers.pick(&sink.choice, steps);
                if sink.step_down.report(fraction_lost, lower_exists, now) {
                    tracing::debug!(viewer = %session, fraction_lost, "viewer steps down a layer");
                    self.retarget(i);
                }
            }
        }
    }

    fn set_muted(&mut self, now_muted: bool) {
        if self.muted && !now_muted {
            // Resume from a keyframe, not from a broken picture.
            let video = self.is_video();
            for sink in &mut self.sinks {
                sink.waiting_for_keyframe = video;
                if video {
                    self.layers.request_keyframe(sink.wanted_layer());
                }
            }
        }
        self.muted = now_muted;
    }

    /// Takes one publisher packet.
    fn packet(&mut self, mut packet: rtp::Packet, counters: &StreamCounters, now: Instant) {
        let ssrc = packet.header.ssrc;
        let keyframe_start = self
            .video
            .is_some_and(|codec| starts_keyframe(codec, &packet.payload));
        counters.count(packet.payload.len(), keyframe_start);
        // Strip extensions once here rather than per viewer: their ids
        // belong to the publisher's negotiation, and an empty Vec clones
        // without allocating.
        packet.header.extension = false;
        packet.header.extensions.clear();
        let video = self.is_video();
        // A new or resuming layer is ranked at the next tick, from its rate.
        let layer = self.layers.get_or_add(ssrc);
        layer.saw_packet(packet.payload.len(), now);
        if let Some(size) = self
            .video
            .filter(|_| keyframe_start)
            .and_then(|codec| keyframe_size(codec, &packet.payload))
        {
            layer.saw_keyframe_size(size);
        }
        if video {
            layer.cache.observe(&packet, keyframe_start);
        }
        if !self.muted {
            forward(packet, ssrc, keyframe_start, video, &mut self.sinks);
        }
    }

    /// Every tick: rates and ranking, loss recovery, and keyframe requests
    /// for viewers still waiting.
    fn tick(&mut self, elapsed: Duration, now: Instant) {
        self.layers.tick(elapsed, now);
        for sink in &mut self.sinks {
            sink.step_down.poll_step_up(now);
        }
        self.retarget_all();
        if self.is_video() {
            for sink in &self.sinks {
                if sink.waiting_for_keyframe || sink.next.is_some() {
                    self.layers.request_keyframe(sink.wanted_layer());
                }
            }
        }
    }
}

async fn run(spec: ForwarderSpec, mut commands: mpsc::UnboundedReceiver<ForwarderCommand>) {
    let _alive = spec.gauge.enter();
    let ForwarderSpec {
        track,
        video,
        media_ssrc,
        sinks,
        on_end,
        counters,
        ..
    } = spec;
    let mut fwd = Forwarder {
        video,
        sinks,
        layers: Layers::default(),
        muted: false,
    };
    fwd.layers.get_or_add(media_ssrc);
    // Viewers handed over from a previous publisher continue their numbering.
    for sink in &mut fwd.sinks {
        sink.rebase();
    }
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_tick = Instant::now();
    loop {
        tokio::select! {
            biased;
            command = commands.recv() => match command {
                Some(ForwarderCommand::AddSink(sink)) => fwd.add_sink(sink, Instant::now()),
                Some(ForwarderCommand::RemoveSink(session)) => {
                    fwd.sinks.retain(|sink| sink.session != session);
                }
                Some(ForwarderCommand::Feedback(session, feedback)) => {
                    fwd.feedback(&session, feedback, Instant::now());
                }
                Some(ForwarderCommand::SetMuted(muted)) => fwd.set_muted(muted),
                None => break,
            },
            event = track.poll() => match event {
                Some(TrackRemoteEvent::OnRtpPacket(packet)) => {
                    fwd.packet(packet, &counters, Instant::now());
                }
                Some(TrackRemoteEvent::OnOpen(init)) => {
                    fwd.layers.set_rid(init.ssrc, init.rid);
                }
                Some(TrackRemoteEvent::OnEnded) | None => break,
                Some(_) => {}
            },
            _ = tick.tick() => {
                let now = Instant::now();
                fwd.tick(now.saturating_duration_since(last_tick), now);
                last_tick = now;
            }
        }
        if fwd.is_video() {
            let now = Instant::now();
            for layer in fwd.layers.iter_mut() {
                if !layer.keyframes.poll_send(now) {
                    continue;
                }
                let pli = PictureLossIndication {
                    sender_ssrc: 0,
                    media_ssrc: layer.ssrc,
                };
                if let Err(e) = track.write_rtcp(vec![Box::new(pli)]).await {
                    tracing::debug!("PLI to publisher failed: {e}");
                }
            }
        }
    }
    on_end(fwd.sinks);
}

/// Sends one publisher packet of layer `ssrc` (extensions stripped) to
/// every sink that follows that layer.
fn forward(
    packet: rtp::Packet,
    ssrc: u32,
    keyframe_start: bool,
    video: bool,
    sinks: &mut Vec<ViewerSink>,
) {
    let now = Instant::now();
    sinks.retain_mut(|sink| {
        if !sink.admits(ssrc, keyframe_start, video) {
            return true;
        }
        let mut out = packet.clone();
        sink.rewriter.rewrite(&mut out.header, now);
        match sink.tx.try_send(out) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                sink.dropped.fetch_add(1, Ordering::Relaxed);
                // The picture is broken from here: resume at the next keyframe.
                sink.waiting_for_keyframe = video;
                true
            }
            Err(TrySendError::Closed(_)) => false,
        }
    });
}

/// Writes one viewer track: packets from its sink to the peer connection,
/// and the viewer's RTCP about it (PLI/FIR, reception reports for the
/// track's `ssrc`) back as `on_feedback` calls.
pub async fn run_writer(
    track: Arc<TrackLocalStaticRTP>,
    ssrc: u32,
    mut packets: mpsc::Receiver<rtp::Packet>,
    on_feedback: impl Fn(ViewerFeedback),
    gauge: Gauge,
) {
    let _alive = gauge.enter();
    let mut feedback_open = true;
    loop {
        tokio::select! {
            packet = packets.recv() => match packet {
                Some(packet) => {
                    if let Err(e) = track.write_rtp(packet).await {
                        tracing::trace!("write to viewer failed: {e}");
                    }
                }
                None => break,
            },
            event = track.poll(), if feedback_open => match event {
                Some(TrackLocalEvent::OnRtcpPacket(rtcp)) => {
                    if rtcp.iter().any(|p| is_keyframe_request(p.as_ref())) {
                        on_feedback(ViewerFeedback::KeyframeRequest);
                    }
                    if let Some(lost) = rtcp.iter().filter_map(|p| fraction_lost(p.as_ref(), ssrc)).max() {
                        on_feedback(ViewerFeedback::Loss(lost));
                    }
                }
                Some(_) => {}
                None => feedback_open = false,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sfu::keyframe_cache::KeyframeCache;
    use bytes::Bytes;

    fn packet(seq: u16, payload: &'static [u8]) -> rtp::Packet {
        rtp::Packet {
            header: rtp::header::Header {
                version: 2,
                sequence_number: seq,
                timestamp: u32::from(seq) * 3000,
                ssrc: 1,
                payload_type: 102,
                ..Default::default()
            },
            payload: Bytes::from_static(payload),
        }
    }

    fn sink(tx: mpsc::Sender<rtp::Packet>, dropped: &Arc<AtomicU64>) -> ViewerSink {
        let mut sink = ViewerSink::new(
            SessionId::random(),
            MediaKind::Video,
            "video/H264".into(),
            Rewriter::new(rand::random(), 96, 90_000),
            tx,
            dropped.clone(),
            LayerChoice::default(),
        );
        // Following the test packets' one layer.
        sink.layer = Some(1);
        sink
    }

    const IDR: &[u8] = &[0x65, 0x88];
    const P_FRAME: &[u8] = &[0x41, 0x9a];

    #[test]
    fn a_full_viewer_queue_costs_only_that_viewer() {
        let dropped = Arc::new(AtomicU64::new(0));
        let (fast_tx, mut fast_rx) = mpsc::channel(1000);
        let (slow_tx, mut slow_rx) = mpsc::channel(2);
        let mut sinks = vec![sink(fast_tx, &dropped), sink(slow_tx, &dropped)];
        forward(packet(1, IDR), 1, true, true, &mut sinks);
        for seq in 2..=100 {
            forward(packet(seq, P_FRAME), 1, false, true, &mut sinks);
        }
        let mut fast = Vec::new();
        while let Ok(p) = fast_rx.try_recv() {
            fast.push(p.header.sequence_number);
        }
        assert_eq!(
            fast,
            (1..=100).collect::<Vec<_>>(),
            "the fast viewer got everything"
        );
        assert_eq!(
            dropped.load(Ordering::Relaxed),
            1,
            "one drop, then the slow viewer waits"
        );
        assert!(
            sinks[1].waiting_for_keyframe,
            "the slow viewer resumes at a keyframe"
        );

        // The slow viewer drains; it gets nothing until the next keyframe.
        while slow_rx.try_recv().is_ok() {}
        forward(packet(101, P_FRAME), 1, false, true, &mut sinks);
        assert!(slow_rx.try_recv().is_err(), "no P-frame after a loss");
        forward(packet(102, IDR), 1, true, true, &mut sinks);
        assert_eq!(
            slow_rx.try_recv().expect("keyframe").header.sequence_number,
            102
        );
    }

    #[test]
    fn a_joining_viewer_starts_on_the_cached_keyframe_then_waits_for_a_live_one() {
        let dropped = Arc::new(AtomicU64::new(0));
        let mut cache = KeyframeCache::default();
        let mut keyframe = packet(10, IDR);
        keyframe.header.marker = true;
        cache.observe(&keyframe, true);
        cache.observe(&packet(11, P_FRAME), false);

        let (tx, mut rx) = mpsc::channel(100);
        let mut sinks = vec![sink(tx, &dropped)];
        sinks[0].rebase();
        sinks[0].start_from(cache.keyframe().expect("cached"), Instant::now());
        sinks[0].layer = Some(1);
        let first = rx.try_recv().expect("the cached keyframe, at once");
        assert_eq!(first.payload, IDR);
        let closing = rx.try_recv().expect("the cached keyframe again");
        assert_eq!(closing.payload, IDR);
        assert_eq!(
            closing.header.sequence_number,
            first.header.sequence_number.wrapping_add(1),
            "the second copy is numbered after the first"
        );
        assert!(
            closing
                .header
                .timestamp
                .wrapping_sub(first.header.timestamp) as i32
                > 0,
            "the second copy is a later frame, which closes the first"
        );

        forward(packet(12, P_FRAME), 1, false, true, &mut sinks);
        assert!(
            rx.try_recv().is_err(),
            "no delta that refers to skipped frames"
        );
        let mut next = packet(40, IDR);
        next.header.marker = true;
        forward(next, 1, true, true, &mut sinks);
        let live = rx.try_recv().expect("the next live keyframe");
        assert_eq!(
            live.header.sequence_number,
            closing.header.sequence_number.wrapping_add(1),
            "numbering continues across the skipped frames"
        );
        assert!(
            live.header.timestamp.wrapping_sub(closing.header.timestamp) as i32 > 0,
            "time moves forward"
        );
    }

    #[test]
    fn a_viewer_changes_layer_at_the_new_layers_keyframe_with_continuous_numbering() {
        let dropped = Arc::new(AtomicU64::new(0));
        let (tx, mut rx) = mpsc::channel(100);
        let mut sinks = vec![sink(tx, &dropped)];
        let on_layer = |ssrc: u32, p: rtp::Packet| {
            let mut p = p;
            p.header.ssrc = ssrc;
            p
        };
        forward(on_layer(1, packet(1, IDR)), 1, true, true, &mut sinks);
        sinks[0].next = Some(2);
        forward(on_layer(1, packet(2, P_FRAME)), 1, false, true, &mut sinks);
        forward(
            on_layer(2, packet(500, P_FRAME)),
            2,
            false,
            true,
            &mut sinks,
        );
        forward(on_layer(2, packet(501, IDR)), 2, true, true, &mut sinks);
        forward(on_layer(1, packet(3, P_FRAME)), 1, false, true, &mut sinks);
        forward(
            on_layer(2, packet(502, P_FRAME)),
            2,
            false,
            true,
            &mut sinks,
        );
        let got: Vec<_> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
        let payloads: Vec<_> = got.iter().map(|p| p.payload.clone()).collect();
        assert_eq!(
            payloads,
            [IDR, P_FRAME, IDR, P_FRAME],
            "layer 1 until layer 2's keyframe, then only layer 2"
        );
        let seqs: Vec<_> = got.iter().map(|p| p.header.sequence_number).collect();
        for pair in seqs.windows(2) {
            assert_eq!(
                pair[1],
                pair[0].wrapping_add(1),
                "numbering continues: {seqs:?}"
            );
        }
        assert!(got.iter().all(|p| p.header.ssrc == got[0].header.ssrc));
    }

    #[test]
    fn a_gone_viewer_is_removed() {
        let dropped = Arc::new(AtomicU64::new(0));
        let (tx, rx) = mpsc::channel(10);
        let mut sinks = vec![sink(tx, &dropped)];
        drop(rx);
        forward(packet(1, IDR), 1, true, true, &mut sinks);
        assert!(sinks.is_empty());
    }

    #[test]
    fn keyframe_requests_are_coalesced() {
        let t0 = Instant::now();
        let mut k = KeyframeRequests::new(Duration::from_millis(500));
        assert!(!k.poll_send(t0), "nothing requested");
        k.request();
        k.request();
        assert!(k.poll_send(t0));
        assert!(!k.poll_send(t0), "two requests, one PLI");
        k.request();
        assert!(!k.poll_send(t0 + Duration::from_millis(100)), "too soon");
        assert!(
            k.poll_send(t0 + Duration::from_millis(500)),
            "pending one goes out later"
        );
        assert!(!k.poll_send(t0 + Duration::from_secs(5)));
    }
}
