//! A camera's RTP timestamps mapped onto ours.
//!
//! Each of a camera's tracks has its own RTP clock with a random origin,
//! and cameras' clocks jump (an NTP correction, a reboot of the encoder, a
//! wrap handled badly). Viewers sync audio with video through the sender
//! reports the engine writes for each of their SSRCs, which extrapolate
//! from when each packet was forwarded ([`crate::engine::fast::SenderStats`]).
//! So every track is anchored to one wall clock per camera session: a
//! track's first packet gets the timestamp of its arrival time since the
//! session started, in its own clock rate, and later packets advance by the
//! camera's own timestamp differences (so frames and audio samples keep the
//! spacing the camera gave them, free of network jitter). A difference that
//! cannot be real — backwards, or more than [`MAX_JUMP`] ahead of the wall
//! clock — is a jump: the track is anchored again at the packet's arrival,
//! continuing from its last timestamp, so viewers see no gap and the
//! tracks stay together.

use std::time::{Duration, Instant};

/// How far a camera's timestamps may run ahead of the time that passed
/// between two packets before it counts as a jump.
pub const MAX_JUMP: Duration = Duration::from_secs(2);

/// How far back a camera's timestamp may step (B-frames' reordering is not
/// in RTP order, so anything backwards beyond this is a jump).
const MAX_BACKWARDS: Duration = Duration::from_millis(200);

/// The clock of one camera session: when it started.
#[derive(Debug, Clone, Copy)]
pub struct SessionClock {
    epoch: Instant,
}

impl SessionClock {
    /// A session starting at `epoch`.
    pub fn new(epoch: Instant) -> Self {
        SessionClock { epoch }
    }

    /// The mapping for one of its tracks, at `clock_rate` Hz.
    pub fn track(&self, clock_rate: u32) -> TrackClock {
        TrackClock {
            epoch: self.epoch,
            rate: clock_rate.max(1),
            last: None,
            jumps: 0,
        }
    }
}

/// One track's mapping.
#[derive(Debug, Clone)]
pub struct TrackClock {
    epoch: Instant,
    rate: u32,
    /// The last packet: its camera timestamp, ours, and its arrival.
    last: Option<(u32, u32, Instant)>,
    /// Jumps seen.
    pub jumps: u64,
}

impl TrackClock {
    /// Our timestamp for a packet with camera timestamp `ts` that arrived
    /// at `at`.
    pub fn map(&mut self, ts: u32, at: Instant) -> u32 {
        let out = match self.last {
            None => self.ticks(at.saturating_duration_since(self.epoch)),
            Some((last_ts, last_out, last_at)) => {
                let camera = ts.wrapping_sub(last_ts) as i32;
                let wall = at.saturating_duration_since(last_at);
                let ahead = self.ticks(wall + MAX_JUMP);
                let back = self.ticks(MAX_BACKWARDS) as i32;
                if camera < -back || (camera > 0 && camera as u32 > ahead) {
                    self.jumps += 1;
                    // On from the last timestamp by the time that passed
                    // (at least a tick, so it never repeats).
                    last_out.wrapping_add(self.ticks(wall).max(1))
                } else {
                    last_out.wrapping_add(camera as u32)
                }
            }
        };
        self.last = Some((ts, out, at));
        out
    }

    fn ticks(&self, d: Duration) -> u32 {
        (d.as_secs_f64() * f64::from(self.rate)) as u64 as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn tracks_start_at_their_arrival_and_keep_the_cameras_spacing() {
        let t0 = Instant::now();
        let session = SessionClock::new(t0);
        let mut video = session.track(90_000);
        let mut audio = session.track(8_000);
        assert_eq!(video.map(123_456, t0 + 100 * MS), 9_000);
        assert_eq!(audio.map(4_000_000_000, t0 + 120 * MS), 960);
        // Network jitter does not move the camera's spacing.
        assert_eq!(video.map(123_456 + 3_000, t0 + 180 * MS), 12_000);
        assert_eq!(audio.map(4_000_000_160, t0 + 121 * MS), 1_120);
        // A wrap of the camera's clock is no jump.
        let mut wrap = session.track(90_000);
        wrap.map(u32::MAX - 1_000, t0);
        assert_eq!(wrap.map(2_000, t0 + 33 * MS), 3_001);
        assert_eq!(video.jumps + audio.jumps + wrap.jumps, 0);
    }

    #[test]
    fn a_jump_either_way_continues_from_the_last_timestamp_by_wall_time() {
        let t0 = Instant::now();
        let mut video = SessionClock::new(t0).track(90_000);
        let a = video.map(1_000, t0);
        // The camera's clock leaps an hour ahead 40 ms later.
        let b = video.map(1_000 + 3600 * 90_000, t0 + 40 * MS);
        assert_eq!(b.wrapping_sub(a), 3_600);
        // Then steps back a minute.
        let c = video.map(1_000 + 3540 * 90_000, t0 + 80 * MS);
        assert_eq!(c.wrapping_sub(b), 3_600);
        // And runs on normally from there.
        let d = video.map(1_000 + 3540 * 90_000 + 3_000, t0 + 113 * MS);
        assert_eq!(d.wrapping_sub(c), 3_000);
        assert_eq!(video.jumps, 2);
    }

    #[test]
    fn a_stalled_network_delivers_late_without_a_jump() {
        let t0 = Instant::now();
        let mut video = SessionClock::new(t0).track(90_000);
        let a = video.map(0, t0);
        // Five seconds of nothing, then the frames that were held back.
        let b = video.map(3_000, t0 + 5_000 * MS);
        assert_eq!(b.wrapping_sub(a), 3_000);
        assert_eq!(video.jumps, 0);
    }
}
