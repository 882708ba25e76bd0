//! The measurement procedure: publish, then for each point join N viewers at
//! once, let them settle, measure a window, and tear them down.

use std::time::{Duration, Instant};

use hyper::Uri;
use str0m::config::DtlsCert;
use tokio::task::JoinSet;
use tokio::time::sleep;
use tracing::{info, warn};

use crate::cli::{Point, Settings, endpoint_of};
use crate::media::{Command, Join, Media, Report, Stopped};
use crate::metrics::Quantiles;
use crate::peer::{Offer, PeerError, Role};
use crate::proc;
use crate::publisher::{PublishError, Publisher};
use crate::report::{
    self, EndpointResult, JoinStats, Latency, PointResult, ProcessWindow, RunReport, ServerCost,
    Spread,
};
use crate::viewer::Viewer;
use crate::whip::{Signal, SignalError};

/// Enough for the publisher's next keyframe (every 2 s) to pass the server.
const GOP_SETTLE: Duration = Duration::from_millis(2500);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(20);
/// Lets the server release the last point's sessions before the next.
const TEARDOWN_SETTLE: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A WHIP/WHEP request failed.
    #[error(transparent)]
    Signal(#[from] SignalError),
    /// Setting up a peer failed.
    #[error(transparent)]
    Peer(#[from] PeerError),
    /// The publisher could not be built.
    #[error(transparent)]
    Publish(#[from] PublishError),
    /// The media thread is gone.
    #[error(transparent)]
    Media(#[from] Stopped),
    /// Starting the media thread or reading /proc failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// str0m's crypto provider made no certificate.
    #[error("no DTLS certificate")]
    Certificate,
    /// ICE/DTLS with the server did not complete.
    #[error("the publisher did not connect within {0:?}")]
    PublisherTimeout(Duration),
}

pub async fn run(
    settings: &Settings,
    progress: impl FnMut(&PointResult),
) -> Result<RunReport, BenchError> {
    let media = Media::spawn()?;
    let cert = crate::dtls::provider()
        .dtls_provider
        .generate_certificate()
        .ok_or(BenchError::Certificate)?;
    let signal = Signal::new(settings.token.clone());
    // The settings always hold at least one point.
    let bitrate = settings.points[0].bitrate_bps;

    // Without --whip, the stream at --whep is someone else's (a camera).
    let mut session = None;
    let mut fixture_bps = 0.0;
    if let Some(whip) = &settings.whip {
        let offer = Offer::new(Role::Publish, &cert)?;
        let created = signal.create(whip, offer.sdp.clone()).await?;
        let publisher = Publisher::new(offer.accept(&created.answer)?, bitrate)?;
        fixture_bps = publisher.fixture_bitrate();
        media.send(Command::Publish(Box::new(publisher)))?;
        session = Some(created);
    }

    let bench = Bench {
        settings,
        signal: &signal,
        media: &media,
        cert: &cert,
    };
    let points = bench.points(bitrate, progress).await;
    if let Some(session) = session
        && let Err(e) = signal.delete(&session.location).await
    {
        warn!("deleting the publisher: {e}");
    }
    Ok(report::summarise(points?, fixture_bps))
}

async fn wait_for_publisher(media: &Media) -> Result<(), BenchError> {
    let started = Instant::now();
    while !media.ask(Command::Publishing).await? {
        if started.elapsed() > CONNECT_TIMEOUT {
            return Err(BenchError::PublisherTimeout(CONNECT_TIMEOUT));
        }
        sleep(POLL).await;
    }
    Ok(())
}

struct Bench<'a> {
    settings: &'a Settings,
    signal: &'a Signal,
    media: &'a Media,
    cert: &'a DtlsCert,
}

/// Counters read at both ends of the window.
struct Snapshot {
    at: Instant,
    /// CPU time and receive-buffer drops of each --server-pid, in order.
    servers: Vec<(Duration, u64)>,
    own_cpu: Duration,
    own_drops: u64,
    machine_busy: Duration,
}

impl Snapshot {
    fn take(servers: &[u32]) -> Result<Snapshot, BenchError> {
        let me = std::process::id();
        Ok(Snapshot {
            at: Instant::now(),
            servers: servers
                .iter()
                .map(|&pid| Ok((proc::cpu_time(pid)?, proc::udp_drops(pid)?)))
                .collect::<Result<_, BenchError>>()?,
            own_cpu: proc::cpu_time(me)?,
            own_drops: proc::udp_drops(me)?,
            machine_busy: proc::machine_busy()?,
        })
    }
}

impl Bench<'_> {
    /// Runs the points in order, stopping past the knee in a sweep.
    async fn points(
        &self,
        mut bitrate: f64,
        mut progress: impl FnMut(&PointResult),
    ) -> Result<Vec<PointResult>, BenchError> {
        if self.settings.whip.is_some() {
            wait_for_publisher(self.media).await?;
            sleep(GOP_SETTLE).await;
            info!("publishing");
        }
        let mut points = Vec::new();
        for &point in &self.settings.points {
            if point.bitrate_bps != bitrate {
                bitrate = point.bitrate_bps;
                self.media.send(Command::SetBitrate(bitrate))?;
                sleep(GOP_SETTLE).await;
            }
            let result = self.point(point).await?;
            progress(&result);
            let knee = result.knee.is_some();
            points.push(result);
            if knee && self.settings.stop_at_knee {
                break;
            }
        }
        Ok(points)
    }

    async fn point(&self, point: Point) -> Result<PointResult, BenchError> {
        info!(
            viewers = point.viewers,
            mbps = point.bitrate_bps / 1e6,
            "joining"
        );
        let cpu_before = JoinCpu::take(self.settings.server_pid())?;
        let joined_at = Instant::now();
        let locations = self.join(point.viewers).await?;
        let joins = self.wait_for_play(point.viewers).await?;
        let cpu = JoinCpu::take(self.settings.server_pid())?.since(&cpu_before);
        let join = join_stats(&joins, joined_at, point.viewers, cpu);

        sleep(self.settings.warmup).await;
        self.media.ask(Command::StartWindow).await?;
        let pids = &self.settings.server_pids;
        let before = Snapshot::take(pids)?;
        sleep(self.settings.duration).await;
        let window = self.media.ask(Command::Report).await?;
        let after = Snapshot::take(pids)?;
        let rss = pids
            .iter()
            .map(|&pid| proc::rss(pid))
            .collect::<Result<Vec<_>, _>>()?;

        self.leave(locations).await;
        self.media.ask(Command::DropViewers).await?;
        sleep(TEARDOWN_SETTLE).await;

        let processes = pids
            .iter()
            .zip(&before.servers)
            .zip(&after.servers)
            .zip(rss)
            .map(|(((&pid, b), a), rss)| ProcessWindow {
                pid,
                cpu_seconds: (a.0 - b.0).as_secs_f64(),
                rss: Some(rss),
                rcvbuf_drops: Some(a.1.saturating_sub(b.1)),
            })
            .collect::<Vec<_>>();
        let measured = Measured {
            window: &window,
            before: &before,
            after: &after,
            processes: &processes,
            whep: &self.settings.whep,
        };
        Ok(point_result(point, &measured, join))
    }

    /// POSTs N offers at once; each viewer goes to the media loop as soon as
    /// its answer is in. Returns the sessions to DELETE.
    async fn join(&self, n: usize) -> Result<Vec<Uri>, BenchError> {
        let mut posts = JoinSet::new();
        let endpoints = &self.settings.whep;
        for i in 0..n {
            let offer = Offer::new(Role::Play, self.cert)?;
            let signal = self.signal.clone();
            let index = endpoint_of(i, endpoints.len());
            let url = endpoints[index].clone();
            // With one endpoint the window's totals are its own.
            let endpoint = (endpoints.len() > 1).then_some(index);
            posts.spawn(async move {
                let posted_at = Instant::now();
                let session = signal.create(&url, offer.sdp.clone()).await?;
                let answered_at = Instant::now();
                let peer = offer.accept(&session.answer)?;
                let mut viewer = Viewer::new(peer, posted_at, answered_at);
                viewer.reception.endpoint = endpoint;
                Ok::<_, BenchError>((viewer, session.location))
            });
        }
        let mut locations = Vec::with_capacity(n);
        while let Some(joined) = posts.join_next().await {
            match joined.expect("join tasks do not panic") {
                Ok((viewer, location)) => {
                    self.media.send(Command::Play(Box::new(viewer)))?;
                    locations.push(location);
                }
                Err(e) => warn!("a viewer failed to join: {e}"),
            }
        }
        Ok(locations)
    }

    /// Waits until every viewer has a complete keyframe, or the join timeout.
    async fn wait_for_play(&self, n: usize) -> Result<Vec<Join>, BenchError> {
        let started = Instant::now();
        loop {
            let joins = self.media.ask(Command::Joins).await?;
            let playing = joins.iter().filter(|j| j.first_keyframe.is_some()).count();
            if playing == n || started.elapsed() > self.settings.join_timeout {
                return Ok(joins);
            }
            sleep(POLL).await;
        }
    }

    async fn leave(&self, locations: Vec<Uri>) {
        let mut deletes = JoinSet::new();
        for location in locations {
            let signal = self.signal.clone();
            deletes.spawn(async move { signal.delete(&location).await });
        }
        while let Some(deleted) = deletes.join_next().await {
            if let Err(e) = deleted.expect("delete tasks do not panic") {
                warn!("leaving: {e}");
            }
        }
    }
}

/// The server's and this tool's CPU time: read around a join, then the
/// difference.
struct JoinCpu {
    server: Option<Duration>,
    tool: Duration,
}

impl JoinCpu {
    fn take(server: Option<u32>) -> Result<JoinCpu, BenchError> {
        Ok(JoinCpu {
            server: server.map(proc::cpu_time).transpose()?,
            tool: proc::cpu_time(std::process::id())?,
        })
    }

    fn since(&self, before: &JoinCpu) -> JoinCpu {
        JoinCpu {
            server: self.server.zip(before.server).map(|(a, b)| a - b),
            tool: self.tool - before.tool,
        }
    }
}

fn join_stats(joins: &[Join], joined_at: Instant, n: usize, cpu: JoinCpu) -> JoinStats {
    let ms = |from: Instant, to: Option<Instant>| to.map(|t| (t - from).as_secs_f64() * 1e3);
    let answer: Vec<f64> = joins
        .iter()
        .filter_map(|j| ms(j.posted_at, Some(j.answered_at)))
        .collect();
    let connected: Vec<f64> = joins
        .iter()
        .filter_map(|j| ms(j.posted_at, j.connected_at))
        .collect();
    let first_rtp: Vec<f64> = joins
        .iter()
        .filter_map(|j| ms(j.posted_at, j.first_rtp))
        .collect();
    let first_keyframe: Vec<f64> = joins
        .iter()
        .filter_map(|j| ms(j.posted_at, j.first_keyframe))
        .collect();
    let playing = first_keyframe.len();
    // Per viewer, and only for a join that completed.
    let per_join =
        |spent: Duration| (playing == n && n > 0).then(|| spent.as_secs_f64() * 1e3 / n as f64);
    let last = joins.iter().filter_map(|j| j.first_keyframe).max();
    JoinStats {
        answer_ms: Quantiles::of(answer),
        connected_ms: Quantiles::of(connected),
        first_rtp_ms: Quantiles::of(first_rtp),
        first_keyframe_ms: Quantiles::of(first_keyframe),
        all_playing_s: last
            .filter(|_| playing == n)
            .map(|t| (t - joined_at).as_secs_f64()),
        not_playing: n - playing,
        server_cpu_ms_per_join: cpu.server.and_then(per_join),
        tool_cpu_ms_per_join: per_join(cpu.tool),
    }
}

/// What one window measured, for [`point_result`].
struct Measured<'a> {
    window: &'a Report,
    before: &'a Snapshot,
    after: &'a Snapshot,
    /// Each --server-pid over the window, in order.
    processes: &'a [ProcessWindow],
    whep: &'a [Uri],
}

fn point_result(point: Point, measured: &Measured<'_>, join: JoinStats) -> PointResult {
    let Measured {
        window,
        before,
        after,
        processes,
        whep,
    } = *measured;
    let seconds = (after.at - before.at).as_secs_f64();
    let busy = (after.machine_busy - before.machine_busy).as_secs_f64();
    let own_cpu = (after.own_cpu - before.own_cpu).as_secs_f64();
    let first = processes.first();
    let server_cpu = first.map_or(0.0, |p| p.cpu_seconds);
    // "Other" is what neither this tool nor any of the servers ran.
    let servers_cpu: f64 = processes.iter().map(|p| p.cpu_seconds).sum();
    let rss = first.and_then(|p| p.rss);
    let mbit = window.bytes as f64 * 8.0 / 1e6;
    let server = first.is_some().then(|| ServerCost {
        cpu_percent: server_cpu / seconds * 100.0,
        us_per_packet: server_cpu * 1e6 / window.packets.max(1) as f64,
        ms_per_mbit: server_cpu * 1e3 / mbit.max(f64::MIN_POSITIVE),
        rss_mb: rss.map(|b| b as f64 / (1 << 20) as f64),
    });
    let percent = |part: u64, whole: u64| part as f64 * 100.0 / whole.max(1) as f64;
    let loss: Vec<f64> = window
        .viewers
        .iter()
        .map(|v| percent(v.lost, v.expected))
        .collect();
    let reordered: Vec<f64> = window
        .viewers
        .iter()
        .map(|v| percent(v.reordered, v.expected))
        .collect();
    let total_lost = window.viewers.iter().map(|v| v.lost).sum();
    let total_expected = window.viewers.iter().map(|v| v.expected).sum();
    let latency = Latency {
        keyframe: window.keyframe_latency,
        delta: window.delta_latency,
    };
    let loss = Spread::of(&loss, percent(total_lost, total_expected));
    let failed = join.not_playing + window.failed_viewers as usize;
    let knee = report::knee(&loss, &latency, failed);
    // Packets each endpoint's viewers received (one endpoint: all of them).
    let endpoint_packets: Vec<u64> = if whep.len() < 2 {
        vec![window.packets]
    } else {
        (0..whep.len())
            .map(|i| window.endpoints.get(i).map_or(0, |e| e.packets))
            .collect()
    };
    PointResult {
        viewers: point.viewers,
        bitrate_mbps: point.bitrate_bps / 1e6,
        forwarded_pps: window.packets as f64 / seconds,
        forwarded_mbps: mbit / seconds,
        server,
        latency_ms: latency,
        loss_percent: loss,
        reordered_percent: Spread::of(
            &reordered,
            percent(
                window.viewers.iter().map(|v| v.reordered).sum(),
                total_expected,
            ),
        ),
        join,
        keyframe_requests_per_s: window.published.keyframe_requests as f64 / seconds,
        tool_cpu_percent: own_cpu / seconds * 100.0,
        other_cpu_percent: (busy - own_cpu - servers_cpu).max(0.0) / seconds * 100.0,
        server_rcvbuf_drops: first.and_then(|p| p.rcvbuf_drops),
        tool_rcvbuf_drops: after.own_drops.saturating_sub(before.own_drops),
        unmatched_packets: window.unmatched,
        unsent_datagrams: window.unsent,
        failed_viewers: window.failed_viewers,
        knee,
        endpoints: endpoint_results(window, whep, seconds),
        servers: processes
            .iter()
            .enumerate()
            .map(|(i, p)| report::process_cost(i, p, &endpoint_packets, window.packets, seconds))
            .collect(),
    }
}

/// Each endpoint's viewers apart, when there are several.
fn endpoint_results(window: &Report, whep: &[Uri], seconds: f64) -> Vec<EndpointResult> {
    if whep.len() < 2 {
        return Vec::new();
    }
    whep.iter()
        .enumerate()
        .map(|(i, url)| {
            let share = window.endpoints.get(i);
            let viewers = window.viewers.iter().filter(|v| v.endpoint == i);
            let (lost, expected) = viewers
                .clone()
                .fold((0, 0), |(l, e), v| (l + v.lost, e + v.expected));
            EndpointResult {
                whep: url.to_string(),
                viewers: viewers.count(),
                forwarded_pps: share.map_or(0.0, |s| s.packets as f64 / seconds),
                forwarded_mbps: share.map_or(0.0, |s| s.bytes as f64 * 8.0 / 1e6 / seconds),
                latency_ms: Latency {
                    keyframe: share.and_then(|s| s.keyframe_latency),
                    delta: share.and_then(|s| s.delta_latency),
                },
                loss_percent: lost as f64 * 100.0 / expected.max(1) as f64,
            }
        })
        .collect()
}
