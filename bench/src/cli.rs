//! Command line, parsed once into typed settings and the list of points.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use hyper::Uri;

use crate::whip::{SignalError, loopback_url};

/// Measures a WHIP/WHEP server on this machine: one publisher (H264 + Opus)
/// and N viewers over loopback, reporting the server's CPU per forwarded
/// packet, forwarding latency, loss, memory per viewer and join times.
/// Without --whip the viewers play a stream published by someone else (an
/// RTSP camera the server pulls, bench/camera.sh): no forwarding latency
/// then, as only this tool's own publisher's payloads can be timed.
#[derive(Debug, Parser)]
#[command(name = "vigil-bench", version)]
pub struct Args {
    /// WHIP endpoint the publisher POSTs its offer to. Left out: publish
    /// nothing, play the stream already at --whep (viewers only).
    #[arg(long)]
    whip: Option<String>,
    /// WHEP endpoint the viewers POST their offers to.
    #[arg(long)]
    whep: String,
    /// Bearer token sent to both endpoints.
    #[arg(long, env = "VIGIL_BENCH_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// The server's process id: its CPU time and RSS come from /proc.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Number of viewers (the fixed N of a bitrate sweep).
    #[arg(long, default_value_t = 10)]
    viewers: usize,
    /// Publisher video bitrate in Mbit/s (the fixed rate of a viewer sweep).
    #[arg(long, default_value_t = 2.5)]
    bitrate: f64,
    /// Run a series of points instead of one, stopping at the knee
    /// (loss > 0.1 % or non-keyframe latency p99 > 50 ms). A bitrate sweep
    /// needs --whip (the bitrate is its publisher's).
    #[arg(long, value_enum, requires_if("bitrate", "whip"))]
    sweep: Option<Sweep>,
    /// Measurement window per point, in seconds.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Settling time between all viewers playing and the window, in seconds.
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    /// How long the N viewers of a point get to all play, in seconds.
    #[arg(long, default_value_t = 20)]
    join_timeout: u64,
    /// Also write the results as JSON to this file ("-": stdout, instead of
    /// the tables).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Sweep {
    /// N = 1, 10, 50, 100, 200, 400 at --bitrate.
    Viewers,
    /// 0.5, 1, 2, 4, 8 Mbit/s with --viewers.
    Bitrate,
}

const SWEEP_VIEWERS: [usize; 6] = [1, 10, 50, 100, 200, 400];
const SWEEP_MBPS: [f64; 5] = [0.5, 1.0, 2.0, 4.0, 8.0];

#[derive(Debug, Clone)]
pub struct Settings {
    /// `None`: play an existing stream, publish nothing.
    pub whip: Option<Uri>,
    pub whep: Uri,
    pub token: Option<String>,
    pub server_pid: Option<u32>,
    pub duration: Duration,
    pub warmup: Duration,
    pub join_timeout: Duration,
    pub points: Vec<Point>,
    /// Stop at the first point past the knee.
    pub stop_at_knee: bool,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    pub viewers: usize,
    pub bitrate_bps: f64,
}

impl Args {
    pub fn settings(self) -> Result<Settings, SignalError> {
        // Without a publisher of its own the bitrate is not the tool's:
        // points carry 0 (their measured Mbit/s is what arrived).
        let publishing = self.whip.is_some();
        let bps = |mbps: f64| if publishing { mbps * 1e6 } else { 0.0 };
        let points = match self.sweep {
            None => vec![Point {
                viewers: self.viewers,
                bitrate_bps: bps(self.bitrate),
            }],
            Some(Sweep::Viewers) => SWEEP_VIEWERS
                .iter()
                .map(|&viewers| Point {
                    viewers,
                    bitrate_bps: bps(self.bitrate),
                })
                .collect(),
            Some(Sweep::Bitrate) => SWEEP_MBPS
                .iter()
                .map(|&mbps| Point {
                    viewers: self.viewers,
                    bitrate_bps: bps(mbps),
                })
                .collect(),
        };
        Ok(Settings {
            whip: self.whip.as_deref().map(loopback_url).transpose()?,
            whep: loopback_url(&self.whep)?,
            token: self.token,
            server_pid: self.server_pid,
            duration: Duration::from_secs(self.duration),
            warmup: Duration::from_secs(self.warmup),
            join_timeout: Duration::from_secs(self.join_timeout),
            points,
            stop_at_knee: self.sweep.is_some(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WHEP: &str = "http://127.0.0.1:18080/whep/bench/cam";

    #[test]
    fn without_whip_the_tool_only_plays() {
        let args = Args::try_parse_from(["vigil-bench", "--whep", WHEP, "--viewers", "200"])
            .expect("--whip is optional");
        let settings = args.settings().expect("loopback URL");
        assert!(settings.whip.is_none());
        assert_eq!(
            settings.points,
            [Point {
                viewers: 200,
                bitrate_bps: 0.0
            }]
        );
    }

    #[test]
    fn a_bitrate_sweep_needs_a_publisher() {
        let without = Args::try_parse_from(["vigil-bench", "--whep", WHEP, "--sweep", "bitrate"]);
        assert!(
            without.is_err(),
            "a bitrate sweep without --whip was accepted"
        );
        let with = Args::try_parse_from([
            "vigil-bench",
            "--whip",
            "http://127.0.0.1:18080/whip/bench/cam",
            "--whep",
            WHEP,
            "--sweep",
            "bitrate",
        ]);
        assert!(with.is_ok());
        let viewers = Args::try_parse_from(["vigil-bench", "--whep", WHEP, "--sweep", "viewers"]);
        assert!(viewers.is_ok(), "a viewer sweep plays another's stream");
    }
}
