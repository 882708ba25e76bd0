//! Results: one [`PointResult`] per (viewers, bitrate) point, the run's
//! summary, and their rendering as tables.

use serde::Serialize;

use crate::metrics::{Quantiles, slope};

/// Where a sweep stops (issue 6): loss above 0.1 %, or the non-keyframe
/// forwarding latency's p99 above 50 ms. Keyframe packets are left out: a
/// keyframe burst fanned out to N viewers is late by construction.
const KNEE_LOSS_PERCENT: f64 = 0.1;
const KNEE_P99_MS: f64 = 50.0;

#[derive(Debug, Serialize)]
pub struct RunReport {
    /// The fixture's own video bitrate; lower targets are sent unpadded.
    /// 0 without --whip: the tool published nothing.
    pub fixture_mbps: f64,
    pub points: Vec<PointResult>,
    /// Slope of the server's RSS over the number of viewers, across points.
    pub rss_kb_per_viewer: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct PointResult {
    pub viewers: usize,
    pub bitrate_mbps: f64,
    /// RTP packets (audio and video) all viewers received, per second.
    pub forwarded_pps: f64,
    pub forwarded_mbps: f64,
    /// `None` without `--server-pid`.
    pub server: Option<ServerCost>,
    pub latency_ms: Latency,
    pub loss_percent: Spread,
    pub reordered_percent: Spread,
    pub join: JoinStats,
    /// PLI/FIR the publisher received (it does not obey them).
    pub keyframe_requests_per_s: f64,
    /// This tool's own CPU use; near 100 % it is the bottleneck.
    pub tool_cpu_percent: f64,
    /// Everything else the machine ran meanwhile (% of one core): other
    /// people's work that makes the other figures noisy.
    pub other_cpu_percent: f64,
    /// Datagrams the kernel dropped on full receive buffers of the server's
    /// sockets (publisher ingest, viewers' RTCP) and of this tool's.
    pub server_rcvbuf_drops: Option<u64>,
    pub tool_rcvbuf_drops: u64,
    /// Video packets not matched to a sent payload (no latency sample).
    pub unmatched_packets: u64,
    /// Datagrams the tool did not send (cumulative): non-loopback or refused.
    pub unsent_datagrams: u64,
    /// Viewers whose connection failed after joining.
    pub failed_viewers: u64,
    /// Why this point is past the knee, if it is.
    pub knee: Option<String>,
    /// Each --whep endpoint's viewers apart, when there are several
    /// (empty with one: the figures above are its own).
    pub endpoints: Vec<EndpointResult>,
    /// Each --server-pid apart, in the order given (the first is `server`
    /// above); empty without one.
    pub servers: Vec<ProcessCost>,
}

/// The viewers of one --whep endpoint over the window.
#[derive(Debug, Serialize)]
pub struct EndpointResult {
    pub whep: String,
    pub viewers: usize,
    pub forwarded_pps: f64,
    pub forwarded_mbps: f64,
    pub latency_ms: Latency,
    /// Pooled over its viewers.
    pub loss_percent: f64,
}

/// One --server-pid's cost over the window (a node of a cluster).
#[derive(Debug, Serialize)]
pub struct ProcessCost {
    pub pid: u32,
    /// The --whep endpoint (index) whose viewers it serves, paired by
    /// position; `None` for a pid past the last endpoint (an origin that
    /// only feeds relays).
    pub endpoint: Option<usize>,
    pub cpu_percent: f64,
    /// Its CPU over every packet all viewers received: these add up, over
    /// the processes, to the deployment's CPU per delivered packet.
    pub us_per_packet: f64,
    /// Its CPU over the packets its own endpoint's viewers received: what
    /// a packet it forwarded cost it (`None` without an endpoint).
    pub us_per_own_packet: Option<f64>,
    pub rss_mb: Option<f64>,
    pub rcvbuf_drops: Option<u64>,
}

/// What /proc said of one server process over the window.
#[derive(Debug, Clone, Copy)]
pub struct ProcessWindow {
    pub pid: u32,
    pub cpu_seconds: f64,
    pub rss: Option<u64>,
    pub rcvbuf_drops: Option<u64>,
}

/// The `index`-th --server-pid's cost: `endpoint_packets` are the packets
/// each endpoint's viewers received, `total_packets` all of them.
pub fn process_cost(
    index: usize,
    process: &ProcessWindow,
    endpoint_packets: &[u64],
    total_packets: u64,
    seconds: f64,
) -> ProcessCost {
    let us_per = |packets: u64| process.cpu_seconds * 1e6 / packets.max(1) as f64;
    let endpoint = (index < endpoint_packets.len()).then_some(index);
    ProcessCost {
        pid: process.pid,
        endpoint,
        cpu_percent: process.cpu_seconds / seconds * 100.0,
        us_per_packet: us_per(total_packets),
        us_per_own_packet: endpoint.map(|e| us_per(endpoint_packets[e])),
        rss_mb: process.rss.map(|b| b as f64 / (1 << 20) as f64),
        rcvbuf_drops: process.rcvbuf_drops,
    }
}

#[derive(Debug, Serialize)]
pub struct ServerCost {
    pub cpu_percent: f64,
    pub us_per_packet: f64,
    pub ms_per_mbit: f64,
    pub rss_mb: Option<f64>,
}

/// Forwarding latency (server receive to viewer socket), p50/p99/max in ms.
#[derive(Debug, Serialize)]
pub struct Latency {
    pub keyframe: Option<Quantiles>,
    pub delta: Option<Quantiles>,
}

/// A per-viewer figure summarised over viewers, with the pooled total.
#[derive(Debug, Serialize)]
pub struct Spread {
    pub mean: f64,
    pub max: f64,
    pub total: f64,
}

impl Spread {
    pub fn of(values: &[f64], total: f64) -> Spread {
        Spread {
            mean: values.iter().sum::<f64>() / values.len().max(1) as f64,
            max: values.iter().copied().fold(0.0, f64::max),
            total,
        }
    }
}

/// Joins timed from each viewer's WHEP POST.
#[derive(Debug, Serialize)]
pub struct JoinStats {
    /// The server's answer in (from the POST, as all times here).
    pub answer_ms: Option<Quantiles>,
    /// DTLS and SRTP up.
    pub connected_ms: Option<Quantiles>,
    pub first_rtp_ms: Option<Quantiles>,
    /// First complete IDR access unit (all its packets).
    pub first_keyframe_ms: Option<Quantiles>,
    /// From the first POST until the last viewer had a keyframe.
    pub all_playing_s: Option<f64>,
    pub not_playing: usize,
    /// The server's CPU from the first POST until every viewer played,
    /// per viewer (ms): on one core the k-th viewer to play cannot play
    /// before k times this, so it bounds the join's median from below.
    pub server_cpu_ms_per_join: Option<f64>,
    /// This tool's CPU over the same span, per viewer (ms): when it is
    /// near the span's length, the tool sets the pace, not the server.
    pub tool_cpu_ms_per_join: Option<f64>,
}

pub fn knee(loss: &Spread, latency: &Latency, failed: usize) -> Option<String> {
    if failed > 0 {
        return Some(format!("{failed} viewer(s) did not play or failed"));
    }
    if loss.total > KNEE_LOSS_PERCENT {
        return Some(format!("loss {:.3} % > {KNEE_LOSS_PERCENT} %", loss.total));
    }
    let p99 = latency.delta.map_or(0.0, |q| q.p99);
    (p99 > KNEE_P99_MS).then(|| format!("latency p99 {p99:.1} ms > {KNEE_P99_MS} ms"))
}

pub fn summarise(points: Vec<PointResult>, fixture_bps: f64) -> RunReport {
    let rss: Vec<(f64, f64)> = points
        .iter()
        .filter_map(|p| {
            let mb = p.server.as_ref()?.rss_mb?;
            Some((p.viewers as f64, mb * 1024.0))
        })
        .collect();
    RunReport {
        fixture_mbps: fixture_bps / 1e6,
        rss_kb_per_viewer: slope(&rss),
        points,
    }
}

/// One line per point as it completes, for stderr.
pub fn progress_line(p: &PointResult) -> String {
    let cpu = p
        .server
        .as_ref()
        .map_or("-".into(), |s| format!("{:.2} µs/pkt", s.us_per_packet));
    format!(
        "N={} {:.1} Mbit/s: {:.0} pkt/s, {cpu}, latency p99/max {} ms, loss {:.3} %{}",
        p.viewers,
        p.bitrate_mbps,
        p.forwarded_pps,
        pair(p.latency_ms.delta.map(|q| (q.p99, q.max)), 2),
        p.loss_percent.total,
        p.knee
            .as_ref()
            .map_or(String::new(), |k| format!(" — knee: {k}")),
    )
}

pub fn tables(report: &RunReport) -> String {
    let mut out = String::new();
    let forwarding = [
        "viewers",
        "Mbit/s",
        "fwd pkt/s",
        "fwd Mbit/s",
        "srv CPU %",
        "µs/pkt",
        "ms/Mbit",
        "RSS MB",
        "lat p50/p99 ms",
        "key lat p50/p99 ms",
        "loss % mean/max",
        "reord % mean/max",
        "PLI/s",
        "tool CPU %",
        "other CPU %",
    ];
    let rows = report.points.iter().map(|p| {
        let s = p.server.as_ref();
        vec![
            p.viewers.to_string(),
            format!("{:.1}", p.bitrate_mbps),
            format!("{:.0}", p.forwarded_pps),
            format!("{:.1}", p.forwarded_mbps),
            s.map_or("-".into(), |s| format!("{:.0}", s.cpu_percent)),
            s.map_or("-".into(), |s| format!("{:.2}", s.us_per_packet)),
            s.map_or("-".into(), |s| format!("{:.2}", s.ms_per_mbit)),
            s.and_then(|s| s.rss_mb)
                .map_or("-".into(), |mb| format!("{mb:.1}")),
            pair(p.latency_ms.delta.map(|q| (q.p50, q.p99)), 2),
            pair(p.latency_ms.keyframe.map(|q| (q.p50, q.p99)), 1),
            pair(Some((p.loss_percent.mean, p.loss_percent.max)), 3),
            pair(Some((p.reordered_percent.mean, p.reordered_percent.max)), 3),
            format!("{:.1}", p.keyframe_requests_per_s),
            format!("{:.0}", p.tool_cpu_percent),
            format!("{:.0}", p.other_cpu_percent),
        ]
    });
    table(&mut out, &forwarding, rows);
    out.push('\n');

    let joining = [
        "viewers",
        "Mbit/s",
        "answer p50/p99 ms",
        "connected p50/p99 ms",
        "1st RTP p50/p99 ms",
        "1st keyframe p50/p99 ms",
        "all playing s",
        "CPU ms/join srv/tool",
        "not playing",
        "rcvbuf drops srv/tool",
        "knee",
    ];
    let rows = report.points.iter().map(|p| {
        vec![
            p.viewers.to_string(),
            format!("{:.1}", p.bitrate_mbps),
            pair(p.join.answer_ms.map(|q| (q.p50, q.p99)), 0),
            pair(p.join.connected_ms.map(|q| (q.p50, q.p99)), 0),
            pair(p.join.first_rtp_ms.map(|q| (q.p50, q.p99)), 0),
            pair(p.join.first_keyframe_ms.map(|q| (q.p50, q.p99)), 0),
            p.join
                .all_playing_s
                .map_or("-".into(), |s| format!("{s:.2}")),
            format!(
                "{}/{}",
                p.join
                    .server_cpu_ms_per_join
                    .map_or("-".into(), |ms| format!("{ms:.2}")),
                p.join
                    .tool_cpu_ms_per_join
                    .map_or("-".into(), |ms| format!("{ms:.2}")),
            ),
            p.join.not_playing.to_string(),
            format!(
                "{}/{}",
                p.server_rcvbuf_drops.map_or("-".into(), |d| d.to_string()),
                p.tool_rcvbuf_drops
            ),
            p.knee.clone().unwrap_or_default(),
        ]
    });
    table(&mut out, &joining, rows);

    if report.points.iter().any(|p| !p.endpoints.is_empty()) {
        out.push('\n');
        endpoint_table(&mut out, report);
    }
    if report.points.iter().any(|p| p.servers.len() > 1) {
        out.push('\n');
        process_table(&mut out, report);
    }

    if let Some(kb) = report.rss_kb_per_viewer {
        out.push_str(&format!("\nserver RSS slope: {kb:.0} KB per viewer\n"));
    }
    if report.fixture_mbps > 0.0 {
        out.push_str(&format!(
            "fixture: {:.2} Mbit/s of H264, padded up to each bitrate\n",
            report.fixture_mbps
        ));
    } else {
        // Without --whip: the stream and its bitrate are another publisher's.
        out.push_str(
            "viewers only: the stream is another publisher's (no latency: only the tool's own payloads can be timed)\n",
        );
    }
    out
}

/// Each --whep endpoint's viewers apart.
fn endpoint_table(out: &mut String, report: &RunReport) {
    let header = [
        "viewers",
        "Mbit/s",
        "endpoint",
        "its viewers",
        "fwd pkt/s",
        "lat p50/p99 ms",
        "key lat p50/p99 ms",
        "loss %",
    ];
    let rows = report.points.iter().flat_map(|p| {
        p.endpoints.iter().map(|e| {
            vec![
                p.viewers.to_string(),
                format!("{:.1}", p.bitrate_mbps),
                e.whep.clone(),
                e.viewers.to_string(),
                format!("{:.0}", e.forwarded_pps),
                pair(e.latency_ms.delta.map(|q| (q.p50, q.p99)), 2),
                pair(e.latency_ms.keyframe.map(|q| (q.p50, q.p99)), 1),
                format!("{:.3}", e.loss_percent),
            ]
        })
    });
    table(out, &header, rows);
}

/// Each --server-pid apart, and their sum.
fn process_table(out: &mut String, report: &RunReport) {
    let header = [
        "viewers",
        "Mbit/s",
        "pid",
        "serves",
        "CPU %",
        "µs/pkt all",
        "µs/pkt own",
        "RSS MB",
        "rcvbuf drops",
    ];
    let rows = report.points.iter().flat_map(|p| {
        let total = vec![
            p.viewers.to_string(),
            format!("{:.1}", p.bitrate_mbps),
            "total".into(),
            String::new(),
            format!(
                "{:.0}",
                p.servers.iter().map(|s| s.cpu_percent).sum::<f64>()
            ),
            format!(
                "{:.2}",
                p.servers.iter().map(|s| s.us_per_packet).sum::<f64>()
            ),
            "-".into(),
            format!(
                "{:.1}",
                p.servers.iter().filter_map(|s| s.rss_mb).sum::<f64>()
            ),
            p.servers
                .iter()
                .filter_map(|s| s.rcvbuf_drops)
                .sum::<u64>()
                .to_string(),
        ];
        p.servers
            .iter()
            .map(|s| {
                vec![
                    p.viewers.to_string(),
                    format!("{:.1}", p.bitrate_mbps),
                    s.pid.to_string(),
                    s.endpoint
                        .map_or("no viewers".into(), |e| format!("endpoint {e}")),
                    format!("{:.0}", s.cpu_percent),
                    format!("{:.2}", s.us_per_packet),
                    s.us_per_own_packet
                        .map_or("-".into(), |us| format!("{us:.2}")),
                    s.rss_mb.map_or("-".into(), |mb| format!("{mb:.1}")),
                    s.rcvbuf_drops.map_or("-".into(), |d| d.to_string()),
                ]
            })
            .chain([total])
            .collect::<Vec<_>>()
    });
    table(out, &header, rows);
}

fn pair(values: Option<(f64, f64)>, decimals: usize) -> String {
    values.map_or("-".into(), |(a, b)| {
        format!("{a:.decimals$}/{b:.decimals$}")
    })
}

fn table(out: &mut String, header: &[&str], rows: impl Iterator<Item = Vec<String>>) {
    let rows: Vec<Vec<String>> = rows.collect();
    let widths: Vec<usize> = (0..header.len())
        .map(|c| {
            rows.iter()
                .map(|r| r[c].chars().count())
                .chain([header[c].chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut line = |cells: &[&str]| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(cell, &w)| format!("{cell:>w$}"))
            .collect();
        out.push_str(padded.join("  ").trim_end());
        out.push('\n');
    };
    line(header);
    for row in &rows {
        line(&row.iter().map(String::as_str).collect::<Vec<_>>());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quantiles(p99: f64) -> Option<Quantiles> {
        Some(Quantiles {
            count: 100,
            p50: p99 / 2.0,
            p99,
            max: p99,
        })
    }

    #[test]
    fn knee_is_loss_or_delta_latency_or_viewers_not_playing() {
        let fine = Spread::of(&[0.0, 0.05], 0.02);
        let lossy = Spread::of(&[0.0, 0.4], 0.2);
        let calm = Latency {
            keyframe: quantiles(120.0),
            delta: quantiles(3.0),
        };
        let slow = Latency {
            keyframe: quantiles(120.0),
            delta: quantiles(60.0),
        };
        assert_eq!(knee(&fine, &calm, 0), None);
        assert!(knee(&lossy, &calm, 0).unwrap().starts_with("loss"));
        assert!(knee(&fine, &slow, 0).unwrap().starts_with("latency"));
        assert!(knee(&fine, &calm, 3).unwrap().contains("did not play"));
    }

    #[test]
    fn each_process_is_charged_per_packet_of_its_own_viewers_and_of_all() {
        let edge = ProcessWindow {
            pid: 2,
            cpu_seconds: 0.5,
            rss: Some(3 << 20),
            rcvbuf_drops: Some(0),
        };
        let origin = ProcessWindow {
            pid: 1,
            cpu_seconds: 0.1,
            rss: None,
            rcvbuf_drops: None,
        };
        // Two endpoints: 40 000 and 60 000 packets over a 10 s window.
        let packets = [40_000, 60_000];
        let b = process_cost(1, &edge, &packets, 100_000, 10.0);
        assert_eq!(b.endpoint, Some(1));
        assert!((b.cpu_percent - 5.0).abs() < 1e-9);
        assert!((b.us_per_packet - 5.0).abs() < 1e-9);
        assert!((b.us_per_own_packet.unwrap() - 0.5e6 / 60_000.0).abs() < 1e-9);
        assert_eq!(b.rss_mb, Some(3.0));
        // Past the last endpoint: no viewers of its own.
        let a = process_cost(2, &origin, &packets, 100_000, 10.0);
        assert_eq!((a.endpoint, a.us_per_own_packet), (None, None));
        assert!((a.us_per_packet - 1.0).abs() < 1e-9);
        // One endpoint: the first pid's own packets are all of them.
        let single = process_cost(0, &edge, &[100_000], 100_000, 10.0);
        assert_eq!(single.us_per_own_packet, Some(single.us_per_packet));
    }

    #[test]
    fn tables_align_columns() {
        let mut out = String::new();
        let rows = [vec!["1".to_string(), "12345".to_string()]].into_iter();
        table(&mut out, &["viewers", "x"], rows);
        assert_eq!(out, "viewers      x\n      1  12345\n");
    }
}
