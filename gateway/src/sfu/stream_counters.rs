//! What a publisher has sent, for the alarms (a stream stalled, no
//! keyframe, bitrate collapsed): counted by the publisher's shard with
//! relaxed atomics, sampled by the control plane.

use std::sync::atomic::{AtomicU64, Ordering};

/// What a publisher has sent, counted on the hot path with relaxed atomics
/// and sampled for alarms (one per publisher session, counted by its shard).
#[derive(Debug, Default)]
pub struct StreamCounters {
    packets: AtomicU64,
    bytes: AtomicU64,
    keyframes: AtomicU64,
}

impl StreamCounters {
    pub(crate) fn count(&self, payload_len: usize, keyframe: bool) {
        self.packets.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(payload_len as u64, Ordering::Relaxed);
        if keyframe {
            self.keyframes.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The counters now, for the alarm rules.
    pub fn snapshot(&self, has_video: bool) -> vigil_control::alarms::StreamCounters {
        vigil_control::alarms::StreamCounters {
            packets: self.packets.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            keyframes: self.keyframes.load(Ordering::Relaxed),
            has_video,
        }
    }
}
