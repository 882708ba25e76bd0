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
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use vigil_gateway::sfu::keyframe::VideoCodec;
use vigil_tests::netns;
use vigil_tests::peers::{Publisher, Viewer};
use vigil_tests::{base_url, eventually};

const INSTALL_HINT: &str = "pip install -r tests/interop/requirements.txt (aiortc 1.16.0)";

/// How long one script may take to report its next line.
const REPORT_LIMIT: Duration = Duration::from_secs(40);

/// Fails unless `python3` runs and can import aiortc.
fn require_aiortc() {
    netns::require_program("python3", "install Python 3 (Debian package python3)");
    let output = std::process::Command::new("python3")
        .args(["-c", "import aiortc, av"])
        .output()
        .expect("run python3");
    assert!(
        output.status.success(),
        "python3 cannot import aiortc: {INSTALL_HINT}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A Python script from `tests/interop/aiortc/`, its stdout read line by
/// line and its stderr kept for failure messages. Killed when dropped.
struct Script {
    label: String,
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Lines<BufReader<ChildStdout>>,
    stderr: Arc<Mutex<String>>,
}

impl Script {
    fn spawn(label: &str, script: &str, args: &[&str]) -> Script {
        let path = netns::tests_dir().join("interop/aiortc").join(script);
        let mut child = Command::new("python3")
            // Unbuffered, and no __pycache__ left in the source tree.
            .args(["-u", "-B"])
            .arg(&path)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("{label}: start {}: {e}", path.display()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut pipe = child.stderr.take().expect("stderr piped");
        let sink = stderr.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = pipe.read(&mut buf).await {
                sink.lock()
                    .expect("stderr")
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Script {
            label: label.to_owned(),
            stdin: child.stdin.take(),
            stdout: BufReader::new(child.stdout.take().expect("stdout piped")).lines(),
            child,
            stderr,
        }
    }

    /// The script's stderr so far (its last 4000 characters).
    fn stderr(&self) -> String {
        let all = self.stderr.lock().expect("stderr").clone();
        let start = all.char_indices().rev().nth(3999).map_or(0, |(i, _)| i);
        all[start..].to_owned()
    }

    fn fail(&self, step: &str, what: &str) -> ! {
        panic!(
            "{}: {step}: {what}\n--- stderr of {} ---\n{}",
            self.label,
            self.label,
            self.stderr()
        );
    }

    /// The next JSON line the script prints; fails on an `error` report, on
    /// exit and after [`REPORT_LIMIT`].
    async fn report(&mut self, step: &str) -> Report {
        let mut other = Vec::new();
        loop {
            let line = match tokio::time::timeout(REPORT_LIMIT, self.stdout.next_line()).await {
                Err(_) => self.fail(step, &format!("no report in {REPORT_LIMIT:?}")),
                Ok(Err(e)) => self.fail(step, &format!("reading stdout: {e}")),
                Ok(Ok(None)) => {
                    let status = self.child.wait().await.ok();
                    self.fail(
                        step,
                        &format!("exited ({status:?}) without a report; stdout: {other:?}"),
                    )
                }
                Ok(Ok(Some(line))) => line,
            };
            let Ok(Value::Object(fields)) = serde_json::from_str(&line) else {
                other.push(line);
                continue;
            };
            eprintln!("{} reports: {line}", self.label);
            let report = Report {
                label: self.label.clone(),
                fields,
            };
            if let Some(Value::String(error)) = report.fields.get("error") {
                // The scripts name themselves with the label they are given.
                let prefix = format!("{}: ", self.label);
                self.fail(step, error.strip_prefix(&prefix).unwrap_or(error));
            }
            return report;
        }
    }

    /// Closes stdin: `whip_publish.py` takes it as its cue to stop.
    fn close_stdin(&mut self) {
        self.stdin.take();
    }

    /// Waits for a clean exit.
    async fn exits_cleanly(mut self, step: &str) {
        match tokio::time::timeout(Duration::from_secs(15), self.child.wait()).await {
            Ok(Ok(status)) if status.success() => {}
            Ok(status) => self.fail(step, &format!("exited with {status:?}")),
            Err(_) => self.fail(step, "did not exit within 15 s"),
        }
    }
}

/// One JSON object a script printed.
struct Report {
    label: String,
    fields: serde_json::Map<String, Value>,
}

impl Report {
    fn num(&self, key: &str) -> f64 {
        self.fields
            .get(key)
            .and_then(Value::as_f64)
            .unwrap_or_else(|| panic!("{}: report field {key} is not a number", self.label))
    }

    fn str(&self, key: &str) -> &str {
        self.fields
            .get(key)
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("{}: report field {key} is not a string", self.label))
    }
}

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
    let mut publisher = Script::spawn(
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
        let mut viewer = Script::spawn(
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
        let mut viewer = Script::spawn(label, "whep_play.py", &[&whep, "--label", label]);
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
