//! A measurement harness, not a server: the media engine's shards behind
//! the least WHIP/WHEP that lets vigil-bench drive them over HTTP, until
//! the engine is wired into `vigil` itself (issue 12).
//!
//! One stream: the latest WHIP publisher's tracks (as the shard reports
//! them at their first packets) are what every WHEP POST plays (H.264
//! Constrained Baseline and Opus, the codecs vigil-bench offers). Viewers
//! start from the shard's cached keyframe and their keyframe requests reach
//! the publisher as coalesced PLIs. No room owner, tokens, trickle or ICE
//! restart. DELETE answers 200 and closes the session.
//! `ENGINE_WHIP_DEBUG=1` prints every offer, answer and shard event.
//!
//! ```text
//! cargo build --release -p vigil-gateway --example engine_whip
//! target/release/examples/engine_whip [--http 127.0.0.1:18080] [--media 127.0.0.1:18189] [--shards 1]
//! ```

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rtc::peer_connection::configuration::media_engine::MIME_TYPE_OPUS;
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodec, RtpCodecKind};
use vigil_gateway::engine::shard::{ConnId, Event, TrackId};
use vigil_gateway::engine::shards::Engine;
use vigil_gateway::engine::{h264_baseline, send_track, session};
use vigil_gateway::sfu::MediaKind;
use vigil_gateway::sfu::layers::LayerChoice::High;

/// The published stream's sources, by kind, and every session by path id.
#[derive(Default)]
struct State {
    video: Option<TrackId>,
    audio: Option<TrackId>,
    sessions: HashMap<u64, (usize, ConnId)>,
    next: u64,
}

struct Harness {
    engine: Engine,
    state: Mutex<State>,
}

fn opus() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: MIME_TYPE_OPUS.to_owned(),
        clock_rate: 48_000,
        channels: 2,
        sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
        rtcp_feedback: Vec::new(),
    }
}

fn reply(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
}

impl Harness {
    async fn handle(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        let path = request.uri().path().to_owned();
        if request.method() == Method::DELETE {
            let id = path.rsplit('/').next().and_then(|id| id.parse().ok());
            let session = id.and_then(|id| self.state.lock().expect("state").sessions.remove(&id));
            return match session {
                Some((shard, conn)) => {
                    self.engine.remove_connection(shard, conn);
                    reply(StatusCode::OK, String::new())
                }
                None => reply(StatusCode::NOT_FOUND, String::new()),
            };
        }
        if request.method() != Method::POST {
            return reply(StatusCode::METHOD_NOT_ALLOWED, String::new());
        }
        let Ok(body) = request.into_body().collect().await else {
            return reply(StatusCode::BAD_REQUEST, "unreadable body".to_owned());
        };
        let offer = String::from_utf8_lossy(&body.to_bytes()).into_owned();
        let publish = path.starts_with("/whip/");
        let shard = self.engine.next_shard();
        let (video_ssrc, audio_ssrc): (u32, u32) = (rand::random(), rand::random());
        let tracks = if publish {
            Vec::new()
        } else {
            vec![
                send_track("audio", RtpCodecKind::Audio, audio_ssrc, opus()),
                send_track("video", RtpCodecKind::Video, video_ssrc, h264_baseline()),
            ]
        };
        let answered = match session::answer(
            &offer,
            shard.local_addr(),
            tracks,
            &Default::default(),
            Instant::now(),
        ) {
            Ok(answered) => answered,
            Err(e) => return reply(StatusCode::BAD_REQUEST, format!("{e}\n")),
        };
        let Some(conn) = shard.add_connection(answered.pc, answered.ufrag).await else {
            return reply(StatusCode::SERVICE_UNAVAILABLE, String::new());
        };
        if !publish {
            let (video, audio) = {
                let state = self.state.lock().expect("state");
                (state.video, state.audio)
            };
            let (Some(video), Some(&[audio_sender, video_sender])) =
                (video, answered.senders.get(..2))
            else {
                return reply(StatusCode::NOT_FOUND, "nothing published\n".to_owned());
            };
            let index = shard.index();
            self.engine
                .subscribe(video, index, conn, video_sender, video_ssrc, High)
                .await;
            if let Some(audio) = audio {
                self.engine
                    .subscribe(audio, index, conn, audio_sender, audio_ssrc, High)
                    .await;
            }
        }
        let id = {
            let mut state = self.state.lock().expect("state");
            state.next += 1;
            let id = state.next;
            state.sessions.insert(id, (shard.index(), conn));
            id
        };
        if std::env::var_os("ENGINE_WHIP_DEBUG").is_some() {
            eprintln!("OFFER\n{offer}\nANSWER\n{}", answered.answer);
        }
        let mut response = reply(StatusCode::CREATED, answered.answer);
        let headers = response.headers_mut();
        headers.insert("content-type", "application/sdp".parse().expect("header"));
        headers.insert(
            "location",
            format!("/sessions/{id}").parse().expect("header"),
        );
        response
    }
}

fn flag(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| default.to_owned())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let http: SocketAddr = flag("--http", "127.0.0.1:18080").parse().expect("--http");
    let media: SocketAddr = flag("--media", "127.0.0.1:18189").parse().expect("--media");
    let shards: usize = flag("--shards", "1").parse().expect("--shards");
    let (engine, mut events) = Engine::start(media, shards)?;
    let harness = Arc::new(Harness {
        engine,
        state: Mutex::default(),
    });
    // A viewer that starts asks, through its shard, for a keyframe of its
    // stream; the publisher's shard coalesces the requests into PLIs.
    let events_harness = harness.clone();
    tokio::spawn(async move {
        while let Some((shard, event)) = events.recv().await {
            if std::env::var_os("ENGINE_WHIP_DEBUG").is_some() {
                eprintln!("event from shard {shard}: {event:?}");
            }
            match event {
                Event::KeyframeRequest { source, .. } => {
                    events_harness.engine.request_keyframe(source);
                }
                Event::Track(track) => {
                    let mut state = events_harness.state.lock().expect("state");
                    match track.kind {
                        MediaKind::Video => state.video = Some(track.track),
                        MediaKind::Audio => state.audio = Some(track.track),
                    }
                }
                _ => {}
            }
        }
    });
    let listener = tokio::net::TcpListener::bind(http).await?;
    println!("engine_whip: HTTP {http}, media {media} ({shards} shard(s))");
    loop {
        let (stream, _) = listener.accept().await?;
        let harness = harness.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let harness = harness.clone();
                async move { Ok::<_, Infallible>(harness.handle(request).await) }
            });
            let _closed = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
