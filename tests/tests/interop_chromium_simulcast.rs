//! Simulcast with a real browser: headless Chromium (Debian's
//! `/usr/bin/chromium`, driven by playwright-core) publishes its fake
//! 1280x720 camera to Vigil with WHIP as three simulcast layers (rid `q` at
//! 1/4 size, `h` at 1/2, `f` at full size), and two Chromium WHEP players
//! ask for `?layer=low` and for nothing (the best layer).
//!
//! What it proves, from what the browser decoded (`getStats()` inbound-rtp
//! `frameWidth` and `framesDecoded`, sampled every 250 ms by
//! `tests/browser/simulcast.mjs`), not from logs:
//! - Vigil's WHIP answer to Chromium's offer accepts all three layers
//!   (`a=simulcast:recv` lists q, h and f);
//! - the `?layer=low` viewer only ever decodes the q layer (320 wide);
//! - the default viewer decodes the f layer (960 wide or more) once
//!   Chromium's bandwidth estimate, which starts low and pauses the top
//!   layer, has ramped up: it may get h first, and must then move to f.
//!
//! Chromium gathers no loopback candidates, so the test runs in a private
//! network namespace (`vigil_tests::netns`) where Vigil's ICE listens on a
//! veth address. Screenshots of the three pages and the driver's full
//! measurements land in `artifacts/interop/chromium-simulcast-*` (not
//! asserted).

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use vigil_tests::base_url;
use vigil_tests::browser::{self, BrowserDriver};
use vigil_tests::netns;
use vigil_tests::simulcast::simulcast_recv_rids;

const ROOM: &str = "interop";
const STREAM: &str = "simulcast";
const NAME: &str = "chromium-simulcast";
/// How long the players get to show their layers (the driver's own bound).
const DECODE_WAIT: Duration = Duration::from_secs(25);
/// How long the whole driver run may take: launch, publish, up to 10 s for
/// the layers to start, [`DECODE_WAIT`], teardown.
const DRIVER_LIMIT: Duration = Duration::from_secs(60);
/// Widest frame of the q layer (1280 / 4 = 320).
const LOW_MAX_WIDTH: u64 = 400;
/// Narrowest frame of the f layer (1280, or 960 if Chromium shrank its input).
const FULL_MIN_WIDTH: u64 = 960;

/// `artifacts/interop/` at the repository root (git-ignored).
fn artifacts_dir() -> PathBuf {
    browser::artifacts_dir("interop")
}

/// The driver's result, and what to print when an assertion on it fails.
struct Report {
    result: Value,
    stderr: String,
}

impl Report {
    /// Runs `simulcast.mjs` against Vigil at `base` and returns its result.
    async fn run(base: &str) -> Report {
        let mut args: Vec<OsString> = [
            "--whip",
            &format!("{base}/whip/{ROOM}/{STREAM}"),
            "--whep",
            &format!("{base}/whep/{ROOM}/{STREAM}"),
            "--name",
            NAME,
            "--wait-ms",
            &DECODE_WAIT.as_millis().to_string(),
        ]
        .map(OsString::from)
        .into();
        args.push("--artifacts".into());
        args.push(artifacts_dir().into());
        let mut driver = BrowserDriver::spawn("simulcast.mjs", args, DRIVER_LIMIT);
        let result = driver
            .result(|event, at| eprintln!("{NAME}: {:.1} s: {event}", at.as_secs_f64()))
            .await;
        eprintln!(
            "{NAME}: Chromium {} ran in {:.1} s (details in {})",
            result["browserVersion"].as_str().unwrap_or("?"),
            driver.elapsed().as_secs_f64(),
            artifacts_dir()
                .join(format!("{NAME}-result.json"))
                .display()
        );
        Report {
            result,
            stderr: driver.stderr(),
        }
    }

    /// Panics with `message`, the step the driver was at, its error, the
    /// browser console, the driver's stderr and what it measured (without
    /// the players' sample-by-sample history, which is in the result file).
    fn fail(&self, message: &str) -> ! {
        let console: Vec<&str> = self.result["console"]
            .as_array()
            .map(|lines| lines.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let mut measured = self.result.clone();
        if let Some(object) = measured.as_object_mut() {
            object.remove("console");
        }
        for side in ["low", "best"] {
            if let Some(player) = measured["players"][side].as_object_mut() {
                player.remove("history");
                player.remove("log");
            }
        }
        if let Some(publisher) = measured["publisher"].as_object_mut() {
            publisher.remove("log");
        }
        let history = measured["publisher"]
            .as_object_mut()
            .and_then(|p| p.remove("history"))
            .and_then(|h| h.as_array().cloned())
            .unwrap_or_default();
        let history: Vec<String> = history.iter().map(Value::to_string).collect();
        panic!(
            "{message}\n  driver step: {}\n  driver error: {}\n\
             --- browser console ---\n{}\n--- driver stderr ---\n{}\n\
             --- publisher layers over time (ms, bwe kbit/s, rid: [w, h, fps, payload kbit/s, packets, limit]) ---\n{}\n\
             --- driver result (all of it in {}) ---\n{measured:#}",
            self.result["step"],
            self.result["error"].as_str().unwrap_or("none"),
            console.join("\n"),
            self.stderr,
            history.join("\n"),
            artifacts_dir()
                .join(format!("{NAME}-result.json"))
                .display(),
        )
    }

    fn check(&self, condition: bool, message: impl FnOnce() -> String) {
        if !condition {
            self.fail(&message());
        }
    }

    /// The runs of one decoded size a player went through, as
    /// `WxH (frames from t ms)`.
    fn sizes(&self, side: &str) -> String {
        self.result["players"][side]["sizes"]
            .as_array()
            .map(|runs| {
                runs.iter()
                    .map(|r| {
                        format!(
                            "{} ({} frames from {} ms)",
                            r["size"].as_str().unwrap_or("?"),
                            r["frames"],
                            r["fromMs"]
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default()
    }

    /// What the publisher's encoder had sent per rid at the end.
    fn publisher_layers(&self) -> String {
        self.publisher_layers_at("last")
    }

    /// What the publisher's encoder had sent per rid at `when`: `atPlay`
    /// (when the viewers were started) or `last`. Many packets but few
    /// bytes on a rid: a paused layer carrying only padding.
    fn publisher_layers_at(&self, when: &str) -> String {
        let last = &self.result["publisher"][when];
        let mut out = format!(
            "bandwidth estimate {} bit/s;",
            last["availableOutgoingBitrate"]
        );
        if let Some(layers) = last["layers"].as_object() {
            for (rid, l) in layers {
                out += &format!(
                    " {rid}: {}x{} {} frames, {} bytes in {} packets ({}, limited by {});",
                    l["frameWidth"],
                    l["frameHeight"],
                    l["framesEncoded"],
                    l["bytesSent"],
                    l["packetsSent"],
                    l["codec"].as_str().unwrap_or("?"),
                    l["qualityLimitationReason"]
                );
            }
        }
        out
    }
}

#[test]
fn chromium_publishes_simulcast_and_each_viewer_decodes_its_layer() {
    netns::run(|| async {
        let vigil = netns::start_server(|_| {}).await;
        let base = base_url(&vigil);
        let report = Report::run(&base).await;
        let r = &report.result;
        report.check(r["ok"] == true, || {
            format!(
                "chromium simulcast driver failed at `{}`",
                r["step"].as_str().unwrap_or("?")
            )
        });

        // The WHIP exchange: Chromium offered three rids, Vigil takes them all.
        let publish = &r["publisher"]["publish"];
        report.check(publish["connected"] == true, || {
            format!(
                "chromium WHIP publisher: not connected and encoding within 15 s \
                 (connectionState {})",
                publish["connectionState"]
            )
        });
        let offer = publish["offer"].as_str().unwrap_or("");
        report.check(offer.contains("a=simulcast:send"), || {
            format!("chromium did not offer simulcast:\n{offer}")
        });
        let answer = publish["answer"].as_str().unwrap_or("");
        let rids = simulcast_recv_rids(answer);
        report.check(
            rids.as_deref() == Some(&["f", "h", "q"].map(String::from)),
            || format!("the WHIP answer does not receive q, h and f ({rids:?}):\n{answer}"),
        );
        for rid in ["q", "h", "f"] {
            report.check(answer.contains(&format!("a=rid:{rid} recv")), || {
                format!("the WHIP answer lacks a=rid:{rid} recv:\n{answer}")
            });
        }

        // The low viewer: frames decoded, every one of them from q.
        let low = &r["players"]["low"];
        report.check(low["framesDecoded"].as_u64() >= Some(30), || {
            format!(
                "chromium WHEP viewer with ?layer=low: only {} frames decoded in {:.1} s \
                 (publisher: {})",
                low["framesDecoded"],
                r["measuredMs"].as_f64().unwrap_or(0.0) / 1000.0,
                report.publisher_layers()
            )
        });
        report.check(low["maxWidth"].as_u64() <= Some(LOW_MAX_WIDTH), || {
            format!(
                "chromium WHEP viewer with ?layer=low decoded frames wider than the q layer \
                 ({LOW_MAX_WIDTH}): {}\n  publisher when the viewers started: {}",
                report.sizes("low"),
                report.publisher_layers_at("atPlay")
            )
        });

        // The default viewer: reaches f and keeps decoding it.
        let best = &r["players"]["best"];
        report.check(best["fullAtMs"].is_u64(), || {
            format!(
                "chromium WHEP viewer without ?layer= never decoded a frame {FULL_MIN_WIDTH} \
                 or more wide within {DECODE_WAIT:?}: {}\n  publisher: {}",
                report.sizes("best"),
                report.publisher_layers()
            )
        });
        let since_full = best["framesDecoded"].as_u64().unwrap_or(0)
            - best["fullAtFrames"].as_u64().unwrap_or(0);
        let last_width = best["last"]["video"]["frameWidth"].as_u64().unwrap_or(0);
        report.check(since_full >= 30 && last_width >= FULL_MIN_WIDTH, || {
            format!(
                "chromium WHEP viewer without ?layer= reached f but then decoded {since_full} \
                 frames, the last {last_width} wide: {}\n  publisher: {}",
                report.sizes("best"),
                report.publisher_layers()
            )
        });

        for (side, into) in [
            ("publisher", &r["publisher"]),
            ("low viewer", low),
            ("best viewer", best),
        ] {
            report.check(into["deleteStatus"] == 200, || {
                format!(
                    "chromium {side}: DELETE of the session answered {}",
                    into["deleteStatus"]
                )
            });
        }

        eprintln!(
            "{NAME}: answer {}",
            answer
                .lines()
                .find(|l| l.starts_with("a=simulcast:"))
                .unwrap_or("")
        );
        eprintln!("{NAME}: low viewer decoded {}", report.sizes("low"));
        eprintln!("{NAME}: best viewer decoded {}", report.sizes("best"));
        eprintln!(
            "{NAME}: best viewer on f {} ms after it started, {} ms after the publish",
            best["fullAtMs"], r["timing"]["bestOnFullSincePublishMs"]
        );
        eprintln!(
            "{NAME}: publisher connected at {} ms, first frame of each rid at {} ms \
             (driver clock); at the end: {}",
            r["timing"]["publishedMs"],
            r["timing"]["layersFirstEncodedMs"],
            report.publisher_layers()
        );
        vigil.shutdown().await;
    });
}
