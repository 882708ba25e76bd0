//! Vigil with aiortc, the Python WebRTC stack, on both ends.
//!
//! What these tests prove, with real peers in a private network namespace
//! (aiortc gathers no loopback candidates, see `vigil_tests::netns`):
//!
//! - aiortc publishes over WHIP (H264 or VP8 forced with
//!   `setCodecPreferences`, plus Opus) and another aiortc plays over WHEP and
//!   *decodes* it: enough 320x240 frames, each carrying the frame number the
//!   publisher drew into it, in increasing order, and audio whose decoded
//!   tone is the publisher's 440 Hz.
//! - Across stacks: aiortc's H264 and Opus reach a webrtc-rs viewer, whose
//!   PLI makes aiortc's encoder send a new keyframe through Vigil; and a
//!   webrtc-rs publisher's H264 fixture and Opus tone decode in an aiortc
//!   viewer. The harness's webrtc-rs peers bind 127.0.0.1, which pairs with
//!   Vigil's 10.231.0.1 inside the namespace.
//! - The HTTP side as a non-trickle client drives it: POST gives 201 with a
//!   Location and an `application/sdp` answer, DELETE gives 200 and a second
//!   DELETE of the same session gives 404.
//!
//! The Python side lives in `tests/interop/aiortc/`: `whip_publish.py` and
//! `whep_play.py` print their results as JSON lines, judged here.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use vigil_gateway::sfu::keyframe::VideoCodec;
use vigil_tests::netns;
use vigil_tests::peers::{Publisher, Viewer};
use vigil_tests::script::{Report, Script, require_aiortc};
use vigil_tests::{base_url, eventually};

/// The codecs the scripts can force, as SDP names them.
#[derive(Debug, Clone, Copy)]
enum Codec {
    H264,
    Vp8,
}

impl Codec {
    fn arg(self) -> &'static str {
        match self {
            Codec::H264 => "h264",
            Codec::Vp8 => "vp8",
        }
    }

    fn sdp_name(self) -> &'static str {
        match self {
            Codec::H264 => "H264",
            Codec::Vp8 => "VP8",
        }
    }
}

/// Asserts that the first codec of a comma-separated answer list is `codec`.
fn assert_answer_codec(report: &Report, codec: Codec) {
    let codecs = report.str("video_codecs");
    assert!(
        codecs
            .split(',')
            .next()
            .is_some_and(|c| c.eq_ignore_ascii_case(codec.sdp_name())),
        "{}: Vigil's answer offers video {codecs:?}, expected {} first",
        report.label,
        codec.sdp_name()
    );
}

/// Asserts the HTTP end of a session as the script saw it.
fn assert_deleted(report: &Report) {
    assert_eq!(
        (
            report.num("delete_status"),
            report.num("delete_again_status")
        ),
        (200.0, 404.0),
        "{}: DELETE, then DELETE again",
        report.label
    );
}

/// Asserts what an aiortc viewer decoded: at least `frames` video frames of
/// 320x240 that differ from each other, and the 440 Hz tone.
fn assert_decoded(viewer: &Report, frames: f64) {
    let label = &viewer.label;
    let (decoded, seconds) = (viewer.num("video_frames"), viewer.num("seconds"));
    assert!(
        decoded >= frames,
        "{label}: decoded {decoded} video frames in {seconds} s, expected {frames}"
    );
    assert_eq!(
        viewer.str("sizes"),
        "320x240",
        "{label}: sizes of the decoded frames"
    );
    let distinct = viewer.num("distinct_images");
    assert!(
        distinct >= decoded * 0.9,
        "{label}: only {distinct} of {decoded} decoded frames differ: the picture does not advance"
    );
    let audio = viewer.num("audio_frames");
    assert!(
        audio >= 50.0,
        "{label}: decoded {audio} audio frames in {seconds} s, expected 50"
    );
    let hz = viewer.num("audio_hz");
    assert!(
        (400.0..=480.0).contains(&hz),
        "{label}: the decoded audio is a {hz} Hz tone, not the publisher's 440 Hz"
    );
}

/// Starts `whip_publish.py` and waits until it is connected.
async fn aiortc_publisher(url: &str, codec: Codec) -> Script {
    let label = format!("aiortc WHIP publisher ({})", codec.sdp_name());
    let mut publisher = Script::python(
        &label,
        "whip_publish.py",
        &[
            url,
            "--label",
            &label,
            "--video",
            codec.arg(),
            "--seconds",
            "60",
        ],
    );
    let published = publisher.report("publish").await;
    assert_eq!(published.str("event"), "published", "{label}: first report");
    assert_answer_codec(&published, codec);
    let audio = published.str("audio_codecs");
    assert!(
        audio.eq_ignore_ascii_case("opus"),
        "{}: Vigil's answer has audio {audio:?}, expected opus",
        published.label
    );
    publisher
}

/// Stops `whip_publish.py`, which DELETEs its session; returns its report.
async fn stop_publisher(mut publisher: Script) -> Report {
    publisher.close_stdin();
    let done = publisher.report("stop and DELETE").await;
    assert_deleted(&done);
    publisher.exits_cleanly("exit").await;
    done
}

/// aiortc publishes `codec`; an aiortc viewer plays and decodes it.
fn aiortc_to_aiortc(codec: Codec) {
    require_aiortc();
    netns::run(move || async move {
        let vigil = netns::start_server(|_| {}).await;
        let base = base_url(&vigil);
        let stream = format!("aiortc/cam-{}", codec.arg());
        let publisher = aiortc_publisher(&format!("{base}/whip/{stream}"), codec).await;

        let label = format!("aiortc WHEP viewer ({})", codec.sdp_name());
        let whep = format!("{base}/whep/{stream}");
        let mut viewer = Script::python(
            &label,
            "whep_play.py",
            &[&whep, "--label", &label, "--counter", "--frames", "60"],
        );
        let played = viewer.report("play and decode").await;
        viewer.exits_cleanly("exit").await;
        let published = stop_publisher(publisher).await;

        assert_answer_codec(&played, codec);
        assert_decoded(&played, 60.0);
        assert_deleted(&played);
        // Every frame carries the publisher's frame number: the decoded
        // ones must be readable, in increasing order, and really sent.
        let (read, unreadable) = (
            played.num("counters_read"),
            played.num("counters_unreadable"),
        );
        assert!(
            read >= 60.0 && unreadable == 0.0,
            "{label}: read the frame number from {read} frames, {unreadable} unreadable"
        );
        // A joining viewer starts on the cached keyframe, sent twice so that
        // aiortc, which ends a frame only when the next one starts, decodes
        // it at once: that picture may repeat once, nothing else.
        let repeats = played.num("first_counter_repeats");
        assert!(
            repeats <= 1.0,
            "{label}: the first frame number repeated {repeats} times"
        );
        let backwards = played.num("counter_backwards");
        assert_eq!(
            backwards, 0.0,
            "{label}: frame numbers went backwards or repeated {backwards} times"
        );
        let (first, last) = (played.num("first_counter"), played.num("last_counter"));
        let sent = published.num("frames_sent");
        assert!(
            first < last && last < sent,
            "{label}: frame numbers {first}..{last}, the publisher sent 0..{sent}"
        );
        vigil.shutdown().await;
    });
}

#[test]
fn aiortc_h264_publisher_to_aiortc_viewer() {
    aiortc_to_aiortc(Codec::H264);
}

#[test]
fn aiortc_vp8_publisher_to_aiortc_viewer() {
    aiortc_to_aiortc(Codec::Vp8);
}

/// Distinct keyframes (by RTP timestamp) a webrtc-rs viewer received.
fn keyframes(viewer: &Viewer) -> usize {
    let video = viewer.video();
    let starts = video.iter().filter(|p| p.keyframe_start());
    starts
        .map(|p| p.header.timestamp)
        .collect::<BTreeSet<_>>()
        .len()
}

/// Distinct video frames (by RTP timestamp) a webrtc-rs viewer received.
fn frames(viewer: &Viewer) -> usize {
    let video = viewer.video();
    video
        .iter()
        .map(|p| p.header.timestamp)
        .collect::<BTreeSet<_>>()
        .len()
}

/// aiortc publishes H264; a webrtc-rs viewer on 127.0.0.1 (the harness's)
/// receives its H264 and audio, and a keyframe request reaches aiortc.
#[test]
fn aiortc_publisher_to_webrtc_rs_viewer() {
    require_aiortc();
    netns::run(|| async {
        let vigil = netns::start_server(|_| {}).await;
        let base = base_url(&vigil);
        let publisher = aiortc_publisher(&format!("{base}/whip/aiortc/cam"), Codec::H264).await;

        let viewer = Viewer::connect(&base, "aiortc", "cam")
            .await
            .unwrap_or_else(|r| {
                panic!(
                    "webrtc-rs WHEP viewer: POST returned {}: {}",
                    r.status, r.body
                )
            });
        viewer.peer.wait_connected().await;
        viewer.wait_keyframes(1).await;
        // aiortc's libx264 makes an IDR only every 250 frames by itself: ask
        // for one as a decoder would. Vigil relays the PLI (at most one per
        // 500 ms, so a request right after the join's may be absorbed:
        // repeat it) and aiortc forces a keyframe.
        let before = keyframes(&viewer);
        let deadline = Instant::now() + Duration::from_secs(10);
        'requests: loop {
            assert!(
                Instant::now() < deadline,
                "webrtc-rs WHEP viewer: no new keyframe from aiortc within 10 s of PLIs"
            );
            viewer.request_keyframe().await;
            let asked = Instant::now();
            while asked.elapsed() < Duration::from_secs(1) {
                if keyframes(&viewer) > before {
                    break 'requests;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        eventually(
            Duration::from_secs(10),
            "webrtc-rs WHEP viewer: 30 video frames and 50 audio packets from aiortc",
            || async { (frames(&viewer) >= 30 && viewer.audio_count() >= 50).then_some(()) },
        )
        .await;
        assert!(
            viewer
                .video()
                .iter()
                .all(|p| p.codec == Some(VideoCodec::H264)),
            "webrtc-rs WHEP viewer: video arrived at a payload type its offer does not give H264"
        );
        assert_eq!(viewer.delete().await, 200, "webrtc-rs WHEP viewer: DELETE");
        stop_publisher(publisher).await;
        vigil.shutdown().await;
    });
}

/// The harness's webrtc-rs publisher on 127.0.0.1 sends the committed H264
/// fixture (320x240 testsrc2) and Opus 440 Hz tone; aiortc decodes both.
#[test]
fn webrtc_rs_publisher_to_aiortc_viewer() {
    require_aiortc();
    netns::run(|| async {
        let vigil = netns::start_server(|_| {}).await;
        let base = base_url(&vigil);
        let mut publisher = Publisher::connect(&base, "aiortc", "fixture").await;
        publisher.start_media();

        let label = "aiortc WHEP viewer (webrtc-rs H264 publisher)";
        let whep = format!("{base}/whep/aiortc/fixture");
        let mut viewer = Script::python(label, "whep_play.py", &[&whep, "--label", label]);
        let played = viewer.report("play and decode").await;
        viewer.exits_cleanly("exit").await;

        assert_answer_codec(&played, Codec::H264);
        assert_decoded(&played, 60.0);
        assert_deleted(&played);
        assert_eq!(
            publisher.delete().await,
            200,
            "webrtc-rs WHIP publisher: DELETE"
        );
        vigil.shutdown().await;
    });
}
