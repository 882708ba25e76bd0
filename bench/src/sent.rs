//! What the publisher sent, found again by what a viewer receives.
//!
//! A forwarding server rewrites the RTP header (SSRC, payload type, sequence
//! number, timestamp) but passes the payload through untouched, so the
//! payload is the key: the publisher records each video payload with its
//! send time and frame, and a viewer in the same process looks it up.
//! Padding payloads carry a counter, so they are unique; slice fragments are
//! unique within the fixture's 4 s loop, and entries live shorter than that.

use std::collections::{HashMap, VecDeque};

/// Longer than a GOP (a server may replay the last keyframe to a joining
/// viewer) and shorter than the fixture's loop.
const RETENTION_NS: u64 = 3_000_000_000;

#[derive(Debug, Clone, Copy)]
pub struct Sent {
    /// Wall clock at the send, ns since the Unix epoch (as kernel receive
    /// timestamps are).
    pub sent_ns: u64,
    /// Access unit counter since the publisher started.
    pub frame: u64,
    /// This packet's place in its access unit, and how many it has.
    pub index: u16,
    pub count: u16,
    pub keyframe: bool,
}

#[derive(Default)]
pub struct SentLog {
    by_key: HashMap<u64, Entry>,
    order: VecDeque<(u64, u64)>,
    /// Payloads sent twice within the retention: not usable for matching.
    pub collisions: u64,
}

struct Entry {
    sent: Sent,
    ambiguous: bool,
}

impl SentLog {
    pub fn record(&mut self, payload: &[u8], sent: Sent) {
        self.prune(sent.sent_ns);
        let key = key(payload);
        let ambiguous = self.by_key.contains_key(&key);
        if ambiguous {
            self.collisions += 1;
        }
        self.by_key.insert(key, Entry { sent, ambiguous });
        self.order.push_back((sent.sent_ns, key));
    }

    pub fn lookup(&self, payload: &[u8]) -> Option<&Sent> {
        self.by_key
            .get(&key(payload))
            .filter(|e| !e.ambiguous)
            .map(|e| &e.sent)
    }

    fn prune(&mut self, now_ns: u64) {
        while let Some(&(at, key)) = self.order.front() {
            if at + RETENTION_NS > now_ns {
                break;
            }
            self.order.pop_front();
            // A newer send of the same payload keeps its entry.
            if self.by_key.get(&key).is_some_and(|e| e.sent.sent_ns == at) {
                self.by_key.remove(&key);
            }
        }
    }
}

/// A fast 64-bit hash of the whole payload, a word at a time. Each step
/// folds a full 128-bit product, so a difference in any bit reaches every
/// bit (a plain multiply only carries differences upwards, and payloads
/// that differ in one byte then collide). Not meant to resist an adversary;
/// there is none.
fn key(payload: &[u8]) -> u64 {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let mix = |h: u64, w: u64| {
        let m = u128::from(h ^ w) * u128::from(K);
        (m as u64) ^ ((m >> 64) as u64)
    };
    let mut h = payload.len() as u64;
    let mut words = payload.chunks_exact(8);
    for w in &mut words {
        h = mix(h, u64::from_le_bytes(w.try_into().expect("chunks of 8")));
    }
    let mut tail = [0u8; 8];
    tail[..words.remainder().len()].copy_from_slice(words.remainder());
    mix(h, u64::from_le_bytes(tail))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent(at_ms: u64, frame: u64) -> Sent {
        Sent {
            sent_ns: at_ms * 1_000_000,
            frame,
            index: 0,
            count: 1,
            keyframe: false,
        }
    }

    #[test]
    fn payloads_are_found_until_they_expire() {
        let mut log = SentLog::default();
        log.record(b"first payload", sent(0, 1));
        log.record(b"second payload", sent(1000, 2));
        assert_eq!(log.lookup(b"first payload").unwrap().frame, 1);
        assert!(log.lookup(b"never sent").is_none());
        log.record(b"third payload", sent(3500, 3));
        assert!(log.lookup(b"first payload").is_none());
        assert_eq!(log.lookup(b"second payload").unwrap().frame, 2);
    }

    #[test]
    fn a_payload_sent_twice_is_not_matched() {
        let mut log = SentLog::default();
        log.record(b"same", sent(0, 1));
        log.record(b"same", sent(10, 2));
        assert!(log.lookup(b"same").is_none());
        assert_eq!(log.collisions, 1);
        // A repeat after the earlier sends have expired (the fixture's next
        // loop) is matched again.
        log.record(b"same", sent(3005, 3));
        log.record(b"same", sent(6100, 4));
        assert_eq!(log.lookup(b"same").unwrap().frame, 4);
    }

    #[test]
    fn padding_payloads_never_collide() {
        let mut log = SentLog::default();
        let padding = |c| crate::h264::padding_sei(1200, c);
        for c in 0..20_000 {
            log.record(&padding(c), sent(c / 10, c));
        }
        assert_eq!(log.collisions, 0);
        assert!((0..20_000).all(|c| log.lookup(&padding(c)).is_some()));
    }

    #[test]
    fn key_depends_on_every_byte() {
        let a = [7u8; 1200];
        let mut b = a;
        b[1199] = 8;
        assert_ne!(key(&a), key(&b));
        assert_ne!(key(&a[..1199]), key(&a));
    }
}
