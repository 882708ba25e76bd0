//! The media engine's shards, with webrtc-rs peers on real UDP over
//! 127.0.0.1: a publisher and three viewers whose media all pass through
//! one shard's single socket (ICE-lite, credentials the engine chose, one
//! host candidate for all), and sessions spread over two shards, the
//! publisher on one and viewers on both.
//!
//! Not yet through HTTP: the engine is not wired into the WHIP/WHEP
//! handlers (issue 12); the test negotiates with `engine::session::answer`
//! directly and subscribes the viewers itself.

use std::time::{Duration, Instant};

use bytes::Bytes;
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use std::sync::atomic::Ordering;

use vigil_gateway::engine::shard::{Event, Source};
use vigil_gateway::engine::shards::Engine;
use vigil_gateway::engine::{send_track, session};
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
    let relayed = fan_out(1, 3).await;
    assert_eq!(relayed, [0], "one shard relays nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_spread_over_two_shards_get_every_packet() {
    let relayed = fan_out(2, 4).await;
    // Two of the four viewers are on shard 1: each packet crossed once.
    assert_eq!(
        relayed,
        [100, 0],
        "once per packet per shard, not per viewer"
    );
}

/// A publisher on shard 0 and `viewer_count` viewers spread over `shards`
/// shards in turn; 100 packets must reach every viewer unaltered, in
/// order, on its own SSRC. Returns how many packets each shard relayed.
async fn fan_out(shards: usize, viewer_count: u32) -> Vec<u64> {
    init_logging();
    let (engine, mut events) =
        Engine::start("127.0.0.1:0".parse().expect("address"), shards).expect("engine");
    let home = &engine.shards()[0];
    let port = home.local_addr();

    let (publisher, video, _audio) = publisher_peer().await;
    let offer = publisher.offer().await;
    let camera = ssrc_of(&offer, "video");
    let answered = session::answer(&offer, port, Vec::new(), Instant::now()).expect("answer");
    assert_one_candidate(&answered.answer, port);
    let conn = home
        .add_connection(answered.pc, answered.ufrag)
        .await
        .expect("publisher added");
    let source = Source {
        shard: 0,
        conn,
        ssrc: camera,
    };
    publisher.accept_answer(&answered.answer).await;
    publisher.wait_connected().await;

    let mut viewers = Vec::new();
    for i in 0..viewer_count {
        let on = i as usize % shards;
        let shard = &engine.shards()[on];
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
        let answered = session::answer(&offer, port, vec![track], Instant::now()).expect("answer");
        assert_one_candidate(&answered.answer, port);
        let viewer = shard
            .add_connection(answered.pc, answered.ufrag)
            .await
            .expect("viewer added");
        let received = peer.record(&offer);
        peer.accept_answer(&answered.answer).await;
        peer.wait_connected().await;
        assert!(
            engine
                .subscribe(source, on, viewer, answered.senders[0], ssrc)
                .await,
            "subscribed"
        );
        viewers.push((peer, received, ssrc));
    }
    let mut connected = 0;
    let sessions = viewer_count + 1;
    while connected < sessions {
        match tokio::time::timeout(Duration::from_secs(5), events.recv()).await {
            Ok(Some((_, Event::Connected(_)))) => connected += 1,
            Ok(Some(_)) => {}
            other => panic!("the shards reported {connected} of {sessions} connections: {other:?}"),
        }
    }

    let sent: Vec<Bytes> = (0..100u16)
        .map(|seq| {
            // The first is an IDR: video viewers start at a keyframe.
            let nal = if seq == 0 { 0x65 } else { 0x41 };
            Bytes::from(vec![nal, 0x9a, (seq >> 8) as u8, seq as u8, 0xab])
        })
        .collect();
    for (seq, payload) in sent.iter().enumerate() {
        let packet = rtp::Packet {
            header: rtp::header::Header {
                version: 2,
                payload_type: TestVideo::H264.payload_type(),
                sequence_number: 4000 + seq as u16,
                timestamp: 3000 * seq as u32,
                marker: true,
                ssrc: camera,
                ..Default::default()
            },
            payload: payload.clone(),
        };
        video.write_rtp(packet).await.expect("publish");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }

    for (_, received, ssrc) in &viewers {
        eventually(
            Duration::from_secs(5),
            "every packet at every viewer",
            || async {
                (received.lock().expect("received").video.len() >= sent.len()).then_some(())
            },
        )
        .await;
        let log = received.lock().expect("received");
        let payloads: Vec<&Bytes> = log.video.iter().map(|p| &p.payload).collect();
        assert_eq!(
            payloads,
            sent.iter().collect::<Vec<_>>(),
            "unaltered, in order"
        );
        assert!(
            log.video.iter().all(|p| p.header.ssrc == *ssrc),
            "its own SSRC"
        );
    }
    engine
        .shards()
        .iter()
        .map(|s| s.io_stats().relayed.load(Ordering::Relaxed))
        .collect()
}
