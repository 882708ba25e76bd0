//! Fast start for OBS-style publishers: libdatachannel, OBS Studio's own
//! WebRTC stack (through the `node-datachannel` npm package), publishes
//! H.264 the way OBS does and ignores keyframe requests; viewers that join
//! mid-GOP must show a picture long before its next keyframe.
//!
//! The publisher (`tests/interop/libdatachannel/whip_publish.mjs`) sends
//! `tests/fixtures/video-obs.h264` (x264 High profile, CABAC, 30 fps, an IDR
//! every 3 s) through libdatachannel's `H264RtpPacketizer`: SPS and PPS as
//! single-NAL packets before each IDR, FU-A fragments, the marker bit on an
//! access unit's last packet only, PLI ignored. It reports when it hands
//! each IDR to the packetizer.
//!
//! Two kinds of viewer join 0.7 s after a keyframe, so the next one is
//! 2.3 s away, and report when they decoded their first frame:
//! - aiortc (`tests/interop/aiortc/first_frame.py`), which decodes with
//!   libavcodec and, like FFmpeg's H.264 parser, closes a frame only when a
//!   packet of the next frame arrives;
//! - headless Chromium (`tests/browser/first_frame.mjs`), which closes a
//!   frame on the marker bit.
//!
//! Each must decode its first frame at least a second before the publisher's
//! next keyframe: the picture came from Vigil's keyframe cache, not from
//! the publisher. Everything runs in a private network namespace (aiortc,
//! libjuice and Chromium gather no loopback candidates).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use vigil_tests::script::{Report, Script, require_aiortc};
use vigil_tests::{base_url, netns};

/// How long after a keyframe the viewers join (the fixture's GOP is 3 s).
const JOIN_AFTER_KEYFRAME: Duration = Duration::from_millis(700);
/// How much earlier than the next keyframe the first frame must decode.
const MARGIN_MS: f64 = 1000.0;
/// Joins per kind of viewer.
const JOINS: usize = 2;

fn epoch_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as f64
}

fn require_clients() {
    netns::require_program("node", "install Node.js 20 or later");
    assert!(
        netns::tests_dir()
            .join("interop/libdatachannel/node_modules/node-datachannel")
            .is_dir(),
        "node-datachannel is not installed: run ./test.sh (or `npm ci --prefix tests/interop/libdatachannel`)"
    );
    netns::browser_driver("first_frame.mjs");
    require_aiortc();
}

/// The publisher's next keyframe report that is no older than `fresh_ms`.
async fn fresh_keyframe(publisher: &mut Script, fresh_ms: f64) -> f64 {
    loop {
        let at = publisher.event("keyframe").await.num("at_ms");
        if epoch_ms() - at <= fresh_ms {
            return at;
        }
    }
}

/// One viewer joins mid-GOP; returns its report and the publisher's
/// keyframes before and after the join.
async fn join_mid_gop(publisher: &mut Script, viewer: &mut Script) -> (Report, f64, f64) {
    let keyframe = fresh_keyframe(publisher, 300.0).await;
    let join_at = keyframe + JOIN_AFTER_KEYFRAME.as_millis() as f64;
    let wait = (join_at - epoch_ms()).max(0.0);
    tokio::time::sleep(Duration::from_millis(wait as u64)).await;
    viewer.send_line("join").await;
    let report = viewer.event("first_frame").await;
    let next_keyframe = publisher.event("keyframe").await.num("at_ms");
    (report, keyframe, next_keyframe)
}

#[test]
fn viewers_joining_an_obs_style_stream_mid_gop_decode_at_once() {
    require_clients();
    netns::run(|| async {
        let vigil = netns::start_server(|_| {}).await;
        let base = base_url(&vigil);
        let whip = format!("{base}/whip/site-1/obs");
        let whep = format!("{base}/whep/site-1/obs");
        let fixture = netns::tests_dir().join("fixtures/video-obs.h264");
        let fixture = fixture.to_str().expect("UTF-8 path");

        let mut publisher = Script::node(
            "libdatachannel publisher",
            "interop/libdatachannel/whip_publish.mjs",
            &["--whip", &whip, "--fixture", fixture, "--seconds", "120"],
        );
        publisher.event("connected").await;
        let mut aiortc = Script::python("aiortc first-frame player", "first_frame.py", &[&whep]);
        aiortc.event("ready").await;
        let mut chromium = Script::node(
            "Chromium first-frame player",
            "browser/first_frame.mjs",
            &["--whep", &whep],
        );
        chromium.event("ready").await;

        let mut waits = Vec::new();
        for viewer in [&mut aiortc, &mut chromium] {
            for _ in 0..JOINS {
                let (report, keyframe, next_keyframe) = join_mid_gop(&mut publisher, viewer).await;
                let joined = report.num("join_at_ms");
                let decoded = report.num("first_frame_at_ms");
                let label = viewer.label().to_owned();
                assert!(
                    joined > keyframe && joined + MARGIN_MS < next_keyframe,
                    "{label} joined mid-GOP: keyframes at {keyframe} and {next_keyframe}, joined at {joined}"
                );
                assert_eq!(
                    (report.num("width"), report.num("height")),
                    (320.0, 240.0),
                    "{label} decoded the publisher's picture"
                );
                assert!(
                    decoded + MARGIN_MS <= next_keyframe,
                    "{label} decoded its first frame {} ms after joining, only {} ms before \
                     the publisher's next keyframe: it waited for the GOP, not the cache",
                    decoded - joined,
                    next_keyframe - decoded
                );
                waits.push(format!("{label}: {} ms", decoded - joined));
            }
        }
        eprintln!("join → first decoded frame: {}", waits.join(", "));

        for viewer in [aiortc, chromium] {
            let mut viewer = viewer;
            viewer.close_stdin();
            viewer.exits_cleanly("exit").await;
        }
        publisher.close_stdin();
        let stopped = publisher.event("stopped").await;
        assert_eq!(stopped.num("delete_status"), 200.0, "publisher's DELETE");
        publisher.exits_cleanly("exit").await;
    });
}
