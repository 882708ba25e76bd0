//! RFC 3550 reception arithmetic for the live stream statistics: what a
//! publisher's stream lost on its way to us (sequence numbers expected vs
//! received, A.3), its interarrival jitter (A.8), and a viewer's round
//! trip from its reception report (§6.4.1).
//!
//! Plain integers updated once per packet by the publisher's shard: no
//! allocation, no clock of its own (the input's `now` is passed in). The
//! arrival time is the input's, so the datagrams of one receive batch
//! share it: a batch that spans two frames adds their spacing to the
//! jitter once, which at 30 frames a second on a loaded shard reads as a
//! few milliseconds more than the network's.

use std::time::{Duration, Instant};

/// A jump forward by more than this is taken as the sender restarting its
/// numbering, not as loss (RFC 3550 A.1's `MAX_DROPOUT`).
const MAX_DROPOUT: u16 = 3000;
/// A packet this far behind the highest is late or a duplicate (A.1's
/// `MAX_MISORDER`); between the two, a restart.
const MAX_MISORDER: u16 = 100;

/// What one packet changed: see [`Reception::on_packet`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arrival {
    /// How many more packets are expected.
    pub expected: u64,
    /// It came after a higher sequence number.
    pub late: bool,
}

/// One received SSRC's sequence and jitter state.
#[derive(Debug, Clone)]
pub struct Reception {
    clock_rate: u32,
    /// The first packet's arrival: arrival times are counted from it.
    epoch: Option<Instant>,
    max_seq: u16,
    /// Relative transit time of the previous packet, in RTP ticks.
    transit: Option<u32>,
    /// Interarrival jitter in RTP ticks, times 16 (A.8's integer form).
    jitter16: u32,
}

impl Reception {
    /// An SSRC whose RTP clock ticks at `clock_rate` Hz.
    pub fn new(clock_rate: u32) -> Self {
        Reception {
            clock_rate: clock_rate.max(1),
            epoch: None,
            max_seq: 0,
            transit: None,
            jitter16: 0,
        }
    }

    /// A packet numbered `seq` with RTP timestamp `timestamp` arrived at
    /// `now`. Says how many packets more are expected because of it (the
    /// advance of the highest sequence number, so a gap counts its
    /// missing packets; 1 for the first packet and for a restart; 0 for a
    /// late packet or a duplicate, expected already), and whether it came
    /// late: after a higher number, as a NACK repair does (`rtc` hands
    /// RTX repairs over on the media SSRC with their first number) or a
    /// packet the network reordered.
    pub fn on_packet(&mut self, seq: u16, timestamp: u32, now: Instant) -> Arrival {
        let epoch = *self.epoch.get_or_insert(now);
        let arrival = ticks(now.saturating_duration_since(epoch), self.clock_rate);
        let transit = arrival.wrapping_sub(timestamp);
        if let Some(previous) = self.transit {
            let d = i64::from((transit.wrapping_sub(previous) as i32).unsigned_abs());
            let j = i64::from(self.jitter16);
            self.jitter16 = (j + d - ((j + 8) >> 4)).clamp(0, i64::from(u32::MAX)) as u32;
        }
        let first = self.transit.is_none();
        self.transit = Some(transit);
        let in_order = |expected| Arrival {
            expected,
            late: false,
        };
        if first {
            self.max_seq = seq;
            return in_order(1);
        }
        let delta = seq.wrapping_sub(self.max_seq);
        if delta == 0 {
            in_order(0) // a duplicate
        } else if delta > u16::MAX - MAX_MISORDER {
            // Counted as expected when the gap opened.
            Arrival {
                expected: 0,
                late: true,
            }
        } else if delta < MAX_DROPOUT {
            self.max_seq = seq;
            in_order(u64::from(delta))
        } else {
            self.max_seq = seq; // the sender renumbered: start over here
            in_order(1)
        }
    }

    /// The interarrival jitter now.
    pub fn jitter(&self) -> Duration {
        Duration::from_micros(self.jitter_us())
    }

    /// The interarrival jitter now, in microseconds (integer arithmetic,
    /// for the per-packet counters).
    pub fn jitter_us(&self) -> u64 {
        u64::from(self.jitter16 >> 4) * 1_000_000 / u64::from(self.clock_rate)
    }
}

/// `d` in RTP ticks of a `clock_rate` Hz clock, modulo 2^32.
fn ticks(d: Duration, clock_rate: u32) -> u32 {
    (d.as_nanos() * u128::from(clock_rate) / 1_000_000_000) as u32
}

/// The round trip a reception report gives (RFC 3550 §6.4.1): `ntp_now`
/// is our NTP time when it arrived, `lsr` the middle 32 bits of the NTP
/// time of the last sender report it saw, `dlsr` how long it held that
/// report (1/65536 s units). `None` if it saw no report yet (`lsr` 0), or
/// the figures are impossible (negative: a report from another clock).
pub fn round_trip(ntp_now: u64, lsr: u32, dlsr: u32) -> Option<Duration> {
    if lsr == 0 {
        return None;
    }
    let now = (ntp_now >> 16) as u32;
    let rtt = now.wrapping_sub(lsr).wrapping_sub(dlsr);
    if rtt > u32::MAX / 2 {
        return None;
    }
    Some(Duration::from_nanos(
        u64::from(rtt) * 1_000_000_000 / 65_536,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// 90 kHz video at 30 frames a second, one packet a frame, arriving on
    /// time, starting at `first`; `keep` picks the packets that arrive.
    fn run(first: u16, count: u16, keep: impl Fn(u16) -> bool) -> (u64, u64, Reception) {
        let t0 = Instant::now();
        let mut r = Reception::new(90_000);
        let (mut expected, mut received) = (0, 0);
        for i in 0..count {
            if !keep(i) {
                continue;
            }
            let at = t0 + Duration::from_micros(33_333 * u64::from(i));
            expected += r
                .on_packet(first.wrapping_add(i), 3000 * u32::from(i), at)
                .expected;
            received += 1;
        }
        (expected, received, r)
    }

    #[test]
    fn loss_is_expected_minus_received() {
        // Every tenth packet lost (never the first): 10 % of 100.
        let (expected, received, r) = run(1000, 100, |i| i == 0 || i % 10 != 0);
        assert_eq!((expected, received), (100, 91));
        // The last one (99) arrived, so 10..=90 are the 9 losses.
        assert_eq!(expected - received, 9);
        assert_eq!(r.jitter(), Duration::ZERO, "on time: no jitter");
    }

    #[test]
    fn loss_counts_across_a_sequence_wrap() {
        let (expected, received, _) = run(65_500, 100, |i| i % 2 == 0 || i == 99);
        assert_eq!((expected, received), (100, 51));
    }

    #[test]
    fn late_and_duplicate_packets_are_not_expected_twice() {
        let t0 = Instant::now();
        let mut r = Reception::new(90_000);
        let mut arrive = |seq| {
            let a = r.on_packet(seq, 0, t0);
            (a.expected, a.late)
        };
        assert_eq!(arrive(10), (1, false));
        assert_eq!(arrive(13), (3, false), "11 and 12 missing");
        assert_eq!(arrive(11), (0, true), "late (a repair): expected already");
        assert_eq!(arrive(13), (0, false), "duplicate");
        assert_eq!(arrive(14), (1, false));
        assert_eq!(arrive(14 + 20_000), (1, false), "renumbered: a restart");
        assert_eq!(arrive(14 + 20_001), (1, false));
    }

    #[test]
    fn jitter_follows_rfc3550_a8() {
        // Frames every 33.3 ms, every other one 10 ms late: each transit
        // differs from the last by 10 ms, so the jitter converges on 10 ms.
        let t0 = Instant::now();
        let mut r = Reception::new(90_000);
        for i in 0..400u32 {
            let late = if i % 2 == 1 { 10 * MS } else { Duration::ZERO };
            let at = t0 + Duration::from_micros(33_333 * u64::from(i)) + late;
            r.on_packet(i as u16, 3000 * i, at);
        }
        let jitter = r.jitter().as_secs_f64() * 1000.0;
        assert!((9.5..=10.1).contains(&jitter), "jitter {jitter:.2} ms");
    }

    #[test]
    fn round_trip_is_arrival_minus_lsr_minus_dlsr() {
        let lsr: u32 = 0x1234_5678;
        let dlsr: u32 = 65_536 / 4; // held 250 ms
        let rtt_units: u32 = 65_536 / 20; // 50 ms
        let now = u64::from(lsr.wrapping_add(dlsr).wrapping_add(rtt_units)) << 16 | 0xFFFF;
        let rtt = round_trip(now, lsr, dlsr).expect("a round trip");
        assert!((rtt.as_secs_f64() * 1000.0 - 50.0).abs() < 0.1, "{rtt:?}");
        assert_eq!(round_trip(now, 0, dlsr), None, "no sender report seen yet");
        assert_eq!(
            round_trip(u64::from(lsr) << 16, lsr, dlsr),
            None,
            "held longer than the round trip: impossible"
        );
    }
}
