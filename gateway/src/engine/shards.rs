//! The engine: a shard per core, each a thread with its own UDP socket
//! ([`super::io`]), and the commands that span shards.
//!
//! A session lives on one shard for its life. A viewer may sit on another
//! shard than its publisher: the publisher's shard then relays each
//! packet once per such shard ([`super::shard::Relay`], over a channel
//! between the two threads, gathered per receive batch), and that shard
//! fans it out to its own viewers. Nothing per viewer crosses a thread.
//!
//! Shard `i` listens on the media port + `i` (with port 0, each gets an
//! ephemeral port): one socket per shard, each session's answer carrying
//! its shard's address. With ICE-TCP on, each shard also listens for TCP
//! on the same address and port.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};

use rtc::rtp_transceiver::RTCRtpSenderId;
use tokio::sync::mpsc;

use super::io::{ShardEvent, ShardHandle, ShardPlace};
use super::shard::{ConnId, Source, TrackId};
use crate::sfu::layers::LayerChoice;

/// The running shards.
pub struct Engine {
    shards: Vec<ShardHandle>,
    next: AtomicUsize,
}

impl Engine {
    /// Starts `threads` shards (at least one) on `listen`'s address, shard
    /// `i` on its port + `i`, each also taking ICE-TCP on that address if
    /// `ice_tcp`. Returns the engine and every shard's events.
    pub fn start(
        listen: SocketAddr,
        threads: usize,
        ice_tcp: bool,
    ) -> io::Result<(Engine, mpsc::UnboundedReceiver<ShardEvent>)> {
        let threads = threads.max(1);
        let (events, event_rx) = mpsc::unbounded_channel();
        let (inboxes, relay_rxs): (Vec<_>, Vec<_>) =
            (0..threads).map(|_| mpsc::unbounded_channel()).unzip();
        let mut shards = Vec::with_capacity(threads);
        for (index, relay_rx) in relay_rxs.into_iter().enumerate() {
            let place = ShardPlace {
                index,
                relay_rx,
                peers: inboxes.clone(),
            };
            shards.push(ShardHandle::spawn_in(
                place,
                shard_address(listen, index)?,
                ice_tcp,
                events.clone(),
            )?);
        }
        Ok((
            Engine {
                shards,
                next: AtomicUsize::new(0),
            },
            event_rx,
        ))
    }

    /// Every shard, by index.
    pub fn shards(&self) -> &[ShardHandle] {
        &self.shards
    }

    /// The shard a new session goes to (in turn).
    pub fn next_shard(&self) -> &ShardHandle {
        let turn = self.next.fetch_add(1, Ordering::Relaxed);
        &self.shards[turn % self.shards.len()]
    }

    /// Sends `track` to `viewer` on shard `viewer_shard`, the layer
    /// `choice` names (see [`super::shard::Shard::subscribe`]); if the
    /// publisher lives on another shard, that shard starts relaying the
    /// track to the viewer's. `false` if the viewer or its sender is gone.
    pub async fn subscribe(
        &self,
        track: TrackId,
        viewer_shard: usize,
        viewer: ConnId,
        sender: RTCRtpSenderId,
        ssrc: u32,
        choice: LayerChoice,
    ) -> bool {
        let (Some(publisher_side), Some(viewer_side)) =
            (self.shards.get(track.shard), self.shards.get(viewer_shard))
        else {
            return false;
        };
        let subscribed = viewer_side
            .subscribe(track, viewer, sender, ssrc, choice)
            .await;
        if subscribed && track.shard != viewer_shard {
            publisher_side.relay_to(track, viewer_shard);
        }
        subscribed
    }

    /// [`Engine::subscribe`] without waiting, for the room owner: the
    /// viewer's shard applies it in order with the owner's later commands.
    pub fn subscribe_now(
        &self,
        track: TrackId,
        viewer_shard: usize,
        viewer: ConnId,
        sender: RTCRtpSenderId,
        ssrc: u32,
        choice: LayerChoice,
    ) {
        let (Some(publisher_side), Some(viewer_side)) =
            (self.shards.get(track.shard), self.shards.get(viewer_shard))
        else {
            return;
        };
        viewer_side.subscribe_now(track, viewer, sender, ssrc, choice);
        if track.shard != viewer_shard {
            publisher_side.relay_to(track, viewer_shard);
        }
    }

    /// [`Engine::move_viewers`] without waiting, for the room owner, which
    /// knows the shards its viewers of `from` are on (`viewer_shards`).
    pub fn move_viewers_now(&self, from: TrackId, to: TrackId, viewer_shards: &[usize]) {
        let Some(home) = self.shards.get(to.shard) else {
            return;
        };
        for &index in viewer_shards {
            if let Some(shard) = self.shards.get(index) {
                shard.move_viewers_now(from, to);
                if index != to.shard {
                    home.relay_to(to, index);
                }
            }
        }
    }

    /// Asks `source`'s publisher for a keyframe, on the shard it lives on
    /// (which coalesces requests).
    pub fn request_keyframe(&self, source: Source) {
        if let Some(home) = self.shards.get(source.shard) {
            home.request_keyframe(source);
        }
    }

    /// Moves every viewer of `from` (its publisher left) onto `to` (a new
    /// publisher of the stream, same codec), on every shard (see
    /// [`super::shard::Shard::move_viewers`]); `to`'s shard relays it to
    /// the other shards that had viewers. Returns how many shards had
    /// viewers of `from`.
    pub async fn move_viewers(&self, from: TrackId, to: TrackId) -> usize {
        let Some(home) = self.shards.get(to.shard) else {
            return 0;
        };
        let mut shards_with_viewers = 0;
        for shard in &self.shards {
            if shard.move_viewers(from, to).await {
                shards_with_viewers += 1;
                if shard.index() != to.shard {
                    home.relay_to(to, shard.index());
                }
            }
        }
        shards_with_viewers
    }

    /// Stops (`true`) or resumes sending `source` to every viewer, on
    /// every shard (see [`super::shard::Shard::set_muted`]).
    pub fn set_muted(&self, track: TrackId, muted: bool) {
        for shard in &self.shards {
            shard.set_muted(track, muted);
        }
    }

    /// Returns once every shard has sent what the commands before this
    /// call queued (closed connections' `close_notify`s).
    pub async fn flush(&self) {
        for shard in &self.shards {
            shard.flush().await;
        }
    }

    /// Closes connection `conn` of shard `shard`; the other shards drop
    /// what they kept of its streams (as a publisher), keeping its viewers
    /// for a new publisher ([`Engine::move_viewers`]). A shard that
    /// keeps receiving relays of a stream none of its viewers watch any
    /// more drops them on arrival.
    pub fn remove_connection(&self, shard: usize, conn: ConnId) {
        let Some(home) = self.shards.get(shard) else {
            return;
        };
        home.remove_connection(conn);
        for other in self.shards.iter().filter(|s| s.index() != shard) {
            other.forget_publisher(shard, conn);
        }
    }
}

/// Shard `index`'s address: `listen` with its port + `index`, or `listen`
/// itself for an ephemeral port.
fn shard_address(listen: SocketAddr, index: usize) -> io::Result<SocketAddr> {
    if listen.port() == 0 {
        return Ok(listen);
    }
    let port = u16::try_from(index)
        .ok()
        .and_then(|i| listen.port().checked_add(i))
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{index} media shards do not fit above port {}",
                    listen.port()
                ),
            )
        })?;
    Ok(SocketAddr::new(listen.ip(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_take_consecutive_ports_or_ephemeral_ones() {
        let listen: SocketAddr = "127.0.0.1:8189".parse().expect("address");
        assert_eq!(shard_address(listen, 0).expect("0").port(), 8189);
        assert_eq!(shard_address(listen, 3).expect("3").port(), 8192);
        let ephemeral: SocketAddr = "127.0.0.1:0".parse().expect("address");
        assert_eq!(shard_address(ephemeral, 5).expect("5").port(), 0);
        let top: SocketAddr = "127.0.0.1:65535".parse().expect("address");
        assert!(shard_address(top, 1).is_err());
    }
}
