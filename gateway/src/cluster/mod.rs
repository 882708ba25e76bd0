//! Several nodes, one deployment (issue 17; docs/cluster.md).
//!
//! Nodes started with the same `--redis-url` share, through Redis:
//! - the control plane's durable state ([`vigil_control::store::Store`]:
//!   rooms with their bans and token generations, issued tokens, alarms,
//!   cameras) and the secrets that sign tokens, so any node admits any
//!   token and answers for any room;
//! - the event feed ([`vigil_control::bus::EventBus`]): one Redis stream,
//!   ids numbered by Redis, so they increase across the deployment and a
//!   watcher resumes by id at any node;
//! - the node registry (heartbeats with a TTL) and the stream directory
//!   (which node publishes which stream), from which an edge finds the
//!   origin it relays a stream from;
//! - commands (hang up, mute, close a room, calls) as pub/sub messages that
//!   every node carries out on the sessions it hosts.
//!
//! Media never goes through Redis: a node playing a stream published
//! elsewhere pulls it once as a WHEP client of the origin (`crate::relay`).
//! Every key and channel is named in [`keys`].

pub mod bus;
pub mod changes;
pub mod commands;
pub mod directory;
pub mod keys;
pub mod link;
pub mod membership;
pub mod origins;
pub mod secrets;
pub mod state;
pub mod store;

use std::sync::Arc;

use tokio::sync::watch;
use vigil_control::{Control, RoomName, StreamName};

use crate::config::ClusterConfig;
use crate::sfu::Sfu;
use commands::Commands;
use directory::Directory;
use link::Link;
use membership::{Membership, NodeInfo};

/// A relay of node `x` plays at other nodes as `node-x`.
pub const RELAY_PREFIX: &str = "node-";

/// A node about to join: its Redis link and its session directory, made
/// before the forwarding core (which reports sessions to the directory).
pub struct Joining {
    config: ClusterConfig,
    link: Arc<Link>,
    directory: Arc<Directory>,
    ids: watch::Sender<Vec<String>>,
}

impl Joining {
    /// Opens the link (nothing is connected until first used).
    pub fn new(config: &ClusterConfig) -> std::io::Result<Joining> {
        let link = Arc::new(
            Link::new(&config.redis_url)
                .map_err(|e| std::io::Error::other(format!("--redis-url: {e}")))?,
        );
        let directory = Directory::start(link.clone(), config.node_id.clone());
        Ok(Joining {
            config: config.clone(),
            link,
            directory,
            ids: watch::channel(Vec::new()).0,
        })
    }

    /// The live nodes' ids as they will be known once joined (none until
    /// the first heartbeat is read).
    pub fn node_ids(&self) -> watch::Receiver<Vec<String>> {
        self.ids.subscribe()
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.config.node_id
    }

    /// The directory, to observe the control plane's facts.
    pub fn directory(&self) -> Arc<Directory> {
        self.directory.clone()
    }

    /// Joins: heartbeats with `url` as this node's HTTP base, and takes the
    /// others' commands for `control` (whose peers it becomes).
    pub fn join(
        self,
        url: String,
        sfu: Sfu,
        control: &Control,
        stopped: watch::Receiver<bool>,
    ) -> Cluster {
        let me = NodeInfo {
            id: self.config.node_id.clone(),
            url,
            sessions: 0,
            capacity: self.config.capacity as u64,
        };
        let membership = Membership::start(
            self.link.clone(),
            me,
            sfu,
            control.clone(),
            self.directory.clone(),
            self.ids,
            stopped.clone(),
        );
        let commands = Commands::start(
            self.link.clone(),
            self.directory.clone(),
            membership.clone(),
            control.clone(),
            stopped,
        );
        control.set_peers(commands.clone());
        tracing::info!(node = %self.config.node_id, redis = %self.config.redis_url, "joined the deployment");
        Cluster {
            config: self.config,
            membership,
            directory: self.directory,
            commands,
        }
    }
}

/// Where a new session goes ([`Cluster::placement`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// This node has room.
    Here,
    /// This node is full; that one has room.
    Elsewhere(NodeInfo),
    /// Every node is at its capacity.
    Full,
}

/// This node's membership of a deployment.
#[derive(Clone)]
pub struct Cluster {
    config: ClusterConfig,
    /// The live nodes.
    pub membership: Membership,
    /// Who hosts what.
    pub directory: Arc<Directory>,
    /// Commands to the other nodes.
    pub commands: Arc<Commands>,
}

impl Cluster {
    /// This node's settings.
    pub fn config(&self) -> &ClusterConfig {
        &self.config
    }

    /// Where a new session goes when this node hosts `sessions`: here
    /// while it is under its capacity, else the live node with room that
    /// is the least loaded (sessions per capacity).
    pub fn placement(&self, sessions: usize) -> Placement {
        let capacity = self.config.capacity;
        if capacity == 0 || sessions < capacity {
            return Placement::Here;
        }
        self.membership
            .others()
            .into_iter()
            .filter(NodeInfo::has_room)
            .min_by_key(NodeInfo::load)
            .map_or(Placement::Full, Placement::Elsewhere)
    }

    /// The live node other than this one that hosts `session`.
    pub async fn session_host(&self, session: &str) -> Option<NodeInfo> {
        let others = self.membership.others();
        let ids: Vec<String> = others.iter().map(|n| n.id.clone()).collect();
        let host = self.directory.session_node(session, &ids).await?;
        others.into_iter().find(|n| n.id == host)
    }

    /// The live node other than this one that publishes `room`/`stream`.
    pub async fn publisher_elsewhere(
        &self,
        room: &RoomName,
        stream: &StreamName,
    ) -> Option<NodeInfo> {
        let node = self.directory.publisher_node(room, stream).await?;
        if node == self.membership.me() {
            return None;
        }
        self.membership.node(&node)
    }
}
