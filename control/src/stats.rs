//! Live stream statistics (`GetStreamStats`): per published track and per
//! viewer, from the media plane's cumulative counters.
//!
//! The shards only count (packets, bytes, frames, sequence numbers
//! expected, the last jitter, the viewers' last reception reports); every
//! rate is taken here, from the difference between the newest sample and
//! the oldest one still in the window ([`STATS_WINDOW`], samples every
//! 500 ms), so nothing per packet divides or allocates. Time is passed in.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::event::TrackKind;
use crate::media::{TrackSample, ViewerSample, ViewerTrackSample};

/// What the rates are averaged over: the oldest sample kept is the newest
/// one at least this old.
pub const STATS_WINDOW: Duration = Duration::from_secs(2);

/// A link is poor when this fraction of a published track's packets, or
/// more, was lost over the window (publisher to server).
pub const POOR_LINK_LOSS: f64 = 0.05;

/// One published track's statistics over the window.
#[derive(Debug, Clone, PartialEq)]
pub struct TrackStats {
    /// Audio or video.
    pub kind: TrackKind,
    /// Its codec's mime type.
    pub codec: String,
    /// Payload bits per second received from the publisher.
    pub bitrate_bps: u64,
    /// RTP packets per second received.
    pub packets_per_second: f64,
    /// Frames per second (video; 0 for audio).
    pub frames_per_second: f64,
    /// The last keyframe's picture size, when the codec carries it (VP8,
    /// H.264); 0 otherwise.
    pub width: u32,
    /// See `width`.
    pub height: u32,
    /// Packets received since the track started.
    pub packets_received: u64,
    /// Packets lost since it started and never repaired (expected from
    /// the sequence numbers minus received, RFC 3550 A.3).
    pub packets_lost: u64,
    /// Packets that came late since it started: NACK repairs, or
    /// reordered by the network.
    pub packets_late: u64,
    /// The fraction of the packets expected over the window that the
    /// network lost, before any repair (a packet that came late counts as
    /// lost), 0 to 1: how good the publisher's link is.
    pub loss: f64,
    /// Interarrival jitter (RFC 3550 A.8), milliseconds.
    pub jitter_ms: f64,
    /// NACKs the viewers sent about this track, since it started.
    pub nacks: u64,
    /// Keyframe requests (PLI, FIR) the viewers sent about it.
    pub plis: u64,
}

/// One viewer session's statistics.
#[derive(Debug, Clone, PartialEq)]
pub struct ViewerStats {
    /// Who plays the stream.
    pub identity: String,
    /// Its tracks.
    pub tracks: Vec<ViewerTrackStats>,
}

/// What one of a viewer's tracks was sent over the window, and what its
/// last reception report said.
#[derive(Debug, Clone, PartialEq)]
pub struct ViewerTrackStats {
    /// Audio or video.
    pub kind: TrackKind,
    /// Payload bits per second sent to it (repairs on its media SSRC
    /// included).
    pub bitrate_bps: u64,
    /// RTP packets per second sent to it.
    pub packets_per_second: f64,
    /// Its last report's fraction lost (what it did not receive over the
    /// report's interval; receivers differ on whether a repair counts as
    /// received), 0 to 1.
    pub fraction_lost: f64,
    /// Its last report's cumulative packets lost.
    pub packets_lost: i64,
    /// Its last report's jitter, milliseconds.
    pub jitter_ms: f64,
    /// Round trip server → viewer → server, milliseconds; `None` until a
    /// report referred to one of our sender reports.
    pub rtt_ms: Option<f64>,
    /// NACKs it sent.
    pub nacks: u64,
    /// Keyframe requests it sent.
    pub plis: u64,
}

/// A stream's statistics.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamStats {
    /// When the newest sample was taken: the window ends there.
    pub sampled_at: Instant,
    /// What the rates were averaged over (shorter just after the stream
    /// started).
    pub window: Duration,
    /// The published tracks.
    pub tracks: Vec<TrackStats>,
    /// Viewer sessions, by identity.
    pub viewers: Vec<ViewerStats>,
    /// Whether the publisher's link is poor: a track lost
    /// [`POOR_LINK_LOSS`] or more over the window.
    pub poor_link: bool,
}

#[derive(Debug)]
struct Sample {
    at: Instant,
    tracks: Vec<TrackSample>,
    viewers: Vec<ViewerSample>,
}

/// The samples of one published stream that its rates are taken from.
#[derive(Debug, Default)]
pub struct StatsWindow {
    samples: VecDeque<Sample>,
}

impl StatsWindow {
    /// Keeps a new sample taken at `at`, and forgets those no longer
    /// needed: the oldest kept is the newest at least [`STATS_WINDOW`] old.
    pub fn push(&mut self, at: Instant, tracks: Vec<TrackSample>, viewers: Vec<ViewerSample>) {
        self.samples.push_back(Sample {
            at,
            tracks,
            viewers,
        });
        while self
            .samples
            .get(1)
            .is_some_and(|second| at.saturating_duration_since(second.at) >= STATS_WINDOW)
        {
            self.samples.pop_front();
        }
    }

    /// The statistics from the samples kept; `None` before the first.
    pub fn stats(&self) -> Option<StreamStats> {
        let newest = self.samples.back()?;
        let oldest = self.samples.front()?;
        let window = newest.at.saturating_duration_since(oldest.at);
        let secs = window.as_secs_f64();
        let per_second = |delta: u64| if secs > 0.0 { delta as f64 / secs } else { 0.0 };
        let tracks: Vec<TrackStats> = newest
            .tracks
            .iter()
            .map(|now| {
                let then = oldest.tracks.iter().find(|t| t.kind == now.kind);
                let delta = |f: fn(&TrackSample) -> u64| f(now).saturating_sub(then.map_or(0, f));
                let lost = |t: &TrackSample| t.expected.saturating_sub(t.packets);
                let expected = delta(|t| t.expected);
                // Before repair: a repaired packet was lost once.
                let lost_in_window = delta(lost) + delta(|t| t.late);
                let viewer_tracks = || {
                    newest
                        .viewers
                        .iter()
                        .flat_map(|v| &v.tracks)
                        .filter(|t| t.kind == now.kind)
                };
                TrackStats {
                    kind: now.kind,
                    codec: now.codec.clone(),
                    bitrate_bps: (per_second(delta(|t| t.bytes)) * 8.0) as u64,
                    packets_per_second: per_second(delta(|t| t.packets)),
                    frames_per_second: per_second(delta(|t| t.frames)),
                    width: now.width,
                    height: now.height,
                    packets_received: now.packets,
                    packets_lost: lost(now),
                    packets_late: now.late,
                    loss: if expected > 0 {
                        (lost_in_window as f64 / expected as f64).min(1.0)
                    } else {
                        0.0
                    },
                    jitter_ms: now.jitter_us as f64 / 1000.0,
                    nacks: viewer_tracks().map(|t| t.nacks).sum(),
                    plis: viewer_tracks().map(|t| t.plis).sum(),
                }
            })
            .collect();
        let viewers = newest
            .viewers
            .iter()
            .map(|viewer| {
                let then = oldest.viewers.iter().find(|v| v.key == viewer.key);
                ViewerStats {
                    identity: viewer.identity.clone(),
                    tracks: viewer
                        .tracks
                        .iter()
                        .map(|now| {
                            let then =
                                then.and_then(|v| v.tracks.iter().find(|t| t.kind == now.kind));
                            viewer_track(now, then, per_second)
                        })
                        .collect(),
                }
            })
            .collect();
        let poor_link = tracks.iter().any(|t| t.loss >= POOR_LINK_LOSS);
        Some(StreamStats {
            sampled_at: newest.at,
            window,
            tracks,
            viewers,
            poor_link,
        })
    }
}

fn viewer_track(
    now: &ViewerTrackSample,
    then: Option<&ViewerTrackSample>,
    per_second: impl Fn(u64) -> f64,
) -> ViewerTrackStats {
    // A viewer new since the oldest sample has no rate yet.
    let delta =
        |f: fn(&ViewerTrackSample) -> u64| then.map_or(0, |then| f(now).saturating_sub(f(then)));
    ViewerTrackStats {
        kind: now.kind,
        bitrate_bps: (per_second(delta(|t| t.bytes)) * 8.0) as u64,
        packets_per_second: per_second(delta(|t| t.packets)),
        fraction_lost: f64::from(now.fraction_lost) / 256.0,
        packets_lost: now.cumulative_lost,
        jitter_ms: now.jitter_us as f64 / 1000.0,
        rtt_ms: now.rtt_us.map(|us| us as f64 / 1000.0),
        nacks: now.nacks,
        plis: now.plis,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn video(packets: u64, expected: u64, bytes: u64, frames: u64) -> TrackSample {
        TrackSample {
            kind: TrackKind::Video,
            codec: "video/H264".into(),
            packets,
            bytes,
            expected,
            late: 0,
            frames,
            jitter_us: 1500,
            width: 320,
            height: 240,
        }
    }

    fn viewer(key: u64, bytes: u64, fraction_lost: u8) -> ViewerSample {
        ViewerSample {
            key,
            identity: format!("v{key}"),
            tracks: vec![ViewerTrackSample {
                kind: TrackKind::Video,
                packets: bytes / 1000,
                bytes,
                reports: 1,
                fraction_lost,
                cumulative_lost: 7,
                jitter_us: 2000,
                rtt_us: Some(12_500),
                nacks: 3,
                plis: 1,
            }],
        }
    }

    #[test]
    fn rates_come_from_the_oldest_sample_in_the_window() {
        let t0 = Instant::now();
        let mut w = StatsWindow::default();
        assert!(w.stats().is_none());
        // Every 500 ms: 50 packets (1000 bytes, 15 frames), 5 of them lost.
        for i in 0..=8u64 {
            let at = t0 + Duration::from_millis(500 * i);
            w.push(
                at,
                vec![video(45 * i, 50 * i, 50_000 * i, 15 * i)],
                vec![viewer(1, 40_000 * i, 26)],
            );
        }
        let stats = w.stats().expect("stats");
        assert_eq!(stats.window, STATS_WINDOW, "the oldest kept is 2 s old");
        let t = &stats.tracks[0];
        assert_eq!(t.bitrate_bps, 800_000);
        assert!((t.packets_per_second - 90.0).abs() < 1e-9);
        assert!((t.frames_per_second - 30.0).abs() < 1e-9);
        assert!((t.loss - 0.1).abs() < 1e-9);
        assert_eq!((t.packets_received, t.packets_lost), (360, 40));
        assert_eq!((t.width, t.height, t.nacks, t.plis), (320, 240, 3, 1));
        assert!(stats.poor_link, "10 % lost");
        let v = &stats.viewers[0].tracks[0];
        assert_eq!(v.bitrate_bps, 640_000);
        assert!((v.fraction_lost - 26.0 / 256.0).abs() < 1e-9);
        assert_eq!(v.rtt_ms, Some(12.5));
    }

    #[test]
    fn a_repaired_packet_was_lost_on_the_way() {
        let t0 = Instant::now();
        let mut w = StatsWindow::default();
        w.push(t0, vec![video(0, 0, 0, 0)], vec![]);
        // 100 expected, all came: 6 of them late (NACK repairs).
        let mut repaired = video(100, 100, 100_000, 30);
        repaired.late = 6;
        w.push(t0 + Duration::from_secs(1), vec![repaired], vec![]);
        let stats = w.stats().expect("stats");
        let t = &stats.tracks[0];
        assert_eq!((t.packets_lost, t.packets_late), (0, 6));
        assert!((t.loss - 0.06).abs() < 1e-9, "{}", t.loss);
        assert!(stats.poor_link);
    }

    #[test]
    fn a_clean_link_is_not_poor_and_a_new_viewer_has_no_rate_yet() {
        let t0 = Instant::now();
        let mut w = StatsWindow::default();
        w.push(t0, vec![video(0, 0, 0, 0)], vec![]);
        let at = t0 + Duration::from_millis(500);
        w.push(
            at,
            vec![video(50, 50, 50_000, 15)],
            vec![viewer(2, 9_000, 0)],
        );
        let stats = w.stats().expect("stats");
        assert_eq!(stats.window, Duration::from_millis(500));
        assert_eq!(stats.tracks[0].bitrate_bps, 800_000);
        assert!(!stats.poor_link);
        assert_eq!(stats.viewers[0].tracks[0].bitrate_bps, 0);
    }
}
