//! Real WebRTC peers for tests: a WHIP publisher that sends the fixture
//! media (H264, VP8 or VP9 video, and Opus) in real time and answers PLI
//! like an encoder would, and a WHEP viewer that records every RTP packet it
//! receives.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rtc::interceptor::{Interceptor, Slot};
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::media_engine::{
    MIME_TYPE_H264, MIME_TYPE_OPUS, MIME_TYPE_VP8, MIME_TYPE_VP9,
};
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters,
    RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use vigil_gateway::sfu::keyframe::{VideoCodec, starts_keyframe};
use vigil_gateway::sfu::rtcp::{KEYFRAME_REQUEST_SLOT, is_keyframe_request, keyframe_request_tap};
use webrtc::media_stream::Track as _;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler,
    RTCIceGatheringState, RTCPeerConnectionState, RTCSessionDescription, Registry,
    register_default_interceptors,
};

use crate::http_client::{HttpResponse, request};

/// The content type of an SDP offer or answer.
const SDP: &str = "application/sdp";
use crate::media::{VideoFrame, h264_frames, opus_packets, vp8_frames, vp9_frames};

/// Payload type the test publisher offers for H264: one no default viewer
/// uses, so the tests see the per-viewer rewrite.
pub const H264_PT: u8 = 119;
/// Payload type the test publisher offers for Opus.
pub const OPUS_PT: u8 = 111;
/// The publisher's H264 fmtp.
pub const H264_FMTP: &str =
    "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f";
/// Payload type the test publisher offers for VP8. Not one of webrtc-rs's
/// defaults, so a viewer (which offers VP8 at 96) only gets its own type if
/// the server rewrites it.
pub const VP8_PT: u8 = 120;
/// Payload type the test publisher offers for VP9 (webrtc-rs's defaults
/// offer it at 98).
pub const VP9_PT: u8 = 121;
/// The publisher's VP9 fmtp.
pub const VP9_FMTP: &str = "profile-id=0";

/// The video a test publisher sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestVideo {
    /// `video.h264` at [`H264_PT`]: Constrained Baseline, packetization-mode 1.
    H264,
    /// `video.vp8.ivf` at [`VP8_PT`].
    Vp8,
    /// `video.vp9.ivf` (profile 0) at [`VP9_PT`].
    Vp9,
}

impl TestVideo {
    /// The codec the publisher registers and offers.
    pub fn codec(self) -> RTCRtpCodecParameters {
        let (mime_type, fmtp, payload_type) = match self {
            TestVideo::H264 => (MIME_TYPE_H264, H264_FMTP, H264_PT),
            TestVideo::Vp8 => (MIME_TYPE_VP8, "", VP8_PT),
            TestVideo::Vp9 => (MIME_TYPE_VP9, VP9_FMTP, VP9_PT),
        };
        RTCRtpCodecParameters {
            rtp_codec: RTCRtpCodec {
                mime_type: mime_type.to_owned(),
                clock_rate: 90_000,
                channels: 0,
                sdp_fmtp_line: fmtp.to_owned(),
                rtcp_feedback: vec![],
            },
            payload_type,
        }
    }

    /// The payload type the publisher sends it with.
    pub fn payload_type(self) -> u8 {
        self.codec().payload_type
    }

    /// The codec, as the server's keyframe detection names it.
    pub fn video_codec(self) -> VideoCodec {
        match self {
            TestVideo::H264 => VideoCodec::H264,
            TestVideo::Vp8 => VideoCodec::Vp8,
            TestVideo::Vp9 => VideoCodec::Vp9,
        }
    }

    /// The fixture's frames, packetized (120 at 30 fps, a keyframe every 30).
    pub fn frames(self) -> Vec<VideoFrame> {
        match self {
            TestVideo::H264 => h264_frames(),
            TestVideo::Vp8 => vp8_frames(),
            TestVideo::Vp9 => vp9_frames(),
        }
    }

    /// The first payload type `sdp` (say a viewer's offer) gives this
    /// codec in a video section, with an fmtp a decoder of the fixture
    /// accepts: VP9 profile 0, H264 packetization-mode 1 with the
    /// publisher's profile.
    pub fn offered_payload_type(self, sdp: &str) -> Option<u8> {
        let wanted = self.codec();
        sdp_video_codecs(sdp)
            .into_iter()
            .find(|offered| {
                offered
                    .mime_type
                    .eq_ignore_ascii_case(&wanted.rtp_codec.mime_type)
                    && offered.clock_rate == wanted.rtp_codec.clock_rate
                    && match self {
                        TestVideo::H264 => {
                            let profile = |fmtp| {
                                fmtp_param(fmtp, "profile-level-id")
                                    .and_then(|id| id.get(..4))
                                    .map(str::to_ascii_lowercase)
                            };
                            fmtp_param(&offered.fmtp, "packetization-mode") == Some("1")
                                && profile(&offered.fmtp) == profile(H264_FMTP)
                        }
                        TestVideo::Vp8 => true,
                        TestVideo::Vp9 => {
                            fmtp_param(&offered.fmtp, "profile-id").is_none_or(|id| id == "0")
                        }
                    }
            })
            .map(|offered| offered.payload_type)
    }
}

/// One `a=rtpmap` of an SDP video section, with its `a=fmtp`.
struct SdpCodec {
    payload_type: u8,
    /// `video/NAME`
    mime_type: String,
    clock_rate: u32,
    fmtp: String,
}

/// The codecs of every video section of `sdp`, in the order listed.
fn sdp_video_codecs(sdp: &str) -> Vec<SdpCodec> {
    let mut codecs: Vec<SdpCodec> = Vec::new();
    let mut in_video = false;
    for line in sdp.lines().map(str::trim_end) {
        if let Some(media) = line.strip_prefix("m=") {
            in_video = media.starts_with("video ");
            continue;
        }
        if !in_video {
            continue;
        }
        if let Some(map) = line.strip_prefix("a=rtpmap:") {
            let Some((pt, encoding)) = map.split_once(' ') else {
                continue;
            };
            let mut parts = encoding.split('/');
            let (Ok(payload_type), Some(name), Some(Ok(clock_rate))) =
                (pt.parse(), parts.next(), parts.next().map(str::parse))
            else {
                continue;
            };
            codecs.push(SdpCodec {
                payload_type,
                mime_type: format!("video/{name}"),
                clock_rate,
                fmtp: String::new(),
            });
        } else if let Some(fmtp) = line.strip_prefix("a=fmtp:")
            && let Some((pt, params)) = fmtp.split_once(' ')
            && let Ok(pt) = pt.parse::<u8>()
            && let Some(codec) = codecs.iter_mut().find(|c| c.payload_type == pt)
        {
            codec.fmtp = params.to_owned();
        }
    }
    codecs
}

/// The video codec each payload type of `sdp` stands for.
fn video_codecs_by_payload_type(sdp: &str) -> HashMap<u8, VideoCodec> {
    sdp_video_codecs(sdp)
        .into_iter()
        .filter_map(|c| Some((c.payload_type, VideoCodec::from_mime(&c.mime_type)?)))
        .collect()
}

fn fmtp_param<'a>(fmtp: &'a str, key: &str) -> Option<&'a str> {
    fmtp.split(';').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        k.trim().eq_ignore_ascii_case(key).then(|| v.trim())
    })
}

/// How a client peer reaches the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientNetwork {
    /// A UDP socket on 127.0.0.1: UDP host candidates only.
    Udp,
    /// No UDP socket at all: ICE-TCP only (RFC 6544), as on a network
    /// that blocks UDP. The peer dials the server's passive TCP
    /// candidates.
    TcpOnly,
}

/// A webrtc-rs peer connection on 127.0.0.1 with its events as channels.
pub struct ClientPeer {
    /// The connection.
    pub pc: Arc<dyn PeerConnection>,
    /// How it reaches the server.
    pub network: ClientNetwork,
    /// Latest connection state.
    pub state: watch::Receiver<RTCPeerConnectionState>,
    gathered: watch::Receiver<u64>,
    tracks: Mutex<Option<mpsc::UnboundedReceiver<Arc<dyn TrackRemote>>>>,
}

struct ClientHandler {
    state: watch::Sender<RTCPeerConnectionState>,
    gathered: watch::Sender<u64>,
    tracks: mpsc::UnboundedSender<Arc<dyn TrackRemote>>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for ClientHandler {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            self.gathered.send_modify(|n| *n += 1);
        }
    }
    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        let _ = self.state.send(state);
    }
    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let _ = self.tracks.send(track);
    }
}

fn opus_codec() -> RTCRtpCodecParameters {
    RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec {
            mime_type: MIME_TYPE_OPUS.to_owned(),
            clock_rate: 48_000,
            channels: 2,
            sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
            rtcp_feedback: vec![],
        },
        payload_type: OPUS_PT,
    }
}

/// Which codecs a client peer registers.
pub enum ClientCodecs {
    /// Exactly H264 (pm=1) and Opus, like OBS.
    H264AndOpus,
    /// Exactly one video codec and Opus, like a WHIP encoder.
    VideoAndOpus(TestVideo),
    /// webrtc-rs's defaults (VP8, VP9, several H264, AV1, Opus, ...), like a browser.
    Defaults,
    /// Exactly this video codec and Opus.
    Custom(RTCRtpCodecParameters),
}

impl ClientPeer {
    /// Builds a client peer bound to 127.0.0.1.
    pub async fn new(codecs: ClientCodecs) -> ClientPeer {
        Self::with_loss(codecs, None::<crate::loss::Lossless>).await
    }

    /// Builds a client peer that loses inbound RTP on purpose.
    pub async fn with_loss(
        codecs: ClientCodecs,
        loss: Option<impl Interceptor + 'static>,
    ) -> ClientPeer {
        Self::build(codecs, loss, ClientNetwork::Udp).await
    }

    /// Builds a client peer that reaches the server over `network`.
    pub async fn on(codecs: ClientCodecs, network: ClientNetwork) -> ClientPeer {
        Self::build(codecs, None::<crate::loss::Lossless>, network).await
    }

    async fn build(
        codecs: ClientCodecs,
        loss: Option<impl Interceptor + 'static>,
        network: ClientNetwork,
    ) -> ClientPeer {
        let mut media = MediaEngine::default();
        let video = match codecs {
            ClientCodecs::H264AndOpus => Some(TestVideo::H264.codec()),
            ClientCodecs::VideoAndOpus(video) => Some(video.codec()),
            ClientCodecs::Custom(codec) => Some(codec),
            ClientCodecs::Defaults => None,
        };
        match video {
            Some(video) => {
                media
                    .register_codec(video, RtpCodecKind::Video)
                    .expect("video codec");
                media
                    .register_codec(opus_codec(), RtpCodecKind::Audio)
                    .expect("opus");
            }
            None => media.register_default_codecs().expect("codecs"),
        }
        let mut registry = register_default_interceptors(Registry::new(), &mut media)
            .expect("interceptors")
            .with(Slot::from(KEYFRAME_REQUEST_SLOT), keyframe_request_tap());
        if let Some(loss) = loss {
            registry = registry.with(Slot::from(crate::loss::LOSS_SLOT), loss);
        }
        let (state_tx, state) = watch::channel(RTCPeerConnectionState::New);
        let (gathered_tx, gathered) = watch::channel(0);
        let (tracks_tx, tracks) = mpsc::unbounded_channel();
        let builder = PeerConnectionBuilder::new()
            .with_media_engine(media)
            .with_interceptor_registry(registry)
            .with_handler(Arc::new(ClientHandler {
                state: state_tx,
                gathered: gathered_tx,
                tracks: tracks_tx,
            }));
        let loopback = vec!["127.0.0.1:0".to_owned()];
        let builder = match network {
            ClientNetwork::Udp => builder.with_udp_addrs(loopback),
            // webrtc-rs gathers its active TCP candidate from a TCP
            // listener's address (and a passive one, unused here).
            ClientNetwork::TcpOnly => builder.with_tcp_addrs(loopback),
        };
        let pc = builder.build().await.expect("client peer connection");
        ClientPeer {
            pc: Arc::new(pc),
            network,
            state,
            gathered,
            tracks: Mutex::new(Some(tracks)),
        }
    }

    /// Adds `track` in a send-only transceiver, as a WHIP publisher does.
    pub async fn add_sending_track(&self, track: &Arc<TrackLocalStaticRTP>) {
        self.pc
            .add_transceiver_from_track(
                track.clone(),
                Some(RTCRtpTransceiverInit {
                    direction: RTCRtpTransceiverDirection::Sendonly,
                    ..Default::default()
                }),
            )
            .await
            .expect("add sending track");
    }

    /// Creates an offer and waits until it holds all local candidates.
    pub async fn offer(&self) -> String {
        let mut gathered = self.gathered.clone();
        gathered.mark_unchanged();
        let offer = self.pc.create_offer(None).await.expect("create offer");
        self.pc
            .set_local_description(offer)
            .await
            .expect("set local");
        tokio::time::timeout(Duration::from_secs(5), gathered.changed())
            .await
            .expect("gathering timed out")
            .expect("gathering");
        self.pc
            .local_description()
            .await
            .expect("local description")
            .sdp
    }

    /// Applies the server's answer. A TCP-only peer then dials the
    /// answer's passive TCP candidates: webrtc-rs opens a TCP connection
    /// only for a candidate given to `add_ice_candidate`, not for one in a
    /// description (a browser dials both).
    pub async fn accept_answer(&self, answer: &str) {
        let description = RTCSessionDescription::answer(answer.to_owned()).expect("answer SDP");
        self.pc
            .set_remote_description(description)
            .await
            .expect("set remote answer");
        if self.network == ClientNetwork::TcpOnly {
            // Component 1 only: media and RTCP share it (rtcp-mux), as a
            // browser's do; rtc repeats each candidate for component 2.
            let rtp_only = tcp_passive_candidates(answer)
                .into_iter()
                .filter(|c| c.split(' ').nth(1) == Some("1"));
            for candidate in rtp_only {
                self.pc
                    .add_ice_candidate(rtc::peer_connection::transport::RTCIceCandidateInit {
                        candidate: candidate.to_owned(),
                        sdp_mid: Some("0".to_owned()),
                        sdp_mline_index: Some(0),
                        ..Default::default()
                    })
                    .await
                    .expect("add the server's TCP candidate");
            }
        }
    }

    /// Waits until the connection is no longer up (closed, failed or
    /// disconnected) and returns that state.
    pub async fn wait_left(&self, limit: Duration) -> RTCPeerConnectionState {
        self.wait_state(limit, |s| {
            matches!(
                s,
                RTCPeerConnectionState::Closed
                    | RTCPeerConnectionState::Failed
                    | RTCPeerConnectionState::Disconnected
            )
        })
        .await
    }

    /// Waits until the connection state satisfies `pred`.
    pub async fn wait_state(
        &self,
        limit: Duration,
        pred: impl Fn(RTCPeerConnectionState) -> bool,
    ) -> RTCPeerConnectionState {
        let mut state = self.state.clone();
        tokio::time::timeout(limit, async {
            loop {
                let now = *state.borrow_and_update();
                if pred(now) {
                    return now;
                }
                if state.changed().await.is_err() {
                    return *state.borrow();
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("peer stayed {:?} for {limit:?}", *self.state.borrow()))
    }

    /// The state of the DTLS transport the connection's media runs over
    /// (`None` before it has one). A DTLS `close_notify` from the server
    /// turns it `Closed`; the connection state does not change with it
    /// while ICE stays up (W3C's algorithm), so this is how a client tells
    /// "closed by the server" from "timed out".
    pub async fn dtls_state(
        &self,
    ) -> Option<rtc::peer_connection::transport::RTCDtlsTransportState> {
        for receiver in self.pc.get_receivers().await {
            if let Ok(Some(transport)) = receiver.transport().await {
                return transport.state().await.ok();
            }
        }
        for sender in self.pc.get_senders().await {
            if let Ok(Some(transport)) = sender.transport().await {
                return transport.state().await.ok();
            }
        }
        None
    }

    /// Waits for `Connected`.
    pub async fn wait_connected(&self) {
        self.wait_state(Duration::from_secs(10), |s| {
            assert!(
                !matches!(
                    s,
                    RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed
                ),
                "peer connection ended before connecting: {s:?}"
            );
            s == RTCPeerConnectionState::Connected
        })
        .await;
    }

    /// Records every RTP packet that arrives on this peer's tracks, as a
    /// WHEP [`Viewer`] does; `offer` is the offer it sent (for the video
    /// codecs by payload type).
    pub fn record(&self, offer: &str) -> Arc<Mutex<Received>> {
        let received = Arc::new(Mutex::new(Received::default()));
        let (_never_paused, paused) = watch::channel(false);
        tokio::spawn(record_tracks(
            self.take_tracks(),
            video_codecs_by_payload_type(offer),
            received.clone(),
            paused,
        ));
        received
    }

    fn take_tracks(&self) -> mpsc::UnboundedReceiver<Arc<dyn TrackRemote>> {
        self.tracks
            .lock()
            .expect("tracks lock")
            .take()
            .expect("tracks taken twice")
    }
}

/// The `candidate:...` values of `sdp`'s passive ICE-TCP candidates.
pub fn tcp_passive_candidates(sdp: &str) -> Vec<&str> {
    sdp.lines()
        .filter_map(|l| l.trim_end().strip_prefix("a="))
        .filter(|c| {
            c.starts_with("candidate:")
                && c.split(' ')
                    .nth(2)
                    .is_some_and(|t| t.eq_ignore_ascii_case("tcp"))
                && c.contains(" tcptype passive")
        })
        .collect()
}

/// A session created by a POST.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    /// Absolute session URL.
    pub url: String,
    /// ETag of the 201.
    pub etag: String,
}

pub(crate) fn session_of(base: &str, response: &HttpResponse) -> SessionInfo {
    assert_eq!(response.status, 201, "POST failed: {}", response.body);
    let location = response.header("location").expect("Location header");
    SessionInfo {
        url: format!("{base}{location}"),
        etag: response.header("etag").expect("ETag header").to_owned(),
    }
}

/// A packet the publisher sent.
#[derive(Debug, Clone)]
pub struct SentPacket {
    /// Its sequence number.
    pub seq: u16,
    /// Its payload.
    pub payload: Bytes,
    /// Whether it starts a keyframe.
    pub keyframe_start: bool,
    /// When it was written.
    pub at: Instant,
}

/// Everything a publisher sent.
#[derive(Debug, Default)]
pub struct SentLog {
    /// Video packets in sending order.
    pub video: Vec<SentPacket>,
    /// Audio packets in sending order.
    pub audio: Vec<SentPacket>,
    /// Keyframe requests (PLI/FIR) received.
    pub keyframe_requests: usize,
}

/// A WHIP publisher sending one of the video fixtures and the Opus one.
pub struct Publisher {
    /// The connection.
    pub peer: ClientPeer,
    /// What its video track carries.
    pub test_video: TestVideo,
    /// The payload type its video goes out with.
    pub video_payload_type: u8,
    /// The WHIP session.
    pub session: SessionInfo,
    /// What has been sent so far.
    pub sent: Arc<Mutex<SentLog>>,
    video: Arc<TrackLocalStaticRTP>,
    audio: Arc<TrackLocalStaticRTP>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    video_numbering: Arc<Numbering>,
    keyframes: Keyframes,
    keyframe_switch: Arc<KeyframeSwitch>,
    audio_numbering: Arc<Numbering>,
}

/// When a test publisher sends keyframes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keyframes {
    /// The fixture's own (one a second), and one at once when asked (PLI
    /// or FIR): an encoder with a GOP that honours requests.
    Periodic,
    /// The fixture's own only; requests are counted, not answered: an
    /// encoder with a fixed GOP that ignores them, as OBS does.
    PeriodicIgnoringRequests,
    /// The first frame, then one only when asked: a browser.
    OnRequest,
    /// The first frame, then none, whatever is asked (requests are
    /// counted), until the test calls [`Publisher::send_keyframe`].
    Never,
}

impl Keyframes {
    fn answers_requests(self) -> bool {
        matches!(self, Keyframes::Periodic | Keyframes::OnRequest)
    }

    fn periodic(self) -> bool {
        matches!(
            self,
            Keyframes::Periodic | Keyframes::PeriodicIgnoringRequests
        )
    }
}

/// What the video sending task reads to decide on keyframes.
#[derive(Debug, Default)]
struct KeyframeSwitch {
    /// The next frame is to be a keyframe (asked for, or forced by the test).
    wanted: std::sync::atomic::AtomicBool,
    /// The fixture's own keyframes go out; otherwise they are skipped and
    /// only a wanted one is sent (after the first frame).
    periodic: bool,
}

fn local_track(
    kind: RtpCodecKind,
    codec: &RTCRtpCodecParameters,
    ssrc: u32,
) -> Arc<TrackLocalStaticRTP> {
    let name = format!("{kind}").to_lowercase();
    Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
        "publisher".to_owned(),
        name.clone(),
        name,
        kind,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(ssrc),
                ..Default::default()
            },
            codec: codec.rtp_codec.clone(),
            ..Default::default()
        }],
    )))
}

/// A client peer with a sending H264 and Opus track, as a WHIP publisher
/// builds it before its offer.
pub async fn publisher_peer() -> (
    ClientPeer,
    Arc<TrackLocalStaticRTP>,
    Arc<TrackLocalStaticRTP>,
) {
    publisher_peer_with(TestVideo::H264).await
}

/// Like [`publisher_peer`], with `video` instead of H264.
pub async fn publisher_peer_with(
    video: TestVideo,
) -> (
    ClientPeer,
    Arc<TrackLocalStaticRTP>,
    Arc<TrackLocalStaticRTP>,
) {
    publisher_peer_with_codec(video.codec()).await
}

/// A publisher's client peer offering exactly `video_codec` (a payload type
/// or fmtp of a particular client's choosing) and Opus.
pub async fn publisher_peer_with_codec(
    video_codec: RTCRtpCodecParameters,
) -> (
    ClientPeer,
    Arc<TrackLocalStaticRTP>,
    Arc<TrackLocalStaticRTP>,
) {
    publisher_peer_on(video_codec, ClientNetwork::Udp).await
}

/// [`publisher_peer_with_codec`] reaching the server over `network`.
pub async fn publisher_peer_on(
    video_codec: RTCRtpCodecParameters,
    network: ClientNetwork,
) -> (
    ClientPeer,
    Arc<TrackLocalStaticRTP>,
    Arc<TrackLocalStaticRTP>,
) {
    let peer = ClientPeer::on(ClientCodecs::Custom(video_codec.clone()), network).await;
    let video = local_track(RtpCodecKind::Video, &video_codec, rand::random());
    let audio = local_track(RtpCodecKind::Audio, &opus_codec(), rand::random());
    for track in [&audio, &video] {
        peer.add_sending_track(track).await;
    }
    (peer, video, audio)
}

/// How a client publishes: the video it sends and the exact HTTP request
/// it makes, so tests can replay particular clients' wire behaviour.
pub struct PublishRequest<'a> {
    /// The fixture sent as video.
    pub video: TestVideo,
    /// The video codec offered instead of `video`'s own (another payload
    /// type or fmtp); the fixture goes out with its payload type.
    pub video_codec: Option<RTCRtpCodecParameters>,
    /// Every request header, `content-type` included.
    pub headers: Vec<(&'a str, String)>,
    /// Rewrites the offer before it is sent.
    pub munge: Box<dyn FnOnce(String) -> String + 'a>,
}

impl Publisher {
    /// Publishes H264 and Opus to `{base}/whip/{room}/{stream}` and waits
    /// until connected.
    pub async fn connect(base: &str, room: &str, stream: &str) -> Publisher {
        Self::connect_with(base, room, stream, |offer| offer).await
    }

    /// Like [`connect`](Self::connect), offering and sending `video`
    /// instead of H264.
    pub async fn connect_video(
        base: &str,
        room: &str,
        stream: &str,
        video: TestVideo,
    ) -> Publisher {
        Self::negotiate(base, room, stream, video, None, |offer| offer)
            .await
            .unwrap_or_else(|r| panic!("WHIP POST: {} {}", r.status, r.body))
    }

    /// Publishes with `Authorization: Bearer <token>`; returns the response
    /// when it is not a 201.
    pub async fn connect_as(
        base: &str,
        room: &str,
        stream: &str,
        token: &str,
    ) -> Result<Publisher, HttpResponse> {
        Self::negotiate(base, room, stream, TestVideo::H264, Some(token), |offer| {
            offer
        })
        .await
    }

    /// Like [`connect`](Self::connect), with the offer rewritten by `munge`
    /// first, to reproduce the shapes other clients send (no candidates,
    /// `setup:passive`, ...).
    pub async fn connect_with(
        base: &str,
        room: &str,
        stream: &str,
        munge: impl FnOnce(String) -> String,
    ) -> Publisher {
        Self::negotiate(base, room, stream, TestVideo::H264, None, munge)
            .await
            .unwrap_or_else(|r| panic!("WHIP POST: {} {}", r.status, r.body))
    }

    async fn negotiate(
        base: &str,
        room: &str,
        stream: &str,
        test_video: TestVideo,
        token: Option<&str>,
        munge: impl FnOnce(String) -> String,
    ) -> Result<Publisher, HttpResponse> {
        let authorization = token.map(|t| format!("Bearer {t}"));
        let mut headers = vec![("content-type", SDP.to_owned())];
        if let Some(value) = authorization {
            headers.push(("authorization", value));
        }
        let request = PublishRequest {
            video: test_video,
            video_codec: None,
            headers,
            munge: Box::new(munge),
        };
        Self::publish(base, &format!("{base}/whip/{room}/{stream}"), request)
            .await
            .map(|(publisher, _)| publisher)
    }

    /// Publishes the way `request` describes (a particular client's headers
    /// and offer shape) and waits until connected. Returns the publisher and
    /// the server's 201, or the response when it is not a 201. The session
    /// URL is the Location resolved against `base`.
    pub async fn publish(
        base: &str,
        whip_url: &str,
        request: PublishRequest<'_>,
    ) -> Result<(Publisher, HttpResponse), HttpResponse> {
        Self::publish_on(base, whip_url, request, ClientNetwork::Udp).await
    }

    /// Publishes H264 and Opus to `{base}/whip/{room}/{stream}` over
    /// ICE-TCP only (no UDP socket), and waits until connected.
    pub async fn connect_over_tcp(base: &str, room: &str, stream: &str) -> Publisher {
        let request = PublishRequest {
            video: TestVideo::H264,
            video_codec: None,
            headers: vec![("content-type", SDP.to_owned())],
            munge: Box::new(|offer| offer),
        };
        let url = format!("{base}/whip/{room}/{stream}");
        Self::publish_on(base, &url, request, ClientNetwork::TcpOnly)
            .await
            .map(|(publisher, _)| publisher)
            .unwrap_or_else(|r| panic!("WHIP POST: {} {}", r.status, r.body))
    }

    async fn publish_on(
        base: &str,
        whip_url: &str,
        request: PublishRequest<'_>,
        network: ClientNetwork,
    ) -> Result<(Publisher, HttpResponse), HttpResponse> {
        let codec = request.video_codec.unwrap_or_else(|| request.video.codec());
        let video_payload_type = codec.payload_type;
        let (peer, video, audio) = publisher_peer_on(codec, network).await;
        let offer = (request.munge)(peer.offer().await);
        let headers: Vec<(&str, &str)> = request
            .headers
            .iter()
            .map(|(name, value)| (*name, value.as_str()))
            .collect();
        let response = crate::http_client::request("POST", whip_url, &headers, offer.clone()).await;
        if response.status != 201 {
            let _ = peer.pc.close().await;
            return Err(response);
        }
        let session = session_of(base, &response);
        let answer_setup = response
            .body
            .lines()
            .find(|l| l.starts_with("a=setup:"))
            .map(str::trim_end);
        if offer.contains("a=setup:passive") {
            assert_eq!(
                answer_setup,
                Some("a=setup:active"),
                "a passive offer needs an active answer"
            );
        }
        peer.accept_answer(&response.body).await;
        peer.wait_connected().await;
        let (stop, _) = watch::channel(false);
        let publisher = Publisher {
            peer,
            test_video: request.video,
            video_payload_type,
            session,
            sent: Arc::default(),
            video,
            audio,
            stop,
            tasks: Vec::new(),
            video_numbering: Arc::default(),
            keyframes: Keyframes::Periodic,
            keyframe_switch: Arc::default(),
            audio_numbering: Arc::default(),
        };
        Ok((publisher, response))
    }

    /// From now on, keyframe requests are counted but not answered: the
    /// keyframes come only on the fixture's schedule, as from an encoder
    /// with a fixed GOP.
    pub fn ignore_keyframe_requests(&mut self) {
        self.keyframes(Keyframes::PeriodicIgnoringRequests);
    }

    /// Sends keyframes as `policy` says from the next
    /// [`start_media`](Self::start_media) on.
    pub fn keyframes(&mut self, policy: Keyframes) {
        self.keyframes = policy;
    }

    /// Makes the next video frame a keyframe, whatever the policy (an
    /// encoder's keyframe forced by its operator).
    pub fn send_keyframe(&self) {
        self.keyframe_switch
            .wanted
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Starts sending the fixture in a loop in real time (30 fps video, 20 ms
    /// audio), its keyframes as [`keyframes`](Self::keyframes) says (by
    /// default the fixture's, and one at once for a PLI or FIR, as an
    /// encoder would).
    pub fn start_media(&mut self) {
        let answers = self.keyframes.answers_requests();
        self.stop.send_replace(false);
        self.keyframe_switch = Arc::new(KeyframeSwitch {
            periodic: self.keyframes.periodic(),
            ..KeyframeSwitch::default()
        });
        let switch = self.keyframe_switch.clone();
        // Keyframe requests arrive as RTCP on the video track.
        let video = self.video.clone();
        let sent = self.sent.clone();
        let answering = switch.clone();
        self.tasks.push(tokio::spawn(async move {
            while let Some(event) = video.poll().await {
                if let TrackLocalEvent::OnRtcpPacket(packets) = event
                    && packets.iter().any(|p| is_keyframe_request(p.as_ref()))
                {
                    sent.lock().expect("log").keyframe_requests += 1;
                    if answers {
                        answering
                            .wanted
                            .store(true, std::sync::atomic::Ordering::SeqCst);
                    }
                }
            }
        }));
        self.tasks.push(tokio::spawn(send_video(
            self.video.clone(),
            self.video_numbering.clone(),
            self.test_video,
            self.video_payload_type,
            self.sent.clone(),
            switch,
            self.stop.subscribe(),
        )));
        self.tasks.push(tokio::spawn(send_audio(
            self.audio.clone(),
            self.audio_numbering.clone(),
            self.sent.clone(),
            self.stop.subscribe(),
        )));
    }

    /// Stops sending media (the connection stays up).
    pub fn stop_media(&mut self) {
        let _ = self.stop.send(true);
        for task in self.tasks.drain(..) {
            task.abort();
        }
    }

    /// Sends DELETE for the session; returns the status.
    pub async fn delete(&self) -> u16 {
        request("DELETE", &self.session.url, &[], Bytes::new())
            .await
            .status
    }

    /// Closes the connection without telling the server (a crash).
    pub async fn vanish(mut self) {
        self.stop_media();
        let _ = self.peer.pc.close().await;
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.stop_media();
    }
}

/// A track's next RTP sequence number and timestamp, kept across
/// `stop_media`/`start_media` as an encoder keeps counting (restarting lower
/// would be dropped as replays by SRTP).
#[derive(Debug)]
pub struct Numbering {
    seq: std::sync::atomic::AtomicU32,
    timestamp: std::sync::atomic::AtomicU32,
}

impl Default for Numbering {
    fn default() -> Self {
        Numbering {
            seq: (u32::from(rand::random::<u16>() / 2)).into(),
            timestamp: rand::random::<u32>().into(),
        }
    }
}

impl Numbering {
    fn load(&self) -> (u16, u32) {
        use std::sync::atomic::Ordering::SeqCst;
        (self.seq.load(SeqCst) as u16, self.timestamp.load(SeqCst))
    }

    fn store(&self, seq: u16, timestamp: u32) {
        use std::sync::atomic::Ordering::SeqCst;
        self.seq.store(u32::from(seq), SeqCst);
        self.timestamp.store(timestamp, SeqCst);
    }
}

async fn send_video(
    track: Arc<TrackLocalStaticRTP>,
    numbering: Arc<Numbering>,
    video: TestVideo,
    payload_type: u8,
    sent: Arc<Mutex<SentLog>>,
    keyframes: Arc<KeyframeSwitch>,
    mut stop: watch::Receiver<bool>,
) {
    let frames = video.frames();
    let codec = video.video_codec();
    let ssrc = *track.ssrcs().await.first().expect("video ssrc");
    let (mut seq, mut timestamp) = numbering.load();
    let mut index = 0usize;
    let mut first = true;
    let mut tick = tokio::time::interval(Duration::from_micros(33_333));
    while !*stop.borrow() {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => break,
        }
        if keyframes
            .wanted
            .swap(false, std::sync::atomic::Ordering::SeqCst)
        {
            // Jump to the start of the next GOP: the fixture's keyframes
            // (every 30 frames in all of them) stand in for an encoder's
            // forced keyframe.
            index = index.div_ceil(30) * 30 % frames.len();
        } else if !keyframes.periodic && !first {
            // Only the very first frame, or a wanted one, is a keyframe:
            // the fixture's others are skipped (nobody decodes these).
            while frames[index % frames.len()].keyframe {
                index = (index + 1) % frames.len();
            }
        }
        first = false;
        let frame = &frames[index % frames.len()];
        index = (index + 1) % frames.len();
        let last = frame.payloads.len() - 1;
        for (i, payload) in frame.payloads.iter().enumerate() {
            let packet = rtp::Packet {
                header: rtp::header::Header {
                    version: 2,
                    marker: i == last,
                    payload_type,
                    sequence_number: seq,
                    timestamp,
                    ssrc,
                    ..Default::default()
                },
                payload: payload.clone(),
            };
            let keyframe_start = starts_keyframe(codec, payload);
            if track.write_rtp(packet).await.is_err() {
                return;
            }
            sent.lock().expect("log").video.push(SentPacket {
                seq,
                payload: payload.clone(),
                keyframe_start,
                at: Instant::now(),
            });
            seq = seq.wrapping_add(1);
        }
        timestamp = timestamp.wrapping_add(3000);
        numbering.store(seq, timestamp);
    }
}

async fn send_audio(
    track: Arc<TrackLocalStaticRTP>,
    numbering: Arc<Numbering>,
    sent: Arc<Mutex<SentLog>>,
    mut stop: watch::Receiver<bool>,
) {
    let packets = opus_packets();
    let ssrc = *track.ssrcs().await.first().expect("audio ssrc");
    let (mut seq, mut timestamp) = numbering.load();
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    for payload in packets.iter().cycle() {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => break,
        }
        let packet = rtp::Packet {
            header: rtp::header::Header {
                version: 2,
                payload_type: OPUS_PT,
                sequence_number: seq,
                timestamp,
                ssrc,
                ..Default::default()
            },
            payload: payload.clone(),
        };
        if track.write_rtp(packet).await.is_err() {
            return;
        }
        sent.lock().expect("log").audio.push(SentPacket {
            seq,
            payload: payload.clone(),
            keyframe_start: false,
            at: Instant::now(),
        });
        seq = seq.wrapping_add(1);
        timestamp = timestamp.wrapping_add(960);
        numbering.store(seq, timestamp);
    }
}

/// A packet a viewer received.
#[derive(Debug, Clone)]
pub struct ReceivedPacket {
    /// RTP header as received.
    pub header: rtp::header::Header,
    /// Payload.
    pub payload: Bytes,
    /// When it arrived.
    pub at: Instant,
    /// The video codec the viewer's own offer gives its payload type
    /// (`None` for audio, or a type the offer does not map to video).
    pub codec: Option<VideoCodec>,
}

impl ReceivedPacket {
    /// Whether it starts a keyframe of its codec (H264 when unknown).
    pub fn keyframe_start(&self) -> bool {
        starts_keyframe(self.codec.unwrap_or(VideoCodec::H264), &self.payload)
    }
}

/// Everything a viewer received, per kind.
#[derive(Default)]
pub struct Received {
    /// Video packets in arrival order.
    pub video: Vec<ReceivedPacket>,
    /// Audio packets in arrival order.
    pub audio: Vec<ReceivedPacket>,
    /// The kinds of the tracks that sent packets, in the order their first
    /// packet arrived.
    pub codecs: Vec<String>,
    /// The video track, once it arrived (to send RTCP on).
    pub video_track: Option<Arc<dyn TrackRemote>>,
}

/// A WHEP viewer recording what it receives.
pub struct Viewer {
    /// The connection.
    pub peer: ClientPeer,
    /// The WHEP session.
    pub session: SessionInfo,
    /// What arrived.
    pub received: Arc<Mutex<Received>>,
    /// While `true`, the viewer stops reading its tracks (its buffers fill).
    pub paused: watch::Sender<bool>,
    /// When the WHEP POST was sent.
    pub requested_at: Instant,
}

/// A publisher sending media and one viewer receiving its video: the
/// starting point of most session-level tests.
pub async fn live_stream(base: &str, room: &str, stream: &str) -> (Publisher, Viewer) {
    let mut publisher = Publisher::connect(base, room, stream).await;
    publisher.start_media();
    let viewer = Viewer::connect(base, room, stream)
        .await
        .unwrap_or_else(|r| panic!("WHEP: {} {}", r.status, r.body));
    viewer.peer.wait_connected().await;
    viewer.wait_video().await;
    (publisher, viewer)
}

/// A client peer with receive-only video and audio and a browser's codec
/// list, as a WHEP viewer builds it before its offer.
pub async fn viewer_peer() -> ClientPeer {
    viewer_peer_with_loss(None::<crate::loss::Lossless>).await
}

/// [`viewer_peer`] losing inbound RTP on purpose.
pub async fn viewer_peer_with_loss(loss: Option<impl Interceptor + 'static>) -> ClientPeer {
    viewer_peer_built(ClientPeer::with_loss(ClientCodecs::Defaults, loss).await).await
}

/// [`viewer_peer`] reaching the server over `network`.
pub async fn viewer_peer_on(network: ClientNetwork) -> ClientPeer {
    viewer_peer_built(ClientPeer::on(ClientCodecs::Defaults, network).await).await
}

async fn viewer_peer_built(peer: ClientPeer) -> ClientPeer {
    for kind in [RtpCodecKind::Video, RtpCodecKind::Audio] {
        peer.pc
            .add_transceiver_from_kind(
                kind,
                Some(RTCRtpTransceiverInit {
                    direction: RTCRtpTransceiverDirection::Recvonly,
                    ..Default::default()
                }),
            )
            .await
            .expect("add recvonly transceiver");
    }
    peer
}

impl Viewer {
    /// Plays `{base}/whep/{room}/{stream}`; returns the failed response if
    /// the POST is not a 201.
    pub async fn connect(base: &str, room: &str, stream: &str) -> Result<Viewer, HttpResponse> {
        Self::connect_as(base, room, stream, None).await
    }

    /// Plays with `Authorization: Bearer <token>` when `token` is given.
    pub async fn connect_as(
        base: &str,
        room: &str,
        stream: &str,
        token: Option<&str>,
    ) -> Result<Viewer, HttpResponse> {
        Self::negotiate(base, room, stream, token, None::<crate::loss::Lossless>).await
    }

    /// Plays through a network that loses inbound RTP as `loss` decides.
    pub async fn connect_lossy(
        base: &str,
        room: &str,
        stream: &str,
        loss: impl Interceptor + 'static,
    ) -> Result<Viewer, HttpResponse> {
        Self::negotiate(base, room, stream, None, Some(loss)).await
    }

    /// [`Viewer::connect_lossy`] with `Authorization: Bearer <token>`.
    pub async fn connect_lossy_as(
        base: &str,
        room: &str,
        stream: &str,
        token: &str,
        loss: impl Interceptor + 'static,
    ) -> Result<Viewer, HttpResponse> {
        Self::negotiate(base, room, stream, Some(token), Some(loss)).await
    }

    async fn negotiate(
        base: &str,
        room: &str,
        stream: &str,
        token: Option<&str>,
        loss: Option<impl Interceptor + 'static>,
    ) -> Result<Viewer, HttpResponse> {
        let peer = viewer_peer_with_loss(loss).await;
        let authorization = token.map(|t| format!("Bearer {t}"));
        let mut headers = vec![("content-type", SDP)];
        if let Some(value) = &authorization {
            headers.push(("authorization", value));
        }
        let url = format!("{base}/whep/{room}/{stream}");
        Self::play(base, &url, peer, &headers, |offer| offer)
            .await
            .map(|(viewer, _)| viewer)
    }

    /// Plays with a client peer built by the caller (an extra data channel,
    /// say) and exactly the request headers of a particular client, the
    /// offer rewritten by `munge`. Returns the viewer and the server's 201,
    /// or the response when it is not a 201.
    pub async fn play(
        base: &str,
        whep_url: &str,
        peer: ClientPeer,
        headers: &[(&str, &str)],
        munge: impl FnOnce(String) -> String,
    ) -> Result<(Viewer, HttpResponse), HttpResponse> {
        let offer = munge(peer.offer().await);
        let requested_at = Instant::now();
        let response = request("POST", whep_url, headers, offer.clone()).await;
        if response.status != 201 {
            let _ = peer.pc.close().await;
            return Err(response);
        }
        let session = session_of(base, &response);
        peer.accept_answer(&response.body).await;
        let received = Arc::new(Mutex::new(Received::default()));
        let (paused, paused_rx) = watch::channel(false);
        tokio::spawn(record_tracks(
            peer.take_tracks(),
            video_codecs_by_payload_type(&offer),
            received.clone(),
            paused_rx,
        ));
        let viewer = Viewer {
            peer,
            session,
            received,
            paused,
            requested_at,
        };
        Ok((viewer, response))
    }

    /// Sends DELETE for the session; returns the status.
    pub async fn delete(&self) -> u16 {
        request("DELETE", &self.session.url, &[], Bytes::new())
            .await
            .status
    }

    /// A copy of the video packets received so far.
    pub fn video(&self) -> Vec<ReceivedPacket> {
        self.received.lock().expect("received").video.clone()
    }

    /// Waits until video packets have arrived.
    pub async fn wait_video(&self) {
        crate::eventually(Duration::from_secs(10), "video at the viewer", || async {
            (!self.video().is_empty()).then_some(())
        })
        .await;
    }

    /// Waits until `n` distinct keyframes have arrived.
    pub async fn wait_keyframes(&self, n: usize) {
        crate::eventually(
            Duration::from_secs(10),
            "keyframes at the viewer",
            || async {
                let mut keyframes: Vec<u32> = self
                    .video()
                    .iter()
                    .filter(|p| p.keyframe_start())
                    .map(|p| p.header.timestamp)
                    .collect();
                keyframes.dedup();
                (keyframes.len() >= n).then_some(())
            },
        )
        .await;
    }

    /// Sends a PLI for the received video, as a decoder that lost its
    /// picture would.
    pub async fn request_keyframe(&self) {
        let track = self
            .received
            .lock()
            .expect("received")
            .video_track
            .clone()
            .expect("no video track yet");
        let media_ssrc = *track.ssrcs().await.first().expect("video ssrc");
        let pli = rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication {
            sender_ssrc: 0,
            media_ssrc,
        };
        track
            .write_rtcp(vec![Box::new(pli)])
            .await
            .expect("send PLI");
    }

    /// How many audio packets arrived so far.
    pub fn audio_count(&self) -> usize {
        self.received.lock().expect("received").audio.len()
    }
}

async fn record_tracks(
    mut tracks: mpsc::UnboundedReceiver<Arc<dyn TrackRemote>>,
    video_codecs: HashMap<u8, VideoCodec>,
    received: Arc<Mutex<Received>>,
    paused: watch::Receiver<bool>,
) {
    let video_codecs = Arc::new(video_codecs);
    while let Some(track) = tracks.recv().await {
        let received = received.clone();
        let video_codecs = video_codecs.clone();
        let mut paused = paused.clone();
        tokio::spawn(async move {
            let kind = track.kind().await;
            if kind == RtpCodecKind::Video {
                received.lock().expect("received").video_track = Some(track.clone());
            }
            loop {
                while *paused.borrow_and_update() {
                    if paused.changed().await.is_err() {
                        return;
                    }
                }
                let Some(event) = track.poll().await else {
                    return;
                };
                match event {
                    TrackRemoteEvent::OnRtpPacket(packet) => {
                        let mut log = received.lock().expect("received");
                        let kind_name = format!("{kind}");
                        if !log.codecs.contains(&kind_name) {
                            log.codecs.push(kind_name);
                        }
                        let codec = match kind {
                            RtpCodecKind::Video => {
                                video_codecs.get(&packet.header.payload_type).copied()
                            }
                            _ => None,
                        };
                        let entry = ReceivedPacket {
                            header: packet.header,
                            payload: packet.payload,
                            at: Instant::now(),
                            codec,
                        };
                        match kind {
                            RtpCodecKind::Video => log.video.push(entry),
                            _ => log.audio.push(entry),
                        }
                    }
                    TrackRemoteEvent::OnEnded => return,
                    _ => {}
                }
            }
        });
    }
}

/// Checks that `received` is, in sequence order, exactly the packets the
/// publisher sent from the keyframe it starts with: every packet of every
/// frame, none altered. A viewer that joined mid-GOP starts on the server's
/// cached keyframe, sent twice (the second copy closes the first for
/// receivers that wait for the next frame), and then continues from the next
/// live keyframe: that is accepted as the cached run, its copy, and a live
/// run starting at a keyframe. Returns how many packets were compared.
pub fn assert_continuous_from_keyframe(received: &[ReceivedPacket], sent: &[SentPacket]) -> usize {
    assert!(!received.is_empty(), "no video arrived");
    let mut ordered: Vec<_> = received.to_vec();
    // By signed distance from the first arrival: a repaired packet that
    // arrives after later ones (the very first one included) still sorts
    // where it belongs.
    ordered.sort_by_key(|p| {
        p.header
            .sequence_number
            .wrapping_sub(received[0].header.sequence_number) as i16
    });
    ordered.dedup_by_key(|p| p.header.sequence_number);
    assert!(
        ordered[0].keyframe_start(),
        "first video packet is not a keyframe start"
    );
    for pair in ordered.windows(2) {
        assert_eq!(
            pair[1].header.sequence_number,
            pair[0].header.sequence_number.wrapping_add(1),
            "gap in video sequence numbers"
        );
    }
    if !is_sent_run(&ordered, sent) {
        let first_frame = ordered
            .iter()
            .take_while(|p| p.header.timestamp == ordered[0].header.timestamp)
            .count();
        let (cached, rest) = ordered.split_at(first_frame);
        let copy = rest.len() >= cached.len()
            && rest
                .iter()
                .zip(cached)
                .all(|(again, first)| again.payload == first.payload);
        let live = if copy { &rest[cached.len()..] } else { rest };
        assert!(
            is_sent_run(cached, sent) && (live.is_empty() || live[0].keyframe_start()),
            "received video is not an unaltered, contiguous run of what was sent"
        );
        assert!(
            live.is_empty() || is_sent_run(live, sent),
            "after the cached keyframe, received video is not an unaltered, contiguous run of what was sent"
        );
    }
    ordered.len()
}

/// Whether `run` is, packet for packet, a stretch of what was sent.
fn is_sent_run(run: &[ReceivedPacket], sent: &[SentPacket]) -> bool {
    // A first payload can recur (SPS/PPS repeat at every IDR, and the
    // fixtures loop), so try every place it was sent.
    sent.iter()
        .enumerate()
        .filter(|(_, s)| s.payload == run[0].payload)
        .any(|(start, _)| {
            run.iter().enumerate().all(|(i, packet)| {
                sent.get(start + i)
                    .is_some_and(|expected| expected.payload == packet.payload)
            })
        })
}
