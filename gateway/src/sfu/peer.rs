//! Building and negotiating the server side of one WebRTC session.
//!
//! Each session gets its own `PeerConnection` with a `MediaEngine` holding
//! exactly the codecs chosen for it (see `codecs`), one UDP socket on the
//! configured ICE address, the default interceptors (NACK both ways, RTCP
//! reports, TWCC feedback) and the keyframe-request tap. The event handler
//! holds no state and takes no lock: it turns each webrtc callback into a
//! [`PeerEvent`] for the room owner, and counts finished gatherings so that
//! negotiation can wait for "all candidates" (RFC 9725 §4.3.2: the server
//! does not trickle).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use rtc::ice::mdns::MulticastDnsMode;
use rtc::ice::network_type::NetworkType;
use rtc::interceptor::{NackGeneratorBuilder, NackResponderBuilder, Slot};
use rtc::peer_connection::configuration::interceptor_registry::{
    configure_rtcp_reports, configure_simulcast_extension_headers, configure_twcc_receiver_only,
};
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use rtc::rtp_transceiver::rtp_sender::{RTCPFeedback, TYPE_RTCP_FB_NACK};
use tokio::sync::watch;
use webrtc::media_stream::track_remote::TrackRemote;
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler,
    RTCConfigurationBuilder, RTCIceCandidateType, RTCIceGatheringState, RTCPeerConnectionState,
    RTCSessionDescription, Registry, SettingEngineBuilder,
};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::sfu::codecs::TrackCodec;
use crate::sfu::media_runtime::MediaRuntime;
use crate::sfu::rtcp::{KEYFRAME_REQUEST_SLOT, keyframe_request_tap};

/// How long to wait for our own ICE candidates (host candidates are immediate;
/// this only bounds a misconfigured machine).
const GATHER_TIMEOUT: Duration = Duration::from_secs(5);

/// Time between ICE connectivity checks while connecting.
const ICE_CHECK_INTERVAL: Duration = Duration::from_millis(50);

/// What a peer connection reports to its owner.
pub enum PeerEvent {
    /// The connection state changed.
    State(RTCPeerConnectionState),
    /// The remote side started sending a track (publishers only).
    Track(Arc<dyn TrackRemote>),
}

/// Where a peer's events go.
pub type EventSink = Arc<dyn Fn(PeerEvent) + Send + Sync>;

/// The parts of [`Config`] that shape a peer connection.
#[derive(Debug, Clone)]
pub struct PeerSettings {
    bind: IpAddr,
    advertise: Vec<IpAddr>,
    disconnected_timeout: Duration,
    failed_timeout: Duration,
}

impl From<&Config> for PeerSettings {
    fn from(config: &Config) -> Self {
        PeerSettings {
            bind: config.ice_bind,
            advertise: config.advertise_ips.clone(),
            disconnected_timeout: config.ice_disconnected_timeout,
            failed_timeout: config.ice_failed_timeout,
        }
    }
}

/// One server-side peer connection.
pub struct Peer {
    pc: Arc<dyn PeerConnection>,
    gathered: watch::Receiver<u64>,
}

struct Handler {
    events: EventSink,
    gathered: watch::Sender<u64>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            self.gathered.send_modify(|n| *n += 1);
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        (self.events)(PeerEvent::State(state));
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        (self.events)(PeerEvent::Track(track));
    }
}

impl Peer {
    /// Builds a peer connection that can carry `codecs`.
    pub async fn build(
        settings: &PeerSettings,
        codecs: &[TrackCodec],
        events: EventSink,
    ) -> Result<Peer> {
        let mut media = MediaEngine::default();
        for codec in codecs {
            for params in std::iter::once(&codec.params).chain(&codec.rtx) {
                media
                    .register_codec(params.clone(), codec.kind)
                    .map_err(|e| Error::Internal(format!("registering codec: {e}")))?;
            }
        }
        let registry = interceptors(&mut media)
            .map_err(|e| Error::Internal(format!("interceptors: {e}")))?
            .with(Slot::from(KEYFRAME_REQUEST_SLOT), keyframe_request_tap());
        // Audio needs the mid extension too, to demultiplex a bundle whose
        // offer signals no SSRC (the video side is registered by default).
        media
            .register_header_extension(
                rtc::rtp_transceiver::rtp_sender::RTCRtpHeaderExtensionCapability {
                    uri: rtc::sdp::extmap::SDES_MID_URI.to_owned(),
                },
                RtpCodecKind::Audio,
                None,
            )
            .map_err(|e| Error::Internal(format!("header extension: {e}")))?;

        // No mDNS: remote `.local` candidates cannot be reached from a
        // server (trickle drops them), and the default query mode opens a
        // socket on 5353 per session that fails with ENODEV on hosts
        // without a multicast route, refusing every session.
        let mut setting = SettingEngineBuilder::new()
            .with_multicast_dns_mode(MulticastDnsMode::Disabled)
            .with_ice_timeouts(
                Some(settings.disconnected_timeout),
                Some(settings.failed_timeout),
                Some(Duration::from_secs(2)),
            )
            // Connectivity checks every 50 ms while connecting (RFC 8445's
            // Ta) rather than webrtc-rs's 200 ms: connecting waited for that
            // tick, and it was most of a WHEP viewer's time to first packet
            // (205 -> 55 ms, docs/performance.md). The same 1.4 s of
            // attempts per pair as the default.
            .with_ice_connection_attempts(Some(ICE_CHECK_INTERVAL), Some(28))
            .with_network_types(vec![if settings.bind.is_ipv4() {
                NetworkType::Udp4
            } else {
                NetworkType::Udp6
            }]);
        if !settings.advertise.is_empty() {
            setting = setting.with_nat_1to1_ips(
                settings.advertise.iter().map(IpAddr::to_string).collect(),
                RTCIceCandidateType::Host,
            );
        }

        let (gathered_tx, gathered) = watch::channel(0);
        let handler = Arc::new(Handler {
            events,
            gathered: gathered_tx,
        });
        let pc = PeerConnectionBuilder::new()
            .with_configuration(RTCConfigurationBuilder::new().build())
            .with_media_engine(media)
            .with_setting_engine(setting.build())
            .with_interceptor_registry(registry)
            .with_handler(handler)
            .with_runtime(MediaRuntime::for_peer())
            .with_udp_addrs(vec![SocketAddr::new(settings.bind, 0)])
            .build()
            .await
            .map_err(|e| Error::Internal(format!("creating peer connection: {e}")))?;
        Ok(Peer {
            pc: Arc::new(pc),
            gathered,
        })
    }

    /// The underlying connection.
    pub fn pc(&self) -> &Arc<dyn PeerConnection> {
        &self.pc
    }

    /// Applies a remote offer and returns the complete answer SDP, with every
    /// local candidate in it.
    pub async fn answer(&self, offer: String) -> Result<String> {
        let offer =
            RTCSessionDescription::offer(offer).map_err(|e| Error::MalformedSdp(e.to_string()))?;
        self.pc
            .set_remote_description(offer)
            .await
            .map_err(|e| Error::MalformedSdp(e.to_string()))?;
        self.create_and_apply_answer().await
    }

    /// Answers the current remote description again (after an ICE restart
    /// changed it) and returns the new local SDP.
    pub async fn create_and_apply_answer(&self) -> Result<String> {
        let mut gathered = self.gathered.clone();
        gathered.mark_unchanged();
        let answer = self
            .pc
            .create_answer(None)
            .await
            .map_err(|e| Error::UnsupportedMedia(format!("cannot answer the offer: {e}")))?;
        self.pc
            .set_local_description(answer)
            .await
            .map_err(|e| Error::Internal(format!("applying the answer: {e}")))?;
        // A restart that keeps the existing candidates may not gather again;
        // then the timeout ends the wait and the description is complete anyway.
        let _ = tokio::time::timeout(GATHER_TIMEOUT, gathered.changed()).await;
        let local = self
            .pc
            .local_description()
            .await
            .ok_or_else(|| Error::Internal("no local description".into()))?;
        Ok(finish_answer(&local.sdp))
    }

    /// Closes the connection (DTLS close, sockets released).
    pub async fn close(&self) {
        if let Err(e) = self.pc.close().await {
            tracing::debug!("closing peer connection: {e}");
        }
    }
}

/// Packets each viewer track keeps for retransmission on NACK. webrtc-rs's
/// default is 1024 slots allocated up front per stream (about 130 KB per
/// viewer); 512 still covers 2 s at 2.5 Mbit/s and 0.7 s at 8 Mbit/s, far
/// longer than a retransmission is useful to a live player.
const NACK_HISTORY: u16 = 512;

/// webrtc-rs's default interceptors (NACK both ways, RTCP reports, TWCC
/// feedback, simulcast header extensions) with a smaller NACK history.
fn interceptors(media: &mut MediaEngine) -> rtc::shared::error::Result<Registry> {
    for parameter in ["", "pli"] {
        media.register_feedback(
            RTCPFeedback {
                typ: TYPE_RTCP_FB_NACK.to_owned(),
                parameter: parameter.to_owned(),
            },
            RtpCodecKind::Video,
        );
    }
    let registry = Registry::new()
        .with(
            Slot::NackResponder,
            NackResponderBuilder::new().with_size(NACK_HISTORY).build(),
        )
        .with(Slot::NackGenerator, NackGeneratorBuilder::new().build());
    configure_simulcast_extension_headers(media)?;
    let registry = configure_twcc_receiver_only(registry, media)?;
    Ok(configure_rtcp_reports(registry))
}

/// Adds `a=rtcp-mux-only` after each `a=rtcp-mux` (RFC 9725 §4.4.1 asks for
/// it in every bundled m-section) and guarantees CRLF line endings, which
/// OBS and medooze's client rely on.
pub fn finish_answer(sdp: &str) -> String {
    let mut out = String::with_capacity(sdp.len() + 64);
    let has_mux_only = sdp.contains("a=rtcp-mux-only");
    for line in sdp.lines() {
        let line = line.trim_end_matches('\r');
        out.push_str(line);
        out.push_str("\r\n");
        if line == "a=rtcp-mux" && !has_mux_only {
            out.push_str("a=rtcp-mux-only\r\n");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::finish_answer;

    #[test]
    fn answer_gets_rtcp_mux_only_and_crlf() {
        let out = finish_answer(
            "v=0\nm=audio 9 UDP/TLS/RTP/SAVPF 111\na=rtcp-mux\nm=video 9 x 96\r\na=rtcp-mux\r\n",
        );
        assert_eq!(out.matches("a=rtcp-mux-only\r\n").count(), 2);
        assert!(!out.replace("\r\n", "").contains('\n'));
    }
}
