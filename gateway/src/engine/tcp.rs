//! ICE over TCP (RFC 6544) for a shard: its listener's connections, each
//! carrying RFC 4571 frames (a 16-bit length, then one STUN, DTLS, SRTP or
//! SRTCP packet), for clients on networks that block UDP.
//!
//! Every engine connection's answer offers, beside its UDP host candidate,
//! a passive TCP host candidate at the same address and port (lower
//! priority, so a client uses it only when UDP fails). A client opens a
//! TCP connection to it and sends its checks there; the shard routes each
//! frame exactly as it routes a UDP datagram ([`super::demux`]), the TCP
//! connection named by the client's end of it ([`super::demux::Peer`]).
//!
//! Each accepted connection gets two tasks on the shard's own thread
//! (its runtime is single-threaded, so nothing crosses threads): a reader
//! that cuts frames and hands them to the shard loop over a bounded
//! channel (a client that sends faster than the shard reads is held back
//! by TCP), and a writer that sends what the loop queued, a bounded number
//! of frames: beyond it a frame is dropped, as a full UDP socket buffer
//! would, and NACK repairs it. The loop closes a connection the shard no
//! longer routes (its session ended, or the client chose another path) and
//! one whose first frame belongs to no session.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use super::io::IoStats;

/// ICE-TCP connections one shard holds at most.
pub const MAX_CONNECTIONS: usize = 4096;
/// ICE-TCP connections one client IP address may hold on one shard (a
/// browser opens one per session it checks over TCP).
pub const MAX_CONNECTIONS_PER_IP: usize = 256;
/// A connection must deliver its first whole frame (a connectivity check)
/// within this, like a session that must connect within the connect
/// timeout.
pub const FIRST_FRAME_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection silent for this long is closed: ICE consent checks arrive
/// every few seconds on a path in use (RFC 7675).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Frames queued for one connection's writer at most.
const WRITE_QUEUE: usize = 1024;
/// A write that cannot complete in this long ends the connection.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Frames read from all connections that wait for the shard loop at most.
const READ_QUEUE: usize = 256;
/// RFC 4571's length prefix.
const LENGTH_PREFIX: usize = 2;

/// What a connection's tasks tell the shard loop.
#[derive(Debug)]
pub enum TcpInput {
    /// A whole frame from the connection at this address.
    Frame(SocketAddr, BytesMut),
    /// The connection has ended (closed by the client, silent too long, or
    /// unwritable).
    Closed(SocketAddr),
}

/// A shard's ICE-TCP connections.
pub struct TcpLinks {
    links: HashMap<SocketAddr, Link>,
    per_ip: HashMap<IpAddr, usize>,
    inputs: mpsc::Sender<TcpInput>,
    stats: Arc<IoStats>,
}

struct Link {
    frames: mpsc::Sender<Vec<u8>>,
    reader: AbortHandle,
}

impl TcpLinks {
    /// No connections yet; their frames will arrive on the returned
    /// receiver.
    pub fn new(stats: Arc<IoStats>) -> (TcpLinks, mpsc::Receiver<TcpInput>) {
        let (inputs, receiver) = mpsc::channel(READ_QUEUE);
        let links = TcpLinks {
            links: HashMap::new(),
            per_ip: HashMap::new(),
            inputs,
            stats,
        };
        (links, receiver)
    }

    /// Takes an accepted connection, unless a cap is reached (then it is
    /// closed at once). Must run inside the shard's runtime.
    pub fn accept(&mut self, stream: TcpStream, peer: SocketAddr) {
        let from_ip = self.per_ip.get(&peer.ip()).copied().unwrap_or(0);
        if self.links.len() >= MAX_CONNECTIONS || from_ip >= MAX_CONNECTIONS_PER_IP {
            self.stats.tcp_refused.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%peer, "ICE-TCP connection refused: too many");
            return;
        }
        // Media: every frame should leave at once.
        let _no_delay_is_an_optimisation = stream.set_nodelay(true);
        let (read, write) = stream.into_split();
        let (frames, queued) = mpsc::channel(WRITE_QUEUE);
        let reader = tokio::spawn(read_frames(read, peer, self.inputs.clone())).abort_handle();
        tokio::spawn(write_frames(write, peer, queued, self.inputs.clone()));
        if let Some(old) = self.links.insert(peer, Link { frames, reader }) {
            // The kernel reused a closed connection's address before its
            // Closed input arrived: the old one is finished anyway.
            old.reader.abort();
            self.stats.tcp_closed.fetch_add(1, Ordering::Relaxed);
        } else {
            *self.per_ip.entry(peer.ip()).or_default() += 1;
        }
        self.stats.tcp_accepted.fetch_add(1, Ordering::Relaxed);
    }

    /// Queues `packet`, framed, for the connection from `peer`. `false` if
    /// there is no such connection or its queue is full (the packet is
    /// lost, as on a full UDP socket).
    pub fn send(&mut self, peer: SocketAddr, packet: &[u8]) -> bool {
        let Some(link) = self.links.get(&peer) else {
            return false;
        };
        let Ok(length) = u16::try_from(packet.len()) else {
            return false;
        };
        let mut framed = Vec::with_capacity(LENGTH_PREFIX + packet.len());
        framed.extend_from_slice(&length.to_be_bytes());
        framed.extend_from_slice(packet);
        let queued = link.frames.try_send(framed).is_ok();
        let counter = if queued {
            &self.stats.tcp_frames_out
        } else {
            &self.stats.tcp_dropped
        };
        counter.fetch_add(1, Ordering::Relaxed);
        queued
    }

    /// Closes the connection from `peer`: no more reading; what was queued
    /// for it is still written (a DTLS close_notify), then it is shut down.
    pub fn close(&mut self, peer: SocketAddr) {
        let Some(link) = self.links.remove(&peer) else {
            return;
        };
        link.reader.abort();
        self.stats.tcp_closed.fetch_add(1, Ordering::Relaxed);
        if let Some(count) = self.per_ip.get_mut(&peer.ip()) {
            *count -= 1;
            if *count == 0 {
                self.per_ip.remove(&peer.ip());
            }
        }
        // Dropping `link.frames` ends the writer once it has written the rest.
    }
}

/// Reads the connection from `peer` and hands each whole frame on, until
/// it ends, errs, or is silent too long (or sends no frame at first).
async fn read_frames(mut read: OwnedReadHalf, peer: SocketAddr, inputs: mpsc::Sender<TcpInput>) {
    let mut buffer = BytesMut::with_capacity(4096);
    let mut timeout = FIRST_FRAME_TIMEOUT;
    loop {
        match tokio::time::timeout(timeout, read.read_buf(&mut buffer)).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => break, // closed, failed, or silent
        }
        while let Some(frame) = next_frame(&mut buffer) {
            timeout = IDLE_TIMEOUT;
            if inputs.send(TcpInput::Frame(peer, frame)).await.is_err() {
                return; // the shard has stopped
            }
        }
        if buffer.capacity() - buffer.len() < 2048 {
            buffer.reserve(4096);
        }
    }
    let _shard_stopped = inputs.send(TcpInput::Closed(peer)).await;
}

/// Cuts the next whole RFC 4571 frame off the front of `buffer`, without
/// copying it.
fn next_frame(buffer: &mut BytesMut) -> Option<BytesMut> {
    let length = usize::from(u16::from_be_bytes([*buffer.first()?, *buffer.get(1)?]));
    if buffer.len() < LENGTH_PREFIX + length {
        return None;
    }
    buffer.advance(LENGTH_PREFIX);
    Some(buffer.split_to(length))
}

/// Writes what the loop queues for the connection from `peer`, several
/// frames per write, until the loop drops its end (then shuts the
/// connection down) or a write fails or stalls.
async fn write_frames(
    mut write: OwnedWriteHalf,
    peer: SocketAddr,
    mut frames: mpsc::Receiver<Vec<u8>>,
    inputs: mpsc::Sender<TcpInput>,
) {
    let mut batch = Vec::with_capacity(64);
    let mut out = Vec::new();
    while frames.recv_many(&mut batch, 64).await > 0 {
        out.clear();
        for frame in batch.drain(..) {
            out.extend_from_slice(&frame);
        }
        let written = tokio::time::timeout(WRITE_TIMEOUT, write.write_all(&out)).await;
        if !matches!(written, Ok(Ok(()))) {
            let _shard_stopped = inputs.send(TcpInput::Closed(peer)).await;
            return;
        }
    }
    let _already_gone = tokio::time::timeout(WRITE_TIMEOUT, write.shutdown()).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_cut_whole_and_in_order() {
        let mut buffer = BytesMut::new();
        buffer.extend_from_slice(&[0, 3, b'a', b'b', b'c', 0, 0, 0, 2, b'x']);
        assert_eq!(next_frame(&mut buffer).as_deref(), Some(&b"abc"[..]));
        assert_eq!(next_frame(&mut buffer).as_deref(), Some(&b""[..]));
        assert_eq!(next_frame(&mut buffer), None, "half a frame waits");
        buffer.extend_from_slice(b"y");
        assert_eq!(next_frame(&mut buffer).as_deref(), Some(&b"xy"[..]));
        assert!(buffer.is_empty());
        buffer.extend_from_slice(&[1]);
        assert_eq!(next_frame(&mut buffer), None, "half a length waits");
    }
}
