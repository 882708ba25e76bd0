//! Where a relay finds a stream in a deployment: the stream directory
//! names the node that publishes it (`keys::stream`), its heartbeat gives
//! that node's URL, and the relay is admitted there as a viewer with a
//! short-lived token this node signs with the deployment's shared secret
//! ([`Control::relay_token`]), under the identity `node-{id}`.

use vigil_control::{Control, RoomName, StreamName};

use super::Cluster;
use super::membership::NodeInfo;
use crate::relay::{Origin, Origins};

/// [`Origins`] from the deployment's directory.
pub struct ClusterOrigins {
    cluster: Cluster,
    control: Control,
}

impl ClusterOrigins {
    /// Looks streams up in `cluster`'s directory; tokens from `control`.
    pub fn new(cluster: Cluster, control: Control) -> Self {
        ClusterOrigins { cluster, control }
    }
}

impl ClusterOrigins {
    /// The node to pull from: the publisher's while it has room (the
    /// fewest hops), else the least loaded live node with room that relays
    /// the stream already (a tree grows a level), else the publisher's
    /// anyway (over its capacity rather than not at all).
    async fn parent(&self, room: &RoomName, stream: &StreamName) -> Option<NodeInfo> {
        let origin = self.cluster.publisher_elsewhere(room, stream).await?;
        if origin.has_room() {
            return Some(origin);
        }
        let me = self.cluster.membership.me();
        let relaying = self.cluster.directory.relaying_nodes(room, stream).await;
        let relay = relaying
            .iter()
            .filter(|id| id.as_str() != me)
            .filter_map(|id| self.cluster.membership.node(id))
            .filter(NodeInfo::has_room)
            .min_by_key(NodeInfo::load);
        match relay {
            Some(relay) => {
                tracing::info!(%room, %stream, origin = origin.id, via = relay.id, "origin at capacity: relaying from a relay");
                Some(relay)
            }
            None => Some(origin),
        }
    }
}

#[async_trait::async_trait]
impl Origins for ClusterOrigins {
    fn relaying(&self, room: &RoomName, stream: &StreamName, on: bool) {
        self.cluster.directory.set_relaying(room, stream, on);
    }

    async fn locate(&self, room: &RoomName, stream: &StreamName) -> Option<Origin> {
        let node = self.parent(room, stream).await?;
        let identity = format!("{}{}", super::RELAY_PREFIX, self.cluster.membership.me());
        let bearer = match self.control.relay_token(room, &identity).await {
            Ok(bearer) => bearer,
            Err(e) => {
                tracing::warn!(%room, %stream, "no token for a relay: {e}");
                return None;
            }
        };
        Some(Origin {
            node: node.id,
            base_url: node.url,
            bearer,
        })
    }
}
