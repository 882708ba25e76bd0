//! A simulcast WHIP publisher, as a browser or OBS 32+ publishes: one video
//! m-section with `a=simulcast:send q;h;f` and three RTP streams, each
//! carrying its rid (and the mid) in RTP header extensions and no SSRC in
//! the SDP.
//!
//! Each layer sends 30 single-packet H264 frames a second whose payload
//! names the layer ([`layer_of`]), at three sizes, so a viewer can tell
//! which layer every packet it received came from; a keyframe every
//! [`GOP_FRAMES`] frames, or at the next frame after a PLI for that
//! layer's SSRC.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use rtc::media_stream::MediaStreamTrack;
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use tokio::task::JoinHandle;
use vigil_gateway::sfu::rtcp::is_keyframe_request;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};

use crate::http_client::{HttpResponse, request};
use crate::peers::{ClientCodecs, ClientPeer, SessionInfo, TestVideo, session_of};

/// The layers: rid and payload bytes per frame (about 40, 130 and 340
/// kbit/s at 30 fps), lowest first.
pub const LAYERS: [(&str, usize); 3] = [("q", 150), ("h", 500), ("f", 1400)];

/// Frames between two scheduled keyframes of a layer (4 s).
pub const GOP_FRAMES: u32 = 120;

const SDES_MID: &str = "urn:ietf:params:rtp-hdrext:sdes:mid";
const SDES_RID: &str = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id";

/// Which layer (index into [`LAYERS`]) a received video payload came from.
pub fn layer_of(payload: &[u8]) -> Option<usize> {
    payload
        .get(1)
        .map(|&l| usize::from(l))
        .filter(|&l| l < LAYERS.len())
}

/// The rids of an answer's `a=simulcast:recv` line, sorted (alternatives
/// and the paused marker `~` stripped). Only a CRLF-terminated line counts:
/// OBS reads the rid list up to CRLF.
pub fn simulcast_recv_rids(answer: &str) -> Option<Vec<String>> {
    let line = answer
        .split("\r\n")
        .find(|l| l.starts_with("a=simulcast:"))?;
    let list = line.strip_prefix("a=simulcast:recv ")?;
    let mut rids: Vec<String> = list
        .split(';')
        .flat_map(|alternatives| alternatives.split(','))
        .map(|rid| rid.trim_start_matches('~').to_owned())
        .collect();
    rids.sort_unstable();
    Some(rids)
}

/// A publisher sending three simulcast layers.
pub struct SimulcastPublisher {
    /// The connection.
    pub peer: ClientPeer,
    /// The WHIP session.
    pub session: SessionInfo,
    /// The server's 201.
    pub response: HttpResponse,
    /// Keyframe requests received, per layer.
    pub keyframe_requests: Arc<Mutex<[usize; 3]>>,
    paused: Arc<[AtomicBool; 3]>,
    tasks: Vec<JoinHandle<()>>,
}

impl SimulcastPublisher {
    /// Publishes to `{base}/whip/{room}/{stream}`, waits until connected and
    /// starts sending all three layers.
    pub async fn connect(base: &str, room: &str, stream: &str) -> SimulcastPublisher {
        let peer = ClientPeer::new(ClientCodecs::H264AndOpus).await;
        let codec = TestVideo::H264.codec();
        let ssrcs: [u32; 3] = rand::random();
        let encodings = LAYERS
            .iter()
            .zip(ssrcs)
            .map(|((rid, _), ssrc)| RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    rid: (*rid).to_owned(),
                    ssrc: Some(ssrc),
                    ..Default::default()
                },
                codec: codec.rtp_codec.clone(),
                ..Default::default()
            })
            .collect();
        let track = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
            "publisher".to_owned(),
            "video".to_owned(),
            "video".to_owned(),
            RtpCodecKind::Video,
            encodings,
        )));
        peer.add_sending_track(&track).await;
        let offer = peer.offer().await;
        assert!(
            offer.contains("a=simulcast:send"),
            "the client offers simulcast:\n{offer}"
        );
        let ids = Extensions::from_sdp(&offer);
        let response = request(
            "POST",
            &format!("{base}/whip/{room}/{stream}"),
            &[("content-type", "application/sdp")],
            offer,
        )
        .await;
        let session = session_of(base, &response);
        peer.accept_answer(&response.body).await;
        peer.wait_connected().await;

        let keyframe_requests = Arc::new(Mutex::new([0; 3]));
        let wanted: Arc<[AtomicBool; 3]> = Arc::default();
        let paused: Arc<[AtomicBool; 3]> = Arc::default();
        let mut tasks = Vec::new();
        let (feedback_track, requests, flags) =
            (track.clone(), keyframe_requests.clone(), wanted.clone());
        tasks.push(tokio::spawn(async move {
            while let Some(event) = feedback_track.poll().await {
                let TrackLocalEvent::OnRtcpPacket(packets) = event else {
                    continue;
                };
                for packet in packets.iter().filter(|p| is_keyframe_request(p.as_ref())) {
                    for media_ssrc in packet.destination_ssrc() {
                        if let Some(layer) = ssrcs.iter().position(|&s| s == media_ssrc) {
                            requests.lock().expect("requests")[layer] += 1;
                            flags[layer].store(true, Ordering::SeqCst);
                        }
                    }
                }
            }
        }));
        tasks.push(tokio::spawn(send_layers(
            track,
            ssrcs,
            ids,
            wanted,
            paused.clone(),
        )));
        SimulcastPublisher {
            peer,
            session,
            response,
            keyframe_requests,
            paused,
            tasks,
        }
    }

    /// Stops (`true`) or resumes sending one layer, as a browser pauses its
    /// top layer when its uplink shrinks.
    pub fn pause_layer(&self, layer: usize, paused: bool) {
        self.paused[layer].store(paused, Ordering::SeqCst);
    }
}

impl Drop for SimulcastPublisher {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// The header extension ids and mid the offer negotiated.
#[derive(Clone)]
struct Extensions {
    mid_id: u8,
    rid_id: u8,
    mid: String,
}

impl Extensions {
    fn from_sdp(sdp: &str) -> Extensions {
        let id_of = |uri: &str| {
            sdp.lines()
                .find_map(|line| {
                    let rest = line.trim_end().strip_prefix("a=extmap:")?;
                    let (id, name) = rest.split_once(' ')?;
                    (name == uri).then(|| id.split('/').next()?.parse().ok())?
                })
                .unwrap_or_else(|| panic!("no extmap for {uri} in the offer"))
        };
        let mid = sdp
            .lines()
            .find_map(|line| line.trim_end().strip_prefix("a=mid:"))
            .expect("a=mid in the offer")
            .to_owned();
        Extensions {
            mid_id: id_of(SDES_MID),
            rid_id: id_of(SDES_RID),
            mid,
        }
    }
}

async fn send_layers(
    track: Arc<TrackLocalStaticRTP>,
    ssrcs: [u32; 3],
    ids: Extensions,
    keyframe_wanted: Arc<[AtomicBool; 3]>,
    paused: Arc<[AtomicBool; 3]>,
) {
    let mut seq: [u16; 3] = rand::random();
    let timestamp_base: [u32; 3] = rand::random();
    let mut frames = tokio::time::interval(Duration::from_millis(33));
    for frame in 0u32.. {
        frames.tick().await;
        for (layer, (rid, size)) in LAYERS.iter().enumerate() {
            if paused[layer].load(Ordering::SeqCst) {
                continue;
            }
            let keyframe =
                frame % GOP_FRAMES == 0 || keyframe_wanted[layer].swap(false, Ordering::SeqCst);
            let mut payload = BytesMut::with_capacity(*size);
            // An IDR or non-IDR slice NAL unit, then the layer and frame.
            payload.put_u8(if keyframe { 0x65 } else { 0x41 });
            payload.put_u8(layer as u8);
            payload.put_u32(frame);
            payload.resize(*size, 0xab);
            let mut packet = rtp::Packet {
                header: rtp::header::Header {
                    version: 2,
                    marker: true,
                    payload_type: crate::peers::H264_PT,
                    sequence_number: seq[layer],
                    timestamp: timestamp_base[layer].wrapping_add(frame.wrapping_mul(3000)),
                    ssrc: ssrcs[layer],
                    ..Default::default()
                },
                payload: payload.freeze(),
            };
            seq[layer] = seq[layer].wrapping_add(1);
            let header = &mut packet.header;
            header
                .set_extension(ids.mid_id, Bytes::from(ids.mid.clone()))
                .expect("mid extension");
            header
                .set_extension(ids.rid_id, Bytes::from_static(rid.as_bytes()))
                .expect("rid extension");
            if track.write_rtp(packet).await.is_err() {
                return;
            }
        }
    }
}

/// A WHEP viewer's video, reduced to which layer each packet came from, in
/// sequence order, with keyframe flags.
pub fn layers_received(video: &[crate::peers::ReceivedPacket]) -> Vec<(u16, usize, bool)> {
    let mut out: Vec<_> = video
        .iter()
        .filter_map(|p| {
            Some((
                p.header.sequence_number,
                layer_of(&p.payload)?,
                p.keyframe_start(),
            ))
        })
        .collect();
    if let Some(&(first, _, _)) = out.first() {
        out.sort_by_key(|&(seq, _, _)| seq.wrapping_sub(first));
        out.dedup_by_key(|p| p.0);
    }
    out
}

/// Per layer, how many packets; for failure messages.
pub fn layer_counts(received: &[(u16, usize, bool)]) -> HashMap<&'static str, usize> {
    let mut counts = HashMap::new();
    for &(_, layer, _) in received {
        *counts.entry(LAYERS[layer].0).or_default() += 1;
    }
    counts
}
