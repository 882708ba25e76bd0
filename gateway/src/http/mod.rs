//! WHIP/WHEP over HTTP/1.1 (hyper).
//!
//! Routes:
//!
//! | path | methods |
//! |---|---|
//! | `/whip/{room}/{stream}` | POST (publish), OPTIONS, GET, HEAD |
//! | `/whep/{room}/{stream}` | POST (play), OPTIONS, GET, HEAD |
//! | `/sessions/{id}` | PATCH (trickle, ICE restart), DELETE, OPTIONS, GET, HEAD |
//! | `/healthz` | GET |
//!
//! Handlers parse and check the request, make one call into the SFU, and
//! turn the result into a response; errors become statuses in exactly one
//! place, [`response::error_response`].

mod handlers;
pub mod response;
pub mod sdpfrag;

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use crate::config::Config;
use crate::sfu::Sfu;
use response::Body;

/// How long open connections get to finish after shutdown is requested.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// What every handler can reach.
pub struct AppState {
    /// The forwarding core.
    pub sfu: Sfu,
    /// Admission (tokens, rooms, limits).
    pub control: vigil_control::Control,
    /// Configuration.
    pub config: Config,
}

/// Serves WHIP/WHEP on `listener` until `shutdown` resolves, then lets open
/// requests finish (bounded by a drain timeout).
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()>,
) {
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(ok) => ok,
                    Err(e) => {
                        // Out of file descriptors and the like: back off, keep serving.
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let state = state.clone();
                let service = service_fn(move |req: Request<Incoming>| {
                    let state = state.clone();
                    async move { Ok::<_, Infallible>(route(req, &state).await) }
                });
                let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(%peer, "connection ended: {e}");
                    }
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("HTTP connections still open after {DRAIN_TIMEOUT:?}; dropping them");
    }
}

async fn route(req: Request<Incoming>, state: &AppState) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match segments.as_slice() {
        ["whip", room, stream] => {
            handlers::endpoint(req, state, handlers::Role::Publish, room, stream).await
        }
        ["whep", room, stream] => {
            handlers::endpoint(req, state, handlers::Role::Play, room, stream).await
        }
        ["sessions", id] => handlers::session(req, state, id).await,
        ["healthz"] => response::empty(hyper::StatusCode::OK, "GET"),
        _ => response::error_response(&crate::error::Error::RouteNotFound, "GET"),
    }
}
