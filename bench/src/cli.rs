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
    /// WHEP endpoint the viewers POST their offers to. Repeatable: viewer i
    /// goes to the (i mod count)-th, round-robin (the edges of a cluster,
    /// bench/relay.sh), and each endpoint's share is reported apart.
    #[arg(long, required = true)]
    whep: Vec<String>,
    /// Bearer token sent to both endpoints.
    #[arg(long, env = "VIGIL_BENCH_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// The server's process id: its CPU time and RSS come from /proc.
    /// Repeatable (the nodes of a cluster): the first is "the server" of
    /// the main tables; each is also reported on its own, the i-th as the
    /// server of the i-th --whep endpoint's viewers (its µs per packet it
    /// forwarded to them), pids past the last endpoint as serving none
    /// (an origin that only feeds relays).
    #[arg(long)]
    server_pid: Vec<u32>,
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
    /// At least one; viewers are spread over them round-robin.
    pub whep: Vec<Uri>,
    pub token: Option<String>,
    /// The first is the main tables' server; see [`Args::server_pid`].
    pub server_pids: Vec<u32>,
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

impl Settings {
    /// The first server pid, the main tables' "server".
    pub fn server_pid(&self) -> Option<u32> {
        self.server_pids.first().copied()
    }
}

/// Which of `endpoints` WHEP endpoints viewer `i` (from 0) joins:
/// round-robin, so N viewers split as evenly as they can.
pub fn endpoint_of(i: usize, endpoints: usize) -> usize {
    i % endpoints.max(1)
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
            whep: self
                .whep
                .iter()
                .map(|url| loopback_url(url))
                .collect::<Result<_, _>>()?,
            token: self.token,
            server_pids: self.server_pid,
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
    fn whep_and_server_pid_repeat() {
        let args = Args::try_parse_from([
            "vigil-bench",
            "--whep",
            WHEP,
            "--whep",
            "http://127.0.0.1:18090/whep/bench/cam",
            "--server-pid",
            "10",
            "--server-pid",
            "20",
            "--server-pid",
            "30",
        ])
        .expect("repeated flags");
        let settings = args.settings().expect("loopback URLs");
        assert_eq!(settings.whep.len(), 2);
        assert_eq!(settings.whep[1].port_u16(), Some(18090));
        assert_eq!(settings.server_pids, [10, 20, 30]);
        assert_eq!(settings.server_pid(), Some(10));

        let one = Args::try_parse_from(["vigil-bench", "--whep", WHEP])
            .expect("one endpoint, no pid")
            .settings()
            .expect("loopback URL");
        assert_eq!((one.whep.len(), one.server_pid()), (1, None));
        assert!(
            Args::try_parse_from(["vigil-bench"]).is_err(),
            "--whep is required"
        );
        let remote = Args::try_parse_from([
            "vigil-bench",
            "--whep",
            WHEP,
            "--whep",
            "http://192.0.2.1:8080/whep/bench/cam",
        ])
        .expect("parses");
        assert!(remote.settings().is_err(), "every endpoint is on loopback");
    }

    #[test]
    fn viewers_are_spread_round_robin() {
        let of = |n: usize, endpoints: usize| {
            let mut counts = vec![0; endpoints];
            for i in 0..n {
                counts[endpoint_of(i, endpoints)] += 1;
            }
            counts
        };
        assert_eq!(of(200, 2), [100, 100]);
        assert_eq!(of(7, 3), [3, 2, 2]);
        assert_eq!(of(5, 1), [5]);
        assert_eq!(endpoint_of(3, 0), 0, "no endpoints count as one");
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
