//! GetStreamStats reports what really crossed the wire: the publisher's
//! bitrate within 10 % of what it sent, the fixture's picture size, and a
//! viewer whose path drops one video packet in ten reporting ≈ 10 % loss
//! (its receiver reports count what never arrived before any repair: the
//! repairs come on its RTX stream), while a clean viewer reports none.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use vigil_proto::v1 as pb;
use vigil_tests::control::{Scene, admin, subscribe_only};
use vigil_tests::eventually;
use vigil_tests::loss::drop_every_nth;
use vigil_tests::peers::{TestVideo, Viewer};

const ROOM: &str = "site-1";

async fn stats(scene: &Scene, stream: &str) -> pb::StreamStats {
    scene
        .clients
        .rooms
        .clone()
        .get_stream_stats(admin(pb::GetStreamStatsRequest {
            room: scene.room.clone(),
            stream: stream.to_owned(),
        }))
        .await
        .expect("GetStreamStats")
        .into_inner()
}

fn video(stats: &pb::StreamStats) -> Option<&pb::TrackStats> {
    stats
        .tracks
        .iter()
        .find(|t| t.kind == pb::TrackKind::Video as i32)
}

fn viewer_video<'a>(
    stats: &'a pb::StreamStats,
    identity: &str,
) -> Option<&'a pb::ViewerTrackStats> {
    stats
        .viewers
        .iter()
        .find(|v| v.identity == identity)?
        .tracks
        .iter()
        .find(|t| t.kind == pb::TrackKind::Video as i32)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_report_bitrate_resolution_and_each_viewers_loss() {
    let mut scene = Scene::new(ROOM).await;
    let publisher = scene.publisher("cam-1").await;
    let clean = scene.viewer("cam-1", "wall-clean").await;

    let offer = vigil_tests::peers::viewer_peer().await.offer().await;
    let h264 = TestVideo::H264
        .offered_payload_type(&offer)
        .expect("a viewer offers H264");
    let dropped = Arc::new(AtomicUsize::new(0));
    let token = scene.token("wall-lossy", subscribe_only()).await;
    let lossy = Viewer::connect_lossy_as(
        &scene.base,
        ROOM,
        "cam-1",
        &token,
        drop_every_nth(10, [h264], dropped.clone()),
    )
    .await
    .expect("WHEP 201");
    lossy.peer.wait_connected().await;
    lossy.wait_video().await;

    // Receiver reports come about once a second: wait for a few from the
    // lossy viewer since it started, and a full window of media.
    let started = Instant::now();
    eventually(
        Duration::from_secs(15),
        "reports from both viewers",
        || async {
            let s = stats(&scene, "cam-1").await;
            let lossy = viewer_video(&s, "wall-lossy")?;
            let clean = viewer_video(&s, "wall-clean")?;
            (started.elapsed() >= Duration::from_secs(4)
                && lossy.fraction_lost > 0.0
                && clean.rtt_ms.is_some()
                && s.window_ms >= 2000)
                .then_some(())
        },
    )
    .await;

    let s = stats(&scene, "cam-1").await;
    // What the publisher sent in the window the server measured, which
    // ends when it last sampled (up to 500 ms ago).
    let now_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let age = Duration::from_millis((now_unix - s.sampled_at_unix_ms).max(0) as u64);
    let sampled = Instant::now() - age;
    let window = Duration::from_millis(s.window_ms.into());
    let sent_bytes: usize = publisher
        .sent
        .lock()
        .unwrap()
        .video
        .iter()
        .filter(|p| p.at <= sampled && sampled.saturating_duration_since(p.at) < window)
        .map(|p| p.payload.len())
        .sum();
    let sent_bps = sent_bytes as f64 * 8.0 / window.as_secs_f64();
    let v = video(&s).expect("a video track");
    eprintln!("stats: {s:#?}");
    eprintln!(
        "publisher sent {sent_bps:.0} bit/s over the last {window:?}; the server measured {} bit/s; \
         {} packets dropped on the way to wall-lossy",
        v.bitrate_bps,
        dropped.load(Ordering::Relaxed)
    );

    assert_eq!(s.viewer_count, 2);
    assert_eq!(v.codec, "video/H264");
    assert_eq!(
        (v.width, v.height),
        (320, 240),
        "the fixture's picture size"
    );
    let ratio = v.bitrate_bps as f64 / sent_bps;
    assert!(
        (0.9..=1.1).contains(&ratio),
        "bitrate {} bit/s against {sent_bps:.0} sent: {ratio:.3}",
        v.bitrate_bps
    );
    assert!(
        (25.0..=35.0).contains(&v.frames_per_second),
        "30 fps fixture: {}",
        v.frames_per_second
    );
    assert!(v.loss < 0.01, "nothing lost from the publisher: {}", v.loss);
    assert!(!s.poor_link);
    assert!(v.nack_count > 0, "the lossy viewer NACKed");

    // One report covers about a second (35-50 video packets here), and its
    // fraction is in 256ths: 10 % of it is 3 to 5 packets, so ≈ 10 % is
    // 5 % to 15 %.
    let lossy_stats = viewer_video(&s, "wall-lossy").expect("wall-lossy's video");
    let clean_stats = viewer_video(&s, "wall-clean").expect("wall-clean's video");
    assert!(
        (0.05..=0.15).contains(&lossy_stats.fraction_lost),
        "one packet in ten dropped: fraction lost {}",
        lossy_stats.fraction_lost
    );
    assert!(lossy_stats.packets_lost > 0);
    assert!(lossy_stats.nack_count > 0);
    assert!(
        clean_stats.fraction_lost < 0.02,
        "the clean viewer lost {}",
        clean_stats.fraction_lost
    );
    let rtt = clean_stats.rtt_ms.expect("a round trip");
    assert!((0.0..100.0).contains(&rtt), "loopback round trip {rtt} ms");
    assert!(clean_stats.bitrate_bps > 0);

    // Unknown streams are NOT_FOUND, and a viewer's token may not read.
    let missing = scene
        .clients
        .rooms
        .clone()
        .get_stream_stats(admin(pb::GetStreamStatsRequest {
            room: ROOM.into(),
            stream: "nobody".into(),
        }))
        .await
        .expect_err("nobody publishes");
    assert_eq!(missing.code(), tonic::Code::NotFound);
    let refused = scene
        .clients
        .rooms
        .clone()
        .get_stream_stats(vigil_tests::control::with_bearer(
            pb::GetStreamStatsRequest {
                room: ROOM.into(),
                stream: "cam-1".into(),
            },
            &token,
        ))
        .await
        .expect_err("a viewer token");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    drop((clean, lossy, publisher));
    scene.shutdown().await;
}
