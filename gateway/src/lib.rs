//! Vigil's WHIP/WHEP gateway and selective forwarding core, and the binary
//! that wires them to the control plane.
//!
//! Who owns what:
//! - [`http`] owns nothing: handlers ask the control plane whether a
//!   request may start a session (tokens, rooms, limits), make one call on
//!   the [`sfu::Sfu`] handle, and map the result (errors in one place).
//! - [`sfu::registry`] is the single owner of media session state; it is
//!   changed only by messages to its task, and reports facts (sessions
//!   started and ended, tracks) to the control plane.
//! - `vigil_control` owns rooms, participants, events and alarms; it asks
//!   the SFU to hang up, mute or sample through the `MediaPlane` trait, which
//!   the SFU implements. Control never imports the gateway: [`Vigil::start`]
//!   wires them.
//!
//! Shutdown sequence ([`Vigil::shutdown`], on SIGTERM or SIGINT): drain
//! first (new WHIP/WHEP sessions get 503 with `Retry-After`, `/readyz` and
//! gRPC health say not serving), close every session as DELETE does (a
//! DTLS `close_notify` to each peer, `left` events to watchers), let the
//! control plane deliver those events, then stop the HTTP and gRPC servers
//! (Watch streams end after their last event). docs/operations.md.
//!
//! Panic policy: a panic is a bug; no client input can cause one.

pub mod admission;
pub mod camera;
pub mod cluster;
pub mod config;
pub mod ctl;
pub mod engine;
pub mod error;
pub mod http;
pub mod links;
pub mod logging;
pub mod memory;
pub mod relay;
pub mod sfu;
pub mod telemetry;
pub mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use vigil_control::bus::{EventBus, MemoryBus};
use vigil_control::store::{
    MemoryStore, RedbStore, Secrets, Store, admin_key_path, load_or_create_secrets,
};
use vigil_control::token::TokenSigner;
use vigil_control::{Auth, Control};

pub use config::Config;
pub use sfu::Sfu;

/// A running Vigil: gateway, SFU and control plane.
pub struct Vigil {
    /// The bound HTTP (WHIP/WHEP) address (useful with port 0).
    pub http_addr: SocketAddr,
    /// The bound gRPC address.
    pub grpc_addr: SocketAddr,
    /// The bound HTTP→HTTPS redirect address (`--http-redirect-listen`).
    pub redirect_addr: Option<SocketAddr>,
    /// The bound `/metrics` address (`--metrics-listen`).
    pub metrics_addr: Option<SocketAddr>,
    /// Metrics (Prometheus, OTLP).
    pub telemetry: Arc<telemetry::Telemetry>,
    /// The forwarding core, for diagnostics and tests.
    pub sfu: Sfu,
    /// The cameras' pullers.
    pub cameras: camera::Cameras,
    /// The relays of streams published at other nodes.
    pub relays: relay::Relays,
    /// The control plane.
    pub control: Control,
    /// How credentials were set up, to tell the operator.
    pub credentials: Credentials,
    /// TLS on the HTTP and gRPC ports, when configured.
    pub tls: Option<TlsSetup>,
    draining: watch::Sender<bool>,
    stop: watch::Sender<bool>,
    http: JoinHandle<()>,
    grpc: JoinHandle<()>,
}

/// What the operator needs to know about credentials at start.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    /// `--insecure-no-auth`.
    None,
    /// The admin key; `generated` when it was created at this start.
    AdminKey {
        /// The key (sent as `authorization: Bearer <key>`).
        key: String,
        /// Created now (first start) rather than loaded.
        generated: bool,
        /// The file it is kept in; `None` when it came with the
        /// configuration, lives only as long as the process, or is the
        /// deployment's (`shared`).
        stored_in: Option<PathBuf>,
        /// Kept in the deployment's Redis (`vigil:secrets`), the same at
        /// every node.
        shared: bool,
    },
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::None => f.write_str("None"),
            Credentials::AdminKey {
                generated,
                stored_in,
                shared,
                ..
            } => f
                .debug_struct("AdminKey")
                .field("key", &"<redacted>")
                .field("generated", generated)
                .field("stored_in", stored_in)
                .field("shared", shared)
                .finish(),
        }
    }
}

/// TLS as set up at start: the certificate both ports serve, and, with
/// `--tls-self-signed`, what the operator needs to trust it.
#[derive(Debug, Clone)]
pub struct TlsSetup {
    /// The certificate served (reloadable).
    pub certificates: Arc<tls::Certificates>,
    /// The generated CA and certificate, with `--tls-self-signed`.
    pub self_signed: Option<tls::self_signed::SelfSigned>,
}

fn other(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

impl Vigil {
    /// Binds `config.http_listen` and `config.grpc_listen` and starts serving.
    pub async fn start(config: Config) -> std::io::Result<Vigil> {
        let http_listener = TcpListener::bind(config.http_listen).await?;
        let grpc_listener = TcpListener::bind(config.grpc_listen).await?;
        let http_addr = http_listener.local_addr()?;
        let grpc_addr = grpc_listener.local_addr()?;
        let (redirect_listener, redirect_addr) = bind_optional(config.http_redirect_listen).await?;
        let (metrics_listener, metrics_addr) = bind_optional(config.metrics_listen).await?;

        // Several nodes (--redis-url): the state they share lives in Redis.
        let shared = match &config.cluster {
            Some(cluster) => {
                let shared_secrets = !config.insecure_no_auth && config.secrets.is_none();
                Some(
                    cluster::state::connect(cluster, shared_secrets)
                        .await
                        .map_err(other)?,
                )
            }
            None => None,
        };
        let store: Arc<dyn Store> = match (&shared, &config.data_dir) {
            (Some(shared), _) => shared.store.clone(),
            (None, Some(dir)) => {
                // Private: it holds the admin key and the signing secret.
                std::os::unix::fs::DirBuilderExt::mode(
                    std::fs::DirBuilder::new().recursive(true),
                    0o700,
                )
                .create(dir)?;
                Arc::new(RedbStore::open(&dir.join("vigil.redb")).map_err(other)?)
            }
            (None, None) => Arc::new(MemoryStore::default()),
        };
        let (auth, credentials) = auth_from(&config, shared.as_ref())?;
        let tls_setup = tls_from(&config)?;
        let tls = tls_setup
            .as_ref()
            .map(|setup| tls::Tls::new(setup.certificates.clone()));

        // Event ids continue across restarts (a watcher resumes by id).
        let bus: Arc<dyn EventBus> = match &shared {
            Some(shared) => shared.bus.clone(),
            None => Arc::new(MemoryBus::resuming(store.clone()).map_err(other)?),
        };
        let (facts, inbox) = vigil_control::channel();
        // A deployment's directory hears of every session this node hosts.
        let joining = config
            .cluster
            .as_ref()
            .map(cluster::Joining::new)
            .transpose()?;
        let facts = match &joining {
            Some(joining) => facts.observed_by(joining.directory()),
            None => facts,
        };
        let sfu = Sfu::start(&config, facts.clone())?;
        let cameras = camera::Cameras::start(sfu.clone(), facts.clone());
        if let Some(joining) = &joining {
            // Each camera is pulled by one node of the deployment; told
            // before the control plane asks for the stored cameras.
            cameras.place_by(joining.node_ids(), joining.node_id().to_owned());
        }
        let plane = sfu::media_plane::Plane {
            sfu: sfu.clone(),
            cameras: cameras.clone(),
        };
        let control = Control::start(&facts, inbox, store, bus.clone(), Arc::new(plane), auth)
            .map_err(other)?;
        if let Some(shared) = shared {
            shared.listen(&control);
        }
        let telemetry =
            telemetry::Telemetry::start(&sfu, config.otlp_endpoint.as_deref()).map_err(other)?;
        telemetry::count_alarms(&telemetry, &control);
        let observe = vigil_control::grpc::observe::ObserveLayer::new(
            Some(telemetry.clone() as Arc<dyn vigil_control::grpc::observe::CallMetrics>),
            Some(telemetry::spans::continue_trace),
        );

        let (stop, stopped) = watch::channel(false);
        let (draining, drain_started) = watch::channel(false);
        let cluster = joining.map(|joining| {
            let scheme = if tls.is_some() { "https" } else { "http" };
            let url = config
                .cluster
                .as_ref()
                .and_then(|c| c.node_url.clone())
                .unwrap_or_else(|| format!("{scheme}://{http_addr}"));
            joining.join(url, sfu.clone(), &control, stopped.clone())
        });
        let relays = match &cluster {
            // Streams published at other nodes are found in the directory.
            Some(cluster) => relay::Relays::start_with(
                sfu.clone(),
                &config,
                Arc::new(cluster::origins::ClusterOrigins::new(
                    cluster.clone(),
                    control.clone(),
                )),
            ),
            None => relay::Relays::start(sfu.clone(), &config),
        };
        if let Some(cluster) = &cluster {
            let (relays, mut lost) = (relays.clone(), cluster.membership.lost());
            tokio::spawn(async move {
                loop {
                    match lost.recv().await {
                        Ok(node) => relays.origin_lost(&node),
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                    }
                }
            });
        }
        let until_stopped = |mut stopped: watch::Receiver<bool>| async move {
            // A dropped sender means the same as a sent `true`: stop.
            let _ = stopped.wait_for(|stop| *stop).await;
        };
        let state = Arc::new(http::AppState {
            sfu: sfu.clone(),
            cameras: cameras.clone(),
            relays: relays.clone(),
            control: control.clone(),
            grpc_web: vigil_control::grpc::web_service(
                control.clone(),
                stopped.clone(),
                observe.clone(),
            ),
            telemetry: telemetry.clone(),
            draining: drain_started.clone(),
            negotiations: http::negotiation_gate(config.media_threads),
            limiter: admission::Limiter::new(config.limits.clone(), config.connect_timeout),
            tls_ca: tls_setup
                .as_ref()
                .and_then(|setup| setup.self_signed.as_ref())
                .map(|made| made.ca_der.clone()),
            config,
            cluster,
        });
        let handshake_timeout = state.config.http_header_timeout;
        if let Some(listener) = redirect_listener {
            let target = http::redirect::Target {
                public_url: state.config.public_url.clone(),
                https_port: http_addr.port(),
            };
            tokio::spawn(http::redirect::serve(
                listener,
                target,
                handshake_timeout,
                until_stopped(stopped.clone()),
            ));
        }
        let http = tokio::spawn(http::serve(
            http_listener,
            tls.as_ref().map(|tls| tls.http.clone()),
            state,
            until_stopped(stopped.clone()),
        ));
        memory::spawn_trimmer(stopped.clone());
        if let Some(setup) = &tls_setup {
            tls::watch_files(setup.certificates.clone(), stopped.clone());
        }
        if let Some(listener) = metrics_listener {
            tokio::spawn(http::metrics::serve(
                listener,
                telemetry.clone(),
                until_stopped(stopped.clone()),
            ));
        }
        let grpc_control = control.clone();
        let grpc = tokio::spawn(async move {
            let shutdown = until_stopped(stopped);
            let serving = match tls {
                None => {
                    let incoming = tokio_stream::wrappers::TcpListenerStream::new(grpc_listener);
                    vigil_control::grpc::serve(
                        incoming,
                        grpc_control,
                        observe,
                        drain_started,
                        shutdown,
                    )
                    .await
                }
                Some(tls) => {
                    let incoming = tls::incoming(grpc_listener, tls.grpc, handshake_timeout);
                    vigil_control::grpc::serve(
                        incoming,
                        grpc_control,
                        observe,
                        drain_started,
                        shutdown,
                    )
                    .await
                }
            };
            if let Err(e) = serving {
                tracing::error!("gRPC server failed: {e}");
            }
        });
        Ok(Vigil {
            http_addr,
            grpc_addr,
            redirect_addr,
            metrics_addr,
            telemetry,
            sfu,
            cameras,
            relays,
            control,
            credentials,
            tls: tls_setup,
            draining,
            stop,
            http,
            grpc,
        })
    }

    /// Reads the TLS certificate and key again (SIGHUP); the next
    /// handshake on either port presents them. `None` without TLS; on
    /// error the current certificate stays.
    pub fn reload_tls(&self) -> Option<Result<(), tls::TlsError>> {
        self.tls.as_ref().map(|setup| setup.certificates.reload())
    }

    /// Starts draining without stopping: new sessions are refused (503,
    /// `Retry-After`), `/readyz` and gRPC health say not serving, and the
    /// sessions there are go on. [`Vigil::shutdown`] begins with it.
    pub fn start_draining(&self) {
        let _ = self.draining.send(true);
    }

    /// Drains and stops (the sequence in the crate's documentation). The
    /// binary bounds it with `--drain-secs`.
    pub async fn shutdown(self) {
        self.start_draining();
        // The last export (OTLP) reports the sessions as they were, and
        // as they closed if the owner still answers.
        self.telemetry.sample().await;
        // Pullers and relays first: a camera's or a relayed session would
        // otherwise be published again as soon as it closed.
        self.relays.shutdown().await;
        self.cameras.shutdown().await;
        self.sfu.shutdown().await;
        self.telemetry.sample().await;
        // Facts sent before (the sessions just closed) are handled, and
        // their events published, before the control plane stops.
        self.control.shutdown().await;
        let _ = self.stop.send(true);
        for (name, task) in [("HTTP", self.http), ("gRPC", self.grpc)] {
            if let Err(e) = task.await {
                tracing::warn!("{name} task ended abnormally: {e}");
            }
        }
        // Pushes the last metrics to the OTLP endpoint, if any (blocking).
        let telemetry = self.telemetry;
        let _ = tokio::task::spawn_blocking(move || telemetry.shutdown()).await;
    }
}

/// Binds `addr` when one is given, and says the address it got (port 0
/// picks one).
async fn bind_optional(
    addr: Option<SocketAddr>,
) -> std::io::Result<(Option<TcpListener>, Option<SocketAddr>)> {
    let Some(addr) = addr else {
        return Ok((None, None));
    };
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    Ok((Some(listener), Some(bound)))
}

/// The certificate to serve: the operator's files, or the self-signed
/// one made (or kept) in the data directory for this machine's names.
fn tls_from(config: &Config) -> std::io::Result<Option<TlsSetup>> {
    let (cert, key, self_signed) = match &config.tls {
        None => return Ok(None),
        Some(tls::TlsSource::Files { cert, key }) => (cert.clone(), key.clone(), None),
        Some(tls::TlsSource::SelfSigned { names }) => {
            let dir = config.data_dir.as_ref().ok_or_else(|| {
                other("--tls-self-signed keeps its certificate in the data directory, and there is none")
            })?;
            let names = tls::self_signed::names(
                config.http_listen.ip(),
                links::machine_name().as_deref(),
                config.public_url.as_ref().map(|url| url.host()),
                &config.advertise_ips,
                names,
            );
            let made = tls::self_signed::ensure(dir, &names).map_err(other)?;
            (made.cert.clone(), made.key.clone(), Some(made))
        }
    };
    let certificates = tls::Certificates::load(&cert, &key).map_err(other)?;
    Ok(Some(TlsSetup {
        certificates: Arc::new(certificates),
        self_signed,
    }))
}

/// Authentication from the configuration: explicit secrets, or the
/// deployment's (in Redis), or the data directory's (created on first
/// start), or, without a data directory, secrets that live as long as the
/// process.
fn auth_from(
    config: &Config,
    shared: Option<&cluster::state::Shared>,
) -> std::io::Result<(Auth, Credentials)> {
    if config.insecure_no_auth {
        return Ok((Auth::Open, Credentials::None));
    }
    let from_redis = shared.and_then(|shared| shared.secrets.clone());
    let (secrets, generated, stored_in) = match (&config.secrets, &config.data_dir) {
        (Some(secrets), _) => (secrets.clone(), false, None),
        (None, _) if let Some((secrets, created)) = from_redis.clone() => (secrets, created, None),
        (None, Some(dir)) => {
            let (secrets, created) = load_or_create_secrets(dir).map_err(other)?;
            (secrets, created.admin_key, Some(admin_key_path(dir)))
        }
        (None, None) => (
            Secrets {
                admin_key: (0..32)
                    .map(|_| format!("{:02x}", rand::random::<u8>()))
                    .collect(),
                signing_secret: rand::random::<[u8; 32]>().to_vec(),
            },
            true,
            None,
        ),
    };
    let auth = Auth::Tokens {
        signer: Arc::new(TokenSigner::new(&secrets.signing_secret)),
        admin_key: secrets.admin_key.clone(),
    };
    Ok((
        auth,
        Credentials::AdminKey {
            key: secrets.admin_key,
            generated,
            stored_in,
            shared: from_redis.is_some(),
        },
    ))
}
