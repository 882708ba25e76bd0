//! Stream alarms: media facts in, alarm events out.
//!
//! The forwarding core keeps cumulative counters per published stream
//! ([`StreamCounters`]); the owner of the stream samples them about every
//! 500 ms and feeds them to [`StreamAlarms::evaluate`], which returns the
//! alarms raised or cleared since the previous call. A monitoring wall must
//! show an alarm within 2 s of its cause, and must not flap, so every alarm
//! is a level: it is raised once when its condition starts and cleared once
//! when the condition ends, and `evaluate` can never raise an active alarm
//! or clear an inactive one.
//!
//! The rules, all measured on the `now` instants passed to `evaluate` (a
//! counter that moved is taken to have moved at that call's `now`):
//!
//! - **Stalled**: the packets counter has not changed for at least
//!   [`AlarmRules::stall_after`], counted from the call that last saw it
//!   change (or from [`StreamAlarms::new`]). It clears on the first call that
//!   sees it change again. While stalled, the other two alarms are not raised
//!   and are cleared if active: the stall explains them, and the wall should
//!   show one badge for one cause.
//! - **LowBitrate**: the bitrate over a sliding window of about 2 s is below
//!   [`AlarmRules::min_bitrate_bps`] (0 disables the rule; disabling it clears
//!   an active alarm). Once raised it clears only when the bitrate is at or
//!   above 110 % of the threshold, so a rate hovering around the threshold
//!   does not flap. It is not evaluated until media has flowed for one full
//!   window, both after the stream starts and after a stall ends, so neither
//!   a slow start nor the silent part of a stall reads as a low bitrate. It
//!   is only raised on a call that saw new packets: a stream that simply
//!   stopped is left to the stall rule instead of showing a low-bitrate badge
//!   for the second before the stall is declared.
//! - **KeyframeInterval**: a keyframe was asked of the publisher and has not
//!   come for [`AlarmRules::keyframe_wait`] (0 disables the rule). A request
//!   is outstanding while the stream's keyframe requests counter is ahead of
//!   the value it had when the last keyframe arrived
//!   ([`StreamCounters::keyframe_requests_answered`]); the wait is counted
//!   from the first call that saw it outstanding, or from the last call that
//!   saw a keyframe answer earlier requests while a newer one still waits.
//!   Only for streams with video and at least one viewer: a stream nobody
//!   watches needs no keyframe. It clears on the keyframe that answers, when
//!   the last viewer leaves, when the stream no longer has video, or when the
//!   stream stalls; after a stall the wait starts again when media resumes.
//!   The interval between keyframes does not matter: browsers send them only
//!   when asked, and an encoder with a fixed GOP that ignores requests is
//!   fine as long as its next keyframe comes within the wait.
//!
//! Every alarm is recomputed from its condition on each call, so changing the
//! [`AlarmRules`] of a live room takes effect on the next evaluation.
//!
//! The bitrate comes from a small fixed ring of `(instant, bytes)` samples,
//! kept at least [`SAMPLE_SPACING`] apart: `(Δbytes × 8) / Δt` from the
//! oldest sample inside the window to now. If evaluation paused for longer
//! than the window, the newest older sample is used instead, so the rate is
//! still measured rather than unknown. A bytes counter that goes backwards
//! (the forwarder restarted its counters) starts a fresh baseline, with the
//! same one-window grace as a new stream.
//!
//! `evaluate` runs for every stream twice a second, so it allocates nothing
//! unless an alarm changed.

use std::time::{Duration, Instant};

use crate::room::AlarmRules;

/// Length of the sliding window the bitrate is measured over.
pub const BITRATE_WINDOW: Duration = Duration::from_secs(2);

/// Smallest gap between two stored bitrate samples; calls closer together
/// than this reuse the previous sample, which keeps the ring bounded however
/// often `evaluate` is called.
pub const SAMPLE_SPACING: Duration = Duration::from_millis(250);

/// With samples at least `SAMPLE_SPACING` apart, at most
/// `WINDOW / SPACING + 1` of them fit inside the window; one more keeps a
/// sample at or beyond the window's start, so the oldest sample the
/// measurement needs is never overwritten.
const RING_LEN: usize = (BITRATE_WINDOW.as_millis() / SAMPLE_SPACING.as_millis()) as usize + 2;

/// Which alarm.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum AlarmKind {
    /// No media for `stall_after`.
    Stalled,
    /// Publisher bitrate under `min_bitrate_bps`.
    LowBitrate,
    /// A keyframe asked of the publisher has not come within `keyframe_wait`.
    KeyframeInterval,
}

/// Every kind in `Ord` order, which is also the order of the state array.
const KINDS: [AlarmKind; 3] = [
    AlarmKind::Stalled,
    AlarmKind::LowBitrate,
    AlarmKind::KeyframeInterval,
];

/// Cumulative counters of one published stream (all its tracks), as the forwarder keeps them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamCounters {
    /// RTP packets received from the publisher since the stream started.
    pub packets: u64,
    /// RTP payload bytes received since the stream started.
    pub bytes: u64,
    /// Video keyframes received since the stream started.
    pub keyframes: u64,
    /// Keyframe requests (PLI) sent to the publisher since the stream
    /// started, after coalescing: for a viewer that joined, lost its
    /// picture, changed layer, or was unmuted.
    pub keyframe_requests: u64,
    /// What `keyframe_requests` was when the last keyframe arrived: the
    /// requests that keyframe answered. Below `keyframe_requests` while a
    /// request waits for its keyframe.
    pub keyframe_requests_answered: u64,
    /// Whether the stream has a video track (the keyframe rule applies only then).
    pub has_video: bool,
}

/// A change of alarm state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AlarmChange {
    /// The condition began. `detail` is a short human sentence, e.g. "no media for 3.0 s" or
    /// "bitrate 12 kbit/s is under 50 kbit/s" or "a keyframe asked for 5.0 s ago has not come".
    Raised {
        /// Which alarm.
        kind: AlarmKind,
        /// What was measured, for the wall.
        detail: String,
    },
    /// The condition ended.
    Cleared {
        /// Which alarm.
        kind: AlarmKind,
    },
}

/// Alarm state of one published stream.
#[derive(Debug)]
pub struct StreamAlarms {
    /// Packets counter at the last call, to see whether it moved.
    packets: u64,
    /// When the packets counter last moved (or the stream started).
    last_packet_at: Instant,
    /// `keyframe_requests_answered` at the last call: when it moves, a
    /// keyframe answered the requests before it.
    answered: u64,
    /// Since when the oldest unanswered keyframe request has waited, as
    /// first seen by a call; `None` while none waits (or it does not count:
    /// no viewers, no video, stalled).
    keyframe_wait_since: Option<Instant>,
    /// Since when media has flowed without a stall or counter reset; the
    /// bitrate rule waits one window after it.
    flowing_since: Instant,
    /// Recent bytes samples for the bitrate.
    ring: ByteRing,
    /// Last measured bitrate, 0 until there is a measurement.
    bitrate_bps: u64,
    /// Active alarms, indexed like `KINDS`.
    active: [bool; 3],
}

impl StreamAlarms {
    /// A stream that started publishing at `now`.
    pub fn new(now: Instant) -> Self {
        StreamAlarms {
            packets: 0,
            last_packet_at: now,
            answered: 0,
            keyframe_wait_since: None,
            flowing_since: now,
            ring: ByteRing::new(now, 0),
            bitrate_bps: 0,
            active: [false; 3],
        }
    }

    /// Feeds the latest cumulative counters at `now`, with the number of
    /// viewers the stream has, and returns the alarms that were raised or
    /// cleared since the last call, in a stable order (by AlarmKind).
    pub fn evaluate(
        &mut self,
        counters: StreamCounters,
        viewers: usize,
        rules: &AlarmRules,
        now: Instant,
    ) -> Vec<AlarmChange> {
        if counters.bytes < self.ring.newest().1 {
            // Cumulative counters only go back when the forwarder restarted
            // them; a delta across that would be nonsense, so start over.
            self.ring.reset(now, counters.bytes);
            self.flowing_since = now;
        }
        // Measured before a stall-end reset below, so the rate reported on
        // the call that sees media resume still has a baseline.
        let rate = self.ring.rate_bps(now, counters.bytes);
        self.bitrate_bps = rate.unwrap_or(0);

        let new_packets = counters.packets != self.packets;
        if new_packets {
            self.packets = counters.packets;
            self.last_packet_at = now;
            if self.is_active(AlarmKind::Stalled) {
                // The window still holds the silent seconds; without a fresh
                // start, every stall would end in a low-bitrate alarm.
                self.ring.reset(now, counters.bytes);
                self.flowing_since = now;
            }
        }
        if counters.keyframe_requests_answered != self.answered {
            // A keyframe came: the requests before it are answered, and one
            // still outstanding was made after it, so it waits from now.
            self.answered = counters.keyframe_requests_answered;
            self.keyframe_wait_since = None;
        }
        self.ring.push(now, counters.bytes);

        let silent_for = now.saturating_duration_since(self.last_packet_at);
        // A zero `stall_after` still needs some silence, or a stream that
        // just sent would count as stalled.
        let stalled = !silent_for.is_zero() && silent_for >= rules.stall_after;

        let low = match rate {
            Some(bps)
                if !stalled
                    && rules.min_bitrate_bps > 0
                    && now.saturating_duration_since(self.flowing_since) >= BITRATE_WINDOW =>
            {
                let min = u128::from(rules.min_bitrate_bps);
                if self.is_active(AlarmKind::LowBitrate) {
                    u128::from(bps) * 10 < min * 11
                } else {
                    // A stream that has gone silent drains the window to 0
                    // before `stall_after` is up; raising here would put a
                    // low-bitrate badge up for a second before the stall
                    // replaces it. Slow media still brings packets.
                    new_packets && u128::from(bps) < min
                }
            }
            _ => false,
        };

        let waiting = counters.has_video
            && viewers > 0
            && !stalled
            && counters.keyframe_requests > counters.keyframe_requests_answered;
        // A stall also restarts the wait: the publisher cannot answer while
        // nothing arrives from it, and the stall alarm already says so.
        let keyframe_wait = if waiting {
            now.saturating_duration_since(*self.keyframe_wait_since.get_or_insert(now))
        } else {
            self.keyframe_wait_since = None;
            Duration::ZERO
        };
        let keyframe_late = !rules.keyframe_wait.is_zero() && keyframe_wait >= rules.keyframe_wait;

        let wanted = [stalled, low, keyframe_late];
        let mut changes = Vec::new();
        for (i, kind) in KINDS.into_iter().enumerate() {
            if wanted[i] == self.active[i] {
                continue;
            }
            self.active[i] = wanted[i];
            changes.push(if wanted[i] {
                let detail = match kind {
                    AlarmKind::Stalled => format!("no media for {}", secs(silent_for)),
                    AlarmKind::LowBitrate => format!(
                        "bitrate {} is under {}",
                        kbits(self.bitrate_bps),
                        kbits(rules.min_bitrate_bps)
                    ),
                    AlarmKind::KeyframeInterval => {
                        format!(
                            "a keyframe asked for {} ago has not come",
                            secs(keyframe_wait)
                        )
                    }
                };
                AlarmChange::Raised { kind, detail }
            } else {
                AlarmChange::Cleared { kind }
            });
        }
        changes
    }

    /// Alarms active right now, sorted.
    pub fn active(&self) -> Vec<AlarmKind> {
        KINDS
            .into_iter()
            .zip(self.active)
            .filter_map(|(kind, on)| on.then_some(kind))
            .collect()
    }

    /// Measured bitrate over the last window in bits per second (for ListParticipants).
    pub fn bitrate_bps(&self) -> u64 {
        self.bitrate_bps
    }

    fn is_active(&self, kind: AlarmKind) -> bool {
        self.active[kind as usize]
    }
}

/// "3.0 s".
fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

/// "12 kbit/s", or "0.8 kbit/s" under 10 kbit/s where whole kbit/s would
/// round a small threshold to nothing.
fn kbits(bps: u64) -> String {
    if bps >= 10_000 {
        format!("{} kbit/s", bps / 1000)
    } else {
        format!("{:.1} kbit/s", bps as f64 / 1000.0)
    }
}

/// Fixed ring of `(instant, cumulative bytes)` samples, oldest overwritten.
#[derive(Debug)]
struct ByteRing {
    samples: [(Instant, u64); RING_LEN],
    /// Index of the newest sample.
    head: usize,
    /// Samples stored, 1..=RING_LEN.
    len: usize,
}

impl ByteRing {
    fn new(at: Instant, bytes: u64) -> Self {
        ByteRing {
            samples: [(at, bytes); RING_LEN],
            head: 0,
            len: 1,
        }
    }

    fn reset(&mut self, at: Instant, bytes: u64) {
        *self = ByteRing::new(at, bytes);
    }

    fn newest(&self) -> (Instant, u64) {
        self.samples[self.head]
    }

    fn push(&mut self, at: Instant, bytes: u64) {
        if at.saturating_duration_since(self.newest().0) < SAMPLE_SPACING {
            return;
        }
        self.head = (self.head + 1) % RING_LEN;
        self.samples[self.head] = (at, bytes);
        self.len = (self.len + 1).min(RING_LEN);
    }

    /// Stored samples, oldest first.
    fn oldest_first(&self) -> impl Iterator<Item = (Instant, u64)> + '_ {
        let first = (self.head + RING_LEN + 1 - self.len) % RING_LEN;
        (0..self.len).map(move |i| self.samples[(first + i) % RING_LEN])
    }

    /// Bits per second from the oldest sample inside the window to
    /// `(now, bytes)`; `None` if no stored sample is older than `now`.
    fn rate_bps(&self, now: Instant, bytes: u64) -> Option<u64> {
        let mut before_window = None;
        let mut base = None;
        for sample in self.oldest_first() {
            let age = now.saturating_duration_since(sample.0);
            if age > BITRATE_WINDOW {
                before_window = Some(sample);
            } else {
                if !age.is_zero() {
                    base = Some(sample);
                }
                break;
            }
        }
        // Only when nothing is inside the window but `now` itself, i.e. the
        // caller paused for longer than the window.
        let (at, base_bytes) = base.or(before_window)?;
        let nanos = now.saturating_duration_since(at).as_nanos();
        let bits = u128::from(bytes.saturating_sub(base_bytes)) * 8;
        Some(u64::try_from(bits * 1_000_000_000 / nanos).unwrap_or(u64::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STEP: Duration = Duration::from_millis(500);

    /// A publisher sampled every 500 ms on a fake clock, watched by one
    /// viewer unless told otherwise.
    struct Sim {
        t0: Instant,
        now: Instant,
        counters: StreamCounters,
        viewers: usize,
        rules: AlarmRules,
        alarms: StreamAlarms,
    }

    impl Sim {
        fn new(has_video: bool) -> Self {
            let t0 = Instant::now();
            Sim {
                t0,
                now: t0,
                counters: StreamCounters {
                    has_video,
                    ..StreamCounters::default()
                },
                viewers: 1,
                rules: AlarmRules::default(),
                alarms: StreamAlarms::new(t0),
            }
        }

        /// The server sends the publisher a keyframe request (counted as
        /// the shard counts it; seen by the next step).
        fn ask(&mut self) {
            self.counters.keyframe_requests += 1;
        }

        /// Advances one step during which the publisher sent at `bps`
        /// (0: nothing at all) and maybe a keyframe, after any request
        /// made before the step, then evaluates.
        fn step(&mut self, bps: u64, keyframe: bool) -> Vec<AlarmChange> {
            self.now += STEP;
            if bps > 0 {
                let bytes = bps * STEP.as_millis() as u64 / 8000;
                self.counters.bytes += bytes;
                self.counters.packets += (bytes / 1200).max(1);
            }
            if keyframe {
                self.counters.keyframes += 1;
                self.counters.keyframe_requests_answered = self.counters.keyframe_requests;
            }
            self.alarms
                .evaluate(self.counters, self.viewers, &self.rules, self.now)
        }

        /// `n` steps at `bps`, a keyframe every 2 s; all changes with the
        /// elapsed time at which they happened.
        fn run(&mut self, n: usize, bps: u64) -> Vec<(Duration, AlarmChange)> {
            let mut out = Vec::new();
            for _ in 0..n {
                let keyframe = bps > 0 && self.elapsed().as_millis() % 2000 == 1500;
                let elapsed = self.elapsed() + STEP;
                out.extend(self.step(bps, keyframe).into_iter().map(|c| (elapsed, c)));
            }
            out
        }

        fn elapsed(&self) -> Duration {
            self.now - self.t0
        }
    }

    fn raised(kind: AlarmKind, change: &AlarmChange) -> bool {
        matches!(change, AlarmChange::Raised { kind: k, .. } if *k == kind)
    }

    fn cleared(kind: AlarmKind) -> AlarmChange {
        AlarmChange::Cleared { kind }
    }

    #[test]
    fn steady_media_above_threshold_raises_nothing() {
        let mut sim = Sim::new(true);
        assert_eq!(sim.run(120, 300_000), vec![]);
        assert!(sim.alarms.active().is_empty());
    }

    #[test]
    fn stall_is_raised_once_within_one_step_and_cleared_once_on_resume() {
        let mut sim = Sim::new(true);
        sim.run(10, 300_000);
        let stopped_at = sim.elapsed();

        let changes = sim.run(20, 0);
        assert_eq!(changes.len(), 1, "{changes:?}");
        let (at, change) = &changes[0];
        assert_eq!(
            *change,
            AlarmChange::Raised {
                kind: AlarmKind::Stalled,
                detail: "no media for 3.0 s".into(),
            }
        );
        let late = *at - stopped_at;
        assert!(late >= sim.rules.stall_after && late < sim.rules.stall_after + STEP);

        // Resuming must not leave a low-bitrate or keyframe alarm behind.
        let changes = sim.run(40, 300_000);
        assert_eq!(
            changes,
            vec![(sim.elapsed() - 39 * STEP, cleared(AlarmKind::Stalled))]
        );
    }

    #[test]
    fn stall_clears_and_suppresses_low_bitrate_and_keyframe_alarms() {
        let mut sim = Sim::new(true);
        // Low rate and a keyframe request never answered: both alarms come up.
        sim.ask();
        for _ in 0..22 {
            sim.step(20_000, false);
        }
        assert_eq!(
            sim.alarms.active(),
            vec![AlarmKind::LowBitrate, AlarmKind::KeyframeInterval]
        );

        let mut changes = Vec::new();
        for _ in 0..60 {
            changes.extend(sim.step(0, false));
        }
        assert_eq!(changes.len(), 3, "{changes:?}");
        assert!(raised(AlarmKind::Stalled, &changes[0]));
        assert_eq!(changes[1], cleared(AlarmKind::LowBitrate));
        assert_eq!(changes[2], cleared(AlarmKind::KeyframeInterval));
        assert_eq!(sim.alarms.active(), vec![AlarmKind::Stalled]);
    }

    #[test]
    fn low_bitrate_is_raised_after_a_drop() {
        let mut sim = Sim::new(false);
        assert_eq!(sim.run(10, 200_000), vec![]);
        let dropped_at = sim.elapsed();

        let changes = sim.run(20, 12_000);
        assert_eq!(changes.len(), 1, "{changes:?}");
        let (at, change) = &changes[0];
        assert!(*at - dropped_at <= Duration::from_secs(2), "{at:?}");
        assert!(raised(AlarmKind::LowBitrate, change));
        // By the 20th step the window holds only the low rate.
        assert_eq!(sim.alarms.bitrate_bps(), 12_000);
    }

    #[test]
    fn low_bitrate_detail_names_rate_and_threshold() {
        let mut sim = Sim::new(false);
        let changes = sim.run(6, 12_000);
        assert_eq!(
            changes,
            vec![(
                Duration::from_secs(2),
                AlarmChange::Raised {
                    kind: AlarmKind::LowBitrate,
                    detail: "bitrate 12 kbit/s is under 50 kbit/s".into(),
                }
            )]
        );
    }

    #[test]
    fn slow_start_is_not_low_bitrate() {
        let mut sim = Sim::new(false);
        // The first 1.5 s trickle in (ICE, ramp-up); a measurement before a
        // full window would alarm on it.
        assert_eq!(sim.run(3, 20_000), vec![]);
        assert_eq!(sim.run(20, 200_000), vec![]);
    }

    #[test]
    fn low_bitrate_does_not_flap_between_95_and_105_percent() {
        let mut sim = Sim::new(false);
        let min = sim.rules.min_bitrate_bps;
        sim.run(10, min * 105 / 100);
        let mut changes = Vec::new();
        // Blocks longer than the window, so the measured rate really swings.
        for _ in 0..10 {
            changes.extend(sim.run(8, min * 95 / 100));
            changes.extend(sim.run(8, min * 105 / 100));
        }
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert!(raised(AlarmKind::LowBitrate, &changes[0].1));

        let changes = sim.run(8, min * 111 / 100);
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert_eq!(changes[0].1, cleared(AlarmKind::LowBitrate));
    }

    #[test]
    fn zero_min_bitrate_disables_the_rule() {
        let mut sim = Sim::new(false);
        sim.rules.min_bitrate_bps = 0;
        for _ in 0..40 {
            // Packets flow but carry nothing: rate 0, and no stall either.
            sim.counters.packets += 1;
            assert_eq!(sim.step(0, false), vec![]);
        }
    }

    /// Steps at 300 kbit/s, with a keyframe on the steps `keyframe` picks
    /// (by index) and a request before the steps `ask` picks; the changes
    /// with the step they came on.
    fn keyframe_script(
        sim: &mut Sim,
        steps: usize,
        ask: impl Fn(usize) -> bool,
        keyframe: impl Fn(usize) -> bool,
    ) -> Vec<(usize, AlarmChange)> {
        let mut out = Vec::new();
        for i in 0..steps {
            if ask(i) {
                sim.ask();
            }
            out.extend(sim.step(300_000, keyframe(i)).into_iter().map(|c| (i, c)));
        }
        out
    }

    #[test]
    fn keyframes_nobody_asked_for_never_alarm_however_far_apart() {
        // A browser: one keyframe at the start, then only when asked, and
        // nobody asks. Then an encoder with a 10 s GOP, nobody asking.
        let mut sim = Sim::new(true);
        assert_eq!(keyframe_script(&mut sim, 240, |_| false, |i| i == 0), []);
        assert_eq!(
            keyframe_script(&mut sim, 240, |_| false, |i| i % 20 == 0),
            []
        );
    }

    #[test]
    fn requests_answered_within_the_wait_never_alarm() {
        let mut sim = Sim::new(true);
        // A browser answers on the next frame: in the same step.
        assert_eq!(
            keyframe_script(&mut sim, 60, |i| i % 4 == 0, |i| i % 4 == 0),
            []
        );
        // A fixed-GOP encoder that ignores requests: a request every 1.5 s
        // (viewers joining, repeated PLIs), a keyframe every 5 s that
        // answers the oldest 4.5 s after it, under the 5 s default.
        assert_eq!(
            keyframe_script(&mut sim, 120, |i| i % 10 % 3 == 0, |i| i % 10 == 9),
            []
        );
        assert!(sim.alarms.active().is_empty());
    }

    #[test]
    fn an_unanswered_request_is_raised_once_and_cleared_by_the_keyframe() {
        let mut sim = Sim::new(true);
        // Periodic keyframes before, then a request at step 20 that the
        // encoder does not answer, while more requests pile up (repeated
        // PLIs): they must not restart the wait.
        let changes = keyframe_script(&mut sim, 60, |i| i >= 20, |i| i < 20 && i % 4 == 0);
        assert_eq!(
            changes,
            vec![(
                // Seen at step 20, waited 5 s at step 30.
                30,
                AlarmChange::Raised {
                    kind: AlarmKind::KeyframeInterval,
                    detail: "a keyframe asked for 5.0 s ago has not come".into(),
                }
            )]
        );
        assert_eq!(
            sim.step(300_000, true),
            vec![cleared(AlarmKind::KeyframeInterval)]
        );
        assert_eq!(sim.run(40, 300_000), vec![]);
    }

    #[test]
    fn a_request_after_the_answering_keyframe_waits_from_when_it_was_seen() {
        let mut sim = Sim::new(true);
        sim.ask();
        for _ in 0..8 {
            assert_eq!(sim.step(300_000, false), vec![]);
        }
        // A keyframe answers the first request, and a new one goes out
        // before the next sample: the new one's wait starts now, not 4 s ago.
        sim.counters.keyframes += 1;
        sim.counters.keyframe_requests_answered = sim.counters.keyframe_requests;
        sim.ask();
        let changes = keyframe_script(&mut sim, 12, |_| false, |_| false);
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert_eq!(changes[0].0, 10, "5 s after the second request");
    }

    #[test]
    fn a_stall_suppresses_the_keyframe_alarm_and_restarts_its_wait() {
        let mut sim = Sim::new(true);
        sim.ask();
        let mut changes = Vec::new();
        for _ in 0..4 {
            changes.extend(sim.step(300_000, false));
        }
        // The publisher goes silent with the request unanswered: only the
        // stall is raised, however long it lasts.
        for _ in 0..30 {
            changes.extend(sim.step(0, false));
        }
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert!(raised(AlarmKind::Stalled, &changes[0]));
        // Media resumes, still without the keyframe: the wait counts from
        // the resume.
        let changes = keyframe_script(&mut sim, 14, |_| false, |_| false);
        assert_eq!(changes.len(), 2, "{changes:?}");
        assert_eq!(changes[0], (0, cleared(AlarmKind::Stalled)));
        assert_eq!(changes[1].0, 10);
        assert!(raised(AlarmKind::KeyframeInterval, &changes[1].1));
    }

    #[test]
    fn a_stream_without_viewers_never_raises_the_keyframe_alarm() {
        let mut sim = Sim::new(true);
        sim.viewers = 0;
        sim.ask();
        assert_eq!(keyframe_script(&mut sim, 60, |_| false, |_| false), []);
        // A viewer arrives with the request still unanswered: it waits
        // from now on; and leaving clears the alarm.
        sim.viewers = 1;
        let changes = keyframe_script(&mut sim, 12, |_| false, |_| false);
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert_eq!(changes[0].0, 10);
        sim.viewers = 0;
        assert_eq!(
            sim.step(300_000, false),
            vec![cleared(AlarmKind::KeyframeInterval)]
        );
    }

    #[test]
    fn zero_keyframe_wait_disables_the_rule() {
        let mut sim = Sim::new(true);
        sim.rules.keyframe_wait = Duration::ZERO;
        sim.ask();
        assert_eq!(keyframe_script(&mut sim, 60, |_| false, |_| false), []);
    }

    #[test]
    fn audio_only_streams_never_raise_keyframe_interval() {
        let mut sim = Sim::new(false);
        sim.ask();
        assert_eq!(sim.run(200, 64_000), vec![]);
    }

    #[test]
    fn bitrate_is_measured_within_five_percent() {
        let mut sim = Sim::new(true);
        sim.run(20, 2_500_000);
        let bps = sim.alarms.bitrate_bps();
        assert!(bps.abs_diff(2_500_000) <= 125_000, "{bps}");
    }

    #[test]
    fn active_is_sorted() {
        let mut sim = Sim::new(true);
        sim.ask();
        for _ in 0..22 {
            sim.step(20_000, false);
        }
        let active = sim.alarms.active();
        assert_eq!(active.len(), 2);
        assert!(active.is_sorted());
    }

    #[test]
    fn ring_keeps_a_full_window_when_called_often() {
        let t0 = Instant::now();
        let mut alarms = StreamAlarms::new(t0);
        let mut counters = StreamCounters::default();
        // 10 ms calls at 1 Mbit/s: far more calls than ring slots.
        for i in 1..=500u64 {
            counters.packets = i;
            counters.bytes = i * 1250;
            alarms.evaluate(
                counters,
                1,
                &AlarmRules::default(),
                t0 + Duration::from_millis(i * 10),
            );
        }
        assert!(alarms.bitrate_bps().abs_diff(1_000_000) <= 50_000);
    }

    /// Xorshift64, so the test needs no extra crate and replays exactly.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    #[test]
    fn random_steps_never_raise_twice_or_clear_unraised() {
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        let t0 = Instant::now();
        let mut now = t0;
        let mut alarms = StreamAlarms::new(t0);
        let mut counters = StreamCounters::default();
        let mut rules = AlarmRules::default();
        let mut viewers = 1;
        let mut up = [false; 3];
        let mut raises = [0u32; 3];
        for step in 0..10_000 {
            now += Duration::from_millis(rng.below(1500));
            match rng.below(10) {
                0..=3 => {}
                4..=8 => {
                    counters.packets += rng.below(200);
                    counters.bytes += rng.below(40_000);
                }
                _ => counters.bytes = counters.bytes.saturating_sub(rng.below(5_000)),
            }
            if rng.below(4) == 0 {
                counters.keyframe_requests += 1;
            }
            if rng.below(12) == 0 {
                counters.keyframes += 1;
                counters.keyframe_requests_answered = counters.keyframe_requests;
            }
            if rng.below(50) == 0 {
                counters.has_video = !counters.has_video;
            }
            if rng.below(40) == 0 {
                viewers = rng.below(3) as usize;
            }
            if rng.below(100) == 0 {
                rules.min_bitrate_bps = rng.below(3) * 100_000;
                rules.stall_after = Duration::from_millis(rng.below(5000));
                rules.keyframe_wait = Duration::from_millis(rng.below(6000));
            }
            let changes = alarms.evaluate(counters, viewers, &rules, now);
            let kinds: Vec<AlarmKind> = changes
                .iter()
                .map(|c| match c {
                    AlarmChange::Raised { kind, .. } | AlarmChange::Cleared { kind } => *kind,
                })
                .collect();
            assert!(kinds.is_sorted() && kinds.windows(2).all(|w| w[0] != w[1]));
            for change in &changes {
                match change {
                    AlarmChange::Raised { kind, .. } => {
                        assert!(!up[*kind as usize], "step {step}: {kind:?} raised twice");
                        up[*kind as usize] = true;
                        raises[*kind as usize] += 1;
                    }
                    AlarmChange::Cleared { kind } => {
                        assert!(up[*kind as usize], "step {step}: {kind:?} cleared unraised");
                        up[*kind as usize] = false;
                    }
                }
            }
            let expected: Vec<AlarmKind> = KINDS.into_iter().filter(|k| up[*k as usize]).collect();
            assert_eq!(alarms.active(), expected, "step {step}");
        }
        // Otherwise the walk proves nothing about the kind it never raised.
        assert!(raises.iter().all(|&n| n > 10), "{raises:?}");
    }
}
