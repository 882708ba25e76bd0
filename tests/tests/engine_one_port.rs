//! The media engine's shards, with webrtc-rs peers on real UDP over
//! 127.0.0.1: a publisher and three viewers whose media all pass through
//! one shard's single socket (ICE-lite, credentials the engine chose, one
//! host candidate for all); sessions spread over two shards, the
//! publisher on one and viewers on both; and a republish onto the other
//! shard.
//!
//! Below HTTP and the room owner: the test negotiates with
//! `engine::session::answer` directly and subscribes the viewers itself
//! (every other media test goes through WHIP/WHEP, which runs on the same
//! engine).

use std::time::{Duration, Instant};

use bytes::Bytes;
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use std::sync::atomic::Ordering;

use vigil_gateway::engine::shard::{Event, TrackId};
use vigil_gateway::engine::shards::Engine;
use vigil_gateway::engine::{send_track, session};
use vigil_gateway::sfu::MediaKind;
use vigil_gateway::sfu::layers::LayerChoice;
use vigil_tests::peers::{TestVideo, publisher_peer, viewer_peer};
use vigil_tests::{eventually, init_logging};
use webrtc::media_stream::track_local::TrackLocal;

/// The SSRC the offer announces for its first `kind` section.
fn ssrc_of(offer: &str, kind: &str) -> u32 {
    offer
        .split("\r\nm=")
        .find(|section| section.starts_with(kind))
        .and_then(|section| {
            section
                .lines()
                .find_map(|line| line.strip_prefix("a=ssrc:"))
                .and_then(|rest| rest.split(' ').next())
                .and_then(|ssrc| ssrc.parse().ok())
        })
        .unwrap_or_else(|| panic!("no {kind} SSRC in the offer"))
}

/// Every candidate of an answer is the shard's one address.
fn assert_one_candidate(answer: &str, port: std::net::SocketAddr) {
    let candidates: Vec<&str> = answer
        .lines()
        .filter(|l| l.starts_with("a=candidate:"))
        .collect();
    assert!(!candidates.is_empty(), "no candidate in the answer");
    for candidate in candidates {
        let fields: Vec<&str> = candidate.split(' ').collect();
        assert_eq!(
            (fields[4], fields[5]),
            (
                port.ip().to_string().as_str(),
                port.port().to_string().as_str()
            ),
            "{candidate}"
        );
    }
    assert!(answer.contains("a=ice-lite"), "the engine is ICE-lite");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_reaches_three_viewers_through_one_port() {
    let mut world = World::start(1, 3).await;
    let camera = world.publish_on(0).await;
    world.play(&camera).await;
    world.send_and_check(&camera, 100, 100).await;
    assert_eq!(world.relayed(), [0], "one shard relays nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_spread_over_two_shards_get_every_packet() {
    let mut world = World::start(2, 4).await;
    let camera = world.publish_on(0).await;
    world.play(&camera).await;
    world.send_and_check(&camera, 100, 100).await;
    // Two of the four viewers are on shard 1: each packet crossed once.
    assert_eq!(
        world.relayed(),
        [100, 0],
        "once per packet per shard, not per viewer"
    );
}

/// The publisher on shard 0 leaves and a new one comes on shard 1: the
/// viewers on both shards stay, are moved to it, and get its packets after
/// the first one's, on their own SSRC, numbered on; now shard 1 relays to
/// shard 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_on_both_shards_move_to_a_publisher_on_the_other_shard() {
    let mut world = World::start(2, 4).await;
    let first = world.publish_on(0).await;
    world.play(&first).await;
    world.send_and_check(&first, 100, 100).await;
    world.engine.remove_connection(0, first.track.conn);
    let second = world.publish_on(1).await;
    assert_eq!(
        world.engine.move_viewers(first.track, second.track).await,
        2,
        "viewers on both shards moved"
    );
    world.send_and_check(&second, 100, 200).await;
    assert_eq!(
        world.relayed(),
        [100, 100],
        "each publisher's packets crossed once"
    );
}

/// A publisher's video track, its SSRC, and the track it is on the engine.
struct Camera {
    _peer: vigil_tests::peers::ClientPeer,
    video: std::sync::Arc<webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP>,
    ssrc: u32,
    track: TrackId,
}

/// Viewers spread over an engine's shards, and what each received.
struct World {
    engine: Engine,
    events: tokio::sync::mpsc::UnboundedReceiver<vigil_gateway::engine::io::ShardEvent>,
    shards: usize,
    viewer_count: u32,
    viewers: Vec<(
        vigil_tests::peers::ClientPeer,
        std::sync::Arc<std::sync::Mutex<vigil_tests::peers::Received>>,
        u32,
    )>,
    /// Payloads sent so far, in order, over every publisher.
    sent: Vec<Bytes>,
}

impl World {
    async fn start(shards: usize, viewer_count: u32) -> World {
        init_logging();
        let (engine, events) =
            Engine::start("127.0.0.1:0".parse().expect("address"), shards, false).expect("engine");
        World {
            engine,
            events,
            shards,
            viewer_count,
            viewers: Vec::new(),
            sent: Vec::new(),
        }
    }

    /// Connects a publisher on shard `on`; returns once the shard reports
    /// it connected.
    async fn publish_on(&mut self, on: usize) -> Camera {
        let shard = &self.engine.shards()[on];
        let port = shard.local_addr();
        let (peer, video, _audio) = publisher_peer().await;
        let offer = peer.offer().await;
        let camera = ssrc_of(&offer, "video");
        let answered = session::answer(
            &offer,
            port,
            Vec::new(),
            &Default::default(),
            Instant::now(),
        )
        .expect("answer");
        assert_one_candidate(&answered.answer, port);
        let conn = shard
            .add_connection(answered.pc, answered.ufrag)
            .await
            .expect("publisher added");
        peer.accept_answer(&answered.answer).await;
        peer.wait_connected().await;
        let (track, _) = shard
            .published_tracks(conn)
            .await
            .into_iter()
            .find(|(_, kind)| *kind == MediaKind::Video)
            .expect("a video track");
        self.wait_connected(1).await;
        Camera {
            _peer: peer,
            video,
            ssrc: camera,
            track,
        }
    }

    /// Connects `viewer_count` viewers over the shards in turn, each
    /// subscribed to `camera`.
    async fn play(&mut self, camera: &Camera) {
        for i in 0..self.viewer_count {
            let on = i as usize % self.shards;
            let shard = &self.engine.shards()[on];
            let port = shard.local_addr();
            let peer = viewer_peer().await;
            let offer = peer.offer().await;
            let ssrc = 0x5100 + i;
            let track = send_track(
                "video",
                RtpCodecKind::Video,
                ssrc,
                TestVideo::H264.codec().rtp_codec,
            );
            let answered = session::answer(
                &offer,
                port,
                vec![track],
                &Default::default(),
                Instant::now(),
            )
            .expect("answer");
            assert_one_candidate(&answered.answer, port);
            let viewer = shard
                .add_connection(answered.pc, answered.ufrag)
                .await
                .expect("viewer added");
            let received = peer.record(&offer);
            peer.accept_answer(&answered.answer).await;
            peer.wait_connected().await;
            assert!(
                self.engine
                    .subscribe(
                        camera.track,
                        on,
                        viewer,
                        answered.senders[0],
                        ssrc,
                        LayerChoice::High
                    )
                    .await,
                "subscribed"
            );
            self.viewers.push((peer, received, ssrc));
        }
        self.wait_connected(self.viewer_count).await;
    }

    async fn wait_connected(&mut self, sessions: u32) {
        let mut connected = 0;
        while connected < sessions {
            match tokio::time::timeout(Duration::from_secs(5), self.events.recv()).await {
                Ok(Some((_, Event::Connected(_)))) => connected += 1,
                Ok(Some(_)) => {}
                other => {
                    panic!("the shards reported {connected} of {sessions} connections: {other:?}")
                }
            }
        }
    }

    /// `camera` sends `count` packets (the first an IDR); then every viewer
    /// must have the `total` payloads sent so far, unaltered, in order, on
    /// its own SSRC, numbered without a gap.
    async fn send_and_check(&mut self, camera: &Camera, count: u16, total: usize) {
        for seq in 0..count {
            // The first is an IDR: video viewers start at a keyframe.
            let nal = if seq == 0 { 0x65 } else { 0x41 };
            let payload = Bytes::from(vec![nal, 0x9a, (seq >> 8) as u8, seq as u8, 0xab]);
            let packet = rtp::Packet {
                header: rtp::header::Header {
                    version: 2,
                    payload_type: TestVideo::H264.payload_type(),
                    sequence_number: 4000u16.wrapping_add(seq),
                    timestamp: 3000 * u32::from(seq),
                    marker: true,
                    ssrc: camera.ssrc,
                    ..Default::default()
                },
                payload: payload.clone(),
            };
            camera.video.write_rtp(packet).await.expect("publish");
            self.sent.push(payload);
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        assert_eq!(self.sent.len(), total);
        for (_, received, ssrc) in &self.viewers {
            eventually(
                Duration::from_secs(5),
                "every packet at every viewer",
                || async {
                    (received.lock().expect("received").video.len() >= total).then_some(())
                },
            )
            .await;
            let log = received.lock().expect("received");
            let payloads: Vec<&Bytes> = log.video.iter().map(|p| &p.payload).collect();
            assert_eq!(
                payloads,
                self.sent.iter().collect::<Vec<_>>(),
                "unaltered, in order"
            );
            assert!(
                log.video.iter().all(|p| p.header.ssrc == *ssrc),
                "its own SSRC"
            );
            assert!(
                log.video.windows(2).all(|w| {
                    w[1].header.sequence_number == w[0].header.sequence_number.wrapping_add(1)
                }),
                "numbered without a gap"
            );
        }
    }

    /// Packets each shard relayed.
    fn relayed(&self) -> Vec<u64> {
        self.engine
            .shards()
            .iter()
            .map(|s| s.io_stats().relayed.load(Ordering::Relaxed))
            .collect()
    }
}
