//! webrtc-rs's tokio runtime, with the relay's socket buffers enlarged.
//!
//! A relay receives the origin's keyframe bursts (a 2.5 Mbit/s keyframe is
//! about 125 datagrams, sent twice to a new viewer) on one socket that
//! webrtc-rs binds with the kernel's default 208 KB receive buffer, which
//! holds about 90 full datagrams: the rest of the burst was dropped and
//! had to be NACKed, and the edge's keyframe cache, which keeps only
//! whole keyframes, missed the first one. The engine's sockets ask for
//! 4 MB (`engine::io::enlarge_buffers`); the relay's now do too. Every
//! other call goes to webrtc-rs's own [`TokioRuntime`].

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

/// The relay socket's receive and send buffers (as the engine's).
const SOCKET_BUFFER: usize = 4 << 20;

/// [`TokioRuntime`] whose UDP sockets get [`SOCKET_BUFFER`].
#[derive(Debug)]
pub struct RelayRuntime(TokioRuntime);

impl Default for RelayRuntime {
    fn default() -> Self {
        RelayRuntime(TokioRuntime)
    }
}

impl Runtime for RelayRuntime {
    fn spawn(&self, future: Pin<Box<dyn Future<Output = ()> + Send>>) -> Box<dyn JoinHandle> {
        self.0.spawn(future)
    }

    fn spawn_reactor(
        &self,
        reactor_pool_size: usize,
        future: Pin<Box<dyn Future<Output = ()> + Send>>,
    ) -> Box<dyn JoinHandle> {
        self.0.spawn_reactor(reactor_pool_size, future)
    }

    fn wrap_udp_socket(&self, socket: std::net::UdpSocket) -> io::Result<Arc<dyn AsyncUdpSocket>> {
        crate::engine::io::enlarge_buffers(&socket, SOCKET_BUFFER);
        self.0.wrap_udp_socket(socket)
    }

    fn wrap_tcp_listener(
        &self,
        listener: std::net::TcpListener,
    ) -> io::Result<Arc<dyn AsyncTcpListener>> {
        self.0.wrap_tcp_listener(listener)
    }

    fn connect_tcp<'a>(
        &'a self,
        remote_addr: SocketAddr,
    ) -> Pin<Box<dyn Future<Output = io::Result<Arc<dyn AsyncTcpStream>>> + Send + 'a>> {
        self.0.connect_tcp(remote_addr)
    }

    fn resolve_host<'a>(
        &'a self,
        host: &'a str,
    ) -> Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send + 'a>> {
        self.0.resolve_host(host)
    }

    fn now(&self) -> Instant {
        self.0.now()
    }

    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        self.0.sleep(duration)
    }

    fn interval(&self, period: Duration) -> Box<dyn AsyncInterval> {
        self.0.interval(period)
    }

    fn block_on(&self, future: Pin<Box<dyn Future<Output = ()> + '_>>) {
        self.0.block_on(future)
    }

    fn yield_now(&self) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        self.0.yield_now()
    }
}
