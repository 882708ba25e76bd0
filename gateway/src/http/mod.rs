//! WHIP/WHEP over HTTP/1.1 (hyper).
//!
//! Routes:
//!
//! | path | methods |
//! |---|---|
//! | `/whip/{room}/{stream}` | POST (publish), OPTIONS, GET, HEAD |
//! | `/whep/{room}/{stream}` | POST (play), OPTIONS, GET, HEAD |
//! | `/sessions/{id}` | PATCH (trickle, ICE restart), DELETE, OPTIONS, GET, HEAD |
//! | `/healthz` | GET: the process answers |
//! | `/readyz` | GET: 200, or 503 once shutdown has started |
//! | `/metrics` | GET: Prometheus metrics (unless `--metrics-listen` serves them elsewhere) |
//! | `/`, `/console/...`, `/join/{room}`, `/watch/{room}/{stream}`, `/assets/{file}` | GET, HEAD: the web console |
//! | `/console/config.json` | GET, HEAD: what the console needs to know (`publicUrl`) |
//! | `/ca.crt` | GET, HEAD: with `--tls-self-signed`, the local CA for devices to install |
//! | `/vigil.v1.*` (content type `application/grpc-web*`) | POST: the control API as gRPC-web |
//!
//! Every request runs in an `http` span and is counted by route, method
//! and status ([`crate::telemetry`]).
//!
//! Handlers parse and check the request, make one call into the SFU, and
//! turn the result into a response; errors become statuses in exactly one
//! place, [`response::error_response`].

mod console;
mod handlers;
pub mod metrics;
pub mod redirect;
pub mod response;
pub mod sdpfrag;

use std::convert::Infallible;
use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Either;
use hyper::body::Incoming;
use hyper::header;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::config::Config;
use crate::sfu::Sfu;
use response::Body;

/// How long open connections get to finish after shutdown is requested.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// What every handler can reach.
pub struct AppState {
    /// The forwarding core.
    pub sfu: Sfu,
    /// The cameras' pullers (on-demand cameras start at a WHEP request).
    pub cameras: crate::camera::Cameras,
    /// The relays (a stream published at another node is pulled on demand).
    pub relays: crate::relay::Relays,
    /// Admission (tokens, rooms, limits).
    pub control: vigil_control::Control,
    /// The control API as gRPC-web, for the console on this origin.
    pub grpc_web: vigil_control::grpc::WebService,
    /// Turns true when shutdown starts: no new sessions, not ready.
    pub draining: tokio::sync::watch::Receiver<bool>,
    /// Configuration.
    pub config: Config,
    /// Offers being answered at once (see [`handlers::NEGOTIATIONS_PER_CORE`]).
    pub negotiations: tokio::sync::Semaphore,
    /// Admission limits per client address, per token and in all.
    pub limiter: Arc<crate::admission::Limiter>,
    /// The self-signed CA (DER), served at `/ca.crt` for devices to trust.
    pub tls_ca: Option<Vec<u8>>,
    /// Metrics.
    pub telemetry: Arc<crate::telemetry::Telemetry>,
    /// The deployment this node belongs to (`--redis-url`), if any.
    pub cluster: Option<crate::cluster::Cluster>,
}

/// The gate that lets offers be answered a few at a time, in arrival order.
pub fn negotiation_gate(media_threads: usize) -> tokio::sync::Semaphore {
    tokio::sync::Semaphore::new(handlers::NEGOTIATIONS_PER_CORE * media_threads.max(1))
}

/// What the HTTP port answers with: our own responses, or gRPC-web's
/// (which streams, for the event feed).
type HttpBody = Either<Body, vigil_control::grpc::WebBody>;

/// Serves WHIP/WHEP on `listener` (over TLS when `tls` is given) until
/// `shutdown` resolves, then lets open requests finish (bounded by a drain
/// timeout).
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()>,
) {
    let graceful = GracefulShutdown::new();
    let header_timeout = state.config.http_header_timeout;
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
                // Over the per-address cap: closed at once, before TLS or HTTP.
                let Some(slot) = state.limiter.open_connection(peer.ip()) else {
                    tracing::debug!(%peer, "connection refused: too many from this address");
                    drop(stream);
                    continue;
                };
                let state = state.clone();
                let watcher = graceful.watcher();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let _slot = slot;
                    let client = peer.ip();
                    let ended = match tls {
                        None => serve_connection(TokioIo::new(stream), state, client, watcher).await,
                        // The handshake gets the header timeout too: a
                        // client that opens and stalls holds nothing long.
                        Some(acceptor) => match tokio::time::timeout(
                            header_timeout,
                            acceptor.accept(stream),
                        )
                        .await
                        {
                            Ok(Ok(stream)) => {
                                serve_connection(TokioIo::new(stream), state, client, watcher).await
                            }
                            Ok(Err(e)) => Err(format!("TLS handshake failed: {e}")),
                            Err(_) => Err("TLS handshake timed out".to_owned()),
                        },
                    };
                    if let Err(e) = ended {
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

/// Serves a small plain-HTTP/1.1 port (the HTTPS redirect, the metrics
/// port) until `shutdown` resolves: every request on a connection accepted
/// from `listener` gets `answer`'s response.
pub(crate) async fn serve_plain<F, Fut>(
    listener: TcpListener,
    header_timeout: Duration,
    shutdown: impl Future<Output = ()>,
    answer: F,
) where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(ok) => ok,
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => return,
        };
        let answer = answer.clone();
        let service = service_fn(move |req: Request<Incoming>| {
            let response = answer(req);
            async move { Ok::<_, Infallible>(response.await) }
        });
        let conn = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(header_timeout)
            .serve_connection(TokioIo::new(stream), service);
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
}

/// Serves HTTP/1.1 requests on one connection (plain TCP or TLS) until it
/// closes, or a graceful shutdown ends it.
async fn serve_connection<I>(
    io: TokioIo<I>,
    state: Arc<AppState>,
    client: IpAddr,
    watcher: hyper_util::server::graceful::Watcher,
) -> Result<(), String>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let header_timeout = state.config.http_header_timeout;
    let service = service_fn(move |req: Request<Incoming>| {
        let state = state.clone();
        // Boxed: hyper keeps room for one in-flight future in every
        // connection for as long as it stays open, and the handler's state
        // machine is tens of KB; a box holds it only while a request runs.
        Box::pin(async move { Ok::<_, Infallible>(handle(req, &state, client).await) })
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        // Slow heads (slowloris) and idle keep-alive connections alike:
        // hyper starts this timer whenever the connection waits for a
        // request head.
        .header_read_timeout(header_timeout)
        .serve_connection(io, service);
    watcher.watch(conn).await.map_err(|e| e.to_string())
}

/// Serves one request in its span, and counts it.
async fn handle(req: Request<Incoming>, state: &AppState, client: IpAddr) -> Response<HttpBody> {
    use tracing::Instrument as _;
    let started = std::time::Instant::now();
    let grpc_web = is_grpc_web(&req);
    let route = route_label(req.uri().path(), grpc_web);
    let method = req.method().clone();
    let span = tracing::info_span!(
        target: "vigil::http",
        "http",
        otel.name = %format_args!("{method} {route}"),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = %method,
        http.route = route,
        url.path = %req.uri().path(),
        client.address = %client,
        http.response.status_code = tracing::field::Empty,
    );
    crate::telemetry::spans::continue_trace(&span, req.headers());
    let response = dispatch(req, state, client, grpc_web)
        .instrument(span.clone())
        .await;
    let status = response.status().as_u16();
    span.record("http.response.status_code", i64::from(status));
    if status >= 500 {
        span.record("otel.status_code", "ERROR");
    }
    state
        .telemetry
        .instruments
        .http_request(route, method.as_str(), status, started.elapsed());
    response
}

/// The route a path belongs to, as a bounded label (never the room,
/// stream or session in it).
fn route_label(path: &str, grpc_web: bool) -> &'static str {
    if grpc_web {
        return "/vigil.v1.*";
    }
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match segments.as_slice() {
        ["whip", _, _] => "/whip/{room}/{stream}",
        ["whep", _, _] => "/whep/{room}/{stream}",
        ["sessions", _] => "/sessions/{id}",
        ["healthz"] => "/healthz",
        ["readyz"] => "/readyz",
        ["metrics"] => "/metrics",
        [""] | ["console", ..] | ["join", _] | ["watch", _, _] | ["assets", _] => "console",
        ["ca.crt"] => "/ca.crt",
        _ => "other",
    }
}

async fn dispatch(
    req: Request<Incoming>,
    state: &AppState,
    client: IpAddr,
    grpc_web: bool,
) -> Response<HttpBody> {
    if grpc_web {
        use tower::Service;
        let mut grpc_web = state.grpc_web.clone();
        let ready =
            std::future::poll_fn(|cx| Service::<Request<Incoming>>::poll_ready(&mut grpc_web, cx))
                .await;
        let response = match ready {
            Ok(()) => grpc_web.call(req).await,
            Err(never) => Err(never),
        };
        return match response {
            Ok(response) => response.map(Either::Right),
            Err(never) => match never {},
        };
    }
    route(req, state, client).await.map(Either::Left)
}

/// A gRPC-web call to one of our services (`/vigil.v1.Service/Method`).
fn is_grpc_web(req: &Request<Incoming>) -> bool {
    req.uri().path().starts_with("/vigil.v1.")
        && req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/grpc-web"))
}

async fn route(req: Request<Incoming>, state: &AppState, client: IpAddr) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let method = req.method();
    let draining = *state.draining.borrow();
    match segments.as_slice() {
        // New sessions are refused while draining; the ones there are get
        // closed, and DELETE, PATCH and GET keep working until then.
        ["whip" | "whep", _, _] if draining && method == hyper::Method::POST => {
            response::error_response(&crate::error::Error::ShuttingDown, "POST, OPTIONS")
        }
        ["whip", room, stream] => {
            handlers::endpoint(req, state, client, handlers::Role::Publish, room, stream).await
        }
        ["whep", room, stream] => {
            handlers::endpoint(req, state, client, handlers::Role::Play, room, stream).await
        }
        ["sessions", id] => handlers::session(req, state, id).await,
        ["healthz"] => response::empty(hyper::StatusCode::OK, "GET"),
        ["readyz"] if draining => {
            response::error_response(&crate::error::Error::ShuttingDown, "GET")
        }
        ["readyz"] => response::empty(hyper::StatusCode::OK, "GET"),
        ["metrics"] if state.config.metrics_listen.is_none() => {
            metrics::respond(method, &state.telemetry).await
        }
        [""] => console::redirect_to_console(),
        ["console", "config.json"] => console::config(method, state.config.public_url.as_ref()),
        ["console", ..] | ["join", _] => console::page(method, console::Framing::Deny),
        ["watch", _, _] => console::page(method, console::Framing::Allow),
        ["assets", name] => console::asset(method, name),
        ["ca.crt"] => match &state.tls_ca {
            Some(der) => console::ca_certificate(method, der),
            None => response::error_response(&crate::error::Error::RouteNotFound, "GET"),
        },
        _ => response::error_response(&crate::error::Error::RouteNotFound, "GET"),
    }
}
