//! The WHIP publisher: the H264 fixture looped at 30 fps and padded up to the
//! chosen bitrate, plus Opus every 20 ms, written as RTP on a fixed clock.
//!
//! Like OBS and FFmpeg it keeps its GOP (a keyframe every 2 s) whatever the
//! server asks: keyframe requests are counted, not obeyed, so a viewer's time
//! to its first keyframe shows what the server does about joins.

use std::time::{Duration, Instant};

use str0m::media::{Mid, Pt};
use str0m::rtp::RtpWrite;
use str0m::{Event, RtcError};

use crate::h264::{self, AccessUnit};
use crate::ogg::{self, OggError};
use crate::peer::{Peer, VIDEO_PT};
use crate::sent::{Sent, SentLog};
use crate::udp;

const VIDEO_FIXTURE: &[u8] = include_bytes!("../fixtures/video.h264");
const AUDIO_FIXTURE: &[u8] = include_bytes!("../../tests/fixtures/audio.ogg");
const FPS: u64 = 30;
const AUDIO_PT: Pt = Pt::new_with_value(111);
const AUDIO_PACKET: Duration = Duration::from_millis(20);

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The embedded Opus fixture did not parse.
    #[error("audio fixture: {0}")]
    Audio(#[from] OggError),
    /// The answer left an m-line without a send stream.
    #[error("no send stream for mid {0}")]
    NoStream(Mid),
    /// str0m failed while sending.
    #[error("{0}")]
    Rtc(#[from] RtcError),
}

/// Counters since the publisher connected.
#[derive(Debug, Default, Clone, Copy)]
pub struct Published {
    pub packets: u64,
    pub keyframe_requests: u64,
}

pub struct Publisher {
    pub peer: Peer,
    video: Vec<AccessUnit>,
    audio: Vec<Vec<u8>>,
    /// Padding factor: bytes sent per byte of fixture.
    scale: f64,
    /// When the connection came up; media is clocked from it.
    started: Option<Instant>,
    frames: u64,
    audio_packets: u64,
    video_seq: u64,
    audio_seq: u64,
    padding: u64,
    pub published: Published,
}

impl Publisher {
    pub fn new(peer: Peer, bitrate_bps: f64) -> Result<Publisher, PublishError> {
        let mut publisher = Publisher {
            peer,
            video: h264::access_units(VIDEO_FIXTURE),
            audio: ogg::opus_packets(AUDIO_FIXTURE)?,
            scale: 1.0,
            started: None,
            frames: 0,
            audio_packets: 0,
            // Sequence numbers start low enough that the first packet has
            // rollover counter 0, as receivers assume.
            video_seq: 1000,
            audio_seq: 1000,
            padding: 0,
            published: Published::default(),
        };
        publisher.set_bitrate(bitrate_bps);
        Ok(publisher)
    }

    /// The fixture's own video bitrate (NAL unit bytes over its duration).
    pub fn fixture_bitrate(&self) -> f64 {
        let bytes: usize = self.video.iter().map(AccessUnit::len).sum();
        bytes as f64 * 8.0 * FPS as f64 / self.video.len() as f64
    }

    /// Pads every picture by the same factor, so keyframes stay as much
    /// larger than the rest as the encoder made them. Below the fixture's
    /// own bitrate nothing is padded.
    pub fn set_bitrate(&mut self, bps: f64) {
        self.scale = (bps / self.fixture_bitrate()).max(1.0);
    }

    pub fn is_connected(&self) -> bool {
        self.started.is_some()
    }

    /// When the next packet is due; `None` until connected.
    pub fn due(&self) -> Option<Instant> {
        self.next().map(|(at, _)| at)
    }

    /// The next packet's time, and whether it is video.
    fn next(&self) -> Option<(Instant, bool)> {
        let started = self.started?;
        let video = started + Duration::from_nanos(self.frames * 1_000_000_000 / FPS);
        let audio = started + AUDIO_PACKET * self.audio_packets as u32;
        Some(if video <= audio {
            (video, true)
        } else {
            (audio, false)
        })
    }

    /// Sends every packet due by `now`.
    pub fn send_due(&mut self, now: Instant, log: &mut SentLog) -> Result<(), PublishError> {
        while let Some((due, video)) = self.next().filter(|&(at, _)| at <= now) {
            if video {
                self.send_frame(due, log)?;
            } else {
                self.send_audio(due)?;
            }
        }
        Ok(())
    }

    /// Drains the Rtc after an input.
    pub fn drain(&mut self) -> Result<Instant, RtcError> {
        let now = Instant::now();
        self.peer.drain(|event| match event {
            Event::Connected => {
                self.started.get_or_insert(now);
            }
            Event::KeyframeRequest(_) => self.published.keyframe_requests += 1,
            _ => {}
        })
    }

    fn send_frame(&mut self, due: Instant, log: &mut SentLog) -> Result<(), PublishError> {
        let frame = self.frames;
        self.frames += 1;
        let au = &self.video[(frame % self.video.len() as u64) as usize];
        let keyframe = au.is_keyframe();

        // SPS/PPS, then padding (SEI must come before the slice), then the
        // slice. SPS and PPS repeat at every keyframe, so they go in a STAP-A
        // with the first padding unit, whose counter makes the payload unique.
        let mut payloads = Vec::new();
        let mut padding = (au.len() as f64 * (self.scale - 1.0)) as usize;
        if !au.prefix.is_empty() {
            let sei = h264::padding_sei(h264::MIN_PADDING, self.padding);
            let mut nals: Vec<&[u8]> = au.prefix.iter().map(Vec::as_slice).collect();
            nals.push(&sei);
            match h264::stap_a(&nals) {
                Some(stap) => {
                    self.padding += 1;
                    padding = padding.saturating_sub(sei.len());
                    payloads.push(stap);
                }
                None => au
                    .prefix
                    .iter()
                    .for_each(|n| h264::packetize(n, &mut payloads)),
            }
        }
        while padding >= h264::MIN_PADDING {
            let sei = h264::padding_sei(padding.min(h264::MAX_PAYLOAD), self.padding);
            self.padding += 1;
            padding -= sei.len();
            payloads.push(sei);
        }
        h264::packetize(&au.slice, &mut payloads);

        let count = payloads.len();
        let rtp_time = (frame * 90_000 / FPS) as u32;
        let mid = self.peer.video;
        for (index, payload) in payloads.into_iter().enumerate() {
            let sent = Sent {
                sent_ns: udp::now_ns(),
                frame,
                index: index as u16,
                count: count as u16,
                keyframe,
            };
            log.record(&payload, sent);
            let seq = self.video_seq;
            self.video_seq += 1;
            let write = RtpWrite::new(VIDEO_PT.into(), seq.into(), rtp_time, due, payload)
                .marker(index + 1 == count)
                .nackable(true);
            self.write(mid, write)?;
        }
        Ok(())
    }

    fn send_audio(&mut self, due: Instant) -> Result<(), PublishError> {
        let n = self.audio_packets;
        self.audio_packets += 1;
        let payload = self.audio[(n % self.audio.len() as u64) as usize].clone();
        let seq = self.audio_seq;
        self.audio_seq += 1;
        let rtp_time = (n * 960) as u32;
        let write = RtpWrite::new(AUDIO_PT, seq.into(), rtp_time, due, payload);
        self.write(self.peer.audio, write)
    }

    /// One packet out: str0m queues it on the write, and sends it on the
    /// timeout that follows (it has no clock of its own).
    fn write(&mut self, mid: Mid, write: RtpWrite) -> Result<(), PublishError> {
        let mut api = self.peer.rtc.direct_api();
        let stream = api
            .stream_tx_by_mid(mid, None)
            .ok_or(PublishError::NoStream(mid))?;
        stream.write_rtp(write);
        self.published.packets += 1;
        self.drain()?;
        self.peer.timeout(Instant::now())?;
        self.drain()?;
        Ok(())
    }
}
