//! Where a relay finds a stream in a deployment: the stream directory
//! names the node that publishes it (`keys::stream`), its heartbeat gives
//! that node's URL, and the relay is admitted there as a viewer with a
//! short-lived token this node signs with the deployment's shared secret
//! ([`Control::relay_token`]), under the identity `node-{id}`.

use vigil_control::{Control, RoomName, StreamName};

use super::Cluster;
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

#[async_trait::async_trait]
impl Origins for ClusterOrigins {
    async fn locate(&self, room: &RoomName, stream: &StreamName) -> Option<Origin> {
        let node = self.cluster.publisher_elsewhere(room, stream).await?;
        let identity = format!("node-{}", self.cluster.membership.me());
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
