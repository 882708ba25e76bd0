//! The relay's WHEP client: a webrtc-rs peer connection that plays one
//! stream from another node.
//!
//! It offers to receive audio and video in every codec Vigil plays to
//! viewers (without RTX: a loss on the hop is repaired by the origin's
//! retransmission on the stream's own SSRC, answering the NACKs webrtc-rs's
//! default interceptors send), POSTs the offer to the origin's WHEP
//! endpoint, and reads the codec the origin chose for each track from the
//! answer: those are the codecs the stream is published with here. Its
//! only socket is on the relay address, so ICE pairs over the nodes'
//! internal network and nowhere else.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rtc::peer_connection::configuration::media_engine::{
    MIME_TYPE_AV1, MIME_TYPE_H264, MIME_TYPE_OPUS, MIME_TYPE_PCMA, MIME_TYPE_PCMU, MIME_TYPE_VP8,
    MIME_TYPE_VP9,
};
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodec, RTCRtpCodecParameters, RtpCodecKind};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use tokio::sync::mpsc;
use vigil_control::{RoomName, StreamName};
use webrtc::media_stream::track_remote::TrackRemote;
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler,
    RTCIceGatheringState, RTCPeerConnectionState, RTCSessionDescription, Registry,
    register_default_interceptors,
};

use super::Origin;
use crate::sfu::codecs::{self, Direction, TrackCodec};

/// How long gathering, the WHEP POST, and ICE with DTLS may each take.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest answer read.
const MAX_ANSWER_BYTES: usize = 256 * 1024;

/// What the peer connection reports, forwarded from its callbacks.
pub enum PcEvent {
    /// A track of the origin's arrived.
    Track(Arc<dyn TrackRemote>),
    /// The connection state changed.
    State(RTCPeerConnectionState),
}

struct Handler {
    events: mpsc::UnboundedSender<PcEvent>,
    gathered: mpsc::UnboundedSender<()>,
}

// Callbacks only forward: the relay task decides.
#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            let _ = self.gathered.send(());
        }
    }
    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        let _ = self.events.send(PcEvent::State(state));
    }
    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let _ = self.events.send(PcEvent::Track(track));
    }
}

/// A connected WHEP session at the origin.
pub struct Connection {
    /// The peer connection.
    pub pc: Arc<dyn PeerConnection>,
    /// The codec of each track the origin sends (what the answer chose).
    pub codecs: Vec<TrackCodec>,
    /// The connection's events; tracks that arrived while connecting are
    /// first.
    pub events: mpsc::UnboundedReceiver<PcEvent>,
    /// Tracks that arrived while connecting.
    pub early_tracks: Vec<Arc<dyn TrackRemote>>,
    session_url: Option<String>,
    bearer: Option<String>,
}

impl Connection {
    /// Ends the session: DELETE at the origin (bounded, best effort: a
    /// session the origin no longer has, or a node that died, is fine), and
    /// the peer connection closed.
    pub async fn close(self) {
        close_parts(
            &self.pc,
            self.session_url.as_deref(),
            self.bearer.as_deref(),
        )
        .await;
    }
}

async fn close_parts(
    pc: &Arc<dyn PeerConnection>,
    session_url: Option<&str>,
    bearer: Option<&str>,
) {
    if let Some(url) = session_url {
        let deleted =
            tokio::time::timeout(Duration::from_secs(2), request("DELETE", url, bearer, None))
                .await;
        if !matches!(deleted, Ok(Ok((status, _, _))) if status.is_success()) {
            tracing::debug!(
                url,
                "relay: DELETE at the origin failed (the session ends there by itself)"
            );
        }
    }
    // Closing an already closed or failed connection is not an error
    // worth reporting.
    let _ = pc.close().await;
}

/// Why pulling from an origin did not start.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// webrtc-rs refused (building, offering, the answer).
    #[error("WebRTC: {0}")]
    WebRtc(String),
    /// The origin could not be reached or did not answer in time.
    #[error("the origin is unreachable: {0}")]
    Unreachable(String),
    /// The origin answered the POST with another status than 201.
    #[error("the origin answered {status}: {body}")]
    Refused {
        /// The status.
        status: u16,
        /// The start of its body.
        body: String,
    },
    /// ICE or DTLS did not come up.
    #[error("the connection did not come up: {0}")]
    NotConnected(String),
}

fn webrtc_error(e: impl std::fmt::Display) -> ConnectError {
    ConnectError::WebRtc(e.to_string())
}

/// Plays `room`/`stream` from `origin`: offer, POST, answer, and waits
/// until ICE and DTLS are up.
pub async fn connect(
    origin: &Origin,
    room: &RoomName,
    stream: &StreamName,
    relay_ip: IpAddr,
) -> Result<Connection, ConnectError> {
    let mut media = MediaEngine::default();
    for (codec, kind) in offered_codecs() {
        media.register_codec(codec, kind).map_err(webrtc_error)?;
    }
    // NACK generator (a loss on the hop is asked again from the origin's
    // history), receiver reports, PLI/FIR feedback in the offer.
    let registry =
        register_default_interceptors(Registry::new(), &mut media).map_err(webrtc_error)?;
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let (gathered_tx, mut gathered) = mpsc::unbounded_channel();
    let pc = PeerConnectionBuilder::new()
        .with_media_engine(media)
        .with_interceptor_registry(registry)
        .with_handler(Arc::new(Handler {
            events: events_tx,
            gathered: gathered_tx,
        }))
        // One socket, on the relay address: the only host candidate, so
        // the pair is always the nodes' internal route (a concrete
        // address is bound as given, loopback included).
        .with_udp_addrs(vec![SocketAddr::new(relay_ip, 0)])
        .with_runtime(Arc::new(super::runtime::RelayRuntime::default()))
        .build()
        .await
        .map_err(webrtc_error)?;
    let pc: Arc<dyn PeerConnection> = Arc::new(pc);
    let connected = async {
        for kind in [RtpCodecKind::Audio, RtpCodecKind::Video] {
            pc.add_transceiver_from_kind(
                kind,
                Some(RTCRtpTransceiverInit {
                    direction: RTCRtpTransceiverDirection::Recvonly,
                    ..Default::default()
                }),
            )
            .await
            .map_err(webrtc_error)?;
        }
        let offer = pc.create_offer(None).await.map_err(webrtc_error)?;
        pc.set_local_description(offer)
            .await
            .map_err(webrtc_error)?;
        // No trickling: the offer carries the one candidate.
        tokio::time::timeout(STEP_TIMEOUT, gathered.recv())
            .await
            .map_err(|_| ConnectError::WebRtc("ICE gathering did not complete".into()))?;
        let offer = pc
            .local_description()
            .await
            .ok_or_else(|| ConnectError::WebRtc("no local description".into()))?
            .sdp;
        let url = format!(
            "{}/whep/{room}/{stream}",
            origin.base_url.trim_end_matches('/')
        );
        let (status, location, answer) = tokio::time::timeout(
            STEP_TIMEOUT,
            request("POST", &url, origin.bearer.as_deref(), Some(offer)),
        )
        .await
        .map_err(|_| ConnectError::Unreachable("no answer in time".into()))?
        .map_err(ConnectError::Unreachable)?;
        if status != hyper::StatusCode::CREATED {
            return Err(ConnectError::Refused {
                status: status.as_u16(),
                body: answer.chars().take(200).collect(),
            });
        }
        let session_url = location.map(|l| resolve(&origin.base_url, &l));
        Ok::<_, ConnectError>((answer, session_url))
    }
    .await;
    let (answer, session_url) = match connected {
        Ok(ok) => ok,
        Err(e) => {
            let _ = pc.close().await; // nothing was created at the origin
            return Err(e);
        }
    };
    let finish = async {
        let codecs = answered_codecs(&answer)?;
        let description = RTCSessionDescription::answer(answer).map_err(webrtc_error)?;
        pc.set_remote_description(description)
            .await
            .map_err(webrtc_error)?;
        let mut early_tracks = Vec::new();
        let up = tokio::time::timeout(STEP_TIMEOUT, async {
            while let Some(event) = events.recv().await {
                match event {
                    PcEvent::Track(track) => early_tracks.push(track),
                    PcEvent::State(RTCPeerConnectionState::Connected) => return Ok(()),
                    PcEvent::State(
                        state @ (RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed),
                    ) => return Err(ConnectError::NotConnected(format!("{state}"))),
                    PcEvent::State(_) => {}
                }
            }
            Err(ConnectError::NotConnected(
                "the connection went away".into(),
            ))
        })
        .await
        .map_err(|_| ConnectError::NotConnected("timed out".into()))?;
        up.map(|()| (codecs, early_tracks))
    }
    .await;
    match finish {
        Ok((codecs, early_tracks)) => Ok(Connection {
            pc,
            codecs,
            events,
            early_tracks,
            session_url,
            bearer: origin.bearer.clone(),
        }),
        Err(e) => {
            close_parts(&pc, session_url.as_deref(), origin.bearer.as_deref()).await;
            Err(e)
        }
    }
}

/// The codec of each track the answer's origin will send: the first
/// non-RTX codec of each audio and video section it sends in.
fn answered_codecs(answer: &str) -> Result<Vec<TrackCodec>, ConnectError> {
    let sections = codecs::parse_offer(answer)
        .map_err(|e| ConnectError::WebRtc(format!("the answer does not parse: {e}")))?;
    let chosen: Vec<TrackCodec> = sections
        .iter()
        .filter(|s| matches!(s.direction, Direction::SendOnly | Direction::SendRecv))
        .filter_map(|section| {
            let kind = match section.media.as_str() {
                "audio" => RtpCodecKind::Audio,
                "video" => RtpCodecKind::Video,
                _ => return None,
            };
            let codec = section
                .codecs
                .iter()
                .find(|c| !c.rtp_codec.mime_type.eq_ignore_ascii_case("video/rtx"))?;
            Some(TrackCodec {
                kind,
                params: codec.clone(),
                rtx: None,
            })
        })
        .collect();
    if chosen.is_empty() {
        return Err(ConnectError::WebRtc(
            "the answer sends no audio or video".into(),
        ));
    }
    Ok(chosen)
}

/// What the relay accepts: every codec Vigil plays to a viewer
/// (`codecs::is_playable`), H.264 in the usual profiles so the origin's
/// answer keeps the publisher's, and no RTX.
fn offered_codecs() -> Vec<(RTCRtpCodecParameters, RtpCodecKind)> {
    let codec =
        |mime: &str, clock_rate, channels, fmtp: &str, payload_type| RTCRtpCodecParameters {
            rtp_codec: RTCRtpCodec {
                mime_type: mime.to_owned(),
                clock_rate,
                channels,
                sdp_fmtp_line: fmtp.to_owned(),
                rtcp_feedback: Vec::new(),
            },
            payload_type,
        };
    let h264 = |profile: &str, payload_type| {
        codec(
            MIME_TYPE_H264,
            90_000,
            0,
            &format!("level-asymmetry-allowed=1;packetization-mode=1;profile-level-id={profile}"),
            payload_type,
        )
    };
    let audio = RtpCodecKind::Audio;
    let video = RtpCodecKind::Video;
    vec![
        (
            codec(MIME_TYPE_OPUS, 48_000, 2, "minptime=10;useinbandfec=1", 111),
            audio,
        ),
        (codec(MIME_TYPE_PCMU, 8_000, 0, "", 0), audio),
        (codec(MIME_TYPE_PCMA, 8_000, 0, "", 8), audio),
        (h264("42e01f", 102), video),
        (h264("42001f", 103), video),
        (h264("4d001f", 104), video),
        (h264("640032", 105), video),
        (h264("64001f", 106), video),
        (codec(MIME_TYPE_VP8, 90_000, 0, "", 96), video),
        (codec(MIME_TYPE_VP9, 90_000, 0, "profile-id=0", 98), video),
        (codec(MIME_TYPE_VP9, 90_000, 0, "profile-id=2", 100), video),
        (codec(MIME_TYPE_AV1, 90_000, 0, "", 45), video),
    ]
}

/// `location` (the origin's session path, or an absolute URL) against
/// `base`.
fn resolve(base: &str, location: &str) -> String {
    if location.starts_with("http://") || location.starts_with("https://") {
        location.to_owned()
    } else {
        format!(
            "{}/{}",
            base.trim_end_matches('/'),
            location.trim_start_matches('/')
        )
    }
}

/// One HTTP/1.1 request to a node: status, Location, body as text.
async fn request(
    method: &str,
    url: &str,
    bearer: Option<&str>,
    sdp: Option<String>,
) -> Result<(hyper::StatusCode, Option<String>, String), String> {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let mut builder = hyper::Request::builder().method(method).uri(url);
    if let Some(token) = bearer {
        builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let body = match sdp {
        Some(sdp) => {
            builder = builder.header(header::CONTENT_TYPE, "application/sdp");
            Full::new(Bytes::from(sdp))
        }
        None => Full::new(Bytes::new()),
    };
    let req = builder.body(body).map_err(|e| e.to_string())?;
    let response = client.request(req).await.map_err(|e| e.to_string())?;
    let status = response.status();
    let location = response
        .headers()
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = http_body_util::Limited::new(response.into_body(), MAX_ANSWER_BYTES)
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((
        status,
        location,
        String::from_utf8_lossy(&body).into_owned(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_relative_location_is_resolved_against_the_base() {
        assert_eq!(
            resolve("http://10.0.0.2:8080/", "/sessions/ab"),
            "http://10.0.0.2:8080/sessions/ab"
        );
        assert_eq!(
            resolve("http://a:1", "http://b:2/sessions/x"),
            "http://b:2/sessions/x"
        );
    }

    #[test]
    fn the_answer_names_each_track_codec() {
        let answer = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
            m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=sendonly\r\na=rtpmap:111 opus/48000/2\r\n\
            m=video 9 UDP/TLS/RTP/SAVPF 102 97\r\na=sendonly\r\na=rtpmap:102 H264/90000\r\n\
            a=fmtp:102 packetization-mode=1;profile-level-id=42e01f\r\na=rtpmap:97 rtx/90000\r\n\
            a=fmtp:97 apt=102\r\n";
        let codecs = answered_codecs(answer).expect("codecs");
        assert_eq!(codecs.len(), 2);
        assert_eq!(codecs[0].params.rtp_codec.mime_type, "audio/opus");
        assert_eq!(codecs[1].params.payload_type, 102);
        assert!(codecs[1].params.rtp_codec.sdp_fmtp_line.contains("42e01f"));
    }
}
