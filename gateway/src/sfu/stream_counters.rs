//! What a publisher has sent, for the alarms (a stream stalled, a
//! keyframe asked for and not sent, bitrate collapsed): counted by the
//! publisher's shard with relaxed atomics, sampled by the control plane.

use std::sync::atomic::{AtomicU64, Ordering};

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
