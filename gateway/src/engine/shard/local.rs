//! Local publishers: tracks that enter the engine from inside the process
//! (an RTSP camera's puller, [`crate::camera`]) instead of over a WebRTC
//! connection. To the rest of the shard a local publisher is a publisher
//! connection like any other: its tracks are [`TrackId`]s, its packets are
//! counted, kept, cached, relayed and fanned out by the same code, and it
//! is closed with [`Shard::remove_connection`]. It has no `rtc`
//! connection: nothing is decrypted, and a keyframe request reaches no
//! one (an RTSP camera cannot be asked; viewers start from the cached
//! keyframe instead).

use std::sync::Arc;
use std::time::Instant;

use rtc::rtp;
use rtc::rtp_transceiver::RTCRtpReceiverId;

use super::{ConnId, Event, PublishedTrack, Received, Shard, TrackId};
use crate::sfu::MediaKind;
use crate::sfu::keyframe::VideoCodec;
use crate::sfu::stream_counters::StreamCounters;

/// One track of a local publisher, known before its first packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalTrack {
    /// Audio or video.
    pub kind: MediaKind,
    /// The codec's mime type (`video/H264`, `audio/PCMU`).
    pub mime: String,
    /// The codec's RTP clock rate.
    pub clock_rate: u32,
    /// The SSRC its packets carry.
    pub ssrc: u32,
}

/// A local publisher's state on its shard.
pub(super) struct Local {
    tracks: Vec<LocalTrack>,
    /// Which tracks have had their first packet (and their `Event::Track`).
    opened: Vec<bool>,
    /// `Event::Connected` was reported (at its first packet).
    connected: bool,
    /// Its counters for alarms and statistics, set by the owner.
    pub(super) counters: Option<Arc<StreamCounters>>,
    /// Its streams' reception, for the statistics.
    pub(super) reception: Received,
}

impl Shard {
    /// Adds a local publisher of `tracks` (SSRCs distinct). It reports
    /// `Event::Connected` and each track's `Event::Track` at their first
    /// packet ([`Shard::handle_local_media`]), as a WebRTC publisher does.
    pub fn add_local(&mut self, tracks: Vec<LocalTrack>) -> ConnId {
        let id = ConnId(self.next_id);
        self.next_id += 1;
        let opened = vec![false; tracks.len()];
        self.locals.insert(
            id,
            Local {
                tracks,
                opened,
                connected: false,
                counters: None,
                reception: Received::default(),
            },
        );
        id
    }

    /// The tracks of local publisher `conn`, by receiver (its track's
    /// index), with their kind.
    pub(super) fn local_tracks(&self, conn: ConnId) -> Option<Vec<(TrackId, MediaKind)>> {
        let local = self.locals.get(&conn)?;
        Some(
            local
                .tracks
                .iter()
                .enumerate()
                .map(|(i, t)| (self.local_track_id(conn, i), t.kind))
                .collect(),
        )
    }

    fn local_track_id(&self, conn: ConnId, index: usize) -> TrackId {
        TrackId {
            shard: self.index,
            conn,
            receiver: RTCRtpReceiverId::from(index),
        }
    }

    /// Packets of local publisher `conn`, each on one of its tracks' SSRC
    /// (others are dropped), forwarded as a WebRTC publisher's are.
    pub fn handle_local_media(&mut self, conn: ConnId, packets: Vec<rtp::Packet>, now: Instant) {
        let Some(local) = self.locals.get_mut(&conn) else {
            return; // removed meanwhile
        };
        if !local.connected {
            local.connected = true;
            self.events.push_back(Event::Connected(conn));
        }
        let mut opened = Vec::new();
        for packet in &packets {
            let ssrc = packet.header.ssrc;
            if let Some(i) = local.tracks.iter().position(|t| t.ssrc == ssrc)
                && !local.opened[i]
            {
                local.opened[i] = true;
                let track = &local.tracks[i];
                local.reception.open(ssrc, track.kind, track.clock_rate);
                opened.push((i, track.clone()));
            }
        }
        for (i, track) in opened {
            let id = self.local_track_id(conn, i);
            let source = id.layer(track.ssrc);
            self.track_of.insert(source, id);
            if let Some(codec) = VideoCodec::from_mime(&track.mime) {
                self.watch(source, codec);
            }
            self.events.push_back(Event::Track(PublishedTrack {
                track: id,
                source,
                kind: track.kind,
                mime: track.mime,
                rid: None,
            }));
        }
        self.publish(conn, packets, now);
    }
}
