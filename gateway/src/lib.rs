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

pub mod config;
pub mod ctl;
pub mod engine;
pub mod error;
pub mod http;
pub mod links;
pub mod logging;
pub mod memory;
pub mod sfu;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use vigil_control::bus::MemoryBus;
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
    /// The forwarding core, for diagnostics and tests.
    pub sfu: Sfu,
    /// The control plane.
    pub control: Control,
    /// How credentials were set up, to tell the operator.
    pub credentials: Credentials,
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
        /// configuration or lives only as long as the process.
        stored_in: Option<PathBuf>,
    },
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::None => f.write_str("None"),
            Credentials::AdminKey {
                generated,
                stored_in,
                ..
            } => f
                .debug_struct("AdminKey")
                .field("key", &"<redacted>")
                .field("generated", generated)
                .field("stored_in", stored_in)
                .finish(),
        }
    }
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

        let store: Arc<dyn Store> = match &config.data_dir {
            Some(dir) => {
                // Private: it holds the admin key and the signing secret.
                std::os::unix::fs::DirBuilderExt::mode(
                    std::fs::DirBuilder::new().recursive(true),
                    0o700,
                )
                .create(dir)?;
                Arc::new(RedbStore::open(&dir.join("vigil.redb")).map_err(other)?)
            }
            None => Arc::new(MemoryStore::default()),
        };
        let (auth, credentials) = auth_from(&config)?;

        // Event ids continue across restarts (a watcher resumes by id).
        let bus = Arc::new(MemoryBus::resuming(store.clone()).map_err(other)?);
        let (facts, inbox) = vigil_control::channel();
        let sfu = Sfu::start(&config, facts.clone())?;
        let control = Control::start(&facts, inbox, store, bus, Arc::new(sfu.clone()), auth)
            .map_err(other)?;

        let (stop, stopped) = watch::channel(false);
        let (draining, drain_started) = watch::channel(false);
        let until_stopped = |mut stopped: watch::Receiver<bool>| async move {
            // A dropped sender means the same as a sent `true`: stop.
            let _ = stopped.wait_for(|stop| *stop).await;
        };
        let state = Arc::new(http::AppState {
            sfu: sfu.clone(),
            control: control.clone(),
            grpc_web: vigil_control::grpc::web_service(control.clone(), stopped.clone()),
            draining: drain_started.clone(),
            negotiations: http::negotiation_gate(config.media_threads),
            config,
        });
        let http = tokio::spawn(http::serve(
            http_listener,
            state,
            until_stopped(stopped.clone()),
        ));
        memory::spawn_trimmer(stopped.clone());
        let grpc_control = control.clone();
        let grpc = tokio::spawn(async move {
            let serving = vigil_control::grpc::serve(
                grpc_listener,
                grpc_control,
                drain_started,
                until_stopped(stopped),
            );
            if let Err(e) = serving.await {
                tracing::error!("gRPC server failed: {e}");
            }
        });
        Ok(Vigil {
            http_addr,
            grpc_addr,
            sfu,
            control,
            credentials,
            draining,
            stop,
            http,
            grpc,
        })
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
        self.sfu.shutdown().await;
        // Facts sent before (the sessions just closed) are handled, and
        // their events published, before the control plane stops.
        self.control.shutdown().await;
        let _ = self.stop.send(true);
        for (name, task) in [("HTTP", self.http), ("gRPC", self.grpc)] {
            if let Err(e) = task.await {
                tracing::warn!("{name} task ended abnormally: {e}");
            }
        }
    }
}

/// Authentication from the configuration: explicit secrets, or the data
/// directory's (created on first start), or, without a data directory,
/// secrets that live as long as the process.
fn auth_from(config: &Config) -> std::io::Result<(Auth, Credentials)> {
    if config.insecure_no_auth {
        return Ok((Auth::Open, Credentials::None));
    }
    let (secrets, generated, stored_in) = match (&config.secrets, &config.data_dir) {
        (Some(secrets), _) => (secrets.clone(), false, None),
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
        },
    ))
}
