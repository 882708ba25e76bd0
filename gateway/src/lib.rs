//! Vigil's WHIP/WHEP gateway and selective forwarding core.
//!
//! Who owns what:
//! - [`http`] owns nothing: handlers parse a request, make one call on the
//!   [`sfu::Sfu`] handle, and map the result (errors in one place).
//! - [`sfu::registry`] is the single owner of room and session state; it is
//!   changed only by messages to its task.
//! - Each published track's forwarder task owns its viewers' queues; each
//!   viewer track's writer task owns that track.
//!
//! Shutdown sequence ([`Vigil::shutdown`]): stop accepting HTTP connections
//! and let in-flight requests finish, then close every session (DTLS close
//! to each peer), which ends forwarders and writers.
//!
//! Panic policy: a panic is a bug; no client input can cause one.

pub mod config;
pub mod error;
pub mod http;
pub mod sfu;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use config::Config;
pub use sfu::Sfu;

/// A running gateway.
pub struct Vigil {
    /// The bound HTTP address (useful with port 0).
    pub http_addr: SocketAddr,
    /// The forwarding core, for diagnostics and tests.
    pub sfu: Sfu,
    stop: oneshot::Sender<()>,
    http: JoinHandle<()>,
}

impl Vigil {
    /// Binds `config.http_listen` and starts serving.
    pub async fn start(config: Config) -> std::io::Result<Vigil> {
        let listener = TcpListener::bind(config.http_listen).await?;
        let http_addr = listener.local_addr()?;
        let sfu = Sfu::start(&config);
        let state = Arc::new(http::AppState {
            sfu: sfu.clone(),
            config,
        });
        let (stop, stopped) = oneshot::channel::<()>();
        let http = tokio::spawn(http::serve(listener, state, async move {
            // A dropped sender means the same as a sent one: stop.
            let _ = stopped.await;
        }));
        Ok(Vigil {
            http_addr,
            sfu,
            stop,
            http,
        })
    }

    /// Stops HTTP, then closes every session.
    pub async fn shutdown(self) {
        let _ = self.stop.send(());
        if let Err(e) = self.http.await {
            tracing::warn!("HTTP task ended abnormally: {e}");
        }
        self.sfu.shutdown().await;
    }
}
