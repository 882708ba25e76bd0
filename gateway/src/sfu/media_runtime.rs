//! The runtime webrtc-rs drives its sessions on: tokio, with bigger socket
//! buffers on every media socket.
//!
//! A publisher's socket takes a whole keyframe in one burst (hundreds of
//! packets at 8 Mbit/s) while the same core is busy sending to every viewer.
//! With Linux's default 208 KB receive buffer the kernel then drops the end
//! of the burst and every viewer loses the same packets; `vigil-bench` saw it
//! at 8 Mbit/s. Each media socket asks for [`SOCKET_BUFFER_BYTES`] both
//! ways; the kernel grants at most `net.core.rmem_max` / `wmem_max` (see
//! docs/performance.md), and the buffer is only memory while it is full.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use webrtc::runtime::{
    AsyncInterval, AsyncTcpListener, AsyncTcpStream, AsyncUdpSocket, JoinHandle, Runtime,
    TokioRuntime,
};

/// Receive and send buffer asked for on each media socket.
pub const SOCKET_BUFFER_BYTES: usize = 4 << 20;

/// [`TokioRuntime`] with [`SOCKET_BUFFER_BYTES`] buffers on UDP sockets.
#[derive(Debug)]
pub struct MediaRuntime {
    inner: TokioRuntime,
}

impl MediaRuntime {
    /// The runtime for one peer connection (it holds no state).
    pub fn for_peer() -> Arc<dyn Runtime> {
        Arc::new(MediaRuntime {
            inner: TokioRuntime,
        })
    }
}

/// Asks for `bytes` of receive and send buffer on `socket`; what the kernel
/// grants is logged once, since a small `rmem_max` silently caps it.
pub fn enlarge_buffers(socket: &std::net::UdpSocket, bytes: usize) {
    let sock = socket2::SockRef::from(socket);
    if let Err(e) = sock.set_recv_buffer_size(bytes) {
        tracing::debug!("SO_RCVBUF: {e}");
    }
    if let Err(e) = sock.set_send_buffer_size(bytes) {
        tracing::debug!("SO_SNDBUF: {e}");
    }
    static LOGGED: std::sync::Once = std::sync::Once::new();
    LOGGED.call_once(|| {
        let granted = sock.recv_buffer_size().unwrap_or_default();
        // Linux reports twice what it accounts for (bookkeeping overhead).
        if granted < bytes {
            tracing::info!(
                asked = bytes,
                granted,
                "media socket receive buffer capped by net.core.rmem_max"
            );
        }
    });
}

impl Runtime for MediaRuntime {
    fn spawn(&self, future: Pin<Box<dyn Future<Output = ()> + Send>>) -> Box<dyn JoinHandle> {
        self.inner.spawn(future)
    }

    fn spawn_reactor(
        &self,
        reactor_pool_size: usize,
        future: Pin<Box<dyn Future<Output = ()> + Send>>,
    ) -> Box<dyn JoinHandle> {
        self.inner.spawn_reactor(reactor_pool_size, future)
    }

    fn wrap_udp_socket(&self, socket: std::net::UdpSocket) -> io::Result<Arc<dyn AsyncUdpSocket>> {
        enlarge_buffers(&socket, SOCKET_BUFFER_BYTES);
        self.inner.wrap_udp_socket(socket)
    }

    fn wrap_tcp_listener(
        &self,
        listener: std::net::TcpListener,
    ) -> io::Result<Arc<dyn AsyncTcpListener>> {
        self.inner.wrap_tcp_listener(listener)
    }

    fn connect_tcp<'a>(
        &'a self,
        remote_addr: SocketAddr,
    ) -> Pin<Box<dyn Future<Output = io::Result<Arc<dyn AsyncTcpStream>>> + Send + 'a>> {
        self.inner.connect_tcp(remote_addr)
    }

    fn resolve_host<'a>(
        &'a self,
        host: &'a str,
    ) -> Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send + 'a>> {
        self.inner.resolve_host(host)
    }

    fn now(&self) -> Instant {
        self.inner.now()
    }

    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        self.inner.sleep(duration)
    }

    fn interval(&self, period: Duration) -> Box<dyn AsyncInterval> {
        self.inner.interval(period)
    }

    fn block_on(&self, future: Pin<Box<dyn Future<Output = ()> + '_>>) {
        self.inner.block_on(future)
    }

    fn yield_now(&self) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        self.inner.yield_now()
    }

    fn name(&self) -> &'static str {
        self.inner.name()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_sockets_get_a_bigger_receive_buffer_than_the_default() {
        let plain = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let default = socket2::SockRef::from(&plain)
            .recv_buffer_size()
            .expect("SO_RCVBUF");
        let media = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        enlarge_buffers(&media, SOCKET_BUFFER_BYTES);
        let granted = socket2::SockRef::from(&media)
            .recv_buffer_size()
            .expect("SO_RCVBUF");
        // Even where rmem_max is at its stock 208 KB the kernel doubles it.
        assert!(granted > default, "{granted} vs default {default}");
    }
}
