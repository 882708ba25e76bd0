//! One camera's task: connect with retina (DESCRIBE, SETUP, PLAY), publish
//! what viewers can play as a local publisher, forward its packets, and
//! when the camera goes away say why and try again after a backoff.
//!
//! States ([`CameraState`]) are reported to the control plane as they
//! change. A camera that refuses the credentials, or offers nothing
//! playable, is retried only every [`SLOW_RETRY`]: an NVR that locks an
//! account after a few failed logins must not be hammered. An unreachable
//! one is retried after 1, 2, 4… up to [`MAX_BACKOFF`] seconds, from 1 s
//! again once it has been live a while.
//!
//! On demand, the camera is pulled only from the first demand (a WHEP
//! POST for its stream) until it has had no viewer for [`LINGER`].

use std::num::NonZeroU16;
use std::time::{Duration, Instant};

use bytes::Bytes;
use retina::client::{
    Credentials, InitialTimestampPolicy, PacketItem, PlayOptions, Session, SessionOptions,
    SetupOptions, TcpTransportOptions, Transport, UdpTransportOptions,
};
use retina::codec::{ParametersRef, VideoParametersCodec};
use rtc::rtp;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::StreamExt as _;
use vigil_control::Facts;
use vigil_control::camera::{CameraSpec, CameraState, CameraStatus, CameraTrack, CameraTransport};

use super::clock::{SessionClock, TrackClock};
use super::describe::{self, Chosen, H264Params, Offered, Plan};
use super::h264::{Fitter, Out};
use crate::error::Error;
use crate::sfu::Sfu;
use crate::sfu::local::LocalPublisher;

/// The longest wait between attempts to reach an unreachable camera.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// The wait after a camera refused the credentials or offered nothing
/// playable (unless its settings change, which starts a new puller).
pub const SLOW_RETRY: Duration = Duration::from_secs(60);
/// How long an on-demand camera is kept after its last viewer left.
pub const LINGER: Duration = Duration::from_secs(10);
/// A live camera that sends nothing for this long is treated as gone.
pub const SILENCE: Duration = Duration::from_secs(5);
/// How long connecting (each of DESCRIBE, SETUP and PLAY) may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// What a puller is told.
pub enum Command {
    /// A viewer wants the stream: pull now (on demand), and answer once
    /// it is published or the attempt failed.
    Demand(oneshot::Sender<()>),
}

/// Why a pull ended.
struct Ended {
    state: CameraState,
    detail: String,
    /// The camera was live long enough that the backoff starts over.
    was_live: bool,
    /// The tracks it described, when this attempt got that far.
    tracks: Option<Vec<CameraTrack>>,
}

impl Ended {
    fn unreachable(detail: impl Into<String>) -> Self {
        Ended {
            state: CameraState::Unreachable,
            detail: detail.into(),
            was_live: false,
            tracks: None,
        }
    }

    fn unsupported(plan: &Plan) -> Self {
        Ended {
            state: CameraState::UnsupportedCodec,
            detail: plan.unsupported(),
            was_live: false,
            tracks: Some(plan.tracks.clone()),
        }
    }
}

/// Runs one camera until its command channel closes (removed or changed).
pub async fn run(
    spec: CameraSpec,
    sfu: Sfu,
    facts: Facts,
    mut commands: mpsc::UnboundedReceiver<Command>,
) {
    let mut reporter = Reporter {
        spec: &spec,
        facts: &facts,
        last: None,
        tracks: Vec::new(),
    };
    let mut waiters: Vec<oneshot::Sender<()>> = Vec::new();
    let mut backoff = Duration::from_secs(1);
    loop {
        if spec.on_demand && waiters.is_empty() {
            reporter.report(CameraState::Idle, "pulled when someone watches".into());
            match commands.recv().await {
                Some(Command::Demand(reply)) => waiters.push(reply),
                None => return,
            }
        }
        // A camera that is down stays reported as down while it is tried
        // again (one event when it goes, one when it is back), not
        // connecting-unreachable at every attempt.
        if !reporter
            .last
            .as_ref()
            .is_some_and(|(state, _)| state.offline())
        {
            reporter.report(
                CameraState::Connecting,
                format!("connecting to {}", spec.masked_url()),
            );
        }
        let ended = pull(&spec, &sfu, &mut reporter, &mut commands, &mut waiters).await;
        // Whoever waited is told: the WHEP request proceeds (and is
        // answered as for any stream without a publisher).
        waiters.clear();
        let Some(ended) = ended else {
            return; // removed or changed
        };
        if let Some(tracks) = &ended.tracks {
            reporter.tracks = tracks.clone();
        }
        if ended.state == CameraState::Idle {
            continue; // on demand, nobody watches any more
        }
        if ended.was_live {
            backoff = Duration::from_secs(1);
        }
        let wait = match ended.state {
            CameraState::Unauthorised | CameraState::UnsupportedCodec => SLOW_RETRY,
            _ => backoff,
        };
        backoff = (backoff * 2).min(MAX_BACKOFF);
        tracing::info!(
            room = %spec.room,
            camera = %spec.identity,
            url = %spec.masked_url(),
            state = ended.state.label(),
            detail = %ended.detail,
            retry_in_secs = wait.as_secs(),
            "camera not live"
        );
        reporter.report(ended.state, ended.detail);
        let until = tokio::time::Instant::now() + wait;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(until) => break,
                command = commands.recv() => match command {
                    // A viewer waiting out a backoff would wait long: it is
                    // answered now (the stream is not published).
                    Some(Command::Demand(reply)) => drop(reply),
                    None => return,
                },
            }
        }
    }
}

/// Reports state changes (only changes) to the control plane.
struct Reporter<'a> {
    spec: &'a CameraSpec,
    facts: &'a Facts,
    last: Option<(CameraState, String)>,
    tracks: Vec<CameraTrack>,
}

impl Reporter<'_> {
    fn report(&mut self, state: CameraState, detail: String) {
        if self
            .last
            .as_ref()
            .is_some_and(|(s, d)| *s == state && *d == detail)
        {
            return;
        }
        self.last = Some((state, detail.clone()));
        self.facts.camera_status(
            &self.spec.room,
            &self.spec.identity,
            CameraStatus {
                state,
                detail,
                tracks: self.tracks.clone(),
            },
        );
    }
}

/// One connection to the camera, from DESCRIBE until it ends. `None` if
/// the command channel closed (the camera was removed or changed).
async fn pull(
    spec: &CameraSpec,
    sfu: &Sfu,
    reporter: &mut Reporter<'_>,
    commands: &mut mpsc::UnboundedReceiver<Command>,
    waiters: &mut Vec<oneshot::Sender<()>>,
) -> Option<Ended> {
    let connecting = connect(spec);
    tokio::pin!(connecting);
    // Demands while connecting join the waiters.
    let (session, plan) = loop {
        tokio::select! {
            connected = &mut connecting => match connected {
                Ok(ok) => break ok,
                Err(ended) => return Some(ended),
            },
            command = commands.recv() => match command {
                Some(Command::Demand(reply)) => waiters.push(reply),
                None => return None,
            },
        }
    };
    reporter.tracks = plan.tracks.clone();
    // The session's clock starts at PLAY (docs/cameras.md, timestamps).
    let clock = SessionClock::new(Instant::now());
    let mut tracks: Vec<Forward> = plan
        .chosen
        .iter()
        .map(|chosen| Forward::new(chosen, rand::random(), &clock))
        .collect();
    let publisher = match sfu
        .publish_local(
            spec.room.clone(),
            spec.identity.clone(),
            spec.identity.to_string(),
            plan.chosen.iter().map(Chosen::codec).collect(),
            plan.chosen
                .iter()
                .zip(&tracks)
                .map(|(chosen, t)| chosen.local_track(t.ssrc))
                .collect(),
            crate::sfu::local::LocalOptions::default(),
        )
        .await
    {
        Ok(publisher) => publisher,
        Err(Error::ShuttingDown) => return None,
        Err(e) => {
            return Some(Ended::unreachable(format!(
                "cannot publish the stream: {e}"
            )));
        }
    };
    let transport = match spec.transport {
        CameraTransport::Tcp => "TCP",
        CameraTransport::Udp => "UDP",
    };
    let unplayable: Vec<&str> = plan
        .tracks
        .iter()
        .filter(|t| !t.playable)
        .map(|t| t.codec.as_str())
        .collect();
    let mut detail = format!("{} over {transport}", plan.published());
    if !unplayable.is_empty() {
        detail += &format!(
            " ({} not playable in WebRTC, not published)",
            unplayable.join(", ")
        );
    }
    reporter.report(CameraState::Live, detail);
    for waiter in waiters.drain(..) {
        let _ = waiter.send(());
    }
    let live_since = Instant::now();
    let ended = forward(spec, sfu, session, &publisher, &mut tracks, commands).await;
    let was_live = live_since.elapsed() >= Duration::from_secs(10);
    ended.map(|mut ended| {
        ended.was_live = was_live;
        ended
    })
}

/// DESCRIBE, SETUP of the tracks to publish, PLAY.
async fn connect(spec: &CameraSpec) -> Result<(Session<retina::client::Playing>, Plan), Ended> {
    let url = url::Url::parse(&spec.url)
        .map_err(|e| Ended::unreachable(format!("the URL does not parse: {e}")))?;
    let creds = (!spec.username.is_empty() || !spec.password.is_empty()).then(|| Credentials {
        username: spec.username.clone(),
        password: spec.password.clone(),
    });
    let options = SessionOptions::default()
        .creds(creds)
        .user_agent(format!("Vigil/{}", env!("CARGO_PKG_VERSION")));
    let mut session = step(Session::describe(url, options)).await?;
    let offered: Vec<Offered> = session.streams().iter().map(offered).collect();
    let plan = describe::plan(&offered);
    if plan.chosen.is_empty() {
        return Err(Ended::unsupported(&plan));
    }
    for chosen in &plan.chosen {
        let transport = match spec.transport {
            CameraTransport::Tcp => Transport::Tcp(TcpTransportOptions::default()),
            CameraTransport::Udp => Transport::Udp(UdpTransportOptions::default()),
        };
        step(session.setup(chosen.stream, SetupOptions::default().transport(transport))).await?;
    }
    // Our own clock mapping replaces RTP-Info's (cameras get it wrong).
    let playing = step(
        session.play(PlayOptions::default().initial_timestamp(InitialTimestampPolicy::Ignore)),
    )
    .await?;
    Ok((playing, plan))
}

/// One RTSP step, bounded in time, its error classified.
async fn step<T>(
    future: impl std::future::Future<Output = Result<T, retina::Error>>,
) -> Result<T, Ended> {
    match tokio::time::timeout(STEP_TIMEOUT, future).await {
        Err(_) => Err(Ended::unreachable(format!(
            "no answer within {} s",
            STEP_TIMEOUT.as_secs()
        ))),
        Ok(Err(e)) if e.status_code() == Some(401) => Err(Ended {
            state: CameraState::Unauthorised,
            detail: "the camera refused the credentials (401)".into(),
            was_live: false,
            tracks: None,
        }),
        Ok(Err(e)) => Err(Ended::unreachable(first_line(&e.to_string()))),
        Ok(Ok(value)) => Ok(value),
    }
}

/// retina's errors carry the request and response after a blank line.
fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or(text).to_owned()
}

/// A retina stream as the planner sees it.
fn offered(stream: &retina::client::Stream) -> Offered {
    let h264 = match stream.parameters() {
        Some(ParametersRef::Video(video)) => match video.codec_params() {
            VideoParametersCodec::H264 { sps, pps } => Some(H264Params {
                profile_level_id: video
                    .rfc6381_codec()
                    .rsplit('.')
                    .next()
                    .unwrap_or_default()
                    .to_owned(),
                sps: sps.to_vec(),
                pps: pps.to_vec(),
            }),
            _ => None,
        },
        _ => None,
    };
    Offered {
        media: stream.media().to_owned(),
        encoding: stream.encoding_name().to_owned(),
        clock_rate: stream.clock_rate_hz(),
        channels: stream.channels().map(NonZeroU16::get),
        h264,
    }
}

/// One published track's forwarding state.
struct Forward {
    stream: usize,
    ssrc: u32,
    payload_type: u8,
    seq: u16,
    clock: TrackClock,
    /// H.264 only.
    fitter: Option<Fitter>,
}

impl Forward {
    fn new(chosen: &Chosen, ssrc: u32, clock: &SessionClock) -> Self {
        Forward {
            stream: chosen.stream,
            ssrc,
            payload_type: chosen.codec().params.payload_type,
            seq: rand::random(),
            clock: clock.track(chosen.clock_rate),
            fitter: chosen
                .h264
                .as_ref()
                .map(|p| Fitter::new(&p.sps, &p.pps))
                .or_else(|| (chosen.mime == "video/H264").then(Fitter::default)),
        }
    }
}

/// Forwards the camera's packets until it goes away (`Some`), or the
/// puller is stopped (`None`).
async fn forward(
    spec: &CameraSpec,
    sfu: &Sfu,
    mut session: Session<retina::client::Playing>,
    publisher: &LocalPublisher,
    tracks: &mut [Forward],
    commands: &mut mpsc::UnboundedReceiver<Command>,
) -> Option<Ended> {
    let mut outs: Vec<Out> = Vec::new();
    let mut idle_check = tokio::time::interval(Duration::from_secs(1));
    idle_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut unwatched_since: Option<Instant> = None;
    loop {
        let item = tokio::select! {
            item = tokio::time::timeout(SILENCE, session.next()) => item,
            command = commands.recv() => match command {
                Some(Command::Demand(reply)) => {
                    let _ = reply.send(());
                    unwatched_since = None;
                    continue;
                }
                None => return None,
            },
            _ = idle_check.tick(), if spec.on_demand => {
                if sfu.viewer_count(&spec.room, &spec.identity).await > 0 {
                    unwatched_since = None;
                } else if unwatched_since.get_or_insert_with(Instant::now).elapsed() >= LINGER {
                    return Some(Ended {
                        state: CameraState::Idle,
                        detail: String::new(),
                        was_live: true,
                        tracks: None,
                    });
                }
                continue;
            }
        };
        let packet = match item {
            Err(_) => {
                return Some(Ended::unreachable(format!(
                    "the camera sent nothing for {} s",
                    SILENCE.as_secs()
                )));
            }
            Ok(None) => return Some(Ended::unreachable("the camera ended the session")),
            Ok(Some(Err(e))) => return Some(Ended::unreachable(first_line(&e.to_string()))),
            Ok(Some(Ok(PacketItem::Rtp(packet)))) => packet,
            Ok(Some(Ok(_))) => continue, // RTCP: retina keeps what it needs
        };
        let arrived = Instant::now();
        let Some(track) = tracks.iter_mut().find(|t| t.stream == packet.stream_id()) else {
            continue;
        };
        let header = packet.header();
        let (timestamp, marker, loss) = (header.timestamp(), header.mark(), packet.loss());
        let ours = track.clock.map(timestamp, arrived);
        // Lost packets keep their place in our numbering, so the loss
        // shows in the stream's statistics.
        track.seq = track.seq.wrapping_add(loss);
        let payload = packet.into_payload_bytes();
        outs.clear();
        match &mut track.fitter {
            Some(fitter) => fitter.push(payload, timestamp, marker, &mut outs),
            None => outs.push(Out { payload, marker }),
        }
        let batch: Vec<rtp::Packet> = outs
            .drain(..)
            .map(|out| {
                let seq = track.seq;
                track.seq = seq.wrapping_add(1);
                packet_of(track, seq, ours, out.marker, out.payload)
            })
            .collect();
        if !batch.is_empty() && !publisher.send(batch) {
            return None; // the engine stopped: shutdown
        }
    }
}

fn packet_of(
    track: &Forward,
    seq: u16,
    timestamp: u32,
    marker: bool,
    payload: Bytes,
) -> rtp::Packet {
    rtp::Packet {
        header: rtp::header::Header {
            version: 2,
            marker,
            payload_type: track.payload_type,
            sequence_number: seq,
            timestamp,
            ssrc: track.ssrc,
            ..Default::default()
        },
        payload,
    }
}
