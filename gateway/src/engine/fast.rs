//! The fast path: a viewer's forwarded RTP sealed by the engine itself,
//! beside `rtc`.
//!
//! Once a viewer connection's DTLS is up, the shard builds an SRTP context
//! of its own from the connection's local keys (`local_srtp_keys`, the one
//! addition of the vendored `rtc`, vendor/README.md). Every RTP packet to
//! that viewer, first sends and NACK repairs alike, is then rewritten,
//! written into one reused buffer and sealed here; `rtc` never sees it.
//! `rtc` keeps STUN, DTLS and RTCP, including the sender reports this
//! module builds from the counts it keeps, since `rtc`'s own reporter
//! counts only what passes through the connection (and stays silent for an
//! SSRC it never saw).
//!
//! Each SSRC is sent on exactly one path (its rollover counter lives in
//! exactly one SRTP context): viewers' SSRCs here, nothing else.

use std::time::{Duration, Instant};

use bytes::BytesMut;
use rtc::peer_connection::LocalSrtpKeys;
use rtc::rtcp::sender_report::SenderReport;
use rtc::rtp::header::Header;
use rtc::shared::error::Error;
use rtc::shared::marshal::{Marshal, MarshalSize};
use rtc::shared::time::SystemInstant;
use rtc::srtp::context::Context;
use rtc::srtp::protection_profile::ProtectionProfile;

use super::srtp_gcm::GcmSealer;

/// How often a sending SSRC reports (rtc's reporter uses the same).
pub const SENDER_REPORT_INTERVAL: Duration = Duration::from_secs(1);

/// One viewer connection's outgoing SRTP on the fast path.
pub struct FastPath {
    sealer: Sealer,
    /// The plaintext packet being sealed by a `Context`: header, then
    /// payload.
    scratch: Vec<u8>,
}

enum Sealer {
    /// AEAD_AES_128_GCM, the profile `rtc` negotiates first: sealed in
    /// place into the caller's buffer.
    Gcm(GcmSealer),
    /// Any other profile, through `rtc-srtp`.
    Context(Box<Context>),
}

impl FastPath {
    /// A context protecting with `keys` (the connection's local keys).
    pub fn new(keys: &LocalSrtpKeys) -> Result<Self, Error> {
        let sealer = if matches!(keys.profile, ProtectionProfile::AeadAes128Gcm) {
            let provider = rtc::crypto::default_provider()
                .map_err(|e| Error::Other(format!("crypto provider: {e:?}")))?;
            Sealer::Gcm(GcmSealer::new(
                provider.crypto(),
                &keys.master_key,
                &keys.master_salt,
            )?)
        } else {
            Sealer::Context(Box::new(srtp_context(keys)?))
        };
        Ok(FastPath {
            sealer,
            scratch: Vec::with_capacity(1500),
        })
    }

    /// Appends the SRTP datagram of an RTP packet with `header` and
    /// `payload` to `out`; on error `out` is as it was.
    pub fn seal_into(
        &mut self,
        header: &Header,
        payload: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), Error> {
        match &mut self.sealer {
            Sealer::Gcm(gcm) => gcm.seal_into(header, payload, out),
            Sealer::Context(context) => {
                self.scratch.clear();
                self.scratch.resize(header.marshal_size(), 0);
                header.marshal_to(&mut self.scratch)?;
                self.scratch.extend_from_slice(payload);
                let sealed = context.encrypt_rtp_with_header(&self.scratch, header)?;
                out.extend_from_slice(&sealed);
                Ok(())
            }
        }
    }

    /// The SRTP datagram of an RTP packet with `header` and `payload`.
    pub fn seal(&mut self, header: &Header, payload: &[u8]) -> Result<BytesMut, Error> {
        let mut out = Vec::with_capacity(header.marshal_size() + payload.len() + 16);
        self.seal_into(header, payload, &mut out)?;
        Ok(BytesMut::from(&out[..]))
    }
}

/// An SRTP context keyed with `keys`: the sending side's, or (in tests)
/// a receiver's that opens what it seals.
pub(crate) fn srtp_context(keys: &LocalSrtpKeys) -> Result<Context, Error> {
    let provider = rtc::crypto::default_provider()
        .map_err(|e| Error::Other(format!("crypto provider: {e:?}")))?;
    Context::new(
        &keys.master_key,
        &keys.master_salt,
        keys.profile,
        None,
        None,
        provider.crypto(),
    )
}

/// What an SSRC on the fast path has sent, for its sender reports
/// (RFC 3550 §6.4.1).
#[derive(Debug, Default)]
pub struct SenderStats {
    packets: u32,
    octets: u32,
    /// The newest RTP timestamp sent and when it was first sent: the
    /// reference a report extrapolates from.
    last: Option<(u32, Instant)>,
    /// Wall clock paired with the monotonic clock, taken once.
    clock: Option<SystemInstant>,
    reported_at: Option<Instant>,
}

impl SenderStats {
    /// Counts a packet sent at `now`. Retransmissions count too (RFC 3550
    /// counts packets transmitted) but never move the timestamp reference
    /// back.
    pub fn on_sent(&mut self, header: &Header, payload_len: usize, now: Instant) {
        self.packets = self.packets.wrapping_add(1);
        self.octets = self.octets.wrapping_add(payload_len as u32);
        let newer = match self.last {
            None => true,
            Some((ts, _)) => {
                ts != header.timestamp && (header.timestamp.wrapping_sub(ts) as i32) > 0
            }
        };
        if newer {
            self.last = Some((header.timestamp, now));
        }
        self.clock.get_or_insert_with(|| SystemInstant::now(now));
    }

    /// Our NTP time at `now`, on the clock this SSRC's sender reports
    /// carry (for the round trip a reception report gives); `None` before
    /// the first packet.
    pub fn ntp(&self, now: Instant) -> Option<u64> {
        self.clock.map(|clock| clock.ntp(now))
    }

    /// A report for `ssrc` ticking at `clock_rate`, if one is due at `now`
    /// (the first right after the first packet, then every
    /// [`SENDER_REPORT_INTERVAL`]).
    pub fn report_due(&mut self, ssrc: u32, clock_rate: u32, now: Instant) -> Option<SenderReport> {
        let (ts, at) = self.last?;
        let clock = self.clock?;
        if self
            .reported_at
            .is_some_and(|then| now.saturating_duration_since(then) < SENDER_REPORT_INTERVAL)
        {
            return None;
        }
        self.reported_at = Some(now);
        let ticks = now.saturating_duration_since(at).as_secs_f64() * f64::from(clock_rate);
        Some(SenderReport {
            ssrc,
            ntp_time: clock.ntp(now),
            rtp_time: ts.wrapping_add(ticks as u32),
            packet_count: self.packets,
            octet_count: self.octets,
            ..Default::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::srtp::protection_profile::ProtectionProfile;

    fn keys(profile: ProtectionProfile) -> LocalSrtpKeys {
        LocalSrtpKeys {
            profile,
            master_key: vec![3; profile.key_len()],
            master_salt: vec![5; profile.salt_len()],
        }
    }

    fn header(seq: u16, ts: u32) -> Header {
        Header {
            version: 2,
            payload_type: 102,
            sequence_number: seq,
            timestamp: ts,
            ssrc: 0xABCD,
            ..Default::default()
        }
    }

    /// What the fast path seals, a receiver holding the same keys opens,
    /// for both profiles WebRTC stacks negotiate, across a sequence
    /// number wrap (the rollover counter).
    #[test]
    fn sealed_packets_open_with_the_same_keys() {
        for profile in [
            ProtectionProfile::AeadAes128Gcm,
            ProtectionProfile::Aes128CmHmacSha1_80,
        ] {
            let keys = keys(profile);
            let mut fast = FastPath::new(&keys).expect("fast path");
            let mut receiver = srtp_context(&keys).expect("receiver");
            for (i, seq) in (65_530u16..=u16::MAX).chain(0..5).enumerate() {
                let payload = vec![i as u8; 100 + i];
                let sealed = fast
                    .seal(&header(seq, 3000 * i as u32), &payload)
                    .expect("seal");
                assert!(sealed.len() > 12 + payload.len(), "{profile:?} adds a tag");
                let opened = receiver.decrypt_rtp(&sealed).expect("opens");
                assert_eq!(&opened[12..], &payload[..], "{profile:?} seq {seq}");
            }
        }
    }

    #[test]
    fn reports_follow_the_first_packet_then_every_interval() {
        let mut stats = SenderStats::default();
        let t0 = Instant::now();
        assert!(
            stats.report_due(1, 90_000, t0).is_none(),
            "nothing sent yet"
        );
        stats.on_sent(&header(1, 90_000), 1000, t0);
        let first = stats.report_due(1, 90_000, t0).expect("first report");
        assert_eq!(
            (first.packet_count, first.octet_count, first.rtp_time),
            (1, 1000, 90_000)
        );
        stats.on_sent(&header(2, 93_000), 500, t0 + Duration::from_millis(500));
        assert!(
            stats
                .report_due(1, 90_000, t0 + Duration::from_millis(500))
                .is_none()
        );
        // A retransmission of an older packet counts but keeps the reference.
        stats.on_sent(&header(1, 90_000), 1000, t0 + Duration::from_millis(900));
        let later = t0 + Duration::from_millis(1500);
        let second = stats.report_due(1, 90_000, later).expect("second report");
        assert_eq!((second.packet_count, second.octet_count), (3, 2500));
        // 93,000 sent at 0.5 s, extrapolated by 1 s of 90 kHz.
        assert_eq!(second.rtp_time, 93_000 + 90_000);
        assert!(second.ntp_time > first.ntp_time);
    }
}
