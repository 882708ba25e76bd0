//! What a publisher has sent, for the alarms (a stream stalled, a
//! keyframe asked for and not sent, bitrate collapsed) and the live stream
//! statistics (per track: packets, bytes, frames, loss, jitter, picture
//! size), and what each viewer was sent and reported
//! ([`ViewerCounters`]): counted by the shards with relaxed atomics,
//! sampled by the control plane, which takes rates from the difference of
//! two samples. Each counter has one writer (one shard thread), so the
//! statistics' counters are bumped with a load and a store, not a locked
//! read-modify-write.

use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use vigil_control::event::TrackKind;
use vigil_control::media::{TrackSample, ViewerTrackSample};

use crate::sfu::MediaKind;
use crate::sfu::reception::Arrival;

/// Adds `n` to a counter only this thread writes.
fn bump(counter: &AtomicU64, n: u64) {
    counter.store(
        counter.load(Ordering::Relaxed).wrapping_add(n),
        Ordering::Relaxed,
    );
}

fn slot(kind: MediaKind) -> usize {
    match kind {
        MediaKind::Audio => 0,
        MediaKind::Video => 1,
    }
}

fn track_kind(slot: usize) -> TrackKind {
    if slot == 0 {
        TrackKind::Audio
    } else {
        TrackKind::Video
    }
}

/// One published track's reception (its layers together, for simulcast),
/// written by the publisher's shard.
#[derive(Debug, Default)]
pub struct TrackCounters {
    packets: AtomicU64,
    bytes: AtomicU64,
    expected: AtomicU64,
    late: AtomicU64,
    frames: AtomicU64,
    jitter_us: AtomicU64,
    /// The last keyframe's picture size, `width << 16 | height`.
    size: AtomicU32,
}

impl TrackCounters {
    /// A media packet: `arrival` is what it changed in the stream's
    /// sequence ([`super::reception::Reception::on_packet`]), `jitter_us`
    /// the stream's jitter after it; `frame_end` counts a frame.
    pub(crate) fn count(
        &self,
        payload_len: usize,
        arrival: Arrival,
        frame_end: bool,
        jitter_us: u64,
    ) {
        bump(&self.packets, 1);
        bump(&self.bytes, payload_len as u64);
        if arrival.expected > 0 {
            bump(&self.expected, arrival.expected);
        }
        if arrival.late {
            bump(&self.late, 1);
        }
        if frame_end {
            bump(&self.frames, 1);
        }
        self.jitter_us.store(jitter_us, Ordering::Relaxed);
    }

    /// A keyframe's picture size.
    pub(crate) fn picture_size(&self, width: u32, height: u32) {
        let packed = (width.min(0xFFFF) << 16) | height.min(0xFFFF);
        self.size.store(packed, Ordering::Relaxed);
    }

    fn snapshot(&self, kind: TrackKind, codec: String) -> TrackSample {
        let size = self.size.load(Ordering::Relaxed);
        TrackSample {
            kind,
            codec,
            packets: self.packets.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            expected: self.expected.load(Ordering::Relaxed),
            late: self.late.load(Ordering::Relaxed),
            frames: self.frames.load(Ordering::Relaxed),
            jitter_us: self.jitter_us.load(Ordering::Relaxed),
            width: size >> 16,
            height: size & 0xFFFF,
        }
    }
}

/// What one viewer session was sent and reported, per kind, written by
/// the viewer's shard.
#[derive(Debug, Default)]
pub struct ViewerCounters {
    tracks: [ViewerTrackCounters; 2],
}

#[derive(Debug, Default)]
struct ViewerTrackCounters {
    packets: AtomicU64,
    bytes: AtomicU64,
    reports: AtomicU64,
    fraction_lost: AtomicU32,
    cumulative_lost: AtomicI64,
    jitter_us: AtomicU64,
    /// Microseconds plus one; 0 until a report carried a round trip.
    rtt_us: AtomicU64,
    nacks: AtomicU64,
    plis: AtomicU64,
}

/// A viewer's reception report on one of its tracks, as the shard read it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ViewerReport {
    pub fraction_lost: u8,
    pub cumulative_lost: i64,
    pub jitter: Duration,
    pub rtt: Option<Duration>,
}

impl ViewerCounters {
    /// The totals the viewer's `kind` track was sent (kept by its sink).
    pub(crate) fn sent(&self, kind: MediaKind, packets: u64, bytes: u64) {
        let t = &self.tracks[slot(kind)];
        t.packets.store(packets, Ordering::Relaxed);
        t.bytes.store(bytes, Ordering::Relaxed);
    }

    /// A reception report about the viewer's `kind` track.
    pub(crate) fn report(&self, kind: MediaKind, report: ViewerReport) {
        let t = &self.tracks[slot(kind)];
        bump(&t.reports, 1);
        t.fraction_lost
            .store(report.fraction_lost.into(), Ordering::Relaxed);
        t.cumulative_lost
            .store(report.cumulative_lost, Ordering::Relaxed);
        t.jitter_us
            .store(report.jitter.as_micros() as u64, Ordering::Relaxed);
        if let Some(rtt) = report.rtt {
            t.rtt_us
                .store(rtt.as_micros() as u64 + 1, Ordering::Relaxed);
        }
    }

    /// A NACK from the viewer about its `kind` track.
    pub(crate) fn nack(&self, kind: MediaKind) {
        bump(&self.tracks[slot(kind)].nacks, 1);
    }

    /// A PLI or FIR from the viewer about its `kind` track.
    pub(crate) fn keyframe_request(&self, kind: MediaKind) {
        bump(&self.tracks[slot(kind)].plis, 1);
    }

    /// The tracks the viewer was sent something on, or reported about.
    pub fn snapshot(&self) -> Vec<ViewerTrackSample> {
        self.tracks
            .iter()
            .enumerate()
            .filter(|(_, t)| {
                t.packets.load(Ordering::Relaxed) > 0 || t.reports.load(Ordering::Relaxed) > 0
            })
            .map(|(i, t)| ViewerTrackSample {
                kind: track_kind(i),
                packets: t.packets.load(Ordering::Relaxed),
                bytes: t.bytes.load(Ordering::Relaxed),
                reports: t.reports.load(Ordering::Relaxed),
                fraction_lost: t.fraction_lost.load(Ordering::Relaxed) as u8,
                cumulative_lost: t.cumulative_lost.load(Ordering::Relaxed),
                jitter_us: t.jitter_us.load(Ordering::Relaxed),
                rtt_us: t.rtt_us.load(Ordering::Relaxed).checked_sub(1),
                nacks: t.nacks.load(Ordering::Relaxed),
                plis: t.plis.load(Ordering::Relaxed),
            })
            .collect()
    }
}

/// What a publisher has sent, and the keyframes asked of it, counted on the
/// hot path with relaxed atomics and sampled for alarms (one per publisher
/// session). Only the publisher's shard writes them, so
/// `keyframe_requests_answered` is exact: it copies `keyframe_requests` at
/// each keyframe on the same thread that counts the requests. A sample
/// taken on another thread may see the two a moment apart (relaxed loads),
/// which makes a request look answered or outstanding for one sample at
/// most.
#[derive(Debug, Default)]
pub struct StreamCounters {
    packets: AtomicU64,
    bytes: AtomicU64,
    keyframes: AtomicU64,
    keyframe_requests: AtomicU64,
    keyframe_requests_answered: AtomicU64,
    /// Per track kind (audio, video), for the statistics.
    tracks: [TrackCounters; 2],
}

impl StreamCounters {
    /// A packet from the publisher; `keyframe` if it starts a keyframe,
    /// which answers every keyframe request sent before it.
    pub(crate) fn count(&self, payload_len: usize, keyframe: bool) {
        self.packets.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(payload_len as u64, Ordering::Relaxed);
        if keyframe {
            self.keyframes.fetch_add(1, Ordering::Relaxed);
            let asked = self.keyframe_requests.load(Ordering::Relaxed);
            self.keyframe_requests_answered
                .store(asked, Ordering::Relaxed);
        }
    }

    /// A keyframe request (PLI) sent to the publisher, after coalescing.
    pub(crate) fn count_keyframe_request(&self) {
        self.keyframe_requests.fetch_add(1, Ordering::Relaxed);
    }

    /// The statistics of the publisher's `kind` track.
    pub(crate) fn track(&self, kind: MediaKind) -> &TrackCounters {
        &self.tracks[slot(kind)]
    }

    /// The publisher's tracks now (those with packets), named by the
    /// codecs `codec_of` gives each kind.
    pub fn tracks(&self, codec_of: impl Fn(TrackKind) -> Option<String>) -> Vec<TrackSample> {
        self.tracks
            .iter()
            .enumerate()
            .filter_map(|(i, t)| {
                let kind = track_kind(i);
                let codec = codec_of(kind)?;
                Some(t.snapshot(kind, codec))
            })
            .collect()
    }

    /// The counters now, for the alarm rules.
    pub fn snapshot(&self, has_video: bool) -> vigil_control::alarms::StreamCounters {
        vigil_control::alarms::StreamCounters {
            packets: self.packets.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            keyframes: self.keyframes.load(Ordering::Relaxed),
            keyframe_requests: self.keyframe_requests.load(Ordering::Relaxed),
            keyframe_requests_answered: self.keyframe_requests_answered.load(Ordering::Relaxed),
            has_video,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_keyframe_answers_the_requests_before_it_only() {
        let counters = StreamCounters::default();
        counters.count(1000, true);
        counters.count_keyframe_request();
        counters.count_keyframe_request();
        counters.count(1000, false);
        let waiting = counters.snapshot(true);
        assert_eq!(
            (
                waiting.keyframe_requests,
                waiting.keyframe_requests_answered
            ),
            (2, 0)
        );

        counters.count(1000, true);
        counters.count_keyframe_request();
        let next = counters.snapshot(true);
        assert_eq!(
            (
                next.keyframes,
                next.keyframe_requests,
                next.keyframe_requests_answered
            ),
            (2, 3, 2),
            "the request after the keyframe still waits"
        );
        assert_eq!((next.packets, next.bytes), (3, 3000));
    }
}
