//! Relays: this node plays a stream published at another node
//! (docs/cluster-relay.md).
//!
//! A WHEP viewer here of a stream nobody publishes here asks [`Relays`]
//! first ([`Relays::demand`], from the WHEP handler before its
//! negotiation turn). If [`Origins::locate`] names a node that publishes
//! it, a relay task ([`pull`]) pulls the stream from there once, as a WHEP
//! client of that node ([`client`]), and publishes it here as a *local
//! publisher* ([`crate::sfu::Sfu::publish_local`]), as a camera's puller
//! does; every viewer here then plays it through the engine unchanged
//! (keyframe cache, fast start, NACK history). One relay per stream per
//! node, shared by all its viewers here; it ends [`LINGER`] after the
//! last of them left. The relay's session is quiet: the control plane
//! here never sees it (the origin reports the real publisher).
//!
//! [`Relays`] is the handle to the task that owns the relay tasks, shaped
//! like [`crate::camera::Cameras`].

pub mod client;
pub mod pull;
pub mod runtime;

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use vigil_control::{RoomName, StreamName};

use crate::config::Config;
use crate::sfu::Sfu;

/// How long a WHEP request for a relayed stream waits for the relay to
/// publish it here.
pub const DEMAND_WAIT: Duration = Duration::from_secs(10);
/// How long a relay is kept after its last viewer here left (a viewer
/// that reloads its page finds it still running).
pub const LINGER: Duration = Duration::from_secs(5);
/// A relay that receives no RTP for this long treats its origin as gone.
pub const SILENCE: Duration = Duration::from_secs(4);
/// The longest wait between attempts to locate a lost stream again.
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Keyframe requests sent to the origin at most this often (the engine
/// coalesces its PLIs to a publisher the same way).
pub const MIN_PLI_INTERVAL: Duration = Duration::from_millis(500);

/// The node a stream is pulled from.
#[derive(Clone, PartialEq, Eq)]
pub struct Origin {
    /// Its name in the deployment (logs).
    pub node: String,
    /// Its HTTP base, e.g. `http://127.0.0.1:18081`; the relay POSTs to
    /// `{base_url}/whep/{room}/{stream}`.
    pub base_url: String,
    /// The bearer of the WHEP POST (`None` in open mode).
    pub bearer: Option<String>,
}

impl fmt::Debug for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Origin")
            .field("node", &self.node)
            .field("base_url", &self.base_url)
            .field("bearer", &self.bearer.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Where a stream that is not published on this node is published.
#[async_trait::async_trait]
pub trait Origins: Send + Sync + 'static {
    /// The node to pull `room`/`stream` from, if any node publishes it.
    /// It may be a node that relays it itself (a tree of relays).
    async fn locate(&self, room: &RoomName, stream: &StreamName) -> Option<Origin>;

    /// This node started (`true`) or stopped relaying `room`/`stream`, so
    /// that others may pull it from here (a tree). Returns at once.
    fn relaying(&self, room: &RoomName, stream: &StreamName, on: bool) {
        let _ = (room, stream, on);
    }
}

/// A single node: nothing is published elsewhere.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoOrigins;

#[async_trait::async_trait]
impl Origins for NoOrigins {
    async fn locate(&self, _: &RoomName, _: &StreamName) -> Option<Origin> {
        None
    }
}

/// Every stream comes from one node (tests, and a fixed edge in front of
/// one origin); [`StaticOrigins::set`] moves it.
#[derive(Debug, Default)]
pub struct StaticOrigins {
    origin: std::sync::Mutex<Option<Origin>>,
}

impl StaticOrigins {
    /// Every stream from `origin`.
    pub fn new(origin: Origin) -> Self {
        StaticOrigins {
            origin: std::sync::Mutex::new(Some(origin)),
        }
    }

    /// From now on every stream from `origin` (`None`: from nowhere).
    pub fn set(&self, origin: Option<Origin>) {
        // A poisoned lock only means a panic elsewhere mid-assignment of
        // an Option: the value is whole either way.
        *self.origin.lock().unwrap_or_else(|p| p.into_inner()) = origin;
    }
}

#[async_trait::async_trait]
impl Origins for StaticOrigins {
    async fn locate(&self, _: &RoomName, _: &StreamName) -> Option<Origin> {
        self.origin
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// The [`Origins`] a node uses, as a configuration value
/// ([`Config::origins`]): [`NoOrigins`] by default.
#[derive(Clone)]
pub struct SharedOrigins(pub Arc<dyn Origins>);

impl Default for SharedOrigins {
    fn default() -> Self {
        SharedOrigins(Arc::new(NoOrigins))
    }
}

impl fmt::Debug for SharedOrigins {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SharedOrigins(..)")
    }
}

enum Msg {
    Demand {
        room: RoomName,
        stream: StreamName,
        origin: Origin,
        reply: oneshot::Sender<Option<oneshot::Receiver<()>>>,
    },
    /// A relay task ended on its own (nobody watched, or shutdown).
    Ended {
        key: (RoomName, StreamName),
        id: u64,
    },
    OriginLost(String),
    Shutdown(oneshot::Sender<()>),
}

struct Running {
    id: u64,
    commands: mpsc::UnboundedSender<pull::Command>,
    task: JoinHandle<()>,
}

/// Handle to the relays' owner task.
#[derive(Clone)]
pub struct Relays {
    tx: mpsc::UnboundedSender<Msg>,
    sfu: Sfu,
    origins: Arc<dyn Origins>,
}

impl Relays {
    /// Starts the owner task: relays publish through `sfu`, find origins
    /// with `config.origins`, and gather ICE candidates on the cluster's
    /// `relay_ip` (127.0.0.1 without a cluster).
    pub fn start(sfu: Sfu, config: &Config) -> Relays {
        Self::start_with(sfu, config, config.origins.0.clone())
    }

    /// [`Relays::start`] with `origins` instead of `config.origins` (a
    /// deployment's directory).
    pub fn start_with(sfu: Sfu, config: &Config, origins: Arc<dyn Origins>) -> Relays {
        let relay_ip = config
            .cluster
            .as_ref()
            .map_or(IpAddr::V4(Ipv4Addr::LOCALHOST), |c| c.relay_ip);
        let (tx, rx) = mpsc::unbounded_channel();
        let context = pull::Context {
            sfu: sfu.clone(),
            origins: origins.clone(),
            relay_ip,
        };
        tokio::spawn(run(context, tx.clone(), rx));
        Relays { tx, sfu, origins }
    }

    /// Before a WHEP request for `room`/`stream`: if nobody publishes it
    /// here and another node does, has it relayed and waits until it is
    /// published here (or failed, or [`DEMAND_WAIT`] passed). Returns at
    /// once for a stream published here (its relay's included), or
    /// published nowhere.
    pub async fn demand(&self, room: &RoomName, stream: &StreamName) {
        if self.sfu.is_published(room, stream).await {
            return;
        }
        let Some(origin) = self.origins.locate(room, stream).await else {
            return;
        };
        let (reply, answer) = oneshot::channel();
        let asked = self.tx.send(Msg::Demand {
            room: room.clone(),
            stream: stream.clone(),
            origin,
            reply,
        });
        if asked.is_err() {
            return; // shutting down
        }
        if let Ok(Some(published)) = answer.await {
            // Published, failed, or still coming: the viewer's request
            // goes on either way (and is answered 404 if not published).
            let _ = tokio::time::timeout(DEMAND_WAIT, published).await;
        }
    }

    /// The deployment found node `node` dead: relays pulling from it look
    /// their streams up again now rather than after [`SILENCE`].
    pub fn origin_lost(&self, node: &str) {
        let _stopped = self.tx.send(Msg::OriginLost(node.to_owned()));
    }

    /// Stops every relay (their sessions here end, their sessions at the
    /// origins are deleted) and waits for them.
    pub async fn shutdown(&self) {
        let (reply, done) = oneshot::channel();
        if self.tx.send(Msg::Shutdown(reply)).is_ok() {
            let _ = done.await;
        }
    }
}

async fn run(
    context: pull::Context,
    me: mpsc::UnboundedSender<Msg>,
    mut inbox: mpsc::UnboundedReceiver<Msg>,
) {
    let mut running: HashMap<(RoomName, StreamName), Running> = HashMap::new();
    let mut next_id = 0u64;
    while let Some(msg) = inbox.recv().await {
        match msg {
            Msg::Demand {
                room,
                stream,
                origin,
                reply,
            } => {
                let key = (room, stream);
                let (tx, rx) = oneshot::channel();
                // A relay that is ending has dropped its commands: a new
                // one replaces it.
                let joined = running
                    .get(&key)
                    .is_some_and(|r| r.commands.send(pull::Command::Demand(tx)).is_ok());
                if joined {
                    let _ = reply.send(Some(rx));
                    continue;
                }
                let (tx, waiter) = oneshot::channel();
                let (commands, command_rx) = mpsc::unbounded_channel();
                // Sent before the task starts: it is the first thing it reads.
                let _ = commands.send(pull::Command::Demand(tx));
                next_id += 1;
                let id = next_id;
                let ended = me.clone();
                let task_key = key.clone();
                let context = context.clone();
                let task = tokio::spawn(async move {
                    pull::run(context, task_key.clone(), origin, command_rx).await;
                    // The owner may have stopped (shutdown): nobody to tell.
                    let _ = ended.send(Msg::Ended { key: task_key, id });
                });
                tracing::info!(room = %key.0, stream = %key.1, "relay started");
                if let Some(old) = running.insert(key, Running { id, commands, task }) {
                    old.task.abort();
                }
                let _ = reply.send(Some(waiter));
            }
            Msg::Ended { key, id } => {
                if running.get(&key).is_some_and(|r| r.id == id) {
                    running.remove(&key);
                }
            }
            Msg::OriginLost(node) => {
                for relay in running.values() {
                    // A relay that is ending has dropped its commands.
                    let _ = relay.commands.send(pull::Command::OriginLost(node.clone()));
                }
            }
            Msg::Shutdown(reply) => {
                let stopping: Vec<Running> = running.drain().map(|(_, r)| r).collect();
                for relay in stopping {
                    // Its commands closing tells it to stop; it deletes its
                    // session at the origin on the way out (bounded).
                    drop(relay.commands);
                    let mut task = relay.task;
                    if tokio::time::timeout(Duration::from_secs(3), &mut task)
                        .await
                        .is_err()
                    {
                        task.abort();
                    }
                }
                let _ = reply.send(());
                return;
            }
        }
    }
}
