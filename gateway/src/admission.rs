//! Admission limits that protect the server as a whole, checked before a
//! request costs anything: how fast one client address may POST offers,
//! how many sessions it (and one token, and everyone together) may hold,
//! how many of its sessions may sit unconnected, and how many HTTP
//! connections it may keep open. (A room's own limits, max publishers and
//! viewers, are the control plane's: `vigil_control`.)
//!
//! Counting is by RAII: [`Limiter::open_session`] hands out a
//! [`SessionSlot`] that the session registry keeps with the session and
//! drops when the session ends, so no end is ever missed; the counters sit
//! behind one short mutex (a few map operations per POST, never per
//! packet).
//!
//! Refusals: a client over its own share gets **429** with `Retry-After`
//! (when a token returns to its bucket, or the connect deadline for
//! unconnected sessions); the server over its total gets **503** with
//! `Retry-After`. A connection over the per-address cap is closed at
//! accept. docs/operations.md lists the defaults.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::error::Error;

/// The limits; `0` (or `None` for the rate) means unlimited.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Sessions in the whole server (503 past it).
    pub max_sessions: usize,
    /// Sessions from one client address.
    pub max_sessions_per_address: usize,
    /// Sessions of one token.
    pub max_sessions_per_token: usize,
    /// Sessions of one client address that have not connected (yet).
    pub max_pending_per_address: usize,
    /// WHIP/WHEP POSTs per second from one client address, and the burst
    /// allowed above it; `None`: unlimited.
    pub post_rate: Option<Rate>,
    /// HTTP connections open from one client address.
    pub max_connections_per_address: usize,
}

/// A token bucket's refill rate and size.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Tokens per second.
    pub per_second: f64,
    /// Bucket size.
    pub burst: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_sessions: 5_000,
            max_sessions_per_address: 500,
            max_sessions_per_token: 100,
            max_pending_per_address: 50,
            post_rate: Some(Rate {
                per_second: 20.0,
                burst: 40,
            }),
            max_connections_per_address: 256,
        }
    }
}

impl Limits {
    /// No limit at all (embedding, load tests).
    pub fn unlimited() -> Limits {
        Limits {
            max_sessions: 0,
            max_sessions_per_address: 0,
            max_sessions_per_token: 0,
            max_pending_per_address: 0,
            post_rate: None,
            max_connections_per_address: 0,
        }
    }
}

/// `count` would go past `max` (0: no limit).
fn over(count: usize, max: usize) -> bool {
    max != 0 && count >= max
}

/// What one client address holds.
#[derive(Debug, Default)]
struct Address {
    sessions: usize,
    pending: usize,
    connections: usize,
    /// Tokens left, and when they were counted.
    bucket: Option<(f64, Instant)>,
}

impl Address {
    fn idle(&self) -> bool {
        self.sessions == 0 && self.pending == 0 && self.connections == 0
    }
}

#[derive(Debug, Default)]
struct Counts {
    sessions: usize,
    addresses: HashMap<IpAddr, Address>,
    tokens: HashMap<u64, usize>,
}

/// The admission counters of one server.
#[derive(Debug)]
pub struct Limiter {
    limits: Limits,
    /// How long an unconnected session may wait: the `Retry-After` of the
    /// pending cap.
    connect_timeout: Duration,
    counts: Mutex<Counts>,
}

/// Addresses kept for their token buckets alone are swept past this many.
const SWEEP_ABOVE: usize = 4_096;

impl Limiter {
    /// Counters for `limits`.
    pub fn new(limits: Limits, connect_timeout: Duration) -> Arc<Limiter> {
        Arc::new(Limiter {
            limits,
            connect_timeout,
            counts: Mutex::default(),
        })
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A WHIP/WHEP POST from `addr` arrived: takes a token from its bucket,
    /// or says when to come back (429).
    pub fn check_post(&self, addr: IpAddr, now: Instant) -> Result<(), Error> {
        let Some(rate) = self.limits.post_rate else {
            return Ok(());
        };
        let mut counts = self.counts();
        if counts.addresses.len() > SWEEP_ABOVE {
            sweep(&mut counts.addresses, rate, now);
        }
        let address = counts.addresses.entry(addr).or_default();
        let burst = f64::from(rate.burst.max(1));
        let (tokens, since) = address.bucket.unwrap_or((burst, now));
        let tokens = (tokens
            + now.saturating_duration_since(since).as_secs_f64() * rate.per_second)
            .min(burst);
        if tokens >= 1.0 {
            address.bucket = Some((tokens - 1.0, now));
            return Ok(());
        }
        address.bucket = Some((tokens, now));
        let wait = (1.0 - tokens) / rate.per_second.max(f64::MIN_POSITIVE);
        Err(Error::TooManyRequests {
            what: "offers from this address arrive faster than allowed",
            retry_after: Duration::from_secs_f64(wait.min(3600.0)),
        })
    }

    /// A session is about to be created for `addr` with `token` (none in
    /// open mode): counts it, or refuses before anything is allocated.
    pub fn open_session(
        self: &Arc<Self>,
        addr: IpAddr,
        token: Option<&str>,
    ) -> Result<SessionSlot, Error> {
        let limits = &self.limits;
        let token = token.map(token_key);
        let mut counts = self.counts();
        if over(counts.sessions, limits.max_sessions) {
            return Err(Error::Overloaded {
                what: "the server holds as many sessions as it is configured for",
                retry_after: Duration::from_secs(5),
            });
        }
        let address = counts.addresses.entry(addr).or_default();
        if over(address.sessions, limits.max_sessions_per_address) {
            return Err(Error::TooManyRequests {
                what: "this address holds as many sessions as one address may",
                retry_after: Duration::from_secs(5),
            });
        }
        if over(address.pending, limits.max_pending_per_address) {
            return Err(Error::TooManyRequests {
                what: "this address has too many sessions that have not connected",
                retry_after: self.connect_timeout,
            });
        }
        address.sessions += 1;
        address.pending += 1;
        if let Some(key) = token {
            let held = counts.tokens.get(&key).copied().unwrap_or(0);
            if over(held, limits.max_sessions_per_token) {
                let address = counts.addresses.entry(addr).or_default();
                address.sessions -= 1;
                address.pending -= 1;
                return Err(Error::TooManyRequests {
                    what: "this token holds as many sessions as one token may",
                    retry_after: Duration::from_secs(5),
                });
            }
            counts.tokens.insert(key, held + 1);
        }
        counts.sessions += 1;
        Ok(SessionSlot {
            limiter: self.clone(),
            addr,
            token,
            pending: true,
        })
    }

    /// A TCP connection from `addr` was accepted: counted while the slot
    /// lives, or `None` past the per-address cap (close it).
    pub fn open_connection(self: &Arc<Self>, addr: IpAddr) -> Option<ConnectionSlot> {
        let mut counts = self.counts();
        let address = counts.addresses.entry(addr).or_default();
        if over(address.connections, self.limits.max_connections_per_address) {
            return None;
        }
        address.connections += 1;
        Some(ConnectionSlot {
            limiter: self.clone(),
            addr,
        })
    }

    /// Sessions counted now: in all, and of `addr` (diagnostics, tests).
    pub fn sessions(&self, addr: IpAddr) -> (usize, usize) {
        let counts = self.counts();
        let of_addr = counts.addresses.get(&addr).map_or(0, |a| a.sessions);
        (counts.sessions, of_addr)
    }

    fn release(&self, addr: IpAddr, f: impl FnOnce(&mut Address)) {
        let mut counts = self.counts();
        if let Some(address) = counts.addresses.get_mut(&addr) {
            f(address);
            if address.idle() && self.limits.post_rate.is_none() {
                counts.addresses.remove(&addr);
            }
        }
    }
}

/// Forgets addresses that hold nothing and whose bucket has refilled.
fn sweep(addresses: &mut HashMap<IpAddr, Address>, rate: Rate, now: Instant) {
    let full_after = Duration::from_secs_f64(f64::from(rate.burst) / rate.per_second.max(1e-3));
    addresses.retain(|_, a| {
        !a.idle()
            || a.bucket
                .is_some_and(|(_, since)| now.saturating_duration_since(since) < full_after)
    });
}

/// Tokens are counted by a hash, not kept.
fn token_key(token: &str) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    token.hash(&mut hasher);
    hasher.finish()
}

/// One session's place in the counters; dropped when the session ends.
#[derive(Debug)]
pub struct SessionSlot {
    limiter: Arc<Limiter>,
    addr: IpAddr,
    token: Option<u64>,
    pending: bool,
}

impl SessionSlot {
    /// The session connected: it no longer counts as pending.
    pub fn connected(&mut self) {
        if std::mem::take(&mut self.pending) {
            self.limiter.release(self.addr, |a| a.pending -= 1);
        }
    }
}

impl Drop for SessionSlot {
    fn drop(&mut self) {
        let pending = self.pending;
        {
            let mut counts = self.limiter.counts();
            counts.sessions -= 1;
            if let Some(key) = self.token
                && let Some(held) = counts.tokens.get_mut(&key)
            {
                *held -= 1;
                if *held == 0 {
                    counts.tokens.remove(&key);
                }
            }
        }
        self.limiter.release(self.addr, |a| {
            a.sessions -= 1;
            if pending {
                a.pending -= 1;
            }
        });
    }
}

/// One HTTP connection's place in the counters.
#[derive(Debug)]
pub struct ConnectionSlot {
    limiter: Arc<Limiter>,
    addr: IpAddr,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.limiter.release(self.addr, |a| a.connections -= 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_bucket_refills_at_its_rate() {
        let limiter = Limiter::new(
            Limits {
                post_rate: Some(Rate {
                    per_second: 10.0,
                    burst: 3,
                }),
                ..Limits::unlimited()
            },
            Duration::from_secs(10),
        );
        let t0 = Instant::now();
        let a = ip("192.0.2.1");
        for _ in 0..3 {
            limiter.check_post(a, t0).unwrap();
        }
        let Err(Error::TooManyRequests { retry_after, .. }) = limiter.check_post(a, t0) else {
            panic!("the fourth at once is refused");
        };
        assert!(retry_after <= Duration::from_millis(100), "{retry_after:?}");
        // Another address has its own bucket.
        limiter.check_post(ip("192.0.2.2"), t0).unwrap();
        // 100 ms later one token is back, not two.
        let t1 = t0 + Duration::from_millis(100);
        limiter.check_post(a, t1).unwrap();
        assert!(limiter.check_post(a, t1).is_err());
    }

    #[test]
    fn session_caps_and_their_release() {
        let limiter = Limiter::new(
            Limits {
                max_sessions: 5,
                max_sessions_per_address: 3,
                max_sessions_per_token: 2,
                max_pending_per_address: 2,
                ..Limits::unlimited()
            },
            Duration::from_secs(10),
        );
        let a = ip("192.0.2.1");
        let mut first = limiter.open_session(a, Some("t1")).unwrap();
        let second = limiter.open_session(a, Some("t1")).unwrap();
        // Two unconnected from one address: the third waits for the deadline.
        let Err(Error::TooManyRequests { retry_after, .. }) = limiter.open_session(a, None) else {
            panic!("pending cap");
        };
        assert_eq!(retry_after, Duration::from_secs(10));
        first.connected();
        // Connected, it is no longer pending; but the token holds two.
        assert!(matches!(
            limiter.open_session(a, Some("t1")),
            Err(Error::TooManyRequests { .. })
        ));
        let mut third = limiter.open_session(a, Some("t2")).unwrap();
        third.connected();
        // Three from the address.
        assert!(limiter.open_session(a, None).is_err());
        let b = ip("192.0.2.2");
        let _four = limiter.open_session(b, None).unwrap();
        let _five = limiter.open_session(b, None).unwrap();
        // Five in all: 503.
        assert!(matches!(
            limiter.open_session(ip("192.0.2.3"), None),
            Err(Error::Overloaded { .. })
        ));
        assert_eq!(limiter.sessions(a), (5, 3));
        drop((first, second, third));
        assert_eq!(limiter.sessions(a), (2, 0));
        limiter.open_session(a, Some("t1")).unwrap();
    }

    #[test]
    fn connections_per_address() {
        let limiter = Limiter::new(
            Limits {
                max_connections_per_address: 2,
                ..Limits::unlimited()
            },
            Duration::from_secs(10),
        );
        let a = ip("192.0.2.1");
        let one = limiter.open_connection(a).unwrap();
        let _two = limiter.open_connection(a).unwrap();
        assert!(limiter.open_connection(a).is_none());
        assert!(limiter.open_connection(ip("192.0.2.2")).is_some());
        drop(one);
        assert!(limiter.open_connection(a).is_some());
    }

    #[test]
    fn idle_addresses_are_swept() {
        let rate = Rate {
            per_second: 100.0,
            burst: 1,
        };
        let limiter = Limiter::new(
            Limits {
                post_rate: Some(rate),
                ..Limits::unlimited()
            },
            Duration::from_secs(10),
        );
        let t0 = Instant::now();
        for i in 0..=SWEEP_ABOVE as u32 {
            limiter
                .check_post(IpAddr::from((0x0a00_0000 + i).to_be_bytes()), t0)
                .unwrap();
        }
        let later = t0 + Duration::from_secs(1);
        limiter.check_post(ip("192.0.2.9"), later).unwrap();
        assert!(limiter.counts().addresses.len() < 10);
    }
}
