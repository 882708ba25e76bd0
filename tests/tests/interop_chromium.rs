//! Interop with a real browser: headless Chromium (Debian's `/usr/bin/chromium`,
//! driven by playwright-core) publishes its fake camera and microphone to
//! Vigil with WHIP and plays them back with WHEP, using a minimal WHIP/WHEP
//! client written for the test on nothing but `RTCPeerConnection` and `fetch`
//! (`tests/browser/interop-*.html`, `interop-client.js`).
//!
//! What it proves, from what the browser decoded (`getStats()` and the
//! `<video>` element), not from logs:
//! - a Chromium WHIP publisher and a Chromium WHEP player, on separate origins
//!   from Vigil (so CORS is exercised), exchange H264 and VP8 video and Opus
//!   audio: the player decodes frames, keeps decoding, and shows a picture;
//! - trickled candidates (PATCH `application/trickle-ice-sdpfrag` with
//!   `If-Match`) from a browser are accepted with 204, and the session they
//!   belong to carries media to a webrtc-rs viewer, including the keyframes
//!   its PLIs ask Chromium for;
//! - an ICE restart started by the browser (PATCH with new ufrag/pwd) gets a
//!   200 with new server credentials and a new ETag, the browser's transport
//!   runs on the new credentials, and the player keeps decoding, for both the
//!   publisher's and the player's session.
//!
//! Chromium normally gathers no loopback candidates, so every test runs in a
//! private network namespace (`vigil_tests::netns`) where Vigil's ICE listens
//! on a veth address; media flows over it. The pages are served by the
//! driver from their own 127.0.0.1 port. Chromium is heavy: the tests run one
//! at a time. Screenshots of both pages, and the driver's full measurements,
//! land in `artifacts/interop/` (not asserted).

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use serde_json::Value;
use vigil_tests::browser::{self, BrowserDriver};
use vigil_tests::netns;
use vigil_tests::peers::Viewer;
use vigil_tests::{base_url, eventually};

const ROOM: &str = "interop";
const STREAM: &str = "chromium";
/// How long the whole driver run may take (it bounds each of its own waits).
const DRIVER_LIMIT: Duration = Duration::from_secs(120);

/// One browser at a time: two cores, and each Chromium is several processes.
fn one_browser_at_a_time() -> MutexGuard<'static, ()> {
    static BROWSER: Mutex<()> = Mutex::new(());
    BROWSER
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// `artifacts/interop/` at the repository root (git-ignored).
fn artifacts_dir() -> PathBuf {
    browser::artifacts_dir("interop")
}

/// What a failed task panicked with.
fn panic_text(error: tokio::task::JoinError) -> String {
    match error.try_into_panic() {
        Ok(panic) => panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_else(|| "panicked".into()),
        Err(error) => error.to_string(),
    }
}

/// A running `interop_whip_whep.mjs`.
struct Driver {
    driver: BrowserDriver,
    name: String,
}

impl Driver {
    /// Starts the driver against Vigil at `base` (killed if the test ends first).
    fn spawn(base: &str, scenario: &str, codec: Option<&str>, name: &str) -> Driver {
        let mut args: Vec<OsString> = [
            "--whip",
            &format!("{base}/whip/{ROOM}/{STREAM}"),
            "--whep",
            &format!("{base}/whep/{ROOM}/{STREAM}"),
            "--scenario",
            scenario,
            "--name",
            name,
        ]
        .map(OsString::from)
        .into();
        args.push("--artifacts".into());
        args.push(artifacts_dir().into());
        if let Some(codec) = codec {
            args.extend(["--codec".into(), codec.into()]);
        }
        Driver {
            driver: BrowserDriver::spawn("interop_whip_whep.mjs", args, DRIVER_LIMIT),
            name: name.to_owned(),
        }
    }

    /// Waits for `{"event": name}`.
    async fn wait_event(&mut self, name: &str) {
        loop {
            let line = self.driver.next().await;
            if line["event"] == name {
                return;
            }
            if line.get("result").is_some() {
                self.report(line["result"].clone())
                    .fail(&format!("the driver finished before `{name}`"));
            }
        }
    }

    fn report(&self, result: Value) -> Report {
        Report {
            result,
            stderr: self.driver.stderr(),
            file: artifacts_dir().join(format!("{}-result.json", self.name)),
        }
    }

    /// Tells a holding driver to finish.
    async fn release(&mut self) {
        self.driver.release().await;
    }

    /// Waits for the final `{"result": ...}` and for the process to exit.
    async fn result(mut self) -> Report {
        let result = self.driver.result(|_, _| {}).await;
        let report = self.report(result);
        eprintln!(
            "{}: Chromium {} ran `{}` in {:.1} s (details in {})",
            self.name,
            report.result["browserVersion"].as_str().unwrap_or("?"),
            report.result["scenario"].as_str().unwrap_or("?"),
            self.driver.elapsed().as_secs_f64(),
            report.file.display()
        );
        report
    }
}

/// The driver's result, and what to print when an assertion on it fails.
struct Report {
    result: Value,
    stderr: String,
    /// Where the driver also wrote the result.
    file: PathBuf,
}

impl Report {
    /// Panics with `message`, the step the driver was at, its error, the
    /// browser console and the driver's stderr.
    fn fail(&self, message: &str) -> ! {
        let console: Vec<&str> = self.result["console"]
            .as_array()
            .map(|lines| lines.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let mut measured = self.result.clone();
        if let Some(object) = measured.as_object_mut() {
            object.remove("console");
        }
        panic!(
            "{message}\n  driver step: {}\n  driver error: {}\n\
             --- browser console ---\n{}\n--- driver stderr ---\n{}\n\
             --- driver result (also in {}) ---\n{measured:#}",
            self.result["step"],
            self.result["error"].as_str().unwrap_or("none"),
            console.join("\n"),
            self.stderr,
            self.file.display(),
        )
    }

    fn check(&self, condition: bool, message: impl FnOnce() -> String) {
        if !condition {
            self.fail(&message());
        }
    }

    /// The driver reached its end without an exception.
    fn completed(&self) {
        self.check(self.result["ok"] == true, || {
            format!(
                "chromium driver failed at `{}`",
                self.result["step"].as_str().unwrap_or("?")
            )
        });
    }

    /// The HTTP exchanges `side`'s page made, as it saw them.
    fn http_log(&self, side: &str) -> Vec<Value> {
        self.result[side]["log"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The POST answered 201 with Location, ETag and Accept-Patch readable
    /// from the page (CORS exposes them), and DELETE answered 200.
    fn session_lifecycle(&self, side: &str, client: &str) {
        let log = self.http_log(side);
        let post = log.iter().find(|e| e["method"] == "POST");
        let post = post.unwrap_or_else(|| self.fail(&format!("{client}: no POST was made")));
        self.check(post["status"] == 201, || {
            format!("{client}: POST answered {}", post["status"])
        });
        for header in ["location", "etag", "acceptPatch"] {
            self.check(post[header].is_string(), || {
                format!(
                    "{client}: the page cannot read `{header}` of the 201 \
                     (not exposed by CORS Access-Control-Expose-Headers?)"
                )
            });
        }
        self.check(self.result[side]["deleteStatus"] == 200, || {
            format!(
                "{client}: DELETE of the session answered {}",
                self.result[side]["deleteStatus"]
            )
        });
    }

    /// The publisher connected and its encoder produced frames, in `codec`
    /// when one was forced.
    fn publisher_sent(&self, codec: Option<&str>) -> String {
        let publish = &self.result["publisher"]["publish"];
        self.check(publish["connected"] == true, || {
            format!(
                "chromium WHIP publisher: not connected and encoding within 15 s \
                 (connectionState {})",
                publish["connectionState"]
            )
        });
        let video = &self.result["publisher"]["stats"]["video"];
        self.check(video["framesEncoded"].as_u64() > Some(0), || {
            format!("chromium WHIP publisher: no frames encoded: {video}")
        });
        let sent = video["codec"].as_str().unwrap_or("none").to_owned();
        if let Some(codec) = codec {
            self.check(sent.eq_ignore_ascii_case(&format!("video/{codec}")), || {
                format!("chromium WHIP publisher: sent {sent}, not the forced {codec}")
            });
        }
        sent
    }

    /// The player's first sample (30 decoded frames, audio, a picture) and
    /// second sample (more of both) were reached; the video is `codec`.
    fn player_decoded(&self, codec: &str) {
        let player = &self.result["player"];
        let first = &player["first"];
        let last = &first["last"];
        self.check(first["ok"] == true, || {
            format!(
                "chromium WHEP player: framesDecoded stayed {} for {:.1} s (want 30; \
                 audio packetsReceived {}, <video> {}x{}, connection {})",
                last["video"]["framesDecoded"],
                first["waitedMs"].as_f64().unwrap_or(0.0) / 1000.0,
                last["audio"]["packetsReceived"],
                last["element"]["videoWidth"],
                last["element"]["videoHeight"],
                last["connectionState"]
            )
        });
        let second = &player["second"];
        self.check(second["ok"] == true, || {
            format!(
                "chromium WHEP player: decoding stopped: framesDecoded {} -> {}, audio \
                 packetsReceived {} -> {} over {:.1} s",
                last["video"]["framesDecoded"],
                second["last"]["video"]["framesDecoded"],
                last["audio"]["packetsReceived"],
                second["last"]["audio"]["packetsReceived"],
                second["waitedMs"].as_f64().unwrap_or(0.0) / 1000.0
            )
        });
        let video = &second["last"]["video"];
        self.check(
            video["frameWidth"].as_u64() > Some(0) && video["frameHeight"].as_u64() > Some(0),
            || format!("chromium WHEP player: decoded frames have no size: {video}"),
        );
        let element = &second["last"]["element"];
        self.check(element["videoWidth"].as_u64() > Some(0), || {
            format!("chromium WHEP player: the <video> element shows nothing: {element}")
        });
        let received = video["codec"].as_str().unwrap_or("none");
        self.check(received.eq_ignore_ascii_case(codec), || {
            format!("chromium WHEP player: received {received}, the publisher sent {codec}")
        });
        self.check(
            second["last"]["audio"]["codec"]
                .as_str()
                .is_some_and(|c| c.eq_ignore_ascii_case("audio/opus")),
            || {
                format!(
                    "chromium WHEP player: audio is not Opus: {}",
                    second["last"]["audio"]
                )
            },
        );
    }
}

/// Publish from one Chromium page, play in another, check decoded media.
async fn publish_and_play(codec: &str) {
    let vigil = netns::start_server(|_| {}).await;
    let base = base_url(&vigil);
    let name = format!("chromium-{}", codec.to_lowercase());
    let report = Driver::spawn(&base, "play", Some(codec), &name)
        .result()
        .await;
    report.completed();
    let sent = report.publisher_sent(Some(codec));
    report.player_decoded(&sent);
    report.session_lifecycle("publisher", "chromium WHIP publisher");
    report.session_lifecycle("player", "chromium WHEP player");
    let video = &report.result["player"]["second"]["last"]["video"];
    eprintln!(
        "{name}: player decoded {} frames of {sent} ({}) at {}x{}",
        video["framesDecoded"], video["fmtp"], video["frameWidth"], video["frameHeight"]
    );
    vigil.shutdown().await;
}

#[test]
fn chromium_publishes_vp8_with_whip_and_plays_it_with_whep() {
    let _browser = one_browser_at_a_time();
    netns::run(|| publish_and_play("VP8"));
}

#[test]
fn chromium_publishes_h264_with_whip_and_plays_it_with_whep() {
    let _browser = one_browser_at_a_time();
    netns::run(|| publish_and_play("H264"));
}

/// A field user on a network that blocks UDP (issue 14): with every UDP
/// datagram to and from Vigil's media address dropped, Chromium publishes
/// and plays over ICE-TCP (its active candidates against Vigil's passive
/// one) and the player still decodes.
#[test]
fn chromium_publishes_and_plays_over_tcp_when_udp_is_blocked() {
    let _browser = one_browser_at_a_time();
    netns::run(|| async {
        netns::block_udp(netns::SERVER_IP);
        let vigil = netns::start_server(|_| {}).await;
        let base = base_url(&vigil);
        let name = "chromium-ice-tcp";
        let report = Driver::spawn(&base, "play", Some("H264"), name)
            .result()
            .await;
        report.completed();
        let sent = report.publisher_sent(Some("H264"));
        report.player_decoded(&sent);
        for (side, stats) in [
            ("publisher", &report.result["publisher"]["stats"]),
            ("player", &report.result["player"]["second"]["last"]),
        ] {
            let pair = &stats["transport"]["pair"];
            report.check(
                pair["localProtocol"] == "tcp" && pair["remoteProtocol"] == "tcp",
                || format!("the {side}'s selected pair is not TCP: {pair}"),
            );
        }
        let (frames_in, frames_out) = vigil.sfu.ice_tcp_frames();
        report.check(frames_in > 100 && frames_out > 100, || {
            format!("Vigil's TCP frames: {frames_in} in, {frames_out} out")
        });
        let video = &report.result["player"]["second"]["last"]["video"];
        eprintln!(
            "{name}: UDP blocked; player decoded {} frames at {}x{} over TCP \
             ({frames_in} frames in, {frames_out} out at Vigil)",
            video["framesDecoded"], video["frameWidth"], video["frameHeight"]
        );
        vigil.shutdown().await;
    });
}

#[test]
fn chromium_trickles_candidates_with_patch() {
    let _browser = one_browser_at_a_time();
    netns::run(|| async {
        let vigil = netns::start_server(|_| {}).await;
        let base = base_url(&vigil);
        let mut driver = Driver::spawn(&base, "trickle", None, "chromium-trickle");
        driver.wait_event("publishing").await;

        // The server side: a webrtc-rs viewer gets the browser's media,
        // including a keyframe Chromium sends because the viewer asked. It
        // runs as a task so that its failure still shows the browser's side.
        let server_side = tokio::spawn({
            let base = base.clone();
            async move {
                let viewer = Viewer::connect(&base, ROOM, STREAM)
                    .await
                    .unwrap_or_else(|r| panic!("WHEP: {} {}", r.status, r.body));
                viewer.peer.wait_connected().await;
                viewer.wait_keyframes(1).await;
                viewer.request_keyframe().await;
                viewer.wait_keyframes(2).await;
                let video = viewer.video().len();
                eventually(Duration::from_secs(10), "30 more video packets", || async {
                    (viewer.video().len() > video + 30).then_some(())
                })
                .await;
                eventually(Duration::from_secs(10), "20 audio packets", || async {
                    (viewer.audio_count() > 20).then_some(())
                })
                .await;
                (viewer.video().len(), viewer.audio_count())
            }
        })
        .await;
        driver.release().await;
        let report = driver.result().await;
        let (video, audio) = server_side.unwrap_or_else(|e| {
            report.fail(&format!(
                "webrtc-rs WHEP viewer of the trickled chromium WHIP session: {}",
                panic_text(e)
            ))
        });
        eprintln!(
            "chromium-trickle: the webrtc-rs viewer got {video} video and {audio} audio packets"
        );
        report.completed();
        report.check(report.result["held"] == true, || {
            "chromium WHIP publisher: stopped holding before the test released it".into()
        });
        report.publisher_sent(None);
        report.session_lifecycle("publisher", "chromium WHIP publisher");

        let log = report.http_log("publisher");
        let post = log.iter().find(|e| e["method"] == "POST").expect("POST");
        report.check(post["offerCandidates"] == 0, || {
            format!(
                "chromium WHIP publisher: the trickle offer already had {} candidates",
                post["offerCandidates"]
            )
        });
        let patches: Vec<&Value> = log.iter().filter(|e| e["method"] == "PATCH").collect();
        let candidates = patches
            .iter()
            .filter(|p| {
                p["sent"]
                    .as_str()
                    .is_some_and(|s| s.contains("a=candidate:"))
            })
            .count();
        let end = patches
            .iter()
            .filter(|p| {
                p["sent"]
                    .as_str()
                    .is_some_and(|s| s.contains("a=end-of-candidates"))
            })
            .count();
        report.check(candidates > 0 && end == 1, || {
            format!(
                "chromium WHIP publisher: expected candidate PATCHes and one end-of-candidates, \
                 got {candidates} and {end}"
            )
        });
        for patch in &patches {
            report.check(patch["status"] == 204, || {
                format!(
                    "chromium WHIP publisher: trickle PATCH answered {} (want 204) for:\n{}",
                    patch["status"],
                    patch["sent"].as_str().unwrap_or("")
                )
            });
            report.check(patch["etag"].is_null(), || {
                "chromium WHIP publisher: a trickle 204 carried an ETag".into()
            });
        }
        vigil.shutdown().await;
    });
}

#[test]
fn chromium_restarts_ice_with_patch_and_keeps_decoding() {
    let _browser = one_browser_at_a_time();
    netns::run(|| async {
        let vigil = netns::start_server(|_| {}).await;
        let base = base_url(&vigil);
        let report = Driver::spawn(&base, "restart", None, "chromium-restart")
            .result()
            .await;
        report.completed();
        let sent = report.publisher_sent(None);
        report.player_decoded(&sent);
        let restarts = report.result["restarts"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        report.check(restarts.len() == 2, || "two ICE restarts were made".into());
        for restart in &restarts {
            let client = match restart["side"].as_str() {
                Some("publisher") => "chromium WHIP publisher",
                _ => "chromium WHEP player",
            };
            let patch = &restart["patch"];
            report.check(patch["status"] == 200, || {
                format!("{client}: ICE restart PATCH answered {}", patch["status"])
            });
            report.check(
                patch["contentType"] == "application/trickle-ice-sdpfrag",
                || format!("{client}: ICE restart answer is {}", patch["contentType"]),
            );
            report.check(patch["etagChanged"] == true, || {
                format!("{client}: ICE restart answer without a new ETag readable by the page")
            });
            report.check(patch["serverUfragChanged"] == true, || {
                format!("{client}: ICE restart answer kept the server's ufrag")
            });
            let transport = &restart["transport"];
            report.check(transport["ok"] == true, || {
                format!(
                    "{client}: after the ICE restart the browser's transport did not run on its \
                     new ufrag {} within {:.1} s: {}",
                    patch["localUfrag"],
                    transport["waitedMs"].as_f64().unwrap_or(0.0) / 1000.0,
                    transport["last"]["transport"]
                )
            });
            let decoding = &restart["decoding"];
            report.check(decoding["ok"] == true, || {
                format!(
                    "chromium WHEP player: after the {} ICE restart framesDecoded went from {} \
                     to {} in {:.1} s (want +30)",
                    restart["side"],
                    restart["before"]["player"]["video"]["framesDecoded"],
                    decoding["last"]["video"]["framesDecoded"],
                    decoding["waitedMs"].as_f64().unwrap_or(0.0) / 1000.0
                )
            });
            let (before, after) = (
                &restart["before"]["player"]["video"],
                &decoding["last"]["video"],
            );
            let grew = |key: &str| {
                after[key].as_f64().unwrap_or(0.0) - before[key].as_f64().unwrap_or(0.0)
            };
            eprintln!(
                "chromium-restart: {} restart: new candidate pair {} ms after the PATCH answer; \
                 the player then froze {} time(s) for {:.2} s, lost {} packets, sent {} PLI",
                restart["side"],
                transport["waitedMs"],
                grew("freezeCount"),
                grew("totalFreezesDuration"),
                grew("packetsLost"),
                grew("pliCount"),
            );
        }
        report.session_lifecycle("publisher", "chromium WHIP publisher");
        report.session_lifecycle("player", "chromium WHEP player");
        vigil.shutdown().await;
    });
}
